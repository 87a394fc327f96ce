"""MDX-2021 entry point: ``python predict.py`` (what ``run.sh`` runs when the starter kit is present).

The predictor subclasses the starter kit's ``evaluator.music_demixing.MusicDemixingPredictor`` when it is
importable (the challenge's servers) and :class:`submission.base.MusicDemixingPredictor` otherwise. It loads the
model from the repository (``pretrained-model/``, or ``$XUMX_MODEL_DIR``) in ``prediction_setup`` and separates
each song with the time-budgeted engine of :mod:`xumx_slicq.engine`.

The kit's limits, applied even when the kit gives none:

* **per song**: the budget is the smaller of 1.57 x the song's duration and the kit's per-song limit (the kit's
  ``inference_per_music_timeout``, else ``$INFERENCE_PER_MUSIC_TIMEOUT_SECONDS``, else 240 s); the watchdog falls
  back to cheaper paths so four valid stems are always written in time;
* **setup**: ``prediction_setup`` is timed against the setup limit (``inference_setup_timeout``, else
  ``$INFERENCE_SETUP_TIMEOUT_SECONDS``, else 900 s); the time and whether it is within the limit are printed
  (loudly when over). When loading alone has used half the limit, the calibration is skipped (the first song's
  first chunk calibrates instead).

A failing song is the kit's business: its exception propagates (the real kit then stops the evaluation).
``prediction`` accepts the ``music_name=`` keyword that one version of the kit passes.

Settings (environment): ``XUMX_MODEL_DIR``, ``XUMX_BACKEND`` (auto), ``XUMX_WIENER`` (auto), ``XUMX_NITER`` (1),
``XUMX_BUDGET_FACTOR`` (1.57), ``XUMX_SAFETY`` (0.15), ``XUMX_CALIBRATION_SECONDS`` (8: seconds of noise per
calibrated path). Nothing is downloaded.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the repository's packages, wherever we run from

try:
    from evaluator.music_demixing import MusicDemixingPredictor
except ImportError:
    from submission.base import MusicDemixingPredictor

from xumx_slicq.audio_io import probe  # noqa: E402
from xumx_slicq.budget import song_budget  # noqa: E402

#: the official kit's defaults (INFERENCE_SETUP_TIMEOUT_SECONDS, INFERENCE_PER_MUSIC_TIMEOUT_SECONDS)
KIT_SETUP_LIMIT_S = 900
KIT_SONG_LIMIT_S = 240


def kit_limit(predictor, attribute: str, variable: str, default: float) -> float:
    """The kit's limit: its attribute when set, else its environment variable, else its default."""
    value = getattr(predictor, attribute, None) or os.environ.get(variable) or default
    return float(value)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _KitAlarm(BaseException):
    """The kit's SIGALRM during setup, carried past the engine's ``except Exception`` blocks (calibration would
    otherwise take the kit's timeout for a failing path, mark it broken and carry on past the limit)."""


def _kit_alarm_passes_through(setup):
    """Run ``setup()``; if the kit's SIGALRM fires inside it, hand the signal to the kit's own handler from here."""
    kit_handler = signal.getsignal(signal.SIGALRM)
    if not callable(kit_handler):  # no alarm handler installed: nothing to protect
        return setup()
    fired = {}

    def on_alarm(signum, frame):
        fired["frame"] = frame
        raise _KitAlarm()

    signal.signal(signal.SIGALRM, on_alarm)
    try:
        return setup()
    except _KitAlarm:
        pass
    finally:
        signal.signal(signal.SIGALRM, kit_handler)
    kit_handler(signal.SIGALRM, fired["frame"])  # raises the kit's timeout (e.g. "Prediction timed out!")
    raise TimeoutError("the kit's setup limit ran out")  # a handler that did not raise


class XUMXSliCQPredictor(MusicDemixingPredictor):
    """xumx-sliCQ for the Music Demixing challenge."""

    def prediction_setup(self):
        """Load the model (and ONNX network when faster), calibrate the separation paths; time it against the
        kit's setup limit and report."""
        start = time.monotonic()
        self.setup_limit = kit_limit(self, "inference_setup_timeout", "INFERENCE_SETUP_TIMEOUT_SECONDS",
                                     KIT_SETUP_LIMIT_S)
        self.song_limit = kit_limit(self, "inference_per_music_timeout", "INFERENCE_PER_MUSIC_TIMEOUT_SECONDS",
                                    KIT_SONG_LIMIT_S)
        _kit_alarm_passes_through(lambda: self._setup(start))
        self.setup_time = time.monotonic() - start
        self.setup_within_limit = self.setup_time <= self.setup_limit
        if self.setup_within_limit:
            log(f"setup: {self.setup_time:.1f} s, within the kit's {self.setup_limit:g} s setup limit; per-song "
                f"limit {self.song_limit:g} s")
        else:
            log(f"ERROR: SETUP TOOK {self.setup_time:.1f} s, OVER THE KIT'S {self.setup_limit:g} s SETUP LIMIT: "
                f"the challenge's evaluator stops the run here")

    def _setup(self, start: float) -> None:
        from xumx_slicq.engine import Engine

        self.budget_factor = float(os.environ.get("XUMX_BUDGET_FACTOR", "1.57"))
        self.engine = Engine(
            model_dir=os.environ.get("XUMX_MODEL_DIR") or None,
            backend=os.environ.get("XUMX_BACKEND", "auto"),
            wiener=os.environ.get("XUMX_WIENER", "auto"),
            niter=int(os.environ.get("XUMX_NITER", "1")),
            safety=float(os.environ.get("XUMX_SAFETY", "0.15")),
            calibrate=False,
            log=log,
        )
        loaded = time.monotonic() - start
        if loaded < 0.5 * self.setup_limit:
            self.engine.calibrate(float(os.environ.get("XUMX_CALIBRATION_SECONDS", "8")))
        else:
            log(f"warning: loading took {loaded:.1f} s of the {self.setup_limit:g} s setup limit: calibration "
                f"skipped (the first song's first chunk calibrates)")
        self.records = {}

    def prediction(self, mixture_file_path, bass_file_path, drums_file_path, other_file_path, vocals_file_path,
                   music_name=None):
        """Separate ``mixture_file_path`` into the four stem paths within this song's limit."""
        start = time.monotonic()
        info = probe(mixture_file_path)
        budget = min(song_budget(info.duration, self.budget_factor), self.song_limit)
        finals = {"bass": bass_file_path, "drums": drums_file_path, "other": other_file_path,
                  "vocals": vocals_file_path}
        result = self.engine.separate(mixture_file_path, finals, budget, start=start, info=info)
        self.records[str(mixture_file_path)] = result.record()
        log(f"{mixture_file_path}: {result.time:.1f} s of {budget:.1f} s, {result.path}")


if __name__ == "__main__":
    submission = XUMXSliCQPredictor()
    submission.run()
    print("Successfully generated predictions!", flush=True)
    import threading

    if any(t.name == "xumx-separate" and t.is_alive() for t in threading.enumerate()):
        # a chunk abandoned at a deadline is still inside the network: the interpreter's shutdown would abort
        # ("terminate called without an active exception"); every stem is written and closed by now
        sys.stderr.flush()
        os._exit(0)
