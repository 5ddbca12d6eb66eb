"""SMV images (``-intfile``, ``-noisefile``): a 512-byte ASCII header, then uint16 pixels."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from bragg_dask.errors import InputFileError
from bragg_dask.io.atomic import atomic_write
from bragg_dask.io.textfile import read_bytes
from bragg_dask.physics.constants import RTD

if TYPE_CHECKING:
    from bragg_dask.config import Simulation


def int_image(image: np.ndarray, rendered_roi: np.ndarray, scale: float, adc: float) -> np.ndarray:
    """The C program's int image: ``floorf(float32(clip(v*scale + adc, 0, 65535) + 0.5))`` inside the ROI.

    ``image``: ``(S, F)`` float32; ``rendered_roi``: ``(S, F)`` bool, pixels inside the ROI (masked
    ones included: they hold 0 and so become ``adc``).  Pixels outside the ROI stay 0.
    """
    out = np.empty(image.shape, dtype=np.uint16)
    rows = max(1, (1 << 16) // max(1, image.shape[-1]))  # bands of ~64k pixels: temporaries stay in cache
    v = np.empty((rows,) + image.shape[1:], dtype=np.float64)
    f = np.empty((rows,) + image.shape[1:], dtype=np.float32)
    for r0 in range(0, image.shape[0], rows):
        n = min(rows, image.shape[0] - r0)
        vb, fb = v[:n], f[:n]
        np.copyto(vb, image[r0 : r0 + n])
        vb *= scale
        vb += adc
        np.clip(vb, 0.0, 65535.0, out=vb)
        vb += 0.5
        np.copyto(fb, vb, casting="same_kind")
        np.floor(fb, out=fb)
        np.copyto(out[r0 : r0 + n], fb, casting="unsafe")
    out[~rendered_roi] = 0
    return out


def header_fields(sim: Simulation) -> dict:
    """The values the C program writes in an SMV header (SI units), from a simulation."""
    det, geo, cr = sim.detector, sim.detector.geometry, sim.crystal
    return header_fields_from_config(
        {
            "detector": {
                "fpixels": det.fpixels,
                "spixels": det.spixels,
                "pixel_size_m": det.pixel_size_m,
                "geometry": {k: getattr(geo, k) for k in _GEO_KEYS},
            },
            "beam": {"wavelength_m": sim.beam.wavelength_m},
            "crystal": {"phi0_rad": cr.phi0_rad, "osc_rad": cr.osc_rad},
        }
    )


_GEO_KEYS = (
    "distance_m",
    "close_distance_m",
    "xbeam_m",
    "ybeam_m",
    "fbeam_m",
    "sbeam_m",
    "orgx_px",
    "orgy_px",
    "dials_origin_mm",
    "twotheta_rad",
)


def header_fields_from_config(cfg: dict) -> dict:
    """The same values from a configuration dictionary (``Simulation.to_dict()``, as stored)."""
    det, geo = cfg["detector"], cfg["detector"]["geometry"]
    out: dict[str, Any] = {
        "fpixels": int(det["fpixels"]),
        "spixels": int(det["spixels"]),
        "pixel_size_m": float(det["pixel_size_m"]),
        "wavelength_m": float(cfg["beam"]["wavelength_m"]),
        "phi0_rad": float(cfg["crystal"]["phi0_rad"]),
        "osc_rad": float(cfg["crystal"]["osc_rad"]),
    }
    out.update({k: (tuple(geo[k]) if k == "dials_origin_mm" else float(geo[k])) for k in _GEO_KEYS})
    return out


def smv_header(sim_or_fields: Simulation | dict, *, header_bytes: int = 512) -> bytes:
    """The C program's SMV header (values in mm, Angstrom and degrees, ``%g``).

    Takes a simulation or :func:`header_fields`.  A header that does not fit in 512 bytes (long
    negative numbers) grows to the next multiple of 512 and says so in HEADER_BYTES; the C program
    would overrun and misplace the pixels.
    """
    h = sim_or_fields if isinstance(sim_or_fields, dict) else header_fields(sim_or_fields)
    text = _header_text(h, header_bytes)
    if len(text) > header_bytes:
        header_bytes = 512 * (len(text) // 512 + 1)
        text = _header_text(h, header_bytes)
    return text + b" " * (header_bytes - len(text))


def _header_text(h: dict, header_bytes: int) -> bytes:
    """The header's lines (``h``: :func:`header_fields`, SI units) in the C program's order and units."""
    px = h["pixel_size_m"]
    detsize_s = px * h["spixels"]
    lines = [
        "{",
        f"HEADER_BYTES={header_bytes};",
        "DIM=2;",
        "BYTE_ORDER=little_endian;",
        "TYPE=unsigned_short;",
        f"SIZE1={h['fpixels']};",
        f"SIZE2={h['spixels']};",
        "PIXEL_SIZE=%g;" % (px * 1000.0),
        "DISTANCE=%g;" % (h["distance_m"] * 1000.0),
        "WAVELENGTH=%g;" % (h["wavelength_m"] * 1e10),
        "BEAM_CENTER_X=%g;" % (h["xbeam_m"] * 1000.0),
        "BEAM_CENTER_Y=%g;" % (h["ybeam_m"] * 1000),
        "ADXV_CENTER_X=%g;" % (h["fbeam_m"] * 1000.0),
        "ADXV_CENTER_Y=%g;" % ((detsize_s - h["sbeam_m"]) * 1000),
        "MOSFLM_CENTER_X=%g;" % ((h["sbeam_m"] - 0.5 * px) * 1000.0),
        "MOSFLM_CENTER_Y=%g;" % ((h["fbeam_m"] - 0.5 * px) * 1000),
        "DENZO_X_BEAM=%g;" % ((h["sbeam_m"] - 0.0 * px) * 1000.0),
        "DENZO_Y_BEAM=%g;" % ((h["fbeam_m"] - 0.0 * px) * 1000),
        "DIALS_ORIGIN=%g,%g,%g" % tuple(h["dials_origin_mm"]),
        "XDS_ORGX=%g;" % h["orgx_px"],
        "XDS_ORGY=%g;" % h["orgy_px"],
        "CLOSE_DISTANCE=%g;" % (h["close_distance_m"] * 1000.0),
        "PHI=%g;" % (h["phi0_rad"] * RTD),
        "OSC_START=%g;" % (h["phi0_rad"] * RTD),
        "OSC_RANGE=%g;" % (h["osc_rad"] * RTD),
        "TWOTHETA=%g;" % (h["twotheta_rad"] * RTD),
        "DETECTOR_SN=000;",
        "BEAMLINE=fake;",
    ]
    return ("\n".join(lines) + "\n}\f").encode("ascii")


def write_smv(path: str, sim: Simulation | dict, pixels: np.ndarray) -> None:
    """Write ``(spixels, fpixels)`` uint16 ``pixels`` with the C program's header (``sim``: a
    simulation or :func:`header_fields`)."""
    with atomic_write(path) as fh:
        fh.write(smv_header(sim))
        fh.write(np.ascontiguousarray(pixels, dtype="<u2").tobytes())


def read_smv(path: str) -> tuple[dict[str, str], np.ndarray]:
    """Header keys and ``(SIZE2, SIZE1)`` pixels of an SMV file (unsigned_short only)."""
    raw = read_bytes(path)
    if not raw.startswith(b"{"):
        raise InputFileError(path, 1, "not an SMV file (no '{' header)")
    head = raw[: min(len(raw), 65536)].split(b"}", 1)[0].decode("ascii", "replace")
    keys: dict[str, str] = {}
    for line in head.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            keys[k.strip()] = v.strip().rstrip(";")
    try:
        hb = int(keys["HEADER_BYTES"])
        s1, s2 = int(keys["SIZE1"]), int(keys["SIZE2"])
    except KeyError as exc:
        raise InputFileError(path, None, f"SMV header has no {exc.args[0]} key") from None
    except ValueError as exc:
        raise InputFileError(path, None, f"bad SMV header value: {exc}") from None
    data = np.frombuffer(raw[hb:], dtype="<u2")
    if data.size < s1 * s2:
        raise InputFileError(path, None, f"SMV data has {data.size} pixels, header says {s1}x{s2}")
    return keys, data[: s1 * s2].reshape(s2, s1)


#: SMV pixel types read by :func:`read_smv_frame` (``TYPE=``): numpy's type, little-endian
#: (SMV's own type names, written as one table: two of them are also the store's array names, which only
#: the store spells out)
SMV_TYPES = dict(
    item.split(":")
    for item in (
        "unsigned_short:<u2 float:<f4 signed_short:<i2 unsigned_long:<u4 unsigned_int:<u4 signed_long:<i4 long:<i4 "
        "long_integer:<u4 int:<i4"
    ).split()
)


def _pixel_type(path: str, header: str) -> np.dtype:
    """The pixels' type from ``TYPE=`` (absent: unsigned_short, as the C program reads every image) and
    ``BYTE_ORDER=`` (big_endian swaps every type but unsigned_short, which C reads unswapped)."""
    m = re.search(r"TYPE\s*=\s*([A-Za-z_ ]+?)\s*;", header)
    if m is None:
        return np.dtype("<u2")
    name = m.group(1).strip().lower()
    if name not in SMV_TYPES:
        raise InputFileError(
            path,
            header.count("\n", 0, m.start()) + 1,
            f"TYPE={name}: pixels of that type cannot be read (read: {', '.join(SMV_TYPES)})",
        )
    dt = np.dtype(SMV_TYPES[name])
    big = re.search(r"BYTE_ORDER\s*=\s*big_endian", header)
    return dt.newbyteorder(">") if big and name != "unsigned_short" else dt


def read_smv_frame(path: str, typed: bool = False) -> tuple[str, np.ndarray]:
    """Header text and ``(SIZE2, SIZE1)`` pixels, validated as the C program's ``GetFrame``.

    The header must start with ``{`` and ``HEADER_BYTES=``.  ``typed`` (where the pixels are used, a
    mask): they are of the header's ``TYPE`` (unsigned_short, as C reads every image, when absent; float
    and the integer types read as such, not as C misreads them), returned as float32 (integer types
    exactly, to 2^24) or uint16, unsigned_short without byte swap, as C; otherwise (a header imported)
    they are read as C reads them, unsigned shorts.
    """
    raw = read_bytes(path)
    if not raw.startswith(b"{\nHEADER_BYT"):
        raise InputFileError(path, 1, "not an SMV image (header must start with '{' and HEADER_BYTES=)")
    head512 = raw[:512].decode("ascii", "replace")
    size = value_of(head512, "HEADER_BYTES")
    if size is None or not size >= 1:
        raise InputFileError(path, line_of(head512, "HEADER_BYTES"), "bad HEADER_BYTES value")
    header = raw[: int(size)].decode("ascii", "replace")
    width, height = value_of(header, "SIZE1"), value_of(header, "SIZE2")
    for key, v in (("SIZE1", width), ("SIZE2", height)):
        if v is None:
            raise InputFileError(path, None, f"SMV header has no {key} key")
        if not v >= 1:
            raise InputFileError(path, line_of(header, key), f"{key}={v:g} is not a pixel count")
    assert width is not None and height is not None  # the loop above raised otherwise
    w, h = int(width), int(height)
    dt = _pixel_type(path, header) if typed else np.dtype("<u2")
    body = raw[int(size) :]
    data = np.frombuffer(body[: len(body) // dt.itemsize * dt.itemsize], dtype=dt)  # no partial trailing pixel
    if data.size < w * h:
        raise InputFileError(path, None, f"has {data.size} pixels after the header, SIZE1 x SIZE2 = {w * h}")
    data = data[: w * h].reshape(h, w)
    if dt == np.dtype("<u2"):
        return header, data
    values = data.astype(np.float32)
    if not np.isfinite(values).all():
        raise InputFileError(path, None, f"holds {int((~np.isfinite(values)).sum())} pixels that are NaN or infinite")
    return header, values


def value_of(header: str, key: str) -> float | None:
    """The C program's ``ValueOf``: the number after the ``=`` following the *last* occurrence of ``key``.

    ``None`` when the key is absent (C: NaN); 0.0 when no ``=`` follows (as C's ``atof``).
    """
    pos = header.rfind(key)
    if pos < 0:
        return None
    eq = header.find("=", pos + len(key))
    if eq < 0:
        return 0.0
    m = re.match(r"\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)", header[eq + 1 :])
    return float(m.group(0)) if m else 0.0


def line_of(header: str, key: str) -> int | None:
    """1-based line of the last occurrence of ``key`` (the one :func:`value_of` reads), or ``None``."""
    pos = header.rfind(key)
    return header.count("\n", 0, pos) + 1 if pos >= 0 else None
