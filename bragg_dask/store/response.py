"""The detector model's record in a store (``bragg-dask noisify STORE``, a run's ``--psf ...``): which frames
its int and noise images hold, and every record of those frames kept with them.

Part of :mod:`bragg_dask.store` (which re-exports these).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import zarr

from bragg_dask.store.chunks import writable
from bragg_dask.store.layout import LABELS, consolidate
from bragg_dask.store.names import INT, NOISE

if TYPE_CHECKING:
    from zarr.types import AnyArray

#: the image arrays' description while some of their frames are the detector model's
MODEL_LABEL = {
    INT: "integer image, ADU: the frames listed in the store's response record went through the detector "
    "model (noisify: PSF, gain, ADC offset; int_scale = its scale x gain), the others are photons x "
    "int_scale + ADC offset (the -intfile image)",
    NOISE: "integer image with noise, ADU: the frames listed in the store's response record are the "
    "detector model's noisy image (noise_seed: its seed), the others Poisson noise (the -noisefile "
    "image)",
}


def record_response(path: str, response: dict) -> None:
    """Record the detector model that made the store's int and noise images (``response`` in the
    ``bragg_dask`` attribute: per frame, the noisify flags' values, the seed, the arrays), and keep every
    record of those frames with it (:func:`sync_response`)."""
    g = zarr.open_group(path, mode="r+")
    meta = dict(cast("dict[str, Any]", g.attrs["bragg_dask"]))
    meta["response"] = json.loads(json.dumps(response, default=str))
    g.attrs["bragg_dask"] = meta
    sync_response(path)


def drop_response(path: str, frames) -> None:
    """Frames whose int and noise images the simulation has just written again: the detector model no
    longer describes them (their response entries removed, their records the simulation's)."""
    meta = dict(cast("dict[str, Any]", zarr.open_group(path, mode="r").attrs["bragg_dask"]))
    done = dict((meta.get("response") or {}).get("frames") or {})
    if not any(str(k) in done for k in frames):
        return
    for k in frames:
        done.pop(str(k), None)
    record_response(path, {"frames": done} if done else {})


def sync_response(path: str) -> None:
    """The records of the frames the detector model made, as the response record says: ``int_scale``
    (the model's -scale x -gain), ``noise_seed`` (its seed, -1 without noise), and the image arrays'
    descriptions (:data:`MODEL_LABEL` while any frame is the model's, else the simulation's)."""
    g = zarr.open_group(path, mode="r+")
    frames = ((dict(cast("dict[str, Any]", g.attrs["bragg_dask"])).get("response") or {}).get("frames")) or {}
    changed = bool(frames)
    if frames:  # the per-frame arrays are small: read whole, changed, written whole
        scales = np.asarray(cast("AnyArray", g["int_scale"])[...])
        seeds = np.asarray(cast("AnyArray", g["noise_seed"])[...])
        for key, entry in frames.items():
            model = entry.get("model") or {}
            scales[int(key)] = float(model.get("scale", 1.0)) * float(model.get("gain", 1.0))
            seeds[int(key)] = -1 if entry.get("noise_seed") is None else int(entry["noise_seed"])
        writable(g["int_scale"])[...] = scales
        writable(g["noise_seed"])[...] = seeds
    for name in (INT, NOISE):
        if name in g:
            want = MODEL_LABEL[name] if frames else LABELS[name][1]
            if g[name].attrs.get("long_name") != want:
                g[name].attrs["long_name"] = want
                changed = True
    if changed:
        consolidate(path)
