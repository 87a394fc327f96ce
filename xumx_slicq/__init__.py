"""xumx-sliCQ: music source separation with the sliced Constant-Q / nonstationary Gabor transform.

Data flows one way through the package::

    audio -> transforms.SliCQT -> model -> filtering (Wiener-EM) -> SliCQT.inverse -> stems
"""

__version__ = "0.1.0"


def separate(audio, rate, model_dir=None, **options):
    """Separate ``audio`` laid out as soundfile returns it (``(nb_timesteps, nb_channels)``, or 1-D for mono) at
    sampling rate ``rate`` into ``{target: array}`` of the same layout, length and rate.

    ``model_dir=None`` uses the shipped model in ``pretrained-model/``; ``options`` are
    :class:`xumx_slicq.separator.Separator` arguments (``niter``, ``wiener``, ``chunk_seconds``, ``device``...).
    """
    from .separator import separate as _separate

    return _separate(audio, rate, model_dir=model_dir, **options)
