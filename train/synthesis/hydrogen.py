"""Recorded multi-velocity drum kits of Hydrogen (Debian `hydrogen-drumkits`) as a small numpy sampler.

A kit folder holds `drumkit.xml` (instruments, each with velocity layers: a sample file and the velocity range
0..1 it answers) and the samples. Instruments are mapped to General-MIDI percussion keys by name (kick, snare,
hats, toms, crash, ride...), so the v1/v2 drum parts play on them unchanged. Rendering a hit picks the layer whose
range holds the hit's velocity, scales it by velocity, and adds it at its onset; an open hi-hat is cut (10 ms fade)
by the next closed or pedal hat, as Hydrogen's mute groups and a real hi-hat do. Everything is deterministic.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from scipy import signal

SAMPLE_RATE = 44100
ROOT = "/usr/share/hydrogen/data/drumkits"
#: multi-velocity kits used by corpus v2 (5 to 8 layers on the main pieces)
KITS = ("BJA_Pacific", "ForzeeStereo", "Millo_MultiLayered2")
#: (substring of the lower-cased instrument name, GM key), first match wins
NAME_KEYS = (("bass drum", 36), ("bassdrum", 36), ("kick", 36), ("rim", 37), ("stick", 37), ("clap", 39),
             ("snare 2", 40), ("snare", 38), ("pedal", 44), ("foot", 44), ("open", 46), ("hi hat free", 46),
             ("closed", 42), ("hh", 42), ("hi-hat", 42), ("china", 52), ("bell", 53), ("ride", 51),
             ("crash", 49), ("floor", 41), ("tom low", 43), ("tom mid", 47), ("tom hi", 50), ("tom", 45),
             ("cowbell", 56))
HATS_THAT_CLOSE = (42, 44)


@dataclass
class Layer:
    """One velocity layer: velocity range (0..1), gain, stereo samples (2, n) at 44.1 kHz."""

    low: float
    high: float
    gain: float
    audio: np.ndarray


def _key_for(name: str) -> int | None:
    lowered = name.lower()
    for part, key in NAME_KEYS:
        if part in lowered:
            return key
    return None


def _read(path: str) -> np.ndarray:
    """A sample file as float32 (2, n) at 44.1 kHz."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        g = math.gcd(int(rate), SAMPLE_RATE)
        audio = signal.resample_poly(audio, SAMPLE_RATE // g, int(rate) // g, axis=0).astype(np.float32)
    audio = audio.T
    return np.repeat(audio, 2, axis=0) if audio.shape[0] == 1 else audio[:2]


_CACHE: dict[str, dict[int, list[Layer]]] = {}


def load_kit(name: str, root: str = ROOT) -> dict[int, list[Layer]]:
    """GM key -> velocity layers of a Hydrogen kit (cached per process); the first instrument mapped to a key wins,
    a second crash goes to key 57."""
    if name in _CACHE:
        return _CACHE[name]
    folder = os.path.join(root, name)
    xml_path = os.path.join(folder, "drumkit.xml")
    if not os.path.isfile(xml_path):
        raise FileNotFoundError(f"{xml_path} is missing (apt-get install hydrogen-drumkits)")
    tree = ET.parse(xml_path).getroot()
    strip = (lambda t: t.split("}", 1)[-1])
    kit: dict[int, list[Layer]] = {}
    for element in tree.iter():
        if strip(element.tag) != "instrument":
            continue
        children = {strip(c.tag): c for c in element}
        if "name" not in children or children["name"].text is None:
            continue
        key = _key_for(children["name"].text)
        if key == 49 and 49 in kit:
            key = 57
        if key is None or key in kit:
            continue
        layers = []
        for layer in (e for e in element.iter() if strip(e.tag) == "layer"):
            fields = {strip(c.tag): (c.text or "") for c in layer}
            path = os.path.join(folder, fields.get("filename", ""))
            if not os.path.isfile(path) or "empty" in fields.get("filename", "").lower():
                continue
            layers.append(Layer(float(fields.get("min", 0)), float(fields.get("max", 1)),
                                float(fields.get("gain", 1)), _read(path)))
        if layers:
            kit[key] = sorted(layers, key=lambda la: la.low)
    if 36 not in kit or 38 not in kit:
        raise RuntimeError(f"Hydrogen kit {name} has no kick or snare this mapper recognises")
    _CACHE[name] = kit
    return kit


def _layer(layers: list[Layer], velocity: float) -> Layer:
    """The layer answering a velocity (0..1): its range holds it, else the nearest range."""
    for layer in layers:
        if layer.low <= velocity <= layer.high:
            return layer
    return min(layers, key=lambda la: min(abs(velocity - la.low), abs(velocity - la.high)))


def render(notes, nb_samples: int, kit: dict[int, list[Layer]], gain: float = 0.5) -> np.ndarray:
    """Render drum notes (start s, pitch = GM key, velocity 1..127) on a kit -> float32 (2, nb_samples).

    Keys the kit lacks fall back: 40 -> 38, 57 -> 49, 52/55 -> 49, 53 -> 51, toms to the nearest tom; others are
    skipped.
    """
    fallback = {40: 38, 57: 49, 52: 49, 55: 49, 53: 51, 39: 38, 37: 38, 44: 42, 46: 42, 54: 42,
                41: 43, 43: 45, 45: 47, 47: 45, 48: 50, 50: 48}
    out = np.zeros((2, nb_samples), dtype=np.float32)
    hat_closes = sorted(n.start for n in notes if n.pitch in HATS_THAT_CLOSE)
    fade = int(0.01 * SAMPLE_RATE)
    for note in notes:
        key = note.pitch if note.pitch in kit else fallback.get(note.pitch)
        if key not in kit:
            continue
        velocity = note.velocity / 127
        layer = _layer(kit[key], velocity)
        a = int(round(note.start * SAMPLE_RATE))
        if a >= nb_samples:
            continue
        sample = layer.audio[:, : nb_samples - a] * np.float32(layer.gain * gain * velocity)
        if key == 46:  # an open hat rings until the next closed or pedal hat
            stop = next((t for t in hat_closes if t > note.start + 1e-4), None)
            if stop is not None:
                cut = int(round((stop - note.start) * SAMPLE_RATE))
                if cut < sample.shape[1]:
                    sample = sample[:, :cut + fade].copy()
                    tail = sample[:, cut:]
                    tail *= np.linspace(1.0, 0.0, tail.shape[1], dtype=np.float32)
        out[:, a: a + sample.shape[1]] += sample
    return out
