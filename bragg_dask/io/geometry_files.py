"""Detector geometry files of other programs read into the native description of panels (``--geometry``).

Three formats, chosen by content (an HDF5 signature; JSON) and then by extension:

* an NXmx master file (``.h5``, ``.nxs``; :mod:`bragg_dask.io.geometry_nxmx`): every ``NXdetector_module``;
* a DIALS experiment list (``.expt``; :mod:`bragg_dask.io.geometry_dials`): the first experiment's detector;
* a CrystFEL geometry file (``.geom``; :mod:`bragg_dask.io.geometry_crystfel`): every panel.

Each is turned into the C program's lab frame (the MOSFLM convention's: the beam along +x, a MOSFLM
detector's fast axis +z and slow axis -y, ``odet = fdet x sdet`` away from the sample), lengths in
metres, ``pix0_m`` the outer corner of each panel's pixel (0, 0), and passed through
:func:`~bragg_dask.io.panels.panels_of`, so every check of a native description applies (one shape and
pixel size, no overlaps, each panel facing the sample...).  The frame maps (rotations, no mirror):

* McStas/NeXus and CrystFEL (beam +z, y up): ``(X, Y, Z) -> (Z, Y, -X)``, the inverse of the map
  :mod:`bragg_dask.io.nexus` exports with for a beam along +x;
* DIALS/imgCIF (beam towards -z, y up): ``(x, y, z) -> (-z, y, x)`` (mm -> m), the inverse of
  :attr:`~bragg_dask.physics.geometry.DetectorGeometry.dials_origin_mm`'s map.

A file that cannot be read, is malformed or describes an impossible detector is a one-line
:class:`~bragg_dask.errors.ConfigError` naming the flag, the file, the line (text formats), the panel and
the field.
"""

from __future__ import annotations

import os
import re

from bragg_dask.io.geometry_base import Failer, GeometryFile
from bragg_dask.io.geometry_crystfel import read_crystfel
from bragg_dask.io.geometry_dials import read_dials
from bragg_dask.io.geometry_nxmx import read_nxmx

__all__ = ["GeometryFile", "read_geometry"]

HDF5_EXTENSIONS = (".h5", ".nxs", ".hdf5", ".hdf", ".nx5", ".nexus")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: a text geometry file larger than this is refused unread
MAX_TEXT = 64 << 20


def read_geometry(path: str, flag: str = "--geometry") -> GeometryFile:
    """The detector and beam of the geometry file ``path`` (NXmx, DIALS ``.expt`` or CrystFEL ``.geom``),
    checked as a native description; errors: one-line :class:`ConfigError` naming ``flag``."""
    where = Failer(path, flag)
    if os.path.isdir(path):
        raise where.fail("a folder, not a geometry file")
    try:
        with open(path, "rb") as fh:
            hdf5 = _is_hdf5(fh)
            raw = b"" if hdf5 else fh.read(MAX_TEXT + 1)
    except OSError as exc:
        raise where.fail(f"cannot read it ({exc.strerror or exc})") from None
    ext = os.path.splitext(path)[1].lower()
    if hdf5:
        return read_nxmx(path, where)
    if ext in HDF5_EXTENSIONS:
        raise where.fail("not an HDF5 file (an NXmx master file was expected from its extension)")
    if len(raw) > MAX_TEXT:
        raise where.fail(f"over {MAX_TEXT >> 20} MiB and not HDF5: not a geometry file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise where.fail("not UTF-8 text (nor HDF5): not a geometry file", line) from None
    if ext in (".expt", ".json") or text.lstrip().startswith(("{", "[")):
        return read_dials(text, where)
    if ext == ".geom" or re.search(r"^[ \t]*[^;=\s][^;=]*=", text, flags=re.MULTILINE):
        return read_crystfel(text, where)
    raise where.fail(
        "not a geometry file: expected an NXmx master file (.h5, .nxs), a DIALS experiment list (.expt) or "
        "a CrystFEL geometry file (.geom)"
    )


def _is_hdf5(fh) -> bool:
    """The HDF5 signature at 0 or at a user block's end (512, 1024, 2048... bytes) of the open file ``fh``."""
    size = os.fstat(fh.fileno()).st_size
    offset = 0
    while offset + len(_HDF5_SIGNATURE) <= size:
        fh.seek(offset)
        if fh.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
            fh.seek(0)
            return True
        offset = 512 if offset == 0 else 2 * offset
    fh.seek(0)
    return False
