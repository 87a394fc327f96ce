"""Singing voice: espeak-ng speaks each lyric word, Praat (praat-parselmouth) stretches its vowel to the note length
and replaces its pitch contour with the note's pitch plus scoop/portamento, vibrato and slow drift
(PSOLA overlap-add resynthesis).

Words are synthesised once per (voice, word) and cached per process; espeak-ng and Praat's analyses are
deterministic, so the cache never changes results. Praat's overlap-add resynthesis uses its global random
generator, which is reseeded from the song's generator before every note.
"""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass

import numpy as np
import parselmouth
import soundfile as sf
from parselmouth.praat import call, run
from scipy import signal

#: espeak-ng output sample rate; the vocal track is built at this rate and upsampled x2 to 44.1 kHz.
VOICE_RATE = 22050


@dataclass
class WordSound:
    """A spoken word ready to be sung: samples (VOICE_RATE), voiced span [t0, t1] in seconds, Praat objects."""

    samples: np.ndarray
    t0: float
    t1: float
    manipulation: object
    gain: float


_WORDS: dict[tuple[str, str], WordSound] = {}


def _espeak(word: str, voice: str) -> np.ndarray:
    """Speak `word` with espeak-ng voice `voice`; returns mono float64 samples at VOICE_RATE."""
    try:
        done = subprocess.run(["espeak-ng", "-v", voice, "-s", "130", "-z", "--stdout", word],
                              capture_output=True, check=True, timeout=30)
    except FileNotFoundError as err:  # pragma: no cover - depends on the machine
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)") from err
    audio, rate = sf.read(io.BytesIO(done.stdout), dtype="float64")
    if rate != VOICE_RATE:
        raise RuntimeError(f"espeak-ng returned {rate} Hz audio for voice {voice!r}, expected {VOICE_RATE}")
    return audio


def word_sound(word: str, voice: str) -> WordSound:
    """Cached :class:`WordSound` for `word` spoken by espeak-ng voice `voice` (silence trimmed).

    Other engines (corpus v2's festival voice) fill the cache first with :func:`register_word`.
    """
    key = (voice, word)
    if key in _WORDS:
        return _WORDS[key]
    out = analyse_word(_espeak(word, voice))
    _WORDS[key] = out
    return out


def register_word(word: str, voice: str, audio: np.ndarray) -> None:
    """Cache a spoken word (mono float64 at VOICE_RATE) from another engine under the voice name `voice`."""
    _WORDS[(voice, word)] = analyse_word(audio)


def is_cached(word: str, voice: str) -> bool:
    """True when `word` of `voice` is already analysed in this process."""
    return (voice, word) in _WORDS


def analyse_word(audio: np.ndarray) -> WordSound:
    """Trim a spoken word's silences and analyse it for singing (voiced span, Praat manipulation, gain)."""
    frame = int(0.005 * VOICE_RATE)
    nb = len(audio) // frame
    env = np.sqrt(np.mean(audio[: nb * frame].reshape(nb, frame) ** 2, axis=1) + 1e-12)  # (nb_frames,) RMS
    loud = np.flatnonzero(env > env.max() * 10 ** (-40 / 20))
    first, last = (loud[0], loud[-1] + 1) if len(loud) else (0, nb)
    audio = audio[max(0, first - 1) * frame: min(nb, last + 1) * frame]
    sound = parselmouth.Sound(audio, sampling_frequency=VOICE_RATE)
    pitch = sound.to_pitch(time_step=0.01, pitch_floor=60.0, pitch_ceiling=500.0)
    f0 = pitch.selected_array["frequency"]
    times = pitch.xs()
    voiced = times[f0 > 0]
    t0, t1 = (float(voiced[0]), float(voiced[-1])) if len(voiced) >= 2 else (0.0, sound.duration)
    region = audio[int(t0 * VOICE_RATE): int(t1 * VOICE_RATE) + 1]
    rms = float(np.sqrt(np.mean(region ** 2))) if len(region) else float(np.sqrt(np.mean(audio ** 2)))
    manipulation = call(sound, "To Manipulation", 0.01, 60.0, 500.0)
    return WordSound(audio, t0, t1, manipulation, 0.1 / max(rms, 1e-6))


@dataclass(frozen=True)
class SungNote:
    """A note to sing: onset and length in seconds, MIDI pitch, word, loudness (0..1), previous pitch if legato."""

    start: float
    duration: float
    pitch: int
    word: str
    velocity: float
    previous: int | None


def _pitch_cents(u: np.ndarray, note: SungNote, vibrato: tuple[float, float, float], drift: float) -> np.ndarray:
    """Pitch deviation in cents at output times `u` (seconds from the voiced onset), shape like `u`."""
    rate, depth, phase = vibrato
    cents = np.full_like(u, drift)
    if note.previous is None:
        cents += -70.0 * np.exp(-u / 0.05)  # scoop up into the note
    else:
        jump = float(np.clip((note.previous - note.pitch) * 100.0, -500, 500))
        cents += jump * np.exp(-u / 0.04)  # portamento from the previous note
    ramp = np.clip((u - 0.15) / 0.3, 0.0, 1.0)
    cents += depth * ramp * np.sin(2 * np.pi * rate * u + phase)
    return cents


def sing_note(note: SungNote, voice: str, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Render one sung note at VOICE_RATE.

    Returns (samples, lead-in seconds): the samples start `lead-in` seconds before the note's onset so that the
    word's consonants precede the beat and its vowel starts on it.
    """
    ws = word_sound(note.word, voice)
    duration = ws.samples.shape[0] / VOICE_RATE
    voiced = max(ws.t1 - ws.t0, 0.05)
    a = ws.t0 + 0.3 * voiced
    b = ws.t1 - 0.15 * voiced
    region = max(b - a, 0.02)
    target = max(0.08, note.duration * float(rng.uniform(0.88, 0.98)))
    k = float(np.clip((target - (voiced - region)) / region, 0.3, 40.0))
    dur_tier = call("Create DurationTier", "stretch", 0.0, duration)
    for t, v in ((0.0, 1.0), (max(a - 0.002, 0.0), 1.0), (a, k), (b, k), (min(b + 0.002, duration), 1.0)):
        call(dur_tier, "Add point", t, v)

    def to_original(u_abs: np.ndarray) -> np.ndarray:
        """Output time -> original time through the piecewise-linear stretch (inverse of the tier)."""
        t = np.where(u_abs < a, u_abs, a + (u_abs - a) / k)
        return np.where(u_abs > a + k * region, b + (u_abs - a - k * region), t)

    out_len = duration + (k - 1.0) * region
    u_abs = np.arange(0.0, out_len, 0.01)
    cents = _pitch_cents(u_abs - ws.t0, note, (float(rng.uniform(5.0, 6.5)), float(rng.uniform(15, 55)),
                                               float(rng.uniform(0, 2 * np.pi))), float(rng.normal(0, 6)))
    with np.errstate(over="ignore"):
        freq = 440.0 * 2 ** ((note.pitch - 69) / 12 + cents / 1200)
    # Before the voiced onset (u < 0) the scoop/portamento terms grow as exp(-u / tau). A word with a long unvoiced
    # start (some festival words) overflows them to inf, which Praat refuses. Those points lie where nothing is
    # voiced, so the largest finite value stands in. Songs that rendered before never held inf, so they are unchanged.
    freq = np.where(np.isfinite(freq), freq, np.finfo(np.float64).max)
    pitch_tier = call("Create PitchTier", "melody", 0.0, duration)
    # one Praat script for all points: much faster than a call per point, and repr() round-trips every double
    run(pitch_tier, "\n".join(f"Add point: {float(t)!r}, {float(f)!r}" for t, f in zip(to_original(u_abs), freq)))
    # Praat's overlap-add draws random numbers (unvoiced stretches): seed its generator from the note's own.
    run(f"random_initializeWithSeedUnsafelyButPredictably ({int(rng.integers(1, 2**31 - 1))})")
    call([ws.manipulation, pitch_tier], "Replace pitch tier")
    call([ws.manipulation, dur_tier], "Replace duration tier")
    sung = call(ws.manipulation, "Get resynthesis (overlap-add)").values[0] * ws.gain
    lead_in = min(ws.t0, 0.12)
    sung = sung[int((ws.t0 - lead_in) * VOICE_RATE):]
    stop = int((lead_in + target + 0.09) * VOICE_RATE)  # keep a short final consonant, then cut
    sung = sung[:stop].copy()
    fade_in, fade_out = min(len(sung), int(0.004 * VOICE_RATE)), min(len(sung), int(0.03 * VOICE_RATE))
    sung[:fade_in] *= np.linspace(0, 1, fade_in)
    sung[len(sung) - fade_out:] *= np.linspace(1, 0, fade_out)
    return sung * note.velocity, lead_in


def sing(notes: list[SungNote], voice: str, nb_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Sing `notes` with espeak-ng voice `voice`; returns mono float64 audio at 44.1 kHz, `nb_samples` long.

    Notes are rendered one by one at VOICE_RATE, summed at their onsets, upsampled x2 and given a gentle
    harmonic exciter above 3 kHz (espeak-ng audio stops at 11 kHz; real vocals do not).
    """
    length = nb_samples // 2 + VOICE_RATE
    track = np.zeros(length)
    for note in notes:
        sung, lead_in = sing_note(note, voice, rng)
        start = int(round((note.start - lead_in) * VOICE_RATE))
        if start >= length:
            continue
        if start < 0:
            sung, start = sung[-start:], 0
        end = min(length, start + len(sung))
        track[start:end] += sung[: end - start]
    up = signal.resample_poly(track, 2, 1)[:nb_samples]
    if len(up) < nb_samples:
        up = np.pad(up, (0, nb_samples - len(up)))
    high = signal.sosfilt(signal.butter(2, 3000, "highpass", fs=44100, output="sos"), up)
    air = signal.sosfilt(signal.butter(2, 7000, "highpass", fs=44100, output="sos"), np.tanh(4 * high) / 4)
    return up + 0.35 * air
