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
    parity: str = "spec",
    c_threads: int = 1,
    cluster_options=None,
) -> np.ndarray:
    """Float image ``(spixels, fpixels)`` float32 (photons/pixel) of ``sim``.

    With ``store`` (or a ``distributed`` ``client``) the tiles run on Dask - on ``client`` if
    given, else on a local cluster - and stream into a Zarr v3 store; otherwise in-process.
    The local cluster's workers are threads of this process unless ``cluster_options``
    (:class:`bragg_dask.cluster.ClusterOptions`) says otherwise, e.g. ``worker_processes=True``.
    """
    if store is None and client is None:
        from .executors.serial import run_serial

        det = sim.detector
        return run_serial(sim, plan_tiles(det.spixels, det.fpixels, tile, device), device=device, dtype=dtype,
                          parity=parity, c_threads=c_threads).image
    from .executors.dask import run_dask

    return run_dask(sim, store=store, tile=tile, device=device, dtype=dtype, client=client,
                    overwrite=overwrite, progress=False, parity=parity, c_threads=c_threads,
                    cluster_options=cluster_options).image


def to_dask_array(
    sim: Simulation,
    *,
    tile: int | None = None,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    parity: str = "spec",
    c_threads: int = 1,
):
    """A lazy ``dask.array`` ``(spixels, fpixels)`` float32 of the image, one block per tile.

    Nothing is simulated until it is computed; each block runs the tile kernel.  In the c-parity
    mode the (cheap) seed pre-pass runs now, so that every block is independent.
    """
    import dask
    import dask.array as da

    det = sim.detector
    plan = plan_tiles(det.spixels, det.fpixels, tile, device)
    seeds = {}
    if parity == "c":
        from .executors.seeds import compute_seeds

        seeds = compute_seeds(sim, plan, threads=c_threads, device=device, dtype=dtype)
    tiles = plan.tiles()
    gs, gf = plan.grid
    name = "simulate-tile-" + sim.fingerprint()[:10]
    blocks = [[None] * gf for _ in range(gs)]
    for t in tiles:
        d = dask.delayed(_tile_image, pure=True, name=f"{name}-s{t.index[0]}-t{t.index[1]}")(
            sim, t, seeds.get(t.index), parity, device, dtype)
        blocks[t.index[0]][t.index[1]] = da.from_delayed(d, shape=t.shape, dtype=np.float32)
    return da.block(blocks)


def _tile_image(sim, tile, seed, parity, device, dtype) -> np.ndarray:
    from .physics.kernel import simulate_tile

    return simulate_tile(sim, tile, seed, parity=parity, device=device, dtype=dtype).image
