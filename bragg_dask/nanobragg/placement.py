"""A ``--vary`` dataset that places the detector per frame: each frame's geometry, resolved from the run's
flags as the C program resolves them (part of :mod:`bragg_dask.nanobragg`)."""

from __future__ import annotations

import copy

from bragg_dask.nanobragg.params import RawParams
from bragg_dask.nanobragg.resolve import _detector_size, _geometry
from bragg_dask.planning.vary import GEOMETRY_KEYS


def frame_geometries(variation, raw: RawParams) -> tuple:
    """Each frame's detector geometry where a ``--vary`` description draws its place (``distance_mm``,
    ``beam_x_mm``, ``beam_y_mm``): the run's flags with those values appended as ``-distance``, ``-Xbeam``,
    ``-Ybeam`` (which also set the beam pivot), resolved as the C program resolves them; () where nothing
    places it."""
    if not any(k in dict(variation.keys) for k in GEOMETRY_KEYS):
        return ()
    detsize_f, detsize_s, _, _ = _detector_size(raw)
    out = []
    for k in range(variation.frames):
        drawn, p = variation.draw(k), copy.deepcopy(raw)
        for key, attr in (("distance_mm", "distance"), ("beam_x_mm", "xbeam"), ("beam_y_mm", "ybeam")):
            if key in drawn:
                setattr(p, attr, drawn[key] / 1000.0)
                p.pivot = "beam"
        out.append(_geometry(p, detsize_f, detsize_s))
    return tuple(out)
