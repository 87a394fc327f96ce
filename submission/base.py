"""A stand-in for the MDX-2021 starter kit's ``evaluator.music_demixing.MusicDemixingPredictor``.

``predict.py`` subclasses the kit's class when ``evaluator/music_demixing.py`` is importable (as on the challenge's
servers) and this one otherwise, so ``python predict.py`` runs anywhere. The interface is the kit's: songs are the
sub-folders of ``$TEST_DATASET_PATH`` (default ``./data/test/``), each with a ``mixture.wav``; estimates go to
``$RESULTS_DATASET_PATH/<song>/{bass,drums,other,vocals}.wav`` (default ``./data/results/``);
``prediction_setup()`` runs once, then ``prediction(mixture_file_path=..., bass_file_path=..., ...)`` once per
song. ``$PARTIAL_RUN_MUSIC_NAMES`` (comma-separated) restricts the songs. When
``$INFERENCE_PER_MUSIC_TIMEOUT_SECONDS`` is set, every song runs under that SIGALRM limit, as on the servers.

Unlike the kit, a failing song does not stop the others: every failure is printed and ``run()`` raises at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import traceback
from typing import Dict, List, Optional

STEM_NAMES = ("bass", "drums", "other", "vocals")


class PredictionTimeout(Exception):
    """A song ran past ``$INFERENCE_PER_MUSIC_TIMEOUT_SECONDS``."""


@contextlib.contextmanager
def alarm(seconds: Optional[int]):
    """Raise :class:`PredictionTimeout` in the main thread after ``seconds`` (no limit when None)."""
    if not seconds:
        yield
        return

    def on_alarm(signum, frame):
        raise PredictionTimeout(f"prediction ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(seconds))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class MusicDemixingPredictor:
    """Drive ``prediction_setup`` and ``prediction`` over a folder of songs (the starter kit's interface)."""

    def __init__(self):
        self.test_data_path = os.getenv("TEST_DATASET_PATH", os.path.join(os.getcwd(), "data", "test"))
        self.results_data_path = os.getenv("RESULTS_DATASET_PATH", os.path.join(os.getcwd(), "data", "results"))
        timeout = os.getenv("INFERENCE_PER_MUSIC_TIMEOUT_SECONDS")
        self.inference_per_music_timeout = int(timeout) if timeout else None
        self.partial_run = os.getenv("PARTIAL_RUN_MUSIC_NAMES")
        self.timings: Dict[str, float] = {}

    def get_all_music_names(self) -> List[str]:
        """Song folder names, sorted (restricted by ``$PARTIAL_RUN_MUSIC_NAMES`` when set)."""
        wanted = set(self.partial_run.split(",")) if self.partial_run else None
        names = [n for n in sorted(os.listdir(self.test_data_path))
                 if os.path.isdir(os.path.join(self.test_data_path, n)) and not n.startswith(".")]
        return [n for n in names if wanted is None or n in wanted]

    def get_music_file_location(self, music_name: str, instrument: Optional[str] = None) -> str:
        """The mixture's path (``instrument=None``) or an estimate's path (its folder is created)."""
        if instrument is None:
            return os.path.join(self.test_data_path, music_name, "mixture.wav")
        folder = os.path.join(self.results_data_path, music_name)
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, f"{instrument}.wav")

    def verify_results(self, music_name: str) -> bool:
        """Whether the four estimates exist."""
        return all(os.path.isfile(self.get_music_file_location(music_name, s)) for s in STEM_NAMES)

    def prediction_setup(self) -> None:
        """Load models etc. (once, before the first song)."""
        raise NotImplementedError

    def prediction(self, mixture_file_path, bass_file_path, drums_file_path, other_file_path, vocals_file_path):
        """Separate one mixture into the four given paths."""
        raise NotImplementedError

    def evaluation(self) -> None:
        """Set up, then predict every song; raise at the end if any song failed."""
        self.prediction_setup()
        failures = []
        for name in self.get_all_music_names():
            start = time.monotonic()
            try:
                with alarm(self.inference_per_music_timeout):
                    self.prediction(mixture_file_path=self.get_music_file_location(name),
                                    **{f"{s}_file_path": self.get_music_file_location(name, s) for s in STEM_NAMES})
                if not self.verify_results(name):
                    raise RuntimeError(f"{name}: the four estimates were not all written")
            except Exception as exc:  # noqa: BLE001 - report and go on with the other songs
                traceback.print_exc()
                failures.append(f"{name}: {exc}")
            self.timings[name] = time.monotonic() - start
        if failures:
            raise RuntimeError(f"{len(failures)} song(s) failed: " + "; ".join(failures))

    def run(self) -> None:
        """The kit's entry point."""
        self.evaluation()
