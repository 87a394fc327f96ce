"""Corpus v2 styles: the v1 genres plus metal, EDM, jazz, trap (808 bass) and folk, with each genre's loudness
target, drum feel, recorded-kit share and effect character.

The v1 templates (plan.GENRES) are reused unchanged; v2 only adds genres and per-genre mix settings, so the
plan, groove, bass and instrument generators serve both corpus styles.
"""

from __future__ import annotations

from dataclasses import dataclass

from train.synthesis.plan import GENRES, Genre

NEW_GENRES: tuple[Genre, ...] = (
    Genre("metal", (130, 190), (4,), (0.0, 0.0), 0.5, (0, 16), ("metal_double", "metal_gallop", "metal_blast", "rock8"),
          (34, 34, 33), ("root8", "root8", "syncop"),
          (("power", (30, 30, 29)), ("strum", (30, 29)), ("counter", (30, 81, 29)), ("pad", (48, 49, 91))),
          ("minor", "minor", "dorian"), (1, 2, 0.5), (0.4, 1.2), 0.0),
    Genre("edm", (120, 128), (4,), (0.0, 0.0), 0.5, (24, 25), ("four_floor", "four_floor_16", "edm_build"),
          (38, 39, 87), ("offbeat", "octave", "root8"),
          (("pad", (90, 91, 94, 88, 95)), ("arp", (81, 80, 84, 85)), ("stabs", (81, 62, 63, 4)),
           ("counter", (81, 80, 84))),
          ("minor", "minor", "dorian", "major"), (1, 2), (0.6, 2.0), 0.2),
    Genre("jazz", (96, 176), (4,), (1.0, 0.3), 0.5, (32, 40), ("jazz_ride", "jazz_brush"),
          (32, 32, 33), ("walking", "walking", "root_fifth"),
          (("comp", (0, 4, 26, 0)), ("counter", (65, 66, 56, 73, 57)), ("stabs", (61, 57, 56)), ("pad", (48, 61))),
          ("major", "dorian", "mixolydian"), (1, 0.5), (0.8, 1.8), 0.95),
    Genre("trap", (130, 160), (4,), (0.2, 0.1), 0.25, (25, 24), ("trap_half", "trap_roll"),
          (38, 39), ("sustain", "syncop"),
          (("pad", (89, 90, 48, 52)), ("arp", (11, 10, 8, 46)), ("counter", (80, 73, 81)), ("comp", (4, 0))),
          ("minor", "minor", "dorian"), (1, 2), (0.4, 1.2), 0.3),
    Genre("folk", (80, 128), (4,), (0.2, 0.12), 0.5, (0, 32, 40), ("folk_tamb", "ballad"),
          (32, 33), ("root_fifth", "sustain"),
          (("strum", (25, 24, 25)), ("arp", (24, 25, 46, 105)), ("counter", (110, 22, 73, 21, 105)), ("pad", (48, 21))),
          ("major", "mixolydian", "minor"), (1, 2), (0.7, 1.6), 0.1),
)

GENRES_V2: tuple[Genre, ...] = GENRES + NEW_GENRES

#: relative weights: v1's pop/rock majority kept, the new genres each about as common as funk
GENRE_WEIGHTS_V2 = {"pop": 1.6, "rock": 1.6, "funk": 0.8, "ballad": 0.8, "dance": 0.6, "hiphop": 0.8, "shuffle": 0.5,
                    "reggae": 0.4, "waltz": 0.3, "metal": 1.0, "edm": 1.0, "jazz": 0.7, "trap": 0.8, "folk": 0.8}


@dataclass(frozen=True)
class MixStyle:
    """Per-genre v2 mix settings: integrated-loudness range (LUFS), drum feel, share of recorded kits, drive."""

    lufs: tuple[float, float]
    feel: str
    recorded_kit: float  # probability of an avldrums kit instead of a GM kit
    drive: tuple[float, float]  # amp distortion drive in dB for distorted guitars
    sidechain: float  # probability of kick-triggered ducking of bass and other (EDM pumping)
    limiter_db: tuple[float, float]  # most reduction the master limiter may apply


MIX_STYLES = {
    "pop": MixStyle((-11, -8), "pop", 0.6, (8, 16), 0.1, (3, 6)),
    "rock": MixStyle((-10, -8), "rock", 0.8, (14, 26), 0.0, (3, 6)),
    "metal": MixStyle((-9, -7), "metal", 0.9, (24, 36), 0.0, (4, 8)),
    "funk": MixStyle((-12, -9), "funk", 0.7, (6, 12), 0.0, (2, 5)),
    "ballad": MixStyle((-14, -11), "pop", 0.6, (6, 10), 0.0, (2, 4)),
    "dance": MixStyle((-9, -7), "edm", 0.2, (8, 14), 0.5, (3, 7)),
    "edm": MixStyle((-8, -6.5), "edm", 0.1, (8, 14), 0.85, (4, 8)),
    "hiphop": MixStyle((-10, -8), "hiphop", 0.4, (8, 14), 0.0, (3, 6)),
    "trap": MixStyle((-9, -7), "hiphop", 0.2, (8, 14), 0.2, (3, 7)),
    "shuffle": MixStyle((-12, -10), "rock", 0.7, (10, 18), 0.0, (2, 5)),
    "reggae": MixStyle((-12, -9), "pop", 0.6, (6, 10), 0.0, (2, 5)),
    "waltz": MixStyle((-15, -12), "jazz", 0.6, (6, 10), 0.0, (2, 4)),
    "jazz": MixStyle((-17, -13), "jazz", 0.7, (4, 8), 0.0, (1, 3)),
    "folk": MixStyle((-15, -12), "folk", 0.8, (4, 8), 0.0, (1, 4)),
}

assert set(GENRE_WEIGHTS_V2) == {g.name for g in GENRES_V2} == set(MIX_STYLES)
