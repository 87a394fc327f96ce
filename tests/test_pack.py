"""train/pack.py: a corpus packed as OGG Vorbis excerpts unpacks into a consistent MUSDB18-HQ layout."""

import json

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import write_tiny_corpus
from train import pack


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = write_tiny_corpus(tmp_path_factory.mktemp("corpus"), seconds=3)
    out = tmp_path_factory.mktemp("packed")
    manifest = pack.pack(str(root), str(out), {"train": (2, 1.5), "test": (1, 2.0)}, quality=0.9, candidates=3)
    return root, out, manifest


def test_pack_writes_excerpts_and_manifest(packed):
    root, out, manifest = packed
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert [(e["split"], e["track"]) for e in manifest["tracks"]] == [("train", "a"), ("train", "b"), ("test", "t")]
    for e in manifest["tracks"]:
        assert e["frames"] == int(round((1.5 if e["split"] == "train" else 2.0) * 44100))
        assert 0 <= e["start"] <= 3 * 44100 - e["frames"]
        for stem in pack.STEMS:
            assert (out / e["split"] / e["track"] / f"{stem}.ogg").is_file()
    assert manifest["total_bytes"] == sum(f.stat().st_size for f in out.rglob("*.ogg"))
    # the same seed picks the same offsets
    assert pack.pick_offset(root / "train" / "a", 1.5, 3, 0) == manifest["tracks"][0]["start"]


def test_unpack_gives_exact_lengths_and_mixture_as_sum(packed, tmp_path):
    root, out, manifest = packed
    done = pack.unpack(str(out), str(tmp_path / "data"))
    assert len(done) == 3
    for e in manifest["tracks"]:
        folder = tmp_path / "data" / e["split"] / e["track"]
        stems = {s: sf.read(folder / f"{s}.wav", dtype="float32")[0] for s in pack.STEMS}
        mix, rate = sf.read(folder / "mixture.wav", dtype="float32")
        assert rate == 44100 and mix.shape == (e["frames"], 2)
        np.testing.assert_allclose(mix, sum(stems.values()), atol=1e-6)
        # lossy, but the decoded excerpt is the source excerpt, not silence or another part of the track
        src, _ = sf.read(root / e["split"] / e["track"] / "bass.wav", start=e["start"], frames=e["frames"],
                         dtype="float32")
        corr = np.corrcoef(src[:, 0], stems["bass"][:, 0])[0, 1]
        assert corr > 0.9


def test_bad_input_is_named(tmp_path):
    root = write_tiny_corpus(tmp_path / "c", seconds=2)
    (root / "train" / "a" / "vocals.wav").unlink()
    with pytest.raises(FileNotFoundError, match="vocals"):
        pack.pack(str(root), str(tmp_path / "p"), {"train": (3, 1.0)})
    with pytest.raises(ValueError, match="3 tracks, 5 asked"):
        pack.pack(str(root), str(tmp_path / "p"), {"train": (5, 1.0)})
    assert pack.main(["unpack", "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "o")]) == 2
