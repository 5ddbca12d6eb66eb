"""A store's chunks on disk: the group and arrays opened once per process, whole chunks written
straight to their files, and the fsyncs that make them durable.

Part of :mod:`bragg_dask.store` (which owns the layout); the chunk files written here are exactly
what zarr reads back (the arrays' codecs: little-endian bytes through zstd, then a CRC-32C of the
compressed bytes in stores of format 2), each reaching its name by the rename of a complete temporary
file.  Every chunk read here is checked: a missing file where the store says there is one, a checksum
that does not match, a frame zstd cannot decode or the wrong number of values raise
:class:`~.integrity.DamagedChunk`, never data.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import threading
import uuid
from typing import TYPE_CHECKING

import numpy as np
import zarr

from bragg_dask.planning.plan import TileSpec
from bragg_dask.settings import fsync_enabled
from bragg_dask.store import shards
from bragg_dask.store.codec import chunk_codec
from bragg_dask.store.integrity import DamagedChunk

if TYPE_CHECKING:
    from zarr.core.common import AccessModeLiteral


class OpenStore:
    """A store's group opened once, and its arrays as they are first asked for (``store[name]``).

    Whole chunks of this package's arrays (little-endian bytes through zstd, the layout
    :func:`_init_arrays` makes) are written here straight to their files (:meth:`put_chunk`): zarr's
    own write hands each chunk through its event-loop thread and a thread pool, several milliseconds a
    chunk inside a busy in-process cluster against a fraction of one here.  Arrays of another layout
    are written through zarr (:meth:`direct` is False).
    """

    def __init__(self, path: str, mode: AccessModeLiteral):
        self.path = os.path.abspath(path)  # chunk files go here whatever the working folder later is
        self.group = zarr.open_group(self.path, mode=mode)
        self._arrays: dict = {}
        self._direct: dict = {}
        self._lock = threading.Lock()

    def aligned(self, name: str, tile: TileSpec) -> bool:
        """Whether ``tile`` is chunk ``(frame, *tile.chunk)`` of image array ``name`` exactly."""
        arr = self[name]
        cs, cf = arr.metadata.chunk_grid.chunk_shape[-2:]
        if (arr.ndim == 4) != (tile.panel is not None):  # a tile of a panel in an array of panels only
            return False
        i, j = tile.index
        return (tile.s0, tile.f0) == (i * cs, j * cf) and tile.shape == (
            min(cs, arr.shape[-2] - tile.s0),
            min(cf, arr.shape[-1] - tile.f0),
        )

    def direct(self, name: str) -> bool:
        """Whether whole chunks of ``name`` are written by :meth:`put_chunk` without zarr."""
        hit = self._direct.get(name)
        if hit is None:
            hit = self._direct[name] = chunk_codec(self[name]) is not None
        return hit

    def sharded(self, name: str) -> bool:
        """Whether ``name`` holds its frames in shard files of the layout :mod:`.shards` writes and reads."""
        key = ("sharded", name)
        hit = self._direct.get(key)
        if hit is None:
            hit = self._direct[key] = shards.layout(self[name]) is not None
        return hit

    def shard_frames(self, name: str) -> int:
        """Frames a shard file of ``name`` holds (1: an array of another layout, a chunk per frame or tile)."""
        lay = shards.layout(self[name]) if self.sharded(name) else None
        return lay.frames if lay is not None else 1

    def _layout(self, name: str) -> shards.ShardLayout:
        lay = shards.layout(self[name])
        assert lay is not None, f"{name}: not a sharded array"  # callers use shards of sharded() arrays only
        return lay

    def _shard_path(self, name: str, frame: int) -> str:
        """The shard file holding frame ``frame`` of ``name``."""
        arr = self[name]
        first = frame // self.shard_frames(name)
        return os.path.join(self.path, arr.path, *arr.metadata.encode_chunk_key((first, 0, 0)).split("/"))

    def put_shard(self, name: str, frame: int, images, synced: set | None, pool=None) -> None:
        """The shard of the :meth:`sharded` array ``name`` that starts at frame ``frame``, whole, from
        ``images`` (its frames ``(rows, cols)`` in order, as many as the array has from ``frame`` up to the
        shard's G; one image for a shard of one frame): its file (:func:`.shards.encode`, chunks compressed
        on ``pool``'s threads where given) by the rename of a complete temporary file, made durable and its
        folder added to ``synced`` as :meth:`put_chunk` does.  A checksummed layout always has its file
        (every inner chunk of its frames in it); another, all fill value: no file, as zarr."""
        lay = self._layout(name)
        if isinstance(images, np.ndarray) and images.ndim == 2:
            images = [images]
        n = min(lay.frames, int(self[name].shape[0]) - frame)
        if frame % lay.frames or len(images) != n:
            raise ValueError(f"{name}: {len(images)} frames from {frame} are not a whole shard of {lay.frames}")
        self._put_file(name, frame, shards.encode(lay, images, lay.codec, pool), synced)

    def put_frames(self, name: str, images: dict, synced: set | None, pool=None) -> None:
        """Frames of the :meth:`sharded` array ``name`` from ``images`` (frame -> ``(rows, cols)``, or None: the
        frame's chunks removed from its shard): each shard
        they make whole written as :meth:`put_shard`; a shard only some of whose frames are given written
        again with those replaced and the others' chunks kept as they are stored (under a lock on its
        folder: two writers of one shard never lose each other's frames).  A shard whose index is damaged
        cannot keep its other frames: :class:`DamagedChunk` (its frames are all to be written again)."""
        lay = self._layout(name)
        n_frames = int(self[name].shape[0])
        by_shard: dict[int, dict] = {}
        for k, image in images.items():
            by_shard.setdefault(k // lay.frames, {})[k] = image
        for s, given in sorted(by_shard.items()):
            first = s * lay.frames
            count = min(lay.frames, n_frames - first)
            if len(given) == count:
                self.put_shard(name, first, [given[first + k] for k in range(count)], synced, pool)
                continue
            target = self._shard_path(name, first)
            _make_folder(os.path.dirname(target), os.path.join(self.path, self[name].path), synced)
            with _folder_lock(os.path.dirname(target)):
                raw = read_chunk_file(target)
                kept: list = shards.split(lay, raw, target) if raw is not None else [None] * lay.frames
                for k, image in given.items():
                    kept[k - first] = None if image is None else shards.encode_frame(lay, image, lay.codec, pool)
                self._put_file(name, first, shards.assemble(lay, kept), synced)

    def _put_file(self, name: str, first: int, data: bytes | None, synced: set | None) -> None:
        target = self._shard_path(name, first)
        if data is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
                if synced is not None:
                    synced.add(os.path.dirname(target))
            return
        _make_folder(os.path.dirname(target), os.path.join(self.path, self[name].path), synced)
        _write_file(target, data, durable=synced is not None)
        if synced is not None:
            synced.add(os.path.dirname(target))

    def put_chunk(self, name: str, coords: tuple[int, ...], block: np.ndarray, synced: set | None) -> None:
        """Write chunk ``coords`` of array ``name`` from ``block`` (its data, the chunk's shape or, at the
        array's far edges, less: padded with the fill value).  A chunk all of fill values is written too:
        in a checksummed store a done tile always has its file, so a missing one is damage.

        ``synced``: the chunk is made durable (unless ``BRAGG_DASK_FSYNC=0``) and its folder added to
        this set, to be synced afterwards (:meth:`sync_folders`); None: not synced."""
        arr = self[name]
        meta = arr.metadata
        shape = meta.chunk_grid.chunk_shape
        dtype = np.dtype(arr.dtype).newbyteorder("<")
        data = np.asarray(block, dtype=dtype)
        data = data.reshape((1,) * (len(shape) - data.ndim) + data.shape)  # a tile's image: (1, slow, fast)
        if data.shape != tuple(shape):
            # only a chunk at the array's far edge is smaller, by exactly what lies beyond the array
            if any(n != min(m, size - c * m) for n, m, size, c in zip(data.shape, shape, arr.shape, coords)):
                raise ValueError(f"{name}: a block of {data.shape} is not chunk {tuple(coords)} of {tuple(shape)}")
            full = np.full(shape, meta.fill_value, dtype=dtype)
            full[tuple(slice(0, n) for n in data.shape)] = data
            data = full
        key = meta.encode_chunk_key(tuple(int(c) for c in coords))
        root = os.path.join(self.path, arr.path)
        target = os.path.join(root, *key.split("/"))
        _make_folder(os.path.dirname(target), root, synced)
        codec = chunk_codec(arr)
        assert codec is not None, f"{name}: not a direct array"  # callers write chunks of direct() arrays only
        _write_file(target, codec.encode(data), durable=synced is not None)
        if synced is not None:
            synced.add(os.path.dirname(target))

    def read_shard(self, name: str, frame: int, out: np.ndarray) -> np.ndarray:
        """Frame ``frame`` of the :meth:`sharded` array ``name`` whole into ``out`` ``(rows, cols)``: its
        shard's index and then the frame's chunks read (not the other frames'), every chunk checked
        (:func:`.shards.decode_frame`)."""
        lay = self._layout(name)
        file = self._shard_path(name, frame)
        return shards.decode_frame(lay, self._slot(lay, file, frame), out, file)

    def _slot(self, lay: shards.ShardLayout, file: str, frame: int, row: int | None = None):
        """Frame ``frame``'s chunks in its shard ``file`` (:func:`.shards.read_slot`; ``row``: those of that row
        of chunks); no file: damage in a checksummed store (a done frame always has its file), else None (all
        fill value)."""
        if lay.frames == 1:  # the file is the frame's: read whole, at once
            raw = read_chunk_file(file)
            found = shards.slot_view(lay, raw, 0, file)
        else:
            found = shards.read_slot(lay, file, frame % lay.frames, row)
        if found is None and lay.codec.crc:
            raise DamagedChunk(file, "missing")
        return found

    def chunk_file(self, name: str, coords: tuple[int, ...]) -> str:
        """The file of chunk (or shard) ``coords`` of array ``name``."""
        arr = self[name]
        key = arr.metadata.encode_chunk_key(tuple(int(c) for c in coords))
        return os.path.join(self.path, arr.path, *key.split("/"))

    def get_chunk(self, name: str, coords: tuple[int, ...], missing_ok: bool = False) -> np.ndarray:
        """Chunk ``coords`` of a :meth:`direct` array ``name``, whole (its chunk shape, native byte order),
        read straight from its file and checked (:class:`DamagedChunk` where it is not whole).  No file:
        damage in a checksummed store (a done tile always has its file) unless ``missing_ok``, else the
        fill value."""
        arr = self[name]
        meta = arr.metadata
        shape = tuple(meta.chunk_grid.chunk_shape)
        dtype = np.dtype(arr.dtype).newbyteorder("<")
        codec = chunk_codec(arr)
        file = self.chunk_file(name, coords)
        raw = read_chunk_file(file)
        assert codec is not None, f"{name}: not a direct array"  # callers read chunks of direct() arrays only
        if raw is None:
            if codec.crc and not missing_ok:
                raise DamagedChunk(file, "missing")
            return np.full(shape, meta.fill_value, dtype=dtype.newbyteorder("="))
        data = np.frombuffer(codec.decode(raw, file), dtype=dtype)
        if data.size != int(np.prod(shape)):
            raise DamagedChunk(file, f"holds {data.size} values, not {int(np.prod(shape))}")
        return data.reshape(shape).astype(dtype.newbyteorder("="), copy=False)

    def read_band(self, name: str, frame: int, s0: int, s1: int, panel: int | None = None) -> np.ndarray:
        """Rows ``s0:s1`` (within one row of chunks) of frame ``frame`` of image array ``name`` (of panel
        ``panel`` in an array of panels), every column; straight from the chunk files when the array is
        :meth:`direct`, from the frame's shard file when it is :meth:`sharded`, else through zarr."""
        arr = self[name]
        at = (frame,) if panel is None else (frame, panel)
        if not self.direct(name):
            if self.sharded(name):
                lay = self._layout(name)
                file = self._shard_path(name, frame)
                found = self._slot(lay, file, frame, s0 // lay.inner[1])
                return shards.decode_band(lay, found, int(arr.shape[2]), s0, s1, file)
            return np.asarray(arr[(*at, slice(s0, s1), slice(None))])
        cs, cf = arr.metadata.chunk_grid.chunk_shape[-2:]
        i, r0 = divmod(s0, cs)
        if s1 - s0 > cs - r0:
            raise ValueError(f"{name}: rows {s0}:{s1} cross a row of chunks of {cs}")
        width = arr.shape[-1]
        band = np.empty((s1 - s0, width), dtype=np.dtype(arr.dtype).newbyteorder("="))
        for j in range(-(-width // cf)):  # a chunk at a time into the band: no list of parts held at once
            f0, f1 = j * cf, min((j + 1) * cf, width)
            chunk = self.get_chunk(name, (*at, i, j))
            band[:, f0:f1] = chunk.reshape(chunk.shape[-2:])[r0 : r0 + s1 - s0, : f1 - f0]
        return band

    @staticmethod
    def sync_folders(folders: set) -> None:
        """fsync each folder once (its entries: renamed chunk files); the set is emptied."""
        if fsync_enabled():
            for folder in sorted(folders):
                fsync_path(folder)
        folders.clear()

    def __getitem__(self, name: str):
        with self._lock:
            a = self._arrays.get(name)
        if a is None:
            a = writable(self.group[name])
            with self._lock:
                self._arrays[name] = a
        return a

    def __contains__(self, name: str) -> bool:
        return name in self.group


def read_chunk_file(file: str) -> bytes | None:
    """A chunk file's bytes; None where there is none; :class:`DamagedChunk` where it cannot be read (a
    bad sector, a folder or a file in the way of its path, no permission)."""
    try:
        with open(file, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DamagedChunk(file, f"unreadable ({exc.strerror or type(exc).__name__})") from None


def _make_folder(folder: str, root: str, synced: set | None) -> None:
    """``folder`` (below the array's ``root``) made where missing; the new folders' parents added to
    ``synced``, so that their entries are synced too."""
    if not os.path.isdir(folder):
        os.makedirs(folder, exist_ok=True)
        while synced is not None and len(folder) > len(root):
            folder = os.path.dirname(folder)
            synced.add(folder)


@contextlib.contextmanager
def _folder_lock(folder: str):
    """An exclusive lock on ``folder`` (``flock`` of the folder itself: no file left behind), held by one
    writer at a time across threads and processes of this machine."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (the lock goes with the descriptor)


def writable(array):
    """``array`` as this package writes it through zarr: every chunk written, a chunk all of fill values
    too (zarr's default removes it), so that a chunk's file is missing only where nothing wrote it."""
    return array.with_config({"write_empty_chunks": True})


def fsync_path(target: str) -> None:
    """fsync a file or a folder; a folder that cannot be synced (EINVAL, EROFS) is skipped."""
    try:
        fd = os.open(target, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EROFS):
            raise
    finally:
        os.close(fd)


def _write_file(target: str, data: bytes, durable: bool = True) -> None:
    """``data`` under ``target`` by the rename of a complete temporary file beside it (synced first if
    ``durable``); the temporary file (``*.partial``, swept on resume) is removed if the write fails."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.{uuid.uuid4().hex[:12]}.partial"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0666 less the umask, as zarr's own files
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable and fsync_enabled():
            os.fsync(fd)
        fd, closing = -1, fd
        os.close(closing)
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_OPEN: collections.OrderedDict = collections.OrderedDict()
_OPEN_LOCK = threading.Lock()
_OPEN_MAX = 8


def opened(path: str, mode: AccessModeLiteral = "r+") -> OpenStore:
    """The store at ``path`` opened for ``mode``, shared by the tasks of a worker process.

    Opening a group and each array reads their metadata from disk (about 9 ms a task on the
    development machine, inside a busy cluster); a store's layout does not change during a run.  The
    key holds the group's ``zarr.json`` identity (inode, time, size), so a store replaced or
    rewritten (``--overwrite``, a run's attributes) is opened afresh.
    """
    try:
        st = os.stat(os.path.join(path, "zarr.json"))
        # (the process too: a forked worker, a DataLoader's, opens the store itself)
        key = (os.path.abspath(path), mode, st.st_ino, st.st_mtime_ns, st.st_size, os.getpid())
    except OSError:
        return OpenStore(path, mode)  # zarr says what is wrong
    with _OPEN_LOCK:
        hit = _OPEN.get(key)
        if hit is not None:
            _OPEN.move_to_end(key)
            return hit
    store = OpenStore(path, mode)
    with _OPEN_LOCK:
        _OPEN[key] = store
        while len(_OPEN) > _OPEN_MAX:
            _OPEN.popitem(last=False)
    return store


def sync_chunk(path: str, array, coords: tuple[int, ...], synced: set | None = None) -> None:
    """``fsync`` one chunk file and its folder (a chunk that is all fill value has no file).

    ``synced``: paths already synced by this caller (a folder shared by several chunks once)."""
    if not fsync_enabled():
        return
    name = array.path if hasattr(array, "path") else array.name.strip("/")
    f = os.path.join(path, name, *array.metadata.encode_chunk_key(coords).split("/"))
    for target in (f, os.path.dirname(f)):
        if synced is not None:
            if target in synced:
                continue
            synced.add(target)
        fsync_path(target)
