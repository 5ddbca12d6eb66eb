"""Python API: run a simulation and get the image back (and optionally a Zarr store)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from bragg_dask.executors import execute, executor_for
from bragg_dask.planning.plan import plan_for
from bragg_dask.settings import RunSettings

if TYPE_CHECKING:
    from bragg_dask.config import Simulation
    from bragg_dask.executors import RunResult
    from bragg_dask.planning.frames import DatasetSpec
    from bragg_dask.settings import ClusterOptions


def simulate(
    sim: Simulation,
    *,
    store: str | None = None,
    client=None,
    settings: RunSettings | None = None,
    overwrite: bool = False,
    cluster_options: ClusterOptions | None = None,
    **choices,
) -> np.ndarray:
    """Float image ``(spixels, fpixels)`` float32 (photons/pixel) of ``sim`` (a detector of panels:
    ``(panel, spixels, fpixels)``, see :func:`bragg_dask.with_panels`).

    ``settings`` (:class:`bragg_dask.settings.RunSettings`), or its fields as keywords (``tile``,
    ``dtype`` as ``torch.float32`` or ``"float32"``, ``device``, ``parity``, ``c_threads``), say how.
    With ``store``, a ``distributed`` ``client`` or the address of a scheduler in ``cluster_options``
    (:class:`bragg_dask.settings.ClusterOptions`) the tiles run on Dask - on ``client`` if given, else on
    that scheduler, else on a local cluster - and stream into a Zarr v3 store where one is given;
    otherwise in-process.  The local cluster's workers are threads of this process unless
    ``cluster_options`` says otherwise, e.g. ``worker_processes=True``.
    """
    settings = RunSettings.of(settings, **choices)
    executor = executor_for(store=store, client=client, cluster=cluster_options, overwrite=overwrite)
    return execute(sim, settings, executor).image


def simulate_dataset(
    sim: Simulation,
    store: str,
    dataset: DatasetSpec,
    *,
    settings: RunSettings | None = None,
    client=None,
    cluster_options: ClusterOptions | None = None,
    overwrite: bool = False,
    **choices,
) -> RunResult:
    """A dataset of frames built on ``sim`` into the Zarr store ``store``: ``dataset`` is a
    :class:`bragg_dask.DatasetSpec` (``DatasetSpec("series", n)``: a rotation series from ``-phi`` by
    ``-osc``; ``DatasetSpec("orientations", n, orientation_seed=s)``: random crystal orientations).

    As the command line's ``--frames``/``--orientations``: every frame's float image, statistics and
    record in the store (read it with xarray or :class:`bragg_dask.store.StoreFrame`); an existing
    store of the same configuration resumes.  ``settings``/``choices``, ``client`` and
    ``cluster_options`` as for :func:`simulate`.  Returns the run's :class:`~bragg_dask.executors.RunResult`
    (``frame_stats``: every frame's statistics).
    """
    settings = RunSettings.of(settings, **choices)
    executor = executor_for(store=store, client=client, cluster=cluster_options, overwrite=overwrite, dataset=dataset)
    return execute(sim, settings, executor)


def vary_dataset(argv: list[str], description, *, cwd: str | None = None, labels: str = "table"):
    """``(sim, dataset)`` for :func:`simulate_dataset`: the run of the C program's flags ``argv`` and a
    dataset whose frames vary as ``description`` says (the ``--vary`` object as a dict, or the path of its
    JSON/YAML file; file names relative to ``cwd``), with its labels (``"table"``, ``"bragg"`` or
    ``"none"``, as ``--labels``).  The same checks as the command line's: a bad key, draw or run is a
    :class:`bragg_dask.errors.ConfigError` naming the key."""
    import dataclasses
    import os

    from bragg_dask.errors import ConfigError
    from bragg_dask.nanobragg.args import parse_nanobragg_args
    from bragg_dask.nanobragg.placement import vary_spec
    from bragg_dask.planning.vary import read_variation, variation_of

    if labels not in ("table", "bragg", "none"):
        raise ConfigError(f"labels: table, bragg or none, got {labels!r}", flag="--labels")
    parsed = parse_nanobragg_args(list(argv), cwd)
    folder = cwd or ""
    if isinstance(description, (str, os.PathLike)):
        variation = read_variation(os.path.join(folder, os.fspath(description)), folder=folder)
    else:
        variation = variation_of(description, folder=folder)
    return parsed.simulation, vary_spec(dataclasses.replace(variation, labels=labels), parsed)


def to_dask_array(sim: Simulation, *, settings: RunSettings | None = None, **choices):
    """A lazy ``dask.array`` ``(spixels, fpixels)`` float32 of the image (``(panel, spixels, fpixels)``
    for a detector of panels), one block per tile.

    Nothing is simulated until it is computed; each block runs the tile kernel.  In the c-parity
    mode the (cheap) pre-pass and scan of the carried state run now, so that every block is
    independent.  ``settings`` as for :func:`simulate`.
    """
    import dask
    import dask.array as da

    settings = RunSettings.of(settings, **choices)
    det = sim.detector
    plan = plan_for(det, settings.tile, settings.device)
    states = {}
    if settings.parity == "c":
        from bragg_dask.planning.states import compute_states

        states = compute_states(sim, plan, threads=settings.threads, device=settings.device, dtype=settings.torch_dtype)
    gs, gf = plan.grid
    name = "simulate-tile-" + sim.fingerprint()[:10]
    panels: dict = {}  # a detector of panels: each panel's blocks (a single panel: None's)
    for t in plan.tiles():
        blocks = panels.setdefault(t.panel, [[None] * gf for _ in range(gs)])
        d = dask.delayed(_tile_image, pure=True, name=f"{name}-{t.name}")(sim, t, states.get(t.index), settings)
        blocks[t.index[0]][t.index[1]] = da.from_delayed(d, shape=t.shape, dtype=np.float32)
    if None in panels:
        return da.block(panels[None])
    return da.stack([da.block(panels[k]) for k in sorted(panels)])


def _tile_image(sim: Simulation, tile, state, settings: RunSettings) -> np.ndarray:
    from bragg_dask.physics.kernel import simulate_tile

    return simulate_tile(
        sim,
        tile,
        state,
        parity=settings.parity,
        device=settings.device,
        dtype=settings.torch_dtype,
        backend=settings.backend_choice,
    ).image
