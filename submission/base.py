"""A stand-in for the MDX-2021 starter kit's ``evaluator.music_demixing.MusicDemixingPredictor``.

``predict.py`` subclasses the kit's class when ``evaluator/music_demixing.py`` is importable (as on the challenge's
servers) and this one otherwise, so ``python predict.py`` runs anywhere and meets the same limits. The interface
and the behaviour are the kit's:

* songs are the sub-folders of ``$TEST_DATASET_PATH`` (default ``./data/test/``), each with a ``mixture.wav``;
  estimates go to ``$RESULTS_DATASET_PATH/<song>/{bass,drums,other,vocals}.wav`` (default ``./data/results/``);
  ``$PARTIAL_RUN_MUSIC_NAMES`` (comma-separated) restricts the songs;
* ``prediction_setup()`` runs once under a SIGALRM limit of ``$INFERENCE_SETUP_TIMEOUT_SECONDS`` (default 900 s;
  a ``NotImplementedError`` there is printed and skipped), then ``prediction(mixture_file_path=...,
  bass_file_path=..., ...)`` once per song under ``$INFERENCE_PER_MUSIC_TIMEOUT_SECONDS`` (default 240 s);
* **a failing song stops the evaluation**, as in the kit: an exception from ``prediction`` (the limit's timeout
  included) or a song whose four estimates are not all written ends the loop, the remaining songs are not
  predicted, the traceback is printed and ``run()`` raises (the kit reports the error to the grader and re-raises
  outside grading). Our exception names the song (the kit's ``"Prediction timed out!"`` does not).

Differences, all harmless: songs run in sorted order (the kit's is ``os.listdir`` order) and hidden folders are
skipped. The kit's version that also passes ``music_name=`` to ``prediction`` is not imitated; ``predict.py``
accepts both calls. ``python -m submission`` is the tool that goes on past a failing song.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import traceback
from typing import Dict, List, Optional

STEM_NAMES = ("bass", "drums", "other", "vocals")
#: the kit's defaults when its environment variables are unset (FACTS §7, §10)
SETUP_TIMEOUT_S = 900
PER_MUSIC_TIMEOUT_S = 240


class PredictionTimeout(Exception):
    """Setup or a song ran past its SIGALRM limit (the kit's ``TimeoutException``)."""


class SongFailed(RuntimeError):
    """The evaluation stopped at a failing song; the message names it."""


@contextlib.contextmanager
def alarm(seconds: Optional[int], what: str = "prediction"):
    """Raise :class:`PredictionTimeout` in the main thread after ``seconds`` (no limit when None or 0)."""
    if not seconds:
        yield
        return

    def on_alarm(signum, frame):
        raise PredictionTimeout(f"{what} ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(seconds))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _env_seconds(name: str, default: int) -> int:
    value = os.getenv(name)
    return int(value) if value else default


class MusicDemixingPredictor:
    """Drive ``prediction_setup`` and ``prediction`` over a folder of songs (the starter kit's interface)."""

    def __init__(self):
        self.test_data_path = os.getenv("TEST_DATASET_PATH", os.path.join(os.getcwd(), "data", "test"))
        self.results_data_path = os.getenv("RESULTS_DATASET_PATH", os.path.join(os.getcwd(), "data", "results"))
        self.inference_setup_timeout = _env_seconds("INFERENCE_SETUP_TIMEOUT_SECONDS", SETUP_TIMEOUT_S)
        self.inference_per_music_timeout = _env_seconds("INFERENCE_PER_MUSIC_TIMEOUT_SECONDS", PER_MUSIC_TIMEOUT_S)
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
        """Set up, then predict every song; stop at the first failing song (raise :class:`SongFailed`)."""
        start = time.monotonic()
        try:
            with alarm(self.inference_setup_timeout, "prediction_setup"):
                self.prediction_setup()
        except NotImplementedError:
            print("prediction_setup doesn't exist for this run, skipping...")
        self.timings["<setup>"] = time.monotonic() - start
        for name in self.get_all_music_names():
            start = time.monotonic()
            try:
                with alarm(self.inference_per_music_timeout, f"song {name}"):
                    self.prediction(mixture_file_path=self.get_music_file_location(name),
                                    **{f"{s}_file_path": self.get_music_file_location(name, s) for s in STEM_NAMES})
                if not self.verify_results(name):
                    raise RuntimeError("verification failed, the four estimates were not all written")
            except Exception as exc:  # noqa: BLE001 - as the kit: the first failing song ends the evaluation
                raise SongFailed(f"song {name} failed, evaluation stopped: {type(exc).__name__}: {exc}") from exc
            finally:
                self.timings[name] = time.monotonic() - start

    def run(self) -> None:
        """The kit's entry point: print the traceback of a failure and raise it."""
        try:
            self.evaluation()
        except Exception:
            traceback.print_exc()
            raise
