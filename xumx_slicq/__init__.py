"""xumx-sliCQ: music source separation with the sliced Constant-Q / nonstationary Gabor transform.

Data flows one way through the package::

    audio -> transforms.SliCQT -> model -> filtering (Wiener-EM) -> SliCQT.inverse -> stems
"""

__version__ = "0.1.0"
