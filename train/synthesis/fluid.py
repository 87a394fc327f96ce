"""FluidSynth rendering of note parts to float audio (pyfluidsynth + the FluidR3 General-MIDI soundfont).

Determinism: a fresh synthesiser is created for every render (FluidSynth keeps a block cursor and voices
across calls, so reusing one makes a render depend on what was rendered before), its own reverb and chorus are
off (the mixer adds reverb), and audio is pulled with `fluid_synth_write_float` (the 16-bit writer dithers with a
process-global state). Loading the soundfont is cached by FluidSynth per process (~30 ms after the first time).
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from train.synthesis.events import Part

SOUNDFONT = os.environ.get("XUMX_SOUNDFONT", "/usr/share/sounds/sf2/FluidR3_GM.sf2")
SAMPLE_RATE = 44100
DRUM_CHANNEL = 9

_write_float = None


def _fluidsynth():
    """Import pyfluidsynth lazily and bind `fluid_synth_write_float` (not wrapped by pyfluidsynth 1.4)."""
    global _write_float
    try:
        import fluidsynth
    except (ImportError, OSError) as err:  # pragma: no cover - depends on the machine
        raise RuntimeError("pyfluidsynth / libfluidsynth are missing: pip install pyfluidsynth and "
                           "apt-get install fluidsynth") from err
    if _write_float is None:
        fn = fluidsynth._fl.fluid_synth_write_float
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                       ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        fn.restype = ctypes.c_int
        _write_float = fn
    return fluidsynth


def render_parts(parts: list[Part], nb_samples: int, soundfont: str = SOUNDFONT, gain: float = 0.3) -> np.ndarray:
    """Render parts (each on its own MIDI channel; drum kits on channel 10) into one stereo buffer.

    Args:
        parts: instrument parts; `pan` sets CC10, `level` sets CC7 (FluidSynth maps CC7 to ~40*log10(v/127) dB).
        nb_samples: output length in samples at 44.1 kHz; notes running past the end are cut.
        soundfont: path of the .sf2 file.
        gain: FluidSynth master gain.
    Returns:
        float32 array (nb_channels=2, nb_samples).
    """
    if not os.path.isfile(soundfont):
        raise FileNotFoundError(f"soundfont not found: {soundfont} (apt-get install fluid-soundfont-gm)")
    fluidsynth = _fluidsynth()
    synth = fluidsynth.Synth(gain=gain, samplerate=float(SAMPLE_RATE), **{
        "synth.reverb.active": 0, "synth.chorus.active": 0, "synth.cpu-cores": 1, "synth.polyphony": 512})
    try:
        sfid = synth.sfload(soundfont)
        if sfid < 0:
            raise RuntimeError(f"FluidSynth could not load soundfont {soundfont}")
        events = []  # (sample, order, channel, pitch, velocity, note id); note-offs sort before note-ons
        free_channels = [c for c in range(16) if c != DRUM_CHANNEL]
        for part in parts:
            if not part.notes:
                continue
            channel = DRUM_CHANNEL if part.bank == 128 else free_channels.pop(0)
            synth.program_select(channel, sfid, part.bank, part.program)
            synth.cc(channel, 7, int(np.clip(round(127 * np.sqrt(part.level)), 1, 127)))
            synth.cc(channel, 10, int(np.clip(round(64 + 63 * part.pan), 0, 127)))
            for note in part.notes:
                on = int(round(note.start * SAMPLE_RATE))
                if on >= nb_samples:
                    continue
                off = max(on + 1, int(round((note.start + note.duration) * SAMPLE_RATE)))
                uid = len(events)
                events.append((on, 1, channel, note.pitch, note.velocity, uid))
                events.append((off, 0, channel, note.pitch, 0, uid))
        events.sort()
        left = np.zeros(nb_samples, dtype=np.float32)
        right = np.zeros(nb_samples, dtype=np.float32)
        sounding: dict[tuple[int, int], int] = {}  # (channel, pitch) -> id of the note holding that key
        position = 0

        def pull(until: int) -> None:
            nonlocal position
            until = min(until, nb_samples)
            if until > position:
                _write_float(synth.synth, until - position, left.ctypes.data + 4 * position, 0, 1,
                             right.ctypes.data + 4 * position, 0, 1)
                position = until

        for sample, is_on, channel, pitch, velocity, uid in events:
            if sample >= nb_samples:
                break
            pull(sample)
            key = (channel, pitch)
            if is_on:
                if key in sounding:  # re-strike: end the earlier note first (MIDI allows one note per key)
                    synth.noteoff(channel, pitch)
                synth.noteon(channel, pitch, velocity)
                sounding[key] = uid
            elif sounding.get(key) == uid:  # a stale note-off must not cut a newer note on the same key
                synth.noteoff(channel, pitch)
                del sounding[key]
        pull(nb_samples)
    finally:
        synth.delete()
    return np.stack([left, right])  # (nb_channels, nb_samples)
