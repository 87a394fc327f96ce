"""Training and validation datasets over a folder in MUSDB18-HQ layout.

    root/{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav      44.1 kHz, stereo

* :class:`ChunkDataset` - random chunks of ``seq_dur`` seconds for training, ``samples_per_track`` per track and
  epoch, balanced track sampling, random track mixing (each source from its own random track and offset),
  per-source gain U[0.25, 1.25] and channel swap with probability 0.5, optional skipping of silent chunks.
  Chunks are read with soundfile seeking (``sf.read(start=, frames=)``), never by decoding whole tracks.
* :class:`FullTrackDataset` - whole tracks (validation / test).
* Splits: ``train`` and ``valid`` come from the ``train`` subset, ``test`` is the ``test`` subset. When the root is
  MUSDB18-HQ (recognised by its track names) ``valid`` is the official 14-track validation list; for other corpora
  it is a deterministic held-out set chosen by a hash of each track name (``valid_fraction``).
* Optional ``backend="musdb"``: listing (and, for the compressed ``.stem.mp4`` MUSDB18, decoding) through the
  ``musdb`` package, which needs ``ffmpeg``.

Items are ``(x, y)``: x the mixture (nb_channels, nb_timesteps), y the targets (nb_targets, nb_channels,
nb_timesteps), float32, targets in the order given (default ``("vocals", "drums", "bass", "other")``).

Randomness: every chunk is a pure function of ``(seed, epoch, index)``, so results do not depend on the number of
DataLoader workers or their scheduling. Indices past ``len(dataset)`` encode later epochs
(``index = epoch * len + i``); :class:`EpochSampler` yields such indices, so chunks change every epoch even with
persistent workers, and splits each epoch over the processes of a distributed (DDP) job. :func:`seed_worker`
seeds the global numpy/random generators of each worker for code that uses them.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

SAMPLE_RATE = 44100
NB_CHANNELS = 2
#: The four MUSDB sources; also the default target order.
SOURCES: tuple[str, ...] = ("vocals", "drums", "bass", "other")
#: Files of a MUSDB18-HQ track folder.
TRACK_FILES: tuple[str, ...] = ("mixture", "drums", "bass", "other", "vocals")
#: Official MUSDB18 validation tracks (a subset of the train folder), as listed by the musdb package.
MUSDB_VALIDATION_TRACKS: tuple[str, ...] = (
    "Actions - One Minute Smile",
    "Clara Berry And Wooldog - Waltz For My Victims",
    "Johnny Lokke - Promises & Lies",
    "Patrick Talbot - A Reason To Leave",
    "Triviul - Angelsaint",
    "Alexander Ross - Goodbye Bolero",
    "Fergessen - Nos Palpitants",
    "Leaf - Summerghost",
    "Skelpolu - Human Mistakes",
    "Young Griffo - Pennies",
    "ANiMAL - Rockshow",
    "James May - On The Line",
    "Meaxic - Take A Step",
    "Traffic Experiment - Sirens",
)
SPLITS = ("train", "valid", "test")


# --------------------------------------------------------------------------------------------------- tracks


class WavTrack:
    """A track folder with one WAV per stem, read with soundfile seeking.

    Construction checks that every needed file exists, is 44.1 kHz stereo, and that all have the same length;
    errors name the offending file.
    """

    def __init__(self, folder: str | Path, files: Sequence[str] = TRACK_FILES, sample_rate: int = SAMPLE_RATE):
        self.folder = Path(folder)
        self.name = self.folder.name
        self.paths = {}
        lengths = {}
        for stem in files:
            path = self.folder / f"{stem}.wav"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing '{stem}' stem of track '{self.name}' "
                                        f"(a track needs {', '.join(f + '.wav' for f in files)})")
            try:
                info = sf.info(str(path))
            except RuntimeError as err:
                raise ValueError(f"{path}: unreadable audio file ({err})") from err
            if info.samplerate != sample_rate:
                raise ValueError(f"{path}: sample rate is {info.samplerate} Hz, expected {sample_rate} Hz")
            if info.channels != NB_CHANNELS:
                raise ValueError(f"{path}: has {info.channels} channel(s), expected stereo ({NB_CHANNELS})")
            self.paths[stem] = path
            lengths[stem] = info.frames
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{k}.wav={v}" for k, v in lengths.items())
            raise ValueError(f"{self.folder}: stems have different lengths in samples ({detail})")
        self.nb_frames = next(iter(lengths.values()))

    def read(self, stem: str, start: int = 0, frames: int | None = None) -> np.ndarray:
        """float32 (nb_channels, frames) from sample `start` (zero-padded past the end); frames=None: to the end."""
        n = self.nb_frames - start if frames is None else frames
        with sf.SoundFile(str(self.paths[stem])) as f:
            f.seek(min(start, self.nb_frames))
            audio = f.read(n, dtype="float32", always_2d=True)  # (frames_read, nb_channels)
        if audio.shape[0] < n:
            audio = np.pad(audio, ((0, n - audio.shape[0]), (0, 0)))
        return np.ascontiguousarray(audio.T)  # -> (nb_channels, frames)


class MusdbTrack:
    """A track listed by the musdb package. WAV stems are read with soundfile seeking; `.stem.mp4` stems are
    decoded by musdb/stempeg (ffmpeg) for just the requested chunk."""

    def __init__(self, track, sample_rate: int = SAMPLE_RATE):
        self.track = track
        self.name = track.name
        self.is_wav = bool(track.is_wav)
        if self.is_wav:
            folder = Path(track.path).parent
            self._wav = WavTrack(folder)
            self.nb_frames = self._wav.nb_frames
        else:
            if int(round(track.rate)) != sample_rate:
                raise ValueError(f"{track.path}: sample rate is {track.rate} Hz, expected {sample_rate} Hz")
            self._wav = None
            self.nb_frames = int(track.samples)

    def read(self, stem: str, start: int = 0, frames: int | None = None) -> np.ndarray:
        """float32 (nb_channels, frames) from sample `start`; see :meth:`WavTrack.read`."""
        if self._wav is not None:
            return self._wav.read(stem, start, frames)
        n = self.nb_frames - start if frames is None else frames
        self.track.chunk_start = start / SAMPLE_RATE
        self.track.chunk_duration = n / SAMPLE_RATE
        audio = self.track.audio if stem == "mixture" else self.track.sources[stem].audio  # (samples, channels)
        if audio.ndim != 2 or audio.shape[1] != NB_CHANNELS:
            raise ValueError(f"{self.track.path}: stem '{stem}' has shape {audio.shape}, expected stereo")
        audio = audio[:n]
        if audio.shape[0] < n:
            audio = np.pad(audio, ((0, n - audio.shape[0]), (0, 0)))
        return np.ascontiguousarray(audio.T, dtype=np.float32)  # -> (nb_channels, frames)


# --------------------------------------------------------------------------------------------------- splits


def is_musdb_root(names: Sequence[str]) -> bool:
    """True when the track names are MUSDB18's (at least one official validation track is present)."""
    return any(name in MUSDB_VALIDATION_TRACKS for name in names)


def _hash_unit(name: str) -> float:
    """Stable pseudo-random number in [0, 1) from a track name (SHA-1, independent of Python's hash seed)."""
    return int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:13], 16) / 16 ** 13


def validation_names(names: Sequence[str], valid_fraction: float = 0.1, split_mode: str = "auto") -> list[str]:
    """Names (from the train subset) held out for validation.

    split_mode: "musdb" (the official 14 tracks), "hash" (tracks whose name hashes below `valid_fraction`, at
    least one when there are two or more tracks and the fraction is positive), or "auto" (musdb when the names
    look like MUSDB18, else hash).
    """
    if split_mode not in ("auto", "musdb", "hash"):
        raise ValueError(f"split_mode must be 'auto', 'musdb' or 'hash', got {split_mode!r}")
    if split_mode == "musdb" or (split_mode == "auto" and is_musdb_root(names)):
        return [n for n in names if n in MUSDB_VALIDATION_TRACKS]
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    held = [n for n in names if _hash_unit(n) < valid_fraction]
    if not held and valid_fraction > 0 and len(names) >= 2:
        held = [min(names, key=_hash_unit)]
    if len(held) == len(names) and len(names) >= 2:
        held.remove(max(held, key=_hash_unit))
    return held


def list_tracks(root: str | Path, split: str, valid_fraction: float = 0.1, split_mode: str = "auto",
                backend: str = "soundfile", is_wav: bool = True) -> list[WavTrack | MusdbTrack]:
    """Tracks of a split ("train", "valid" or "test") of a MUSDB18-HQ-layout root, sorted by name.

    backend "soundfile" scans folders; backend "musdb" lists through ``musdb.DB`` (``is_wav=False`` for the
    compressed ``.stem.mp4`` MUSDB18), whose train/valid split is always the official one.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    subset = "test" if split == "test" else "train"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root does not exist")
    if backend == "musdb":
        import musdb

        db = musdb.DB(root=str(root), is_wav=is_wav, subsets=subset, split=None if split == "test" else split)
        tracks = [MusdbTrack(t) for t in db.tracks]
    elif backend == "soundfile":
        folder = root / subset
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no '{subset}' folder in the dataset root")
        names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if split != "test":
            held = set(validation_names(names, valid_fraction, split_mode))
            names = [n for n in names if (n in held) == (split == "valid")]
        tracks = [WavTrack(folder / n) for n in names]
    else:
        raise ValueError(f"backend must be 'soundfile' or 'musdb', got {backend!r}")
    if not tracks:
        raise FileNotFoundError(f"{root}: no tracks in split '{split}' (subset folder '{subset}')")
    return tracks


def _check_targets(targets: Sequence[str]) -> tuple[str, ...]:
    """Validate a target list: non-empty, unique, each one of SOURCES."""
    targets = tuple(targets)
    bad = [t for t in targets if t not in SOURCES]
    if not targets or bad or len(set(targets)) != len(targets):
        raise ValueError(f"targets must be distinct names from {SOURCES}, got {targets}")
    return targets


# --------------------------------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class ChunkPlan:
    """How one training item is drawn: per source (in SOURCES order) its track index, start sample, gain and
    whether its channels are swapped."""

    tracks: tuple[int, ...]
    starts: tuple[int, ...]
    gains: tuple[float, ...]
    swaps: tuple[bool, ...]


class ChunkDataset(Dataset):
    """Random training chunks with random track mixing and source augmentations.

    Args:
        root: dataset root (MUSDB18-HQ layout).
        split: "train" (default), "valid" or "test".
        targets: target sources in output order (default vocals, drums, bass, other).
        seq_dur: chunk length in seconds.
        samples_per_track: items per track and epoch (len = nb_tracks * samples_per_track).
        random_track_mix: each source from its own random track and offset (else all sources from the same
            track and offset). Either way every track is drawn exactly samples_per_track times per source per
            epoch (balanced sampling).
        augment: apply gain and channel-swap augmentations.
        gain_range: per-source gain drawn uniformly from this range.
        channel_swap_prob: probability of swapping left/right per source.
        skip_silent: redraw a source's offset (up to `max_retries` times) when its chunk is silent.
        silence_db: RMS threshold (dBFS) below which a chunk is silent.
        seed: base seed; items are a pure function of (seed, epoch, index).
        valid_fraction, split_mode: held-out validation split for corpora other than MUSDB18 (see
            :func:`validation_names`).
        backend, is_wav: see :func:`list_tracks`.
    Items:
        (x, y): x (nb_channels, nb_timesteps) mixture = sum of the four augmented sources,
        y (nb_targets, nb_channels, nb_timesteps), float32 tensors.
    """

    def __init__(self, root: str | Path, split: str = "train", targets: Sequence[str] = SOURCES,
                 seq_dur: float = 1.0, samples_per_track: int = 64, random_track_mix: bool = True,
                 augment: bool = True, gain_range: tuple[float, float] = (0.25, 1.25),
                 channel_swap_prob: float = 0.5, skip_silent: bool = False, silence_db: float = -60.0,
                 max_retries: int = 10, seed: int = 42, valid_fraction: float = 0.1, split_mode: str = "auto",
                 backend: str = "soundfile", is_wav: bool = True):
        if seq_dur <= 0:
            raise ValueError(f"seq_dur must be positive, got {seq_dur}")
        if samples_per_track < 1:
            raise ValueError(f"samples_per_track must be >= 1, got {samples_per_track}")
        if not (0 <= gain_range[0] <= gain_range[1]):
            raise ValueError(f"gain_range must satisfy 0 <= low <= high, got {gain_range}")
        self.targets = _check_targets(targets)
        self.tracks = list_tracks(root, split, valid_fraction, split_mode, backend, is_wav)
        self.split = split
        self.seq_len = int(round(seq_dur * SAMPLE_RATE))
        self.samples_per_track = samples_per_track
        self.random_track_mix = random_track_mix
        self.augment = augment
        self.gain_range = (float(gain_range[0]), float(gain_range[1]))
        self.channel_swap_prob = float(channel_swap_prob)
        self.skip_silent = skip_silent
        self.silence_power = 10 ** (silence_db / 10)
        self.max_retries = max_retries
        self.seed = int(seed)
        self.epoch = 0
        self._perm_cache: dict[int, np.ndarray] = {}

    @property
    def track_names(self) -> list[str]:
        """Names of the tracks in this split."""
        return [t.name for t in self.tracks]

    def __len__(self) -> int:
        return len(self.tracks) * self.samples_per_track

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose chunks plain indices 0..len-1 produce (needs non-persistent workers)."""
        self.epoch = int(epoch)

    def _permutations(self, epoch: int) -> np.ndarray:
        """(nb_sources, nb_tracks): per source, the track that each balanced slot maps to in this epoch."""
        if epoch not in self._perm_cache:
            n = len(self.tracks)
            if self.random_track_mix:
                perms = [np.random.default_rng([self.seed, epoch, 7919, j]).permutation(n) for j in range(len(SOURCES))]
            else:
                perms = [np.arange(n)] * len(SOURCES)
            self._perm_cache = {epoch: np.stack(perms)}  # keep only the current epoch
        return self._perm_cache[epoch]

    def _random_start(self, rng: np.random.Generator, track) -> int:
        """Uniform chunk start in [0, nb_frames - seq_len] (0 for tracks shorter than a chunk)."""
        return int(rng.integers(0, max(0, track.nb_frames - self.seq_len) + 1))

    def _silent(self, chunk: np.ndarray) -> bool:
        """True when the chunk's mean square is below the silence threshold."""
        return float(np.mean(np.square(chunk, dtype=np.float64))) < self.silence_power

    def _draw(self, index: int) -> tuple[ChunkPlan, list[np.ndarray]]:
        """Plan and raw (un-augmented) source chunks, each (nb_channels, seq_len), for an item index."""
        epoch = self.epoch + index // len(self)
        local = index % len(self)
        rng = np.random.default_rng([self.seed, epoch, local])
        slot = local // self.samples_per_track
        track_ids = [int(t) for t in self._permutations(epoch)[:, slot]]
        chunks, starts = [], []
        shared_start = self._random_start(rng, self.tracks[track_ids[0]])
        for j, source in enumerate(SOURCES):
            track = self.tracks[track_ids[j]]
            start = self._random_start(rng, track) if self.random_track_mix else shared_start
            chunk = track.read(source, start, self.seq_len)
            if self.skip_silent and self.random_track_mix:
                for _ in range(self.max_retries):
                    if not self._silent(chunk):
                        break
                    start = self._random_start(rng, track)
                    chunk = track.read(source, start, self.seq_len)
            chunks.append(chunk)
            starts.append(start)
        if self.skip_silent and not self.random_track_mix:  # shared offset: redraw while a target is silent
            for _ in range(self.max_retries):
                if not any(self._silent(chunks[SOURCES.index(t)]) for t in self.targets):
                    break
                start = self._random_start(rng, self.tracks[track_ids[0]])
                chunks = [self.tracks[track_ids[0]].read(s, start, self.seq_len) for s in SOURCES]
                starts = [start] * len(SOURCES)
        if self.augment:
            gains = tuple(float(g) for g in rng.uniform(*self.gain_range, size=len(SOURCES)))
            swaps = tuple(bool(s) for s in rng.random(len(SOURCES)) < self.channel_swap_prob)
        else:
            gains, swaps = (1.0,) * len(SOURCES), (False,) * len(SOURCES)
        return ChunkPlan(tuple(track_ids), tuple(starts), gains, swaps), chunks

    def plan(self, index: int) -> ChunkPlan:
        """The :class:`ChunkPlan` of item `index` (reads audio only when skip_silent needs it)."""
        return self._draw(index)[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        plan, chunks = self._draw(int(index))
        sources = []
        for j, chunk in enumerate(chunks):
            if plan.swaps[j]:
                chunk = chunk[::-1]  # swap left/right: reverse the channel axis
            sources.append(chunk * np.float32(plan.gains[j]))
        stacked = np.stack(sources)  # (nb_sources, nb_channels, nb_timesteps)
        x = stacked.sum(axis=0)
        y = stacked[[SOURCES.index(t) for t in self.targets]]  # (nb_targets, nb_channels, nb_timesteps)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


class FullTrackDataset(Dataset):
    """Whole tracks for validation and testing: x from mixture.wav, y the target stems.

    Args:
        root, split ("valid" by default), targets, valid_fraction, split_mode, backend, is_wav: as in
            :class:`ChunkDataset`.
        max_duration: if set, only the first `max_duration` seconds of each track.
    Items:
        (x, y): x (nb_channels, nb_timesteps), y (nb_targets, nb_channels, nb_timesteps), float32 tensors.
    """

    def __init__(self, root: str | Path, split: str = "valid", targets: Sequence[str] = SOURCES,
                 max_duration: float | None = None, valid_fraction: float = 0.1, split_mode: str = "auto",
                 backend: str = "soundfile", is_wav: bool = True):
        self.targets = _check_targets(targets)
        self.tracks = list_tracks(root, split, valid_fraction, split_mode, backend, is_wav)
        self.split = split
        self.max_frames = None if max_duration is None else int(round(max_duration * SAMPLE_RATE))

    @property
    def track_names(self) -> list[str]:
        """Names of the tracks in this split."""
        return [t.name for t in self.tracks]

    def __len__(self) -> int:
        return len(self.tracks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        track = self.tracks[index]
        frames = track.nb_frames if self.max_frames is None else min(track.nb_frames, self.max_frames)
        x = track.read("mixture", 0, frames)
        y = np.stack([track.read(t, 0, frames) for t in self.targets])  # (nb_targets, nb_channels, nb_timesteps)
        return torch.from_numpy(x), torch.from_numpy(y)


# --------------------------------------------------------------------------------------------------- loading


def epoch_order(length: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The order in which an epoch visits items ``0 .. length-1``: a permutation that is a pure function of
    ``(seed, epoch)`` (or ``arange`` without shuffling), int64 ``(length,)``."""
    if not shuffle:
        return np.arange(length)
    return np.random.default_rng([int(seed), int(epoch), 104729]).permutation(length)


class EpochSampler(Sampler[int]):
    """Shuffled indices that encode the epoch (``epoch * len(dataset) + i``), one new permutation per pass, split
    over the processes of a distributed job.

    Works with persistent workers: the epoch lives in the main process and travels inside the index. Every rank
    computes the same epoch permutation (a pure function of ``(seed, epoch)``, so it needs no communication) and
    takes every ``num_replicas``-th index starting at its rank: the ranks see disjoint chunks that together make
    up the single-process epoch. With several processes the permutation is cut to a multiple of ``num_replicas``
    (the ``len(dataset) % num_replicas`` left-over items, different ones every epoch, are skipped) so that every
    rank runs the same number of steps; one process (the default) walks the whole permutation.

    Args:
        dataset: the dataset (only its length is used).
        shuffle: permute each epoch (False: ``arange``).
        seed: seed of the permutations.
        start_epoch: the epoch (0-based) of the first pass.
        num_replicas: number of processes (world size).
        rank: this process's rank in ``0 .. num_replicas-1``.
    """

    def __init__(self, dataset: Dataset, shuffle: bool = True, seed: int = 42, start_epoch: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"data.py: need num_replicas >= 1 and 0 <= rank < num_replicas, got rank {rank} of "
                             f"{num_replicas}")
        self.length = len(dataset)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.per_replica = self.length // self.num_replicas
        if self.per_replica == 0 and self.num_replicas > 1:
            raise ValueError(f"data.py: {self.length} items per epoch cannot be split over {num_replicas} processes; "
                             f"raise samples_per_track")
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = int(start_epoch)

    def __len__(self) -> int:
        return self.per_replica

    def set_epoch(self, epoch: int) -> None:
        """The epoch (0-based) that the next pass draws."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(self.length, self.seed, self.epoch, self.shuffle)
        # this rank's share: positions rank, rank + R, rank + 2R, ... of the first per_replica * R
        mine = order[: self.per_replica * self.num_replicas][self.rank :: self.num_replicas]
        base = self.epoch * self.length
        self.epoch += 1
        return iter((base + mine).tolist())


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python's and numpy's global generators from the worker's torch seed
    (itself derived from the loader's generator), for any code that draws from them."""
    seed = torch.initial_seed() % 2 ** 32
    random.seed(seed)
    np.random.seed(seed)


def make_train_loader(dataset: ChunkDataset, batch_size: int = 32, num_workers: int = 2, seed: int = 42,
                      shuffle: bool = True, persistent_workers: bool = True, num_replicas: int = 1, rank: int = 0,
                      **kwargs) -> DataLoader:
    """DataLoader over a :class:`ChunkDataset` with an :class:`EpochSampler` (new chunks every epoch),
    :func:`seed_worker` and a seeded generator; batches are (x, y) with shapes (batch, channels, time) and
    (batch, targets, channels, time).

    With ``num_replicas > 1`` (distributed training) the sampler gives this ``rank`` its share of each epoch;
    ``batch_size`` is then the batch of this one process.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = EpochSampler(dataset, shuffle, seed, num_replicas=num_replicas, rank=rank)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                      num_workers=num_workers, worker_init_fn=seed_worker, generator=generator,
                      persistent_workers=persistent_workers and num_workers > 0, drop_last=True, **kwargs)
