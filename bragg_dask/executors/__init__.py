"""Executors run a tile plan: ``serial`` in-process (the oracle), ``dask`` on a cluster."""
