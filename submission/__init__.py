"""`python -m submission`: see `python -m submission --help`."""
