"""`python -m export`: see `python -m export --help`."""
