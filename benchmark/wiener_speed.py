"""Time the Wiener-EM backends (torch vs numba) on sliCQ-sized inputs.

Both workloads run :func:`xumx_slicq.filtering.wiener_blocks` with ``backend="torch"`` and ``"numba"`` on inputs
shaped like the default Bark-262 sliCQ (263 bins, max_T 292, 18,640 valid coefficients per slice and channel):

* ``dense``: the zero-padded matrix flattened into frames, one block `(1, nb_channels, 263, 1, nb_slices * max_T)`
  -- the STFT-like layout `(nb_slices * max_T, 263, nb_channels, nb_sources)` that the original xumx-sliCQ ran.
* ``blocks``: the ragged sliCQ blocks of random audio, valid coefficients only -- what the separator runs.

The first numba call of a process includes compilation (or loading the on-disk cache); it is reported
separately from the steady-state times.  ``--fresh-cache`` points numba at an empty cache folder so the first
call measures a cold compile.  Wall and process CPU times are reported (CPU time is steadier on a shared
machine).  Results are printed and written as JSON (atomically).

Example::

    python -m benchmark.wiener_speed --threads 2 --seconds 30 --dense-seconds 6 --output out/wiener_speed.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from typing import Dict

from xumx_slicq.timing import Timing, time_calls

from xumx_slicq import files


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mode", choices=("dense", "blocks", "both"), default="both", help="workload(s) to time")
    p.add_argument("--seconds", type=float, default=30.0, help="audio duration of the blocks workload")
    p.add_argument("--dense-seconds", type=float, default=6.0,
                   help="audio duration of the dense workload (6 s = 31 slices x 292 = 9052 frames)")
    p.add_argument("--channels", type=int, default=2, help="audio channels")
    p.add_argument("--sources", type=int, default=4, help="target sources")
    p.add_argument("--iterations", type=int, default=1, help="EM iterations")
    p.add_argument("--softmask", action="store_true", help="softmask initialisation")
    p.add_argument("--residual", action="store_true", help="add a residual source")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="real precision")
    p.add_argument("--threads", type=int, default=2, help="torch and numba threads")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per backend (after one warm-up call)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--fresh-cache", action="store_true",
                   help="use an empty numba cache folder so the first numba call is a cold compile")
    p.add_argument("--output", default="out/wiener_speed.json", help="JSON file to write")
    return p.parse_args(argv)


def _record(timing: Timing) -> Dict[str, object]:
    """:meth:`Timing.record` plus this benchmark's ``wall_min_s`` / ``cpu_min_s`` (fastest wall and CPU time of
    the timed calls, None without any)."""
    return {**timing.record(), "wall_min_s": min(timing.wall_s) if timing.wall_s else None,
            "cpu_min_s": min(timing.cpu_s) if timing.cpu_s else None}


def main(argv=None) -> int:
    args = _parse(argv)
    if args.fresh_cache:
        # must happen before numba is imported
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="wiener_speed_numba_")
    import numba
    import numpy as np
    import torch

    from xumx_slicq.filtering import wiener_blocks
    from xumx_slicq.transforms import SliCQT

    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    real = np.float32 if args.dtype == "float32" else np.float64
    cplx = np.complex64 if args.dtype == "float32" else np.complex128
    slicqt = SliCQT()
    nb_bins, max_t = slicqt.nb_bins, slicqt.max_T
    opts = dict(iterations=args.iterations, softmask=args.softmask, residual=args.residual)

    def fake(shape_mix, nb_src, src_axis):
        """Random complex mixture and non-negative target magnitudes summing to about |mix|."""
        mix = (rng.standard_normal(shape_mix) + 1j * rng.standard_normal(shape_mix)).astype(cplx) * 5
        share = rng.dirichlet(np.ones(nb_src), size=shape_mix).astype(real)  # (..., nb_src)
        tgt = np.abs(mix)[..., None].astype(real) * share * rng.uniform(0.5, 1.5, share.shape).astype(real)
        return np.moveaxis(tgt, -1, src_axis).copy(), mix

    report = {
        "command": " ".join([os.path.basename(sys.executable), "-m", "benchmark.wiener_speed"] + sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__, "numba": numba.__version__, "numpy": np.__version__},
        "args": vars(args),
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR", "default (__pycache__)"),
        "load_average_at_start": list(os.getloadavg()),  # other processes compete on a shared machine
        "workloads": {},
    }

    def rel(a, b):
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))

    if args.mode in ("dense", "both"):
        nb_slices = slicqt.nb_slices(int(round(args.dense_seconds * slicqt.sample_rate)))
        frames = nb_slices * max_t
        # one block (1, C, B, 1, F) and its targets (1, J, C, B, 1, F)
        tgt, mix = fake((1, args.channels, nb_bins, 1, frames), args.sources, 1)
        tgt_t, mix_t = [torch.from_numpy(tgt)], [torch.from_numpy(mix)]
        print(f"dense: wiener_blocks on one block (1, {args.channels}, {nb_bins}, 1, {frames}) "
              f"= {nb_slices} slices x {max_t}, {args.dtype}, {args.threads} threads", flush=True)
        num = time_calls(lambda: wiener_blocks(tgt_t, mix_t, backend="numba", **opts)[0].numpy(), args.repeats)
        tor = time_calls(lambda: wiener_blocks(tgt_t, mix_t, backend="torch", **opts)[0].numpy(), args.repeats)
        err = rel(num.result, tor.result)
        report["workloads"]["dense"] = {"shape": [1, args.channels, nb_bins, 1, frames],
                                        "nb_slices": nb_slices, "torch": _record(tor), "numba": _record(num),
                                        "numba_vs_torch_rel_err": err}
        del tgt, mix, tgt_t, mix_t, num, tor

    if args.mode in ("blocks", "both"):
        length = int(round(args.seconds * slicqt.sample_rate))
        audio = torch.from_numpy(rng.standard_normal((1, args.channels, length)).astype(real) * 0.1)
        mix_t = slicqt(audio)  # blocks (1, C, B_b, S, T_b)
        # targets (1, J, C, B_b, S, T_b): |mix| split into random shares, the sources axis inserted at 1
        tgt_t = [b.abs().unsqueeze(1) * torch.from_numpy(rng.dirichlet(np.ones(args.sources), size=b.shape)
                                                         .astype(real)).movedim(-1, 1) for b in mix_t]
        nb_slices = int(mix_t[0].shape[3])
        valid = sum(b.shape[2] * b.shape[4] for b in mix_t) * nb_slices
        print(f"blocks: wiener_blocks on {len(mix_t)} blocks, {nb_slices} slices, {valid} valid coefficients per "
              f"channel, {args.dtype}, {args.threads} threads", flush=True)

        def flat(blocks):
            return np.concatenate([b.reshape(-1).numpy() for b in blocks])

        num = time_calls(lambda: wiener_blocks(tgt_t, mix_t, backend="numba", **opts), args.repeats)
        tor = time_calls(lambda: wiener_blocks(tgt_t, mix_t, backend="torch", **opts), args.repeats)
        err = rel(flat(num.result), flat(tor.result))
        report["workloads"]["blocks"] = {"nb_blocks": len(mix_t), "nb_slices": nb_slices,
                                         "valid_coefficients_per_channel": valid, "torch": _record(tor), "numba": _record(num),
                                         "numba_vs_torch_rel_err": err}

    report["load_average_at_end"] = list(os.getloadavg())
    print(f"load average (1/5/15 min) at start {report['load_average_at_start']}, "
          f"at end {report['load_average_at_end']}")
    for name, w in report["workloads"].items():
        t, n = w["torch"], w["numba"]
        print(f"{name:6s} torch: first {t['first_call_s']:.3f} s, steady wall min {t['wall_min_s']:.3f} s "
              f"(cpu {t['cpu_min_s']:.3f} s)")
        print(f"{name:6s} numba: first {n['first_call_s']:.3f} s (compile/cache load "
              f"~{n['first_call_s'] - n['wall_min_s']:.3f} s), steady wall min {n['wall_min_s']:.3f} s "
              f"(cpu {n['cpu_min_s']:.3f} s)")
        print(f"{name:6s} speed-up numba/torch (wall): {t['wall_min_s'] / n['wall_min_s']:.2f}x, "
              f"rel. difference {w['numba_vs_torch_rel_err']:.2e}")

    if args.output:
        files.write_json(args.output, report)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
