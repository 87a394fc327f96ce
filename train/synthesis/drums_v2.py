"""Corpus v2 drums: the v1 groove part played on a recorded multi-velocity kit (avldrums SF2 or a Hydrogen kit)
or a GM kit of MuseScore General / FluidR3, with deeper humanisation, snare ghost notes, hi-hat and crash chokes.

* humanisation: per-instrument timing offsets (the snare lays back in hip-hop, the hats push in rock), Gaussian
  timing jitter, velocity jitter and a hi-hat accent curve per bar position;
* ghost notes: quiet snare strokes (velocity 18-40) on empty sixteenths next to the backbeat;
* hi-hat chokes: a soft pedal hat closes some open hats (the kits' exclusive class silences the open hat);
* crash chokes: crashes rendered in their own group get a 35 ms fade at a choke time (a hand grabbing the cymbal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from train.synthesis.drums import CLOSED_HAT, CRASH, CRASH2, KICK, OPEN_HAT, PEDAL_HAT, RIDE, SNARE
from train.synthesis.events import Note, Part
from train.synthesis.plan import SongPlan

SAMPLE_RATE = 44100
CRASHES = (CRASH, CRASH2, 52, 55)
#: timing offset in seconds per key and feel (positive = late)
LAYBACK = {"hiphop": {SNARE: 0.012, CLOSED_HAT: 0.006}, "trap": {SNARE: 0.008},
           "rock": {CLOSED_HAT: -0.003}, "metal": {CLOSED_HAT: -0.002}, "jazz": {RIDE: -0.004, SNARE: 0.006}}
#: keys the recorded kits do not have -> nearest key they do (shaker -> closed hat played softly)
KEY_MAP = {70: 42, 69: 42, 82: 42, 35: 36, 75: 37, 76: 37, 77: 37}


@dataclass
class DrumKit:
    """Where the kit comes from: a soundfont file and preset (bank 128 = GM drum bank), or a Hydrogen kit folder
    name (rendered by hydrogen.py instead of FluidSynth)."""

    name: str
    soundfont: str | None
    bank: int
    program: int
    hydrogen: str | None = None


def humanise(part: Part, plan: SongPlan, rng: np.random.Generator, feel: str) -> list[Note]:
    """The part's notes with per-key layback, timing jitter, velocity jitter, ghost notes and hat chokes."""
    beat = plan.grid.beat_seconds
    sixteenth = beat / 4
    jitter = {"jazz": 0.007, "hiphop": 0.008, "folk": 0.006}.get(feel, 0.004)
    offsets = LAYBACK.get(feel, {})
    notes = []
    for note in part.notes:
        key = KEY_MAP.get(note.pitch, note.pitch)
        t = note.start + offsets.get(key, 0.0) + float(rng.normal(0, jitter))
        pos = (note.start / sixteenth) % 4  # place within the beat: accents on the beat
        accent = 1.0 if pos < 0.5 or key not in (CLOSED_HAT, RIDE) else float(rng.uniform(0.72, 0.9))
        velocity = note.velocity * accent * float(rng.uniform(0.9, 1.08)) + float(rng.normal(0, 4))
        if note.pitch in (70, 69, 82):
            velocity *= 0.5
        notes.append(Note(max(0.0, t), note.duration, key, int(np.clip(round(velocity), 1, 127))))
    snares = [n.start for n in part.notes if n.pitch == SNARE and n.velocity > 80]
    taken = {int(round(n.start / sixteenth)) for n in part.notes if n.pitch in (SNARE, KICK)}
    ghost_rate = {"funk": 0.45, "hiphop": 0.3, "jazz": 0.35, "rock": 0.15, "metal": 0.05, "edm": 0.0}.get(feel, 0.2)
    for t in snares:
        for step in (-1, 1, 2, -2):
            slot = int(round(t / sixteenth)) + step
            if slot not in taken and rng.random() < ghost_rate:
                taken.add(slot)
                notes.append(Note(t + step * sixteenth + float(rng.normal(0.004, jitter)), 0.2, SNARE,
                                  int(rng.integers(18, 41))))
    opens = [n for n in notes if n.pitch == OPEN_HAT]
    for n in opens:  # close some open hats with a soft pedal a sixteenth or an eighth later
        if rng.random() < 0.6:
            notes.append(Note(n.start + sixteenth * float(rng.choice([1, 2])), 0.2, PEDAL_HAT,
                              int(rng.integers(20, 45))))
    notes.sort(key=lambda n: (n.start, n.pitch))
    return notes


def crash_chokes(notes: list[Note], rng: np.random.Generator, beat: float, probability: float) -> list[float]:
    """Choke times (seconds) for some crash hits: a half to two beats after the hit, before the next crash."""
    starts = sorted(n.start for n in notes if n.pitch in CRASHES)
    chokes = []
    for i, t in enumerate(starts):
        if rng.random() >= probability:
            continue
        at = t + beat * float(rng.choice([0.5, 1.0, 1.0, 2.0]))
        if i + 1 < len(starts) and at >= starts[i + 1] - 0.01:
            continue
        chokes.append(at)
    return chokes


def choke_envelope(chokes: list[float], crash_starts: list[float], nb_samples: int,
                   fade: float = 0.035) -> np.ndarray:
    """Gain (nb_samples,) for the crash group: 35 ms fade to silence at each choke, back to 1 at the next crash."""
    gain = np.ones(nb_samples, dtype=np.float32)
    nb_fade = int(fade * SAMPLE_RATE)
    starts = sorted(crash_starts)
    for t in chokes:
        a = int(t * SAMPLE_RATE)
        if a >= nb_samples:
            continue
        nxt = next((s for s in starts if s > t), None)
        b = nb_samples if nxt is None else min(nb_samples, int(nxt * SAMPLE_RATE))
        ramp = np.linspace(1.0, 0.0, nb_fade, dtype=np.float32)[: max(0, b - a)]
        gain[a: a + len(ramp)] *= ramp
        gain[a + len(ramp): b] = 0.0
    return gain


def split_kit(part: Part, notes: list[Note], kit: DrumKit) -> tuple[Part, Part]:
    """(shells and hats, crashes): two parts on the kit, so that crashes can be choked on their own."""
    main = Part("drums", kit.program, kit.bank, part.pan, part.level, soundfont=kit.soundfont)
    crashes = Part("crashes", kit.program, kit.bank, part.pan, part.level, soundfont=kit.soundfont)
    for n in notes:
        (crashes if n.pitch in CRASHES else main).notes.append(n)
    return main, crashes
