"""Vocal melody and lyrics: phrases of motifs (repeated with variation), chord tones on strong beats, stepwise
motion elsewhere, rests between phrases, a higher chorus, an optional diatonic harmony line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from train.synthesis.plan import SongPlan
from train.synthesis.theory import nearest_pitch, scale_pitch_classes, scale_step

#: Lyrics vocabulary per language (one word per note; mostly one or two syllables, vowel-rich).
LEXICON: dict[str, tuple[str, ...]] = {
    "en": ("love", "you", "me", "so", "high", "day", "way", "fly", "sky", "go", "know", "free", "see", "be",
           "why", "cry", "stay", "home", "time", "mine", "run", "sun", "rain", "dream", "heart", "fall", "all",
           "now", "true", "blue", "night", "light", "baby", "away", "alone", "tell", "feel", "real", "hold",
           "gold", "road", "slow", "fire", "wait", "say", "shine", "world", "never", "down", "town", "dance",
           "move", "alright", "tonight", "ready", "only", "lonely", "river", "summer", "heaven", "morning"),
    "es": ("amor", "vida", "mar", "sol", "luz", "cielo", "noche", "día", "tú", "yo", "siempre", "nunca",
           "bailar", "cantar", "soñar", "fuego", "alma", "mía", "besos", "corazón", "luna", "quiero", "ven",
           "más", "dame", "calor", "volver"),
    "it": ("amore", "cuore", "vita", "mare", "sole", "luna", "notte", "giorno", "tu", "io", "sempre", "mai",
           "cantare", "volare", "stella", "cielo", "anima", "bella", "ancora", "dove", "piano", "senza", "tempo"),
}
VOCABLES = ("oh", "la", "na", "yeah", "ooh", "hey", "da")


@dataclass(frozen=True)
class MelodyNote:
    """A sung or played note in musical time: onset beat from song start, length in beats, MIDI pitch, word."""

    beat: float
    length: float
    pitch: int
    word: str = ""
    velocity: float = 1.0
    phrase: int = 0


def lexicon_for(language: str) -> tuple[str, ...]:
    """Vocabulary for an espeak-ng language code (en-us, en-gb -> English)."""
    return LEXICON.get(language.split("-")[0], LEXICON["en"])


def _rhythm(rng: np.random.Generator, span: int, density: float) -> list[tuple[int, int]]:
    """Phrase rhythm in grid units (eighths or sixteenths): (onset, length) pairs within `span` units, ending with
    a held note and a rest. `density` in (0, 1] raises the share of short notes.
    """
    start = int(rng.choice([0, 0, 1, 2, 2]))
    rest = int(rng.choice([2, 3, 4])) if span >= 8 else 1
    end = max(start + 2, span - rest)
    lengths = np.array([1, 2, 3, 4, 6])
    p = np.array([0.4 + 0.4 * density, 0.3, 0.08, 0.12 - 0.06 * density, 0.04])
    p = p / p.sum()
    notes, t = [], start
    while t < end:
        d = int(rng.choice(lengths, p=p))
        d = min(d, end - t)
        notes.append((t, d))
        t += d
    if len(notes) >= 2 and notes[-1][1] < 2:  # end on a held note
        t0, d0 = notes[-2]
        notes[-2:] = [(t0, d0 + notes[-1][1])]
    if len(notes) > 3:  # an inner breath now and then
        keep = [n for i, n in enumerate(notes) if i in (0, len(notes) - 1) or rng.random() > 0.1]
        notes = keep
    return notes


def _realise(plan: SongPlan, rng: np.random.Generator, onsets: list[tuple[float, float]], centre: float, low: int,
             high: int, scale, contour: list[int] | None) -> tuple[list[int], list[int]]:
    """Pitches for note onsets (beat, length): chord tones on strong beats, steps elsewhere, kept in range.

    When `contour` (scale steps between notes) is given it is followed, so a repeated motif keeps its shape.
    Returns (pitches, contour used).
    """
    pitches, steps = [], []
    first_chord = plan.chord_at(onsets[0][0])
    pitch = nearest_pitch(int(rng.choice(first_chord.pitch_classes)), centre, low, high)
    for i, (beat, length) in enumerate(onsets):
        if i > 0:
            if contour is not None and i - 1 < len(contour):
                step = contour[i - 1]
            else:
                step = int(rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3, 4],
                                      p=[0.12, 0.2, 0.08, 0.12, 0.2, 0.08, 0.1, 0.04, 0.04, 0.02]))
                if pitch > centre + 4:
                    step = -abs(step)
                elif pitch < centre - 4:
                    step = abs(step)
            steps.append(step)
            pitch = scale_step(pitch, step, scale) if step else pitch
        strong = abs(beat - round(beat)) < 1e-6 or length >= 1.5 or i == len(onsets) - 1
        if strong:
            chord = plan.chord_at(beat)
            pitch = min((nearest_pitch(pc, pitch, low, high) for pc in chord.pitch_classes),
                        key=lambda c: (abs(c - pitch), c))
        while pitch > high:
            pitch -= 12
        while pitch < low:
            pitch += 12
        pitches.append(int(pitch))
    return pitches, steps


def phrase_line(plan: SongPlan, rng: np.random.Generator, bar: int, nb_bars: int, centre: float, low: int,
                high: int, scale, density: float = 0.5) -> list[MelodyNote]:
    """One free melodic phrase of `nb_bars` bars starting at `bar` (used by counter-melodies)."""
    eighths = nb_bars * plan.grid.beats_per_bar * 2
    rhythm = _rhythm(rng, eighths, density)
    origin = bar * plan.grid.beats_per_bar
    onsets = [(origin + t / 2, d / 2) for t, d in rhythm]
    pitches, _ = _realise(plan, rng, onsets, centre, low, high, scale, None)
    return [MelodyNote(b, l, p) for (b, l), p in zip(onsets, pitches)]


def make_melody(plan: SongPlan, rng: np.random.Generator) -> tuple[list[MelodyNote], list[MelodyNote]]:
    """Lead vocal line with lyrics, and the harmony line (empty when the song has none).

    Per section: two or three motifs (rhythm + contour) arranged as e.g. A A B A, the chorus built on a
    repeated hook with repeated words; rests between phrases. Returns (lead notes, harmony notes).
    """
    grid = plan.grid
    beats = grid.beats_per_bar
    scale = scale_pitch_classes(plan.tonic, plan.mode)
    voice = plan.voice
    words = lexicon_for(voice.language)
    song_phrase_bars = 2 if grid.bar_seconds < 3.4 else 1
    density = float(rng.uniform(0.2, 0.8))
    lead: list[MelodyNote] = []
    harmony: list[MelodyNote] = []
    phrase_id = 0
    motifs: dict[str, tuple] = {}  # per section kind: list of (rhythm, contour, lyric) reused on repeats
    for section in plan.sections:
        if not section.active.get("vocals"):
            continue
        phrase_bars = min(song_phrase_bars, section.nb_bars)
        lift = {"chorus": int(rng.integers(2, 6)), "pre": 2, "bridge": int(rng.integers(-2, 4))}.get(section.kind, 0)
        centre = voice.centre + lift
        low, high = voice.centre - 8, voice.centre + 12
        if section.kind not in motifs:
            nb_motifs = 2 if section.kind == "chorus" else 3
            found = []
            # slow songs often sing in sixteenths; the rhythm grid unit is then a quarter beat
            unit = 0.25 if grid.bpm < 100 and rng.random() < 0.6 else 0.5
            span = int(phrase_bars * beats / unit)
            for _ in range(nb_motifs):
                rhythm = _rhythm(rng, span, density if section.kind != "chorus" else density * 0.8)
                if rng.random() < 0.2:
                    lyric = [str(rng.choice(VOCABLES))] * len(rhythm)
                else:
                    lyric = [str(rng.choice(words)) for _ in rhythm]
                found.append([rhythm, None, lyric])
            order = [0, 0, 1, 0] if section.kind == "chorus" else [0, 1, 0, 2]
            motifs[section.kind] = (found, order, unit)
        found, order, unit = motifs[section.kind]
        for k, bar in enumerate(range(section.start_bar, section.end_bar, phrase_bars)):
            if bar + phrase_bars > section.end_bar and section.end_bar - bar < phrase_bars:
                break
            if k > 0 and section.kind != "chorus" and rng.random() < 0.08:
                continue  # the singer skips a phrase
            motif = found[order[k % len(order)]]
            rhythm, contour, lyric = motif
            origin = bar * beats
            onsets = [(origin + t * unit, d * unit) for t, d in rhythm]
            pitches, used = _realise(plan, rng, onsets, centre, low, high, scale, contour)
            if contour is None:
                motif[1] = used
            if section.kind != "chorus" and rng.random() < 0.3:  # fresh words in verses
                lyric = [str(rng.choice(words)) for _ in rhythm]
            swell = float(rng.uniform(0.85, 1.0))
            for i, ((b, l), p) in enumerate(zip(onsets, pitches)):
                vel = swell * (1.0 if l >= 1 else 0.9) * (0.85 + 0.15 * section.intensity)
                lead.append(MelodyNote(b, l, p, lyric[i % len(lyric)], vel, phrase_id))
                if voice.harmony and section.active.get("harmony"):
                    hp = scale_step(p, voice.harmony_interval, scale)
                    harmony.append(MelodyNote(b, l, hp, lyric[i % len(lyric)], vel * 0.8, phrase_id))
            phrase_id += 1
    return lead, harmony
