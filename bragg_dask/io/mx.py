"""What the crystallographic formats (``io/nexus.py``, ``io/cbf.py``) say of a store: :class:`MxInfo`.

Built from a store's ``bragg_dask`` attribute (its ``geometry`` and ``config``) and the exported
frames' phi, so the NXmx and CBF files state the same geometry as the store (and as the SMV header
the C program writes).  Lengths in metres, angles in degrees, vectors in the C program's lab frame.
Also: the optional libraries (h5py, fabio) imported with a one-line error, and staged writing (every
file written under a temporary folder beside it, renamed into place only when all are written).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import math
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass

from bragg_dask.errors import UsageError
from bragg_dask.io.atomic import defer_removal, place

#: the C program's int images are uint16: a pixel at this value is saturated
SATURATION = 65535
#: what the files name as the sensor (the C program models none; see io/nexus.py)
SENSOR_MATERIAL = "Si"


@dataclass(frozen=True)
class MxInfo:
    """The geometry and beam of a store, and the phi (deg) of the frames exported.

    ``pix0_m`` is the outer corner of pixel (0, 0); ``fbeam_m``/``sbeam_m`` (the store's beam
    centre) are measured from it along ``fdet``/``sdet``.
    """

    fpixels: int
    spixels: int
    pixel_size_m: float
    wavelength_m: float
    distance_m: float
    fdet: tuple
    sdet: tuple
    odet: tuple
    beam: tuple
    pix0_m: tuple
    fbeam_m: float
    sbeam_m: float
    spindle: tuple
    osc_deg: float
    twotheta_deg: float
    thickness_m: float
    phi0_deg: tuple
    start_time: str
    end_time: str | None
    #: a detector of panels: each panel's ``{"name", "fdet", "sdet", "pix0_m"}`` (the C program's frame);
    #: empty: the single panel above
    panels: tuple = ()
    #: a preset's modules in their detector frame: ``{"shape": [rows, cols], "origins": [[slow, fast], ...]}``
    #: (the files then hold that frame, gaps included); None: the panels stacked
    frame: dict | None = None

    @property
    def beam_centre_px(self) -> tuple[float, float]:
        """``(fast, slow)`` beam centre in pixels from the outer corner of pixel (0, 0)."""
        return self.fbeam_m / self.pixel_size_m, self.sbeam_m / self.pixel_size_m


def mx_info(meta: dict, phi0_deg) -> MxInfo:
    """:class:`MxInfo` from a store's ``bragg_dask`` attribute and the exported frames' phi (deg)."""
    geo, cfg = meta["geometry"], meta["config"]
    det, cr = cfg["detector"], cfg["crystal"]
    return MxInfo(
        fpixels=int(det["fpixels"]),
        spixels=int(det["spixels"]),
        pixel_size_m=float(geo["pixel_size_m"]),
        wavelength_m=float(geo["wavelength_m"]),
        distance_m=float(geo["distance_m"]),
        fdet=_vec(geo["fdet_vector"]),
        sdet=_vec(geo["sdet_vector"]),
        odet=_vec(geo["odet_vector"]),
        beam=_vec(geo["beam_vector"]),
        pix0_m=_vec(geo["pix0_vector_m"]),
        fbeam_m=float(geo["beam_center_fast_slow_m"][0]),
        sbeam_m=float(geo["beam_center_fast_slow_m"][1]),
        spindle=_vec(cr["spindle_axis"]),
        osc_deg=math.degrees(float(cr["osc_rad"])),
        twotheta_deg=math.degrees(float(det["geometry"].get("twotheta_rad", 0.0))),
        thickness_m=float(det.get("thickness_m") or 0.0),
        phi0_deg=tuple(float(p) for p in phi0_deg),
        start_time=_start_z(meta.get("created")),
        end_time=utc_z(meta.get("completed")) if meta.get("complete") else None,
        panels=tuple(
            {
                "name": str(p["name"]),
                "fdet": _vec(p["fdet_vector"]),
                "sdet": _vec(p["sdet_vector"]),
                "pix0_m": _vec(p["pix0_vector_m"]),
            }
            for p in geo.get("panels") or ()
        ),  # fmt: skip
        frame=geo.get("frame"),
    )


def _start_z(created: str | None) -> str:
    """The store's creation time as :func:`utc_z` writes it; none recorded: now."""
    stamp = utc_z(created) or utc_z(_dt.datetime.now(_dt.timezone.utc).isoformat())
    assert stamp is not None  # utc_z of a non-empty time is never None
    return stamp


def _vec(v) -> tuple:
    return tuple(float(x) for x in v)


def utc_z(stamp: str | None) -> str | None:
    """An ISO 8601 time as UTC with the ``Z`` suffix (NXmx asks for it); ``None`` stays ``None``."""
    if not stamp:
        return None
    t = _dt.datetime.fromisoformat(str(stamp))
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.astimezone(_dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def optional_module(name: str, flag: str, extra: str):
    """Import ``name``, an optional dependency; missing, a one-line :class:`UsageError` naming ``flag``
    and the extra that installs it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UsageError(
            f"needs the {name} library, which is not installed: pip install bragg-dask[{extra}]", flag=flag
        ) from None


@contextlib.contextmanager
def staged(paths: list[str]):
    """Temporary paths, one per path of ``paths`` (same folder, same file name, inside a hidden folder);
    when the block ends without error each is renamed onto its path, else all are removed.

    A reader never sees a half-written file under a final name; a series is renamed into place only
    once every file of it is written.
    """
    finals = [os.path.realpath(p) for p in paths]
    # the null device (the one special file the checks let through) is written in the system's
    # temporary folder, and discarded
    special = [os.path.exists(p) and not stat.S_ISREG(os.stat(p).st_mode) for p in finals]
    dirs = [None if sp else os.path.dirname(p) for p, sp in zip(finals, special)]
    folders: dict[str | None, str] = {}
    try:
        for d in dict.fromkeys(dirs):
            folders[d] = tempfile.mkdtemp(prefix=".partial-", dir=d)
        temps = [os.path.join(folders[d], os.path.basename(p)) for d, p in zip(dirs, finals)]
        yield temps
        for tmp, final, sp in zip(temps, finals, special):
            if not sp:
                place(tmp, final)  # now, or with the other outputs of its command (atomic.batch)
        if all(defer_removal(d) for d in folders.values()):
            folders = {}
    finally:
        for tmpdir in folders.values():
            shutil.rmtree(tmpdir, ignore_errors=True)
