"""Atomic file writes: the project's one way to write a file that must never be seen half-written.

A file is written under a hidden temporary name in its final folder, flushed to disk, given the mode a plain
``open()`` would give it (``0o666`` less the process umask; ``tempfile.mkstemp`` alone leaves ``0o600``), then
renamed over the final name with ``os.replace``. Readers see the old file or the new one, never a part.

* :func:`atomic_path` - a context manager that yields the temporary path for any writer (soundfile, matplotlib,
  ``torch.save`` to a path, ONNX export) and commits it on success or removes it on error.
* :func:`write_bytes`, :func:`write_text`, :func:`write_json` - whole-content writes built on it.
* :func:`temp_path` + :func:`commit` - the two halves, for writers that stream several files and commit them
  together (the stem writers).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile
from typing import Any, Iterator, Union

PathLike = Union[str, os.PathLike]

__all__ = ["default_mode", "temp_path", "commit", "atomic_path", "write_bytes", "write_text", "write_json"]

#: prefix of every temporary file written by this module (hidden files)
TEMP_PREFIX = "."
#: marker between the final name and the random part of a temporary name
TEMP_MARKER = ".tmp"


def default_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file here: ``0o666`` less the process umask."""
    try:  # Linux >= 4.7 reports the umask without changing it
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, then put it back
    os.umask(mask)
    return 0o666 & ~mask


def temp_path(path: PathLike, prefix: str = TEMP_PREFIX) -> pathlib.Path:
    """Create an empty temporary file beside ``path`` (creating the folder) and return its path.

    The name is ``<prefix><final name>.<random>.tmp<final suffix>``: hidden, and it keeps the final suffix so that
    writers which pick a format from the name (soundfile, matplotlib) pick the right one.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{path.name}.", suffix=f"{TEMP_MARKER}{path.suffix}", dir=path.parent)
    os.close(fd)
    return pathlib.Path(tmp)


def commit(tmp: PathLike, path: PathLike) -> pathlib.Path:
    """Flush ``tmp`` to disk, give it :func:`default_mode`, rename it over ``path``; returns ``path``."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, default_mode())
    os.replace(tmp, path)
    return pathlib.Path(path)


def _discard(tmp: pathlib.Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: PathLike, prefix: str = TEMP_PREFIX) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path``, on any error it is removed.

    Example::

        with atomic_path(out / "vocals.wav") as tmp:
            soundfile.write(tmp, audio, 44100)
    """
    tmp = temp_path(path, prefix)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def write_bytes(path: PathLike, data: bytes) -> pathlib.Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return pathlib.Path(path)


def write_text(path: PathLike, text: str) -> pathlib.Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, obj: Any) -> pathlib.Path:
    """Write ``obj`` as indented UTF-8 JSON (``default=str`` for paths and the like) to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")
