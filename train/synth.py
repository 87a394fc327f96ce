"""`python -m train.synth`: generate a synthetic multitrack corpus in MUSDB18-HQ layout.

Example (the bundled demo set, three 30 s test songs)::

    python -m train.synth --out data --train 0 --test 3 --seconds 30 --seed 2026 --jobs 2

writes data/test/synth_test_000{0,1,2}/{mixture,drums,bass,other,vocals}.wav (44.1 kHz, stereo, 16-bit PCM,
mixture = exact sum of the stems) plus song.json (the song's plan). The same arguments always give
byte-identical files, whatever --jobs is. `--style v2` makes corpus v2 (recorded drum kits, MuseScore General,
pedalboard effects, LUFS mastering, festival voice); v1 stays the default. See docs/synth.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from train.synthesis.corpus import generate_corpus
from xumx_slicq import files


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of the generator."""
    parser = argparse.ArgumentParser(
        prog="python -m train.synth",
        description="Generate synthetic songs (drums, bass, other, vocals) in MUSDB18-HQ layout: "
                    "OUT/{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav",
    )
    parser.add_argument("--out", required=True, help="output root folder (created if missing)")
    parser.add_argument("--train", type=int, default=0, help="number of training songs (default 0)")
    parser.add_argument("--test", type=int, default=0, help="number of test songs (default 0)")
    parser.add_argument("--seconds", type=float, default=30.0, help="duration of each song in seconds (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed, >= 0 (default 0)")
    parser.add_argument("--style", choices=("v1", "v2"), default="v1",
                        help="v1: GM soundfont + espeak-ng corpus; v2: recorded drum kits, MuseScore General, "
                             "pedalboard effects, LUFS mastering, festival HTS voice, more genres (default: v1)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="parallel worker processes, one track each (default: all CPU cores)")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="skip tracks already complete with the same seed/duration (default: on)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="show a progress bar (default: on)")
    parser.add_argument("--summary", default=None, help="also write the run summary (speed etc.) to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    if args.seed < 0:
        print(f"error: --seed must be >= 0, got {args.seed}", file=sys.stderr)
        return 2
    if args.train < 0 or args.test < 0 or args.train + args.test == 0:
        print("error: ask for at least one song with --train N and/or --test M", file=sys.stderr)
        return 2
    if args.seconds <= 0:
        print(f"error: --seconds must be positive, got {args.seconds}", file=sys.stderr)
        return 2
    from train.synthesis.resources import MissingResource
    try:
        summary = generate_corpus(args.out, args.train, args.test, args.seconds, args.seed, jobs=max(1, args.jobs),
                                  resume=args.resume, progress=args.progress, style=args.style)
    except MissingResource as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary.update({"out": os.path.abspath(args.out), "style": args.style, "seed": args.seed, "seconds": args.seconds,
                    "train": args.train, "test": args.test})
    print(json.dumps(summary))
    if args.summary:
        files.write_text(args.summary, json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
