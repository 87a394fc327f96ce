"""Corpus v2 effects with pedalboard: a chain per drum kit, bass, each 'other' instrument and the vocals, plus
EDM sidechain ducking.

Every effect is applied to a single stem (or one instrument of the 'other' stem) before the stems are summed, so
the mixture stays the exact sum of the stems; the master bus (mastering.py) only applies gains that are the same
for every stem. Pedalboard's plugins are deterministic (no random state), and each chain is built from the song's
own random generator, so a song is still a pure function of its seed.

Chains by instrument family (General-MIDI program):

* distorted guitars (29, 30): amp distortion (drive 8-36 dB by genre) into a cabinet-like EQ: high-pass 80-110 Hz,
  a mid peak or scoop, low-pass 4.5-7 kHz; a compressor in front;
* clean electric guitars (26-28): compressor, then chorus or phaser, and a tempo-synced delay;
* acoustic guitars / keys / organ: compressor and a presence EQ;
* synth leads (80-87), brass (56-63) and pads (88-95): chorus/phaser (pads, leads), delay (leads), reverb;
* drums: compressor (punch), low/high shelves, short room reverb; bass: high-pass, compressor, low shelf,
  saturation for synth/808 bass; vocals: high-pass, compressor, presence peak, delay and a plate-like reverb.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 44100


def _pedalboard():
    """Import pedalboard, naming the pip pin when it is missing."""
    try:
        import pedalboard
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise RuntimeError("corpus v2 needs pedalboard: pip install pedalboard==0.9.26") from err
    return pedalboard


def family(program: int) -> str:
    """Effect family of a General-MIDI program."""
    if program in (29, 30):
        return "distorted"
    if program in (26, 27, 28):
        return "clean_electric"
    if program in (24, 25):
        return "acoustic"
    if 80 <= program <= 87:
        return "lead"
    if 88 <= program <= 95 or program in (48, 49, 50, 51, 52):
        return "pad"
    if 56 <= program <= 71:
        return "brass"
    return "keys"


def process(board, x: np.ndarray) -> np.ndarray:
    """Run a pedalboard chain on a float (2, nb_samples) stem; returns float32 of the same shape."""
    y = board(np.ascontiguousarray(x, dtype=np.float32), SAMPLE_RATE, reset=True)
    return np.ascontiguousarray(y[:, : x.shape[1]], dtype=np.float32)


def _reverb(pb, rng, size: tuple[float, float], wet: tuple[float, float]):
    return pb.Reverb(room_size=float(rng.uniform(*size)), damping=float(rng.uniform(0.3, 0.7)),
                     wet_level=float(rng.uniform(*wet)), dry_level=1.0, width=float(rng.uniform(0.7, 1.0)))


def _delay(pb, rng, beat: float, mix: tuple[float, float]):
    return pb.Delay(delay_seconds=float(beat * rng.choice([0.5, 0.75, 1.0])),
                    feedback=float(rng.uniform(0.15, 0.4)), mix=float(rng.uniform(*mix)))


def instrument_chain(program: int, rng: np.random.Generator, beat: float, drive: tuple[float, float]):
    """(pedalboard chain, description) for one 'other' instrument."""
    pb = _pedalboard()
    kind = family(program)
    fx = []
    if kind == "distorted":
        fx += [pb.Compressor(threshold_db=-20, ratio=3, attack_ms=5, release_ms=80),
               pb.Distortion(drive_db=float(rng.uniform(*drive))),
               pb.HighpassFilter(float(rng.uniform(80, 110))),
               pb.PeakFilter(float(rng.uniform(600, 1600)), float(rng.uniform(-5, 4)), 0.8),
               pb.LowpassFilter(float(rng.uniform(4500, 7000))),
               pb.Gain(-12.0)]
    elif kind == "clean_electric":
        fx += [pb.Compressor(threshold_db=-18, ratio=3, attack_ms=8, release_ms=120)]
        fx += [pb.Chorus(rate_hz=float(rng.uniform(0.4, 1.5)), depth=0.25, mix=0.4)] if rng.random() < 0.5 else \
            [pb.Phaser(rate_hz=float(rng.uniform(0.2, 1.0)), depth=0.5, mix=0.4)]
        if rng.random() < 0.6:
            fx.append(_delay(pb, rng, beat, (0.1, 0.25)))
    elif kind in ("acoustic", "keys"):
        fx += [pb.Compressor(threshold_db=-20, ratio=2.5, attack_ms=10, release_ms=150),
               pb.HighShelfFilter(6000, float(rng.uniform(0, 3)), 0.7)]
    elif kind == "lead":
        if rng.random() < 0.5:
            fx.append(pb.Phaser(rate_hz=float(rng.uniform(0.3, 2.0)), depth=0.6, mix=0.35))
        fx.append(_delay(pb, rng, beat, (0.15, 0.35)))
    elif kind == "pad":
        fx.append(pb.Chorus(rate_hz=float(rng.uniform(0.2, 0.8)), depth=0.35, mix=0.5))
    else:  # brass, reeds, strings solo
        fx.append(pb.Compressor(threshold_db=-18, ratio=2.5, attack_ms=15, release_ms=150))
    fx.append(_reverb(pb, rng, (0.3, 0.8), (0.08, 0.3) if kind != "distorted" else (0.03, 0.12)))
    return pb.Pedalboard(fx), kind


def drum_chain(rng: np.random.Generator, feel: str):
    """Compressor, shelving EQ and a short room for the drum stem."""
    pb = _pedalboard()
    ratio = float(rng.uniform(3, 6)) if feel in ("rock", "metal", "edm", "hiphop") else float(rng.uniform(2, 3.5))
    return pb.Pedalboard([
        pb.Compressor(threshold_db=float(rng.uniform(-22, -12)), ratio=ratio, attack_ms=float(rng.uniform(3, 15)),
                      release_ms=float(rng.uniform(60, 160))),
        pb.LowShelfFilter(90, float(rng.uniform(-1, 4)), 0.7),
        pb.HighShelfFilter(8000, float(rng.uniform(-1, 4)), 0.7),
        _reverb(pb, rng, (0.1, 0.35), (0.04, 0.14)),
    ])


def bass_chain(rng: np.random.Generator, program: int, feel: str):
    """High-pass, compressor and low shelf; saturation + low-pass for synth / 808 basses and metal."""
    pb = _pedalboard()
    fx = [pb.HighpassFilter(30.0),
          pb.Compressor(threshold_db=float(rng.uniform(-24, -14)), ratio=float(rng.uniform(3, 6)), attack_ms=10,
                        release_ms=120),
          pb.LowShelfFilter(80, float(rng.uniform(0, 4)), 0.7)]
    if program in (38, 39, 87) or feel == "metal":
        fx += [pb.Distortion(drive_db=float(rng.uniform(4, 12))), pb.LowpassFilter(float(rng.uniform(2500, 6000))),
               pb.Gain(-6.0)]
    return pb.Pedalboard(fx)


def vocal_chain(rng: np.random.Generator, beat: float):
    """High-pass, compressor, presence peak, optional tempo-synced delay, plate-like reverb."""
    pb = _pedalboard()
    fx = [pb.HighpassFilter(float(rng.uniform(80, 120))),
          pb.Compressor(threshold_db=float(rng.uniform(-24, -16)), ratio=float(rng.uniform(3, 5)), attack_ms=5,
                        release_ms=100),
          pb.PeakFilter(float(rng.uniform(2500, 4500)), float(rng.uniform(1, 4)), 1.0)]
    if rng.random() < 0.6:
        fx.append(_delay(pb, rng, beat, (0.08, 0.22)))
    fx.append(_reverb(pb, rng, (0.4, 0.85), (0.1, 0.3)))
    return pb.Pedalboard(fx)


def sidechain_gain(kick_times: list[float], nb_samples: int, depth_db: float, release: float) -> np.ndarray:
    """Ducking gain (nb_samples,) that dips by `depth_db` at each kick and recovers over `release` seconds."""
    gain_db = np.zeros(nb_samples, dtype=np.float64)
    n = int(release * 4 * SAMPLE_RATE)
    shape = -depth_db * np.exp(-np.arange(n) / (release * SAMPLE_RATE))  # (n,) dB
    attack = int(0.003 * SAMPLE_RATE)
    shape[:attack] *= np.linspace(0, 1, attack)  # 3 ms dip, no click
    for t in kick_times:
        a = int(t * SAMPLE_RATE)
        if 0 <= a < nb_samples:
            b = min(nb_samples, a + n)
            np.minimum(gain_db[a:b], shape[: b - a], out=gain_db[a:b])
    return (10 ** (gain_db / 20)).astype(np.float32)
