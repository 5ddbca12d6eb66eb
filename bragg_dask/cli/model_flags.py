"""The main command's detector-model flags (noisify's, applied to a ``--zarr`` store's frames after the run):
their parser entries.  Part of :mod:`bragg_dask.cli` (``cli.options`` adds them to the service parser).
"""

from __future__ import annotations

import argparse


def model_flags(ap: argparse.ArgumentParser) -> None:
    """The detector model applied to a --zarr store's frames after the run (noisify's flags)."""
    ap.add_argument(
        "--psf",
        choices=("gauss", "fiber"),
        default=None,
        help="detector model (needs --zarr): point spread function, noisify's -psf (default: none)",
    )
    ap.add_argument(
        "--psf-fwhm",
        type=float,
        default=None,
        dest="psf_fwhm",
        metavar="UM",
        help="detector model: the PSF's full width at half maximum, um (default: 46)",
    )
    ap.add_argument(
        "--psf-radius",
        type=float,
        default=None,
        dest="psf_radius",
        metavar="PX",
        help="detector model: the PSF's radius, pixels; 0: automatic (default: 0)",
    )
    ap.add_argument(
        "--readout", type=float, default=None, metavar="ADU", help="detector model: readout noise, ADU rms (default: 0)"
    )
    ap.add_argument(
        "--flicker",
        type=float,
        default=None,
        metavar="F",
        help="detector model: beam flicker noise, a fraction of the photons (default: 0)",
    )
    ap.add_argument(
        "--calibration",
        type=float,
        default=None,
        metavar="F",
        help="detector model: calibration error, a fraction rms per pixel (default: 0.03)",
    )
    ap.add_argument(
        "--gain", type=float, default=None, metavar="G", help="detector model: gain, ADU per photon (default: 1)"
    )
