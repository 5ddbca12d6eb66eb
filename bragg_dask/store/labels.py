"""A dataset's labels read back (part of :mod:`bragg_dask.store`): a frame's record and drawn values, and its
rows of the reflection table (``refl_*``, the rows ``refl_offset[k]:refl_offset[k + 1]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np

from bragg_dask.store.chunks import opened

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


def frame_labels(path: str, k: int) -> dict:
    """Frame ``k``'s labels: ``reflections`` (``hkl``, ``panel``, ``xy_px``, ``d_A``, ``F``, ``photons``,
    ``active``: numpy arrays, one row per reflection; empty where the store has no table), its records
    (``orientation``, ``reciprocal_basis``, ``phi0_deg``, ``noise_seed``: where the store has them) and
    every drawn value (``vary``: key -> value)."""
    g = opened(path, "r")
    names = set(g.group.array_keys())
    out: dict = {"frame": k}
    for name in FRAME_FIELDS:
        if name in names:
            out[name] = np.asarray(cast("AnyArray", g[name])[k])
    out["vary"] = {
        n[len("vary_") :]: np.asarray(cast("AnyArray", g[n])[k]) for n in sorted(names) if n.startswith("vary_")
    }
    refl = {}
    if "refl_offset" in names:
        a, b = (int(x) for x in np.asarray(cast("AnyArray", g["refl_offset"])[k : k + 2]))
        refl = {field: np.asarray(cast("AnyArray", g[name])[a:b]) for name, field in REFLECTION_FIELDS.items()}
    out["reflections"] = refl
    return out
