"""Synthetic multitrack corpus generator (drums, bass, other, vocals) in MUSDB18-HQ layout.

Modules, in the order a song flows through them::

    theory   (scales, chords, voicings)       -> plan    (genre, tempo, key, sections, who plays when)
    drums / bass / instruments / melody       -> note events per part (seconds, MIDI pitch, velocity)
    fluid    (FluidSynth render of parts)     -> voice   (espeak-ng + Praat singing of the melody)
    mix      (reverb, levels, glue, master)   -> song    (one track, end to end)
    corpus   (parallel generation, atomic WAV writing, progress bar)

Corpus v2 (`--style v2`) reuses the planner and part generators and adds::

    styles_v2 (v2 genres, loudness targets)   resources (what v2 needs, and which package provides it)
    drums_v2 + hydrogen (recorded kits, ghosts, chokes)   effects (pedalboard chains, sidechain)
    voice_v2 (festival HTS voice, breaths, doubles)       mastering (sum-exact bus compression, LUFS, limiter)
    song_v2  (one v2 song end to end, tempo and key changes)

The command-line entry point is `python -m train.synth`; see docs/synth.md for the musical model and its limits.
"""

from train.synthesis.corpus import generate_corpus, track_name
from train.synthesis.song import STEMS, render_song

__all__ = ["generate_corpus", "render_song", "track_name", "STEMS"]
