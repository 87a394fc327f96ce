"""Same-budget comparison of xumx-sliCQ, UMX and X-UMX on one (lent) GPU machine, in one call.

    python scripts/gpu_compare.py --corpus .gpu/corpus --minutes 5 --out "$OUT"

Stages, each logged with its time since the start:

1. **unpack** the packed corpus (``python -m train.pack``) into ``--data`` (MUSDB18-HQ layout, float WAV);
2. **smoke**: ``--debug`` training of every architecture, separation of one test excerpt and its evaluation, so a
   broken environment fails in seconds, not after the training budget;
3. **train** the architectures side by side with the same recipe (``python -m train`` defaults, 16 chunks per
   track and epoch) under one wall-clock cap, in **lockstep by epochs**: a process that has finished more epochs
   than the slowest one is paused (SIGSTOP) until the others catch up, so every model sees the same number of
   training examples; at the cap, processes one epoch behind may finish it within ``--grace`` seconds;
4. **evaluate** every model on the packed test split (``python -m submission`` then ``python -m benchmark
   evaluate``) and write the comparison table;
5. **package** into ``--out``: ``results.tar.gz`` (histories, model JSONs, tensorboard logs, evaluations, logs,
   ``summary.json``) and the xumx-sliCQ weights in parts of at most 15 MiB (``xumx_slicq.pth.partN``), written
   as soon as training ends so that they come back even if the evaluation does not finish.

``--deadline`` (seconds since the start) bounds the whole run: whatever is still running then is stopped and
what exists is packaged. Exit status 0 when every stage completed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Dict, List, Optional

T0 = time.time()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: run as scripts/gpu_compare.py
from xumx_slicq import files  # noqa: E402
from xumx_slicq.checkpoint import ARCH_FILES  # noqa: E402  (architecture -> weights file stem)


def log(msg: str) -> None:
    print(f"[{time.time() - T0:7.1f} s] {msg}", flush=True)


def tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def spawn(cmd: List[str], logfile: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (so that pausing or stopping reaches its data-loader workers)."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    fh = open(logfile, "w")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=env)


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def stop(proc: subprocess.Popen) -> None:
    """Kill a process group, paused or not."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGKILL)
        proc.wait()


def read_history(run_dir: Path) -> List[Dict]:
    """The per-epoch records ``python -m train`` has written so far (none before the first epoch ends)."""
    try:
        return json.loads((run_dir / "history.json").read_text())
    except (OSError, ValueError):
        return []


def epochs_done(run_dir: Path) -> int:
    return len(read_history(run_dir))


def separate_cmd(py: str, songs: Path, output: Path, model: Path, arch: str, device: str) -> List[str]:
    """``python -m submission`` of a folder of songs with no time limit, 32-bit output, torch backends."""
    return [py, "-m", "submission", "--input", str(songs), "--output", str(output), "--model", str(model),
            "--arch", arch, "--budget-factor", "1000", "--subtype", "FLOAT", "--no-progress", "--device", device,
            "--backend", "torch", "--wiener", "torch"]


def run_all(cmds: Dict[str, List[str]], logdir: Path, deadline: float) -> Dict[str, int]:
    """Run commands side by side until each exits or the deadline (absolute time) passes; return exit codes."""
    procs = {k: spawn(c, logdir / f"{k}.log") for k, c in cmds.items()}
    while any(p.poll() is None for p in procs.values()) and time.time() < deadline:
        time.sleep(0.5)
    codes = {}
    for k, p in procs.items():
        if p.poll() is None:
            stop(p)
            codes[k] = -9
        else:
            codes[k] = p.returncode
    return codes


def lockstep_train(cmds: Dict[str, List[str]], run_dirs: Dict[str, Path], logdir: Path, cap_s: float,
                   grace_s: float, deadline: float) -> Dict[str, Dict]:
    """Train side by side, pausing processes ahead of the slowest by whole epochs; see the module docstring."""
    procs = {k: spawn(c, logdir / f"train-{k}.log") for k, c in cmds.items()}
    paused_since: Dict[str, Optional[float]] = {k: None for k in procs}  # when each pause began
    paused_s = {k: 0.0 for k in procs}
    start = time.time()
    cap_at = start + cap_s
    last_report = 0.0
    target: Optional[int] = None  # epochs every process should reach once the cap has passed

    def alive(k: str) -> bool:
        return procs[k].poll() is None

    def set_paused(k: str, want: bool) -> None:
        if want and paused_since[k] is None and alive(k):
            signal_group(procs[k], signal.SIGSTOP)
            paused_since[k] = time.time()
        elif not want and paused_since[k] is not None:
            signal_group(procs[k], signal.SIGCONT)
            paused_s[k] += time.time() - paused_since[k]
            paused_since[k] = None

    while True:
        now = time.time()
        done = {k: epochs_done(run_dirs[k]) for k in procs}
        running = [k for k in procs if alive(k)]
        if not running:
            break
        low = min(done[k] for k in running)
        if now >= cap_at and target is None:
            # at the cap: those one epoch behind the leaders may catch up (grace), nobody starts a new epoch
            target = max(done[k] for k in running) if now < min(deadline, cap_at + grace_s) else low
            log(f"time cap reached: epochs done {done}; every model stops at {target} epochs")
        if target is not None:
            # a process at the target is frozen, not stopped, until all are there: one that finished another
            # epoch between the read above and its SIGSTOP raises the target for the others (within the grace)
            target = max([target] + [done[k] for k in running])
            settle = time.time()  # from here a freeze only settles the read below; it is not waiting
            for k in running:
                set_paused(k, done[k] >= target)
            time.sleep(0.05)  # let the SIGSTOPs land: a frozen process writes no more history
            done = {k: epochs_done(run_dirs[k]) for k in procs}
            level = all(done[k] == target for k in running)
            if level or now >= min(deadline, cap_at + grace_s):
                for k in running:
                    if paused_since[k] is not None:  # killed frozen: a SIGCONT first would let it run on
                        paused_s[k] += max(0.0, settle - paused_since[k])
                    stop(procs[k])
                log(f"{'all at the target' if level else 'grace over'}: stopped {running} at epochs "
                    f"{[epochs_done(run_dirs[k]) for k in running]}")
                break
        else:
            for k in running:
                set_paused(k, done[k] > low)
        if now - last_report >= 30:
            last_report = now
            log("epochs " + ", ".join(f"{k} {done[k]}{' (paused)' if paused_since[k] is not None else ''}" for k in procs))
        time.sleep(0.5)
    results = {}
    for k, p in procs.items():
        hist = read_history(run_dirs[k])
        results[k] = {"exit_code": p.poll(), "epochs": len(hist),
                      "examples_seen": hist[-1]["examples_seen"] if hist else 0,
                      "train_seconds": sum(r["epoch_seconds"] for r in hist),
                      "paused_seconds": round(paused_s[k], 1),
                      "best_valid": min((r["valid"]["total"] for r in hist), default=None)}
    return results


def package(out: Path, paths: List[Path], name: str = "results.tar.gz") -> None:
    with files.atomic_path(out / name) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for p in paths:
            if p.exists():
                tar.add(str(p), filter=lambda ti: None if ti.name.endswith((".chkpnt", ".pth", ".wav")) else ti)


def split_file(path: Path, out: Path, part_bytes: int = 15 * 2**20) -> List[str]:
    names = []
    with open(path, "rb") as f:
        i = 0
        while True:
            chunk = f.read(part_bytes)
            if not chunk:
                break
            name = f"{path.name}.part{i}"
            (out / name).write_bytes(chunk)
            names.append(name)
            i += 1
    return names


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=".gpu/corpus", help="packed corpus (python -m train.pack pack)")
    p.add_argument("--data", default="data/gpu", help="where to unpack it")
    p.add_argument("--runs", default="runs/gpu", help="training outputs, one folder per architecture")
    p.add_argument("--work", default="out/gpu", help="estimates, evaluations, logs")
    p.add_argument("--out", default=os.environ.get("OUT", "out/gpu/return"), help="files to bring back")
    p.add_argument("--archs", nargs="+", choices=list(ARCH_FILES), default=list(ARCH_FILES))
    p.add_argument("--minutes", type=float, default=5.0, help="wall-clock training cap per model (5)")
    p.add_argument("--grace", type=float, default=45.0, help="seconds to finish a lagging epoch at the cap")
    p.add_argument("--deadline", type=float, default=570.0, help="seconds from start when everything stops")
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=3, help="data-loader workers per training process")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per process")
    p.add_argument("--eval-jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--smoke", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--train", action=argparse.BooleanOptionalAction, default=True,
                   help="train (--no-train: evaluate the models already in --runs, e.g. in a second call)")
    p.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=True,
                   help="separate and evaluate the test split (--no-evaluate: train and package only)")
    p.add_argument("--train-args", default="--samples-per-track 16 --stats-tracks 64",
                   help="extra python -m train arguments, one string")
    args = p.parse_args(argv)
    deadline = T0 + args.deadline
    py = sys.executable
    data, runs, work, out = Path(args.data), Path(args.runs), Path(args.work), Path(args.out)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    summary: Dict = {"args": vars(args), "stages": {}}

    def save_summary() -> None:
        (work / "summary.json").write_text(json.dumps(summary, indent=1))

    def ship() -> None:
        save_summary()
        package(out, [work / "summary.json", logs, runs, work / "eval", work / "comparison.md",
                      work / "comparison.csv"])

    # 1. unpack
    if not (data / "test").is_dir():
        t = time.time()
        code = subprocess.call([py, "-m", "train.pack", "unpack", "--input", args.corpus, "--output", str(data),
                                "--jobs", str(os.cpu_count() or 1)])
        summary["stages"]["unpack"] = {"exit_code": code, "seconds": round(time.time() - t, 1)}
        log(f"unpack: exit {code}")
        if code != 0:
            ship()
            return 1
    tests = sorted(d.name for d in (data / "test").iterdir() if (d / "mixture.wav").is_file())

    # 2. smoke
    if args.smoke and args.train:
        t = time.time()
        smoke = work / "smoke"
        cmds = {a: [py, "-m", "train", "--arch", a, "--root", str(data), "--output", str(smoke / a), "--debug",
                    "--device", args.device, "--no-progress", "--threads", "1"] for a in args.archs}
        codes = run_all(cmds, logs / "smoke", min(deadline, time.time() + 180))
        one = smoke / "input" / tests[0]
        one.mkdir(parents=True, exist_ok=True)
        if not (one / "mixture.wav").exists():
            os.symlink(os.path.abspath(data / "test" / tests[0] / "mixture.wav"), one / "mixture.wav")
        for a in args.archs:
            if codes[a] == 0:
                codes[a + ":separate"] = subprocess.call(
                    separate_cmd(py, smoke / "input", smoke / "est" / a, smoke / a, a, args.device), stdout=open(logs / "smoke" / f"{a}-separate.log", "w"), stderr=subprocess.STDOUT)
        a = args.archs[0]
        if codes.get(a + ":separate") == 0:
            codes[a + ":evaluate"] = subprocess.call(
                [py, "-m", "benchmark", "evaluate", "--root", str(data), "--estimates", str(smoke / "est" / a),
                 "--tracks", tests[0], "--output", str(smoke / "eval"), "--jobs", "1", "--no-progress"],
                stdout=open(logs / "smoke" / "evaluate.log", "w"), stderr=subprocess.STDOUT)
        summary["stages"]["smoke"] = {"exit_codes": codes, "seconds": round(time.time() - t, 1)}
        log(f"smoke: {codes}")
        bad = [k for k, c in codes.items() if c != 0]
        if bad or len(codes) < 2 * len(args.archs) + 1:
            for f in sorted((logs / "smoke").glob("*.log")):
                print(f"----- {f.name}\n{tail(f)}")
            ship()
            return 1

    # 3. train in lockstep
    trained: Dict[str, Dict] = {}
    if args.train:
        cmds = {}
        run_dirs = {}
        for a in args.archs:
            run_dirs[a] = runs / a
            cmds[a] = [py, "-m", "train", "--arch", a, "--root", str(data), "--output", str(runs / a),
                       "--device", args.device, "--workers", str(args.workers), "--threads", str(args.threads),
                       "--no-progress", "--resume"] + args.train_args.split()
        t = time.time()
        trained = lockstep_train(cmds, run_dirs, logs, args.minutes * 60, args.grace, deadline)
        summary["stages"]["train"] = {**trained, "seconds": round(time.time() - t, 1)}
        log(f"train: {json.dumps(summary['stages']['train'])}")
        slicq = runs / "xumx-slicq" / f"{ARCH_FILES['xumx-slicq']}.pth"
        if slicq.is_file():
            summary["xumx_slicq_parts"] = split_file(slicq, out)
        ship()
    if not args.evaluate:
        return 0 if all(r["epochs"] for r in trained.values()) else 1

    # 4. evaluate: separations one after the other on the GPU, evaluations in the background on the CPUs
    evals: Dict[str, subprocess.Popen] = {}
    sep_codes: Dict[str, int] = {}
    # the baselines first: their weights (142 MB each) cannot come back, xumx-sliCQ's can be evaluated at home
    for a in sorted(args.archs, key=lambda a: a == "xumx-slicq"):
        if not (runs / a / f"{ARCH_FILES[a]}.pth").is_file():
            sep_codes[a] = -1
            continue
        remaining = deadline - time.time() - 20
        if remaining <= 0:
            break
        proc = spawn(separate_cmd(py, data / "test", work / "est" / a, runs / a, a, args.device),
                     logs / f"separate-{a}.log")
        try:
            sep_codes[a] = proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            stop(proc)
            sep_codes[a] = -9
        log(f"separate {a}: exit {sep_codes[a]}")
        if sep_codes[a] == 0:
            evals[a] = spawn([py, "-m", "benchmark", "evaluate", "--root", str(data), "--estimates",
                              str(work / "est" / a), "--method", a, "--output", str(work / "eval" / a),
                              "--jobs", str(max(1, args.eval_jobs // len(args.archs))), "--no-progress"],
                             logs / f"evaluate-{a}.log")
    eval_codes = {}
    for a, proc in evals.items():
        try:
            eval_codes[a] = proc.wait(timeout=max(1.0, deadline - time.time() - 10))
        except subprocess.TimeoutExpired:
            stop(proc)
            eval_codes[a] = -9
        log(f"evaluate {a}: exit {eval_codes[a]}")
    summary["stages"]["evaluate"] = {"separate": sep_codes, "evaluate": eval_codes}
    done = [str(work / "eval" / a) for a, c in eval_codes.items() if c == 0]
    if done:
        code = subprocess.call([py, "-m", "benchmark", "evaluate", "--compare", *done, "--table",
                                str(work / "comparison")])
        summary["stages"]["compare"] = code
        if (work / "comparison.md").is_file():
            print((work / "comparison.md").read_text())
    ok = (len(eval_codes) == len(args.archs) and all(c == 0 for c in eval_codes.values()))
    summary["ok"] = ok
    summary["total_seconds"] = round(time.time() - T0, 1)
    ship()
    log(f"done, ok={ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
