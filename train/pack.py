"""`python -m train.pack`: carry a MUSDB18-HQ-layout corpus to a remote machine in a few tens of megabytes.

A lent GPU machine receives at most 64 MiB with each call and cannot run the synthesiser (its 148 MB soundfont
does not travel), so the training data goes there in compressed form: one excerpt per track, each stem coded as
OGG Vorbis (about 60 kbit/s per stereo stem at the default quality), and is decoded there back into the
MUSDB18-HQ layout. Unpacking writes 32-bit float WAV stems and a mixture that is their exact sum, so the
separation problem stays consistent (the lossy coding changes the sources, not the relation between them).

    python -m train.pack pack --root data/synth --output .gpu/corpus --train-tracks 100 --train-seconds 15 \\
        --test-tracks 12 --test-seconds 25
    python -m train.pack unpack --input .gpu/corpus --output data/gpu

``pack`` picks each track's excerpt among ``--candidates`` seeded random offsets, the one whose quietest stem is
loudest (so that no target is silent in a short excerpt), and writes ``<output>/<split>/<track>/<stem>.ogg``
plus ``<output>/manifest.json`` (source root, offsets, durations, quality, bytes). ``unpack`` writes
``<output>/<split>/<track>/{mixture,bass,drums,other,vocals}.wav`` with exactly ``seconds x rate`` samples.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from xumx_slicq import files

STEMS = ("bass", "drums", "other", "vocals")


def pick_offset(track_dir: Path, seconds: float, candidates: int, seed: int) -> int:
    """Start sample of the excerpt of ``seconds`` whose quietest stem has the largest RMS.

    Candidates are drawn from a generator seeded by ``seed`` and the track's name, so the choice is reproducible.
    Tracks shorter than the excerpt start at 0.
    """
    import soundfile as sf

    info = sf.info(str(track_dir / "mixture.wav"))
    length = int(round(seconds * info.samplerate))
    if info.frames <= length:
        return 0
    digest = hashlib.sha256(f"{seed}/{track_dir.name}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    starts = sorted(set(int(s) for s in rng.integers(0, info.frames - length + 1, size=max(1, candidates))))
    best, best_score = starts[0], -1.0
    for start in starts:
        rms = []
        for stem in STEMS:
            x, _ = sf.read(str(track_dir / f"{stem}.wav"), start=start, frames=length, dtype="float32")
            rms.append(float(np.sqrt(np.mean(x * x))) if x.size else 0.0)
        if min(rms) > best_score:
            best, best_score = start, min(rms)
    return best


def _pack_track(job: Dict) -> Dict:
    import soundfile as sf

    src, dst = Path(job["src"]), Path(job["dst"])
    info = sf.info(str(src / "mixture.wav"))
    rate = info.samplerate
    start = pick_offset(src, job["seconds"], job["candidates"], job["seed"])
    length = int(round(job["seconds"] * rate))
    frames = min(length, info.frames - start)  # the excerpt; shorter only for a track shorter than asked
    dst.mkdir(parents=True, exist_ok=True)
    nbytes = 0
    for stem in STEMS:
        x, _ = sf.read(str(src / f"{stem}.wav"), start=start, frames=length, dtype="float32")
        with files.atomic_path(dst / f"{stem}.ogg") as tmp:
            sf.write(str(tmp), x, rate, format="OGG", subtype="VORBIS", compression_level=job["quality"])
        nbytes += (dst / f"{stem}.ogg").stat().st_size
    return {"track": src.name, "split": job["split"], "start": start, "frames": frames, "rate": rate,
            "bytes": nbytes}


def pack(root: str, output: str, splits: Dict[str, tuple], quality: float = 0.9, candidates: int = 8,
         seed: int = 0, jobs: int = 1) -> Dict:
    """Pack the first ``n`` tracks (sorted by name) of each split: ``splits = {"train": (n, seconds), ...}``.

    Returns the manifest (also written to ``<output>/manifest.json``).
    """
    if not 0.0 <= quality <= 1.0:
        raise ValueError(f"--quality must be in [0, 1] (libsndfile compression level), got {quality}")
    todo: List[Dict] = []
    for split, (count, seconds) in splits.items():
        if count <= 0:
            continue
        split_dir = Path(root) / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"{split_dir}: no such split folder (expected MUSDB18-HQ layout)")
        tracks = sorted(p for p in split_dir.iterdir() if (p / "mixture.wav").is_file())
        if len(tracks) < count:
            raise ValueError(f"{split_dir}: {len(tracks)} tracks, {count} asked for")
        for track in tracks[:count]:
            missing = [s for s in STEMS if not (track / f"{s}.wav").is_file()]
            if missing:
                raise FileNotFoundError(f"{track}: missing stems {missing}")
            todo.append({"src": str(track), "dst": str(Path(output) / split / track.name), "split": split,
                         "seconds": seconds, "candidates": candidates, "seed": seed, "quality": quality})
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            entries = list(pool.map(_pack_track, todo))
    else:
        entries = [_pack_track(j) for j in todo]
    manifest = {"source_root": os.path.abspath(root), "codec": "OGG Vorbis", "quality": quality, "seed": seed,
                "candidates": candidates, "stems": list(STEMS), "tracks": entries,
                "total_bytes": sum(e["bytes"] for e in entries),
                "seconds": {s: sum(e["frames"] / e["rate"] for e in entries if e["split"] == s) for s in splits}}
    files.write_text(Path(output) / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


def _unpack_track(job: Dict) -> str:
    import soundfile as sf

    src, dst, frames, rate = Path(job["src"]), Path(job["dst"]), job["frames"], job["rate"]
    stems = {}
    for stem in STEMS:
        x, sr = sf.read(str(src / f"{stem}.ogg"), dtype="float32", always_2d=True)
        if sr != rate:
            raise ValueError(f"{src / (stem + '.ogg')}: rate {sr}, manifest says {rate}")
        # the decoder may return a few samples more or less than were coded: exactly `frames` samples
        out = np.zeros((frames, x.shape[1]), dtype=np.float32)
        n = min(frames, x.shape[0])
        out[:n] = x[:n]
        stems[stem] = out
    stems["mixture"] = np.sum([stems[s] for s in STEMS], axis=0, dtype=np.float32)
    dst.mkdir(parents=True, exist_ok=True)
    for name, x in stems.items():
        with files.atomic_path(dst / f"{name}.wav") as tmp:
            sf.write(str(tmp), x, rate, format="WAV", subtype="FLOAT")
    return str(dst)


def unpack(input: str, output: str, jobs: int = 1) -> List[str]:
    """Decode a packed corpus into ``<output>/<split>/<track>/*.wav``; returns the track folders written."""
    manifest_path = Path(input) / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: not a packed corpus (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    todo = [{"src": str(Path(input) / e["split"] / e["track"]), "dst": str(Path(output) / e["split"] / e["track"]),
             "frames": e["frames"], "rate": e["rate"]} for e in manifest["tracks"]]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            return list(pool.map(_unpack_track, todo))
    return [_unpack_track(j) for j in todo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.pack", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="excerpt and code a MUSDB18-HQ-layout corpus as OGG Vorbis stems")
    p.add_argument("--root", required=True, help="corpus root (train/ and test/ folders)")
    p.add_argument("--output", required=True, help="packed corpus folder")
    p.add_argument("--train-tracks", type=int, default=100, help="training tracks, first N by name (100)")
    p.add_argument("--train-seconds", type=float, default=15.0, help="excerpt length of training tracks (15)")
    p.add_argument("--test-tracks", type=int, default=0, help="test tracks, first N by name (0)")
    p.add_argument("--test-seconds", type=float, default=25.0, help="excerpt length of test tracks (25)")
    p.add_argument("--quality", type=float, default=0.9,
                   help="libsndfile compression level 0 (best) .. 1 (smallest) (0.9: ~60 kbit/s per stem)")
    p.add_argument("--candidates", type=int, default=8, help="random excerpt offsets tried per track (8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the excerpt offsets (0)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    u = sub.add_parser("unpack", help="decode a packed corpus into MUSDB18-HQ layout (float WAV)")
    u.add_argument("--input", required=True, help="packed corpus folder (with manifest.json)")
    u.add_argument("--output", required=True, help="corpus root to write")
    u.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "pack":
            m = pack(args.root, args.output, {"train": (args.train_tracks, args.train_seconds),
                                              "test": (args.test_tracks, args.test_seconds)},
                     quality=args.quality, candidates=args.candidates, seed=args.seed, jobs=max(1, args.jobs))
            print(json.dumps({"tracks": len(m["tracks"]), "megabytes": round(m["total_bytes"] / 2**20, 2),
                              "seconds": m["seconds"]}))
        else:
            done = unpack(args.input, args.output, jobs=max(1, args.jobs))
            print(f"unpacked {len(done)} tracks into {args.output}")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
