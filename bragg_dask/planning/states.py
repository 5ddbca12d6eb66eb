"""Planning the c-parity tile states (the :class:`~..physics.tiles.TileState` entering every tile): the cheap
pre-pass over tiles, then the scan.

Shared by the executors: the pre-pass functions run wherever the executor runs tasks (in-process or
on Dask workers), through ``mapper(function, tiles, per_tile_args)``; the scan runs on the client.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from bragg_dask.errors import ConfigError
from bragg_dask.physics.crystal import carryover_matters, phi_angles
from bragg_dask.physics.prepass import executed_runs, out_of_range_runs
from bragg_dask.physics.tiles import TileSpec, TileState
from bragg_dask.planning.carryover import phi_only_states, segments, tile_states
from bragg_dask.planning.plan import TilePlan

Mapper = Callable[[Callable, Sequence[TileSpec], Sequence], list]


def serial_mapper(sim) -> Mapper:
    def run(func, tiles, extra):
        return [func(sim, t, *e) for t, e in zip(tiles, extra)]

    return run


def interpolation_switch_active(sim) -> bool:
    return bool(sim.crystal.interpolate and sim.crystal.structure_factors.has_table)


def check_threads(sim, threads: int) -> None:
    if threads < 1:
        raise ConfigError(f"must be >= 1, got {threads}", flag="--c-threads")
    if threads > 1 and interpolation_switch_active(sim):
        raise ConfigError(
            "tricubic interpolation with more than one emulated thread is nondeterministic in the C "
            "program (the switch-off races between threads); use --c-threads 1 or -nointerpolate",
            flag="--c-threads",
        )


def compute_states(
    sim,
    plan: TilePlan,
    *,
    threads: int = 1,
    mapper: Mapper | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> dict[tuple[int, int], TileState]:
    """State entering every tile of ``plan`` for a C run with ``threads`` OpenMP threads (1 = serial)."""
    check_threads(sim, threads)
    tiles = plan.tiles()
    cr = sim.crystal
    interp = interpolation_switch_active(sim)
    phi_matters = carryover_matters(phi_angles(cr.phi0_rad, cr.phistep_rad, cr.phisteps))
    if not phi_matters and not interp:
        return {t.index: TileState.neutral(t) for t in tiles}
    mapper = mapper or serial_mapper(sim)
    segs = segments(plan.spixels, threads)
    runs = [r for part in mapper(_executed, tiles, [(device,)] * len(tiles)) for r in part]
    if interp:
        phi = phi_only_states(tiles, runs, segs)
        extra = [(phi[t.index], device, dtype) for t in tiles]
        runs = [r for part in mapper(_out_of_range, tiles, extra) for r in part]
    return tile_states(tiles, runs, segs, interpolation=interp)


def _executed(sim, tile, device):
    return executed_runs(sim, tile, device=device)


def _out_of_range(sim, tile, state, device, dtype):
    return out_of_range_runs(sim, tile, state, device=device, dtype=dtype)
