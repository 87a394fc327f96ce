"""xumx_slicq.audio.resample: lengths, identity, and a tone that keeps its frequency."""

import numpy as np
import pytest

from xumx_slicq.audio import resample


def test_identity_returns_input():
    x = np.zeros((10, 2), np.float32)
    assert resample(x, 44100, 44100) is x


@pytest.mark.parametrize("rate", [8000, 22050, 48000, 192000])
def test_tone_keeps_frequency_and_length(rate):
    t = np.arange(rate) / rate  # 1 s
    x = np.stack([np.sin(2 * np.pi * 440 * t), np.cos(2 * np.pi * 440 * t)], axis=1)
    y = resample(x, rate, 44100)
    assert y.dtype == np.float32 and y.shape == (44100, 2)
    spectrum = np.abs(np.fft.rfft(y[:, 0]))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1  # 1 Hz bins over 1 s


def test_bad_rate_is_refused():
    with pytest.raises(ValueError, match="positive"):
        resample(np.zeros((4, 2)), 0, 44100)
