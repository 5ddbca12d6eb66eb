"""Python API: run a simulation and get the image back (and optionally a Zarr store)."""

from __future__ import annotations

import numpy as np
import torch

from .config import Simulation
from .plan import plan_tiles


def simulate(
    sim: Simulation,
    *,
    store: str | None = None,
    client=None,
    tile: int | None = None,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    overwrite: bool = False,
) -> np.ndarray:
    """Float image ``(spixels, fpixels)`` float32 (photons/pixel) of ``sim``.

    With ``store`` (or a ``distributed`` ``client``) the tiles run on Dask - on ``client`` if
    given, else on a local cluster - and stream into a Zarr v3 store; otherwise in-process.
    """
    if store is None and client is None:
        from .executors.serial import run_serial

        det = sim.detector
        return run_serial(sim, plan_tiles(det.spixels, det.fpixels, tile), device=device, dtype=dtype).image
    from .executors.dask import run_dask

    return run_dask(sim, store=store, tile=tile, device=device, dtype=dtype, client=client,
                    overwrite=overwrite, progress=False).image
