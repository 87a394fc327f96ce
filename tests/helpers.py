"""Shared test data builders: a tiny corpus in MUSDB18-HQ layout and models with non-trivial BatchNorm."""

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SR = 44100
STEMS = ("drums", "bass", "other", "vocals")


def write_tiny_corpus(root: Path, seed: int = 0, base_hz: float = 110.0, seconds: int = 3) -> Path:
    """3 training tracks (``a``, ``b``, ``c``; one is held out for validation by the name hash) and 1 test track
    (``t``) of ``seconds`` seconds: each stem a tone (``base_hz`` x stem number) plus noise, stereo 16-bit, and the
    mixture their sum. Returns ``root``."""
    rng = np.random.default_rng(seed)
    n = seconds * SR
    for subset, names in (("train", ["a", "b", "c"]), ("test", ["t"])):
        for name in names:
            folder = root / subset / name
            folder.mkdir(parents=True)
            stems = {}
            for i, stem in enumerate(STEMS):
                tone = np.sin(2 * np.pi * (base_hz * (i + 1)) * np.arange(n) / SR)[:, None]
                stems[stem] = (0.1 * tone + 0.02 * rng.standard_normal((n, 2))).astype(np.float32)
                sf.write(folder / f"{stem}.wav", stems[stem], SR, subtype="PCM_16")
            sf.write(folder / "mixture.wav", sum(stems.values()), SR, subtype="PCM_16")
    return root


def randomise_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine weights (so masks vary), in place; returns the model in eval
    mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """A tiny xumx-sliCQ (Bark-12: 9 blocks, 8 learned; thin layers) with non-trivial BatchNorm statistics so the
    masks vary: exports in seconds, same layers per block as the default."""
    from xumx_slicq.model import XUMXSliCQ
    from xumx_slicq.transforms import SliCQT

    torch.manual_seed(seed)
    return randomise_batchnorm(XUMXSliCQ(slicq_config=SliCQT(fbins=12).config, hidden_channels=(4, 6)))
