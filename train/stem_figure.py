"""`python -m train.stem_figure`: spectrograms of one track's mixture and stems, one panel each (a PNG).

Example (the figure of docs/synth.md)::

    python -m train.synth --out /tmp/v2 --test 1 --seconds 15 --seed 2026 --style v2
    python -m train.stem_figure --track /tmp/v2/test/synth_test_0000 --output docs/synth_v2_stems.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from xumx_slicq.files import atomic_path

FILES = ("mixture", "drums", "bass", "other", "vocals")


def spectrogram_db(x: np.ndarray, rate: int, n_fft: int = 2048, hop: int = 512) -> tuple[np.ndarray, ...]:
    """(frequencies Hz, times s, power dB) of the mono downmix of x (nb_samples, nb_channels)."""
    freqs, times, power = signal.spectrogram(x.mean(axis=1), rate, window="hann", nperseg=n_fft,
                                             noverlap=n_fft - hop, mode="psd")
    return freqs, times, 10 * np.log10(power + 1e-12)


def plot_track(track: Path, output: Path, seconds: float | None = None) -> Path:
    """Draw the five spectrograms of `track` (log frequency, 80 dB range shared by all panels) into `output`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(FILES), 1, figsize=(9, 1.7 * len(FILES)), sharex=True)
    specs = []
    for name in FILES:
        info = sf.info(str(track / f"{name}.wav"))
        frames = info.frames if seconds is None else min(info.frames, int(seconds * info.samplerate))
        x, rate = sf.read(str(track / f"{name}.wav"), frames=frames, dtype="float32", always_2d=True)
        specs.append(spectrogram_db(x, rate))
    top = max(float(s[2].max()) for s in specs)
    for ax, name, (freqs, times, db) in zip(axes, FILES, specs):
        keep = freqs >= 30
        mesh = ax.pcolormesh(times, freqs[keep], db[keep], vmin=top - 80, vmax=top, cmap="magma", shading="auto")
        ax.set_yscale("log")
        ax.set_ylim(30, rate / 2)
        ax.set_ylabel(f"{name}\nHz", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("time (s)")
    title = track.name
    meta = track / "song.json"
    if meta.is_file():
        song = json.loads(meta.read_text())
        extra = song.get("v2", {})
        title += f": {song.get('genre')} {song.get('bpm')} BPM, {song.get('key')}"
        if extra:
            title += f", kit {extra.get('drum_kit')}, voice {extra.get('voice_engine')}"
    fig.suptitle(title, fontsize=9)
    fig.colorbar(mesh, ax=axes, shrink=0.6, label="dB")
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=64, format="png")
    plt.close(fig)
    image = Image.open(buffer).convert("RGB").quantize(colors=128)  # a palette PNG: a third of the size
    with atomic_path(output) as tmp:
        image.save(tmp, format="PNG", optimize=True)
    return output


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    p = argparse.ArgumentParser(prog="python -m train.stem_figure", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--track", required=True, help="track folder with mixture/drums/bass/other/vocals.wav")
    p.add_argument("--output", required=True, help="PNG file to write")
    p.add_argument("--seconds", type=float, default=None, help="draw only the first SECONDS (default: whole track)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    track = Path(args.track)
    missing = [f"{n}.wav" for n in FILES if not (track / f"{n}.wav").is_file()]
    if missing:
        print(f"error: {track} lacks {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"wrote {plot_track(track, Path(args.output), args.seconds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
