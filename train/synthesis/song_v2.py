"""Corpus v2: one song end to end, closer to produced music than v1.

plan (v1 planner with the v2 genres) -> tempo change -> parts (v1 generators) -> key change -> recorded or GM
drum kit with v2 humanisation -> FluidSynth render (one group per instrument, MuseScore General or FluidR3) or
the Hydrogen sampler -> pedalboard effects per instrument and per stem (+ EDM sidechain) -> sung vocals (festival
HTS or espeak-ng) with breaths, doubles, harmony, backing "oohs" and vocal effects -> stem levels -> sum-exact master
(mastering.py) -> 16-bit stems.

A song is a pure function of (seed, split, index, seconds): its generators are spawned from
`SeedSequence([seed, split code, index, 2])` (the trailing 2 keeps v2 songs apart from v1 songs of the same seed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from train.synthesis import effects, hydrogen, mix
from train.synthesis.bass import make_bass
from train.synthesis.drums import KICK, make_drums
from train.synthesis.drums_v2 import CRASHES, DrumKit, choke_envelope, crash_chokes, humanise, split_kit
from train.synthesis.events import Note, Part
from train.synthesis.fluid import SOUNDFONT, render_groups
from train.synthesis.instruments import make_others
from train.synthesis.mastering import master_v2
from train.synthesis.melody import MelodyNote, make_melody
from train.synthesis.plan import SongPlan, plan_song
from train.synthesis.resources import AVL_KITS, MUSESCORE, require
from train.synthesis.song import SPLIT_CODES, STEMS, _silent, _sung_notes
from train.synthesis.styles_v2 import GENRE_WEIGHTS_V2, GENRES_V2, MIX_STYLES
from train.synthesis.theory import Grid
from train.synthesis.voice import SungNote, sing
from train.synthesis.voice_v2 import backing_lines, breaths, double_notes, prepare_festival

GENERATOR_VERSION = 2
MAX_ATTEMPTS = 5
#: resources every v2 song may use (checked before the first song)
NEEDED = ["avl_black_pearl", "avl_red_zeppelin", "hydrogen_kits", "musescore_general", "fluidr3", "festival",
          "festival_slt_hts", "espeak_ng", "pedalboard", "pyloudnorm"]


def _transpose_from(parts: list[Part], melody: list[list[MelodyNote]], seconds: float, beat: float, shift: int):
    """Key change: every pitched note from `seconds` (parts) / `beat` (melody lines) on moves by `shift`."""
    for part in parts:
        part.notes = [Note(n.start, n.duration, n.pitch + shift, n.velocity) if n.start >= seconds - 0.02 else n
                      for n in part.notes]
    return [[replace(n, pitch=n.pitch + shift) if n.beat >= beat - 1e-6 else n for n in line] for line in melody]


@dataclass(frozen=True)
class TempoChangeGrid(Grid):
    """A grid whose tempo changes once: beats after `change_beat` last `ratio` times as long (swing kept)."""

    change_beat: float = 0.0
    ratio: float = 1.0

    def seconds(self, beat: float) -> float:
        """Onset time of `beat`; after the change, time runs `ratio` times slower than the base grid."""
        base = Grid.seconds(self, beat)
        if beat <= self.change_beat:
            return base
        pivot = Grid.seconds(self, self.change_beat)
        return pivot + (base - pivot) * self.ratio


def _tempo_change(plan: SongPlan, rng: np.random.Generator) -> tuple[float, float] | None:
    """(beat, ratio): 25 % of songs with a bridge, break or outro after their second section slow down 5-20 % from
    there (a ritardando or a heavier breakdown). Only slowing down: the plan's bars then still cover the song."""
    if len(plan.sections) < 3 or rng.random() >= 0.25:
        return None
    late = [s for s in plan.sections[2:] if s.kind in ("bridge", "break", "outro")]
    if not late:
        return None
    section = late[int(rng.integers(len(late)))]
    beat = float(section.start_bar * plan.grid.beats_per_bar)
    if plan.grid.seconds(beat) >= plan.seconds - 1.0:
        return None
    return beat, float(rng.uniform(1.05, 1.2))


def _key_change(plan: SongPlan, rng: np.random.Generator) -> tuple[float, float, int] | None:
    """(seconds, beat, semitones) of a lift into the last chorus (or last section), or None (70 % of songs)."""
    if len(plan.sections) < 3 or rng.random() >= 0.3:
        return None
    choruses = [s for s in plan.sections[1:] if s.kind == "chorus"]
    section = choruses[-1] if choruses else plan.sections[-1]
    beat = section.start_bar * plan.grid.beats_per_bar
    seconds = plan.grid.seconds(beat)
    if seconds >= plan.seconds - 1.0:
        return None
    return seconds, beat, int(rng.choice([1, 2, 2, 3]))


def _choose_kit(plan: SongPlan, rng: np.random.Generator, recorded: float) -> DrumKit:
    """A recorded kit (probability `recorded`: one of two avldrums SF2s or three Hydrogen kits), else the plan's GM
    kit from MuseScore General or FluidR3."""
    if rng.random() < recorded:
        choices = [f"avl:{k}" for k in sorted(AVL_KITS)] + [f"hydrogen:{k}" for k in hydrogen.KITS]
        source, name = str(rng.choice(choices)).split(":")
        if source == "hydrogen":
            return DrumKit(f"hydrogen_{name}", None, 0, 0, hydrogen=name)
        return DrumKit(f"avl_{name}", AVL_KITS[name], 0, 0)
    if rng.random() < 0.6:
        return DrumKit(f"musescore_{plan.kit}", MUSESCORE, 128, plan.kit)
    return DrumKit(f"fluidr3_{plan.kit}", None, 128, plan.kit)


def _render_attempt(seq: np.random.SeedSequence, seconds: float) -> tuple[dict[str, np.ndarray], dict] | None:
    """One attempt: float stems name -> (2, nb_samples) and metadata, or None when a stem came out silent."""
    rngs = [np.random.default_rng(s) for s in seq.spawn(10)]
    plan_rng, drum_rng, bass_rng, melody_rng, other_rng, voice_rng, mix_rng, fx_rng, kit_rng, arr_rng = rngs
    nb_samples = int(round(seconds * mix.SAMPLE_RATE))
    plan = plan_song(plan_rng, seconds, GENRES_V2, GENRE_WEIGHTS_V2)
    style = MIX_STYLES[plan.genre.name]
    male = "+m" in plan.voice.espeak_voice
    engine = "festival" if arr_rng.random() < 0.7 else "espeak-ng"
    if engine == "festival":  # the HTS voice sings English lyrics
        plan.voice = replace(plan.voice, language="en-us")
    tempo = _tempo_change(plan, arr_rng)
    if tempo is not None:
        g = plan.grid
        plan.grid = TempoChangeGrid(g.bpm, g.beats_per_bar, g.swing, g.swing_unit, tempo[0], tempo[1])
    drums_part = make_drums(plan, drum_rng)
    bass_part = make_bass(plan, bass_rng)
    lead, harmony = make_melody(plan, melody_rng)
    others = make_others(plan, lead, other_rng)
    change = _key_change(plan, arr_rng)
    if change is not None:
        lead, harmony = _transpose_from([bass_part] + others, [lead, harmony], change[0], change[1], change[2])

    kit = _choose_kit(plan, kit_rng, style.recorded_kit)
    hits = humanise(drums_part, plan, kit_rng, style.feel)
    main_kit, crash_part = split_kit(drums_part, hits, kit)
    chokes = crash_chokes(hits, kit_rng, plan.grid.beat_seconds, 0.25 if style.feel in ("rock", "metal") else 0.1)
    fonts = {}
    for part in [bass_part] + others:
        part.soundfont = MUSESCORE if kit_rng.random() < 0.65 else None
        fonts[part.name] = "musescore" if part.soundfont else "fluidr3"
    if kit.hydrogen:  # sampled in numpy; FluidSynth renders silence for the two empty drum groups
        sampled = hydrogen.load_kit(kit.hydrogen)
        shells = hydrogen.render(main_kit.notes, nb_samples, sampled)
        crashes = hydrogen.render(crash_part.notes, nb_samples, sampled)
        main_kit, crash_part = Part("drums", 0), Part("crashes", 0)
    rendered = render_groups([[main_kit], [crash_part], [bass_part]] + [[p] for p in others], nb_samples, SOUNDFONT)
    if kit.hydrogen:
        rendered[0], rendered[1] = shells, crashes
    crash_audio = rendered[1] * choke_envelope(chokes, [n.start for n in hits if n.pitch in CRASHES], nb_samples)
    drums = effects.process(effects.drum_chain(fx_rng, style.feel), rendered[0] + crash_audio)
    bass = effects.process(effects.bass_chain(fx_rng, plan.bass_program, style.feel), rendered[2])
    other = np.zeros((2, nb_samples), dtype=np.float32)
    families = []
    for part, audio in zip(others, rendered[3:]):
        board, kind = effects.instrument_chain(part.program, fx_rng, plan.grid.beat_seconds, style.drive)
        other += effects.process(board, audio)
        families.append(kind)
    sidechain = fx_rng.random() < style.sidechain
    if sidechain:
        kicks = [n.start for n in hits if n.pitch == KICK]
        depth, release = float(fx_rng.uniform(4, 10)), float(fx_rng.uniform(0.06, 0.14))
        duck = effects.sidechain_gain(kicks, nb_samples, depth, release)
        bass *= duck
        other *= duck
    del rendered, crash_audio

    lead_notes = _sung_notes(plan, lead)
    harmony_notes = _sung_notes(plan, harmony) if harmony else []
    backing: list[list[SungNote]] = []
    backing_rng = np.random.default_rng(int(arr_rng.integers(2 ** 63)))
    if arr_rng.random() < 0.35:
        backing = [line for line in backing_lines(plan, backing_rng) if line]
        if change is not None:
            backing = [[replace(n, pitch=n.pitch + change[2]) if n.start >= change[0] - 0.02 else n for n in line]
                       for line in backing]
    if engine == "festival":
        singer = prepare_festival(lead_notes + harmony_notes + [n for line in backing for n in line], male)
        harmony_singer = singer
    else:
        singer, harmony_singer = plan.voice.espeak_voice, plan.voice.harmony_voice
    voice = sing(lead_notes, singer, nb_samples, voice_rng)
    voice += breaths(lead_notes, nb_samples, voice_rng, float(voice_rng.uniform(0.006, 0.015)))
    vocals = mix.pan_mono(voice, float(voice_rng.uniform(-0.05, 0.05)))
    doubled = bool(voice_rng.random() < 0.45)
    if doubled:
        take = sing(double_notes(lead_notes, voice_rng), singer, nb_samples, voice_rng)
        pan = float(voice_rng.choice([-1, 1]) * voice_rng.uniform(0.15, 0.45))
        vocals = vocals + mix.pan_mono(take, pan) * 10 ** (float(voice_rng.uniform(-7, -3)) / 20)
    if harmony_notes:
        second = sing(harmony_notes, harmony_singer, nb_samples, voice_rng)
        pan = float(voice_rng.choice([-1, 1]) * voice_rng.uniform(0.2, 0.5))
        vocals = vocals + mix.pan_mono(second, pan) * 10 ** (float(voice_rng.uniform(-8, -4)) / 20)
    for side, line in zip((-1, 1), backing):  # backing vocals, panned wide and low
        sung = sing(line, harmony_singer, nb_samples, backing_rng)
        pan = side * float(backing_rng.uniform(0.5, 0.8))
        vocals = vocals + mix.pan_mono(sung, pan) * 10 ** (float(backing_rng.uniform(-13, -8)) / 20)
    vocals = effects.process(effects.vocal_chain(fx_rng, plan.grid.beat_seconds), vocals.astype(np.float32))
    stems = {"drums": drums, "bass": bass, "other": other, "vocals": vocals}
    if any(_silent(stems[name]) for name in STEMS):
        return None

    offsets = {"drums": (-2.0, 2.5), "bass": (-3.0, 1.5), "other": (-3.5, 2.0), "vocals": (-1.0, 3.0)}
    levels = {}
    for name in STEMS:
        x = stems[name]
        level_db = float(mix_rng.uniform(*offsets[name]))
        x *= np.float32(10 ** (level_db / 20) * 0.1 / max(mix.active_rms(x), 1e-9))
        levels[name] = round(level_db, 2)
    mix.fade_out(stems, mix_rng, seconds)
    meta = plan.describe()
    meta["v2"] = {
        "drum_kit": kit.name, "ghost_and_choke": {"crash_chokes": len(chokes)},
        "soundfonts": fonts, "other_effects": families, "sidechain": sidechain,
        "key_change": None if change is None else {"at_seconds": round(change[0], 2), "semitones": change[2]},
        "tempo_change": None if tempo is None else {"at_seconds": round(plan.grid.seconds(tempo[0]), 2),
                                                    "bpm_after": round(plan.grid.bpm / tempo[1], 2)},
        "voice_engine": engine, "voice": singer, "male": male, "double_tracked": doubled,
        "backing_vocals": sum(len(line) for line in backing),
    }
    meta["mix"] = levels
    meta["notes"] = {"drums": len(hits), "bass": len(bass_part.notes), "other": sum(len(p.notes) for p in others),
                     "vocals": len(lead), "harmony": len(harmony)}
    return stems, {"plan": meta, "mix_rng": mix_rng, "style": style}


def render_song_v2(seed: int, split: str, index: int, seconds: float) -> tuple[dict[str, np.ndarray], dict]:
    """Render one corpus-v2 song; same contract as :func:`train.synthesis.song.render_song` (int16 stems whose
    integer sum is the mixture, JSON-ready metadata). Raises MissingResource naming any absent package first."""
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_CODES)}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    require(NEEDED)
    for attempt in range(MAX_ATTEMPTS):
        entropy = [seed, SPLIT_CODES[split], index, GENERATOR_VERSION] + ([attempt] if attempt else [])
        result = _render_attempt(np.random.SeedSequence(entropy), seconds)
        if result is None:
            continue
        stems, extra = result
        audio, info = master_v2({name: stems[name] for name in STEMS}, extra["mix_rng"], extra["style"])
        meta = {"generator_version": GENERATOR_VERSION, "style": "v2", "seed": seed, "split": split, "index": index,
                "seconds": seconds, "attempt": attempt, **extra["plan"], "master": info}
        return audio, meta
    raise RuntimeError(f"song {split}/{index} (seed {seed}) had a silent stem in {MAX_ATTEMPTS} attempts; "
                       f"use a longer --seconds")
