"""What every executor shares: the result of a run and the interface (see :mod:`bragg_dask.executors`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from bragg_dask.config import Simulation
    from bragg_dask.nanobragg.stats import ImageStats
    from bragg_dask.planning.plan import TilePlan
    from bragg_dask.settings import RunSettings


@dataclass(frozen=True)
class RunResult:
    """A finished run: every frame's statistics, how many tiles this run computed of how many, and
    frame 0 (``array`` in memory, or in the ``store``).

    ``array``: ``(spixels, fpixels)`` float32, photons/pixel, or None when the frame is in the store.
    """

    stats: ImageStats
    frame_stats: tuple
    computed: int
    total: int
    array: np.ndarray | None = None
    store: str | None = None

    @property
    def image(self) -> np.ndarray:
        """Frame 0 in memory (read from the store on demand)."""
        return self.array if self.array is not None else np.asarray(self.source)

    @property
    def source(self):
        """Frame 0 for the file writers: the array, or a store frame read by bands."""
        if self.array is not None:
            return self.array
        from bragg_dask.store import StoreFrame

        return StoreFrame(self.store, 0)


class Executor(Protocol):
    """Runs the tiles of a plan (the serial and the Dask executors)."""

    def plan(self, sim: Simulation, settings: RunSettings) -> TilePlan:
        """The tiles this executor will run ``sim`` in."""

    def run(self, sim: Simulation, plan: TilePlan, settings: RunSettings) -> RunResult:
        """Simulate every tile of ``plan`` (those a resumed store lacks) and reduce the statistics."""
