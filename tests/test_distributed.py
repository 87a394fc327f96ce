"""Tests of distributed training: the per-rank sampler, the DDP glue, and real 2-process gloo runs under torchrun
(identical weights on both ranks, single-process reload and resume, exact 2-process resume)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import write_tiny_corpus
from train import distributed, trainer
from xumx_slicq.checkpoint import load_model
from xumx_slicq.data import EpochSampler, epoch_order, make_train_loader

REPO = Path(__file__).resolve().parent.parent
#: keys of a checkpoint written by a single process (the format the running trainings resume from)
LEGACY_CHECKPOINT_KEYS = {"arch", "epoch", "model", "optimizer", "scheduler", "early_stopping", "history",
                          "examples_seen", "elapsed_seconds", "rng", "args"}
LEGACY_RECORD_KEYS = {"epoch", "train", "valid", "lr", "epoch_seconds", "train_seconds", "steps", "examples_seen",
                      "best"}


class _Sized:
    """Stand-in dataset: only ``len`` matters to the samplers."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


# ------------------------------------------------------------------------------------------------ sampler


@pytest.mark.parametrize("start_epoch", [0, 3])
def test_one_replica_is_the_epoch_sampler(start_epoch):
    ds = _Sized(23)
    single = EpochSampler(ds, seed=7, start_epoch=start_epoch)
    dist1 = EpochSampler(ds, seed=7, start_epoch=start_epoch, num_replicas=1, rank=0)
    for epoch in range(start_epoch, start_epoch + 3):  # successive passes advance the epoch in both
        whole = (epoch * 23 + epoch_order(23, 7, epoch)).tolist()  # the whole permutation, epoch-encoded
        assert list(dist1) == list(single) == whole
    assert len(dist1) == len(single) == 23


def test_ranks_get_disjoint_equal_shares_of_each_epoch():
    n, replicas = 23, 3
    ds = _Sized(n)
    samplers = [EpochSampler(ds, seed=5, num_replicas=replicas, rank=r) for r in range(replicas)]
    previous = None
    for epoch in range(3):
        shares = [list(s) for s in samplers]
        assert all(len(sh) == n // replicas == len(s) for sh, s in zip(shares, samplers))
        union = set().union(*shares)
        assert len(union) == replicas * (n // replicas)  # disjoint
        assert all(epoch * n <= i < (epoch + 1) * n for i in union)  # indices encode the epoch
        # together the ranks walk the single-process order, cut to a multiple of the replica count
        order = epoch_order(n, 5, epoch)[: replicas * (n // replicas)] + epoch * n
        assert sorted(union) == sorted(order.tolist())
        interleaved = [shares[k % replicas][k // replicas] for k in range(len(order))]
        assert interleaved == order.tolist()
        local = sorted(i - epoch * n for i in union)
        assert local != previous  # reshuffled: another subset/order of chunks every epoch
        previous = local
    again = EpochSampler(ds, seed=5, num_replicas=replicas, rank=1)
    again.set_epoch(2)
    fresh = EpochSampler(ds, seed=5, num_replicas=replicas, rank=1)
    for _ in range(2):
        list(fresh)
    assert list(again) == list(fresh)  # a pure function of (seed, epoch, rank)


def test_sampler_rejects_bad_ranks_and_tiny_epochs():
    with pytest.raises(ValueError, match="rank"):
        EpochSampler(_Sized(10), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="split"):
        EpochSampler(_Sized(1), num_replicas=2, rank=0)


def test_loader_picks_the_sampler_by_world_size():
    ds = _Sized(10)
    single = make_train_loader(ds, batch_size=2, num_workers=0).sampler
    assert isinstance(single, EpochSampler) and (single.num_replicas, single.rank) == (1, 0)
    loader = make_train_loader(ds, batch_size=2, num_workers=0, num_replicas=2, rank=1)
    assert isinstance(loader.sampler, EpochSampler) and (loader.sampler.num_replicas, loader.sampler.rank) == (2, 1)
    assert len(loader) == 10 // 2 // 2


# ------------------------------------------------------------------------------------------------ glue


def test_single_process_helpers_are_no_ops(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx, device = distributed.init_from_env("cpu")
    assert ctx is distributed.SINGLE and not ctx.enabled and ctx.is_main and device.type == "cpu"
    obj = {"a": 1}
    assert distributed.broadcast_object(obj, ctx) is obj
    assert distributed.all_gather_object(obj, ctx) == [obj]
    values = torch.tensor([1.0, 3.0])
    assert torch.equal(distributed.all_reduce_mean(values, ctx), torch.tensor([1.0, 3.0]))
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(model, ctx, device) is model
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1: still a plain single process
    assert distributed.init_from_env("cpu")[0] is distributed.SINGLE


def test_lr_factor_and_rank_seeds():
    assert distributed.lr_factor("none", 4) == 1.0
    assert distributed.lr_factor("linear", 4) == 4.0
    assert distributed.lr_factor("sqrt", 4) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        distributed.lr_factor("cubic", 4)
    seeds = [distributed.rank_seed(42, r) for r in range(4)]
    assert seeds[0] == 42 and len(set(seeds)) == 4


def test_help_states_batch_semantics():
    text = " ".join(trainer.build_parser().format_help().split())
    assert "PER PROCESS" in text and "global batch is N x this" in text
    for flag in ("--lr-scaling", "--dist-backend", "--dist-timeout"):
        assert flag in text


# ------------------------------------------------------------------------------------------------ real runs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Tiny MUSDB18-HQ-layout corpus: 3 training tracks of 3 s (one held out for validation), 1 test track."""
    return write_tiny_corpus(tmp_path_factory.mktemp("ddp_corpus"), seed=1, base_hz=100.0)


def _args(corpus, out, *extra):
    return ["--root", str(corpus), "--output", str(out), "--debug", "--no-progress", "--valid-seconds", "2",
            "--dist-timeout", "5", *extra]


def torchrun(corpus, out, state_dir, *extra, nproc=2):
    """``torchrun --standalone --nproc_per_node 2 -m train ...`` on the CPU (gloo); returns its stdout."""
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO),
               **{distributed.STATE_DIR_ENV: str(state_dir)})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "train", *_args(corpus, out, *extra)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def rank_params(state_dir):
    """Parameters dumped by each rank, in rank order."""
    dumps = [torch.load(state_dir / f"rank{r}.pt") for r in range(2)]
    assert [d["rank"] for d in dumps] == [0, 1] and all(d["world_size"] == 2 for d in dumps)
    return [d["params"] for d in dumps]


def assert_same_weights(a, b, exact=True):
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-7, msg=key)


@pytest.fixture(scope="module")
def first_epoch(tmp_path_factory, corpus):
    """A 2-process run of one epoch: (output folder, rank-dump folder, stdout)."""
    base = tmp_path_factory.mktemp("ddp_epoch1")
    out, ranks = base / "out", base / "ranks"
    stdout = torchrun(corpus, out, ranks, "--epochs", "1")
    return out, ranks, stdout


def test_two_process_run_completes_with_identical_ranks(first_epoch):
    out, ranks, stdout = first_epoch
    assert stdout.count("epoch 1:") == 1  # only rank 0 prints
    assert "2 processes (gloo)" in stdout
    p0, p1 = rank_params(ranks)
    assert_same_weights(p0, p1)  # DDP kept the replicas in lockstep
    chk = torch.load(out / "xumx_slicq.chkpnt", weights_only=False)
    assert chk["epoch"] == 1 and chk["world_size"] == 2 and len(chk["rng_per_rank"]) == 2
    assert LEGACY_CHECKPOINT_KEYS <= set(chk)
    assert chk["examples_seen"] == 4  # 2 training tracks x 2 chunks, split over the 2 ranks: one step of 2 each
    assert chk["history"][0]["steps"] == 1 and chk["history"][0]["world_size"] == 2
    assert_same_weights({k: chk["model"][k] for k in p0}, p0)
    # rank 0 wrote every output, and nothing stray (temporary files) is left
    names = {p.name for p in out.iterdir()}
    assert names == {"xumx_slicq.chkpnt", "xumx_slicq.pth", "xumx_slicq.json", "history.json", "logdir"}
    assert len(list((out / "logdir").iterdir())) == 1  # one tensorboard event file


def test_distributed_checkpoint_reloads_in_one_process(first_epoch, corpus, tmp_path):
    out, ranks, _ = first_epoch
    p0, _ = rank_params(ranks)
    model, meta = load_model(out, arch="xumx-slicq")
    assert meta["distributed"]["world_size"] == 2 and meta["distributed"]["global_batch"] == 4
    assert_same_weights({k: v for k, v in model.named_parameters()}, p0)
    # and a single process resumes training from it
    single = tmp_path / "single"
    shutil.copytree(out, single)
    assert trainer.main(_args(corpus, single, "--epochs", "2", "--resume")) == 0
    chk = torch.load(single / "xumx_slicq.chkpnt", weights_only=False)
    assert chk["epoch"] == 2 and chk["examples_seen"] == 8
    # a single process writes the original format (the one that running trainings resume from)
    assert set(chk) == LEGACY_CHECKPOINT_KEYS
    assert set(chk["history"][1]) == LEGACY_RECORD_KEYS
    assert set(chk["rng"]) == {"torch", "numpy", "python", "cuda"}
    assert [h["epoch"] for h in chk["history"]] == [1, 2]
    assert not all(torch.equal(chk["model"][k], p0[k]) for k in p0)  # it trained


def test_two_process_resume_continues_exactly(first_epoch, corpus, tmp_path):
    out, _, _ = first_epoch
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    shutil.copytree(out, resumed)
    stdout = torchrun(corpus, resumed, tmp_path / "ranks_resumed", "--epochs", "2", "--resume")
    assert "resumed from" in stdout and stdout.count("epoch 2:") == 1 and "epoch 1:" not in stdout
    p0, p1 = rank_params(tmp_path / "ranks_resumed")
    assert_same_weights(p0, p1)
    torchrun(corpus, straight, tmp_path / "ranks_straight", "--epochs", "2")
    a = torch.load(straight / "xumx_slicq.chkpnt", weights_only=False)
    b = torch.load(resumed / "xumx_slicq.chkpnt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2 and a["examples_seen"] == b["examples_seen"] == 8
    assert_same_weights(a["model"], b["model"], exact=False)
    assert [h["train"]["total"] for h in a["history"]] == pytest.approx(
        [h["train"]["total"] for h in b["history"]], rel=1e-5)

