"""bragg_dask: a distributed, tile-parallel X-ray diffraction image simulator exact to nanoBragg.

The public names are loaded on first use, so that the command line can set up the thread pools'
environment (see :func:`bragg_dask.runtime.configure_threads`) before torch and numpy load.
``bragg_dask.training``: PyTorch datasets over a store.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "Beam",
    "ClusterOptions",
    "Crystal",
    "Detector",
    "RunSettings",
    "Simulation",
    "Source",
    "azimuthal",
    "DatasetSpec",
    "simulate",
    "simulate_dataset",
    "simulation_from_args",
    "vary_dataset",
    "to_dask_array",
    "read_geometry",
    "read_panels",
    "with_panels",
    "Model",
    "poisson_nll",
    "least_squares",
    "loss_and_grad",
    "__version__",
]

_WHERE = {
    "simulate": "bragg_dask.api",
    "to_dask_array": "bragg_dask.api",
    "Beam": "bragg_dask.config",
    "Crystal": "bragg_dask.config",
    "Detector": "bragg_dask.config",
    "Simulation": "bragg_dask.config",
    "Source": "bragg_dask.config",
    "RunSettings": "bragg_dask.settings",
    "ClusterOptions": "bragg_dask.settings",
    "simulation_from_args": "bragg_dask.nanobragg.args",
    "azimuthal": "bragg_dask.io.integrate",
    "simulate_dataset": "bragg_dask.api",
    "vary_dataset": "bragg_dask.api",
    "DatasetSpec": "bragg_dask.planning.frames",
    "read_panels": "bragg_dask.io.panels",
    "with_panels": "bragg_dask.io.panels",
    "read_geometry": "bragg_dask.io.geometry_files",
    "Model": "bragg_dask.model",
    "poisson_nll": "bragg_dask.model",
    "least_squares": "bragg_dask.model",
    "loss_and_grad": "bragg_dask.model",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(__all__) | set(_WHERE))
