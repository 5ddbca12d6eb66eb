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

import logging

import numpy as np

from bragg_dask import store
from bragg_dask.detector.flags import VALUE, check_device, model_of, noise_seed, parse_args
from bragg_dask.detector.model import DetectorModel
from bragg_dask.detector.pipeline import Images, whole_image
from bragg_dask.errors import ConfigError, InputFileError, UsageError, reading
from bragg_dask.io.atomic import atomic_write

log = logging.getLogger(__name__)

#: file-mode flags that mean nothing for a store (its frames are read and its arrays written)
_FILE_FLAGS = ("floatfile", "intfile", "noisefile", "pgmfile", "header", "tile")


def noisify_cli(argv: list[str]) -> list[str]:
    """``bragg-dask noisify``: a store's frames when the first argument is a store, else the file mode."""
    if argv and not argv[0].startswith("-") and store.looks_like_store(argv[0]):
        store.check_metadata(argv[0], "noisify")  # a damaged store: one line naming the file
        return noisify_store_main(argv[0], argv[1:])
    return noisify_main(argv)


def noisify_main(argv: list[str]) -> list[str]:
    """The file mode: the paths written."""
    o = parse_args(argv)
    imported = import_header(o)
    raw = read_float(o)
    shape = detector_shape(o, raw.size)
    model = model_of(o)  # the -header's pixel taken
    check_device(model.device)
    from bragg_dask.nanobragg.checks import check_paths

    outputs = (
        [("-intfile", o["intfile"])]
        + ([] if o["nopgm"] else [("-pgmfile", o["pgmfile"])])
        + ([] if o["nonoise"] else [("-noisefile", o["noisefile"])])
    )
    inputs = [("-floatfile", o["floatfile"])] + ([("-header", o["header"])] if "header" in o else [])
    check_paths(outputs, inputs=inputs)  # writable, not into a store, not over an input or another output
    from bragg_dask.io.atomic import batch

    images = whole_image(model, raw, shape, noise_seed(model.seed, model.noise))
    with batch():  # every output placed at the end, or none
        return write_outputs(o, shape, images, imported)


def _store_flags(argv: list[str]) -> tuple[int | None, bool, list[str]]:
    """``--frame K`` and ``--all-frames`` out of ``argv``: ``(frame, all_frames, the rest)``."""
    frame, every, rest = None, False, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--all-frames":
            every = True
        elif a == "--frame":
            if i + 1 >= len(argv):
                raise UsageError("needs a value", flag="--frame")
            try:
                frame = int(argv[i + 1], 10)
            except ValueError:
                raise UsageError(f"not an integer: {argv[i + 1]!r}", flag="--frame") from None
            i += 1
        else:
            rest.append(a)
        i += 1
    if every and frame is not None:
        raise UsageError("give --frame K (one frame) or --all-frames, not both", flag="--all-frames")
    return frame, every, rest


def store_model(path: str, argv: list[str]) -> DetectorModel:
    """The model of noisify's flags for a store: no file flags, 16 bits."""
    for name in _FILE_FLAGS:
        for spelling in VALUE[name][0]:
            if spelling in argv:
                raise UsageError(
                    f"means nothing with a store (its float frames are read, its {store.INT} and "
                    f"{store.NOISE} arrays written)",
                    flag=spelling,
                )
    o = parse_args(argv + ["-floatfile", path])
    if o["bits"] != 16:
        raise ConfigError(
            f"a store's {store.INT} and {store.NOISE} arrays are 16-bit: -bits {o['bits']} is for files",
            flag="-bits",
        )
    model = model_of(o)
    check_device(model.device)
    return model


def noisify_store_main(path: str, argv: list[str]) -> list[str]:
    """``bragg-dask noisify STORE ...``: the frames' int and noise arrays written; what was written."""
    from bragg_dask.detector.store_pass import DetectorPass, frames_of, noisify_frames
    from bragg_dask.store.lock import StoreLock

    frame, every, rest = _store_flags(argv)
    job = DetectorPass(path, store_model(path, rest))
    frames = frames_of(path, frame, every)
    lock = StoreLock(path).acquire()
    try:
        job.begin()
        for jobs in job.shards(frames):  # a dataset's: a shard's frames written together
            noisify_frames(jobs)
        job.record(frames)
    finally:
        lock.release()
    return [job.summary(frames, every)]


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
        raise ConfigError(
            f"{o['floatfile']} holds {pixels} pixels, not the detector's {x} x {y} = {x * y}", flag="-floatfile"
        )
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
        raise ConfigError(
            f"{path} holds {int(bad.sum())} values that are not photon counts (NaN, infinite or "
            f"negative), the first at value {k} ({image[k]:g})",
            flag="-floatfile",
        )
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


def smv_header(o: dict, shape: tuple[int, int]) -> bytes:
    """noisify's own SMV header (512 bytes): type by ``-bits``, beam centre from ``-Xbeam/-Ybeam``."""
    S, F = shape
    px = o["pixel"] / 1000.0
    xbeam = o["Xbeam"] / 1000.0 if "Xbeam" in o else px * F / 2.0
    ybeam = o["Ybeam"] / 1000.0 if "Ybeam" in o else px * S / 2.0
    kind = "unsigned_short" if o["bits"] == 16 else "long_integer"
    text = (
        "{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\n"
        f"TYPE={kind};\nSIZE1={F};\nSIZE2={S};\n"
        "PIXEL_SIZE=%g;\nDISTANCE=%g;\n"
        % (px * 1000.0, o["distance"] / 1000.0 * 1000.0)
        + "WAVELENGTH=%g;\nBEAM_CENTER_X=%g;\nBEAM_CENTER_Y=%g;\n"
        % (o["lambda"], xbeam * 1000.0, (px * S - ybeam) * 1000)
        + "PHI=%g;\nOSC_START=%g;\nOSC_RANGE=%g;\n" % (o["phi"], o["phi"], o["osc"])
        + "DETECTOR_SN=000;\nBEAMLINE=fake;\n}\f"
    ).encode("ascii")
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
