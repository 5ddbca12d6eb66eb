"""``bragg-dask export STORE --frame K``: a store's frame as the C program's output files.

Writes the raw float image, the SMV int image, the SMV noise image and the PGM preview of one frame,
so a store feeds ADXV / MOSFLM / DIALS workflows.  The SMV header is rebuilt from the configuration
recorded in the store; the int and noise images come from the store when it has them, otherwise
they are made from the float image (int scale from the frame's statistics or ``-scale``).  The files
are written a band of tiles at a time, so a frame larger than memory exports too.

``--nxmx F.h5`` and ``--cbf F.cbf`` write the frame (or, with ``--all-frames``, every frame) for
crystallographic processing programs: a NeXus/NXmx file, Pilatus-style miniCBF files
(``export_mx.py``).
"""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

from bragg_dask.config import clip_roi
from bragg_dask.errors import ConfigError, UsageError
from bragg_dask.io.panels import panel_config, panel_names_of, panel_path
from bragg_dask.io.pgm import pgm_bytes
from bragg_dask.io.smv import header_fields_from_config, int_image, smv_header
from bragg_dask.nanobragg.outputs import pgm_header, write_streamed
from bragg_dask.physics.constants import DEFAULT_ADC_OFFSET
from bragg_dask.store import FrameRecord, StoreFrame, check_frames, frame_record


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="bragg-dask export", add_help=False)
    ap.add_argument("store")
    ap.add_argument("--frame", type=int, default=None)
    ap.add_argument("--all-frames", action="store_true", dest="all_frames")
    ap.add_argument("--nxmx", default=None)
    ap.add_argument("--cbf", default=None)
    ap.add_argument("--image", choices=(StoreFrame.INT, StoreFrame.NOISE), default=None)  # the arrays' own names
    for name in ("floatfile", "intfile", "noisefile", "pgmfile"):
        ap.add_argument(f"-{name}", default=None)
    ap.add_argument("-scale", type=float, default=0.0)
    ap.add_argument("-pgmscale", type=float, default=0.0)
    ap.add_argument("-adc", type=float, default=DEFAULT_ADC_OFFSET)
    ap.add_argument("-seed", type=int, default=None)
    return ap


def export_main(argv: list[str]) -> list[str]:
    """Write the files asked for; returns their paths."""
    a = _parser().parse_args(argv)
    c_files = any((a.floatfile, a.intfile, a.noisefile, a.pgmfile))
    if not c_files and not (a.nxmx or a.cbf):
        raise UsageError(
            "nothing to write: give -floatfile, -intfile, -noisefile, -pgmfile, --nxmx and/or --cbf", flag="export"
        )
    if a.all_frames and a.frame is not None:
        raise UsageError("give --frame K (one frame) or --all-frames, not both", flag="--all-frames")
    if a.all_frames and c_files:
        raise UsageError(
            "the C program's files hold one frame: --all-frames is for --nxmx and --cbf; "
            "give --frame K for -floatfile, -intfile, -noisefile, -pgmfile",
            flag="--all-frames",
        )
    if a.image is not None and not (a.nxmx or a.cbf):
        raise UsageError(
            "chooses the image of --nxmx and --cbf (the C program's files are named by their flags: "
            "-intfile, -noisefile)",
            flag="--image",
        )
    from bragg_dask.nanobragg.checks import check_paths

    names = _panel_names(a.store)  # a store of panels: the SMV and PGM files one per panel
    files = [(f"-{n}", getattr(a, n)) for n in ("floatfile", "intfile", "noisefile", "pgmfile") if getattr(a, n)]
    if names:
        if a.cbf:
            raise UsageError(
                "a miniCBF holds one panel: a store of a detector of panels is written as NXmx (--nxmx, a "
                "module per panel) or as SMV files, one per panel (-intfile, -noisefile)",
                flag="--cbf",
            )
        files = [(flag, path) for flag, path in files if flag == "-floatfile"] + [
            (flag, panel_path(path, n)) for flag, path in files if flag != "-floatfile" for n in names
        ]
    # every output checked before anything is written (the series' CBF names again by export_mx, with them)
    check_paths(
        files + ([("--nxmx", a.nxmx)] if a.nxmx else []) + ([("--cbf", a.cbf)] if a.cbf and not a.all_frames else []),
        inputs=[("STORE", a.store)],
    )
    from bragg_dask.io.atomic import batch

    written: list[str] = []
    with batch():  # every output placed at the end, or none: a late failure leaves nothing behind
        if a.nxmx or a.cbf:
            from bragg_dask.cli.export_mx import export_mx

            written += export_mx(a)
        if c_files:
            a.frame = a.frame or 0
            written += _export_c_files(a)
    return written


def _export_c_files(a) -> list[str]:
    """The C program's files of frame ``a.frame``."""
    rec = frame_record(a.store, a.frame)
    if not rec.complete:
        raise ConfigError(
            f"frame {a.frame} of {a.store} is incomplete (re-run the simulation to finish it)", flag="--frame"
        )
    check_frames(a.store, [a.frame], None, "export")  # a damaged frame: one line, before any file
    frame = StoreFrame(a.store, a.frame, flag="export")
    if frame.panels:
        return _export_panels(a, rec, frame)
    fields = header_fields_from_config(rec.config)
    fields["phi0_rad"] = math.radians(rec.phi0_deg)
    s, f = frame.shape
    bounds = clip_roi(rec.config["detector"].get("roi"), f, s)
    return _write_c_files(a, rec, frame, fields, bounds)


def _write_c_files(a, rec: FrameRecord, frame: StoreFrame, fields: dict, bounds, first_index: int = 0) -> list[str]:
    """The files of ``a`` from ``frame`` (``(slow, fast)``) with the SMV header ``fields``; ``first_index``:
    the noise's first pixel number (a panel's in the panels stacked)."""
    written: list[str] = []
    s, f = frame.shape[-2:]
    # no -adc of the export's own: the store's int/noise images as the run made them (with the run's -adc)
    own_adc = a.adc != DEFAULT_ADC_OFFSET
    if a.floatfile:
        write_streamed(a.floatfile, frame, None, bounds)
        written.append(a.floatfile)
    scale = a.scale if a.scale > 0 else rec.int_scale
    if a.intfile:
        if frame.has(frame.INT) and a.scale <= 0 and not own_adc:
            write_streamed(a.intfile, frame, None, bounds, header=smv_header(fields), array=frame.INT)
        else:
            write_streamed(
                a.intfile,
                frame,
                lambda band, roi, s0, f0: int_image(band, roi, scale, a.adc),
                bounds,
                header=smv_header(fields),
            )
        written.append(a.intfile)
    if a.noisefile:
        _write_noise(rec, a, frame, bounds, smv_header(fields), first_index)
        written.append(a.noisefile)
    if a.pgmfile:
        pscale = a.pgmscale if a.pgmscale > 0 else (250.0 / (5.0 * rec.rmsd) if rec.rmsd > 0 else scale)
        write_streamed(
            a.pgmfile,
            frame,
            lambda band, roi, s0, f0: pgm_bytes(band, roi, pscale),
            bounds,
            header=pgm_header(f, s, pscale),
        )
        written.append(a.pgmfile)
    return written


def _panel_names(store: str) -> tuple[str, ...]:
    """The store's panel names (none: a single-panel detector's, or a store that cannot be read: its
    reader says what is wrong)."""
    from bragg_dask.store import store_metadata

    try:
        return panel_names_of(store_metadata(store).get("config") or {})
    except Exception:  # noqa: BLE001 - frame_record names what is wrong with the store
        return ()


def _export_panels(a, rec: FrameRecord, frame: StoreFrame) -> list[str]:
    """The C program's files of a frame of a detector of panels: the float file the panels stacked in
    order, the SMV and PGM files one per panel (``image.img`` -> ``image_NAME.img``), each with its panel's
    header; the noise of a pixel as that of the panels stacked into one image."""
    written: list[str] = []
    _, s, f = frame.shape
    bounds = (0, f - 1, 0, s - 1)
    if a.floatfile:
        write_streamed(a.floatfile, frame, None, bounds)
        written.append(a.floatfile)
    for k, name in enumerate(panel_names_of(rec.config)):
        one = StoreFrame(a.store, a.frame, flag="export", panel=k)
        fields = header_fields_from_config(panel_config(rec.config, k))
        fields["phi0_rad"] = math.radians(rec.phi0_deg)
        per = argparse.Namespace(**vars(a))
        for attr in ("intfile", "noisefile", "pgmfile"):
            setattr(per, attr, panel_path(getattr(a, attr), name) if getattr(a, attr) else None)
        per.floatfile = None
        written += _write_c_files(per, rec, one, fields, bounds, first_index=k * s * f)
    return written


def _write_noise(rec: FrameRecord, a, frame: StoreFrame, bounds, header: bytes, first_index: int = 0) -> None:
    from bragg_dask.detector.noise import noise_image

    if frame.has(frame.NOISE) and a.seed is None and a.adc == DEFAULT_ADC_OFFSET:
        write_streamed(a.noisefile, frame, None, bounds, header=header, array=frame.NOISE)
        return
    seed = a.seed if a.seed is not None else rec.noise_seed
    if seed is None:
        raise UsageError("the store has no noise seed for this frame: give -seed N", flag="-noisefile")
    fp = frame.shape[-1]
    write_streamed(
        a.noisefile,
        frame,
        lambda band, roi, s0, f0: noise_image(
            band, roi, seed=seed, adc=a.adc, first_index=first_index, fpixels=fp, s0=s0, f0=f0
        )[0],
        bounds,
        header=header,
    )
