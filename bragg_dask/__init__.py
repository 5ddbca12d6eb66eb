"""bragg_dask: a distributed, tile-parallel X-ray diffraction image simulator exact to nanoBragg."""

from .api import simulate, to_dask_array
from .config import Beam, Crystal, Detector, Simulation, Source

__version__ = "0.1.0"

__all__ = ["Beam", "Crystal", "Detector", "Simulation", "Source", "simulate", "to_dask_array", "__version__"]
