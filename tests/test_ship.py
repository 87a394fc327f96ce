"""Tests of the shipping decision (benchmark/ship.py): the split syntax, the rule, and a run end to end."""

import json
import math

import pytest

from benchmark import ship
from tests.helpers import tiny_model, write_tiny_corpus
from xumx_slicq.checkpoint import save_model


def test_parse_split():
    assert ship.parse_split("v1=data/gpu/test:ge") == ("v1", ship.pathlib.Path("data/gpu/test"), "ge")
    assert ship.parse_split("x=C:/songs:gt")[1] == ship.pathlib.Path("C:/songs")  # the last colon is the rule's
    for bad in ("v1", "v1=data", "v1=data:better", "=data:ge", "v1=:gt"):
        with pytest.raises(ValueError, match="NAME=ROOT:RULE"):
            ship.parse_split(bad)


@pytest.mark.parametrize("new,ship_it", [
    ({"v1": 5.0, "v2": 4.1, "real": 3.7}, True),   # equal on the ge split, better on the gt ones
    ({"v1": 4.99, "v2": 4.5, "real": 4.0}, False),  # worse on the ge split
    ({"v1": 5.5, "v2": 4.0, "real": 4.0}, False),   # only equal on a gt split
    ({"v1": 5.5, "v2": 4.5, "real": 3.0}, False),   # worse on the real excerpt
])
def test_decide_applies_the_rule(new, ship_it):
    scores = {"candidate": new, "shipped": {"v1": 5.0, "v2": 4.0, "real": 3.5}}
    rules = {"v1": "ge", "v2": "gt", "real": "gt"}
    decision, reasons = ship.decide(scores, rules, "candidate", "shipped")
    assert decision is ship_it
    assert len(reasons) == 3 and all(r.startswith(s) for r, s in zip(reasons, rules))
    assert sum("no," in r for r in reasons) == (0 if ship_it else 1)


def _model(folder, seed):
    save_model(tiny_model(seed), folder, "xumx-slicq")  # exports to ONNX in seconds
    return folder


def test_ship_end_to_end(tmp_path, capsys, monkeypatch):
    """Two random models on a tiny split and the real excerpt: every score finite, the decision consistent with the scores, files
    written; a missing split folder is an error naming it."""
    corpus = write_tiny_corpus(tmp_path / "corpus", seed=1, seconds=2)
    cand, shipped = _model(tmp_path / "cand", 0), _model(tmp_path / "old", 1)
    out = tmp_path / "out"
    code = ship.main(["--candidate", str(cand), "--shipped", str(shipped), "--split", f"tiny={corpus / 'test'}:gt",
                      "--backend", "torch", "--output", str(out)])
    assert code == 0
    result = json.loads((out / "ship.json").read_text())
    a, b = (result["models"][k]["splits"]["tiny"]["mean"] for k in ("candidate", "shipped"))
    assert all(math.isfinite(v) for v in (a, b))
    ra, rb = (result["models"][k]["splits"]["real"]["mean"] for k in ("candidate", "shipped"))
    assert math.isfinite(ra) and math.isfinite(rb)
    assert result["ship"] is (a > b and ra > rb) and len(result["reasons"]) == 2  # the split, the real excerpt
    assert result["reasons"][1].startswith("real:")
    assert result["models"]["candidate"]["splits"]["tiny"]["per_song"][0]["song"] == "t"
    assert "tiny (1 songs)" in (out / "ship.md").read_text()
    # --strict: the same decision as an exit code (the scores reused: no second separation)
    monkeypatch.setattr(ship, "run", lambda *a, **k: {key: result[key] for key in ("metric", "pipeline", "splits",
                                                                                  "models")})
    strict = ship.main(["--candidate", str(cand), "--shipped", str(shipped), "--split", f"tiny={corpus / 'test'}:gt",
                        "--no-real", "--strict", "--output", str(out)])
    assert strict == (0 if result["ship"] else 1)
    capsys.readouterr()
    assert ship.main(["--candidate", str(cand), "--shipped", str(shipped), "--split",
                      f"gone={tmp_path / 'nowhere'}:ge", "--no-real", "--output", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err
