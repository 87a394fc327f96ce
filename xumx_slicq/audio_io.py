"""Reading mixtures robustly and writing stems atomically.

Reading (:class:`MixtureReader`): any file soundfile opens (WAV 8/16/24/32-bit int and float, FLAC, OGG, MP3 with
libsndfile >= 1.1, ...; :func:`probe_any` decodes m4a/mp4 with ffmpeg first),
any sample rate, any number of channels, turned into what the separator wants: stereo float32 at 44.1 kHz,
served segment by segment as ``(1, 2, n)`` tensors. Mono is duplicated to stereo; more than two channels are
downmixed (even channels to the left, odd to the right, averaged) with a warning; NaN / Inf samples become 0
with a warning. 44.1 kHz files are streamed from disk (memory independent of the song length); files at other
rates are resampled in memory first.

Writing (:class:`StemWriter`): every stem goes to a temporary file next to its final name and is renamed into
place only once all stems are complete, so a crash or ``kill -9`` never leaves a partial stem under a final
name. Stems are always stereo, at the mixture's own sample rate and exactly the mixture's length (see
docs/submission.md for that choice).
"""

from __future__ import annotations

import os
import pathlib
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from xumx_slicq import files
from xumx_slicq.audio import resample

SAMPLE_RATE = 44100
#: extensions accepted as songs when the input folder holds audio files directly
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aif", ".aiff", ".mp3", ".w64", ".rf64")
#: extensions soundfile cannot read, decoded with ffmpeg when it is installed
FFMPEG_EXTENSIONS = (".m4a", ".mp4", ".aac", ".opus", ".webm", ".wma")
#: prefix of our temporary stem files (stale ones are removed before a song is redone)
TEMP_PREFIX = ".xumx-"


class InputError(ValueError):
    """A mixture that cannot be separated (missing, empty, not audio, ...): the message names file and problem."""


class OutputError(OSError):
    """Stems that cannot be written (read-only folder, disk full, ...): the message names the folder and problem."""


@dataclass
class AudioInfo:
    """What :func:`probe` learned about a mixture file."""

    path: pathlib.Path
    frames: int
    rate: int
    channels: int
    format: str
    subtype: str
    warnings: List[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.frames / self.rate


def _wav_declared_frames(path: pathlib.Path, channels: int) -> Optional[int]:
    """Frames the RIFF header's ``data`` chunk declares (None if not a plain RIFF/WAVE or not parseable)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size + (size & 1))
                    block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
                    continue
                if cid == b"data":
                    return size // block_align if block_align else None
                f.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None


def probe(path: os.PathLike) -> AudioInfo:
    """Check that ``path`` is a readable, non-empty audio file; raise :class:`InputError` naming the problem."""
    import soundfile as sf

    path = pathlib.Path(path)
    if not path.exists():
        raise InputError(f"{path}: file missing")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    if size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # noqa: BLE001 - soundfile raises several types; report them all the same way
        detail = str(exc).split(": ", 1)[-1] if str(path) in str(exc) else str(exc)
        raise InputError(f"{path}: not a readable audio file ({detail})") from exc
    result = AudioInfo(path, int(info.frames), int(info.samplerate), int(info.channels), info.format, info.subtype)
    if result.channels < 1 or result.rate < 1:
        raise InputError(f"{path}: invalid header ({result.channels} channels, {result.rate} Hz)")
    if result.frames <= 0:
        raise InputError(f"{path}: holds no samples (truncated or corrupt header)")
    if info.format == "WAV":
        declared = _wav_declared_frames(path, result.channels)
        if declared is not None and declared > result.frames:
            result.warnings.append(f"{path}: truncated WAV: the header declares {declared} frames, the file holds "
                                   f"{result.frames}; separating the {result.frames} present")
    if result.channels > 2:
        result.warnings.append(f"{path}: {result.channels} channels: downmixed to stereo (even channels left, "
                               f"odd channels right)")
    if result.rate != SAMPLE_RATE:
        result.warnings.append(f"{path}: {result.rate} Hz: resampled to {SAMPLE_RATE} Hz for the model, stems "
                               f"written back at {result.rate} Hz")
    return result


def decode_with_ffmpeg(path: os.PathLike, folder: os.PathLike) -> pathlib.Path:
    """Decode ``path`` (anything ffmpeg reads: m4a, mp4, ...) to a float32 WAV in ``folder``, at the file's own
    rate and channels; returns the WAV's path. :class:`InputError` naming the file when ffmpeg is missing or
    fails."""
    import shutil
    import subprocess

    path = pathlib.Path(path)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise InputError(f"{path}: soundfile cannot read {path.suffix or 'this'} files and ffmpeg is not installed "
                         f"(install ffmpeg, e.g. `apt install ffmpeg`, to separate m4a/mp4 files)")
    out = pathlib.Path(folder) / f"{path.name}.wav"
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-y", "-i", str(path), "-vn", "-c:a", "pcm_f32le", "-f", "wav",
           str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        detail = (proc.stderr.strip().splitlines() or ["no audio stream"])[-1]
        raise InputError(f"{path}: not a readable audio file (ffmpeg: {detail})")
    return out


def probe_any(path: os.PathLike, folder: os.PathLike) -> AudioInfo:
    """:func:`probe`, falling back to :func:`decode_with_ffmpeg` into ``folder`` for what soundfile cannot read
    (m4a, mp4, ...). Messages name the original file."""
    path = pathlib.Path(path)
    try:
        return probe(path)
    except InputError:
        if path.suffix.lower() not in FFMPEG_EXTENSIONS or not path.is_file() or path.stat().st_size == 0:
            raise
    decoded = decode_with_ffmpeg(path, folder)
    info = probe(decoded)
    info.warnings = [w.replace(str(decoded), str(path)) for w in info.warnings]
    return info


def to_stereo(block: np.ndarray) -> np.ndarray:
    """``(n, nb_channels)`` -> ``(n, 2)``: mono duplicated, > 2 channels averaged (even -> left, odd -> right)."""
    if block.shape[1] == 2:
        return block
    if block.shape[1] == 1:
        return np.repeat(block, 2, axis=1)
    return np.stack([block[:, 0::2].mean(axis=1), block[:, 1::2].mean(axis=1)], axis=1)


class MixtureReader:
    """Serve a mixture as stereo float32 at 44.1 kHz: ``read(start, stop)`` -> ``(1, 2, stop - start)``.

    Samples outside ``[0, length)`` read as zeros (what :func:`chunked_apply` expects). ``length`` counts samples
    at 44.1 kHz. Non-finite samples are replaced by zeros and counted in ``nonfinite``. One reader per thread.
    """

    def __init__(self, info: AudioInfo):
        import soundfile as sf

        self.info = info
        self.nonfinite = 0
        self._file = None
        self._memory: Optional[np.ndarray] = None  # (length, 2) at 44.1 kHz when not streaming
        try:
            if info.rate == SAMPLE_RATE:
                self._file = sf.SoundFile(str(info.path))
                self.length = info.frames
            else:
                data, _ = sf.read(str(info.path), dtype="float32", always_2d=True)  # (frames, nb_channels)
                data = self._clean(to_stereo(data[: info.frames]))
                self._memory = resample(data, info.rate, SAMPLE_RATE)
                self.length = self._memory.shape[0]
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001
            self.close()
            raise InputError(f"{info.path}: cannot read audio: {exc}") from exc

    def _clean(self, block: np.ndarray) -> np.ndarray:
        bad = ~np.isfinite(block)
        if bad.any():
            self.nonfinite += int(bad.sum())
            block = np.where(bad, 0.0, block).astype(np.float32)
        return block

    def read(self, start: int, stop: int) -> Tensor:
        """Samples ``[start, stop)`` as ``(1, 2, stop - start)`` float32, zero outside the song."""
        out = np.zeros((stop - start, 2), dtype=np.float32)
        lo, hi = max(start, 0), min(stop, self.length)
        if hi > lo:
            if self._memory is not None:
                out[lo - start : hi - start] = self._memory[lo:hi]
            else:
                self._file.seek(lo)
                try:
                    data = self._file.read(hi - lo, dtype="float32", always_2d=True)  # (n, nb_channels)
                except Exception as exc:  # noqa: BLE001
                    raise InputError(f"{self.info.path}: read error at sample {lo}: {exc}") from exc
                out[lo - start : lo - start + len(data)] = self._clean(to_stereo(data))
        return torch.from_numpy(out.T.copy())[None]  # (n, 2) -> (1, 2, n)

    def close(self) -> None:
        """Release the file handle."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "MixtureReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    """Why a write failed: the OS error's text; for libsndfile's bare "System error." (its code 2) the errno its
    failed call left (e.g. "File too large", "No space left on device"); else the exception's text."""
    if getattr(exc, "strerror", None):
        return exc.strerror
    if getattr(exc, "code", None) == 2:  # SFE_SYSTEM: a failed read/write/seek, errno says which
        import soundfile as sf

        code = getattr(getattr(sf, "_ffi", None), "errno", 0)
        if code:
            return os.strerror(code)
    return str(exc)


def is_temp(path: os.PathLike) -> bool:
    """Whether ``path`` names one of our temporary stem files (``.xumx-<stem>.wav.<random>.tmp.wav``)."""
    name = pathlib.Path(path).name
    return name.startswith(TEMP_PREFIX) and files.TEMP_MARKER in name


def remove_stale_temps(folder: os.PathLike) -> int:
    """Delete temporary stem files left in ``folder`` by a killed run; returns how many."""
    folder = pathlib.Path(folder)
    removed = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if is_temp(p):
                p.unlink(missing_ok=True)
                removed += 1
    return removed


def stems_complete(paths: Mapping[str, os.PathLike], frames: int, rate: int) -> bool:
    """Whether every stem exists, reads as stereo audio at ``rate`` with exactly ``frames`` frames."""
    import soundfile as sf

    for p in paths.values():
        try:
            info = sf.info(str(p))
        except Exception:  # noqa: BLE001
            return False
        if info.frames != frames or info.channels != 2 or info.samplerate != rate:
            return False
    return True


class StemWriter:
    """Write stems to temporary files; :meth:`commit` renames them into place, :meth:`abort` removes them.

    Args:
        finals: ``{stem: final path}``; a stem is a target, or ``no_<target>``: the sum of every other target
            (two-stem output, e.g. ``vocals`` + ``no_vocals``).
        frames: the mixture's length in frames at ``rate`` (the stems get exactly this length).
        rate: the mixture's sample rate (stems are written at it).
        subtype: soundfile subtype of the stems (``FLOAT``, ``PCM_16``, ``PCM_24``; FLAC takes PCM only).
        output_format: soundfile container of the stems, ``WAV`` or ``FLAC``.

    Pieces arrive at 44.1 kHz as ``(nb_targets, 2, n)`` in ``order``; at other rates they are kept in 44.1 kHz
    float temporaries and resampled at commit time.
    """

    def __init__(self, finals: Mapping[str, os.PathLike], frames: int, rate: int, subtype: str = "FLOAT",
                 output_format: str = "WAV"):
        import soundfile as sf

        self.finals = {t: pathlib.Path(p) for t, p in finals.items()}
        self.frames, self.rate, self.subtype, self.format = int(frames), int(rate), subtype, output_format.upper()
        if not sf.check_format(self.format, subtype):
            raise ValueError(f"{self.format} files cannot hold {subtype} samples")
        self.written = 0  # samples at 44.1 kHz
        self._temps: Dict[str, pathlib.Path] = {}
        self._writers: Dict[str, "sf.SoundFile"] = {}
        self._direct = rate == SAMPLE_RATE
        try:
            for t, final in self.finals.items():
                tmp = self._temps[t] = files.temp_path(final, TEMP_PREFIX)
                self._writers[t] = sf.SoundFile(str(tmp), "w", samplerate=SAMPLE_RATE if not self._direct else rate,
                                                channels=2, subtype=subtype if self._direct else "FLOAT",
                                                format=self.format if self._direct else "WAV")
        except Exception as exc:  # noqa: BLE001
            self.abort()
            folder = next(iter(self.finals.values())).parent
            raise OutputError(f"{folder}: cannot write stems: {_reason(exc)}") from exc

    def _write(self, target: str, data: np.ndarray) -> None:
        """Write ``(n, 2)`` samples, clipping for integer subtypes (libsndfile would wrap around)."""
        if self.subtype.startswith("PCM"):
            data = np.clip(data, -1.0, 1.0)
        self._writers[target].write(data)

    def write(self, piece: np.ndarray, order: List[str]) -> None:
        """Append ``piece`` ``(nb_targets, 2, n)`` (44.1 kHz, targets in ``order``) to every stem."""
        for t in self._writers:
            if t in order:
                stem = piece[order.index(t)]  # (2, n)
            elif t.startswith("no_") and t[3:] in order:
                stem = sum(piece[j] for j, o in enumerate(order) if o != t[3:])  # the rest, summed
            else:
                raise ValueError(f"stem {t!r}: not a target of the model ({', '.join(order)}) nor no_<target>")
            try:
                self._write(t, np.ascontiguousarray(stem.T))  # (2, n) -> (n, 2)
            except Exception as exc:  # noqa: BLE001 - disk full, I/O error, ...: name the folder
                folder = self.finals[t].parent
                raise OutputError(f"{folder}: cannot write stems: {_reason(exc)}") from exc
        self.written += piece.shape[-1]

    def commit(self) -> Dict[str, pathlib.Path]:
        """Finish every stem at exactly ``frames`` frames and rename them all into place."""
        import soundfile as sf

        try:
            for w in self._writers.values():
                w.close()
            if not self._direct:
                for t, tmp in list(self._temps.items()):
                    data, _ = sf.read(str(tmp), dtype="float32", always_2d=True)  # (n44, 2)
                    data = resample(data, SAMPLE_RATE, self.rate)[: self.frames]
                    data = np.pad(data, ((0, self.frames - data.shape[0]), (0, 0)))
                    out = files.temp_path(self.finals[t], TEMP_PREFIX)
                    tmp.unlink()
                    self._temps[t] = out
                    if self.subtype.startswith("PCM"):
                        data = np.clip(data, -1.0, 1.0)
                    sf.write(str(out), data, self.rate, subtype=self.subtype, format=self.format)
            for t, tmp in self._temps.items():
                frames = sf.info(str(tmp)).frames
                if frames != self.frames:
                    raise OutputError(f"{tmp}: holds {frames} frames, expected {self.frames} (internal error)")
            for t, tmp in self._temps.items():
                files.commit(tmp, self.finals[t])
            self._temps = {}
        except OutputError:
            self.abort()
            raise
        except Exception as exc:  # noqa: BLE001
            self.abort()
            folder = next(iter(self.finals.values())).parent
            raise OutputError(f"{folder}: cannot finish stems: {_reason(exc)}") from exc
        return dict(self.finals)

    def abort(self) -> None:
        """Close and delete the temporaries (final names are never touched)."""
        for w in self._writers.values():
            try:
                if not w.closed:
                    w.close()
            except Exception:  # noqa: BLE001 - closing a file on a full disk may fail again; delete anyway
                pass
        for tmp in self._temps.values():
            try:
                tmp.unlink()
            except OSError:
                pass
        self._temps = {}
