"""xumx_slicq.audio: resample (lengths, identity, a tone that keeps its frequency) and the demo signal (demo songs
when present, else the chord; the description says which)."""

import numpy as np
import pytest

from xumx_slicq.audio import CHORD_HZ, DEMO_RATE, demo_audio, demo_signal, resample


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


def _songs(root, seconds=(1.0, 0.5)):
    """Demo songs ``<root>/<song>/mixture.wav``: stereo noise, one file per length; returns them concatenated."""
    import soundfile as sf

    rng = np.random.default_rng(3)
    parts = []
    for k, s in enumerate(seconds):
        data = (0.1 * rng.standard_normal((int(s * DEMO_RATE), 2))).astype(np.float32)
        (root / f"song{k}").mkdir(parents=True)
        sf.write(root / f"song{k}" / "mixture.wav", data, DEMO_RATE, subtype="FLOAT")
        parts.append(data)
    return np.concatenate(parts)


def test_demo_audio_reads_the_demo_songs_and_loops_them(tmp_path):
    whole = _songs(tmp_path)  # 1.5 s
    audio, desc = demo_audio(1.0, tmp_path, offset_seconds=0.25)
    assert desc == f"2 demo songs from {tmp_path} concatenated"
    assert audio.dtype == np.float32 and audio.shape == (DEMO_RATE, 2)
    np.testing.assert_array_equal(audio, whole[DEMO_RATE // 4: DEMO_RATE // 4 + DEMO_RATE])
    looped, desc = demo_audio(2.0, tmp_path)
    assert desc.endswith("concatenated, looped") and looped.shape == (2 * DEMO_RATE, 2)
    np.testing.assert_array_equal(looped[len(whole):], whole[: 2 * DEMO_RATE - len(whole)])


def test_demo_audio_without_songs_is_a_reproducible_chord(tmp_path):
    audio, desc = demo_audio(2.0, tmp_path / "none")
    assert desc == f"no demo songs in {tmp_path / 'none'}: synthetic noisy chord"
    assert audio.shape == (2 * DEMO_RATE, 2) and np.array_equal(audio[:, 0], audio[:, 1])
    again, _ = demo_audio(2.0, None)
    np.testing.assert_array_equal(audio, again)  # same chord whatever the folder
    spectrum = np.abs(np.fft.rfft(audio[:, 0]))  # 0.5 Hz bins over 2 s
    peaks = sorted(np.argsort(spectrum)[-4:] / 2)  # the four strongest bins, in Hz: the chord's notes
    assert np.allclose(peaks, CHORD_HZ, atol=0.5)
    assert demo_signal(None)[1] == "synthetic noisy chord"


def test_demo_songs_must_be_stereo_44k(tmp_path):
    import soundfile as sf

    (tmp_path / "mono").mkdir()
    sf.write(tmp_path / "mono" / "mixture.wav", np.zeros(100, np.float32), DEMO_RATE)
    with pytest.raises(ValueError, match="stereo 44.1 kHz"):
        demo_signal(tmp_path)
