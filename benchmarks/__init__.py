"""Benchmarks and the fault drill: the real pipeline on loopback, private database and broker.

`ingest.py`, `alerts.py`, `api.py` (`eldercare bench …`, cli.py) and `drill.py` (`eldercare drill`,
drill_cli.py). Product packages never import from here (an import contract in `make lint`).
"""
