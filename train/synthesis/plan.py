"""Song planning: genre, tempo, key, mode, sections, harmony, instrumentation and who plays when.

`plan_song(rng, seconds)` is a pure function of its random generator: it decides everything about a song that is
not a note, so the part generators (drums, bass, instruments, melody) only read the plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from train.synthesis.theory import MODES, PROGRESSIONS, Chord, Grid, diatonic_chord

#: Minimum fraction of the song's bars in which each stem plays (the arrangement is repaired to reach it).
MIN_ACTIVE_FRACTION = {"drums": 0.5, "bass": 0.5, "vocals": 0.4, "other": 0.7}

#: Roles an "other" part can take (see instruments.py): harmonic roles hold chords, melodic ones play lines.
HARMONIC_ROLES = ("pad", "comp", "strum", "power", "arp", "stabs")
MELODIC_ROLES = ("counter",)


@dataclass(frozen=True)
class Genre:
    """Style template: tempo range, meter, feel, drum kits and grooves, bass and 'other' instrument pools."""

    name: str
    tempo: tuple[float, float]
    meters: tuple[int, ...]
    swing: tuple[float, float]  # (probability of swing, amount when swung)
    swing_unit: float
    kits: tuple[int, ...]  # GM drum kit programs (bank 128)
    grooves: tuple[str, ...]  # groove names in drums.GROOVES
    bass_programs: tuple[int, ...]
    bass_styles: tuple[str, ...]
    others: tuple[tuple[str, tuple[int, ...]], ...]  # (role, GM programs)
    modes: tuple[str, ...]
    bars_per_chord: tuple[float, ...]
    reverb_rt60: tuple[float, float]
    seventh_chords: float = 0.0  # probability of seventh chords


#: Genre weights (relative): mostly 4/4 pop/rock like MUSDB18, fewer waltzes and reggae songs.
GENRE_WEIGHTS = {"pop": 1.8, "rock": 2.0, "funk": 1.0, "ballad": 1.1, "dance": 1.1, "hiphop": 1.1, "shuffle": 0.8,
                 "reggae": 0.6, "waltz": 0.5}


GENRES: tuple[Genre, ...] = (
    Genre("pop", (88, 124), (4,), (0.1, 0.12), 0.25, (0, 1, 8, 24), ("pop16", "pop8", "pop_halftime"),
          (33, 34, 38, 39), ("root8", "syncop", "sustain", "octave"),
          (("pad", (88, 89, 50, 92, 48)), ("comp", (0, 1, 4, 5)), ("arp", (0, 46, 8, 11, 27)),
           ("strum", (24, 25)), ("counter", (80, 81, 73, 11, 40))),
          ("major", "major", "minor", "mixolydian"), (1, 1, 2, 0.5), (0.6, 1.8), 0.15),
    Genre("rock", (100, 150), (4,), (0.0, 0.0), 0.5, (0, 8, 16, 17), ("rock8", "rock_push", "rock_ride"),
          (33, 34, 34, 35), ("root8", "root8", "syncop"),
          (("power", (29, 30, 30)), ("strum", (25, 27, 29)), ("comp", (16, 17, 18, 0)),
           ("counter", (29, 30, 81)), ("pad", (48, 49, 19))),
          ("major", "minor", "mixolydian", "dorian"), (1, 1, 2), (0.5, 1.4), 0.0),
    Genre("funk", (92, 116), (4,), (0.35, 0.1), 0.25, (0, 8, 24), ("funk16", "funk_open"),
          (36, 37, 33, 38), ("funk16", "syncop", "octave"),
          (("comp", (7, 4, 16, 17)), ("stabs", (61, 62, 56)), ("strum", (28, 27)),
           ("counter", (65, 66, 56, 81)), ("pad", (89, 50))),
          ("dorian", "mixolydian", "minor", "major"), (1, 2, 0.5), (0.4, 1.1), 0.6),
    Genre("ballad", (58, 84), (4,), (0.15, 0.12), 0.25, (0, 8, 40, 32), ("ballad", "ballad_ride"),
          (32, 33, 35), ("sustain", "root_fifth", "root8"),
          (("comp", (0, 1, 4)), ("arp", (0, 46, 24, 11)), ("pad", (48, 49, 89, 92, 50)),
           ("counter", (40, 73, 68, 71, 42))),
          ("major", "minor", "major"), (1, 2), (1.2, 2.6), 0.3),
    Genre("dance", (116, 130), (4,), (0.0, 0.0), 0.5, (24, 25, 0), ("four_floor", "four_floor_16"),
          (38, 39, 87, 33), ("octave", "offbeat", "root8"),
          (("pad", (90, 88, 92, 89, 50)), ("arp", (81, 80, 84, 4)), ("stabs", (62, 81, 4)),
           ("comp", (4, 0, 16)), ("counter", (80, 81, 84))),
          ("minor", "minor", "major", "dorian"), (1, 2), (0.5, 1.6), 0.2),
    Genre("hiphop", (80, 98), (4,), (0.75, 0.18), 0.25, (25, 24, 0, 8), ("boombap", "trap_half"),
          (38, 39, 33, 87), ("syncop", "sustain"),
          (("comp", (4, 5, 0, 11)), ("pad", (48, 89, 50)), ("arp", (11, 10, 46, 8)),
           ("counter", (73, 80, 40))),
          ("minor", "dorian", "minor"), (1, 2), (0.3, 1.0), 0.5),
    Genre("shuffle", (78, 118), (4,), (1.0, 0.33), 0.5, (0, 8, 32), ("shuffle", "shuffle_ride"),
          (33, 32, 34), ("walking", "root_fifth", "root8"),
          (("comp", (16, 17, 0, 2)), ("strum", (27, 26, 25)), ("counter", (65, 66, 56, 29, 22)),
           ("stabs", (61, 56))),
          ("mixolydian", "major", "dorian"), (1, 2), (0.6, 1.5), 0.7),
    Genre("reggae", (66, 90), (4,), (0.4, 0.12), 0.25, (0, 8, 24), ("one_drop", "steppers"),
          (33, 38, 32), ("reggae", "root_fifth"),
          (("stabs", (27, 16, 28)), ("comp", (16, 17, 0)), ("pad", (89, 48)), ("counter", (56, 65, 81))),
          ("minor", "major", "dorian"), (1, 2), (0.5, 1.3), 0.2),
    Genre("waltz", (84, 150), (3,), (0.0, 0.0), 0.5, (0, 8, 40, 32), ("waltz", "waltz_ride"),
          (32, 33, 35), ("root_fifth", "sustain"),
          (("arp", (0, 46, 24, 21)), ("comp", (0, 21, 24, 25)), ("pad", (48, 49, 50)),
           ("counter", (40, 73, 71, 22))),
          ("major", "minor"), (1, 2), (0.8, 2.2), 0.1),
)

#: Song-form templates (section kinds); longer songs repeat the core and end with the outro.
FORMS: tuple[tuple[str, ...], ...] = (
    ("intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"),
    ("intro", "verse", "pre", "chorus", "verse", "pre", "chorus", "break", "chorus", "outro"),
    ("verse", "chorus", "verse", "chorus", "bridge", "chorus", "chorus"),
    ("intro", "verse", "verse", "chorus", "verse", "chorus", "outro"),
    ("intro", "chorus", "verse", "chorus", "verse", "chorus", "outro"),
)

#: Probability that a stem plays in a section of each kind, before repairs.
ACTIVITY = {
    "intro": {"drums": 0.5, "bass": 0.55, "vocals": 0.0},
    "verse": {"drums": 0.9, "bass": 0.95, "vocals": 0.97},
    "pre": {"drums": 0.85, "bass": 0.9, "vocals": 0.95},
    "chorus": {"drums": 1.0, "bass": 1.0, "vocals": 1.0},
    "bridge": {"drums": 0.6, "bass": 0.8, "vocals": 0.55},
    "break": {"drums": 0.5, "bass": 0.45, "vocals": 0.35},
    "outro": {"drums": 0.7, "bass": 0.8, "vocals": 0.25},
}
INTENSITY = {"intro": 0.5, "verse": 0.62, "pre": 0.72, "chorus": 0.92, "bridge": 0.6, "break": 0.45, "outro": 0.55}


@dataclass
class Section:
    """A run of bars sharing a kind (verse, chorus...), a progression and an activity pattern."""

    kind: str
    start_bar: int
    nb_bars: int
    progression: tuple[str, ...]
    bars_per_chord: float
    intensity: float
    active: dict[str, bool] = field(default_factory=dict)  # "drums", "bass", "vocals", "harmony", "other0".."other2"
    fill: bool = False  # drum fill in the last bar

    @property
    def end_bar(self) -> int:
        """First bar after the section."""
        return self.start_bar + self.nb_bars


@dataclass(frozen=True)
class OtherPart:
    """One instrument of the 'other' stem: role, GM program, pan (-1..1), level (linear), register."""

    role: str
    program: int
    pan: float
    level: float
    low: int
    high: int


@dataclass(frozen=True)
class VoicePlan:
    """The singer: espeak-ng voice, lexicon language, register centre (MIDI), harmony voice usage."""

    espeak_voice: str
    language: str
    centre: int
    harmony_voice: str
    harmony: bool
    harmony_interval: int  # diatonic steps (+2 = third above, -2 = third below)


@dataclass
class SongPlan:
    """Everything about a song except its notes. Times are derived through :attr:`grid`."""

    genre: Genre
    grid: Grid
    tonic: int
    mode: str
    sevenths: bool
    seconds: float
    sections: list[Section]
    kit: int
    groove: str
    bass_program: int
    bass_style: str
    others: list[OtherPart]
    voice: VoicePlan
    reverb_rt60: float

    @property
    def nb_bars(self) -> int:
        """Number of bars covering the song (the last may run past its end)."""
        return self.sections[-1].end_bar

    def section_at(self, bar: int) -> Section:
        """Section containing bar `bar`."""
        for section in self.sections:
            if section.start_bar <= bar < section.end_bar:
                return section
        return self.sections[-1]

    def chords_in_bar(self, bar: int) -> list[tuple[float, Chord]]:
        """Chords sounding in `bar` as (beat offset within the bar, chord), in time order."""
        section = self.section_at(bar)
        bpc = section.bars_per_chord
        bar_in_section = bar - section.start_bar
        beats = self.grid.beats_per_bar
        out = []
        if bpc >= 1:
            idx = int(bar_in_section // bpc) % len(section.progression)
            out.append((0.0, self.chord(section.progression[idx])))
        else:
            per_bar = int(round(1 / bpc))
            for k in range(per_bar):
                idx = (bar_in_section * per_bar + k) % len(section.progression)
                out.append((k * beats / per_bar, self.chord(section.progression[idx])))
        return out

    def chord_at(self, beat: float) -> Chord:
        """Chord sounding at song position `beat` (in beats)."""
        bar = int(beat // self.grid.beats_per_bar)
        offset = beat - bar * self.grid.beats_per_bar
        current = None
        for start, chord in self.chords_in_bar(bar):
            if start <= offset + 1e-9:
                current = chord
        return current

    def chord(self, symbol: str) -> Chord:
        """Diatonic chord of the song's key for a progression symbol."""
        return diatonic_chord(self.tonic, self.mode, symbol, seventh=self.sevenths)

    def active_fraction(self, stem: str) -> float:
        """Fraction of the bars inside the song's duration where `stem` plays."""
        bars_in_song = max(1, math.ceil(self.seconds / self.grid.bar_seconds - 1e-9))
        total = 0
        for section in self.sections:
            overlap = max(0, min(section.end_bar, bars_in_song) - section.start_bar)
            if stem == "other":
                on = any(section.active.get(f"other{i}", False) for i in range(len(self.others)))
            else:
                on = section.active.get(stem, False)
            total += overlap * on
        return total / bars_in_song

    def describe(self) -> dict:
        """JSON-ready summary of the plan (written next to the audio as song.json)."""
        return {
            "genre": self.genre.name,
            "bpm": round(self.grid.bpm, 2),
            "meter": f"{self.grid.beats_per_bar}/4",
            "swing": round(self.grid.swing, 3),
            "key": f"{['C', 'C#', 'D', 'Eb', 'E', 'F', 'F#', 'G', 'Ab', 'A', 'Bb', 'B'][self.tonic]} {self.mode}",
            "drum_kit": self.kit,
            "groove": self.groove,
            "bass": {"program": self.bass_program, "style": self.bass_style},
            "other": [{"role": p.role, "program": p.program, "pan": round(p.pan, 2)} for p in self.others],
            "voice": {"espeak": self.voice.espeak_voice, "language": self.voice.language,
                      "harmony": self.voice.harmony},
            "reverb_rt60": round(self.reverb_rt60, 2),
            "sections": [
                {"kind": s.kind, "bars": s.nb_bars, "chords": [self.chord(c).name for c in s.progression],
                 "active": sorted(k for k, v in s.active.items() if v)}
                for s in self.sections
            ],
        }


def _choice(rng: np.random.Generator, items):
    """Uniform choice from a sequence, returning the item itself (not a numpy scalar)."""
    return items[int(rng.integers(len(items)))]


def _section_lengths(kind: str, unit: int, rng: np.random.Generator, total_bars: int) -> int:
    """Length in bars of a section kind, given the song's phrase unit (4 for short songs, 8 otherwise)."""
    if kind == "intro":
        return int(min(_choice(rng, (1, 2, 2, 4)), max(1, total_bars // 6)))
    if kind in ("verse", "chorus"):
        return unit
    if kind in ("pre", "break"):
        return max(2, unit // 2)
    if kind == "bridge":
        return _choice(rng, (unit // 2, unit))
    return max(2, unit // 2)  # outro


def _layout_sections(rng: np.random.Generator, total_bars: int) -> list[tuple[str, int]]:
    """Section kinds and lengths covering at least `total_bars` bars.

    A form template is extended with repeats of its core (verse/chorus/...) until it is long enough; short
    excerpts sometimes start later in the form (e.g. straight into a verse or chorus), as excerpts of real songs do.
    """
    form = list(_choice(rng, FORMS))
    if total_bars <= 4:  # a very short excerpt: one section where everybody plays
        return [(str(_choice(rng, ("verse", "chorus"))), max(2, total_bars))]
    unit = 4 if total_bars < 24 else 8
    core = [k for k in form if k not in ("intro", "outro")]
    laid = [(k, _section_lengths(k, unit, rng, total_bars)) for k in form]
    j = 0
    while sum(n for _, n in laid) < total_bars or (j == 0 and rng.random() < 0.3):
        kind = core[j % len(core)]
        item = (kind, _section_lengths(kind, unit, rng, total_bars))
        if laid[-1][0] == "outro":
            laid.insert(len(laid) - 1, item)
        else:
            laid.append(item)
        j += 1
    if len(laid) > 3 and rng.random() < 0.4:
        start = int(rng.integers(1, len(laid) // 2 + 1))
        if sum(n for _, n in laid[start:]) >= total_bars:
            laid = laid[start:]
    kept, covered = [], 0
    for kind, n in laid:
        if covered >= total_bars:
            break
        kept.append((kind, n))
        covered += n
    return kept


def _plan_activity(rng: np.random.Generator, sections: list[Section], nb_others: int, roles: list[str]) -> None:
    """Fill each section's `active` map from ACTIVITY probabilities; the caller repairs coverage."""
    for s in sections:
        probs = ACTIVITY[s.kind]
        for stem in ("drums", "bass", "vocals"):
            s.active[stem] = bool(rng.random() < probs[stem])
        s.active["harmony"] = s.kind in ("chorus", "pre") or (s.kind == "bridge" and rng.random() < 0.3)
        for i in range(nb_others):
            if roles[i] in MELODIC_ROLES:  # counter-melodies mostly where the singer rests
                p = {"intro": 0.85, "bridge": 0.8, "break": 0.6, "outro": 0.8, "chorus": 0.35}.get(s.kind, 0.2)
            elif roles[i] == "pad":
                p = {"chorus": 0.95, "bridge": 0.8, "pre": 0.8}.get(s.kind, 0.55)
            else:
                p = {"break": 0.5, "intro": 0.75}.get(s.kind, 0.9)
            s.active[f"other{i}"] = bool(rng.random() < p)
        harmonic = [i for i in range(nb_others) if roles[i] in HARMONIC_ROLES]
        if not any(s.active[f"other{i}"] for i in harmonic):
            s.active[f"other{_choice(rng, harmonic)}"] = True
        if s.kind == "break" and not (s.active["drums"] or s.active["bass"]):
            s.active["drums"] = True


def _repair_coverage(plan: SongPlan) -> None:
    """Switch stems on in more sections until each reaches MIN_ACTIVE_FRACTION of the song's bars."""
    preference = {"chorus": 0, "verse": 1, "pre": 2, "bridge": 3, "break": 4, "outro": 5, "intro": 6}
    for stem in ("drums", "bass", "vocals"):
        order = sorted(plan.sections, key=lambda s: (preference[s.kind], s.start_bar))
        for s in order:
            if plan.active_fraction(stem) >= MIN_ACTIVE_FRACTION[stem]:
                break
            s.active[stem] = True
    if plan.active_fraction("other") < MIN_ACTIVE_FRACTION["other"]:
        for s in plan.sections:
            s.active["other0"] = True


def _choose_others(rng: np.random.Generator, genre: Genre) -> list[OtherPart]:
    """1-3 'other' instruments: one harmonic role always, then optional extra roles (no duplicate role)."""
    nb = int(rng.choice([1, 2, 3], p=[0.2, 0.45, 0.35]))
    harmonic = [o for o in genre.others if o[0] in HARMONIC_ROLES]
    rhythmic = [o for o in harmonic if o[0] != "pad"]
    picked = [_choice(rng, rhythmic if rhythmic and rng.random() < 0.8 else harmonic)]
    pool = [o for o in genre.others if o[0] != picked[0][0]]
    while len(picked) < nb and pool:
        item = pool.pop(int(rng.integers(len(pool))))
        picked.append(item)
    registers = {"pad": (52, 76), "comp": (53, 76), "strum": (52, 74), "power": (40, 62), "arp": (57, 84),
                 "stabs": (55, 77), "counter": (62, 86)}
    pans = list(rng.permutation([-0.55, -0.3, 0.3, 0.55, 0.0]))
    parts = []
    for role, programs in picked:
        program = int(_choice(rng, programs))
        low, high = registers[role]
        shift = int(rng.choice([-5, -2, 0, 0, 3]))
        pan = float(pans.pop()) + float(rng.uniform(-0.1, 0.1))
        if role in ("power",):
            pan = float(rng.choice([-0.6, 0.6]))
        level = float(10 ** (rng.uniform(-4, 2) / 20))
        parts.append(OtherPart(role, program, pan, level, low + shift, high + shift))
    return parts


def _choose_voice(rng: np.random.Generator) -> VoicePlan:
    """Singer: female (centre around G4) or male (centre around G3) espeak-ng variant, language, harmony."""
    female = bool(rng.random() < 0.55)
    language = str(rng.choice(["en-us", "en-us", "en-gb", "es", "it"]))
    variants = ["f1", "f2", "f3", "f4", "f5"] if female else ["m1", "m2", "m3", "m4", "m6", "m7"]
    variant = str(_choice(rng, variants))
    harmony_variant = str(_choice(rng, variants))
    centre = int(rng.integers(64, 70)) if female else int(rng.integers(53, 58))
    return VoicePlan(
        espeak_voice=f"{language}+{variant}",
        language=language,
        centre=centre,
        harmony_voice=f"{language}+{harmony_variant}",
        harmony=bool(rng.random() < 0.6),
        harmony_interval=int(rng.choice([2, 2, -2, -3])),
    )


def plan_song(rng: np.random.Generator, seconds: float, genres: tuple[Genre, ...] = GENRES,
              genre_weights: dict[str, float] | None = None) -> SongPlan:
    """Draw a complete song plan lasting at least `seconds` (the renderer trims to the exact length).

    Args:
        rng: the song's own generator (its draws fully determine the plan).
        seconds: song duration in seconds (> 0).
        genres, genre_weights: the style templates to draw from and their relative weights (default: corpus v1's
            GENRES and GENRE_WEIGHTS; corpus v2 passes its own, see styles_v2).
    Returns:
        A :class:`SongPlan` whose stems each play in at least MIN_ACTIVE_FRACTION of the bars.
    """
    if seconds <= 0:
        raise ValueError(f"song duration must be positive, got {seconds}")
    genre_weights = GENRE_WEIGHTS if genre_weights is None else genre_weights
    weights = np.array([genre_weights[g.name] for g in genres])
    genre = genres[int(rng.choice(len(genres), p=weights / weights.sum()))]
    bpm = float(rng.uniform(*genre.tempo))
    meter = int(_choice(rng, genre.meters))
    swung = rng.random() < genre.swing[0]
    swing = float(genre.swing[1] * rng.uniform(0.7, 1.0)) if swung else 0.0
    grid = Grid(bpm=bpm, beats_per_bar=meter, swing=swing, swing_unit=genre.swing_unit)
    tonic = int(rng.integers(12))
    mode = str(_choice(rng, genre.modes))
    sevenths = bool(rng.random() < genre.seventh_chords)
    total_bars = max(1, math.ceil(seconds / grid.bar_seconds - 1e-9))
    layout = _layout_sections(rng, total_bars)

    pool = list(PROGRESSIONS[mode])
    order = rng.permutation(len(pool))
    progressions = {kind: pool[order[i % len(pool)]] for i, kind in
                    enumerate(("verse", "chorus", "bridge", "pre", "break"))}
    progressions["intro"] = progressions[_choice(rng, ("verse", "chorus"))]
    progressions["outro"] = progressions["chorus"]
    bpc_verse = float(_choice(rng, genre.bars_per_chord))
    bpc = {kind: bpc_verse for kind in ACTIVITY}
    bpc["chorus"] = float(_choice(rng, genre.bars_per_chord))
    bpc["outro"] = bpc["chorus"]
    bpc["bridge"] = float(_choice(rng, genre.bars_per_chord))

    sections = []
    bar = 0
    for kind, n in layout:
        sections.append(Section(kind, bar, n, progressions[kind], bpc[kind],
                                INTENSITY[kind] * float(rng.uniform(0.9, 1.1))))
        bar += n
    for s, nxt in zip(sections[:-1], sections[1:]):
        s.fill = bool(rng.random() < (0.85 if nxt.kind != s.kind else 0.5))
    sections[-1].fill = False

    others = _choose_others(rng, genre)
    plan = SongPlan(
        genre=genre, grid=grid, tonic=tonic, mode=mode, sevenths=sevenths, seconds=float(seconds),
        sections=sections, kit=int(_choice(rng, genre.kits)), groove=str(_choice(rng, genre.grooves)),
        bass_program=int(_choice(rng, genre.bass_programs)), bass_style=str(_choice(rng, genre.bass_styles)),
        others=others, voice=_choose_voice(rng), reverb_rt60=float(rng.uniform(*genre.reverb_rt60)),
    )
    _plan_activity(rng, sections, len(others), [p.role for p in others])
    if len(sections) == 1:
        sections[0].active.update(drums=True, bass=True, vocals=True)
    _repair_coverage(plan)
    return plan


assert all(mode in MODES for g in GENRES for mode in g.modes)
assert set(GENRE_WEIGHTS) == {g.name for g in GENRES}
