"""One synthetic song end to end: plan -> parts -> FluidSynth / singing -> effects -> levels -> 16-bit stems.

A song is a pure function of (seed, split, index, seconds): its random generators are spawned from
`SeedSequence([seed, split code, index])`, one per subsystem, so neither the order in which tracks are made nor
the number of worker processes can change a single byte.
"""

from __future__ import annotations

import numpy as np

from train.synthesis import mix
from train.synthesis.bass import make_bass
from train.synthesis.drums import make_drums
from train.synthesis.fluid import render_groups
from train.synthesis.instruments import make_others
from train.synthesis.melody import MelodyNote, make_melody
from train.synthesis.plan import SongPlan, plan_song
from train.synthesis.voice import SungNote, sing

#: Stems in MUSDB18 file order, and the split codes mixed into the seed.
STEMS = ("drums", "bass", "other", "vocals")
SPLIT_CODES = {"train": 0, "test": 1, "valid": 2}
GENERATOR_VERSION = 1
MAX_ATTEMPTS = 5


def _sung_notes(plan: SongPlan, notes: list[MelodyNote]) -> list[SungNote]:
    """Melody notes (beats) -> notes to sing (seconds), marking legato continuations for portamento."""
    grid = plan.grid
    out = []
    previous: MelodyNote | None = None
    for note in notes:
        start = grid.seconds(note.beat)
        end = grid.seconds(note.beat + note.length)
        legato = previous is not None and previous.phrase == note.phrase and \
            abs(previous.beat + previous.length - note.beat) < 1e-6
        out.append(SungNote(start, end - start, note.pitch, note.word, note.velocity,
                            previous.pitch if legato else None))
        previous = note
    return out


def _silent(x: np.ndarray) -> bool:
    """True when a stem has no audible content (peak below -70 dBFS before levelling)."""
    return float(np.abs(x).max()) < 10 ** (-70 / 20)


def _render_attempt(seq: np.random.SeedSequence, seconds: float) -> tuple[dict[str, np.ndarray], dict] | None:
    """Render one attempt; returns (float stems name -> (2, nb_samples), metadata) or None if a stem is silent."""
    rngs = [np.random.default_rng(s) for s in seq.spawn(7)]
    plan_rng, drum_rng, bass_rng, melody_rng, other_rng, voice_rng, mix_rng = rngs
    nb_samples = int(round(seconds * mix.SAMPLE_RATE))
    plan = plan_song(plan_rng, seconds)
    drums_part = make_drums(plan, drum_rng)
    bass_part = make_bass(plan, bass_rng)
    lead, harmony = make_melody(plan, melody_rng)
    others = make_others(plan, lead, other_rng)

    rendered = render_groups([[drums_part], [bass_part], others], nb_samples)
    stems = dict(zip(("drums", "bass", "other"), rendered))  # float32 (2, nb_samples) each
    voice = sing(_sung_notes(plan, lead), plan.voice.espeak_voice, nb_samples, voice_rng)
    if voice_rng.random() < 0.5:  # echo on the lead vocal
        beat = plan.grid.beat_seconds
        voice = mix.echo(voice, float(voice_rng.choice([beat / 2, beat * 0.75, 0.09])),
                         float(voice_rng.uniform(0.2, 0.4)), float(voice_rng.uniform(0.12, 0.3)))
    vocals = mix.pan_mono(voice, float(voice_rng.uniform(-0.05, 0.05)))
    if harmony:
        second = sing(_sung_notes(plan, harmony), plan.voice.harmony_voice, nb_samples, voice_rng)
        pan = float(voice_rng.choice([-1, 1]) * voice_rng.uniform(0.2, 0.5))
        vocals = vocals + mix.pan_mono(second, pan) * 10 ** (float(voice_rng.uniform(-8, -4)) / 20)
    stems["vocals"] = vocals.astype(np.float32)
    del vocals, voice, rendered
    if any(_silent(stems[name]) for name in STEMS):
        return None

    ir = mix.room_impulse(mix_rng, plan.reverb_rt60)
    sends = {"drums": (0.05, 0.25), "bass": (0.0, 0.05), "other": (0.15, 0.45), "vocals": (0.2, 0.5)}
    offsets = {"drums": (-2.5, 2.5), "bass": (-3.5, 1.5), "other": (-4.0, 2.0), "vocals": (-1.5, 3.0)}
    wets = np.array([mix_rng.uniform(*sends[name]) for name in STEMS])
    wet_stems = np.stack([stems.pop(name) for name in STEMS])  # (nb_stems, 2, T) float32
    mix.add_reverb(wet_stems, ir, wets)
    levels = {}
    for k, name in enumerate(STEMS):
        x = wet_stems[k]
        level_db = float(mix_rng.uniform(*offsets[name]))
        x *= np.float32(10 ** (level_db / 20) * 0.1 / max(mix.active_rms(x), 1e-9))
        stems[name] = x
        levels[name] = {"level_db": round(level_db, 2), "reverb_send": round(float(wets[k]), 3)}
    mix.fade_out(stems, mix_rng, seconds)
    meta = plan.describe()
    meta["mix"] = levels
    meta["notes"] = {"drums": len(drums_part.notes), "bass": len(bass_part.notes),
                     "other": sum(len(p.notes) for p in others), "vocals": len(lead), "harmony": len(harmony)}
    return stems, {"plan": meta, "mix_rng": mix_rng}


def render_song(seed: int, split: str, index: int, seconds: float) -> tuple[dict[str, np.ndarray], dict]:
    """Render one song.

    Args:
        seed: corpus seed (non-negative integer).
        split: "train", "test" or "valid" (part of the song's seed).
        index: track index within the split.
        seconds: duration; the output has exactly round(seconds * 44100) samples.
    Returns:
        (audio, metadata): audio maps "mixture", "drums", "bass", "other", "vocals" to int16 arrays
        (nb_samples, nb_channels=2) with mixture == sum of the four stems exactly; metadata is JSON-ready.
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_CODES)}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    for attempt in range(MAX_ATTEMPTS):
        entropy = [seed, SPLIT_CODES[split], index] + ([attempt] if attempt else [])
        result = _render_attempt(np.random.SeedSequence(entropy), seconds)
        if result is None:
            continue
        stems, extra = result
        audio, info = mix.master({name: stems[name] for name in STEMS}, extra["mix_rng"])
        meta = {"generator_version": GENERATOR_VERSION, "seed": seed, "split": split, "index": index,
                "seconds": seconds, "attempt": attempt, **extra["plan"], "master": info}
        return audio, meta
    raise RuntimeError(f"song {split}/{index} (seed {seed}) had a silent stem in {MAX_ATTEMPTS} attempts; "
                       f"use a longer --seconds")
