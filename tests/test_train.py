"""Tests of the training command: --debug runs of every architecture, resume, reloading the saved model."""

import json

import numpy as np
import pytest
import torch

from tests.helpers import write_tiny_corpus
from train import trainer
from xumx_slicq.checkpoint import load_model
from xumx_slicq.separator import load_separator

SR = 44100


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny MUSDB18-HQ-layout corpus of noise-like stems: 3 training tracks (one held out), 1 test track."""
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"), seed=0, base_hz=110.0)


def run(corpus, out, arch, *extra):
    argv = ["--root", str(corpus), "--output", str(out), "--arch", arch, "--debug", "--no-progress",
            "--valid-seconds", "2", *extra]
    assert trainer.main(argv) == 0


@pytest.mark.parametrize("arch", ["xumx-slicq", "umx", "xumx"])
def test_debug_training_end_to_end(tmp_path, corpus, arch):
    run(corpus, tmp_path, arch)
    stem = {"xumx-slicq": "xumx_slicq", "umx": "umx", "xumx": "xumx"}[arch]
    for name in (f"{stem}.pth", f"{stem}.json", f"{stem}.chkpnt", "history.json"):
        assert (tmp_path / name).is_file(), name
    assert any((tmp_path / "logdir").iterdir())
    meta = json.loads((tmp_path / f"{stem}.json").read_text())
    assert meta["arch"] == arch and meta["best_epoch"] in (1, 2)
    assert {"training_args", "history", "data", "git_commit", "config"} <= set(meta)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["train"]["total"]) and np.isfinite(h["valid"]["total"]) for h in history)
    # the best model reloads through the public machinery and separates
    separator = load_separator(tmp_path, arch=arch, wiener="off", chunk_seconds=2.0)
    y = separator(torch.randn(1, 2, SR) * 0.1)
    assert y.shape == (1, 4, 2, SR) and torch.isfinite(y).all()


def test_resume_continues_exactly(tmp_path, corpus):
    """Two epochs in one go == one epoch, stop, resume for the second (weights, optimizer state, history)."""
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run(corpus, straight, "xumx-slicq", "--epochs", "2")
    run(corpus, interrupted, "xumx-slicq", "--epochs", "1")
    first = torch.load(interrupted / "xumx_slicq.chkpnt", weights_only=False)
    assert first["epoch"] == 1
    run(corpus, interrupted, "xumx-slicq", "--epochs", "2", "--resume")
    a = torch.load(straight / "xumx_slicq.chkpnt", weights_only=False)
    b = torch.load(interrupted / "xumx_slicq.chkpnt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2 and a["examples_seen"] == b["examples_seen"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-7, msg=key)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k]["step"] == sb[k]["step"]
        torch.testing.assert_close(sa[k]["exp_avg"], sb[k]["exp_avg"], rtol=1e-5, atol=1e-8)
    assert [h["train"]["total"] for h in a["history"]] == pytest.approx([h["train"]["total"] for h in b["history"]],
                                                                        rel=1e-5)


def test_saved_weights_equal_checkpoint_weights(tmp_path, corpus):
    run(corpus, tmp_path, "umx", "--epochs", "1")
    model, meta = load_model(tmp_path, arch="umx")
    chk = torch.load(tmp_path / "umx.chkpnt", weights_only=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, chk["model"][key]), key


def test_missing_root_is_a_clear_error(tmp_path, capsys):
    code = trainer.main(["--root", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out"), "--debug"])
    assert code != 0
    assert "nowhere" in capsys.readouterr().err


def test_help_lists_the_recipe():
    help_text = trainer.build_parser().format_help()
    for flag in ("--arch", "--fscale", "--fbins", "--fmin", "--sllen", "--mcoef", "--device", "--workers",
                 "--debug", "--resume", "--max-examples", "--max-hours"):
        assert flag in help_text


def test_hidden_channels_option_builds_saves_and_guards_resume(tmp_path, corpus, capsys):
    """``--hidden-channels 8 16``: a smaller network is trained, saved with its size, reloaded at that size; resuming
    its checkpoint with another size is a clear error naming the checkpoint."""
    run(corpus, tmp_path, "xumx-slicq", "--epochs", "1", "--hidden-channels", "8", "16")
    model, meta = load_model(tmp_path, arch="xumx-slicq")
    assert model.hidden_channels == (8, 16) and meta["config"]["hidden_channels"] == [8, 16]
    assert model.nets[0].layers[0].out_channels == 4 * 8  # four targets x 8 channels
    default_size = sum(p.numel() for p in type(model)().parameters())
    assert sum(p.numel() for p in model.parameters()) < default_size / 5
    with pytest.raises(SystemExit) as err:
        trainer.main(["--root", str(corpus), "--output", str(tmp_path), "--debug", "--no-progress",
                      "--valid-seconds", "2", "--epochs", "2", "--resume"])
    assert "xumx_slicq.chkpnt" in str(err.value) and "--hidden-channels" in str(err.value)


def test_init_from_prunes_a_saved_model_and_records_it(tmp_path, corpus):
    """``--init-from DIR``: the run starts from DIR's weights pruned to ``--hidden-channels`` (exactly
    ``prune_hidden_channels``), records where it started, keeps that record across ``--resume``; a model of
    another configuration or a baseline architecture is a clear error."""
    from xumx_slicq.checkpoint import save_model
    from xumx_slicq.model import XUMXSliCQ
    from xumx_slicq.pruning import prune_hidden_channels

    from tests.helpers import randomise_batchnorm

    torch.manual_seed(3)
    source = randomise_batchnorm(XUMXSliCQ(hidden_channels=(8, 16)))
    save_model(source, tmp_path / "wide", "xumx-slicq", examples_seen=1234)
    narrow = XUMXSliCQ(hidden_channels=(4, 8))
    info = trainer.init_from_model(narrow, str(tmp_path / "wide"), "xumx-slicq")
    assert info == {"model": str(tmp_path / "wide"), "hidden_channels": [8, 16], "pruned": True,
                    "examples_seen": 1234}
    expected = prune_hidden_channels(source, (4, 8)).state_dict()
    for key, value in narrow.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)

    out = tmp_path / "run"
    run(corpus, out, "xumx-slicq", "--epochs", "1", "--hidden-channels", "4", "8", "--init-from",
        str(tmp_path / "wide"))
    meta = json.loads((out / "xumx_slicq.json").read_text())
    assert meta["init_from"]["hidden_channels"] == [8, 16] and meta["init_from"]["examples_seen"] == 1234
    assert meta["config"]["hidden_channels"] == [4, 8]
    run(corpus, out, "xumx-slicq", "--epochs", "2", "--hidden-channels", "4", "8", "--init-from",
        str(tmp_path / "wide"), "--resume")
    assert json.loads((out / "xumx_slicq.json").read_text())["init_from"]["pruned"] is True
    assert torch.load(out / "xumx_slicq.chkpnt", weights_only=False)["epoch"] == 2

    with pytest.raises(SystemExit, match=r"slicq_config.fbins 262 \(here 100\)"):
        trainer.init_from_model(XUMXSliCQ(slicq_config={"fbins": 100}), str(tmp_path / "wide"), "xumx-slicq")
    with pytest.raises(SystemExit, match="do not fit"):
        trainer.init_from_model(XUMXSliCQ(hidden_channels=(8, 32)), str(tmp_path / "wide"), "xumx-slicq")
    with pytest.raises(SystemExit, match="expected umx.json"):
        trainer.init_from_model(narrow, str(tmp_path / "wide"), "umx")
    with pytest.raises(SystemExit, match="nowhere"):
        trainer.init_from_model(narrow, str(tmp_path / "nowhere"), "xumx-slicq")


def test_init_from_a_baseline_loads_its_weights(tmp_path):
    """A baseline starts from a saved baseline of the same configuration (weights equal); another configuration
    is a clear error naming the entry that differs."""
    from xumx_slicq.baselines import build_baseline
    from xumx_slicq.checkpoint import save_model

    torch.manual_seed(4)
    source = build_baseline("umx", {"hidden_size": 16})
    save_model(source, tmp_path, "umx", examples_seen=99)
    model = build_baseline("umx", {"hidden_size": 16})
    info = trainer.init_from_model(model, str(tmp_path), "umx")
    assert info == {"model": str(tmp_path), "pruned": False, "examples_seen": 99}
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, source.state_dict()[key], rtol=0, atol=0, msg=key)
    with pytest.raises(SystemExit, match=r"hidden_size 16 \(here 32\); the configurations must be equal"):
        trainer.init_from_model(build_baseline("umx", {"hidden_size": 32}), str(tmp_path), "umx")
