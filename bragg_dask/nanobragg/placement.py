"""A ``--vary`` dataset that places the detector or changes the cell per frame: each frame's geometry, and
what its cell is resolved from, taken from the run's flags as the C program resolves them (part of
:mod:`bragg_dask.nanobragg`)."""

from __future__ import annotations

import copy

from bragg_dask.errors import ConfigError
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


def cell_base(variation, raw: RawParams) -> tuple:
    """Where a ``--vary`` description draws the cell (``cell_rel``): the run's ``-cell`` (six values) and
    misset (radians, or None), from which each frame resolves its own cell as the C program resolves
    ``-cell`` (:meth:`bragg_dask.planning.frames.Frame.simulation`); () where it does not.  A run without
    all six of ``-cell``, with ``-mat`` or with a crystal size (which would set N from the cell): one line."""
    if "cell_rel" not in dict(variation.keys):
        return ()
    if raw.cell is None or len(raw.cell) != 6 or any(x <= 0 for x in raw.cell) or raw.matfile is not None:
        raise ConfigError("cell_rel: draws around the run's cell: give -cell a b c alpha beta gamma (not -mat)",
                          flag=variation.where)  # fmt: skip
    if any(x > 0 for x in raw.sample_xyz):
        raise ConfigError("cell_rel: not with a crystal size (-xtal_size, -samplesize...): give -N",
                          flag=variation.where)  # fmt: skip
    return (tuple(float(x) for x in raw.cell), None if raw.misset is None else tuple(raw.misset))


def vary_spec(variation, parsed):
    """The :class:`~bragg_dask.planning.frames.DatasetSpec` of a ``--vary`` dataset on the run ``parsed``
    (``ParsedArgs``): the run checked against what the description draws (``vary.check_base``), each frame's
    place and the cell it draws around resolved from the run's flags."""
    from bragg_dask.planning.frames import DatasetSpec
    from bragg_dask.planning.vary import check_base

    raw = parsed.raw
    check_base(variation, parsed.simulation, raw.oversample > 0, raw.misset_random)
    return DatasetSpec("vary", variation.frames, variation=variation,
                       geometries=frame_geometries(variation, raw), cell_base=cell_base(variation, raw))  # fmt: skip
