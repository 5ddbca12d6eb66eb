"""The C program's variables after its argument loop (:class:`RawParams`, SI units; -1/NaN mean unset),
its output options and a parsed command line: what :mod:`bragg_dask.nanobragg.args` fills and
:func:`bragg_dask.nanobragg.resolve.resolve` derives the simulation from.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from bragg_dask.config import Simulation
from bragg_dask.physics.constants import DEFAULT_ADC_OFFSET, DEFAULT_FLUENCE

#: the C program's default ``mosaic_seed`` (L357): ran1's seed for the mosaic domains
DEFAULT_MOSAIC_RNG_SEED = -12345678


NAN = float("nan")


class Interpolation(enum.IntEnum):
    """The user's ``-interpolate`` / ``-nointerpolate`` setting (the last flag wins; neither: AUTO).

    AUTO turns tricubic interpolation on when any of Na, Nb, Nc is <= 2 (C L1778-1790).  An int
    enum, so that it compares and serialises as the C program's 0/1/2.
    """

    OFF = 0
    ON = 1
    AUTO = 2


@dataclass
class RawParams:
    """The C program's variables after the argument loop (SI units; -1/NaN mean unset)."""

    n_cells: list = field(default_factory=lambda: [1, 1, 1])
    cell: list | None = None  # a, b, c (A), alpha, beta, gamma (deg); 0 = not given
    misset: tuple | None = None  # radians
    misset_random: bool = False
    sample_xyz: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    xbeam: float = NAN
    ybeam: float = NAN
    xclose: float = NAN
    yclose: float = NAN
    orgx: float = NAN
    orgy: float = NAN
    pivot: str = "beam"
    convention: str = "mosflm"
    vectors: dict = field(default_factory=dict)
    distance: float = 0.1
    close_distance: float = NAN
    detector_thick: float = 0.0
    detector_mu: float = -1.0
    detector_thicksteps: int = -1
    twotheta: float = 0.0
    rot: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    detsize_f: float = 0.1024
    detsize_s: float = 0.1024
    fpixels: int = 0
    spixels: int = 0
    curved: bool = False
    pixel_size: float = 0.0001
    point_pixel: bool = False
    polarization: float = 0.0
    nopolar: bool = False
    oversample_thick: bool = False
    oversample_polar: bool = False
    oversample_omega: bool = False
    oversample: int = -1
    roi: list | None = None
    lambda0: float = 1.0e-10
    fluence: float = DEFAULT_FLUENCE
    flux: float = 0.0
    exposure: float = 1.0
    beamsize: float = 1e-4
    mosaic_spread: float = -1.0
    mosaic_domains: int = -1
    dispersion: float = 0.0
    dispsteps: int = -1
    hdivrange: float = -1.0
    vdivrange: float = -1.0
    hdivstep: float = -1.0
    vdivstep: float = -1.0
    hdivsteps: int = -1
    vdivsteps: int = -1
    round_div: bool = True
    adc: float = DEFAULT_ADC_OFFSET
    phi0: float = 0.0
    osc: float = -1.0
    phistep: float = -1.0
    phisteps: int = -1
    dmin: float = 0.0
    matfile: str | None = None
    hklfile: str | None = None
    default_F: float = 0.0
    sourcefile: str | None = None
    stolfile: str | None = None
    floatfile: str = "floatimage.bin"
    intfile: str = "intimage.img"
    pgmfile: str = "image.pgm"
    noisefile: str = "noiseimage.img"
    write_pgm: bool = True
    write_noise: bool = True
    intfile_scale: float = 0.0
    pgm_scale: float = 0.0
    progress: bool = True
    interpolate: Interpolation = Interpolation.AUTO
    shape: str = "square"
    fudge: float = 1.0
    noise_seed: int | None = None  # -seed N: N, as given (None: the run picks a time-based one)
    mosaic_rng_seed: int = DEFAULT_MOSAIC_RNG_SEED  # ran1's seed, -N for -mosaic_seed N (C L1105)
    misset_rng_seed: int | None = None  # ran1's seed, -N for -misset_seed N (C L1109); None: -time
    water: float = 0.0
    mask: np.ndarray | None = None
    mask_file: str | None = None
    given: set = field(default_factory=set)
    flag_of: dict = field(default_factory=dict)  # attribute -> the flag that set it (for messages)
    flags: list = field(default_factory=list)  # (flag, values) in command-line order
    header_files: dict = field(default_factory=dict)  # -img/-mask -> file name


@dataclass(frozen=True)
class OutputOptions:
    """What files to write and how (the C program's output flags).

    ``intfile_scale``/``pgm_scale``: photons -> ADU (0: automatic); ``adc``: offset, ADU;
    ``seed``: the noise seed the user gave (``-seed N`` -> N; ``None``: not given).
    """

    floatfile: str | None = "floatimage.bin"
    intfile: str | None = "intimage.img"
    pgmfile: str | None = None
    noisefile: str | None = None
    intfile_scale: float = 0.0
    pgm_scale: float = 0.0
    adc: float = DEFAULT_ADC_OFFSET
    seed: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class ParsedArgs:
    """A parsed command line: the simulation, the output options and the raw variables (for messages)."""

    simulation: Simulation
    outputs: OutputOptions
    raw: RawParams
