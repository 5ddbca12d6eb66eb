"""NXmx master files (HDF5, ``.h5``/``.nxs``) read into native panels (h5py, the ``nexus`` extra).

Every ``NXdetector_module`` of every ``NXdetector`` of the first ``NXentry``'s ``NXinstrument`` is a
panel (ordered by detector, then ``data_origin``): ``data_size`` gives its ``(slow, fast)`` pixel
counts (a leading 1 of a 3-d size ignored); ``fast_pixel_direction`` and ``slow_pixel_direction``
its pixel size (their values, square) and axes.  Positions follow the ``depends_on`` chains of
NXtransformations as NeXus defines them: each axis is ``x -> R x + o`` (a rotation by its value about
``vector``, right-handed) or ``x -> x + o + value * vector`` (a translation; ``vector`` unit), ``o`` its ``offset``
(``offset_units``, else its ``units``); a point of an axis's frame is moved by that axis, then by the one
it depends on, and so on to ``"."``.  The panel's ``pix0`` is the origin of the fast axis's frame
(``module_offset``'s chain, typically) and its axes the chains' rotations applied to the two
``vector``s.  Values in m, cm, mm, um, nm and deg or rad; an axis whose values differ frame to frame
(a moving detector) is refused.

The beam: an ``NXbeam`` of the instrument, else of the sample; its direction is McStas +z, turned by
the rotations of its ``depends_on`` chain where it has one; ``incident_wavelength`` (angstrom where
no ``units``) gives the wavelength where it is one value.  NeXus uses the McStas frame (beam +z, y up),
mapped to the C frame by ``(X, Y, Z) -> (Z, Y, -X)``: what :mod:`bragg_dask.io.nexus` wrote reads back
as the store's geometry (for a beam along the C program's +x).
"""

from __future__ import annotations

import math
import posixpath

import numpy as np

from bragg_dask.errors import ConfigError
from bragg_dask.io.geometry_base import Failer, GeometryFile, RawPanel, build, from_mcstas, unit
from bragg_dask.io.mx import optional_module

FIELDS = {"fdet": "fast_pixel_direction", "sdet": "slow_pixel_direction", "pix0_m": "module_offset",
          "pixel_m": "fast_pixel_direction", "n_fast": "data_size", "n_slow": "data_size"}  # fmt: skip
#: lengths: units per metre (a value is divided by it, as -pixel and -distance divide mm by 1000)
LENGTHS = {"m": 1.0, "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0, "cm": 1e2, "mm": 1e3,
           "millimeter": 1e3, "millimeters": 1e3, "millimetre": 1e3, "millimetres": 1e3, "um": 1e6,
           "\u00b5m": 1e6, "\u03bcm": 1e6, "micron": 1e6, "microns": 1e6, "micrometer": 1e6,
           "micrometers": 1e6, "micrometre": 1e6, "micrometres": 1e6, "nm": 1e9}  # fmt: skip
#: angles: radians per unit
ANGLES = {"deg": math.pi / 180.0, "degree": math.pi / 180.0, "degrees": math.pi / 180.0, "rad": 1.0,
          "radian": 1.0, "radians": 1.0}  # fmt: skip
#: wavelengths: metres per unit, as a divisor where exact (angstrom -> m divides by 1e10, as -lambda)
WAVELENGTHS = {"angstrom": 1e10, "angstroms": 1e10, "a": 1e10, "\u00e5": 1e10, "nm": 1e9, "pm": 1e12, "m": 1.0}
MAX_CHAIN = 256
#: an axis's ``vector`` further than this from unit length is refused (readers differ on such axes)
UNIT_TOL = 1e-3


def read_nxmx(path: str, where: Failer) -> GeometryFile:
    """The panels, beam and wavelength of the NXmx file at ``path``."""
    h5py = optional_module("h5py", where.flag, "nexus")
    where.fields = dict(FIELDS)
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise where.fail(f"cannot read it as HDF5 ({exc})") from None
    try:
        with fh:
            return _read(fh, h5py, where)
    except ConfigError:
        raise
    except (OSError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise where.fail(f"cannot read it ({type(exc).__name__}: {exc})") from None


def _read(fh, h5py, where: Failer) -> GeometryFile:
    entries = _children(fh, "NXentry", h5py.Group) or [g for g in (fh.get("entry"),) if isinstance(g, h5py.Group)]
    if not entries:
        raise where.fail("no NXentry group: not an NXmx file")
    entry = entries[0]
    instruments = _children(entry, "NXinstrument", h5py.Group)
    modules = []
    for det in (d for inst in instruments for d in _children(inst, "NXdetector", h5py.Group)):
        found = _children(det, "NXdetector_module", h5py.Group)
        modules += sorted(found, key=lambda m: (tuple(_ints(m, "data_origin", where)), m.name))
    if not modules:
        raise where.fail(f"no NXdetector_module under {entry.name}/instrument: not an NXmx master file")
    raw = [_module(fh, m, where, h5py) for m in modules]
    beams = [
        b for g in instruments + _children(entry, "NXsample", h5py.Group) for b in _children(g, "NXbeam", h5py.Group)
    ]
    beam, wavelength = _beam(fh, beams[0], where, h5py) if beams else (from_mcstas((0.0, 0.0, 1.0)), None)
    return build(raw, where, "NXmx", beam=beam, wavelength_m=wavelength)


def _children(group, nx_class: str, kind) -> list:
    """``group``'s children of NeXus class ``nx_class`` (by name; unreadable links skipped)."""
    out = []
    for name in sorted(group):
        try:
            obj = group[name]
        except (KeyError, OSError):
            continue  # a dangling (external) link
        if isinstance(obj, kind) and _text(obj.attrs.get("NX_class")) == nx_class:
            out.append(obj)
    return out


def _text(v) -> str:
    if isinstance(v, np.ndarray):
        v = v.reshape(-1)[0] if v.size else ""
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode("utf-8", "replace")
    return "" if v is None else str(v)


def _ints(group, key: str, where: Failer) -> list[int]:
    if key not in group:
        raise where.fail("missing", panel=repr(posixpath.basename(group.name)), field=f"{group.name}/{key}")
    v = np.asarray(group[key][()]).reshape(-1)
    if v.size not in (2, 3) or v.dtype.kind not in "iu":
        raise where.fail(f"2 or 3 whole numbers, got {v.tolist()!r}", panel=repr(posixpath.basename(group.name)),
                         field=f"{group.name}/{key}")  # fmt: skip
    return [int(x) for x in v]


def _module(fh, mod, where: Failer, h5py) -> RawPanel:
    label = repr(posixpath.basename(mod.name))
    size = _ints(mod, "data_size", where)
    if (len(size) == 3 and size[0] != 1) or min(size) < 1:
        raise where.fail(f"[slow, fast] pixel counts >= 1, got {size!r}", panel=label, field=f"{mod.name}/data_size")
    axes = []
    for key in ("fast_pixel_direction", "slow_pixel_direction"):
        ds = mod.get(key)
        if not isinstance(ds, h5py.Dataset):
            raise where.fail("missing", panel=label, field=f"{mod.name}/{key}")
        kind, vector, value, offset, after = _axis(ds, where, label)
        if kind != "translation" or np.any(offset):
            raise where.fail("a translation without an offset (one pixel along the axis)", panel=label, field=ds.name)
        chain = _chain(fh, after, ds.parent, where, label, h5py)
        axes.append((chain[:3, :3] @ vector, value, chain[:3, 3]))
    (fast, pixel, origin), (slow, pixel_s, origin_s) = axes
    if abs(pixel - pixel_s) > 1e-9 * abs(pixel):
        raise where.fail(f"{pixel:g} m along fast, {pixel_s:g} m along slow: the pixels must be square", panel=label,
                         field=f"{mod.name}/slow_pixel_direction")  # fmt: skip
    if np.linalg.norm(origin - origin_s) > 1e-9:
        raise where.fail("its depends_on chain places pixel (0, 0) elsewhere than the fast axis's does", panel=label,
                         field=f"{mod.name}/slow_pixel_direction")  # fmt: skip
    name = posixpath.basename(mod.name)
    if name.startswith("module_") and len(name) > len("module_"):  # our export's module_NAME: the panel's NAME
        name = name[len("module_") :]
    return RawPanel(name, from_mcstas(fast), from_mcstas(slow), from_mcstas(origin), pixel, size[-1], size[-2])


def _axis(ds, where: Failer, label: str | None):
    """One NXtransformations axis: (type, unit vector, value in m or rad, offset in m, its depends_on)."""
    kind = _text(ds.attrs.get("transformation_type")).lower()
    if kind not in ("translation", "rotation"):
        raise where.fail(f"transformation_type 'translation' or 'rotation', got {kind!r}", panel=label, field=ds.name)
    units = _text(ds.attrs.get("units")).strip().lower()
    table = LENGTHS if kind == "translation" else ANGLES
    if units not in table:
        what = "a length (m, mm, um...)" if kind == "translation" else "an angle (deg, rad)"
        raise where.fail(f"units {units!r}: not {what}", panel=label, field=ds.name)
    vector = _vector(ds, "vector", where, label)
    if abs(float(np.linalg.norm(vector)) - 1.0) > UNIT_TOL:
        why = f"its vector has length {float(np.linalg.norm(vector)):.6g}: NeXus axes are unit vectors"
        raise where.fail("its vector is a zero vector" if not np.any(vector) else why, panel=label, field=ds.name)
    vector = unit(vector, "its vector is a zero vector", where, panel=label, field=ds.name)
    values = np.asarray(ds[()], dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.isfinite(values).all() or (values != values[0]).any():
        raise where.fail(f"one finite value (a fixed position), got {values.size} values", panel=label, field=ds.name)
    offset = np.zeros(3)
    if "offset" in ds.attrs:
        offset = _vector(ds, "offset", where, label)
        off_units = _text(ds.attrs.get("offset_units")).strip().lower() or units
        if np.any(offset):
            if off_units not in LENGTHS:
                raise where.fail(f"offset_units {off_units!r}: not a length", panel=label, field=ds.name)
            offset = offset / LENGTHS[off_units]
    value = float(values[0]) / table[units] if kind == "translation" else float(values[0]) * table[units]
    return kind, vector, value, offset, _text(ds.attrs.get("depends_on")) or "."


def _vector(ds, key: str, where: Failer, label: str | None) -> np.ndarray:
    v = np.asarray(ds.attrs.get(key), dtype=np.float64).reshape(-1)
    if v.size != 3 or not np.isfinite(v).all():
        raise where.fail(f"its {key} is not 3 finite numbers", panel=label, field=ds.name)
    return v


def _chain(fh, start: str, base, where: Failer, label: str | None, h5py) -> np.ndarray:
    """The 4x4 transformation of the chain from the axis ``start`` names (relative to group ``base``)."""
    m = np.eye(4)
    path, seen = _resolve(start, base), list[str]()
    while path != ".":
        if path in seen or len(seen) > MAX_CHAIN:
            raise where.fail(f"depends_on loops back to {path}", panel=label, field=seen[-1])
        ds = fh.get(path)
        if not isinstance(ds, h5py.Dataset):
            raise where.fail(f"depends_on names {path}, which is not a field of the file", panel=label,
                             field=seen[-1] if seen else base.name)  # fmt: skip
        seen.append(path)
        kind, vector, value, offset, after = _axis(ds, where, label)
        t = np.eye(4)
        if kind == "rotation":
            k = np.array([[0.0, -vector[2], vector[1]], [vector[2], 0.0, -vector[0]], [-vector[1], vector[0], 0.0]])
            t[:3, :3] = np.eye(3) + math.sin(value) * k + (1.0 - math.cos(value)) * (k @ k)
            t[:3, 3] = offset
        else:
            t[:3, 3] = offset + value * vector
        m = t @ m
        path = _resolve(after, ds.parent)
    return m


def _resolve(path: str, group) -> str:
    path = path.strip()
    if path in (".", ""):
        return "."
    return path if path.startswith("/") else posixpath.normpath(posixpath.join(group.name, path))


def _beam(fh, beam, where: Failer, h5py) -> tuple[np.ndarray, float | None]:
    """The beam's C direction (McStas +z turned by its depends_on chain) and its wavelength (m) or None."""
    direction = np.array([0.0, 0.0, 1.0])
    if "depends_on" in beam:
        start = _text(beam["depends_on"][()])
        direction = _chain(fh, start, beam, where, None, h5py)[:3, :3] @ direction
    wavelength = None
    ds = beam.get("incident_wavelength")
    if isinstance(ds, h5py.Dataset):
        units = _text(ds.attrs.get("units")) or "angstrom"
        values = np.asarray(ds[()], dtype=np.float64).reshape(-1)
        if units.lower() not in WAVELENGTHS:
            raise where.fail(f"units {units!r}: not a wavelength (angstrom, nm, m)", field=ds.name)
        if values.size and not (np.isfinite(values).all() and (values > 0).all()):
            raise where.fail(f"wavelengths > 0, got {values.tolist()!r}", field=ds.name)
        if values.size and (values == values[0]).all():
            wavelength = float(values[0]) / WAVELENGTHS[units.lower()]
    return from_mcstas(direction), wavelength
