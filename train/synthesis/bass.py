"""Bass part: GM bass program following the chord roots with genre-typical rhythms and approach notes."""

from __future__ import annotations

import numpy as np

from train.synthesis.events import Part
from train.synthesis.plan import SongPlan
from train.synthesis.theory import Chord, nearest_pitch, scale_pitch_classes

#: Syncopated one-bar rhythms (sixteenths) for the 'syncop' style, 4/4 and 3/4.
SYNCOPATED = {16: ("x..x..x...x.x...", "x.....x.x...x...", "x..x......x..x..", "x.....xx..x....."),
              12: ("x.....x..x..", "x..x..x.....")}
FUNK = ("x..xx.x..x.xx.x.", "x.xx..x.x..x.x..", "x..x.xx...xx.x..")


def _chord_at(plan: SongPlan, bar: int, offset_beats: float) -> tuple[Chord, float]:
    """Chord sounding at `offset_beats` into `bar` and the beat (within the bar) where it ends."""
    chords = plan.chords_in_bar(bar)
    current, end = chords[0][1], float(plan.grid.beats_per_bar)
    for i, (start, chord) in enumerate(chords):
        if start <= offset_beats + 1e-9:
            current = chord
            end = chords[i + 1][0] if i + 1 < len(chords) else float(plan.grid.beats_per_bar)
    return current, end


def make_bass(plan: SongPlan, rng: np.random.Generator) -> Part:
    """Bass line of the song in its style (root8, syncop, sustain, octave, offbeat, funk16, walking, root_fifth,
    reggae). Returns a :class:`Part` with the song's GM bass program.
    """
    grid = plan.grid
    beats = grid.beats_per_bar
    steps = beats * 4
    style = plan.bass_style
    if beats == 3 and style in ("walking", "funk16", "offbeat", "reggae"):
        style = "root_fifth"
    part = Part("bass", program=plan.bass_program)
    scale = scale_pitch_classes(plan.tonic, plan.mode)
    centre = float(rng.uniform(33, 40))
    syncop = SYNCOPATED[steps][int(rng.integers(len(SYNCOPATED[steps])))]
    funk = FUNK[int(rng.integers(len(FUNK)))]

    def root_of(chord: Chord) -> int:
        """Chord root in the bass register around the song's bass centre."""
        return nearest_pitch(chord.root, centre, 28, 47)

    def note(bar: int, beat: float, length_beats: float, pitch: int, velocity: float, intensity: float) -> None:
        """Add a humanised note at a bar/beat position."""
        t0 = grid.seconds(bar * beats + beat) + rng.normal(0, 0.003)
        t1 = grid.seconds(bar * beats + beat + length_beats)
        part.add(t0, t1 - t0, pitch, velocity * (0.8 + 0.25 * intensity) + rng.normal(0, 4))

    for section in plan.sections:
        if not section.active.get("bass"):
            continue
        inten = section.intensity
        for bar in range(section.start_bar, section.end_bar):
            next_chord = plan.chords_in_bar(bar + 1)[0][1]
            if style == "sustain":
                for start, chord in plan.chords_in_bar(bar):
                    _, end = _chord_at(plan, bar, start)
                    note(bar, start, (end - start) * 0.97, root_of(chord), 92, inten)
            elif style == "root_fifth":
                half = 2 if beats == 4 else 1
                for b in range(0, beats, half):
                    chord, _ = _chord_at(plan, bar, b)
                    root = root_of(chord)
                    pitch = root if b == 0 or (b == 2 and rng.random() < 0.25) else root + chord.intervals[2]
                    if pitch > 50:
                        pitch -= 12
                    note(bar, b, half * 0.9, pitch, 95 if b == 0 else 82, inten)
            elif style == "walking":
                for b in range(beats):
                    chord, _ = _chord_at(plan, bar, b)
                    root = root_of(chord)
                    if b == 0:
                        pitch = root
                    elif b == beats - 1:
                        target = root_of(next_chord)
                        pitch = target + int(rng.choice([-1, 1, -2, 2]))
                    else:
                        pitch = root + int(rng.choice([chord.intervals[1], chord.intervals[2], 12, 2, 5]))
                        while pitch % 12 not in scale and pitch % 12 not in chord.pitch_classes:
                            pitch += 1
                    note(bar, b, 0.92, pitch, 90 if b % 2 == 0 else 80, inten)
            else:
                if style == "root8":
                    line, legato = "x.x." * beats, 0.82
                elif style == "octave":
                    line, legato = "x.x." * beats, 0.6
                elif style == "offbeat":
                    line, legato = "..x." * beats, 0.7
                elif style == "syncop":
                    line, legato = syncop, 0.85
                elif style == "funk16":
                    line, legato = funk, 0.45
                elif style == "reggae":
                    line, legato = "x.....x.x.x...x.", 0.9
                else:
                    raise ValueError(f"unknown bass style {style!r}")
                hits = [i for i, ch in enumerate(line) if ch == "x"]
                for k, step in enumerate(hits):
                    beat = step / 4
                    nxt = hits[k + 1] / 4 if k + 1 < len(hits) else float(beats)
                    chord, chord_end = _chord_at(plan, bar, beat)
                    root = root_of(chord)
                    pitch = root
                    if style == "octave" and step % 4 == 2:
                        pitch = root + 12
                    elif style in ("funk16", "reggae") and k > 0:
                        pitch = root + int(rng.choice([0, 0, 12, chord.intervals[2], chord.intervals[1], 10]))
                    elif style in ("root8", "syncop") and k > 0 and rng.random() < 0.12:
                        pitch = root + int(rng.choice([12, chord.intervals[2]]))
                    last_in_bar = k == len(hits) - 1 and step >= steps - 2
                    if last_in_bar and next_chord.root != chord.root and rng.random() < 0.45:
                        pitch = root_of(next_chord) + int(rng.choice([-1, 1, -2]))  # approach note
                    length = min(nxt, chord_end) - beat
                    velocity = 100 if step % 4 == 0 else 84
                    if style == "funk16" and rng.random() < 0.2:
                        velocity, length = 60, 0.12  # dead note
                    note(bar, beat, max(0.1, length * legato), pitch, velocity, inten)
    part.notes.sort(key=lambda n: n.start)
    return part
