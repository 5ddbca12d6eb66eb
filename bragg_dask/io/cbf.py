"""Pilatus-style miniCBF images (``bragg-dask export STORE --cbf F``), written through fabio (the ``cbf`` extra).

One file per frame: the int image (the C program's counts) as signed 32-bit pixels, byte-offset
compressed by fabio, with the Pilatus 1.2 header (``_array_data.header_contents``) that processing
programs read: ``Pixel_size``, ``Wavelength``, ``Detector_distance``, ``Beam_xy`` (the store's beam
centre, pixels from the outer corner of pixel (0, 0), as dxtbx reads it), ``Start_angle`` (the
frame's phi0), ``Angle_increment`` (``-osc``), ``Detector_2theta``, ``Count_cutoff`` (65535).  The
sensor line says silicon with the simulation's ``-detector_thick`` (see ``io/nexus.py``).  The
store records no exposure time: ``Exposure_time`` is the C program's default, 1 s.  A miniCBF header
has no detector orientation: it assumes the Pilatus one (fast along +x, slow along -y of imgCIF);
the NXmx export (``io/nexus.py``) carries the full geometry.

File names: a run of ``#`` in the name is replaced by the image number, zero-padded to the run's
length (``series_#####.cbf`` -> ``series_00001.cbf``); images are numbered from 1 (store frame k is
image k + 1).  A name without ``#`` exporting several frames gets ``_#####`` before its extension.
"""

from __future__ import annotations

import os
import re

import numpy as np

from bragg_dask.io.mx import SATURATION, MxInfo, optional_module

_HASHES = re.compile(r"#+")


def numbered(template: str, number: int) -> str:
    """``template`` with its last run of ``#`` (in the file name) replaced by ``number``, zero-padded."""
    folder, name = os.path.split(template)
    runs = list(_HASHES.finditer(name))
    if not runs:
        return template
    m = runs[-1]
    return os.path.join(folder, name[: m.start()] + str(number).zfill(len(m.group())) + name[m.end() :])


def series_template(name: str) -> str:
    """The template of a series: ``name`` itself when it holds ``#``, else ``_#####`` before the extension."""
    if "#" in os.path.basename(name):
        return name
    stem, ext = os.path.splitext(name)
    return f"{stem}_#####{ext or '.cbf'}"


def pilatus_header(info: MxInfo, k: int) -> str:
    """The Pilatus 1.2 header of the ``k``-th exported frame (``info.phi0_deg[k]``)."""
    px = info.pixel_size_m
    bx, by = info.beam_centre_px
    stamp = info.start_time.rstrip("Z")
    phi = info.phi0_deg[k]
    lines = [
        "Detector: bragg_dask simulation (nanoBragg), S/N 000",
        stamp,
        f"Pixel_size {px:.6e} m x {px:.6e} m",
        f"Silicon sensor, thickness {info.thickness_m:.6f} m",
        "Exposure_time 1.0000000 s",
        "Exposure_period 1.0000000 s",
        "Tau = 0 s",
        f"Count_cutoff {SATURATION} counts",
        "Threshold_setting: 0 eV",
        "N_excluded_pixels = 0",
        "Excluded_pixels: (nil)",
        "Flat_field: (nil)",
        "Trim_file: (nil)",
        "Image_path: (nil)",
        f"Wavelength {info.wavelength_m * 1e10:.6f} A",
        f"Detector_distance {info.distance_m:.7f} m",
        f"Beam_xy ({bx:.4f}, {by:.4f}) pixels",
        f"Start_angle {phi:.6f} deg.",
        f"Angle_increment {info.osc_deg:.6f} deg.",
        f"Detector_2theta {info.twotheta_deg:.6f} deg.",
        f"Phi {phi:.6f} deg.",
        "N_oscillations 1",
    ]
    return "\r\n".join("# " + line for line in lines)


def write_cbf(path: str, image: np.ndarray, header: str) -> None:
    """Write ``image`` (``(spixels, fpixels)`` counts) with ``header`` (:func:`pilatus_header`) as a
    miniCBF at ``path`` (fabio; a missing fabio is a one-line error naming ``--cbf``)."""
    optional_module("fabio", "--cbf", "cbf")
    cbfimage = optional_module("fabio.cbfimage", "--cbf", "cbf")
    img = cbfimage.CbfImage(
        data=np.ascontiguousarray(image, dtype=np.int32),
        header={"_array_data.header_convention": "PILATUS_1.2", "_array_data.header_contents": header},
    )
    img.write(path)
