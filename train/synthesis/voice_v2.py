"""Corpus v2 singing: the HTS voice of festival (cmu_us_slt_arctic_hts, US English) as a second speech engine
for the v1 Praat singing path, plus breaths and double-tracked lead vocals.

* festival speaks words in batch calls (one start-up, then a small cost per word), resampled to the singing
  rate (22.05 kHz); the first call of a process speaks the whole English lexicon, so later songs of a worker
  reuse the cached audio. A male singer is the same voice through Praat's
  "Change gender" (formants lowered by 14-20 %), since Debian packages one HTS voice.
* the sung notes then go through voice.sing (stretching to note length, pitch contour with scoop, portamento,
  vibrato and drift), exactly as the espeak-ng path does; espeak-ng stays the other engine (and the only one for
  non-English lyrics).
* breaths: band-passed noise bursts (200-350 ms) before phrases that follow a rest;
* doubles: the lead sung a second time with its own timing offsets and pitch drift (a double-tracked take);
* backing vocals: "ooh"/"oh" pads on the upper chord tones through the choruses, two voices panned wide.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import replace

import numpy as np
import soundfile as sf
from scipy import signal

from train.synthesis import voice as v1voice
from train.synthesis.melody import LEXICON, VOCABLES
from train.synthesis.plan import SongPlan
from train.synthesis.resources import FESTIVAL_VOICE, require
from train.synthesis.theory import voice_chord
from train.synthesis.voice import VOICE_RATE, SungNote

SAMPLE_RATE = 44100


def _scheme_string(word: str) -> str:
    """A word as a Scheme string literal (letters, apostrophes and hyphens only reach festival)."""
    clean = "".join(c for c in word if c.isalpha() or c in "'-")
    return '"' + clean + '"'


def festival_words(words: list[str]) -> dict[str, np.ndarray]:
    """Speak each word with festival's HTS voice in one batch; returns word -> mono float64 at VOICE_RATE."""
    require(["festival", "festival_slt_hts"])
    words = sorted(set(words))
    with tempfile.TemporaryDirectory(prefix="xumx_festival_") as tmp:
        lines = [f"({FESTIVAL_VOICE})"]
        for i, word in enumerate(words):
            path = os.path.join(tmp, f"{i}.wav")
            lines += [f"(set! u (SynthText {_scheme_string(word)}))", f"(utt.wave.resample u {VOICE_RATE})",
                      f'(utt.save.wave u "{path}" \'riff)']
        script = os.path.join(tmp, "words.scm")
        with open(script, "w") as f:
            f.write("\n".join(lines) + "\n")
        done = subprocess.run(["festival", "--batch", script], capture_output=True, timeout=300)
        out = {}
        for i, word in enumerate(words):
            path = os.path.join(tmp, f"{i}.wav")
            if not os.path.isfile(path):
                raise RuntimeError(f"festival produced no audio for {word!r}: {done.stderr.decode()[-400:]}")
            audio, rate = sf.read(path, dtype="float64")
            if rate != VOICE_RATE:
                raise RuntimeError(f"festival returned {rate} Hz audio, expected {VOICE_RATE}")
            out[word] = audio
    return out


def _lower_formants(audio: np.ndarray, ratio: float) -> np.ndarray:
    """The word with its formants scaled by `ratio` (< 1: a deeper, male-sounding timbre), same pitch/duration."""
    import parselmouth
    from parselmouth.praat import call

    sound = parselmouth.Sound(audio, sampling_frequency=VOICE_RATE)
    changed = call(sound, "Change gender", 75.0, 600.0, ratio, 0.0, 1.0, 1.0)
    return changed.values[0].astype(np.float64)


def festival_voice_name(male: bool) -> str:
    """Voice name under which festival words are cached for voice.sing (one per timbre)."""
    return "festival:slt:male" if male else "festival:slt"


_SPOKEN: dict[str, np.ndarray] = {}  # word -> festival audio at VOICE_RATE, per process


def prepare_festival(notes: list[SungNote], male: bool) -> str:
    """Make sure every word of `notes` is cached for the festival voice; returns the voice name to sing with.

    The first call of a process speaks the whole English lexicon and the vocables in one festival run: a worker
    then never starts festival again for lexicon words. Cached audio does
    not depend on which song asked first, so results stay a pure function of the song's seed.
    """
    name = festival_voice_name(male)
    words = {n.word for n in notes}
    todo = sorted(w for w in words if w not in _SPOKEN)
    if todo:
        if not _SPOKEN:
            todo = sorted(set(todo) | set(LEXICON["en"]) | set(VOCABLES))
        _SPOKEN.update(festival_words(todo))
    for word in sorted(words):
        if not v1voice.is_cached(word, name):
            audio = _lower_formants(_SPOKEN[word], 0.83) if male else _SPOKEN[word]
            v1voice.register_word(word, name, audio)
    return name


def breaths(notes: list[SungNote], nb_samples: int, rng: np.random.Generator, level: float) -> np.ndarray:
    """Breath noises (mono, 44.1 kHz, nb_samples) before each phrase that starts after a rest of >= 0.35 s."""
    out = np.zeros(nb_samples)
    band = signal.butter(2, [400, 5000], "bandpass", fs=SAMPLE_RATE, output="sos")
    previous_end = -1.0
    for note in notes:
        gap = note.start - previous_end
        previous_end = note.start + note.duration
        if gap < 0.35 or rng.random() < 0.25:
            continue
        length = float(rng.uniform(0.2, 0.35))
        start = note.start - length - 0.04
        a = int(start * SAMPLE_RATE)
        n = int(length * SAMPLE_RATE)
        if a < 0 or a + n > nb_samples:
            continue
        noise = signal.sosfilt(band, rng.standard_normal(n))
        env = np.sin(np.linspace(0, np.pi, n)) ** 1.5  # swell in and out
        out[a:a + n] += noise * env * level * float(rng.uniform(0.6, 1.0)) / max(np.std(noise), 1e-9)
    return out


def double_notes(notes: list[SungNote], rng: np.random.Generator) -> list[SungNote]:
    """A second take of the lead: each onset shifted by ~N(0, 12 ms), lengths varied a little."""
    out = []
    for n in notes:
        shift = float(np.clip(rng.normal(0, 0.012), -0.03, 0.03))
        out.append(replace(n, start=max(0.0, n.start + shift),
                           duration=max(0.06, n.duration * float(rng.uniform(0.95, 1.03)))))
    return out


def backing_lines(plan: SongPlan, rng: np.random.Generator) -> list[list[SungNote]]:
    """Two backing-vocal lines: a sustained vocable per chord on the two upper tones of a close voicing around the
    singer's register, in every chorus where the lead sings."""
    grid = plan.grid
    beats = grid.beats_per_bar
    word = str(rng.choice(["ooh", "oh", "ooh"]))
    centre = plan.voice.centre
    lines: list[list[SungNote]] = [[], []]
    previous = None
    for section in plan.sections:
        if section.kind != "chorus" or not section.active.get("vocals"):
            continue
        for bar in range(section.start_bar, section.end_bar):
            chords = plan.chords_in_bar(bar)
            for i, (offset, chord) in enumerate(chords):
                end = chords[i + 1][0] if i + 1 < len(chords) else beats
                start = grid.seconds(bar * beats + offset)
                length = grid.seconds(bar * beats + end) - start
                if grid.seconds(bar * beats + offset) >= plan.seconds:
                    continue
                voicing = voice_chord(chord, previous, centre - 5, centre + 9, 3)
                previous = voicing
                for line, pitch in zip(lines, voicing[-2:]):
                    line.append(SungNote(start + float(rng.normal(0, 0.01)), length * 0.92, int(pitch), word,
                                         float(rng.uniform(0.55, 0.7)), None))
    return lines
