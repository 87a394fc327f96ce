"""FluidSynth rendering of note parts to float audio (pyfluidsynth + the FluidR3 General-MIDI soundfont).

Determinism: a fresh synthesiser is created for every render (FluidSynth keeps a block cursor and voices
across calls, so reusing one makes a render depend on what was rendered before), its own reverb and chorus are
off (the mixer adds reverb), and float audio is pulled with `fluid_synth_process` (the 16-bit writer dithers with
a process-global state). All stems of a song are rendered in one pass, one FluidSynth audio group per stem.

FluidSynth caches loaded soundfont samples per process while some synth uses them; an idle "keeper" synth holds
them, so later loads do not read the samples again. It never renders, so it cannot change any output.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from train.synthesis.events import Part

SOUNDFONT = os.environ.get("XUMX_SOUNDFONT", "/usr/share/sounds/sf2/FluidR3_GM.sf2")
SAMPLE_RATE = 44100

_process = None
_set_channel_type = None
_keepers: dict[str, object] = {}  # soundfont path -> idle synth that keeps FluidSynth's sample cache warm


def _fluidsynth():
    """Import pyfluidsynth lazily and bind the C functions it does not wrap (float rendering, channel type)."""
    global _process, _set_channel_type
    try:
        import fluidsynth
    except (ImportError, OSError) as err:  # pragma: no cover - depends on the machine
        raise RuntimeError("pyfluidsynth / libfluidsynth are missing: pip install pyfluidsynth and "
                           "apt-get install fluidsynth") from err
    if _process is None:
        fn = fluidsynth._fl.fluid_synth_process
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                       ctypes.POINTER(ctypes.c_void_p)]
        fn.restype = ctypes.c_int
        _process = fn
        fn = fluidsynth._fl.fluid_synth_set_channel_type
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        fn.restype = ctypes.c_int
        _set_channel_type = fn
    return fluidsynth


def render_groups(groups: list[list[Part]], nb_samples: int, soundfont: str = SOUNDFONT,
                  gain: float = 0.3) -> list[np.ndarray]:
    """Render groups of parts in one pass, each group into its own stereo buffer (e.g. one group per stem).

    FluidSynth's audio groups route MIDI channel c to output pair c % nb_groups, so group g's parts get channels
    g, g + nb_groups, ... (drum kits are marked as drum channels).

    Args:
        groups: lists of parts; `pan` sets CC10, `level` sets CC7 (FluidSynth maps CC7 to ~40*log10(v/127) dB).
        nb_samples: output length in samples at 44.1 kHz; notes running past the end are cut.
        soundfont: path of the .sf2 file.
        gain: FluidSynth master gain.
    Returns:
        One float32 array (nb_channels=2, nb_samples) per group.
    """
    if not os.path.isfile(soundfont):
        raise FileNotFoundError(f"soundfont not found: {soundfont} (apt-get install fluid-soundfont-gm)")
    fonts = [soundfont] + sorted({p.soundfont for ps in groups for p in ps if p.soundfont and p.soundfont != soundfont})
    for font in fonts[1:]:
        if not os.path.isfile(font):
            raise FileNotFoundError(f"soundfont not found: {font}")
    fluidsynth = _fluidsynth()
    for font in fonts:
        if font not in _keepers:  # FluidSynth frees cached samples with the last synth using them
            keeper = fluidsynth.Synth(gain=0.0, samplerate=float(SAMPLE_RATE))
            keeper.sfload(font)
            _keepers[font] = keeper
    nb_groups = max(1, len(groups))
    synth = fluidsynth.Synth(gain=gain, samplerate=float(SAMPLE_RATE), **{
        "synth.reverb.active": 0, "synth.chorus.active": 0, "synth.cpu-cores": 1, "synth.polyphony": 1024,
        "synth.audio-channels": nb_groups, "synth.audio-groups": nb_groups})
    out = np.zeros((2 * nb_groups, nb_samples), dtype=np.float32)  # (2 * nb_groups, nb_samples), L/R per group
    try:
        sfids = {}
        for font in fonts:
            sfids[font] = synth.sfload(font)
            if sfids[font] < 0:
                raise RuntimeError(f"FluidSynth could not load soundfont {font}")
        events = []  # (sample, order, channel, pitch, velocity, note id); note-offs sort before note-ons
        for g, parts in enumerate(groups):
            channels = iter(range(g, 256, nb_groups))
            for part in parts:
                if not part.notes:
                    continue
                channel = next(channels)
                if part.bank == 128:
                    _set_channel_type(synth.synth, channel, 1)  # CHANNEL_TYPE_DRUM
                synth.program_select(channel, sfids[part.soundfont or soundfont], part.bank, part.program)
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
        sounding: dict[tuple[int, int], int] = {}  # (channel, pitch) -> id of the note holding that key
        position = 0
        row_bytes = 4  # float32

        def pull(until: int) -> None:
            """Render every group from the current position up to sample `until`."""
            nonlocal position
            until = min(until, nb_samples)
            if until > position:
                pointers = (ctypes.c_void_p * out.shape[0])(
                    *[out[i].ctypes.data + row_bytes * position for i in range(out.shape[0])])
                _process(synth.synth, until - position, 0, None, out.shape[0], pointers)
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
    return [out[2 * g: 2 * g + 2] for g in range(nb_groups)]  # each (nb_channels, nb_samples)


def render_parts(parts: list[Part], nb_samples: int, soundfont: str = SOUNDFONT, gain: float = 0.3) -> np.ndarray:
    """Render parts into one stereo buffer (nb_channels=2, nb_samples); see :func:`render_groups`."""
    return render_groups([parts], nb_samples, soundfont, gain)[0]
