"""Drum part: genre grooves on a sixteenth-note grid, section variations, fills and humanisation (GM kit notes)."""

from __future__ import annotations

import numpy as np

from train.synthesis.events import Part
from train.synthesis.plan import SongPlan

# General MIDI percussion keys.
KICK, RIM, SNARE, CLAP, CLOSED_HAT, PEDAL_HAT, OPEN_HAT = 36, 37, 38, 39, 42, 44, 46
CRASH, CRASH2, RIDE, RIDE_BELL, TAMBOURINE, SHAKER = 49, 57, 51, 53, 54, 70
TOMS = (50, 48, 47, 45, 43, 41)  # high to low

#: How long each kind of hit is held before its note-off (cymbals ring, drums are short).
RING = {CRASH: 3.0, CRASH2: 3.0, RIDE: 1.5, RIDE_BELL: 1.5, OPEN_HAT: 1.0, CLOSED_HAT: 0.3, PEDAL_HAT: 0.3}

#: Velocity per pattern character ('.' = no hit).
VELOCITY = {"X": 118, "x": 96, "o": 72, "g": 42}

#: Grooves: instrument key -> one bar of sixteenths (16 steps in 4/4, 12 in 3/4). Written for this project.
GROOVES: dict[str, dict[int, str]] = {
    "pop16": {KICK: "x.....x...x.....", SNARE: "....X.......X...", CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
    "pop8": {KICK: "x.......x.x.....", SNARE: "....X.......X...", CLOSED_HAT: "x.o.x.o.x.o.x.o."},
    "pop_halftime": {KICK: "x.........x.....", SNARE: "........X.......", CLOSED_HAT: "x.o.x.o.x.o.x.o."},
    "rock8": {KICK: "x.......x.x.....", SNARE: "....X.......X...", CLOSED_HAT: "X.x.X.x.X.x.X.x."},
    "rock_push": {KICK: "x.....x.x.x.....", SNARE: "....X.......X...", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
    "rock_ride": {KICK: "x.......x.x.....", SNARE: "....X.......X...", RIDE: "x.o.x.o.x.o.x.o."},
    "funk16": {KICK: "x.x...x...x..x..", SNARE: "....X..g.g..X..g", CLOSED_HAT: "xoxoxoxoxoxoxo..",
               OPEN_HAT: "..............x."},
    "funk_open": {KICK: "x..x......x.x...", SNARE: "....X..g.g..X.g.", CLOSED_HAT: "x.x.x.x.x.x.x...",
                  OPEN_HAT: "..............x."},
    "ballad": {KICK: "x.......x.......", RIM: "....x.......x...", CLOSED_HAT: "x.o.x.o.x.o.x.o."},
    "ballad_ride": {KICK: "x.........x.....", SNARE: "....x.......x...", RIDE: "x...x...x...x..."},
    "four_floor": {KICK: "x...x...x...x...", CLAP: "....x.......x...", OPEN_HAT: "..x...x...x...x.",
                   CLOSED_HAT: "x...x...x...x..."},
    "four_floor_16": {KICK: "x...x...x...x...", SNARE: "....x.......x...", CLOSED_HAT: "xoxoxoxoxoxoxoxo",
                      OPEN_HAT: "..x...x...x...x."},
    "boombap": {KICK: "x......x..x.....", SNARE: "....X.......X...", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
    "trap_half": {KICK: "x.........x..x..", SNARE: "........X.......", CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
    "shuffle": {KICK: "x.......x.......", SNARE: "....x.......x...", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
    "shuffle_ride": {KICK: "x.....x.x.......", SNARE: "....x.......x...", RIDE: "x.x.x.x.x.x.x.x."},
    "one_drop": {KICK: "........x.......", RIM: "........x.......", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
    "steppers": {KICK: "x...x...x...x...", RIM: "........x.......", CLOSED_HAT: "..x...x...x...x."},
    "waltz": {KICK: "x...........", SNARE: "....x...x...", CLOSED_HAT: "x.o.x.o.x.o."},
    "waltz_ride": {KICK: "x.......x...", RIM: "....x...x...", RIDE: "x...x.x.x.x."},
    # corpus v2 genres (metal, EDM, jazz, trap, folk)
    "metal_double": {KICK: "xxxxxxxxxxxxxxxx", SNARE: "....X.......X...", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
    "metal_gallop": {KICK: "x.xxx.xxx.xxx.xx", SNARE: "....X.......X...", RIDE: "x...x...x...x..."},
    "metal_blast": {KICK: "x.x.x.x.x.x.x.x.", SNARE: ".x.x.x.x.x.x.x.x", CRASH: "x...x...x...x..."},
    "edm_build": {KICK: "x...x...x...x...", SNARE: "x.x.x.x.x.x.x.x.", OPEN_HAT: "..x...x...x...x."},
    "jazz_ride": {RIDE: "x...x..ox...x..o", PEDAL_HAT: "....x.......x...", KICK: "g.......g.......",
                  SNARE: "......g.......g."},
    "jazz_brush": {SNARE: "ooooooooooooooog", PEDAL_HAT: "....x.......x...", KICK: "g.......g......."},
    "trap_roll": {KICK: "x......x..x.....", SNARE: "........X.......", CLOSED_HAT: "xoxoxoxoxxxxxoxo"},
    "folk_tamb": {KICK: "x.......x.......", SNARE: "....o.......o...", TAMBOURINE: "x.o.x.o.x.o.x.o."},
}

#: Alternative kick lines used on every second or fourth bar for variety.
KICK_VARIANTS = {
    16: ("x.......x.x...x.", "x.....x...x.....", "x.x.....x.x.....", "x.......x...x.x."),
    12: ("x.....x.....", "x.........x.", "x...x......."),
}


def _fill(rng: np.random.Generator, steps: int) -> list[tuple[int, int, float]]:
    """A drum fill over the last `steps` sixteenths: list of (step offset, key, velocity)."""
    kind = rng.integers(4)
    hits = []
    for i in range(steps):
        ramp = 62 + 55 * (i + 1) / steps
        if kind == 0:  # snare roll crescendo
            key = SNARE
        elif kind == 1:  # toms high to low
            key = TOMS[min(len(TOMS) - 1, i * len(TOMS) // steps)]
        elif kind == 2:  # snare then toms
            key = SNARE if i < steps // 2 else TOMS[min(5, 2 + (i - steps // 2) * 4 // max(1, steps // 2))]
        else:  # eighth-note toms with snare pickups
            if i % 2:
                continue
            key = TOMS[(i // 2) % len(TOMS)] if i < steps - 2 else SNARE
        hits.append((i, key, ramp))
    if rng.random() < 0.5:
        hits.append((steps - 1, KICK, 100))
    return hits


def make_drums(plan: SongPlan, rng: np.random.Generator) -> Part:
    """Drum part of the song: one groove per song, varied per section and bar, fills at section ends.

    Returns a :class:`Part` on the GM percussion bank (bank 128) with the song's kit program.
    """
    grid = plan.grid
    groove = {k: v for k, v in GROOVES[plan.groove].items()}
    steps = len(next(iter(groove.values())))
    if steps != grid.beats_per_bar * 4:
        raise ValueError(f"groove {plan.groove} has {steps} steps, the meter needs {grid.beats_per_bar * 4}")
    part = Part("drums", program=plan.kit, bank=128)
    jitter = 0.004 if plan.genre.name != "hiphop" else 0.009
    ride_in_chorus = rng.random() < 0.5
    tambourine = rng.random() < 0.3
    shaker = rng.random() < 0.25
    kick_variant = KICK_VARIANTS[steps][int(rng.integers(len(KICK_VARIANTS[steps])))]

    def hit(bar: int, step: float, key: int, velocity: float, intensity: float) -> None:
        """Add a humanised drum hit at a sixteenth `step` of `bar`."""
        beat = bar * grid.beats_per_bar + step / 4
        t = grid.seconds(beat) + rng.normal(0, jitter)
        scale = 0.72 + 0.33 * intensity
        part.add(t, RING.get(key, 0.6), key, velocity * scale + rng.normal(0, 5))

    for si, section in enumerate(plan.sections):
        nxt = plan.sections[si + 1] if si + 1 < len(plan.sections) else None
        intensity = section.intensity
        if not section.active.get("drums"):
            if nxt is not None and nxt.active.get("drums") and rng.random() < 0.6:  # pickup fill into the drums
                last = section.end_bar - 1
                for off, key, vel in _fill(rng, 4):
                    hit(last, steps - 4 + off, key, vel, intensity)
            continue
        sparse = intensity < 0.56 and rng.random() < 0.5
        for bar in range(section.start_bar, section.end_bar):
            pattern = dict(groove)
            if (bar - section.start_bar) % 2 == 1 and rng.random() < 0.5:
                pattern[KICK] = kick_variant
            if section.kind == "chorus" and ride_in_chorus:
                hats = pattern.pop(CLOSED_HAT, None)
                if hats is not None:
                    pattern[RIDE] = hats.replace("o", "x")
            if sparse:
                pattern = {KICK: pattern.get(KICK, "x" + "." * (steps - 1)),
                           CLOSED_HAT: "x.x." * (steps // 4) if plan.genre.name != "ballad" else "x..." * (steps // 4)}
            fill_steps = 0
            if section.fill and bar == section.end_bar - 1:
                fill_steps = int(rng.choice([4, 4, 8])) if steps == 16 else int(rng.choice([3, 6]))
            for key, line in pattern.items():
                for step, ch in enumerate(line):
                    if ch == "." or (fill_steps and step >= steps - fill_steps and key != KICK):
                        continue
                    vel = VELOCITY[ch]
                    if key in (CLOSED_HAT, RIDE) and plan.genre.name in ("ballad", "waltz"):
                        vel *= 0.8
                    hit(bar, step, key, vel, intensity)
            if section.kind in ("chorus", "pre") and tambourine:
                for b in range(1, grid.beats_per_bar, 2):
                    hit(bar, b * 4, TAMBOURINE, 70, intensity)
            if shaker and section.kind in ("verse", "bridge"):
                for step in range(0, steps, 2):
                    hit(bar, step, SHAKER, 55 if step % 4 else 70, intensity)
            if bar == section.start_bar and (si > 0 or section.kind != "intro") and not sparse:
                hit(bar, 0, CRASH if rng.random() < 0.7 else CRASH2, 105, intensity)
            if fill_steps:
                for off, key, vel in _fill(rng, fill_steps):
                    hit(bar, steps - fill_steps + off, key, vel, intensity)
    part.notes.sort(key=lambda n: n.start)
    return part
