"""A dataset's labels read back (part of :mod:`bragg_dask.store`): a frame's record and drawn values, and its
rows of the reflection table (``refl_*``, the rows ``refl_offset[k]:refl_offset[k + 1]``)."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, cast

import numpy as np

from bragg_dask.store.chunks import opened
from bragg_dask.store.integrity import DamagedChunk, damage_error

if TYPE_CHECKING:
    from zarr.types import AnyArray

#: the reflection table's arrays and the names :func:`frame_labels` gives their rows
REFLECTION_FIELDS = {
    "refl_hkl": "hkl",
    "refl_panel": "panel",
    "refl_xy_px": "xy_px",
    "refl_d_A": "d_A",
    "refl_F": "F",
    "refl_photons": "photons",
    "refl_active": "active",
}
#: a frame's own records (besides its drawn ``vary_*`` values)
FRAME_FIELDS = ("orientation", "reciprocal_basis", "phi0_deg", "noise_seed")


def _per_frame(path: str) -> dict:
    """The store's per-frame label arrays whole (small: a few numbers a frame) and ``refl_offset``, read once
    per process and store state (the group's ``zarr.json`` identity, as :func:`.chunks.opened`)."""
    st = os.stat(os.path.join(path, "zarr.json"))
    return _per_frame_cached(os.path.abspath(path), st.st_ino, st.st_mtime_ns, os.getpid())


@functools.lru_cache(maxsize=8)
def _per_frame_cached(path: str, *_identity) -> dict:
    g = opened(path, "r")
    wanted = [n for n in g.group.array_keys() if n in FRAME_FIELDS or n.startswith("vary_") or n == "refl_offset"]
    return {n: np.asarray(cast("AnyArray", g[n])[...]) for n in wanted}


def frame_labels(path: str, k: int) -> dict:
    """Frame ``k``'s labels: ``reflections`` (``hkl``, ``panel``, ``xy_px``, ``d_A``, ``F``, ``photons``,
    ``active``: numpy arrays, one row per reflection; empty where the store has no table), its records
    (``orientation``, ``reciprocal_basis``, ``phi0_deg``, ``noise_seed``: where the store has them) and
    every drawn value (``vary``: key -> value)."""
    whole = _per_frame(path)
    out: dict = {"frame": k}
    for name in FRAME_FIELDS:
        if name in whole:
            out[name] = whole[name][k]
    out["vary"] = {n[len("vary_") :]: whole[n][k] for n in sorted(whole) if n.startswith("vary_")}
    refl = {}
    if "refl_offset" in whole:
        a, b = (int(x) for x in whole["refl_offset"][k : k + 2])
        try:
            refl = {field: _rows(path, name, a, b) for name, field in REFLECTION_FIELDS.items()}
        except DamagedChunk as exc:
            raise damage_error(path, "store", k, None, exc.file, exc.why) from None
    out["reflections"] = refl
    return out


def _rows(path: str, name: str, a: int, b: int) -> np.ndarray:
    """Rows ``a:b`` of the table's array ``name``: from its chunks read straight from their files (checked;
    the last one read kept, so that a reader of consecutive frames decodes each chunk once), or through
    zarr for an array of another layout."""
    g = opened(path, "r")
    arr = cast("AnyArray", g[name])
    if not g.direct(name) or b <= a:
        return np.asarray(arr[a:b])
    n = int(arr.chunks[0])
    st = os.stat(os.path.join(path, "zarr.json"))
    key = (os.path.abspath(path), st.st_ino, st.st_mtime_ns, os.getpid(), name)
    parts = [_chunk(key, c)[max(a - c * n, 0) : b - c * n] for c in range(a // n, (b - 1) // n + 1)]
    return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)


@functools.lru_cache(maxsize=2 * len(REFLECTION_FIELDS))  # a frame's rows may span two chunks
def _chunk(key: tuple, c: int) -> np.ndarray:
    path, name = key[0], key[-1]
    g = opened(path, "r")
    return g.get_chunk(name, (c,) + (0,) * (g[name].ndim - 1))
