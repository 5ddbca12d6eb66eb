"""Reading a store: which arrays it holds, each frame's record, a frame by bands, the metadata (part of
:mod:`bragg_dask.store`, which re-exports these)."""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import zarr

from bragg_dask.errors import ConfigError
from bragg_dask.planning.plan import TilePlan, TileSpec
from bragg_dask.store.chunks import opened
from bragg_dask.store.integrity import DamagedChunk, check_metadata, damage_error, looks_like_store
from bragg_dask.store.names import BRAGG, FLOAT, INT, NOISE

if TYPE_CHECKING:
    from zarr.types import AnyArray


def image_arrays(path: str) -> set[str]:
    """Which image arrays (:data:`FLOAT`, :data:`INT`, :data:`NOISE`, :data:`BRAGG`) the store holds."""
    return set(opened(path, "r").group.array_keys()) & {FLOAT, INT, NOISE, BRAGG}


def tile_stats_rows(path: str) -> np.ndarray:
    """``(frames, tiles_slow, tiles_fast, len(STAT_FIELDS))`` float64: every tile's partial statistics
    (:func:`stats_from_row` reads one)."""
    return np.asarray(opened(path, "r")["tile_stats"][...])


@dataclasses.dataclass(frozen=True)
class FrameRecord:
    """What a store records of one frame: its run's configuration (``config``, as ``Simulation.to_dict``),
    whether every tile is done, phi0 (deg), the int scale, the rmsd (photons) and the noise seed
    (None: none recorded)."""

    config: dict
    n_frames: int
    complete: bool
    phi0_deg: float
    int_scale: float
    rmsd: float
    noise_seed: int | None


def frame_record(path: str, frame: int, flag: str = "export", check: bool = True) -> FrameRecord:
    """The record of ``frame`` of the store at ``path`` (a bad path or frame: a one-line error naming it).
    ``check``: the store's records and the frame's tile records checked first (:func:`.verify.check_frames`:
    damage is one line naming the file, never a traceback nor a wrong value)."""
    from bragg_dask.errors import UsageError
    from bragg_dask.store.verify import check_frames

    if not os.path.exists(path):
        raise UsageError(f"no store at {path}", flag=flag)
    if looks_like_store(path):  # damaged metadata: one line naming the file, never a traceback
        check_metadata(path, flag)
    try:
        g = zarr.open_group(path, mode="r")
        meta = cast("dict[str, Any]", dict(g.attrs)["bragg_dask"])
    except Exception:  # noqa: BLE001 - any unreadable store is reported the same way
        raise ConfigError(f"{path} is not a bragg_dask store", flag=flag) from None
    n_frames = cast("AnyArray", g[FLOAT]).shape[0]
    if not 0 <= frame < n_frames:
        raise UsageError(f"frame {frame} not in store (0..{n_frames - 1})", flag="--frame")
    if check:
        check_frames(path, [frame], (), flag)
    seed = int(_element(g, "noise_seed", frame))
    complete = bool(np.asarray(cast("AnyArray", g["tiles_done"])[frame]).all())
    return FrameRecord(
        config=meta["config"],
        n_frames=n_frames,
        complete=complete,
        phi0_deg=float(_element(g, "phi0_deg", frame)),
        int_scale=float(_element(g, "int_scale", frame)),
        rmsd=float(_element(g, "rmsd", frame)),
        noise_seed=seed if seed >= 0 else None,
    )


def _element(g: zarr.Group, name: str, frame: int) -> np.generic:
    """Element ``frame`` of the store's per-frame array ``name``: a numpy scalar (zarr types an element
    read as any of its selections' results)."""
    return cast("np.generic", cast("AnyArray", g[name])[frame])


def frame_count(path: str) -> int:
    """How many frames the store holds (from its metadata: no chunk read)."""
    return int(opened(path, "r")[FLOAT].shape[0])


def frame_shape(path: str) -> tuple[int, ...]:
    """A frame's shape: ``(slow, fast)``, or ``(panel, slow, fast)`` in a store of panels (no chunk read)."""
    return tuple(int(n) for n in opened(path, "r")[FLOAT].shape[1:])


def tiles_done(path: str) -> np.ndarray:
    return np.asarray(opened(path, "r")["tiles_done"][...])


def read_frame(path: str, frame: int = 0, array: str = "float", out: np.ndarray | None = None) -> np.ndarray:
    """A whole frame in memory (for small detectors; writers use :class:`StoreFrame`), every chunk checked
    as it is read.  ``out``: an array of the frame's shape to read it into (any dtype its values fit; a
    dataset's frame of one shard file: decoded straight into it, the file read once)."""
    g = opened(path, "r")
    if array in g and g.sharded(array) and g[array].ndim == 3 and 0 <= frame < g[array].shape[0]:
        shape = tuple(g[array].shape[1:])
        if out is None:
            out = np.empty(shape, dtype=np.dtype(g[array].dtype).newbyteorder("="))
        elif out.shape != shape:
            raise ValueError(f"out of shape {out.shape}, not the frame's {shape}")
        try:
            return g.read_shard(array, frame, out)
        except DamagedChunk as exc:
            raise damage_error(path, "store", frame, None, exc.file, exc.why) from None
    img = _whole(StoreFrame(path, frame), array)
    if out is None:
        return img
    out[...] = img
    return out


def _whole(frame: StoreFrame, array: str) -> np.ndarray:
    return np.concatenate([band for _, _, band in frame.bands(array)]).reshape(frame.shape)


class StoreFrame:
    """One frame of a store, read a band of tile rows at a time (never the whole frame).

    Its image arrays are named by :attr:`FLOAT`, :attr:`INT` and :attr:`NOISE` (:meth:`has`, :meth:`bands`).
    A store of a detector of panels: the frame is ``(panel, slow, fast)`` (``panels`` of them), its bands
    the panels' one after the other (rows counted through the panels stacked in order); ``panel=k``: that
    panel's alone, ``(slow, fast)``.
    """

    FLOAT, INT, NOISE = FLOAT, INT, NOISE

    def __init__(self, path: str, frame: int = 0, flag: str | None = None, panel: int | None = None) -> None:
        self.path, self.frame, self.flag = path, frame, flag
        g = opened(path, "r")
        a = g["float"]
        self.panels = int(a.shape[1]) if a.ndim == 4 else 0
        if panel is not None and not 0 <= panel < self.panels:
            raise ValueError(f"no panel {panel} in a store of {self.panels} panels")
        self.panel = panel
        self.shape = tuple(a.shape[1:]) if panel is None else tuple(a.shape[2:])
        self.tile_shape = tuple(a.chunks[-2:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr on the lock file beside the arrays
            self.arrays = set(g.group.array_keys())
        self.meta = dict(cast("dict[str, Any]", g.group.attrs.get("bragg_dask") or {}))
        self._opened = g

    def has(self, array: str) -> bool:
        """Whether the frame holds an image in ``array`` (the store has the array, and the run or the
        detector model wrote this frame's: :func:`.verify.image_written`)."""
        from bragg_dask.store.verify import image_written

        return array in self.arrays and image_written(self.meta, array, self.frame)

    def bands(self, array: str = FLOAT):
        """``(s0, s1, band)`` for each row of tiles, top to bottom; ``band`` is ``(s1 - s0, fpixels)``.  Every
        chunk is checked as it is read: a damaged one is a one-line error naming the frame, tile and file."""
        g = opened(self.path, "r")
        ts = self.tile_shape[0]
        rows = self.shape[-2]
        panels: list[int | None] = (
            [None] if not self.panels else [self.panel] if self.panel is not None else list(range(self.panels))
        )
        for p in panels:
            offset = rows * p if p is not None and self.panel is None else 0
            for s0 in range(0, rows, ts):
                s1 = min(s0 + ts, rows)
                try:
                    band = g.read_band(array, self.frame, s0, s1, p)
                except DamagedChunk as exc:
                    raise damage_error(self.path, self.flag or "store", self.frame, None, exc.file, exc.why) from None
                yield offset + s0, offset + s1, band
                del band  # no second band alive while the next is read: a band at a time is the budget

    def __array__(self, dtype=None, copy=None):
        img = _whole(self, FLOAT)  # every chunk checked as it is read
        return img if dtype is None else img.astype(dtype)


def store_metadata(path: str) -> dict:
    """The store's ``bragg_dask`` attribute: ``config``, ``geometry``, ``units``, ``created``/``completed``..."""
    return dict(cast("dict[str, Any]", dict(zarr.open_group(path, mode="r").attrs)["bragg_dask"]))


def frames_phi0_deg(path: str) -> np.ndarray:
    """``(frames,)`` float64: every frame's phi0 (degrees), as recorded by the run."""
    return np.asarray(cast("AnyArray", zarr.open_group(path, mode="r")["phi0_deg"])[...], dtype=np.float64)


def frame_tiles(path: str) -> list[TileSpec]:
    """The tiles (chunks) of a frame of the store's image arrays, in raster order."""
    a = opened(path, "r")[FLOAT]
    tile_shape = cast("tuple[int, int]", tuple(int(c) for c in a.chunks[-2:]))
    panels = int(a.shape[1]) if a.ndim == 4 else 0  # (frame, panel, slow, fast): tiles within each panel
    return TilePlan(int(a.shape[-2]), int(a.shape[-1]), tile_shape, panels).tiles()
