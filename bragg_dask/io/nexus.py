"""NeXus NXmx files (``bragg-dask export STORE --nxmx F``), written through h5py (the ``nexus`` extra).

The file holds a store's frames as one stack ``/entry/data/data`` ``(frame, slow, fast)`` of counts
(the C program's uint16 int image; one gzip-compressed chunk per frame) with the geometry of the
NXmx application definition::

    /entry                     NXentry: definition "NXmx", start_time, end_time (complete stores)
      data                     NXdata: data (signal)
      instrument               NXinstrument: name
        beam                   NXbeam: incident_wavelength (angstrom)
        detector               NXdetector: depends_on, distance, x/y_pixel_size, saturation_value,
                               sensor_material, sensor_thickness, data (link to /entry/data/data)
          transformations      NXtransformations: det_z, translation along the beam by the distance
          module               NXdetector_module: data_origin, data_size, module_offset (translation
                               from det_z to the outer corner of pixel (0, 0)), fast_ and
                               slow_pixel_direction (translations of one pixel along fdet and sdet)
      sample                   NXsample: name, depends_on -> transformations/omega
        transformations        NXtransformations: omega (rotation about the spindle axis; values:
                               each frame's phi0 from the store, deg), omega_increment_set (the
                               oscillation range -osc), omega_end (phi0 + osc per frame)
      source                   NXsource: name

NXmx requires ``sensor_material`` and ``sensor_thickness`` (and DIALS reads them for its parallax
correction): the C program models no material, so the file says silicon with the simulation's
``-detector_thick`` (0, the default, means no parallax, as in the simulation).

Lengths are in metres (the store's values unchanged), angles in degrees.  ``depends_on`` chains end
in ``"."``.  The module's origin is the outer corner of the first pixel (the C program's ``pix0``),
as dxtbx/DIALS read it; the beam centre is not written as a field: it follows from the chain.

**Frames.**  The C program's lab frame depends on its convention: the beam travels along +x for
MOSFLM and DENZO (fast = +z, slow = -y), along +z for XDS, DIALS and ADXV, and along any
``-beam_vector`` for a custom one.  NeXus uses the McStas frame: the beam along +z, y up.  Every
vector (beam, fdet, sdet, the spindle axis, pix0) is turned by the one rotation ``R`` that takes the
store's beam vector onto +z by the smallest angle (about ``beam x z``; 180 degrees about y for a beam
along -z).  For the beam along +x that is 90 degrees about -y, ``(x, y, z) -> (-z, y, x)``: the
C program's y stays up and its +z (MOSFLM's fast axis, the default spindle) becomes McStas -x,
which dxtbx turns into imgCIF +x (the usual horizontal rotation axis).  For a beam already along +z
(XDS, DIALS, ADXV) ``R`` is the identity.  A rotation changes no angle or distance, so the pixels'
positions relative to the sample and the beam are the store's: the beam centre recomputed from the
chain (where the beam meets the module's plane, in pixels from pix0) is the store's
``beam_center_fast_slow_m`` (the C program's Fbeam/Sbeam; with ``-twotheta`` the C program's
beam centre and distance are computed before the two-theta rotation and differ from the
intersection: the file's pixel positions are the true ones, its ``distance`` field the store's).

The phi rotation of the C program (``rotate_axis``) is right-handed about the spindle axis, as an
NXtransformations rotation is; its angles are written unchanged.
"""

from __future__ import annotations

import datetime as _dt
import os

import numpy as np

from bragg_dask.io.mx import SATURATION, SENSOR_MATERIAL, MxInfo, optional_module

DET = "/entry/instrument/detector"
SAMPLE_AXIS = "/entry/sample/transformations/omega"


def mcstas_rotation(beam) -> np.ndarray:
    """The rotation ``R`` (3x3) that takes ``beam`` onto +z by the smallest angle (see the module notes)."""
    b = np.asarray(beam, dtype=np.float64)
    b = b / np.linalg.norm(b)
    z = np.array([0.0, 0.0, 1.0])
    axis, c = np.cross(b, z), float(b @ z)
    s = float(np.linalg.norm(axis))
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([-1.0, 1.0, -1.0])
    k = axis / s
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + s * kx + (1.0 - c) * (kx @ kx)


def write_nxmx(path: str, info: MxInfo, frames) -> None:
    """Write ``frames`` (``(spixels, fpixels)`` uint16 count images, one per ``info.phi0_deg``) as an
    NXmx file at ``path`` (h5py; a missing h5py is a one-line error naming ``--nxmx``).  A detector of
    panels: each frame ``(panels x spixels, fpixels)``, the panels stacked (a preset's: its whole frame, the
    gaps 0 and flagged in ``pixel_mask``), and an NXdetector_module ``module_NAME`` per panel (its
    ``data_origin`` the panel's first pixel in the data, its own ``depends_on`` chain)."""
    h5py = optional_module("h5py", "--nxmx", "nexus")
    rot = mcstas_rotation(info.beam)
    with h5py.File(path, "w") as fh:
        _root_attrs(fh, os.path.basename(path))
        entry = _group(fh, "entry", "NXentry", default="data")
        entry["definition"] = _s("NXmx")
        entry["start_time"] = _s(info.start_time)
        if info.end_time:
            entry["end_time"] = _s(info.end_time)
        data = _write_data(_group(entry, "data", "NXdata", signal="data"), info, frames)
        _instrument(entry, info, rot, data)
        _sample(entry, info, rot)
        _group(entry, "source", "NXsource")["name"] = _s("bragg_dask simulation")


def data_shape(info: MxInfo) -> tuple[int, int]:
    """A frame's ``(rows, cols)`` in the file: the detector's; a detector of panels' panels stacked along
    slow, or a preset's whole frame (its gaps included)."""
    if info.frame is not None:
        return int(info.frame["shape"][0]), int(info.frame["shape"][1])
    return info.spixels * max(1, len(info.panels)), info.fpixels


def _write_data(nxdata, info: MxInfo, frames):
    n, shape = len(info.phi0_deg), data_shape(info)
    d = nxdata.create_dataset(
        "data",
        shape=(n, *shape),
        dtype=np.uint16,
        chunks=(1, *shape),
        compression="gzip",
        compression_opts=4,
        shuffle=True,
    )
    count = 0
    for count, image in enumerate(frames, start=1):
        if count > n or tuple(image.shape) != shape:
            raise ValueError(f"frame {count - 1}: expected {n} frames of {shape}, got {image.shape}")
        d[count - 1] = np.asarray(image, dtype=np.uint16)
    if count != n:
        raise ValueError(f"expected {n} frames, got {count}")
    d.attrs["units"] = _s("counts")
    return d


def _instrument(entry, info: MxInfo, rot: np.ndarray, data) -> None:
    inst = _group(entry, "instrument", "NXinstrument")
    inst["name"] = _s("bragg_dask (nanoBragg simulation)")
    beam = _group(inst, "beam", "NXbeam")
    _field(beam, "incident_wavelength", info.wavelength_m * 1e10, "angstrom")
    det = _group(inst, "detector", "NXdetector")
    det["description"] = _s("bragg_dask simulated detector (nanoBragg)")
    det["depends_on"] = _s(f"{DET}/transformations/det_z")
    _field(det, "distance", info.distance_m, "m")
    _field(det, "x_pixel_size", info.pixel_size_m, "m")
    _field(det, "y_pixel_size", info.pixel_size_m, "m")
    det["saturation_value"] = np.int32(SATURATION)
    det["sensor_material"] = _s(SENSOR_MATERIAL)
    _field(det, "sensor_thickness", info.thickness_m, "m")
    det["data"] = data  # a hard link: the same dataset under the detector
    tr = _group(det, "transformations", "NXtransformations")
    _axis(tr, "det_z", info.distance_m, "translation", (0.0, 0.0, 1.0), ".", "m")
    if not info.panels:
        _module(det, "module", info, rot, info.fdet, info.sdet, info.pix0_m)
    origins = (
        info.frame["origins"] if info.frame is not None else [(k * info.spixels, 0) for k in range(len(info.panels))]
    )
    for p, origin in zip(info.panels, origins):  # one module per panel: its pixels of the data
        _module(det, f"module_{p['name']}", info, rot, p["fdet"], p["sdet"], p["pix0_m"], origin)
    det["pixel_mask"] = _pixel_mask(info)
    det["pixel_mask_applied"] = np.int32(0)


def _pixel_mask(info: MxInfo) -> np.ndarray:
    """NXmx's ``pixel_mask`` of a frame: 0 on every simulated pixel, bit 0 (a gap) between a preset's modules."""
    mask = np.zeros(data_shape(info), dtype=np.uint32)
    if info.frame is not None:
        mask[...] = 1
        for s0, f0 in info.frame["origins"]:
            mask[s0 : s0 + info.spixels, f0 : f0 + info.fpixels] = 0
    return mask


def _module(det, name: str, info: MxInfo, rot: np.ndarray, fdet, sdet, pix0_m, origin=(0, 0)) -> None:
    """An NXdetector_module: the ``spixels x fpixels`` pixels of the data from ``origin`` (slow, fast), the
    outer corner of its first pixel at ``pix0_m`` (the C program's frame) and its axes ``fdet``, ``sdet``."""
    mod = _group(det, name, "NXdetector_module")
    mod["data_origin"] = np.array([int(origin[0]), int(origin[1])], dtype=np.int32)
    mod["data_size"] = np.array([info.spixels, info.fpixels], dtype=np.int32)
    # from the point det_z reaches (distance along the beam) to the outer corner of pixel (0, 0)
    offset = rot @ np.asarray(pix0_m) - np.array([0.0, 0.0, info.distance_m])
    length = float(np.linalg.norm(offset))
    direction = offset / length if length > 0 else rot @ np.asarray(fdet)
    _axis(mod, "module_offset", length, "translation", direction, f"{DET}/transformations/det_z", "m")
    for axis, vec in (("fast_pixel_direction", fdet), ("slow_pixel_direction", sdet)):
        _axis(mod, axis, info.pixel_size_m, "translation", rot @ np.asarray(vec), f"{DET}/{name}/module_offset", "m")


def _sample(entry, info: MxInfo, rot: np.ndarray) -> None:
    sample = _group(entry, "sample", "NXsample")
    sample["name"] = _s("simulated crystal")
    sample["depends_on"] = _s(SAMPLE_AXIS)
    tr = _group(sample, "transformations", "NXtransformations")
    phi = np.asarray(info.phi0_deg, dtype=np.float64)
    _axis(tr, "omega", phi, "rotation", rot @ np.asarray(info.spindle), ".", "deg")
    _field(tr, "omega_increment_set", info.osc_deg, "deg")
    _field(tr, "omega_end", phi + info.osc_deg, "deg")


def _axis(parent, name: str, value, kind: str, vector, depends_on: str, units: str) -> None:
    """An NXtransformations axis: ``value`` along (translation) or about (rotation) ``vector``."""
    d = _field(parent, name, value, units)
    v = np.asarray(vector, dtype=np.float64)
    d.attrs["transformation_type"] = _s(kind)
    d.attrs["vector"] = v / np.linalg.norm(v)
    d.attrs["offset"] = np.zeros(3)
    d.attrs["offset_units"] = _s("m")  # a length, for a rotation too
    d.attrs["depends_on"] = _s(depends_on)


def _field(parent, name: str, value, units: str):
    d = parent.create_dataset(name, data=np.asarray(value, dtype=np.float64))
    d.attrs["units"] = _s(units)
    return d


def _group(parent, name: str, nx_class: str, **attrs):
    g = parent.create_group(name)
    g.attrs["NX_class"] = _s(nx_class)
    for k, v in attrs.items():
        g.attrs[k] = _s(v)
    return g


def _root_attrs(fh, file_name: str) -> None:
    import h5py

    from bragg_dask import __version__

    fh.attrs["NX_class"] = _s("NXroot")
    fh.attrs["default"] = _s("entry")
    fh.attrs["file_name"] = _s(file_name)
    fh.attrs["file_time"] = _s(
        _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    )
    fh.attrs["creator"] = _s(f"bragg_dask {__version__}")
    fh.attrs["HDF5_Version"] = _s(h5py.version.hdf5_version)
    fh.attrs["h5py_version"] = _s(h5py.version.version)


def _s(text: str) -> np.bytes_:
    """A fixed-length ASCII string (what NeXus readers expect most widely)."""
    return np.bytes_(str(text).encode("ascii", "replace"))
