"""Planning: split a detector into tiles aligned with Zarr chunks (pure arithmetic, no I/O).

Tiles are listed in raster order (row of tiles by row of tiles), which is also the order in which
the C program visits their pixels row by row *within* the tile; the carry-over scan relies on it.
A tile is a :class:`~.physics.tiles.TileSpec` (the physics' own type, exported here too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bragg_dask.errors import ConfigError
from bragg_dask.physics.tiles import TileSpec

__all__ = ["DEFAULT_TILE", "DEFAULT_TILE_GPU", "TilePlan", "TileSpec", "default_tile", "plan_for", "plan_tiles"]


@dataclass(frozen=True)
class TilePlan:
    """The tiling of a ``(spixels, fpixels)`` detector with square-ish ``tile_shape`` tiles; of each of
    ``panels`` panels of that shape (0: a single-panel detector, its tiles' ``panel`` None)."""

    spixels: int
    fpixels: int
    tile_shape: tuple[int, int]
    panels: int = 0

    @property
    def grid(self) -> tuple[int, int]:
        """Number of tiles along (slow, fast) (of each panel)."""
        return (math.ceil(self.spixels / self.tile_shape[0]), math.ceil(self.fpixels / self.tile_shape[1]))

    @property
    def chunk_grid(self) -> tuple[int, ...]:
        """Tiles of a frame as a store's ``tiles_done`` holds them: ``grid``, or ``(panels, *grid)``."""
        return (self.panels, *self.grid) if self.panels else self.grid

    def tiles(self) -> list[TileSpec]:
        ts, tf = self.tile_shape
        gs, gf = self.grid
        return [
            TileSpec(i * ts, min((i + 1) * ts, self.spixels), j * tf, min((j + 1) * tf, self.fpixels), (i, j), p)
            for p in (range(self.panels) if self.panels else (None,))
            for i in range(gs)
            for j in range(gf)
        ]


#: default tile side (one Zarr chunk per tile): on CPU small tiles spread over the cores; a GPU wants
#: each tile to fill the card (see benchmarks/gpu_kernel.py)
DEFAULT_TILE = 256
DEFAULT_TILE_GPU = 2048


def default_tile(device: str = "cpu") -> int:
    """The default tile side for tiles computed on ``device`` (``cpu``, ``cuda``, ``cuda:1``...)."""
    return DEFAULT_TILE if str(device).split(":")[0] == "cpu" else DEFAULT_TILE_GPU


def plan_tiles(
    spixels: int, fpixels: int, tile: int | tuple[int, int] | None = None, device: str = "cpu", panels: int = 0
) -> TilePlan:
    """Tile plan for a detector (of ``panels`` panels of ``spixels x fpixels``: tiles within each);
    ``tile`` is the side (or ``(slow, fast)``), clamped to the detector (a panel).

    ``None`` picks :func:`default_tile` for ``device`` (one Zarr chunk per tile).
    """
    if tile is None:
        tile = default_tile(device)
    ts, tf = (tile, tile) if isinstance(tile, int) else tile
    if int(ts) < 1 or int(tf) < 1:
        raise ConfigError(f"tile size must be >= 1, got {tile!r}", flag="--tile", field="tile")
    shape = (min(int(ts), int(spixels)), min(int(tf), int(fpixels)))
    return TilePlan(int(spixels), int(fpixels), shape, int(panels))


#: a detector of panels' default tile: a whole panel up to this many pixels (a module of a PILATUS, EIGER or
#: JUNGFRAU: one chunk, one task's worth), else the panel cut evenly into tiles of about the default side
PANEL_TILE_PIXELS = 1 << 20


def plan_for(det, tile: int | tuple[int, int] | None = None, device: str = "cpu") -> TilePlan:
    """:func:`plan_tiles` for the detector ``det`` (a :class:`~bragg_dask.config.Detector`; of panels:
    tiles within each, by default a whole panel or even parts of one: :data:`PANEL_TILE_PIXELS`).

    A whole EIGER2 module per tile ran a dataset of 16M frames 2.0x as fast as tiles of 256 (their last
    column 4 pixels wide, ten chunk files per module instead of one; ``benchmarks/panels_eiger2.py``)."""
    if tile is None and det.panels:
        s, f, side = det.spixels, det.fpixels, default_tile(device)
        if s * f <= PANEL_TILE_PIXELS:
            tile = (s, f)
        else:
            tile = (-(-s // -(-s // side)), -(-f // -(-f // side)))  # ceil(s / ceil(s / side))
    return plan_tiles(det.spixels, det.fpixels, tile, device, len(det.panels))
