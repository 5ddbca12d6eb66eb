"""Writing the C program's output files from a finished float image.

The image is an array (in-process runs) or a :class:`~bragg_dask.store.StoreFrame`; from a store
the files are written a band of tiles at a time, so no whole frame is ever in memory.  Files are
written atomically (a temporary file renamed at the end); a write fault is a one-line error.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import numpy as np

from bragg_dask.detector.noise import noise_image
from bragg_dask.errors import BraggDaskError
from bragg_dask.io.atomic import atomic_write
from bragg_dask.io.pgm import pgm_bytes, write_pgm
from bragg_dask.io.raw import write_float_image
from bragg_dask.io.smv import int_image, smv_header, write_smv
from bragg_dask.nanobragg.stats import ImageStats, int_scale, pgm_scale
from bragg_dask.physics.roi import mask_from_bounds, roi_mask
from bragg_dask.settings import noise_seed

log = logging.getLogger(__name__)


class OutputError(BraggDaskError):
    """An output file could not be written (disk full, permissions...)."""


@contextlib.contextmanager
def _writing(path: str):
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_outputs(sim, image, stats: ImageStats, outputs, cwd: str = ".") -> list[str]:
    """Write the float/int/PGM/noise files that ``outputs`` asks for; returns the paths written.

    ``image``: the ``(spixels, fpixels)`` float32 array, or a store frame (written band by band).
    """
    import os

    store = sys.modules.get("bragg_dask.store")  # a store frame exists only if the store module is loaded
    if store is not None and isinstance(image, store.StoreFrame):  # (zarr is not imported for a plain run)
        return _write_streamed(sim, image, stats, outputs, cwd)
    if sim.detector.panels:
        return _write_panels(sim, image, stats, outputs, cwd)
    written = []
    in_roi = roi_mask(sim.detector)
    scale = int_scale(stats, outputs.intfile_scale)
    if outputs.floatfile:
        path = os.path.join(cwd, outputs.floatfile)
        with _writing(path):
            write_float_image(path, image)
        written.append(path)
    if outputs.intfile:
        path = os.path.join(cwd, outputs.intfile)
        with _writing(path):
            write_smv(path, sim, int_image(image, in_roi, scale, outputs.adc))
        written.append(path)
    if outputs.pgmfile:
        path = os.path.join(cwd, outputs.pgmfile)
        with _writing(path):
            write_pgm(path, image, in_roi, pgm_scale(stats, outputs.pgm_scale, scale))
        written.append(path)
    if outputs.noisefile:
        path = os.path.join(cwd, outputs.noisefile)
        seed = noise_seed(outputs)
        det = sim.detector
        pixels, overloads = noise_image(image, in_roi, seed=seed, adc=outputs.adc, fpixels=det.fpixels)
        with _writing(path):
            write_smv(path, sim, pixels)
        log.info("noise seed %d, %d overloads", seed, overloads)
        written.append(path)
    return written


def _write_panels(sim, image: np.ndarray, stats: ImageStats, outputs, cwd: str) -> list[str]:
    """The files of a detector of panels (``image``: ``(panel, slow, fast)``): the float file holds the
    panels stacked in order; the int, PGM and noise images are SMV/PGM files, one per panel
    (:func:`~bragg_dask.io.panels.panel_path`: ``image.img`` -> ``image_NAME.img``), each with its panel's
    header, all with the run's one scale (the statistics are over every panel).  The noise of pixel
    ``(s, f)`` of panel ``k`` is that of pixel ``(k * spixels + s, f)`` of the panels stacked into one
    image: every pixel its own draw of the run's one seed."""
    import os

    from bragg_dask.io.panels import panel_path

    det = sim.detector
    written = []
    scale = int_scale(stats, outputs.intfile_scale)
    in_roi = np.ones(det.panel_shape, dtype=bool)  # (no -roi with panels)
    if outputs.floatfile:
        path = os.path.join(cwd, outputs.floatfile)
        with _writing(path):
            write_float_image(path, image)
        written.append(path)
    noise = None
    if outputs.noisefile:
        seed = noise_seed(outputs)
        stacked = image.reshape(-1, det.fpixels)
        pixels, overloads = noise_image(stacked, np.ones(stacked.shape, dtype=bool), seed=seed, adc=outputs.adc)
        noise = pixels.reshape(image.shape)
        log.info("noise seed %d, %d overloads", seed, overloads)
    for k, name in enumerate(det.panel_names):
        psim = sim.panel(k)
        if outputs.intfile:
            path = panel_path(os.path.join(cwd, outputs.intfile), name)
            with _writing(path):
                write_smv(path, psim, int_image(image[k], in_roi, scale, outputs.adc))
            written.append(path)
        if outputs.pgmfile:
            path = panel_path(os.path.join(cwd, outputs.pgmfile), name)
            with _writing(path):
                write_pgm(path, image[k], in_roi, pgm_scale(stats, outputs.pgm_scale, scale))
            written.append(path)
        if noise is not None:
            path = panel_path(os.path.join(cwd, outputs.noisefile), name)
            with _writing(path):
                write_smv(path, psim, noise[k])
            written.append(path)
    return written


def _write_streamed(sim, frame, stats: ImageStats, outputs, cwd: str) -> list[str]:
    import os

    if sim.detector.panels:
        return _write_streamed_panels(sim, frame, stats, outputs, cwd)

    written = []
    bounds = sim.detector.roi_bounds
    scale = int_scale(stats, outputs.intfile_scale)
    if outputs.floatfile:
        path = os.path.join(cwd, outputs.floatfile)
        write_streamed(path, frame, None, bounds)  # the stored float32 pixels as they are
        written.append(path)
    if outputs.intfile:
        path = os.path.join(cwd, outputs.intfile)
        if frame.has(frame.INT):  # made by the run's second pass with this scale and ADC offset
            write_streamed(path, frame, None, bounds, header=smv_header(sim), array=frame.INT)
        else:
            write_streamed(
                path,
                frame,
                lambda band, roi, s0, f0: int_image(band, roi, scale, outputs.adc),
                bounds,
                header=smv_header(sim),
            )
        written.append(path)
    if outputs.pgmfile:
        path = os.path.join(cwd, outputs.pgmfile)
        pscale = pgm_scale(stats, outputs.pgm_scale, scale)
        s, f = frame.shape
        write_streamed(
            path, frame, lambda band, roi, s0, f0: pgm_bytes(band, roi, pscale), bounds, header=pgm_header(f, s, pscale)
        )
        written.append(path)
    if outputs.noisefile:
        path = os.path.join(cwd, outputs.noisefile)
        seed = noise_seed(outputs)
        if frame.has(frame.NOISE):
            write_streamed(path, frame, None, bounds, header=smv_header(sim), array=frame.NOISE)
            log.info("noise seed %d", seed)
        else:
            fp = frame.shape[1]
            write_streamed(
                path,
                frame,
                lambda band, roi, s0, f0: noise_image(band, roi, seed=seed, adc=outputs.adc, fpixels=fp, s0=s0, f0=f0)[
                    0
                ],
                bounds,
                header=smv_header(sim),
            )
            log.info("noise seed %d", seed)
        written.append(path)
    return written


def _write_streamed_panels(sim, frame, stats: ImageStats, outputs, cwd: str) -> list[str]:
    """:func:`_write_panels` from a store's frame of a detector of panels, a band at a time: the float file
    the panels stacked, the SMV and PGM files one per panel (of the store's int and noise images where it
    has them)."""
    import os

    from bragg_dask.io.panels import panel_path

    det = sim.detector
    bounds = (0, det.fpixels - 1, 0, det.spixels - 1)  # (no -roi with panels)
    scale = int_scale(stats, outputs.intfile_scale)
    written = []
    if outputs.floatfile:
        path = os.path.join(cwd, outputs.floatfile)
        write_streamed(path, frame, None, bounds)  # every panel's bands, in order
        written.append(path)
    seed = noise_seed(outputs) if outputs.noisefile else 0
    pscale = pgm_scale(stats, outputs.pgm_scale, scale)
    for k, name in enumerate(det.panel_names):
        one = type(frame)(frame.path, frame.frame, frame.flag, panel=k)
        header = smv_header(sim.panel(k))
        if outputs.intfile:
            path = panel_path(os.path.join(cwd, outputs.intfile), name)
            if one.has(one.INT):
                write_streamed(path, one, None, bounds, header=header, array=one.INT)
            else:
                convert = lambda band, roi, s0, f0: int_image(band, roi, scale, outputs.adc)  # noqa: E731
                write_streamed(path, one, convert, bounds, header=header)
            written.append(path)
        if outputs.pgmfile:
            path = panel_path(os.path.join(cwd, outputs.pgmfile), name)
            convert = lambda band, roi, s0, f0: pgm_bytes(band, roi, pscale)  # noqa: E731
            write_streamed(path, one, convert, bounds, header=pgm_header(det.fpixels, det.spixels, pscale))
            written.append(path)
        if outputs.noisefile:
            path = panel_path(os.path.join(cwd, outputs.noisefile), name)
            if one.has(one.NOISE):
                write_streamed(path, one, None, bounds, header=header, array=one.NOISE)
            else:
                first = k * det.spixels * det.fpixels  # the stacked image's pixel numbers, as _write_panels

                def convert(band, roi, s0, f0, first=first):
                    return noise_image(band, roi, seed=seed, adc=outputs.adc, first_index=first,
                                       fpixels=det.fpixels, s0=s0, f0=f0)[0]  # fmt: skip

                write_streamed(path, one, convert, bounds, header=header)
            written.append(path)
    if outputs.noisefile:
        log.info("noise seed %d", seed)
    return written


def pgm_header(fpixels: int, spixels: int, scale: float) -> bytes:
    """The header :func:`~bragg_dask.io.pgm.write_pgm` writes."""
    return f"P5\n{fpixels} {spixels}\n# pixels scaled by {scale:g}\n255\n".encode("ascii")


def write_streamed(path: str, frame, convert, roi_bounds, *, header: bytes = b"", array: str | None = None) -> None:
    """Write ``header`` then ``convert(tile, in_roi, s0, f0)`` of every tile of ``frame``'s ``array``, a band
    of tiles at a time (``convert=None``: the stored pixels, little-endian), into a temporary file renamed
    to ``path`` at the end."""
    tf = frame.tile_shape[1]
    with _writing(path), atomic_write(path) as fh:
        fh.write(header)
        for s0, s1, band in frame.bands(array or frame.FLOAT):
            if convert is None:
                out = band.astype(band.dtype.newbyteorder("<"), copy=False)
            else:
                parts = []
                for f0 in range(0, band.shape[1], tf):
                    f1 = min(f0 + tf, band.shape[1])
                    roi = mask_from_bounds(roi_bounds, (s0, s1, f0, f1))
                    parts.append(convert(band[:, f0:f1], roi, s0, f0))
                out = np.concatenate(parts, axis=1)
                out = out.astype(out.dtype.newbyteorder("<"), copy=False)
            fh.write(np.ascontiguousarray(out).data.cast("B"))
            del out, band
