"""``bragg-dask noisify``: nanoBragg's companion program ``noisify``, a drop-in.

    bragg-dask noisify -floatfile F.bin [-intfile F.img] [-noisefile F.img] [-pgmfile F.pgm] [-nopgm]
        [-scale S] [-fluence PH/M2] [-gain ADU/PH] [-adc ADU] [-bits 16|32]
        [-psf gauss|fiber] [-psf_fwhm UM] [-psf_radius PX] [-nonoise] [-seed N] [-calib_seed N]
        [-flicker FRAC] [-calibration FRAC] [-readout ADU] [-pixel MM] [-detpixels N]
        [-detpixels_x N] [-detpixels_y N] [-distance MM] [-lambda A] [-Xbeam MM] [-Ybeam MM]
        [-phi DEG] [-osc DEG] [-header F.img] [--parity spec|c] [--device cpu|cuda] [--tile N]

Reads a raw float image (photons/pixel), writes the noiseless int image (``-intfile``, default
intimage.img), its PGM preview (``-pgmfile``, default image.pgm, unless ``-nopgm``) and, unless
``-nonoise``, the noisy image (``-noisefile``, default noiseimage.img), each with noisify's SMV header.
As noisify, the PSF blurs the noiseless image only with ``-nonoise`` (otherwise it blurs the counted
photons of the noisy image).  ``--parity c`` reproduces noisify's off-by-one PSF bounds; the noise is
counter-based (tiling-independent), not noisify's random sequence.  Flags noisify reads but does not
use (``-detsize*``, ``-badpix_seed``, ``-hotpix_seed``) are accepted.  ``-header F.img`` takes the
detector size and pixel from an SMV image and writes its header on the outputs, as noisify does.
``--tile N`` computes the PSF N x N pixels at a time, each tile from its halo (the same image).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import numpy as np

from bragg_dask.errors import ConfigError, InputFileError, UsageError, reading
from bragg_dask.io.atomic import atomic_write
from bragg_dask.physics.constants import DEFAULT_FLUENCE, R_E_SQR

log = logging.getLogger(__name__)

_VALUE = {  # canonical name -> (spellings, type)
    "floatfile": (("-floatfile", "-floatimage", "-bin"), str), "intfile": (("-intfile", "-intimage"), str),
    "noisefile": (("-noisefile", "-noiseimage"), str), "pgmfile": (("-pgmfile", "-pgmimage"), str),
    "header": (("-header",), str), "scale": (("-scale",), float), "fluence": (("-fluence",), float),
    "gain": (("-gain",), float), "adc": (("-adc",), float), "bits": (("-bits",), int), "psf": (("-psf",), str),
    "psf_fwhm": (("-psf_fwhm", "-psf_size", "-psf_sigma", "-psf_width"), float),
    "psf_radius": (("-psf_radius", "-psf_rad"), float), "pixel": (("-pixel",), float),
    "detpixels": (("-detpixels",), int), "detpixels_x": (("-detpixels_x",), int),
    "detpixels_y": (("-detpixels_y",), int), "detsize": (("-detsize",), float),
    "detsize_x": (("-detsize_x",), float), "detsize_y": (("-detsize_y",), float),
    "distance": (("-distance",), float), "lambda": (("-lambda",), float), "Xbeam": (("-Xbeam",), float),
    "Ybeam": (("-Ybeam",), float), "phi": (("-phi",), float), "osc": (("-osc",), float),
    "readout": (("-readout", "-readout_noise", "-readnoise"), float), "flicker": (("-flicker",), float),
    "calibration": (("-calibration",), float), "seed": (("-seed",), int), "calib_seed": (("-calib_seed",), int),
    "badpix_seed": (("-badpix_seed",), int), "hotpix_seed": (("-hotpix_seed",), int),
    "parity": (("--parity",), str), "device": (("--device",), str), "tile": (("--tile",), int),
}
_SWITCH = {"-nonoise": "nonoise", "-nopgm": "nopgm"}
_SPELLING = {s: (name, typ) for name, (spellings, typ) in _VALUE.items() for s in spellings}
_DEFAULTS = {"intfile": "intimage.img", "noisefile": "noiseimage.img", "pgmfile": "image.pgm", "scale": 1.0,
             "fluence": DEFAULT_FLUENCE, "gain": 1.0, "adc": 40.0, "bits": 16, "psf_fwhm": 46.0, "psf_radius": 0.0,
             "pixel": 0.1, "distance": 100.0, "lambda": 1.0, "phi": 0.0, "osc": 1.0, "readout": 0.0,
             "flicker": 0.0, "calibration": 0.03, "calib_seed": 123456789, "parity": "spec", "device": "cpu"}


#: the simulation's detector-model service flags: (option, service flag, noisify's flag)
MODEL_FLAGS = (("psf", "--psf", "-psf"), ("psf_fwhm", "--psf-fwhm", "-psf_fwhm"),
               ("psf_radius", "--psf-radius", "-psf_radius"), ("readout", "--readout", "-readout"),
               ("flicker", "--flicker", "-flicker"), ("calibration", "--calibration", "-calibration"),
               ("gain", "--gain", "-gain"))


def model_given(opts) -> list[str]:
    """The detector-model service flags given (``--psf``, ``--readout``, ...), in table order."""
    return [flag for attr, flag, _ in MODEL_FLAGS if getattr(opts, attr, None) is not None]


def parse_args(argv: list[str]) -> dict:
    """noisify's flags (and ``--parity``, ``--device``) -> ``{name: value}`` with defaults."""
    out: dict = dict(_DEFAULTS, nonoise=False, nopgm=False)
    typed: dict = {}  # canonical name -> the spelling given (errors name the flag as the user typed it)
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _SWITCH:
            out[_SWITCH[a]] = True
        elif a in _SPELLING:
            name, typ = _SPELLING[a]
            if i + 1 >= len(argv):
                raise UsageError("needs a value", flag=a)
            out[name] = _value(a, argv[i + 1], typ)
            typed[name] = a
            i += 1
        elif not a.startswith("-") and "floatimage.bin" in a:  # noisify takes such a name without a flag
            out["floatfile"] = a
        else:
            raise UsageError(f"unknown flag or argument {a!r} (see noisify's flags; bragg-dask noisify --help)")
        i += 1
    _check(out, typed)
    return out


def _value(flag: str, text: str, typ):
    try:
        return typ(text) if typ is not int else int(text, 10)
    except ValueError:
        raise UsageError(f"not a{'n integer' if typ is int else ' number' if typ is float else ''}: {text!r}",
                         flag=flag) from None


#: ranges of noisify's numbers: name -> (low, high, low included); every value must also be finite
_RANGES = {"scale": (0.0, 1e30, False), "fluence": (0.0, 1e300, False), "gain": (0.0, 1e30, False),
           "adc": (-1e9, 1e9, True), "psf_fwhm": (0.0, 1e9, True), "psf_radius": (0.0, 1e4, True),
           "pixel": (0.0, 1e9, False), "detsize": (0.0, 1e12, False), "detsize_x": (0.0, 1e12, False),
           "detsize_y": (0.0, 1e12, False), "distance": (0.0, 1e12, False), "lambda": (0.0, 1e12, False),
           "Xbeam": (-1e12, 1e12, True), "Ybeam": (-1e12, 1e12, True), "phi": (-1e9, 1e9, True),
           "osc": (-1e9, 1e9, True), "readout": (0.0, 1e9, True), "flicker": (0.0, 1e3, True),
           "calibration": (0.0, 1e3, True), "detpixels": (0, 2**31 - 1, True), "detpixels_x": (0, 2**31 - 1, True),
           "detpixels_y": (0, 2**31 - 1, True), "tile": (1, 2**31 - 1, True), "seed": (-(2**63) + 1, 2**63 - 1, True),
           "calib_seed": (-(2**63) + 1, 2**63 - 1, True), "badpix_seed": (-(2**63) + 1, 2**63 - 1, True),
           "hotpix_seed": (-(2**63) + 1, 2**63 - 1, True)}


def _check(o: dict, typed: dict | None = None) -> None:
    """Every value in its range (finite, the flag named as typed); the choices among theirs."""
    typed = typed or {}

    def flag(name: str) -> str:
        return typed.get(name, "-" + name if not name.startswith("-") else name)

    if "floatfile" not in o:
        raise UsageError("noisify needs the float image to read: -floatfile F.bin", flag="-floatfile")
    if o["parity"] not in ("spec", "c"):
        raise UsageError(f"spec or c, got {o['parity']!r}", flag="--parity")
    if o["bits"] not in (16, 32):
        raise ConfigError(f"16 or 32, got {o['bits']}", flag=flag("bits"))
    if "psf" in o and o["psf"] not in ("gauss", "fiber"):
        raise ConfigError(f"unknown PSF type {o['psf']!r} (gauss or fiber)", flag=flag("psf"))
    for name, (lo, hi, closed) in _RANGES.items():
        v = o.get(name)
        if v is None:
            continue
        if not (math.isfinite(v) and (lo <= v if closed else lo < v) and v <= hi):
            where = f"{'>=' if closed else '>'} {lo:g}" if v < lo or not math.isfinite(v) or v == lo else f"<= {hi:g}"
            raise ConfigError(f"must be finite and {where}, got {v:g}", flag=flag(name))


def detector_shape(o: dict, pixels: int) -> tuple[int, int]:
    """(slow, fast) pixels of the float image of ``pixels`` values, as noisify finds them: the flags,
    one side from the other, or (neither given) the most square factorisation."""
    x = o.get("detpixels_x", o.get("detpixels", 0)) or 0
    y = o.get("detpixels_y", o.get("detpixels", 0)) or 0
    if not x and not y:
        x = int(np.sqrt(pixels))
        while x > 0 and pixels % x:
            x -= 1
        x, y = (x, pixels // x) if x > 0 else (pixels, 1)
    elif not y:
        y = pixels // x
    elif not x:
        x = pixels // y
    if x * y != pixels or pixels == 0:
        raise ConfigError(f"{o['floatfile']} holds {pixels} pixels, not the detector's {x} x {y} = {x * y}",
                          flag="-floatfile")
    return y, x


def read_float(o: dict) -> np.ndarray:
    """The float image, flat float32."""
    path = o["floatfile"]
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InputFileError(path, None, exc.strerror or str(exc), flag="-floatfile") from None
    if len(data) % 4:
        raise ConfigError(f"{path} is {len(data)} bytes, not a whole number of 4-byte floats", flag="-floatfile")
    image = np.frombuffer(data, dtype="<f4").astype(np.float32)
    bad = ~np.isfinite(image) | (image < 0)
    if bad.any():
        k = int(np.argmax(bad))
        raise ConfigError(f"{path} holds {int(bad.sum())} values that are not photon counts (NaN, infinite or "
                          f"negative), the first at value {k} ({image[k]:g})", flag="-floatfile")
    return image


def import_header(o: dict) -> bytes | None:
    """``-header F.img``: its header, written as it is on the outputs; its SIZE1/SIZE2 set the detector
    and its PIXEL_SIZE (mm) the pixel (the PSF's scale), as noisify does."""
    if "header" not in o:
        return None
    from bragg_dask.io.smv import read_smv_frame, value_of
    from bragg_dask.io.textfile import read_bytes

    with reading("-header"):
        header, pixels = read_smv_frame(o["header"])
        raw = read_bytes(o["header"])[: len(header)]
    o["detpixels_y"], o["detpixels_x"] = pixels.shape
    size = value_of(header, "PIXEL_SIZE")
    if size is not None and size > 0:
        o["pixel"] = size
    return raw


def psf_of(o: dict, shape: tuple[int, int]):
    """The PSF of the flags, or None (no ``-psf``, or a zero FWHM: noisify skips it)."""
    from bragg_dask.detector.psf import PSF

    if "psf" not in o or o["psf_fwhm"] <= 0:
        return None
    fwhm_m = o["psf_fwhm"] / 1e6
    if o["parity"] == "c":  # noisify keeps the FWHM in single precision
        fwhm_m = float(np.float32(fwhm_m))
    radius = int(o["psf_radius"])  # noisify truncates the radius to an integer; 0 is automatic
    return PSF(o["psf"], fwhm_m / (o["pixel"] / 1000.0), radius or None, max(shape))


def _blur(psf, photons: np.ndarray, o: dict) -> np.ndarray:
    import torch

    from bragg_dask.detector.psf import apply_psf, apply_psf_tiled

    parity = o["parity"]
    t = torch.as_tensor(photons, dtype=torch.float64, device=o["device"])
    if o.get("tile"):
        out = apply_psf_tiled(psf, t, o["tile"], parity).cpu().numpy()
    else:
        out = apply_psf(psf, t, parity).cpu().numpy()
    return out.astype(np.float32).astype(np.float64) if parity == "c" else out  # noisify's float image


@dataclasses.dataclass
class Images:
    """What noisify writes: the noiseless int image, the noisy one (or None), overloads."""

    int_image: np.ndarray
    noise_image: np.ndarray | None
    overloads: int
    seed: int


def photons_of(o: dict, raw: np.ndarray) -> np.ndarray:
    """The photons (float64) of float-image values ``raw`` (``-fluence``, ``-scale``); in c parity rounded
    to single precision, as noisify's photon image is."""
    photons = raw.astype(np.float64) * (o["fluence"] * R_E_SQR * o["scale"])
    return photons.astype(np.float32).astype(np.float64) if o["parity"] == "c" else photons


def noise_seed_of(o: dict) -> int:
    """``-seed``, else a time-based seed, reported (as the simulator does) when noise is drawn."""
    if "seed" in o:
        return int(o["seed"])
    seed = int(time.time())
    if not o["nonoise"]:
        log.info("noise seed %d", seed)
    return seed


def noisify(o: dict, raw: np.ndarray, shape: tuple[int, int]) -> Images:
    """The images of the float image ``raw`` (flat, photons/pixel before ``-scale``), ``shape`` (S, F)."""
    from bragg_dask.detector.adu import adu_noiseless, adu_noisy, photon_counts

    photons = photons_of(o, raw.reshape(shape))
    psf = psf_of(o, shape)
    seed = noise_seed_of(o)
    if o["nonoise"]:
        blurred = _blur(psf, photons, o) if psf else photons
        return Images(adu_noiseless(blurred, o["gain"], o["adc"], o["bits"]), None, 0, seed)
    index = np.arange(photons.size, dtype=np.int64).reshape(shape)
    counts = photon_counts(photons, index, seed=seed, calib_seed=int(o["calib_seed"]), flicker=o["flicker"],
                           calibration=o["calibration"])
    if psf:
        counts = _blur(psf, counts, o)
    noisy, overloads = adu_noisy(counts, index, seed=seed, gain=o["gain"], adc=o["adc"], readout=o["readout"],
                                 bits=o["bits"])
    return Images(adu_noiseless(photons, o["gain"], o["adc"], o["bits"]), noisy, overloads, seed)


def smv_header(o: dict, shape: tuple[int, int]) -> bytes:
    """noisify's own SMV header (512 bytes): type by ``-bits``, beam centre from ``-Xbeam/-Ybeam``."""
    S, F = shape
    px = o["pixel"] / 1000.0
    xbeam = o["Xbeam"] / 1000.0 if "Xbeam" in o else px * F / 2.0
    ybeam = o["Ybeam"] / 1000.0 if "Ybeam" in o else px * S / 2.0
    kind = "unsigned_short" if o["bits"] == 16 else "long_integer"
    text = ("{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\n"
            f"TYPE={kind};\nSIZE1={F};\nSIZE2={S};\n"
            "PIXEL_SIZE=%g;\nDISTANCE=%g;\n" % (px * 1000.0, o["distance"] / 1000.0 * 1000.0)
            + "WAVELENGTH=%g;\nBEAM_CENTER_X=%g;\nBEAM_CENTER_Y=%g;\n" % (o["lambda"], xbeam * 1000.0,
                                                                           (px * S - ybeam) * 1000)
            + "PHI=%g;\nOSC_START=%g;\nOSC_RANGE=%g;\n" % (o["phi"], o["phi"], o["osc"])
            + "DETECTOR_SN=000;\nBEAMLINE=fake;\n}\f").encode("ascii")
    return text + b" " * max(0, 512 - len(text))


def _write(path: str, *chunks: bytes) -> str:
    try:
        with atomic_write(path) as fh:
            for c in chunks:
                fh.write(c)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def write_outputs(o: dict, shape: tuple[int, int], images: Images, header: bytes | None = None) -> list[str]:
    """The files noisify writes, in its order: int image, PGM, noise image (``header``: an imported
    one, else noisify's own)."""
    header = header or smv_header(o, shape)
    dt = "<u2" if o["bits"] == 16 else "<u4"
    written = [_write(o["intfile"], header, images.int_image.astype(dt).tobytes())]
    if not o["nopgm"]:
        pgm = np.minimum(images.int_image, 255).astype(np.uint8)
        head = f"P5\n{shape[1]} {shape[0]}\n# pixels scaled by 1\n255\n".encode("ascii")
        written.append(_write(o["pgmfile"], head, pgm.tobytes()))
    if images.noise_image is not None:
        written.append(_write(o["noisefile"], header, images.noise_image.astype(dt).tobytes()))
    return written


def noisify_main(argv: list[str]) -> list[str]:
    """The subcommand: the paths written."""
    o = parse_args(argv)
    imported = import_header(o)
    raw = read_float(o)
    shape = detector_shape(o, raw.size)
    check_run(o)
    from bragg_dask.nanobragg.checks import check_paths

    outputs = [("-intfile", o["intfile"])] + ([] if o["nopgm"] else [("-pgmfile", o["pgmfile"])]) + (
        [] if o["nonoise"] else [("-noisefile", o["noisefile"])])
    inputs = [("-floatfile", o["floatfile"])] + ([("-header", o["header"])] if "header" in o else [])
    check_paths(outputs, inputs=inputs)  # writable, not into a store, not over an input or another output
    from bragg_dask.io.atomic import batch

    with batch():  # every output placed at the end, or none
        return write_outputs(o, shape, noisify(o, raw, shape), imported)


def check_run(o: dict) -> None:
    """What the flags ask of this machine and of the PSF: a CUDA device that is there, an explicit
    radius in c parity."""
    if o["device"] != "cpu":
        import torch

        if o["device"].startswith("cuda") and not torch.cuda.is_available():
            raise UsageError("CUDA was asked for but torch sees no CUDA device here", flag="--device")
    if o["parity"] == "c" and "psf" in o and o["psf_fwhm"] > 0 and int(o["psf_radius"]) == 0:
        raise ConfigError("--parity c needs an explicit radius: noisify's automatic radius is undefined "
                          "(the square root of a negative number for pixels under 0.01 photons)",
                          flag="-psf_radius")
