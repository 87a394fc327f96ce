"""The 'other' stem: 1-3 instruments playing chords (pads, comping, strums, power chords, arpeggios, stabs)
or counter-melodies that answer the singer in the gaps of the vocal line.
"""

from __future__ import annotations

import numpy as np

from train.synthesis.events import Part
from train.synthesis.melody import MelodyNote, phrase_line
from train.synthesis.plan import OtherPart, SongPlan
from train.synthesis.theory import nearest_pitch, scale_pitch_classes, voice_chord

#: One-bar comping rhythms (sixteenths) per meter.
COMP_RHYTHMS = {
    16: ("x...x...x...x...", "x..x..x.x..x..x.", "x.x.x.x.x.x.x.x.", "x.....x.....x...", "x..x..x...x.x..."),
    12: ("x...x...x...", "....x...x...", "x.x.x.x.x.x."),
}
STAB_RHYTHMS = {16: ("..x...x...x...x.", "....x.......x...", "..x..x....x..x..", "x.....x...x....."),
                12: ("....x...x...", "..x...x...x.")}
#: Strum patterns: D = down-strum, U = up-strum, '.' = rest (sixteenths).
STRUMS = {16: ("D...D.U.D.U.D.U.", "D.D.D.D.D.D.D.D.", "D..UD.UD.UD.D.U.", "D.....U.D.U.D..."),
          12: ("D...D.U.D.U.", "D.D.D.D.D.D.")}


def _chord_spans(plan: SongPlan, bar: int):
    """(start beat in bar, end beat in bar, chord) for each chord of `bar`."""
    chords = plan.chords_in_bar(bar)
    beats = plan.grid.beats_per_bar
    for i, (start, chord) in enumerate(chords):
        end = chords[i + 1][0] if i + 1 < len(chords) else float(beats)
        yield start, end, chord


def _harmonic_part(plan: SongPlan, spec: OtherPart, index: int, rng: np.random.Generator, part: Part) -> None:
    """Chord-playing roles: pad, comp, strum, power, arp, stabs (notes appended to `part`)."""
    grid = plan.grid
    beats = grid.beats_per_bar
    steps = beats * 4
    role = spec.role
    rhythm = {"comp": COMP_RHYTHMS, "stabs": STAB_RHYTHMS, "strum": STRUMS}.get(role, COMP_RHYTHMS)[steps]
    rhythm = rhythm[int(rng.integers(len(rhythm)))]
    nb_voices = int(rng.choice([3, 4])) if role in ("comp", "stabs") else 4
    arp_rate = int(rng.choice([2, 4])) if role == "arp" else 4  # notes per beat
    arp_shape = int(rng.integers(3))
    legato = {"comp": float(rng.uniform(0.45, 0.9)), "stabs": float(rng.uniform(0.18, 0.35))}.get(role, 0.9)
    previous = None

    def add(bar: int, beat: float, length: float, pitch: int, velocity: float, inten: float, delay: float = 0.0):
        """Add a humanised note at a bar/beat position (`delay` seconds later, for strums)."""
        t0 = grid.seconds(bar * beats + beat) + delay + rng.normal(0, 0.004)
        t1 = grid.seconds(bar * beats + beat + length) + delay
        part.add(t0, t1 - t0, pitch, velocity * (0.7 + 0.35 * inten) + rng.normal(0, 4))

    for section in plan.sections:
        if not section.active.get(f"other{index}"):
            previous = None
            continue
        inten = section.intensity
        for bar in range(section.start_bar, section.end_bar):
            for start, end, chord in _chord_spans(plan, bar):
                voicing = voice_chord(chord, previous, spec.low, spec.high, nb_voices)
                previous = voicing
                if role == "pad":
                    for p in voicing:
                        add(bar, start, (end - start) * 1.02, p, 70, inten)
                elif role == "power":
                    root = nearest_pitch(chord.root, spec.low + 5, spec.low, spec.high)
                    notes = [root, root + 7, root + 12]
                    chug = section.kind not in ("chorus",) and rng.random() < 0.7
                    if chug:
                        b = start
                        while b < end - 1e-9:
                            for p in notes:
                                add(bar, b, 0.3, p, 92 if (b * 2) % 2 == 0 else 80, inten)
                            b += 0.5
                    else:
                        for p in notes:
                            add(bar, start, (end - start) * 0.97, p, 100, inten)
                elif role == "arp":
                    tones = sorted(set(voicing + [v + 12 for v in voicing]))
                    seq = tones if arp_shape == 0 else (tones[::-1] if arp_shape == 1 else tones + tones[-2:0:-1])
                    n = int(round((end - start) * arp_rate))
                    for k in range(n):
                        add(bar, start + k / arp_rate, 1.6 / arp_rate, seq[k % len(seq)], 78 if k % 2 else 90, inten)
                else:  # comp, stabs, strum: rhythm-driven chords
                    for step, ch in enumerate(rhythm):
                        beat = step / 4
                        if ch == "." or not (start - 1e-9 <= beat < end - 1e-9):
                            continue
                        nxt = next((s for s in range(step + 1, steps) if rhythm[s] != "."), steps) / 4
                        length = (min(nxt, end) - beat) * legato
                        accent = 95 if step % 4 == 0 else 80
                        if role == "strum":
                            strings = voice_chord(chord, None, spec.low - 7, spec.high, 6)
                            if ch == "U":
                                strings = strings[::-1][:4]
                                accent -= 15
                            gap = float(rng.uniform(0.007, 0.014))
                            for k, p in enumerate(strings):
                                add(bar, beat, max(0.15, length), p, accent - 3 * k, inten, delay=k * gap)
                        else:
                            for p in voicing:
                                add(bar, beat, max(0.08, length), p, accent, inten)


def _counter_part(plan: SongPlan, spec: OtherPart, index: int, melody: list[MelodyNote],
                  rng: np.random.Generator, part: Part) -> None:
    """Counter-melody: hook phrases where the singer is silent, short answers in the gaps of sung sections."""
    grid = plan.grid
    beats = grid.beats_per_bar
    scale = scale_pitch_classes(plan.tonic, plan.mode)
    centre = (spec.low + spec.high) / 2
    busy = np.zeros(plan.nb_bars * beats * 4 + 1, dtype=bool)  # sixteenths where the singer sings
    for m in melody:
        busy[int(m.beat * 4): int((m.beat + m.length) * 4) + 2] = True
    for section in plan.sections:
        if not section.active.get(f"other{index}"):
            continue
        for bar in range(section.start_bar, section.end_bar, 2):
            first, last = bar * beats * 4, min(bar + 2, section.end_bar) * beats * 4
            free = ~busy[first:last]
            if free.mean() < 0.25:
                continue
            line = phrase_line(plan, rng, bar, min(2, section.end_bar - bar), centre, spec.low, spec.high, scale,
                               density=0.55)
            for note in line:
                s0 = int(note.beat * 4)
                if busy[s0: s0 + max(1, int(note.length * 4))].any():
                    continue
                t0 = grid.seconds(note.beat) + rng.normal(0, 0.005)
                t1 = grid.seconds(note.beat + note.length)
                part.add(t0, (t1 - t0) * 0.95, note.pitch, 88 * (0.75 + 0.3 * section.intensity))


def make_others(plan: SongPlan, melody: list[MelodyNote], rng: np.random.Generator) -> list[Part]:
    """All 'other' parts of the song, one :class:`Part` per instrument (pan and level from the plan)."""
    parts = []
    for index, spec in enumerate(plan.others):
        part = Part(f"other{index}_{spec.role}", program=spec.program, pan=spec.pan, level=spec.level)
        if spec.role == "counter":
            _counter_part(plan, spec, index, melody, rng, part)
        else:
            _harmonic_part(plan, spec, index, rng, part)
        part.notes.sort(key=lambda n: n.start)
        parts.append(part)
    return parts
