"""A store's layout: its arrays (names, labels, chunks and codecs) made, the group's record (configuration,
fingerprint, geometry, PONI), and consolidated metadata.

Part of :mod:`bragg_dask.store` (which re-exports these).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import warnings
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import zarr

from bragg_dask.physics.geometry import pyfai_geometry
from bragg_dask.planning.plan import TilePlan
from bragg_dask.planning.vary import KEYS, drawn_width
from bragg_dask.store.names import BRAGG, FLOAT, FRAME_STATS, INT, NOISE, STAT_FIELDS

if TYPE_CHECKING:
    from zarr.core.metadata.v3 import ArrayV3Metadata
    from zarr.types import AnyArray

#: 2: every chunk carries its CRC-32C and is written even when all fill value (1: neither)
FORMAT_VERSION = 2


def _geometry_attrs(sim) -> dict:
    """The detector's geometry (a detector of panels: the first panel's here, and every panel's in
    ``panels``: name, the C program's vectors, pix0, beam centre and distance, oversample)."""
    det, geo = sim.detector, sim.detector.geometry
    out = _plane_attrs(sim, geo)
    if det.panel_frame is not None:  # a preset's modules in their detector frame (the NXmx export's layout)
        rows, cols, origins = det.panel_frame
        out["frame"] = {"shape": [rows, cols], "origins": [list(o) for o in origins]}
    if det.panels:
        out["panels"] = [
            {"name": name, "oversample": sim.panel(k).detector.oversample, **_plane_attrs(sim, g)}
            for k, (name, g) in enumerate(zip(det.panel_names, det.panels))
        ]
    return out


def _plane_attrs(sim, geo) -> dict:
    det = sim.detector
    return {
        "convention": geo.convention,
        "pivot": geo.pivot,
        "fdet_vector": list(geo.fdet),
        "sdet_vector": list(geo.sdet),
        "odet_vector": list(geo.odet),
        "beam_vector": list(geo.beam),
        "pix0_vector_m": list(geo.pix0_m),
        "beam_center_fast_slow_m": [geo.fbeam_m, geo.sbeam_m],
        "distance_m": geo.distance_m,
        "close_distance_m": geo.close_distance_m,
        "pixel_size_m": det.pixel_size_m,
        "wavelength_m": sim.beam.wavelength_m,
    }


def poni(sim) -> dict | None:
    """The detector as pyFAI reads a PONI file (version 2 keys; lengths in metres, angles in radians),
    so ``pyFAI.load(poni)`` or :func:`bragg_dask.azimuthal` integrates a frame; None for a curved
    detector (``-curved_det``), which pyFAI's flat geometry cannot describe."""
    det, geo = sim.detector, sim.detector.geometry
    if det.curved or det.panels:  # (a detector of panels: each panel's geometry is in the store's attributes)
        return None
    out = {
        "poni_version": 2,
        "detector": "Detector",
        "detector_config": {
            "pixel1": det.pixel_size_m,
            "pixel2": det.pixel_size_m,
            "max_shape": [det.spixels, det.fpixels],
            "orientation": 3,
        },
    }
    out.update(pyfai_geometry(geo.fdet, geo.sdet, geo.odet, geo.beam, geo.pix0_m))
    out["wavelength"] = sim.beam.wavelength_m
    return out


def run_fingerprint(sim, plan: TilePlan, run: dict) -> str:
    """Identity of what the store holds: configuration, tiling and run options (parity, dtype...)."""
    doc = {"sim": sim.fingerprint(), "tile_shape": list(plan.tile_shape), "run": run}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def store_attrs(sim, plan: TilePlan, run: dict) -> dict:
    from bragg_dask import __version__

    return {
        "format_version": FORMAT_VERSION,
        "package": "bragg_dask",
        "package_version": __version__,
        "fingerprint": run_fingerprint(sim, plan, run),
        "run": run,
        "parity": run.get("parity", "spec"),
        "tile_shape": list(plan.tile_shape),
        "units": {
            "float": "photons per pixel",
            "int": "ADU",
            "noise": "ADU",
            "lengths": "m",
            "angles": "rad",
            "wavelength": "m",
            "phi0_deg": "deg",
        },
        "geometry": _geometry_attrs(sim),
        "poni": poni(sim),
        "config": json.loads(json.dumps(sim.to_dict(), default=str)),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "complete": False,
    }


#: every array's ``units`` and ``long_name`` attributes (CF conventions, read by xarray)
LABELS = {
    FLOAT: ("photons", "simulated photons per pixel (the -floatfile image)"),
    INT: ("ADU", "integer image: photons x int_scale + ADC offset (the -intfile image)"),
    NOISE: ("ADU", "integer image with Poisson noise (the -noisefile image)"),
    "tiles_done": ("1", "tile written and durable"),
    "tile_stats": ("1", "partial sums of each tile: " + ", ".join(STAT_FIELDS)),
    "frame": ("1", "frame number"),
    "pixel_mask": ("1", "the detector frame's pixels: 0 on a module, 1 in a gap (NXmx pixel_mask bit 0)"),
    "panel": ("1", "panel number (a detector of panels: the names and geometry in the attributes' geometry.panels)"),
    "phi_deg": ("degree", "spindle angle phi at the start of the frame"),
    "phi0_deg": ("degree", "spindle angle phi at the start of the frame (the record phi_deg is made from)"),
    "x_mm": ("mm", "pixel centre along the fast axis from the detector origin (the C program's Fdet)"),
    "y_mm": ("mm", "pixel centre along the slow axis from the detector origin (the C program's Sdet)"),
    "noise_seed": ("1", "noise seed of the frame (-1: none)"),
    "orientation": ("1", "rotation applied to the crystal (row-major 3 x 3)"),
    "max_I": ("photons", "brightest pixel"),
    "max_slow": ("pixel", "slow index of the brightest pixel"),
    "max_fast": ("pixel", "fast index of the brightest pixel"),
    "mean": ("photons", "mean over rendered pixels"),
    "rms": ("photons", "root mean square over rendered pixels"),
    "rmsd": ("photons", "root mean square deviation from the mean over the ROI"),
    "int_scale": ("ADU/photon", "scale of the integer images"),
}


#: the image arrays' coordinates other than their dimensions (the CF ``coordinates`` attribute)
IMAGE_COORDS = "phi_deg y_mm x_mm"


#: a dataset of --vary: each drawn value's array (``vary_KEY``), and the frame's crystal's reciprocal basis
for _key, (_unit, _) in KEYS.items():
    if _key != "rotation":
        LABELS[f"vary_{_key}"] = (_unit, f"{_key} drawn for the frame (--vary)")
LABELS["reciprocal_basis"] = ("1/Angstrom", "the frame's crystal: rows a*, b*, c* in the lab frame")
LABELS[BRAGG] = ("photons", "the frame's Bragg photons alone, before background, PSF and noise (--labels bragg)")
LABELS.update(
    {
        "refl_hkl": ("1", "reflection: Miller indices h, k, l"),
        "refl_panel": ("1", "reflection: the panel its spot lands on (0: a single panel)"),
        "refl_xy_px": ("pixel", "reflection: predicted spot centroid (fast, slow), pixels from the panel's corner"),
        "refl_d_A": ("Angstrom", "reflection: d-spacing"),
        "refl_F": ("1", "reflection: structure-factor amplitude |F|"),
        "refl_photons": ("photons", "reflection: noiseless Bragg photons summed over the spot's pixels"),
        "refl_active": ("1", "reflection: predicted on a rendered pixel (inside -roi, not masked)"),
        "refl_offset": ("1", "frame k's reflections are rows refl_offset[k]:refl_offset[k + 1]"),
    }
)


def vary_arrays(dataset: dict) -> list[str]:
    """The label arrays of a dataset record (a store's ``run.dataset``): a ``vary_KEY`` per key drawn
    besides the orientation, and ``reciprocal_basis``; none for other datasets."""
    drawn = dataset.get("vary") or {}
    return [f"vary_{k}" for k in KEYS if k in drawn and k != "rotation"] + (["reciprocal_basis"] if drawn else [])


#: the second dimension of a ``vary_KEY`` array of several numbers a frame
_LABEL_DIMS = {"N": "crystal_axis", "cell_rel": "cell_field", "sase": "source", "spectrum_file": "source"}


def _label_shape(name: str, described: dict, n_frames: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """A label array's shape and dimensions: ``reciprocal_basis`` (frame, 3, 3); a ``vary_KEY`` (frame,) or,
    for a key drawing several numbers a frame, (frame, width)."""
    if name == "reciprocal_basis":
        return (n_frames, 3, 3), ("frame", "row", "col")
    key = name[len("vary_") :]
    width = drawn_width(key, described.get(key))
    return ((n_frames, width), ("frame", _LABEL_DIMS[key])) if width else ((n_frames,), ("frame",))


def _zstd_level(name: str) -> int:
    """The zstd level of a new store's array ``name``.  Level 1 gives the size of the default level's (3) on
    these images in two thirds of the time; the float images (photon counts as float32: their mantissas
    compress little at any level, to 0.81 of their size at level 1, 0.86 at -1 on a still of 1024 x 1024)
    take level -1, which encodes them 3.4x as fast (measured: 940 and 3220 MB/s), the same data."""
    return -1 if name in (FLOAT, BRAGG) else 1


def _labelled(g, name: str, coordinates: str = IMAGE_COORDS, **spec):
    """Array ``name`` made with its labels: every chunk (or shard's inner chunk) zstd, then its CRC-32C
    (Zarr v3's ``crc32c`` codec: the store's own readers check it on every read), every chunk written
    even all fill value (a missing chunk is damage)."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    units, long_name = LABELS[name]
    extra = {"coordinates": coordinates} if name in (FLOAT, INT, NOISE) else {}
    spec.setdefault("compressors", [ZstdCodec(level=_zstd_level(name)), Crc32cCodec()])
    return g.create_array(
        name, attributes={"units": units, "long_name": long_name, **extra}, config={"write_empty_chunks": True}, **spec
    )


#: a shard of a dataset's image array holds frames of at most this many bytes of float32 (what a task holds) ...
SHARD_BYTES = 128 << 20
#: ... of at most this many of the kernel's evaluations (a task's work: a few seconds of a core) ...
SHARD_EVALS = 1 << 27
#: ... and the dataset's frames in at least this many shards (its tasks spread over the workers)
MIN_SHARDS = 16


def shard_frames(sim, plan: TilePlan, n_frames: int) -> int:
    """Frames a shard of a dataset's image arrays holds (G): as many as :data:`SHARD_BYTES`,
    :data:`SHARD_EVALS` and :data:`MIN_SHARDS` allow, at least one.  A dataset of 100,000 frames of
    512 x 512 with 5 mosaic domains: 102 frames a shard, 981 shards; of 20 frames of 96 x 96: 2 a shard."""
    from bragg_dask.physics.kernel import batch_points

    pixels = plan.spixels * plan.fpixels
    evals = pixels * batch_points(sim)
    by_size = min(SHARD_BYTES // (4 * pixels), SHARD_EVALS // max(evals, 1))
    return max(1, min(by_size, -(-n_frames // MIN_SHARDS)))


def _init_arrays(
    path: str, plan: TilePlan, attrs: dict, n_frames: int, with_int: bool, with_noise: bool, per_shard: int = 1
) -> None:
    """The store's arrays; a dataset's (several frames, not of panels) images ``per_shard`` frames a shard."""
    g = zarr.open_group(path, mode="a", zarr_format=3)
    gs, gf = plan.grid
    ts, tf = plan.tile_shape
    # a detector of panels: a panel dimension (a chunk per tile of each panel), else as nanoBragg's image
    panel: tuple[int, ...] = (plan.panels,) if plan.panels else ()
    panel_dim = ("panel",) if plan.panels else ()
    img = dict(
        shape=(n_frames, *panel, plan.spixels, plan.fpixels),
        chunks=(1, *(1,) * len(panel), ts, tf),
        dimension_names=("frame", *panel_dim, "slow", "fast"),
    )
    # a dataset: a shard of ``per_shard`` frames (inner chunks the frames' tiles), its done flags and
    # statistics a chunk of those frames; the tiles of a detector of panels are a chunk each
    whole = n_frames > 1 and not plan.panels
    if whole:
        img["shards"] = (per_shard, gs * ts, gf * tf)
    per_tile = (per_shard, gs, gf) if whole else (1, *(1,) * len(panel), 1, 1)
    labels = vary_arrays(attrs["run"].get("dataset") or {})
    coords = " ".join([IMAGE_COORDS, *labels])  # (xarray: the frame's drawn values beside its image)
    _labelled(g, FLOAT, coords, dtype="float32", fill_value=0.0, **img)
    for name, wanted in ((INT, with_int), (NOISE, with_noise)):
        if wanted:
            _labelled(g, name, coords, dtype="uint16", fill_value=0, **img)
    if ((attrs["run"].get("dataset") or {}).get("vary") or {}).get("labels") == "bragg":
        _labelled(g, BRAGG, coords, dtype="float32", fill_value=0.0, **img)
    described = ((attrs["run"].get("dataset") or {}).get("vary")) or {}
    for name in labels:
        shape, dims = _label_shape(name, described, n_frames)
        _labelled(g, name, dtype="float64", fill_value=0.0, shape=shape, chunks=shape, dimension_names=dims)
    _tile_arrays(g, plan, n_frames, per_tile)
    _mask_array(g, attrs["geometry"].get("frame"), plan)
    per_frame: dict[str, Any] = dict(shape=(n_frames,), chunks=(n_frames,), dimension_names=("frame",))
    _labelled(g, "frame", dtype="int64", fill_value=0, **per_frame)[:] = np.arange(n_frames)
    for name in ("phi_deg", "phi0_deg"):
        _labelled(g, name, dtype="float64", fill_value=0.0, **per_frame)
    _labelled(g, "noise_seed", dtype="int64", fill_value=-1, **per_frame)
    _labelled(
        g,
        "orientation",
        shape=(n_frames, 3, 3),
        chunks=(n_frames, 3, 3),
        dtype="float64",
        fill_value=0.0,
        dimension_names=("frame", "row", "col"),
    )
    for name in FRAME_STATS:
        _labelled(g, name, dtype="float64", fill_value=float("nan"), **per_frame)
    pixel_mm = attrs["geometry"]["pixel_size_m"] * 1e3
    for name, n, dim in (("x_mm", plan.fpixels, "fast"), ("y_mm", plan.spixels, "slow")):
        _labelled(g, name, shape=(n,), chunks=(n,), dtype="float64", fill_value=0.0, dimension_names=(dim,))[:] = (
            np.arange(n) + 0.5
        ) * pixel_mm
    attrs["arrays"] = sorted(g.array_keys())  # the arrays the run writes (a frame's int/noise chunks expected)
    g.attrs["bragg_dask"] = attrs
    consolidate(path)


def _tile_arrays(g, plan: TilePlan, n_frames: int, per_tile: tuple[int, ...]) -> None:
    """``tiles_done`` and ``tile_stats`` (chunks ``per_tile``), and a detector of panels' ``panel``
    coordinate (each panel's index; the names and geometry in the attributes)."""
    grid, dims = plan.chunk_grid, ("frame", *(("panel",) if plan.panels else ()), "tile_slow", "tile_fast")
    _labelled(g, "tiles_done", shape=(n_frames, *grid), chunks=per_tile, dtype="bool", fill_value=False,
              dimension_names=dims)  # fmt: skip
    _labelled(g, "tile_stats", shape=(n_frames, *grid, len(STAT_FIELDS)), chunks=(*per_tile, len(STAT_FIELDS)),
              dtype="float64", fill_value=0.0, dimension_names=(*dims, "stat"))  # fmt: skip
    if plan.panels:
        _labelled(g, "panel", shape=(plan.panels,), chunks=(plan.panels,), dtype="int64", fill_value=0,
                  dimension_names=("panel",))[:] = np.arange(plan.panels)  # fmt: skip


def _mask_array(g, frame: dict | None, plan: TilePlan) -> None:
    """A preset's store: ``pixel_mask``, its frame's pixels in NXmx's bits (1: a gap between modules)."""
    if frame is None:
        return
    shape = tuple(frame["shape"])
    dims = ("detector_slow", "detector_fast")
    arr = _labelled(g, "pixel_mask", shape=shape, chunks=shape, dtype="uint32", fill_value=0, dimension_names=dims)
    arr[...] = frame_mask(frame, plan.spixels, plan.fpixels)


def frame_mask(frame: dict, spixels: int, fpixels: int) -> np.ndarray:
    """A preset's frame ``(rows, cols)`` uint32: 0 on its modules' pixels (``spixels x fpixels`` each), 1
    (NXmx's ``pixel_mask`` bit 0, a gap) elsewhere; ``frame``: the store's ``geometry.frame`` record."""
    mask = np.ones(tuple(frame["shape"]), dtype=np.uint32)
    for s0, f0 in frame["origins"]:
        mask[s0 : s0 + spixels, f0 : f0 + fpixels] = 0
    return mask


def consolidate(path: str) -> None:
    """Consolidate metadata so ``xarray.open_zarr`` opens the store in one read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr flags v3 consolidated metadata as not yet in the spec
        zarr.consolidate_metadata(path)


def run_record(settings, dataset, noise_seed: int | None) -> dict:
    """The run options a store records (its fingerprint includes them): parity, emulated C threads,
    dtype, the dataset and the noise seed."""
    return {
        "parity": settings.parity,
        "c_threads": settings.c_threads if settings.parity == "c" else None,
        "dtype": settings.dtype,
        "dataset": dataset.to_dict(),
        "noise_seed": noise_seed,
    }


def ensure_image_array(path: str, name: str) -> None:
    """Create the image array ``name`` (:data:`INT`, :data:`NOISE`: uint16 ADU) where the store lacks it,
    chunked (and sharded) as :data:`FLOAT`."""
    if name not in (INT, NOISE):
        raise ValueError(f"not an integer image array: {name!r}")
    g = zarr.open_group(path, mode="r+")
    if name in g:
        return
    fl = cast("AnyArray", g[FLOAT])  # an array: the float image of a store this package made (Zarr v3)
    extra: dict[str, Any] = {"shards": fl.shards} if fl.shards is not None else {}
    codecs = cast("ArrayV3Metadata", fl.metadata).codecs
    if codecs and not any(type(c).__name__ == "Crc32cCodec" for c in _inner_codecs(fl)):
        extra["compressors"] = [c for c in _inner_codecs(fl)[1:]]  # an older store's: as its float array
    _labelled(
        g,
        name,
        shape=fl.shape,
        chunks=fl.chunks,
        dtype="uint16",
        fill_value=0,
        dimension_names=cast("ArrayV3Metadata", fl.metadata).dimension_names,
        **extra,
    )
    consolidate(path)


def _inner_codecs(array) -> list:
    """An array's chunk codecs (a sharded array's inner chunks')."""
    codecs = list(array.metadata.codecs)
    if len(codecs) == 1 and hasattr(codecs[0], "index_codecs"):
        return list(codecs[0].codecs)
    return codecs
