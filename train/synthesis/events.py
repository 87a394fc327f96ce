"""Note events and instrument parts shared by the part generators and the FluidSynth renderer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Note:
    """One note: onset and length in seconds, MIDI pitch 0..127, MIDI velocity 1..127."""

    start: float
    duration: float
    pitch: int
    velocity: int


@dataclass
class Part:
    """An instrument track: GM program (bank 128 = drum kit), pan -1..1, level 0..1 and its notes.

    `soundfont` (corpus v2) renders the part from another soundfont than the renderer's default one.
    """

    name: str
    program: int
    bank: int = 0
    pan: float = 0.0
    level: float = 1.0
    notes: list[Note] = field(default_factory=list)
    soundfont: str | None = None

    def add(self, start: float, duration: float, pitch: int, velocity: float) -> None:
        """Append a note, clamping pitch and velocity into MIDI range and the duration to >= 10 ms."""
        self.notes.append(Note(float(max(0.0, start)), float(max(0.01, duration)), int(np.clip(pitch, 0, 127)),
                               int(np.clip(round(velocity), 1, 127))))
