"""bragg_dask: a distributed, tile-parallel X-ray diffraction image simulator exact to nanoBragg.

The public names are loaded on first use, so that the command line can set up the thread pools'
environment (see :func:`bragg_dask.runtime.configure_threads`) before torch and numpy load.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Beam", "ClusterOptions", "Crystal", "Detector", "RunSettings", "Simulation", "Source", "azimuthal",
           "DatasetSpec", "simulate", "simulate_dataset", "simulation_from_args", "to_dask_array", "__version__"]

_WHERE = {"simulate": "api", "to_dask_array": "api", "Beam": "config", "Crystal": "config", "Detector": "config",
          "Simulation": "config", "Source": "config", "RunSettings": "settings", "ClusterOptions": "settings",
          "simulation_from_args": "nanobragg_args", "azimuthal": "integrate",
          "simulate_dataset": "api", "DatasetSpec": "frames"}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_WHERE))
