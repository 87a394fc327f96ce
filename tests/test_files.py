"""xumx_slicq.files: atomic writes land whole, with the umask's mode, and leave nothing behind on error."""

import json
import os
import stat

import pytest

from xumx_slicq import files


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_default_mode_follows_umask(umask_027):
    assert files.default_mode() == 0o640


def test_write_json_text_bytes_have_umask_mode(tmp_path, umask_027):
    files.write_json(tmp_path / "a" / "x.json", {"k": [1, 2]})
    files.write_text(tmp_path / "y.txt", "héllo")
    files.write_bytes(tmp_path / "z.bin", b"\x00\x01")
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == {"k": [1, 2]}
    assert (tmp_path / "y.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "z.bin").read_bytes() == b"\x00\x01"
    for p in (tmp_path / "a" / "x.json", tmp_path / "y.txt", tmp_path / "z.bin"):
        assert mode(p) == 0o640, oct(mode(p))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "y.txt", "z.bin"]  # no temporaries left


def test_atomic_path_keeps_suffix_and_replaces(tmp_path):
    final = tmp_path / "out.wav"
    final.write_text("old")
    with files.atomic_path(final) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".wav" and tmp.name.startswith(".out.wav.")
        assert final.read_text() == "old"  # nothing visible until the commit
        tmp.write_text("new")
    assert final.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


def test_atomic_path_error_keeps_old_file_and_removes_temp(tmp_path):
    final = tmp_path / "out.json"
    final.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with files.atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_temp_path_and_commit(tmp_path, umask_027):
    final = tmp_path / "stem.flac"
    tmp = files.temp_path(final, prefix=".xumx-")
    assert tmp.exists() and tmp.name.startswith(".xumx-stem.flac.") and tmp.suffix == ".flac"
    tmp.write_bytes(b"data")
    assert files.commit(tmp, final) == final
    assert final.read_bytes() == b"data" and not tmp.exists() and mode(final) == 0o640
