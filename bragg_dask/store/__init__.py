"""The Zarr v3 store of a run: one group, images chunked by tile, per-frame metadata and statistics.

Layout (docs/architecture.md section 6)::

    float        (frame, slow, fast) float32 photons/pixel, one chunk per tile (a dataset of frames of
                 several tiles: a shard per frame, the tiles its inner chunks; see whole_frames)
    int, noise   (frame, slow, fast) uint16, optional: the C program's int and noisy images
    tiles_done   (frame, tile_slow, tile_fast) bool, written by each tile's task after its chunk
    tile_stats   (frame, tile_slow, tile_fast, stat) float64 partial sums of each tile
    frame, phi_deg; x_mm; y_mm   coordinates: (frame,); (fast,); (slow,) pixel centres in mm
    phi0_deg, orientation, noise_seed                    per-frame metadata
    max_I, max_slow, max_fast, mean, rms, rmsd, int_scale  per-frame statistics
    attrs        "bragg_dask": configuration (JSON), fingerprint, geometry, units, version, parity,
                 "complete" (false until the run has finished)

Every array has ``dimension_names``, ``units`` and ``long_name`` (:data:`LABELS`), and the image
arrays name their coordinates; the group records the detector as a pyFAI PONI (:func:`poni`).  So
``xarray.open_zarr(path)`` gives labelled arrays; nothing from this package is needed to read a store.
All-zero chunks are legitimate data: completeness is
``tiles_done``, never the presence of a chunk.

Safety (see :func:`open_store`):

* one writer: a run holds ``flock`` on ``<store>/.bragg_dask.lock`` (pid, host and start time
  inside) until it ends; a second run on the store is refused.  The kernel drops the lock of a
  killed run, so its stale lock file is simply taken over.
* ``--overwrite`` replaces only a bragg_dask store (or an empty folder), never other content; the
  new store is built beside the old one and swapped in once the run has started, so there is no
  moment with neither.
* a tile is marked done only after its chunk and statistics are written and ``fsync``-ed (zarr
  writes each chunk to a temporary file renamed into place); ``complete`` is false while a run
  writes.  A write fault (disk full, read-only) ends the run with a :class:`StoreError`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as _dt
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import uuid
import warnings

import numpy as np
import zarr

from ..errors import BraggDaskError, ConfigError
from ..physics.geometry import pyfai_geometry
from ..plan import TilePlan
from ..store_lock import LOCK_NAME, StoreLock, alive
from .chunks import OpenStore, fsync_enabled, fsync_path, opened, sync_chunk, writable
from .integrity import DamagedChunk, check_metadata, damage_error, looks_like_store
from .names import FLOAT, FRAME_STATS, INT, NOISE, STAT_FIELDS
from .reading import (
    FrameRecord,
    StoreFrame,
    frame_count,
    frame_record,
    frame_tiles,
    frames_phi0_deg,
    image_arrays,
    read_frame,
    store_metadata,
    tile_stats_rows,
    tiles_done,
)
from .verify import Problem, Scan, check_frames, scan, usable_tiles
from .writing import (
    drop_frame_images,
    read_tile_image,
    stats_from_row,
    stats_row,
    whole_frames,
    write_frame_image,
    write_frame_metadata,
    write_frames_stats,
    write_tile_image,
    write_tiles,
)

log = logging.getLogger(__name__)
# zarr lists a group's folder in its own event-loop thread (consolidating, listing arrays) and warns there
# about the files beside the arrays that this package keeps (the lock): not for the user's eyes
warnings.filterwarnings("ignore", message=r"Object at \.bragg_dask\.", category=UserWarning)

__all__ = [
    "check_frames", "check_metadata", "consolidate", "damage_error", "DamagedChunk", "drop_frame_images",
    "drop_response", "ensure_image_array", "FLOAT", "FORMAT_VERSION", "frame_count", "frame_record", "FRAME_STATS",
    "frame_tiles", "FrameRecord", "frames_phi0_deg", "fsync_enabled", "fsync_path", "image_arrays", "IMAGE_COORDS",
    "INT", "is_store", "LABELS", "LOCK_NAME", "looks_like_store", "mark_complete", "NOISE", "note_fault",
    "open_or_create", "open_store", "opened", "OpenStore", "OtherConfiguration", "poni", "Problem", "read_frame",
    "read_tile_image", "record_response", "run_fingerprint", "run_record", "scan", "Scan", "STAT_FIELDS",
    "stats_from_row", "stats_row", "store_attrs", "store_fault", "store_metadata", "stored_noise_seed",
    "stored_tile_shape", "StoreError", "StoreFrame", "StoreSession", "sync_chunk", "sync_response", "tile_stats_rows",
    "tiles_done", "usable_tiles", "whole_frames", "write_frame_image", "write_frame_metadata", "write_frames_stats",
    "write_tile_image", "write_tiles",
]

#: 2: every chunk carries its CRC-32C and is written even when all fill value (1: neither)
FORMAT_VERSION = 2
# errors of the file system under the store (a store fault, reported in one line), not of the network
_FAULT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG,
                 errno.ENOENT, errno.ESTALE}


class StoreError(BraggDaskError):
    """Writing the store failed (disk full, read-only, ...); the store is left incomplete."""


class OtherConfiguration(ConfigError):
    """The store at the path holds a run of another configuration (and no --overwrite was given)."""


def _geometry_attrs(sim) -> dict:
    det, geo = sim.detector, sim.detector.geometry
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
    if det.curved:
        return None
    out = {"poni_version": 2, "detector": "Detector",
           "detector_config": {"pixel1": det.pixel_size_m, "pixel2": det.pixel_size_m,
                               "max_shape": [det.spixels, det.fpixels], "orientation": 3}}
    out.update(pyfai_geometry(geo.fdet, geo.sdet, geo.odet, geo.beam, geo.pix0_m))
    out["wavelength"] = sim.beam.wavelength_m
    return out


def run_fingerprint(sim, plan: TilePlan, run: dict) -> str:
    """Identity of what the store holds: configuration, tiling and run options (parity, dtype...)."""
    doc = {"sim": sim.fingerprint(), "tile_shape": list(plan.tile_shape), "run": run}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def store_attrs(sim, plan: TilePlan, run: dict) -> dict:
    from .. import __version__

    return {
        "format_version": FORMAT_VERSION,
        "package": "bragg_dask",
        "package_version": __version__,
        "fingerprint": run_fingerprint(sim, plan, run),
        "run": run,
        "parity": run.get("parity", "spec"),
        "tile_shape": list(plan.tile_shape),
        "units": {"float": "photons per pixel", "int": "ADU", "noise": "ADU", "lengths": "m", "angles": "rad",
                  "wavelength": "m", "phi0_deg": "deg"},
        "geometry": _geometry_attrs(sim),
        "poni": poni(sim),
        "config": json.loads(json.dumps(sim.to_dict(), default=str)),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "complete": False,
    }


class StoreSession:
    """An opened store, locked for this run.  A new store, or a replacement (``--overwrite``), waits
    beside its path until :meth:`commit` (the run has reached its cluster); :meth:`close` releases the
    lock and removes what was not committed, so a run that fails to start leaves nothing behind."""

    def __init__(self, path: str, resumed: bool, lock: StoreLock, *, staged: str | None = None,
                 old_lock: StoreLock | None = None, fresh: bool = False) -> None:
        self.path, self.resumed, self.lock = path, resumed, lock
        self.staged, self.old_lock, self.fresh = staged, old_lock, fresh
        _reserve(staged or path)
        self.was_complete = False  # a resumed store that a run had completed (its frames' images kept)
        self.done = None  # a resumed store's tiles done and whole (store.usable_tiles), once checked

    @property
    def group(self) -> zarr.Group:
        """The group (the staged replacement until :meth:`commit`)."""
        return zarr.open_group(self.staged or self.path, mode="r+")

    def record_command(self, command: dict | None) -> None:
        """The command line that made the store (``{"argv": [...], "cwd": ...}``; not part of its identity),
        what ``bragg-dask verify --repair`` runs again: recorded in a new store, or in one that has none."""
        if not command:
            return
        g = self.group
        meta = dict(g.attrs["bragg_dask"])
        if meta.get("command") and self.resumed:
            return
        meta["command"] = command
        g.attrs["bragg_dask"] = meta
        consolidate(self.staged or self.path)

    def commit(self) -> None:
        """Put a staged store in place: a new one onto its path (nothing there, or an empty folder), a
        replacement in place of the old store (atomically where the OS can)."""
        if self.staged is None:
            return
        if self.fresh:
            return self._place_new()
        aside = _sibling(self.path, "old")
        try:
            if _exchange(self.staged, self.path):
                aside = self.staged  # the old store now sits at the staged name
            else:
                os.rename(self.path, aside)
                try:
                    os.rename(self.staged, self.path)
                except OSError:
                    os.rename(aside, self.path)  # put the old store back
                    raise
        except OSError as exc:
            raise store_fault(exc, self.path) or exc from None
        self.lock.moved(self.path)
        if self.old_lock is not None:
            self.old_lock.moved(aside)
        self.staged = None
        shutil.rmtree(aside, ignore_errors=True)
        if self.old_lock is not None:
            self.old_lock.release()
            self.old_lock = None
        log.info("replaced %s", self.path)

    def _place_new(self) -> None:
        try:
            os.rename(self.staged, self.path)  # onto nothing, or onto an empty folder
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise ConfigError(f"{self.path} appeared while this run was starting (another run?); the same "
                                  "command again resumes or refuses it", flag="--zarr") from None
            raise store_fault(exc, self.path) or exc from None
        self.lock.moved(self.path)
        self.staged = None

    def close(self) -> None:
        if self.staged is not None:
            shutil.rmtree(self.staged, ignore_errors=True)
            self.staged = None
        _release_reserve(self.path)
        self.lock.release()
        if self.old_lock is not None:
            self.old_lock.release()
            self.old_lock = None


def open_store(path: str, sim, plan: TilePlan, *, run: dict | None = None, n_frames: int = 1,
               with_int: bool = False, with_noise: bool = False, overwrite: bool = False) -> StoreSession:
    """Lock the store at ``path`` for resuming, or create it; see the module notes.

    * an existing store of the same configuration is resumed (``overwrite``: replaced);
    * a store of another configuration is refused unless ``overwrite``; then a new store is staged
      beside it and swapped in by :meth:`StoreSession.commit`;
    * a missing path or an empty folder becomes a new store, built beside it and put in place by
      :meth:`StoreSession.commit` (a run that never reaches its cluster leaves nothing);
    * anything else is refused, ``overwrite`` or not.
    """
    path = os.path.abspath(path)
    if os.path.islink(path):  # a link to the store: work where it points
        path = os.path.realpath(path)
    run = dict(run or {})
    attrs = store_attrs(sim, plan, run)
    layout = dict(n_frames=n_frames, with_int=with_int, with_noise=with_noise)
    try:
        if _classify(path) == "store":
            if not overwrite:  # a damaged store is never resumed (--overwrite replaces it)
                check_metadata(path, "--zarr")
            return _open_existing(path, plan, attrs, layout, overwrite)
        staged, lock = _build(path, plan, attrs, **layout)
        return StoreSession(path, False, lock, staged=staged, fresh=True)  # put in place by commit()
    except OSError as exc:
        raise store_fault(exc, path) or exc from None


def _classify(path: str) -> str:
    """``missing``, ``empty`` (folder), ``store`` (a bragg_dask store) - or refuses anything else."""
    if not os.path.lexists(path):
        return "missing"
    if not os.path.isdir(path):
        raise ConfigError(f"{path} exists and is not a bragg_dask store (not a folder); refusing to touch it, "
                          "even with --overwrite: choose another path", flag="--zarr")
    entries = os.listdir(path)
    if not entries:
        return "empty"
    meta = _existing_attrs(path)
    if meta is None and looks_like_store(path):
        check_metadata(path, "--zarr")  # a store whose own record is damaged: said so, in one line
    if meta is None or meta.get("package") != "bragg_dask":
        raise ConfigError(f"{path} holds content that is not a bragg_dask store ({_sample(entries)}); refusing "
                          "to touch it, even with --overwrite: choose another path", flag="--zarr")
    return "store"


def _foreign_entries(path: str) -> list[str]:
    """What a bragg_dask store does not hold: anything but its metadata, arrays, lock, zarr's partial files."""
    def ours(e: str) -> bool:
        full = os.path.join(path, e)
        if e in ("zarr.json", LOCK_NAME, RESERVE_NAME) or e.endswith(".partial"):
            return True
        return os.path.isdir(full) and not os.path.islink(full) and os.path.exists(os.path.join(full, "zarr.json"))

    return [e for e in os.listdir(path) if not ours(e)]


def _sample(names: list[str]) -> str:
    names = sorted(names)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _open_existing(path: str, plan: TilePlan, attrs: dict, layout: dict, overwrite: bool) -> StoreSession:
    lock = StoreLock(path).acquire()
    try:
        _sweep_siblings(path)
        existing = _existing_attrs(path) or {}
        if existing.get("fingerprint") == attrs["fingerprint"] and not overwrite:
            session = StoreSession(path, True, lock)
            # every file checked while the store still says what it was: damaged tiles marked not done
            session.done = usable_tiles(path, bool(existing.get("complete") or existing.get("was_complete")), log)
            session.was_complete = _prepare_resume(path)
            return session
        if not overwrite:
            raise OtherConfiguration(f"{path} exists with another configuration; pass --overwrite to replace it",
                                     flag="--zarr")
        foreign = _foreign_entries(path)
        if foreign:
            raise ConfigError(f"{path} is a bragg_dask store with other content in it ({_sample(foreign)}); "
                              "refusing to replace it, even with --overwrite", flag="--zarr")
        staged, new_lock = _build(path, plan, attrs, **layout)
        return StoreSession(path, False, new_lock, staged=staged, old_lock=lock)
    except BaseException:
        lock.release()
        raise


def _prepare_resume(path: str) -> bool:
    """Before writing again: drop zarr's leftover temporary files, and say ``complete: false``; returns
    whether the store was complete."""
    for root, _, files in os.walk(path):
        for name in files:
            if name.endswith(".partial"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(root, name))
    g = zarr.open_group(path, mode="r+")
    meta = dict(g.attrs["bragg_dask"])
    # a run that completed it once: kept until this run completes it again (a resume that fails on the way
    # must not take the store for one never finished: its detector-model frames would be dropped)
    was = bool(meta.get("complete") or meta.get("was_complete"))
    if meta.get("complete"):
        meta["complete"] = False
        meta["was_complete"] = True
        g.attrs["bragg_dask"] = meta
        consolidate(path)
    return was


def _sweep_siblings(path: str) -> None:
    """Remove what a killed run left beside the store: a staged replacement or a replaced store."""
    d, name = os.path.split(path)
    pattern = re.compile(re.escape(f".{name}.") + r"(new|old)-(\d+)-[0-9a-f]{8}$")
    for entry in os.listdir(d):
        m = pattern.match(entry)
        if m and not alive({"host": socket.gethostname(), "pid": int(m.group(2))}):
            log.info("removing %s, left by a run that is gone", entry)
            shutil.rmtree(os.path.join(d, entry), ignore_errors=True)


def _sibling(path: str, what: str) -> str:
    d, name = os.path.split(path)
    return os.path.join(d, f".{name}.{what}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _build(path: str, plan: TilePlan, attrs: dict, *, n_frames: int, with_int: bool,
           with_noise: bool) -> tuple[str, StoreLock]:
    """A new, locked store in a temporary folder beside ``path``; returns ``(folder, lock)``."""
    staged = _sibling(path, "new")
    os.makedirs(os.path.dirname(staged), exist_ok=True)
    os.mkdir(staged)
    lock = StoreLock(staged).acquire()
    try:
        _init_arrays(staged, plan, attrs, n_frames, with_int, with_noise)
    except BaseException:
        lock.release()
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged, lock


#: every array's ``units`` and ``long_name`` attributes (CF conventions, read by xarray)
LABELS = {
    FLOAT: ("photons", "simulated photons per pixel (the -floatfile image)"),
    INT: ("ADU", "integer image: photons x int_scale + ADC offset (the -intfile image)"),
    NOISE: ("ADU", "integer image with Poisson noise (the -noisefile image)"),
    "tiles_done": ("1", "tile written and durable"),
    "tile_stats": ("1", "partial sums of each tile: " + ", ".join(STAT_FIELDS)),
    "frame": ("1", "frame number"),
    "phi_deg": ("degree", "spindle angle phi at the start of the frame"),
    "phi0_deg": ("degree", "spindle angle phi at the start of the frame (the record phi_deg is made from)"),
    "x_mm": ("mm", "pixel centre along the fast axis from the detector origin (the C program's Fdet)"),
    "y_mm": ("mm", "pixel centre along the slow axis from the detector origin (the C program's Sdet)"),
    "noise_seed": ("1", "noise seed of the frame (-1: none)"),
    "orientation": ("1", "rotation applied to the crystal (row-major 3 x 3)"),
    "max_I": ("photons", "brightest pixel"), "max_slow": ("pixel", "slow index of the brightest pixel"),
    "max_fast": ("pixel", "fast index of the brightest pixel"), "mean": ("photons", "mean over rendered pixels"),
    "rms": ("photons", "root mean square over rendered pixels"),
    "rmsd": ("photons", "root mean square deviation from the mean over the ROI"),
    "int_scale": ("ADU/photon", "scale of the integer images"),
}
#: the image arrays' coordinates other than their dimensions (the CF ``coordinates`` attribute)
IMAGE_COORDS = "phi_deg y_mm x_mm"


def _labelled(g, name: str, **spec):
    """Array ``name`` made with its labels: every chunk (or shard's inner chunk) zstd, then its CRC-32C
    (Zarr v3's ``crc32c`` codec: the store's own readers check it on every read), every chunk written
    even all fill value (a missing chunk is damage)."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    units, long_name = LABELS[name]
    extra = {"coordinates": IMAGE_COORDS} if name in (FLOAT, INT, NOISE) else {}
    spec.setdefault("compressors", [ZstdCodec(level=0), Crc32cCodec()])
    return g.create_array(name, attributes={"units": units, "long_name": long_name, **extra},
                          config={"write_empty_chunks": True}, **spec)


def _init_arrays(path: str, plan: TilePlan, attrs: dict, n_frames: int, with_int: bool, with_noise: bool) -> None:
    g = zarr.open_group(path, mode="a", zarr_format=3)
    gs, gf = plan.grid
    ts, tf = plan.tile_shape
    img = dict(shape=(n_frames, plan.spixels, plan.fpixels), chunks=(1, ts, tf),
               dimension_names=("frame", "slow", "fast"))
    # a dataset of frames of several tiles: a shard per frame (inner chunks the tiles), its done flags and
    # statistics a chunk each (frames of one tile have a chunk per frame already, written straight)
    whole = n_frames > 1 and gs * gf > 1
    if whole:
        img["shards"] = (1, gs * ts, gf * tf)
    per_tile = (1, gs, gf) if whole else (1, 1, 1)
    _labelled(g, FLOAT, dtype="float32", fill_value=0.0, **img)
    for name, wanted in ((INT, with_int), (NOISE, with_noise)):
        if wanted:
            _labelled(g, name, dtype="uint16", fill_value=0, **img)
    _labelled(g, "tiles_done", shape=(n_frames, gs, gf), chunks=per_tile, dtype="bool", fill_value=False,
              dimension_names=("frame", "tile_slow", "tile_fast"))
    _labelled(g, "tile_stats", shape=(n_frames, gs, gf, len(STAT_FIELDS)), chunks=(*per_tile, len(STAT_FIELDS)),
              dtype="float64", fill_value=0.0, dimension_names=("frame", "tile_slow", "tile_fast", "stat"))
    per_frame = dict(shape=(n_frames,), chunks=(n_frames,), dimension_names=("frame",))
    _labelled(g, "frame", dtype="int64", fill_value=0, **per_frame)[:] = np.arange(n_frames)
    for name in ("phi_deg", "phi0_deg"):
        _labelled(g, name, dtype="float64", fill_value=0.0, **per_frame)
    _labelled(g, "noise_seed", dtype="int64", fill_value=-1, **per_frame)
    _labelled(g, "orientation", shape=(n_frames, 3, 3), chunks=(n_frames, 3, 3), dtype="float64",
              fill_value=0.0, dimension_names=("frame", "row", "col"))
    for name in FRAME_STATS:
        _labelled(g, name, dtype="float64", fill_value=float("nan"), **per_frame)
    pixel_mm = attrs["geometry"]["pixel_size_m"] * 1e3
    for name, n, dim in (("x_mm", plan.fpixels, "fast"), ("y_mm", plan.spixels, "slow")):
        _labelled(g, name, shape=(n,), chunks=(n,), dtype="float64", fill_value=0.0,
                  dimension_names=(dim,))[:] = (np.arange(n) + 0.5) * pixel_mm
    attrs["arrays"] = sorted(g.array_keys())  # the arrays the run writes (a frame's int/noise chunks expected)
    g.attrs["bragg_dask"] = attrs
    consolidate(path)


_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); ``False`` where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def open_or_create(path: str, sim, plan: TilePlan, *, run: dict | None = None, n_frames: int = 1,
                   with_int: bool = False, with_noise: bool = False,
                   overwrite: bool = False) -> tuple[zarr.Group, bool]:
    """Open (or create) the store and return ``(group, resumed)`` without keeping it locked."""
    session = open_store(path, sim, plan, run=run, n_frames=n_frames, with_int=with_int, with_noise=with_noise,
                         overwrite=overwrite)
    try:
        session.commit()
        return session.group, session.resumed
    finally:
        session.close()


def store_fault(exc: BaseException, path: str | None) -> StoreError | None:
    """A one-line :class:`StoreError` for a file-system error under the store, else ``None``."""
    if path is None or not isinstance(exc, OSError) or exc.errno not in _FAULT_ERRNOS:
        return None
    path = os.path.abspath(path)
    where = os.path.abspath(exc.filename) if isinstance(exc.filename, str) else path
    d, name = os.path.split(path)
    if not (where == path or where.startswith(path + os.sep) or where.startswith(os.path.join(d, f".{name}."))
            or where == d):
        return None
    why = exc.strerror or str(exc)
    return StoreError(f"--zarr: writing {path} failed: {why} ({where}); the store is left incomplete: fix the "
                      "cause (free space, permissions) and re-run the same command to finish it")


#: room kept in a store while a run writes it (:func:`_reserve`), so that a full disk can still take the
#: fault's record
RESERVE_NAME = ".bragg_dask.reserve"


def _reserve(path: str) -> None:
    """Best effort: a file of zeros in the store, four times its group record (at least 256 KiB), given
    back on a fault (:func:`note_fault`) so that ``last_error`` can be written on a full disk, and
    removed when the run ends."""
    try:
        size = max(256 << 10, 4 * os.path.getsize(os.path.join(path, "zarr.json")))
    except OSError:
        size = 256 << 10
    target = os.path.join(path, RESERVE_NAME)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        return
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except (AttributeError, OSError):
            os.write(fd, bytes(size))
    except OSError:  # no room even for this: the run's first write says so
        with contextlib.suppress(OSError):
            os.unlink(target)
    finally:
        os.close(fd)


def _release_reserve(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(path, RESERVE_NAME))


def note_fault(path: str, message: str) -> None:
    """Best effort: record the fault in the store's attributes (``complete`` stays false), in the room
    the run kept for it (:func:`_reserve`)."""
    _release_reserve(path)
    with contextlib.suppress(Exception):
        g = zarr.open_group(path, mode="r+")
        meta = dict(g.attrs["bragg_dask"])
        meta["complete"] = False
        meta["last_error"] = message
        g.attrs["bragg_dask"] = meta
        consolidate(path)


def _existing_attrs(path: str) -> dict | None:
    try:
        g = zarr.open_group(path, mode="r")
    except Exception:  # noqa: BLE001 - anything unreadable counts as "not ours"
        return None
    return dict(g.attrs).get("bragg_dask")


def stored_noise_seed(path: str) -> int | None:
    """The noise seed a bragg_dask store at ``path`` was made with (``None``: no store, or none).

    A run without ``-seed`` picks a time-based seed; re-running it on its store takes the store's
    seed instead, so that the run's configuration (and fingerprint) is the same and it resumes.
    """
    if not os.path.isdir(path):
        return None
    seed = ((_existing_attrs(path) or {}).get("run") or {}).get("noise_seed")
    return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None


def consolidate(path: str) -> None:
    """Consolidate metadata so ``xarray.open_zarr`` opens the store in one read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr flags v3 consolidated metadata as not yet in the spec
        zarr.consolidate_metadata(path)


def mark_complete(path: str) -> None:
    g = zarr.open_group(path, mode="r+")
    attrs = dict(g.attrs["bragg_dask"])
    attrs["complete"] = True
    attrs.pop("last_error", None)
    attrs.pop("was_complete", None)
    attrs["completed"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
    g.attrs["bragg_dask"] = attrs
    consolidate(path)
    if fsync_enabled():
        fsync_path(os.path.join(path, "zarr.json"))
        fsync_path(path)


def stored_tile_shape(path: str) -> tuple[int, int] | None:
    """The tile (chunk) shape of a bragg_dask store at ``path``, ``None`` where there is none: a run
    that names no ``--tile`` resumes a store with its own tiles, whatever the device's default."""
    if not os.path.isdir(path):
        return None
    shape = (_existing_attrs(path) or {}).get("tile_shape")
    if isinstance(shape, list) and len(shape) == 2 and all(isinstance(x, int) and x > 0 for x in shape):
        return int(shape[0]), int(shape[1])
    return None


def run_record(settings, dataset, noise_seed: int | None) -> dict:
    """The run options a store records (its fingerprint includes them): parity, emulated C threads,
    dtype, the dataset and the noise seed."""
    return {"parity": settings.parity, "c_threads": settings.c_threads if settings.parity == "c" else None,
            "dtype": settings.dtype, "dataset": dataset.to_dict(), "noise_seed": noise_seed}


# ---- the detector response (``bragg-dask noisify STORE``) -------------------------------------------


def is_store(path: str) -> bool:
    """Whether ``path`` is a bragg_dask store (a folder holding the store's metadata)."""
    return os.path.isdir(path) and (_existing_attrs(path) or {}).get("package") == "bragg_dask"


def ensure_image_array(path: str, name: str) -> None:
    """Create the image array ``name`` (:data:`INT`, :data:`NOISE`: uint16 ADU) where the store lacks it,
    chunked (and sharded) as :data:`FLOAT`."""
    if name not in (INT, NOISE):
        raise ValueError(f"not an integer image array: {name!r}")
    g = zarr.open_group(path, mode="r+")
    if name in g:
        return
    fl = g[FLOAT]
    extra = {"shards": fl.shards} if fl.shards is not None else {}
    if fl.metadata.codecs and not any(type(c).__name__ == "Crc32cCodec" for c in _inner_codecs(fl)):
        extra["compressors"] = [c for c in _inner_codecs(fl)[1:]]  # an older store's: as its float array
    _labelled(g, name, shape=fl.shape, chunks=fl.chunks, dtype="uint16", fill_value=0,
              dimension_names=("frame", "slow", "fast"), **extra)
    consolidate(path)


def _inner_codecs(array) -> list:
    """An array's chunk codecs (a sharded array's inner chunks')."""
    codecs = list(array.metadata.codecs)
    if len(codecs) == 1 and hasattr(codecs[0], "index_codecs"):
        return list(codecs[0].codecs)
    return codecs


#: the image arrays' description while some of their frames are the detector model's
MODEL_LABEL = {INT: "integer image, ADU: the frames listed in the store's response record went through the detector "
                    "model (noisify: PSF, gain, ADC offset; int_scale = its scale x gain), the others are photons x "
                    "int_scale + ADC offset (the -intfile image)",
               NOISE: "integer image with noise, ADU: the frames listed in the store's response record are the "
                      "detector model's noisy image (noise_seed: its seed), the others Poisson noise (the -noisefile "
                      "image)"}


def record_response(path: str, response: dict) -> None:
    """Record the detector model that made the store's int and noise images (``response`` in the
    ``bragg_dask`` attribute: per frame, the noisify flags' values, the seed, the arrays), and keep every
    record of those frames with it (:func:`sync_response`)."""
    g = zarr.open_group(path, mode="r+")
    meta = dict(g.attrs["bragg_dask"])
    meta["response"] = json.loads(json.dumps(response, default=str))
    g.attrs["bragg_dask"] = meta
    sync_response(path)


def drop_response(path: str, frames) -> None:
    """Frames whose int and noise images the simulation has just written again: the detector model no
    longer describes them (their response entries removed, their records the simulation's)."""
    meta = dict(zarr.open_group(path, mode="r").attrs["bragg_dask"])
    done = dict((meta.get("response") or {}).get("frames") or {})
    if not any(str(k) in done for k in frames):
        return
    for k in frames:
        done.pop(str(k), None)
    record_response(path, {"frames": done} if done else {})


def sync_response(path: str) -> None:
    """The records of the frames the detector model made, as the response record says: ``int_scale``
    (the model's -scale x -gain), ``noise_seed`` (its seed, -1 without noise), and the image arrays'
    descriptions (:data:`MODEL_LABEL` while any frame is the model's, else the simulation's)."""
    g = zarr.open_group(path, mode="r+")
    frames = ((dict(g.attrs["bragg_dask"]).get("response") or {}).get("frames")) or {}
    changed = bool(frames)
    if frames:  # the per-frame arrays are small: read whole, changed, written whole
        scales, seeds = np.asarray(g["int_scale"][...]), np.asarray(g["noise_seed"][...])
        for key, entry in frames.items():
            model = entry.get("model") or {}
            scales[int(key)] = float(model.get("scale", 1.0)) * float(model.get("gain", 1.0))
            seeds[int(key)] = -1 if entry.get("noise_seed") is None else int(entry["noise_seed"])
        writable(g["int_scale"])[...] = scales
        writable(g["noise_seed"])[...] = seeds
    for name in (INT, NOISE):
        if name in g:
            want = MODEL_LABEL[name] if frames else LABELS[name][1]
            if g[name].attrs.get("long_name") != want:
                g[name].attrs["long_name"] = want
                changed = True
    if changed:
        consolidate(path)
