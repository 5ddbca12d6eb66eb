"""``bragg-dask export STORE --frame K``: a store's frame as the C program's output files.

Writes the raw float image, the SMV int image, the SMV noise image and the PGM preview of one frame,
so a store feeds ADXV / MOSFLM / DIALS workflows.  The SMV header is rebuilt from the configuration
recorded in the store; the int and noise images come from the store when it has them, otherwise
they are made from the float image (int scale from the frame's statistics or ``-scale``).  The files
are written a band of tiles at a time, so a frame larger than memory exports too.
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np
import zarr

from .config import clip_roi
from .errors import ConfigError, UsageError
from .io.pgm import pgm_bytes
from .io.smv import header_fields_from_config, int_image, smv_header
from .outputs import pgm_header, write_streamed
from .store import StoreFrame


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="bragg-dask export", add_help=False)
    ap.add_argument("store")
    ap.add_argument("--frame", type=int, default=0)
    for name in ("floatfile", "intfile", "noisefile", "pgmfile"):
        ap.add_argument(f"-{name}", default=None)
    ap.add_argument("-scale", type=float, default=0.0)
    ap.add_argument("-pgmscale", type=float, default=0.0)
    ap.add_argument("-adc", type=float, default=40.0)
    ap.add_argument("-seed", type=int, default=None)
    return ap


def export_main(argv: list[str]) -> list[str]:
    """Write the files asked for; returns their paths."""
    a = _parser().parse_args(argv)
    if not any((a.floatfile, a.intfile, a.noisefile, a.pgmfile)):
        raise UsageError("nothing to write: give -floatfile, -intfile, -noisefile and/or -pgmfile", flag="export")
    g = _open(a.store)
    meta = dict(g.attrs)["bragg_dask"]
    n_frames = g["float"].shape[0]
    if not 0 <= a.frame < n_frames:
        raise UsageError(f"frame {a.frame} not in store (0..{n_frames - 1})", flag="--frame")
    if not bool(np.asarray(g["tiles_done"][a.frame]).all()):
        raise ConfigError(f"frame {a.frame} of {a.store} is incomplete (re-run the simulation to finish it)",
                          flag="--frame")
    written: list[str] = []
    frame = StoreFrame(a.store, a.frame)
    fields = header_fields_from_config(meta["config"])
    fields["phi0_rad"] = math.radians(float(g["phi0_deg"][a.frame]))
    s, f = frame.shape
    bounds = clip_roi(meta["config"]["detector"].get("roi"), f, s)
    if a.floatfile:
        write_streamed(a.floatfile, frame, None, bounds)
        written.append(a.floatfile)
    scale = a.scale if a.scale > 0 else float(g["int_scale"][a.frame])
    if a.intfile:
        if frame.has("int") and a.scale <= 0 and a.adc == 40.0:
            write_streamed(a.intfile, frame, None, bounds, header=smv_header(fields), array="int")
        else:
            write_streamed(a.intfile, frame, lambda band, roi, s0, f0: int_image(band, roi, scale, a.adc), bounds,
                           header=smv_header(fields))
        written.append(a.intfile)
    if a.noisefile:
        _write_noise(g, a, frame, bounds, smv_header(fields))
        written.append(a.noisefile)
    if a.pgmfile:
        rmsd = float(g["rmsd"][a.frame])
        pscale = a.pgmscale if a.pgmscale > 0 else (250.0 / (5.0 * rmsd) if rmsd > 0 else scale)
        write_streamed(a.pgmfile, frame, lambda band, roi, s0, f0: pgm_bytes(band, roi, pscale), bounds,
                       header=pgm_header(f, s, pscale))
        written.append(a.pgmfile)
    return written


def _open(path: str) -> zarr.Group:
    if not os.path.exists(path):
        raise UsageError(f"no store at {path}", flag="export")
    try:
        g = zarr.open_group(path, mode="r")
        dict(g.attrs)["bragg_dask"]
    except Exception:  # noqa: BLE001 - any unreadable store is reported the same way
        raise ConfigError(f"{path} is not a bragg_dask store", flag="export") from None
    return g


def _write_noise(g, a, frame, bounds, header: bytes) -> None:
    from .physics.noise import noise_image

    stored_seed = int(g["noise_seed"][a.frame])
    if frame.has("noise") and a.seed is None and a.adc == 40.0:
        write_streamed(a.noisefile, frame, None, bounds, header=header, array="noise")
        return
    seed = a.seed if a.seed is not None else (stored_seed if stored_seed >= 0 else None)
    if seed is None:
        raise UsageError("the store has no noise seed for this frame: give -seed N", flag="-noisefile")
    fp = frame.shape[1]
    write_streamed(a.noisefile, frame, lambda band, roi, s0, f0: noise_image(band, roi, seed=seed, adc=a.adc,
                                                                            fpixels=fp, s0=s0, f0=f0)[0],
                   bounds, header=header)
