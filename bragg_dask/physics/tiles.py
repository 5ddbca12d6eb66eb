"""Tiles and the C program's carried state entering them: the types the physics shares with the scan.

A tile is a rectangle of detector pixels (:class:`TileSpec`).  In the c-parity mode the C
program's order-dependent state (nanobragg-spec section 8) enters each row of a tile from the
pixels before it: the pre-pass (:mod:`.prepass`) summarises every run (one row of one tile) as a
:class:`RunSummary`; the carry-over scan (``bragg_dask.planning.carryover``) turns the summaries into the
state entering every row (:class:`RowState`, gathered per tile in :class:`TileState`); the kernel
applies it.  This module only defines the records: no physics, no scan.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class TileSpec:
    """One tile: ``[s0, s1) x [f0, f1)`` pixels (slow, fast), index ``(tile_slow, tile_fast)``; on a
    detector of panels, of panel ``panel`` (its pixels counted within the panel: a tile never crosses
    one), else ``panel`` None."""

    s0: int
    s1: int
    f0: int
    f1: int
    index: tuple[int, int] = (0, 0)
    panel: int | None = None

    @property
    def region(self) -> tuple:
        """The tile's pixels in the detector's image: ``image[tile.region]`` (a panel's image is
        ``image[panel]``)."""
        window = (slice(self.s0, self.s1), slice(self.f0, self.f1))
        return window if self.panel is None else (self.panel, *window)

    @property
    def chunk(self) -> tuple[int, ...]:
        """The tile's chunk of a frame in a store's image arrays: ``index``, or ``(panel, *index)``."""
        return self.index if self.panel is None else (self.panel, *self.index)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.s1 - self.s0, self.f1 - self.f0)

    @property
    def n_pixels(self) -> int:
        return (self.s1 - self.s0) * (self.f1 - self.f0)

    @property
    def name(self) -> str:
        tile = f"tile-s{self.index[0]:04d}-f{self.index[1]:04d}"
        return tile if self.panel is None else f"panel{self.panel:03d}-{tile}"


class InterpState(enum.IntEnum):
    """The tricubic-interpolation switch entering a run (or a pixel).  The integer values are what
    the kernel's per-pixel tensors hold."""

    OFF = 0  # interpolation was switched off before the run
    ON = 1  # every evaluation of the run may be tricubic (all are in range)
    CUT = 2  # the switch happens inside the run, at RowState.cut


@dataclass(frozen=True)
class RunSummary:
    """What one run does to the state: its first executed pixel and first out-of-range evaluation.

    ``first_executed``: column of the first executed pixel, or -1.  ``first_oor``: ``(column,
    evaluation index in C loop order within that pixel)`` of the first out-of-range evaluation,
    or ``None``.
    """

    row: int
    f0: int
    first_executed: int = -1
    first_oor: tuple[int, int] | None = None


@dataclass(frozen=True)
class RowState:
    """The state entering one run, reduced to what the kernel needs.

    ``fresh_col``: column of the pixel whose first evaluation sees the unrotated cell (the first
    executed pixel of its segment), or -1.  ``interp``: the interpolation switch, with
    ``cut = (column, evaluation index)`` for :attr:`InterpState.CUT`.
    """

    fresh_col: int = -1
    interp: InterpState = InterpState.ON
    cut: tuple[int, int] | None = None


@dataclass(frozen=True)
class TileState:
    """The state entering every row of a tile, top to bottom."""

    rows: tuple[RowState, ...]

    @classmethod
    def neutral(cls, tile: TileSpec) -> TileState:
        """Nothing carried into any row of ``tile`` (no special first pixel, interpolation on)."""
        return cls(tuple(RowState() for _ in range(tile.s0, tile.s1)))
