"""The Zarr v3 store of a run: one group, images chunked by tile, per-frame metadata and statistics.

Layout (docs/architecture.md section 7)::

    float        (frame, slow, fast) float32 photons/pixel, one chunk per tile
    int, noise   (frame, slow, fast) uint16, optional: the C program's int and noisy images
    tiles_done   (frame, tile_slow, tile_fast) bool, written by each tile's task after its chunk
    tile_stats   (frame, tile_slow, tile_fast, stat) float64 partial sums of each tile
    phi0_deg, orientation, noise_seed                    per-frame metadata
    max_I, max_slow, max_fast, mean, rms, rmsd, int_scale  per-frame statistics
    attrs        "bragg_dask": configuration (JSON), fingerprint, geometry, units, version, parity,
                 "complete" (false until the run has finished)

Every array has ``dimension_names``, so ``xarray.open_zarr(path)`` gives labelled arrays; nothing
from this package is needed to read a store.  All-zero chunks are legitimate data: completeness is
``tiles_done``, never the presence of a chunk.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import warnings

import numpy as np
import zarr

from .errors import ConfigError
from .plan import TilePlan, TileSpec

FORMAT_VERSION = 1
STAT_FIELDS = ("sum", "sumsq", "n", "max", "argmax_slow", "argmax_fast")
FRAME_STATS = ("max_I", "max_slow", "max_fast", "mean", "rms", "rmsd", "int_scale")


def _geometry_attrs(sim) -> dict:
    det, geo = sim.detector, sim.detector.geometry
    return {
        "convention": geo.convention,
        "pivot": geo.pivot,
        "fdet_vector": list(geo.fdet),
        "sdet_vector": list(geo.sdet),
        "odet_vector": list(geo.odet),
        "beam_vector": list(geo.beam),
        "pix0_vector_m": list(geo.pix0_m),
        "beam_center_fast_slow_m": [geo.fbeam_m, geo.sbeam_m],
        "distance_m": geo.distance_m,
        "close_distance_m": geo.close_distance_m,
        "pixel_size_m": det.pixel_size_m,
        "wavelength_m": sim.beam.wavelength_m,
    }


def run_fingerprint(sim, plan: TilePlan, run: dict) -> str:
    """Identity of what the store holds: configuration, tiling and run options (parity, dtype...)."""
    doc = {"sim": sim.fingerprint(), "tile_shape": list(plan.tile_shape), "run": run}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def store_attrs(sim, plan: TilePlan, run: dict) -> dict:
    from . import __version__

    return {
        "format_version": FORMAT_VERSION,
        "package": "bragg_dask",
        "package_version": __version__,
        "fingerprint": run_fingerprint(sim, plan, run),
        "run": run,
        "parity": run.get("parity", "spec"),
        "tile_shape": list(plan.tile_shape),
        "units": {"float": "photons per pixel", "int": "ADU", "noise": "ADU", "lengths": "m", "angles": "rad",
                  "wavelength": "m", "phi0_deg": "deg"},
        "geometry": _geometry_attrs(sim),
        "config": json.loads(json.dumps(sim.to_dict(), default=str)),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "complete": False,
    }


def open_or_create(path: str, sim, plan: TilePlan, *, run: dict | None = None, n_frames: int = 1,
                   with_int: bool = False, with_noise: bool = False,
                   overwrite: bool = False) -> tuple[zarr.Group, bool]:
    """Open the store for resuming, or create it.  Returns ``(group, resumed)``.

    A store written with another configuration is refused unless ``overwrite``; then it is replaced.
    """
    run = dict(run or {})
    attrs = store_attrs(sim, plan, run)
    if os.path.exists(path):
        existing = _existing_attrs(path)
        if existing is not None and existing.get("fingerprint") == attrs["fingerprint"] and not overwrite:
            return zarr.open_group(path, mode="r+"), True
        if not overwrite:
            why = "another configuration" if existing is not None else "content that is not a bragg_dask store"
            raise ConfigError(f"{path} exists with {why}; pass --overwrite to replace it", flag="--zarr")
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    g = zarr.open_group(path, mode="w", zarr_format=3)
    gs, gf = plan.grid
    ts, tf = plan.tile_shape
    img = dict(shape=(n_frames, plan.spixels, plan.fpixels), chunks=(1, ts, tf),
               dimension_names=("frame", "slow", "fast"))
    g.create_array("float", dtype="float32", fill_value=0.0, **img)
    if with_int:
        g.create_array("int", dtype="uint16", fill_value=0, **img)
    if with_noise:
        g.create_array("noise", dtype="uint16", fill_value=0, **img)
    g.create_array("tiles_done", shape=(n_frames, gs, gf), chunks=(1, 1, 1), dtype="bool", fill_value=False,
                   dimension_names=("frame", "tile_slow", "tile_fast"))
    g.create_array("tile_stats", shape=(n_frames, gs, gf, len(STAT_FIELDS)), chunks=(1, 1, 1, len(STAT_FIELDS)),
                   dtype="float64", fill_value=0.0, dimension_names=("frame", "tile_slow", "tile_fast", "stat"))
    per_frame = dict(chunks=(n_frames,), dimension_names=("frame",))
    g.create_array("phi0_deg", shape=(n_frames,), dtype="float64", fill_value=0.0, **per_frame)
    g.create_array("noise_seed", shape=(n_frames,), dtype="int64", fill_value=-1, **per_frame)
    g.create_array("orientation", shape=(n_frames, 3, 3), chunks=(n_frames, 3, 3), dtype="float64",
                   fill_value=0.0, dimension_names=("frame", "row", "col"))
    for name in FRAME_STATS:
        g.create_array(name, shape=(n_frames,), dtype="float64", fill_value=float("nan"), **per_frame)
    g.attrs["bragg_dask"] = attrs
    consolidate(path)
    return zarr.open_group(path, mode="r+"), False


def _existing_attrs(path: str) -> dict | None:
    try:
        g = zarr.open_group(path, mode="r")
    except Exception:  # noqa: BLE001 - anything unreadable counts as "not ours"
        return None
    return dict(g.attrs).get("bragg_dask")


def consolidate(path: str) -> None:
    """Consolidate metadata so ``xarray.open_zarr`` opens the store in one read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr flags v3 consolidated metadata as not yet in the spec
        zarr.consolidate_metadata(path)


def stats_row(stats: dict) -> np.ndarray:
    """A tile's partial statistics as the ``tile_stats`` row (argmax -1 when nothing rendered)."""
    am = stats["argmax"] if stats["argmax"] is not None else (-1, -1)
    return np.array([stats["sum"], stats["sumsq"], stats["n"], stats["max"], am[0], am[1]], dtype=np.float64)


def stats_from_row(row: np.ndarray) -> dict:
    am = None if row[4] < 0 else (int(row[4]), int(row[5]))
    return {"sum": float(row[0]), "sumsq": float(row[1]), "n": int(row[2]), "max": float(row[3]), "argmax": am}


def write_tile(path: str, frame: int, tile: TileSpec, image: np.ndarray, stats: dict) -> None:
    """Write one tile's chunk and statistics, then mark it done (a crash in between redoes the tile)."""
    g = zarr.open_group(path, mode="r+")
    g["float"][frame, tile.s0 : tile.s1, tile.f0 : tile.f1] = image
    g["tile_stats"][frame, tile.index[0], tile.index[1]] = stats_row(stats)
    g["tiles_done"][frame, tile.index[0], tile.index[1]] = True


def write_frame_metadata(g: zarr.Group, frames) -> None:
    n = len(frames)
    g["phi0_deg"][:] = np.degrees([f.phi0_rad for f in frames])
    g["orientation"][:] = np.asarray([f.orientation for f in frames], dtype=np.float64).reshape(n, 3, 3)
    g["noise_seed"][:] = np.array([-1 if f.noise_seed is None else f.noise_seed for f in frames], dtype=np.int64)


def write_frame_stats(g: zarr.Group, frame: int, stats, int_scale: float) -> None:
    pos = stats.max_pos if stats.max_pos is not None else (-1, -1)
    for name, v in zip(FRAME_STATS, (stats.max_I, pos[0], pos[1], stats.mean, stats.rms, stats.rmsd, int_scale)):
        g[name][frame] = v


def mark_complete(path: str) -> None:
    g = zarr.open_group(path, mode="r+")
    attrs = dict(g.attrs["bragg_dask"])
    attrs["complete"] = True
    attrs["completed"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
    g.attrs["bragg_dask"] = attrs
    consolidate(path)


def tiles_done(path: str) -> np.ndarray:
    return np.asarray(zarr.open_group(path, mode="r")["tiles_done"][...])


def read_frame(path: str, frame: int = 0, array: str = "float") -> np.ndarray:
    return np.asarray(zarr.open_group(path, mode="r")[array][frame])
