"""Mixing and mastering: panning, echo, a synthetic room reverb, stem levels, a bus 'glue' compressor applied
identically to every stem, and a mastering gain chosen so that neither the stems nor the mixture clip.

The mixture is the exact integer sum of the 16-bit stems, so `mixture == sum(stems)` holds to the LSB.
"""

from __future__ import annotations

import numpy as np
from scipy import fft, signal

SAMPLE_RATE = 44100
INT16_FULL_SCALE = 32767
PEAK_CEILING = 0.97  # of full scale; leaves room for the rounding of four stems


def pan_mono(x: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power pan of a mono signal (nb_samples,) to stereo (2, nb_samples); pan -1 (left) .. 1 (right),
    centre has unity gain in both channels."""
    theta = (np.clip(pan, -1, 1) + 1) * np.pi / 4
    return np.stack([np.cos(theta) * x, np.sin(theta) * x]) * np.sqrt(2)  # (nb_channels, nb_samples)


def echo(x: np.ndarray, delay: float, feedback: float, level: float, repeats: int = 6) -> np.ndarray:
    """Feedback delay (slap-back / eighth-note echo) on a mono signal (nb_samples,); returns the same shape."""
    d = max(1, int(round(delay * SAMPLE_RATE)))
    out = x.copy()
    gain = level
    for k in range(1, repeats + 1):
        if k * d >= len(x):
            break
        out[k * d:] += gain * x[: len(x) - k * d]
        gain *= feedback
    return out


def room_impulse(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """Synthetic stereo room impulse response (2, nb_taps) with unit energy per channel.

    Pre-delay, a few early reflections, then decorrelated exponentially decaying noise whose high band decays
    twice as fast as the low band (air and wall absorption).
    """
    n = int(min(rt60 * 1.1, 3.0) * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    predelay = float(rng.uniform(0.005, 0.03))
    ir = np.zeros((2, n))
    low_sos = signal.butter(2, 2500, "lowpass", fs=SAMPLE_RATE, output="sos")
    for c in range(2):
        noise = rng.standard_normal(n)
        low = signal.sosfilt(low_sos, noise)
        high = noise - low
        late = low * np.exp(-6.91 * t / rt60) + 0.6 * high * np.exp(-6.91 * t / (0.5 * rt60))
        late *= np.clip((t - predelay) / 0.02, 0, 1)  # late field builds up after the pre-delay
        for _ in range(8):  # early reflections
            tap = int((predelay + rng.uniform(0.002, 0.06)) * SAMPLE_RATE)
            if tap < n:
                late[tap] += rng.uniform(-1, 1) * 4
        ir[c] = late / np.sqrt(np.sum(late ** 2))
    return ir


def add_reverb(stems: np.ndarray, ir: np.ndarray, wets: np.ndarray) -> np.ndarray:
    """Add to each stem, in place, `wet` times its reverb: the stem's mid (channel mean) convolved with the IR.

    Args:
        stems: (nb_stems, 2, nb_samples) float32 signals, modified in place.
        ir: (2, nb_taps) impulse response.
        wets: (nb_stems,) send levels.
    Returns:
        `stems`. Float32 FFT convolution, one stem at a time to bound memory.
    """
    nb_samples = stems.shape[-1]
    n = fft.next_fast_len(nb_samples + ir.shape[1] - 1, real=True)
    response = fft.rfft(ir.astype(np.float32), n=n, axis=-1)  # (2, n // 2 + 1)
    for k, wet in enumerate(wets):
        if wet <= 0:
            continue
        spectrum = fft.rfft(stems[k].mean(axis=0), n=n)  # (n // 2 + 1,) spectrum of the mid signal
        tail = fft.irfft(spectrum[None, :] * response, n=n, axis=-1)  # (2, n)
        stems[k] += np.float32(wet) * tail[:, :nb_samples]
    return stems


def active_rms(x: np.ndarray, frame: int = 4410) -> float:
    """RMS of a (2, nb_samples) signal over its 100 ms frames within 40 dB of its loudest frame (0 if silent)."""
    nb = x.shape[1] // frame
    if nb == 0:
        return float(np.sqrt(np.mean(x ** 2)))
    frames = x[:, : nb * frame].reshape(2, nb, frame)  # (nb_channels, nb_frames, frame)
    power = np.mean(frames ** 2, axis=(0, 2))
    if power.max() <= 0:
        return 0.0
    keep = power > power.max() * 1e-4
    return float(np.sqrt(power[keep].mean()))


def fade_out(stems: dict[str, np.ndarray], rng: np.random.Generator, seconds: float) -> None:
    """Fade every ``(nb_channels, nb_timesteps)`` stem out in place over the song's last 1-3 s (at most 15 % of it),
    with the same squared ramp, so the stems still sum to the mixture."""
    fade = min(float(rng.uniform(1.0, 3.0)), 0.15 * seconds)
    nb_fade = int(fade * SAMPLE_RATE)
    if nb_fade > 1:
        ramp = (np.linspace(1.0, 0.0, nb_fade) ** 2).astype(np.float32)
        for x in stems.values():
            x[:, -nb_fade:] *= ramp


def glue_gain(mix: np.ndarray, threshold_db: float, ratio: float, block: int = 512,
              attack: float = 0.01, release: float = 0.15, max_reduction_db: float = 6.0) -> np.ndarray:
    """Gain curve (nb_samples,) of a gentle RMS bus compressor driven by the mixture (2, nb_samples).

    Applying the same curve to every stem keeps the mixture equal to the sum of the stems.
    """
    nb_blocks = int(np.ceil(mix.shape[1] / block))
    padded = np.pad(mix, ((0, 0), (0, nb_blocks * block - mix.shape[1])))
    power = np.mean(padded.reshape(2, nb_blocks, block) ** 2, axis=(0, 2))  # (nb_blocks,) per-block power
    level = 10 * np.log10(power + 1e-12)
    target = np.minimum(np.maximum(level - threshold_db, 0) * (1 - 1 / ratio), max_reduction_db)
    a_att = np.exp(-block / (attack * SAMPLE_RATE))
    a_rel = np.exp(-block / (release * SAMPLE_RATE))
    smooth = np.empty_like(target)
    state = 0.0
    for i, value in enumerate(target):
        coef = a_att if value > state else a_rel
        state = coef * state + (1 - coef) * value
        smooth[i] = state
    centres = (np.arange(nb_blocks) + 0.5) * block
    reduction = np.interp(np.arange(mix.shape[1]), centres, smooth)
    return 10 ** (-reduction / 20)


def limiter_gain(mix: np.ndarray, ceiling: float, max_reduction_db: float, block: int = 64,
                 release: float = 0.06) -> np.ndarray:
    """Gain curve (nb_samples,) of a look-ahead peak limiter driven by the mixture (2, nb_samples).

    Per 64-sample block the reduction needed to bring the block peak under `ceiling` (capped at
    `max_reduction_db`) is spread one block ahead and behind, held with an exponential release, and interpolated.
    """
    nb_blocks = int(np.ceil(mix.shape[1] / block))
    padded = np.pad(np.abs(mix).max(axis=0), (0, nb_blocks * block - mix.shape[1]))  # (nb_blocks * block,)
    peaks = padded.reshape(nb_blocks, block).max(axis=1)  # (nb_blocks,) block peaks
    need = np.clip(20 * np.log10(np.maximum(peaks, 1e-12) / ceiling), 0, max_reduction_db)
    need = np.maximum(need, np.maximum(np.roll(need, 1), np.roll(need, -1)))  # look-ahead and hold
    a_rel = np.exp(-block / (release * SAMPLE_RATE))
    smooth = np.empty_like(need)
    state = 0.0
    for i, value in enumerate(need):
        state = max(value, a_rel * state)
        smooth[i] = state
    samples = np.repeat(smooth, block)[: mix.shape[1]]
    return 10 ** (-samples / 20)


def master(stems: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict]:
    """Glue-compress, set the loudness and quantise the stems; the mixture is their integer sum.

    Args:
        stems: name -> float (2, nb_samples) stem (float32 arrays are scaled in place).
        rng: generator for the loudness target and compressor settings.
    Returns:
        (name -> int16 (nb_samples, 2) arrays including "mixture", info dict with the gains used).
    """
    names = list(stems)
    stems = {n: np.asarray(stems[n], dtype=np.float32) for n in names}  # scaled in place below
    mix = sum(stems[n] for n in names)  # (2, nb_samples)
    threshold = 20 * np.log10(active_rms(mix) + 1e-12) + float(rng.uniform(0, 4))
    ratio = float(rng.uniform(1.5, 3.0))
    glue = glue_gain(mix, threshold, ratio).astype(np.float32)  # (nb_samples,)
    for x in [mix] + [stems[n] for n in names]:
        x *= glue
    target_db = float(rng.uniform(-16.0, -10.0))
    gain = 10 ** (target_db / 20) / max(active_rms(mix), 1e-9)
    detector = np.abs(mix)  # (2, nb_samples): largest magnitude of the mixture and of any stem
    for n in names:
        np.maximum(detector, np.abs(stems[n]), out=detector)
    detector *= np.float32(gain)
    limit = (limiter_gain(detector, PEAK_CEILING, float(rng.uniform(2.0, 6.0))) * gain).astype(np.float32)
    del detector
    for x in [mix] + [stems[n] for n in names]:
        x *= limit
    gain = 1.0
    peak = max([np.abs(mix).max()] + [np.abs(s).max() for s in stems.values()])
    limited = gain * peak > PEAK_CEILING
    if limited:
        gain = PEAK_CEILING / peak
    out = {}
    for n in names:
        out[n] = np.round(stems[n].T * np.float32(gain * INT16_FULL_SCALE)).astype(np.int16)  # (nb_samples, 2)
    total = sum(out[n].astype(np.int32) for n in names)
    if np.abs(total).max() > INT16_FULL_SCALE:  # cannot happen with PEAK_CEILING; guard the invariant anyway
        raise AssertionError("mixture would clip after quantisation")
    out["mixture"] = total.astype(np.int16)
    info = {"final_gain_db": round(float(20 * np.log10(gain)), 2), "loudness_target_dbfs": round(target_db, 2),
            "peak_limited": bool(limited), "glue_ratio": round(ratio, 2),
            "mixture_peak_dbfs": round(float(20 * np.log10(max(1, np.abs(total).max()) / INT16_FULL_SCALE)), 2)}
    return out, info
