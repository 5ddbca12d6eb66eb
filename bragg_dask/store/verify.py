"""A store checked file by file: every chunk, shard index and record, against what the store says it holds.

Part of :mod:`bragg_dask.store`.  :func:`scan` finds every problem (one :class:`Problem` each) and
which done tiles must be computed again; a resume (:func:`usable_tiles`) and ``bragg-dask verify``
use it, and the readers (export, preview, noisify) refuse a store it finds damaged
(:func:`check_frames`).  What is checked, for a store of format 2 (each chunk carries its CRC-32C
and is written even when all fill value):

* a done tile's image chunk (``float``; ``int`` and ``noise`` once the store is complete, or for a frame
  the detector model wrote) exists and matches its checksum; a shard's index matches its own and
  places every inner chunk within the file;
* a done tile's statistics exist and match; ``tiles_done`` chunks that do not match count as not done;
* every other chunk (per-frame records, coordinates) that exists matches, and in a complete store exists.

A store of format 1 (no checksums) is checked as far as it can be: chunks that zstd cannot decode,
or of the wrong size, and statistics missing for a done tile.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import os
import warnings
from typing import Any, cast

import numpy as np

from bragg_dask.store import shards
from bragg_dask.store.chunks import OpenStore, read_chunk_file
from bragg_dask.store.codec import chunk_codec
from bragg_dask.store.integrity import DamagedChunk, damage_error, metadata_problems
from bragg_dask.store.names import BRAGG, FLOAT, INT, NOISE

IMAGES = (FLOAT, INT, NOISE, BRAGG)  # (bragg: a --labels bragg dataset's, written with its labels)
#: arrays whose chunks are per tile (checked per done tile), besides the images
TILE_RECORDS = ("tiles_done", "tile_stats")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One damaged file: ``why``, and the frame and tile whose data it held (None: a record of the store)."""

    file: str
    why: str
    frame: int | None = None
    tile: tuple[int, int] | None = None

    def line(self) -> str:
        where = ", ".join(
            x
            for x in (
                f"frame {self.frame}" if self.frame is not None else "",
                f"tile {self.tile}" if self.tile is not None else "",
            )
            if x
        )
        return f"{self.file}: {self.why}" + (f" ({where})" if where else "")


@dataclasses.dataclass
class Scan:
    """What :func:`scan` found: the problems, the tiles done and whole (``done``), the done tiles whose data
    is damaged (``redo``: computed again by a resume), how many files were checked, whether the store
    carries checksums, and whether its metadata is damaged (then nothing else was checked)."""

    problems: list[Problem]
    done: np.ndarray
    redo: np.ndarray
    files: int = 0
    checksummed: bool = True
    metadata: bool = False

    @property
    def clean(self) -> bool:
        return not self.problems


def image_written(meta: dict, name: str, frame: int, complete: bool | None = None) -> bool:
    """Whether frame ``frame`` of image array ``name`` holds an image, by the store's record ``meta``:
    the float image of a done tile always; the int and noise images once the run that made them
    completed the store (``complete``: taken as complete or not; None: as the record says), or where
    the detector model wrote the frame.  A store that does not record its arrays (format 1): whenever
    the array exists."""
    if name == FLOAT:
        return True
    entry = (((meta.get("response") or {}).get("frames")) or {}).get(str(frame))
    if entry is not None and name in (entry.get("arrays") or (INT, NOISE)):
        return True
    made = meta.get("arrays")
    if made is None:
        return True
    return bool(meta.get("complete") if complete is None else complete) and name in made


def _chunk_grid(arr) -> list[tuple[int, ...]]:
    shape, chunks = arr.shape, arr.metadata.chunk_grid.chunk_shape
    return list(itertools.product(*(range(-(-n // c)) for n, c in zip(shape, chunks))))


def _read(file: str) -> bytes | None:
    """A file's bytes; None where there is none; :class:`DamagedChunk` where it cannot be read (a bad
    sector, a folder in its place, no permission)."""
    return read_chunk_file(file)


class _Scanner:
    def __init__(self, path: str, frames, arrays, workers: int, complete: bool | None) -> None:
        self.path = os.path.abspath(path)
        self.g = OpenStore(self.path, "r")
        self.meta = dict(cast("dict[str, Any]", self.g.group.attrs.get("bragg_dask") or {}))
        self.complete = bool(self.meta.get("complete")) if complete is None else complete
        fl = self.g[FLOAT]
        self.n_frames = int(fl.shape[0])
        self.frames = list(range(self.n_frames)) if frames is None else sorted(set(frames))
        done_arr = self.g["tiles_done"]
        self.grid = tuple(int(n) for n in done_arr.shape[1:])
        self.done = np.zeros((self.n_frames, *self.grid), bool)
        self.redo = np.zeros_like(self.done)
        self.problems: list[Problem] = []
        self.files = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr on the lock file beside the arrays: not a node
            held = set(self.g.group.array_keys())
        self.images = [a for a in IMAGES if a in held and (arrays is None or a in arrays)]
        self.records = sorted(held - set(IMAGES) - set(TILE_RECORDS))
        codec = chunk_codec(fl)
        if codec is None:  # a sharded array's: its inner chunks'
            lay = shards.layout(fl)
            codec = lay.codec if lay else None
        self.checksummed = bool(codec and codec.crc)
        self.workers = workers

    def problem(self, exc: DamagedChunk, frame=None, tile=None) -> None:
        self.problems.append(Problem(exc.file, exc.why, frame, tile))

    # ---- records per tile ------------------------------------------------------------------------
    def tile_records(self) -> None:
        """``tiles_done`` (a damaged chunk: its tiles not done), then each done tile's statistics."""
        nd = self.done.ndim  # frame, then the tile grid: (slow, fast), or (panel, slow, fast)
        for name in TILE_RECORDS:
            arr = self.g[name]
            cs = tuple(int(c) for c in arr.metadata.chunk_grid.chunk_shape[:nd])
            per_tile = all(c == 1 for c in cs[1:])
            for coords in _chunk_grid(arr):
                if coords[0] * cs[0] not in self.frames and cs[0] == 1:
                    continue
                sl = tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords[:nd], cs))
                self.files += 1
                try:
                    if self.g.direct(name):
                        block = self.g.get_chunk(name, coords, missing_ok=True)
                    else:
                        block = np.asarray(self.g[name][sl])
                except DamagedChunk as exc:
                    self.problem(exc, coords[0] if cs[0] == 1 else None)
                    self.redo[sl] |= True if name == "tiles_done" else self.done[sl]
                    if name == "tiles_done":
                        self.done[sl] = False
                    continue
                except Exception as exc:  # noqa: BLE001 - zarr's codecs: a checksum or decode failure
                    self.problem(DamagedChunk(self.g.chunk_file(name, coords), _why(exc)))
                    self.redo[sl] |= self.done[sl] if name == "tile_stats" else True
                    self.done[sl] &= name != "tiles_done"
                    continue
                region = self.done[sl]
                if name == "tiles_done":
                    region[...] = np.asarray(block, bool)[tuple(slice(0, n) for n in region.shape)]
                    if self.complete and self.checksummed and not os.path.exists(self.g.chunk_file(name, coords)):
                        self.problem(
                            DamagedChunk(self.g.chunk_file(name, coords), "missing (a complete store's)"),
                            coords[0] if cs[0] == 1 else None,
                            tuple(coords[1:nd]) if per_tile else None,
                        )
                        self.redo[sl] = True
                elif region.any() and not os.path.exists(self.g.chunk_file(name, coords)):
                    self.problem(
                        DamagedChunk(self.g.chunk_file(name, coords), "missing (statistics of done tiles)"),
                        coords[0] if cs[0] == 1 else None,
                        tuple(coords[1:nd]) if per_tile else None,
                    )
                    self.redo[sl] |= region

    # ---- images --------------------------------------------------------------------------------
    def expected(self, name: str, frame: int) -> bool:
        """Whether the frame's done tiles must have chunks of image array ``name``."""
        return self.checksummed and image_written(self.meta, name, frame, self.complete)

    def image_jobs(self):
        """``(check, frame, tile-or-None)``: a callable per file, raising :class:`DamagedChunk`."""
        for name in self.images:
            arr = self.g[name]
            lay = shards.layout(arr) if self.g.sharded(name) else None
            codec = chunk_codec(arr)
            if lay is not None:  # a file per shard of G frames
                by_shard: dict[int, list[int]] = {}
                for k in self.frames:
                    by_shard.setdefault(k // lay.frames, []).append(k)
                for s, ks in sorted(by_shard.items()):
                    yield self._shard_job(name, lay, s, ks), ks[0]
                continue
            for k in self.frames:
                want = self.expected(name, k)
                for tile in itertools.product(*(range(n) for n in self.grid)):  # (i, j), or (panel, i, j)
                    if codec is None:
                        yield self._zarr_job(name, k, tile), k
                    else:
                        yield self._chunk_job(name, codec, k, tile, want and self.done[(k, *tile)]), k

    def _chunk_job(self, name, codec, k, tile, required):
        file = self.g.chunk_file(name, (k, *tile))

        def run():
            try:
                raw = _read(file)
            except DamagedChunk as exc:
                raise _At(exc, tile) from None
            if raw is None:
                if required and codec.crc:
                    raise _At(DamagedChunk(file, "missing"), tile)
                return
            try:
                codec.check(raw, file, _chunk_bytes(self.g[name]))
            except DamagedChunk as exc:
                raise _At(exc, tile) from None

        return run

    def _zarr_job(self, name, k, tile):
        arr = self.g[name]
        cs = arr.metadata.chunk_grid.chunk_shape[1:]

        def run():
            try:
                np.asarray(arr[(k, *(slice(c * n, (c + 1) * n) for c, n in zip(tile, cs)))])
            except Exception as exc:  # noqa: BLE001 - zarr's codecs
                raise _At(DamagedChunk(self.g.chunk_file(name, (k, *tile)), _why(exc)), tile) from None

        return run

    def _shard_job(self, name, lay, s, frames):
        """The check of shard ``s`` of ``name`` (``frames``: those of its frames asked for): its index, then
        each frame's chunks; a frame not written may have none, a done frame whose image is expected must."""
        file = self.g.chunk_file(name, (s, 0, 0))
        required = {k for k in frames if self.expected(name, k) and bool(self.done[k].any())}

        def where(kk: int) -> str:
            return f"{file} (inner chunk {divmod(kk % lay.per_frame, lay.grid[1])})"

        def run():
            raw = _read(file)
            if raw is None:
                if required and lay.codec.crc:
                    raise _At(DamagedChunk(file, "missing"), None, sorted(required))
                return
            try:
                index = shards.read_index(lay, raw, file)
            except DamagedChunk as exc:  # every frame of the shard with it
                raise _At(exc, None, frames) from None
            bad = []
            for k in frames:
                for kk in range((k % lay.frames) * lay.per_frame, (k % lay.frames + 1) * lay.per_frame):
                    try:
                        off = int(index[kk, 0])
                        if off == shards._EMPTY:
                            if lay.codec.crc and k in required:
                                raise DamagedChunk(where(kk), "missing from its shard")
                            continue
                        lay.codec.check(
                            raw[off : off + int(index[kk, 1])],
                            where(kk),
                            lay.inner[1] * lay.inner[2] * lay.dtype.itemsize,
                        )
                    except DamagedChunk as exc:
                        bad.append(_At(exc, divmod(kk % lay.per_frame, lay.grid[1]), [k]))
            if bad:
                raise _Many(bad)

        return run

    def images_check(self) -> None:
        jobs = list(self.image_jobs())
        self.files += len(jobs)

        def one(job):
            check, _ = job
            try:
                check()
            except (_At, _Many, DamagedChunk) as exc:
                return exc
            return None

        if self.workers > 1 and len(jobs) > 16:
            with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
                results = list(pool.map(one, jobs))
        else:
            results = [one(j) for j in jobs]
        for (_, k), exc in zip(jobs, results):
            if exc is None:
                continue
            for at in exc.items if isinstance(exc, _Many) else [exc if isinstance(exc, _At) else _At(exc, None)]:
                ks = at.frames or [k]  # (a shard's: the frames it holds)
                self.problem(at.exc, ks[0], at.tile)
                for kk in ks:
                    if at.tile is None:
                        self.redo[kk] |= self.done[kk]
                    else:
                        self.redo[(kk, *at.tile)] |= self.done[(kk, *at.tile)]

    # ---- per-frame records and coordinates -------------------------------------------------------
    def other_records(self) -> None:
        for name in self.records:
            arr = self.g[name]
            codec = chunk_codec(arr)
            for coords in _chunk_grid(arr):
                file = self.g.chunk_file(name, coords)
                self.files += 1
                try:
                    raw = _read(file)
                    if raw is None:
                        if self.complete and self.checksummed:
                            raise DamagedChunk(file, "missing (a record of a complete store)")
                        continue
                    if codec is not None:
                        codec.check(raw, file, _chunk_bytes(arr))
                    else:
                        np.asarray(arr[...])
                except DamagedChunk as exc:
                    self.problem(exc)
                except Exception as exc:  # noqa: BLE001 - zarr's codecs
                    self.problem(DamagedChunk(file, _why(exc)))

    def run(self) -> Scan:
        self.tile_records()
        self.images_check()
        self.other_records()
        done = self.done & ~self.redo
        return Scan(self.problems, done, self.redo, self.files, self.checksummed)


class _At(Exception):
    """A damaged file at ``tile`` (None: the whole frame) of ``frames`` (None: the job's frame)."""

    def __init__(self, exc: DamagedChunk, tile, frames: list[int] | None = None) -> None:
        super().__init__(str(exc))
        self.exc, self.tile = exc, None if tile is None else tuple(int(t) for t in tile)
        self.frames = list(frames) if frames else None


class _Many(Exception):
    def __init__(self, items: list[_At]) -> None:
        super().__init__(f"{len(items)} chunks")
        self.items = items


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "checksum" in text.lower():
        return "fails its CRC-32C checksum (changed or truncated)"
    return f"cannot be decoded ({text[:120]})"


def _chunk_bytes(arr) -> int:
    return int(np.prod(arr.metadata.chunk_grid.chunk_shape)) * np.dtype(arr.dtype).itemsize


def scan(path: str, frames=None, arrays=None, workers: int = 8, complete: bool | None = None) -> Scan:
    """Check the store at ``path`` (``frames``: only those frames' tiles; ``arrays``: only those image
    arrays; records always); see the module notes.  ``complete``: whether the store is to be taken as
    complete (a resume has just said it is not; None: as it says).  Damaged metadata: its problems only."""
    meta = metadata_problems(path)
    if meta:
        empty = np.zeros((0, 0, 0), bool)
        return Scan([Problem(f, w) for f, w in meta], empty, empty, len(meta), metadata=True)
    return _Scanner(path, frames, arrays, workers, complete).run()


def usable_tiles(path: str, complete: bool, log) -> np.ndarray:
    """For a resume: ``(frames, tiles_slow, tiles_fast)`` bool, the tiles done and whole.  Damaged ones
    are said (how many, and why, a line each up to ten) and marked not done in the store, so that the
    run computes them again; damaged records are written again by the run itself."""
    found = scan(path, complete=complete)
    if not found.problems:
        return found.done
    n = int(found.redo.sum())
    log.warning(
        "%s: %d problem%s found%s",
        path,
        len(found.problems),
        "s" if len(found.problems) > 1 else "",
        f"; {n} tile{'s' if n != 1 else ''} computed again" if n else "; its records are written again",
    )
    for p in found.problems[:10]:
        log.warning("  %s", p.line())
    if len(found.problems) > 10:
        log.warning("  ... and %d more", len(found.problems) - 10)
    _clear(path, found)
    return found.done


def _clear(path: str, found: Scan) -> None:
    """The damaged tiles marked not done: each ``tiles_done`` chunk holding one written whole again."""
    import zarr

    from bragg_dask.store.chunks import writable

    arr = writable(zarr.open_group(path, mode="r+")["tiles_done"])
    cs = tuple(int(c) for c in arr.metadata.chunk_grid.chunk_shape)
    for coords in {tuple(int(v) // c for v, c in zip(idx, cs)) for idx in np.argwhere(found.redo)}:
        sl = tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, cs))
        arr[sl] = found.done[sl]


def check_frames(path: str, frames, arrays, flag: str) -> Scan:
    """Before a reader uses them: the frames' tiles of ``arrays`` and the store's records whole, else one
    line naming the first problem's frame, tile and file, and the fix (:func:`damage_error`).  Returns
    the scan (its ``done``: the frames' tiles done, read and checked)."""
    found = scan(path, frames, arrays)
    if found.problems:
        p = found.problems[0]
        raise damage_error(path, flag, p.frame, p.tile, p.file, p.why, len(found.problems) - 1)
    return found
