"""Ship only what is better: a candidate model against the shipped one (and baselines) on every test split.

    python -m benchmark ship --candidate runs/v2mix/xumx-slicq \\
        --baseline runs/v2mix/umx --baseline runs/v2mix/xumx --output benchmark/results/ship

Every model separates every song of every split with the same pipeline (Wiener-EM 1 iteration, numba; 30 s
chunks; xumx-sliCQ models through the float32 ONNX Runtime network by default, exported and cached on first
use, so the shipped int8 file plays no part), and each song is scored by the MDX-2021 SDR (per target over the whole song,
then the mean of the four targets). A split's score is the mean over its songs. The real MUSDB18 excerpt of
``stempeg`` (``python -m benchmark real``) is scored the same way, report-only: it decides shipping, never
training or checkpoint choice.

The rule (issue 18, point 4): the candidate replaces the shipped model only if it is at least as good on every
``ge`` split (default: the v1 packed test split) and better on every ``gt`` split (default: the corpus v2 test
split) and on the real excerpt. Splits are ``NAME=ROOT:RULE`` with ``ROOT`` a folder of
``<song>/{mixture,vocals,drums,bass,other}.wav``. A missing split folder is an error naming it, not a skip.

Writes ``<output>/ship.json`` (per model, split and song: the scores; the decision and its reasons) and
``<output>/ship.md`` (the table). The exit code is 0 when the comparison ran, whatever it decided; ``--strict``
makes a "keep the shipped model" decision exit with 1 (for scripts).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmark.common import SAMPLE_RATE, TARGETS, PathLike, markdown_table
from xumx_slicq.files import write_json, write_text

DEFAULT_SPLITS = ("v1-packed=data/gpu/test:ge", "v2=data/synth_v2/test:gt")
DEFAULT_OUTPUT = "benchmark/results/ship"
RULES = ("ge", "gt")


def parse_split(text: str) -> Tuple[str, pathlib.Path, str]:
    """``"NAME=ROOT:RULE"`` -> ``(name, root, rule)``; the rule is ``ge`` (at least as good) or ``gt`` (better)."""
    name, sep, rest = text.partition("=")
    root, colon, rule = rest.rpartition(":")
    if not sep or not colon or not name or not root or rule not in RULES:
        raise ValueError(f"--split {text!r}: expected NAME=ROOT:RULE with RULE one of {', '.join(RULES)}")
    return name, pathlib.Path(root), rule


def decide(scores: Dict[str, Dict[str, float]], rules: Dict[str, str], candidate: str, shipped: str
           ) -> Tuple[bool, List[str]]:
    """Apply the shipping rule to ``scores[model][split]`` (mean MDX SDR, dB).

    Returns ``(ship, reasons)``: one reason per split, e.g. ``"v2: 5.10 > 4.80 dB (better: yes)"``.
    """
    ship, reasons = True, []
    for split, rule in rules.items():
        new, old = scores[candidate][split], scores[shipped][split]
        ok = new >= old if rule == "ge" else new > old
        word = "at least as good" if rule == "ge" else "better"
        reasons.append(f"{split}: {new:.3f} {'>=' if rule == 'ge' else '>'} {old:.3f} dB ({word}: "
                       f"{'yes' if ok else 'no'}, {new - old:+.3f} dB)")
        ship = ship and ok
    return ship, reasons


def make_separator(model_dir: PathLike, threads: Optional[int], backend: str = "onnxruntime"):
    """The comparison's separator for a model folder: ``backend`` (float32 ONNX Runtime by default) for
    xumx-sliCQ, torch for the baselines."""
    from xumx_slicq.checkpoint import find_model
    from xumx_slicq.separator import load_separator

    arch, _ = find_model(model_dir)
    backend = backend if arch == "xumx-slicq" else "torch"
    options = {"onnx_options": {"threads": threads, "device": "cpu"}} if backend == "onnxruntime" else {}
    return arch, load_separator(model_dir, arch=arch, backend=backend, niter=1, wiener="numba", **options)


def score_real(separator) -> Dict[str, float]:
    """MDX SDR per target and mean of ``separator`` on stempeg's real excerpt."""
    from benchmark.real import read_excerpt, scores
    from xumx_slicq.separator import separate_array

    stems = read_excerpt()
    out = separate_array(separator, np.ascontiguousarray(stems["mixture"].T), SAMPLE_RATE)
    return scores(stems, {t: y.T for t, y in out.items()})


def run(models: Dict[str, PathLike], splits: Sequence[Tuple[str, pathlib.Path, str]], real: bool,
        threads: Optional[int] = None, backend: str = "onnxruntime", log=print) -> Dict:
    """Score every model (``{label: folder}``, candidate and shipped first) on every split and the excerpt."""
    from xumx_slicq.quantize import gate_sets, separate_set

    songs = {name: gate_sets([root])[str(root)] for name, root, _ in splits}
    result: Dict = {"metric": "MDX SDR (dB), mean over targets per song, mean over songs per split",
                    "pipeline": f"Wiener-EM numba 1 iteration, 30 s chunks; xumx-sliCQ network: {backend}",
                    "splits": {name: {"root": str(root), "rule": rule, "songs": len(songs[name])}
                               for name, root, rule in splits},
                    "models": {}}
    for label, folder in models.items():
        arch, separator = make_separator(folder, threads, backend)
        entry: Dict = {"folder": str(folder), "arch": arch, "splits": {}}
        for name, _, _ in splits:
            t0 = time.perf_counter()
            log(f"{label}: {name} ({len(songs[name])} songs)")
            rows = separate_set(separator, songs[name], log=lambda m: log("  " + m.strip()))
            entry["splits"][name] = {"mean": float(np.mean([r["mean"] for r in rows])),
                                     "per_target": {t: float(np.mean([r["sdr"][t] for r in rows])) for t in TARGETS},
                                     "per_song": rows, "seconds": round(time.perf_counter() - t0, 1)}
        if real:
            entry["splits"]["real"] = score_real(separator)
            log(f"{label}: real excerpt {entry['splits']['real']['mean']:.3f} dB")
        result["models"][label] = entry
    return result


def table(result: Dict) -> str:
    """Markdown: one row per model, the mean MDX SDR of each split (and the real excerpt)."""
    names = list(result["splits"]) + (["real"] if any("real" in m["splits"] for m in result["models"].values())
                                      else [])
    header = ["model", "arch"] + [f"{n} ({result['splits'][n]['songs']} songs)" if n in result["splits"]
                                  else "real excerpt" for n in names]
    rows = [[label, m["arch"]] + [m["splits"][n]["mean"] for n in names] for label, m in result["models"].items()]
    return markdown_table(header, rows, floatfmt=".3f")


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    p = argparse.ArgumentParser(prog="python -m benchmark ship", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate", required=True, help="model folder of the candidate (xumx-sliCQ)")
    p.add_argument("--shipped", default="pretrained-model", help="model folder shipped today (default %(default)s)")
    p.add_argument("--baseline", action="append", default=[],
                   help="further model folders to score beside them, e.g. same-budget UMX / X-UMX (repeatable)")
    p.add_argument("--split", action="append", default=None,
                   help="NAME=ROOT:RULE, RULE ge (at least as good) or gt (better); repeatable (default: "
                        + ", ".join(DEFAULT_SPLITS) + ")")
    p.add_argument("--real", action=argparse.BooleanOptionalAction, default=True,
                   help="score stempeg's real MUSDB18 excerpt too; the candidate must be better on it (default on)")
    p.add_argument("--backend", choices=("onnxruntime", "torch"), default="onnxruntime",
                   help="network of the xumx-sliCQ models: float32 ONNX Runtime (exported and cached on first use) "
                        "or torch (same results to ~1e-6; slower, no export); baselines always torch "
                        "(default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: its own)")
    p.add_argument("--strict", action="store_true", help="exit 1 when the decision is to keep the shipped model")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="folder for ship.json and ship.md (default %(default)s)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: scores, table, decision."""
    args = build_parser().parse_args(argv)
    try:
        splits = [parse_split(s) for s in (args.split or DEFAULT_SPLITS)]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    folders = {"candidate": args.candidate, "shipped": args.shipped,
               **{f"baseline {b}": b for b in args.baseline}}
    for label, folder in folders.items():
        if not pathlib.Path(folder).is_dir():
            print(f"error: {label} {folder}: no such model folder", file=sys.stderr)
            return 2
    for name, root, _ in splits:
        if not root.is_dir():
            print(f"error: split {name}: {root} is not a folder (generate or unpack it first)", file=sys.stderr)
            return 2
    result = run(folders, splits, args.real, args.threads, args.backend)
    rules = {name: rule for name, _, rule in splits}
    if args.real:
        rules["real"] = "gt"
    scores = {label: {n: m["splits"][n]["mean"] for n in rules} for label, m in result["models"].items()}
    ship, reasons = decide(scores, rules, "candidate", "shipped")
    result.update(ship=ship, reasons=reasons)
    out = pathlib.Path(args.output)
    write_json(out / "ship.json", result)
    text = (f"# Ship decision: {'SHIP the candidate' if ship else 'KEEP the shipped model'}\n\n"
            f"{result['metric']}; {result['pipeline']}.\n\n" + table(result) + "\n\n"
            + "\n".join(f"- {r}" for r in reasons) + "\n")
    write_text(out / "ship.md", text)
    print(text)
    print(f"wrote {out / 'ship.json'} and ship.md")
    return 1 if (args.strict and not ship) else 0


if __name__ == "__main__":
    sys.exit(main())
