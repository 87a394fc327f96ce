"""Music theory helpers: modes, diatonic chords, chord progressions, voicings and a swing-aware time grid.

Everything here is pure (no randomness, no I/O) so the higher layers can be tested without rendering audio.
Pitches are MIDI note numbers (60 = middle C); pitch classes are integers 0..11 (0 = C).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

#: Interval sets of the modes the generator uses (semitones above the tonic).
MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}

#: Chord progressions per mode, as 0-based scale degrees; a trailing "h" (minor only) raises the chord's third
#: (harmonic-minor dominant). Each progression is one harmonic cycle; the plan decides how long each chord lasts.
PROGRESSIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    "major": (
        ("0", "4", "5", "3"), ("0", "3", "4", "3"), ("5", "3", "0", "4"), ("0", "5", "3", "4"),
        ("0", "3", "5", "4"), ("1", "4", "0", "0"), ("0", "3", "0", "4"), ("3", "0", "4", "5"),
        ("0", "2", "3", "4"), ("0", "4", "3", "3"), ("0", "0", "3", "4"), ("3", "4", "2", "5"),
    ),
    "minor": (
        ("0", "5", "2", "6"), ("0", "3", "4h", "0"), ("0", "6", "5", "6"), ("0", "3", "6", "2"),
        ("0", "5", "3", "4h"), ("0", "2", "6", "3"), ("0", "6", "5", "4h"), ("0", "3", "0", "4h"),
        ("5", "6", "0", "0"), ("0", "0", "5", "6"),
    ),
    "dorian": (
        ("0", "3", "0", "3"), ("0", "3", "6", "0"), ("0", "6", "3", "0"), ("0", "1", "0", "3"),
        ("0", "0", "3", "3"),
    ),
    "mixolydian": (
        ("0", "6", "3", "0"), ("0", "6", "3", "3"), ("0", "3", "6", "0"), ("0", "0", "6", "3"),
        ("0", "4", "6", "3"),
    ),
}

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


@dataclass(frozen=True)
class Chord:
    """A chord: root pitch class, intervals above the root (semitones, ascending, first 0), scale degree."""

    root: int
    intervals: tuple[int, ...]
    degree: int

    @property
    def pitch_classes(self) -> tuple[int, ...]:
        """Pitch classes of the chord tones, root first."""
        return tuple((self.root + i) % 12 for i in self.intervals)

    @property
    def name(self) -> str:
        """Readable name, e.g. 'Am7' or 'F'."""
        third = self.intervals[1] if len(self.intervals) > 1 else 4
        fifth = self.intervals[2] if len(self.intervals) > 2 else 7
        quality = "m" if third == 3 else ""
        if fifth == 6:
            quality = "dim"
        seventh = ""
        if len(self.intervals) > 3:
            seventh = "maj7" if self.intervals[3] == 11 else "7"
        return NOTE_NAMES[self.root] + quality + seventh


def scale_pitch_classes(tonic: int, mode: str) -> tuple[int, ...]:
    """Pitch classes of the scale of `mode` on `tonic` (0..11), in scale order."""
    return tuple((tonic + i) % 12 for i in MODES[mode])


def diatonic_chord(tonic: int, mode: str, symbol: str, seventh: bool = False) -> Chord:
    """Chord on a scale degree given as a progression symbol ("0".."6", optionally suffixed "h").

    The triad (or seventh chord) is stacked in thirds from the mode's own notes; "h" raises the third by a
    semitone (the harmonic-minor major dominant). Returns a :class:`Chord`.
    """
    degree = int(symbol.rstrip("h"))
    steps = MODES[mode]

    def tone(k: int) -> int:
        """Semitones above the tonic of the scale note `k` steps above the chord's degree."""
        octave, idx = divmod(degree + k, 7)
        return steps[idx] + 12 * octave

    stack = [tone(0), tone(2), tone(4)] + ([tone(6)] if seventh else [])
    intervals = [s - stack[0] for s in stack]
    if symbol.endswith("h") and intervals[1] == 3:
        intervals[1] = 4
        if seventh:
            intervals[3] = 10
    return Chord(root=(tonic + stack[0]) % 12, intervals=tuple(intervals), degree=degree)


def nearest_pitch(pitch_class: int, target: float, low: int = 0, high: int = 127) -> int:
    """MIDI pitch of `pitch_class` closest to `target`, kept within [low, high] when possible."""
    base = int(round(target)) - ((int(round(target)) - pitch_class) % 12)
    candidates = [base + 12 * k for k in (-1, 0, 1, 2)]
    inside = [c for c in candidates if low <= c <= high] or candidates
    return min(inside, key=lambda c: (abs(c - target), c))


def voice_chord(chord: Chord, previous: Sequence[int] | None, low: int, high: int, nb_voices: int) -> list[int]:
    """Close-position voicing of `chord` with `nb_voices` notes in [low, high], voice-led from `previous`.

    Candidate voicings are every inversion of the chord tones stacked upwards from each start pitch in range; the
    one whose sorted notes move least (sum of absolute semitone moves) from `previous` wins; without a previous
    voicing the one centred nearest the middle of the range wins. Returns ascending MIDI pitches.
    """
    pcs = list(chord.pitch_classes)
    tones = [pcs[i % len(pcs)] for i in range(nb_voices)]
    best: list[int] | None = None
    best_cost = float("inf")
    centre = (low + high) / 2
    for rotation in range(len(pcs)):
        order = tones[rotation:] + tones[:rotation]
        for start in range(low, low + 12):
            if start % 12 != order[0]:
                continue
            notes = [start]
            for pc in order[1:]:
                step = (pc - notes[-1]) % 12 or 12
                notes.append(notes[-1] + step)
            if notes[-1] > high:
                continue
            if previous:
                prev = sorted(previous)
                cost = sum(abs(a - b) for a, b in zip(notes, prev)) + abs(len(prev) - len(notes)) * 3
            else:
                cost = abs(sum(notes) / len(notes) - centre)
            if cost < best_cost:
                best, best_cost = notes, cost
    if best is None:  # range too narrow: fall back to stacking from the lowest chord tone above `low`
        best = [nearest_pitch(pc, low + 6, low, high + 12) for pc in tones]
        best.sort()
    return best


def snap_to_scale(pitch: int, scale_pcs: Sequence[int]) -> int:
    """Nearest pitch (downwards on ties) whose pitch class is in the scale."""
    for delta in (0, -1, 1, -2, 2):
        if (pitch + delta) % 12 in scale_pcs:
            return pitch + delta
    return pitch


def scale_step(pitch: int, steps: int, scale_pcs: Sequence[int]) -> int:
    """Move `pitch` (assumed in the scale) by `steps` scale degrees up (positive) or down (negative)."""
    p = snap_to_scale(pitch, scale_pcs)
    direction = 1 if steps > 0 else -1
    for _ in range(abs(steps)):
        p += direction
        while p % 12 not in scale_pcs:
            p += direction
    return p


@dataclass(frozen=True)
class Grid:
    """Musical time -> seconds, with tempo, meter and swing.

    Positions are in beats from the start of the song. `swing` (0 = straight, 1/3 = triplet feel) delays every
    second `swing_unit` (0.5 beat = eighth-note swing, 0.25 = sixteenth swing) within each pair of units.
    """

    bpm: float
    beats_per_bar: int
    swing: float = 0.0
    swing_unit: float = 0.5

    @property
    def beat_seconds(self) -> float:
        """Length of one beat in seconds."""
        return 60.0 / self.bpm

    @property
    def bar_seconds(self) -> float:
        """Length of one bar in seconds."""
        return self.beats_per_bar * self.beat_seconds

    def seconds(self, beat: float) -> float:
        """Onset time in seconds of the (possibly fractional) beat position `beat`, swing applied."""
        if self.swing <= 0:
            return beat * self.beat_seconds
        unit = self.swing_unit
        pair, within = divmod(beat, 2 * unit)
        if within <= unit:
            warped = within * (1 + self.swing)
        else:
            warped = unit * (1 + self.swing) + (within - unit) * (1 - self.swing)
        return (pair * 2 * unit + warped) * self.beat_seconds
