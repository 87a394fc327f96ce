"""MDX-2021 entry point: ``python predict.py`` (what ``run.sh`` runs when the starter kit is present).

The predictor subclasses the starter kit's ``evaluator.music_demixing.MusicDemixingPredictor`` when it is
importable (the challenge's servers) and :class:`submission.base.MusicDemixingPredictor` otherwise. It loads the
model from the repository (``pretrained-model/``, or ``$XUMX_MODEL_DIR``) in ``prediction_setup`` and separates
each song with the time-budgeted engine of :mod:`submission.engine`: per song, the limit is the smaller of the
kit's ``inference_per_music_timeout`` (when it has one) and 1.57 x the song's duration, and the watchdog falls
back to cheaper paths so four valid stems are always written in time.

Settings (environment): ``XUMX_MODEL_DIR``, ``XUMX_BACKEND`` (auto), ``XUMX_WIENER`` (auto), ``XUMX_NITER`` (1),
``XUMX_BUDGET_FACTOR`` (1.57), ``XUMX_SAFETY`` (0.15). Nothing is downloaded.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the repository's packages, wherever we run from

try:
    from evaluator.music_demixing import MusicDemixingPredictor
except ImportError:
    from submission.base import MusicDemixingPredictor

from xumx_slicq.audio_io import probe  # noqa: E402
from xumx_slicq.budget import song_budget  # noqa: E402


class XUMXSliCQPredictor(MusicDemixingPredictor):
    """xumx-sliCQ for the Music Demixing challenge."""

    def prediction_setup(self):
        """Load the model (and ONNX network when faster), calibrate the separation paths."""
        from xumx_slicq.engine import Engine

        self.budget_factor = float(os.environ.get("XUMX_BUDGET_FACTOR", "1.57"))
        self.engine = Engine(
            model_dir=os.environ.get("XUMX_MODEL_DIR") or None,
            backend=os.environ.get("XUMX_BACKEND", "auto"),
            wiener=os.environ.get("XUMX_WIENER", "auto"),
            niter=int(os.environ.get("XUMX_NITER", "1")),
            safety=float(os.environ.get("XUMX_SAFETY", "0.15")),
            log=lambda msg: print(msg, file=sys.stderr, flush=True),
        )
        self.records = {}

    def prediction(self, mixture_file_path, bass_file_path, drums_file_path, other_file_path, vocals_file_path):
        """Separate ``mixture_file_path`` into the four stem paths within this song's limit."""
        start = time.monotonic()
        info = probe(mixture_file_path)
        budget = song_budget(info.duration, self.budget_factor)
        limit = getattr(self, "inference_per_music_timeout", None)
        if limit:
            budget = min(budget, float(limit))
        finals = {"bass": bass_file_path, "drums": drums_file_path, "other": other_file_path,
                  "vocals": vocals_file_path}
        result = self.engine.separate(mixture_file_path, finals, budget, start=start, info=info)
        self.records[str(mixture_file_path)] = result.record()
        print(f"{mixture_file_path}: {result.time:.1f} s of {budget:.1f} s, {result.path}", file=sys.stderr,
              flush=True)


if __name__ == "__main__":
    submission = XUMXSliCQPredictor()
    submission.run()
    print("Successfully generated predictions!")
