"""Executors: what runs a simulation's tiles, behind one interface.

* :class:`Executor`: ``plan(sim, settings) -> TilePlan`` then ``run(sim, plan, settings) -> RunResult``.
* :class:`~bragg_dask.executors.serial.SerialExecutor`: in this process, tiles over threads (the oracle).
* :class:`~bragg_dask.executors.dask.DaskExecutor`: a ``distributed`` cluster (embedded or remote),
  streaming into a Zarr store when given one; datasets of many frames.
* :func:`executor_for` chooses between them and :func:`execute` runs one: the CLI and the Python
  API both go through these two functions.

This module imports neither dask nor distributed: the Dask executor loads only when chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bragg_dask.executors.base import Executor, RunResult
from bragg_dask.settings import RunSettings

__all__ = ["Executor", "RunResult", "execute", "executor_for"]

if TYPE_CHECKING:
    from bragg_dask.config import Simulation
    from bragg_dask.detector.model import DetectorModel
    from bragg_dask.nanobragg.params import OutputOptions
    from bragg_dask.planning.frames import DatasetSpec
    from bragg_dask.settings import ClusterOptions


def executor_for(
    *,
    store: str | None = None,
    client=None,
    cluster: ClusterOptions | None = None,
    overwrite: bool = False,
    dataset: DatasetSpec | None = None,
    outputs: OutputOptions | None = None,
    command: dict | None = None,
    detector: DetectorModel | None = None,
) -> Executor:
    """The serial executor for an in-process image; the Dask executor for a store, a client, a
    scheduler's address or a dataset of several frames (``command``: the command line, recorded in a
    store; ``detector``: the detector model applied to a store's frames once they are complete)."""
    remote = cluster is not None and cluster.remote
    if store is None and client is None and not remote and (dataset is None or dataset.n == 1):
        from bragg_dask.executors.serial import SerialExecutor

        return SerialExecutor(outputs=outputs)
    from bragg_dask.executors.dask import DaskExecutor

    return DaskExecutor(
        store=store,
        client=client,
        cluster=cluster,
        overwrite=overwrite,
        dataset=dataset,
        outputs=outputs,
        command=command,
        detector=detector,
    )


def execute(sim: Simulation, settings: RunSettings | None = None, executor: Executor | None = None) -> RunResult:
    """Run ``sim`` with ``settings`` on ``executor`` (default: in-process)."""
    settings = settings or RunSettings()
    if executor is None:
        from bragg_dask.executors.serial import SerialExecutor

        executor = SerialExecutor()
    return executor.run(sim, executor.plan(sim, settings), settings)
