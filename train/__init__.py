"""`python -m train`: see `python -m train --help`."""
