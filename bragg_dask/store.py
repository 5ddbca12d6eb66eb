"""The Zarr v3 store of a run: one group, the float image chunked by tile, and its metadata.

Layout (see docs/architecture.md section 7)::

    float       (frame, slow, fast) float32, one chunk per tile, dimension_names set
    tiles_done  (frame, tile_slow, tile_fast) bool, one chunk per tile (written by that tile's task)
    attrs       bragg_dask: configuration (JSON), fingerprint, geometry, units, version, parity

Everything is readable with plain ``zarr`` / ``xarray``; nothing here is needed to open a store.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil

import numpy as np
import zarr

from .errors import ConfigError
from .plan import TilePlan, TileSpec

FORMAT_VERSION = 1


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


def store_attrs(sim, plan: TilePlan, *, parity: str = "spec", dtype: str = "float64", extra: dict | None = None) -> dict:
    from . import __version__

    attrs = {
        "format_version": FORMAT_VERSION,
        "package": "bragg_dask",
        "package_version": __version__,
        "fingerprint": sim.fingerprint(),
        "parity": parity,
        "compute_dtype": dtype,
        "tile_shape": list(plan.tile_shape),
        "units": {"float": "photons per pixel", "lengths": "m", "angles": "rad", "wavelength": "m"},
        "geometry": _geometry_attrs(sim),
        "config": json.loads(json.dumps(sim.to_dict(), default=str)),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
    }
    if extra:
        attrs.update(extra)
    return {"bragg_dask": attrs}


def open_or_create(
    path: str, sim, plan: TilePlan, *, n_frames: int = 1, overwrite: bool = False, parity: str = "spec",
    dtype: str = "float64",
) -> zarr.Group:
    """Open the store for (re)use or create it; a store of another configuration is refused."""
    attrs = store_attrs(sim, plan, parity=parity, dtype=dtype)
    if os.path.exists(path):
        existing = _existing_attrs(path)
        same = existing is not None and existing.get("fingerprint") == attrs["bragg_dask"]["fingerprint"] and \
            existing.get("tile_shape") == list(plan.tile_shape) and existing.get("parity") == parity
        if same and not overwrite:
            return zarr.open_group(path, mode="r+")
        if not overwrite:
            why = "another configuration" if existing is not None else "no bragg_dask metadata"
            raise ConfigError(f"{path} exists with {why}; pass --overwrite to replace it", flag="--zarr")
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    g = zarr.open_group(path, mode="w", zarr_format=3)
    gs, gf = plan.grid
    ts, tf = plan.tile_shape
    g.create_array("float", shape=(n_frames, plan.spixels, plan.fpixels), chunks=(1, ts, tf), dtype="float32",
                   fill_value=0.0, dimension_names=("frame", "slow", "fast"))
    g.create_array("tiles_done", shape=(n_frames, gs, gf), chunks=(1, 1, 1), dtype="bool", fill_value=False,
                   dimension_names=("frame", "tile_slow", "tile_fast"))
    g.attrs.update(attrs)
    consolidate(path)
    return zarr.open_group(path, mode="r+")


def _existing_attrs(path: str) -> dict | None:
    try:
        g = zarr.open_group(path, mode="r")
    except Exception:  # noqa: BLE001 - anything unreadable counts as "not ours"
        return None
    return dict(g.attrs).get("bragg_dask")


def write_tile(path: str, frame: int, tile: TileSpec, image: np.ndarray) -> None:
    """Write one tile's chunk, then mark it done (so a crash between the two redoes the tile)."""
    g = zarr.open_group(path, mode="r+")
    g["float"][frame, tile.s0 : tile.s1, tile.f0 : tile.f1] = image
    g["tiles_done"][frame, tile.index[0], tile.index[1]] = True


def consolidate(path: str) -> None:
    """Consolidate metadata so ``xarray.open_zarr`` opens the store in one read."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr flags v3 consolidated metadata as not yet in the spec
        zarr.consolidate_metadata(path)


def tiles_done(path: str) -> np.ndarray:
    return np.asarray(zarr.open_group(path, mode="r")["tiles_done"][...])


def read_frame(path: str, frame: int = 0) -> np.ndarray:
    return np.asarray(zarr.open_group(path, mode="r")["float"][frame])


def n_chunks(plan: TilePlan) -> int:
    return math.prod(plan.grid)
