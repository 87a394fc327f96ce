"""``python -m xumx_slicq``: the ``xumx-slicq`` command (see :mod:`xumx_slicq.cli`)."""

from .cli import run

if __name__ == "__main__":
    run()
