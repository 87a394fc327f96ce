"""`python -m benchmark`: see `python -m benchmark --help`."""
