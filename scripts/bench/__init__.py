"""oar-tiles' benchmark (scripts/bench.sh as a Python package): `python3 -m bench --help`."""
