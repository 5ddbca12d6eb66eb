"""``bragg-dask export STORE --nxmx F.h5 / --cbf F.cbf [--frame K | --all-frames]``: a store's frames for
crystallographic processing programs (DIALS, XDS, MOSFLM...).

``--nxmx`` writes one NeXus/NXmx file holding the frames as a stack (``io/nexus.py``, needs h5py:
``pip install bragg-dask[nexus]``); ``--cbf`` one Pilatus-style miniCBF per frame (``io/cbf.py``,
needs fabio: ``bragg-dask[cbf]``).  Both carry counts: the store's int image where it holds one (and
neither ``-scale`` nor ``-adc`` is given), otherwise the float image converted with the frame's int
scale exactly as ``-intfile`` is.  Frames are read from the store one at a time, a band of tiles at
a time.  Everything is checked before anything is written (outputs writable, frames in range and
complete), and the files are written under a temporary folder beside them and renamed into place
only once all are written.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from bragg_dask.config import clip_roi
from bragg_dask.errors import ConfigError
from bragg_dask.io.mx import mx_info, optional_module, staged
from bragg_dask.io.smv import int_image
from bragg_dask.nanobragg.checks import check_paths
from bragg_dask.nanobragg.outputs import OutputError
from bragg_dask.physics.constants import DEFAULT_ADC_OFFSET
from bragg_dask.physics.roi import mask_from_bounds
from bragg_dask.store import StoreFrame, check_frames, frame_record, frames_phi0_deg, store_metadata

log = logging.getLogger(__name__)


def export_mx(a) -> list[str]:
    """Write ``a.nxmx`` and/or ``a.cbf`` (``a``: the parsed export flags); returns the paths written."""
    from bragg_dask.io.cbf import numbered, series_template

    if a.nxmx:
        optional_module("h5py", "--nxmx", "nexus")
    if a.cbf:
        optional_module("fabio", "--cbf", "cbf")
    first = frame_record(a.store, a.frame or 0)  # a missing store or a frame out of range: one line
    indices = list(range(first.n_frames)) if a.all_frames else [a.frame or 0]
    cbf_paths = []
    if a.cbf and os.path.exists(a.cbf) and not os.path.isfile(a.cbf):  # the null device takes every frame
        cbf_paths = [a.cbf] * len(indices)
    elif a.cbf:
        template = series_template(a.cbf) if a.all_frames else a.cbf
        cbf_paths = [numbered(template, k + 1) for k in indices]
    check_paths(([("--nxmx", a.nxmx)] if a.nxmx else []) + [("--cbf", p) for p in dict.fromkeys(cbf_paths)])
    found = check_frames(a.store, indices, None, "export")  # a damaged frame: one line, before any file
    _check_complete(a.store, found.done, indices, "--all-frames" if a.all_frames else "--frame")
    image = _image(a)
    info = mx_info(store_metadata(a.store), frames_phi0_deg(a.store)[indices])
    written: list[str] = []
    if a.nxmx:
        from bragg_dask.io.nexus import write_nxmx

        with _writing(a.nxmx), staged([a.nxmx]) as (tmp,):
            write_nxmx(tmp, info, (frame_counts(a.store, k, a.scale, a.adc, image) for k in indices))
        written.append(a.nxmx)
    if a.cbf:
        from bragg_dask.io.cbf import pilatus_header, write_cbf

        with _writing(a.cbf), staged(cbf_paths) as temps:
            for j, (k, tmp) in enumerate(zip(indices, temps)):
                write_cbf(tmp, frame_counts(a.store, k, a.scale, a.adc, image), pilatus_header(info, j))
        written.extend(dict.fromkeys(cbf_paths))
    return written


def _image(a) -> str:
    """Which image the files carry (``--image``: int, the default, or noise), checked against the store
    and the other flags, and said on the log."""
    image = a.image or StoreFrame.INT
    if image == StoreFrame.NOISE:
        if a.scale > 0 or a.adc != DEFAULT_ADC_OFFSET:
            raise ConfigError(
                "-scale and -adc make the int image from the float image; the noise image is the store's as written",
                flag="--image",
            )
        if not StoreFrame(a.store, a.frame or 0).has(StoreFrame.NOISE):
            raise ConfigError(
                f"{a.store} holds no noise image (a run with -noisefile, or bragg-dask noisify STORE, writes one)",
                flag="--image",
            )
        log.info("the frames carry the store's noise image: counts with the detector's noise (--image noise)")
    else:
        log.info(
            "the frames carry the int image: noiseless counts%s (--image noise for the noisy image)",
            ""
            if StoreFrame(a.store, a.frame or 0).has(StoreFrame.INT) and a.scale <= 0 and a.adc == DEFAULT_ADC_OFFSET
            else ", made from the float image with the frame's int scale",
        )
    return image


def _check_complete(store: str, done, indices: list[int], flag: str) -> None:
    for k in indices:
        if not bool(np.all(done[k])):
            raise ConfigError(f"frame {k} of {store} is incomplete (re-run the simulation to finish it)", flag=flag)


def frame_counts(
    store: str, k: int, scale: float = 0.0, adc: float = DEFAULT_ADC_OFFSET, image: str = StoreFrame.INT
) -> np.ndarray:
    """Frame ``k``'s counts ``(spixels, fpixels)`` uint16 (a detector of panels: ``(panels x spixels,
    fpixels)``, stacked): ``image`` NOISE, the store's noise array; INT,
    the int image as ``export -intfile`` writes it: the store's int array (no ``scale``, the default
    ``adc``), else the float image through :func:`int_image` with ``scale`` or the frame's int scale.
    Read a band of tiles at a time."""
    frame = StoreFrame(store, k, flag="export")
    layout = store_metadata(store)["geometry"].get("frame") if frame.panels else None
    if layout is not None:  # a preset: its panels in their detector frame, the gaps 0
        return _frame_counts(store, k, layout, scale, adc, image)
    s, f = int(np.prod(frame.shape[:-1])), frame.shape[-1]  # a detector of panels: its panels stacked
    out = np.empty((s, f), dtype=np.uint16)
    stored = frame.NOISE if image == frame.NOISE else frame.INT
    if image == frame.NOISE or (frame.has(frame.INT) and scale <= 0 and adc == DEFAULT_ADC_OFFSET):
        for s0, s1, band in frame.bands(stored):
            out[s0:s1] = band
        return out
    rec = frame_record(store, k, check=False)
    use = scale if scale > 0 else rec.int_scale
    bounds = clip_roi(rec.config["detector"].get("roi"), f, s)
    for s0, s1, band in frame.bands(frame.FLOAT):
        out[s0:s1] = int_image(band, mask_from_bounds(bounds, (s0, s1, 0, f)), use, adc)
    return out


def _frame_counts(store: str, k: int, layout: dict, scale: float, adc: float, image: str) -> np.ndarray:
    """:func:`frame_counts` of a preset's store: ``(rows, cols)`` of its detector frame, each panel's counts
    at its place (``layout``: the store's ``geometry.frame``), 0 in the gaps."""
    out = np.zeros(tuple(layout["shape"]), dtype=np.uint16)
    for p, (s0, f0) in enumerate(layout["origins"]):
        one = StoreFrame(store, k, flag="export", panel=p)
        rows, cols = one.shape
        stored = one.NOISE if image == one.NOISE else one.INT
        if image == one.NOISE or (one.has(one.INT) and scale <= 0 and adc == DEFAULT_ADC_OFFSET):
            for a, b, band in one.bands(stored):
                out[s0 + a : s0 + b, f0 : f0 + cols] = band
            continue
        use = scale if scale > 0 else frame_record(store, k, check=False).int_scale
        for a, b, band in one.bands(one.FLOAT):
            out[s0 + a : s0 + b, f0 : f0 + cols] = int_image(band, np.ones(band.shape, dtype=bool), use, adc)
    return out


class _writing:
    """OSError while writing ``path`` -> a one-line :class:`OutputError`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
