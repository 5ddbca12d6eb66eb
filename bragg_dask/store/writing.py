"""Writing a run's tiles and frames into its store (part of :mod:`bragg_dask.store`, which re-exports
these): tile chunks and statistics made durable before their tiles are marked done, whole frames of a
dataset store as shard files, the int and noise images, per-frame records and statistics."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import zarr

from bragg_dask.planning.plan import TileSpec
from bragg_dask.store.chunks import OpenStore, opened, sync_chunk, writable
from bragg_dask.store.integrity import DamagedChunk
from bragg_dask.store.names import FLOAT, FRAME_STATS, STAT_FIELDS

if TYPE_CHECKING:
    from zarr.types import AnyArray


def stats_row(stats: dict, width: int = len(STAT_FIELDS)) -> np.ndarray:
    """A tile's partial statistics as the ``tile_stats`` row (argmax -1 when nothing rendered; on a detector
    of panels its pixel within the panel, the row's place in the array saying which panel; then the
    remainders of its exact sums: :mod:`bragg_dask.physics.sums`); ``width``: the store's (an older
    store's rows of 6 have no remainders)."""
    am = stats["argmax"][-2:] if stats["argmax"] is not None else (-1, -1)
    sums = tuple(stats.get("sum_parts") or (stats["sum"], 0.0, 0.0))[1:3]
    squares = tuple(stats.get("sumsq_parts") or (stats["sumsq"], 0.0, 0.0))[1:3]
    row = [stats["sum"], stats["sumsq"], stats["n"], stats["max"], am[0], am[1], *sums, *squares]
    return np.array(row[:width], dtype=np.float64)


def stats_from_row(row: np.ndarray, panel: int | None = None) -> dict:
    """The partial statistics of a ``tile_stats`` row (of panel ``panel``'s tile: its argmax with it)."""
    am: tuple[int, ...] | None = None if row[4] < 0 else (int(row[4]), int(row[5]))
    if am is not None and panel is not None:
        am = (panel, *am)
    out: dict[str, Any] = {"sum": float(row[0]), "sumsq": float(row[1]), "n": int(row[2]), "max": float(row[3]),
                           "argmax": am}  # fmt: skip
    if len(row) >= 10:
        out["sum_parts"] = (float(row[0]), float(row[6]), float(row[7]))
        out["sumsq_parts"] = (float(row[1]), float(row[8]), float(row[9]))
    return out


def write_tiles(path: str, items) -> None:
    """Write tiles ``(frame, tile, image, stats)``: chunks and statistics, made durable, then marked done.

    Each chunk reaches its name by a rename of a complete, synced file, so a killed writer leaves no
    half chunk under the chunk's name; a crash before ``tiles_done`` only redoes the tile.  Several
    tiles (small frames of a dataset) share one opening of the store and one sync of each folder.
    """
    g = opened(path)
    if whole_frames(g):
        return _write_frames(path, g, items)
    fl, ts, done = g["float"], g["tile_stats"], g["tiles_done"]
    synced: set = set()
    if all(g.direct(name) for name in ("float", "tile_stats", "tiles_done")) and all(
        g.aligned("float", tile) for _, tile, _, _ in items
    ):
        width = int(ts.shape[-1])
        for frame, tile, image, stats in items:
            g.put_chunk("float", (frame, *tile.chunk), image, synced)
            g.put_chunk("tile_stats", (frame, *tile.chunk, 0), stats_row(stats, width), synced)
        g.sync_folders(synced)
        for frame, tile, _, _ in items:
            g.put_chunk("tiles_done", (frame, *tile.chunk), np.ones((1,) * (1 + len(tile.chunk)), dtype=bool), synced)
        g.sync_folders(synced)
        return
    runs = _frame_runs(items)  # zarr writes: one write per array for a run of consecutive frames
    for tile, frames, images, stats in runs:
        a, b = frames[0], frames[-1] + 1
        fl[(slice(a, b), *tile.region)] = np.stack(images)
        ts[(slice(a, b), *tile.chunk)] = np.stack([stats_row(st, int(ts.shape[-1])) for st in stats])
    for tile, frames, _, _ in runs:
        for frame in frames:
            sync_chunk(path, fl, (frame, *tile.chunk), synced)
            sync_chunk(path, ts, (frame, *tile.chunk, 0), synced)
    for tile, frames, _, _ in runs:
        done[(slice(frames[0], frames[-1] + 1), *tile.chunk)] = True
    for tile, frames, _, _ in runs:
        for frame in frames:
            sync_chunk(path, done, (frame, *tile.chunk), synced)


def whole_frames(g: OpenStore) -> bool:
    """Whether the store is written a whole shard at a time: a dataset, whose image arrays hold ``G``
    frames a shard file (Zarr v3 sharding: :func:`frames_per_shard`, the frames' tiles its inner chunks)
    and whose ``tiles_done`` and ``tile_stats`` hold a chunk per shard, so that a frame is a few files, or
    a few frames one, however many tiles it has.  Tasks then carry whole shards (never two tasks one)."""
    return g[FLOAT].shards is not None


def frames_per_shard(g: OpenStore) -> int:
    """Frames a shard of a :func:`whole_frames` store holds (G; 1 for another store: a chunk per tile)."""
    return int(g[FLOAT].shards[0]) if whole_frames(g) else 1


def whole_shards(done: np.ndarray, per_shard: int) -> np.ndarray:
    """``done`` ``(frames, ...)`` with every frame of a shard of ``per_shard`` frames not done where any of
    its tiles is not (a resume of a :func:`whole_frames` store computes whole shards again)."""
    out = done.copy()
    whole = np.asarray(done.reshape(len(done), -1).all(axis=1), dtype=bool)
    for s in range(0, len(whole), per_shard):
        if not whole[s : s + per_shard].all():
            out[s : s + per_shard] = False
    return out


def _write_frames(path: str, g: OpenStore, items) -> None:
    """Whole shards of a :func:`whole_frames` store from all their frames' tiles ``(frame, tile, image,
    stats)``: each shard's image file and statistics written and synced, then its done flags, so that a
    crash in between redoes the shard."""
    by_frame: dict = {}
    for frame, tile, image, stats in items:
        by_frame.setdefault(frame, []).append((tile, image, stats))
    fl, ts, done = g[FLOAT], g["tile_stats"], g["tiles_done"]
    n_frames, gs, gf = done.shape
    per = frames_per_shard(g)
    shards = sorted({k // per for k in by_frame})
    synced: set = set()
    for s in shards:
        a, b = s * per, min(s * per + per, n_frames)
        images, rows = [], np.zeros((b - a, gs, gf, int(ts.shape[-1])))
        for frame in range(a, b):
            parts = by_frame.get(frame, [])
            if len({t.index for t, _, _ in parts}) != gs * gf:
                raise ValueError(
                    f"frame {frame}: {len(parts)} of {gs * gf} tiles (a dataset's store is written "
                    f"a whole shard of {per} frames at a time)"
                )
            image = np.zeros(fl.shape[1:], dtype=np.float32)
            for tile, tile_image, stats in parts:
                image[tile.s0 : tile.s1, tile.f0 : tile.f1] = tile_image
                rows[(frame - a, *tile.index)] = stats_row(stats, rows.shape[-1])
            images.append(image)
        if g.sharded(FLOAT):  # the shard file straight (:mod:`.shards`), else through zarr
            g.put_shard(FLOAT, a, images, synced)
        else:
            fl[a:b] = np.stack(images)
            sync_chunk(path, fl, (s, 0, 0), synced)
        ts[a:b] = rows
        sync_chunk(path, ts, (s, 0, 0, 0), synced)
    for s in shards:
        done[s * per : min(s * per + per, n_frames)] = True
        sync_chunk(path, done, (s, 0, 0), synced)


def write_frame_image(
    g: OpenStore, name: str, frame: int, image: np.ndarray, synced: set | None = None, pool=None
) -> None:
    """A whole frame ``(spixels, fpixels)`` of image array ``name`` (``int``, ``noise``) of a
    :func:`whole_frames` store, made durable: its shard written again with it (:meth:`OpenStore.put_frames`;
    writers of many frames give whole shards at once: :func:`write_frame_images`)."""
    write_frame_images(g, name, {frame: image}, synced, pool)


def write_frame_images(g: OpenStore, name: str, images: dict, synced: set | None = None, pool=None) -> None:
    """Frames ``images`` (frame -> ``(spixels, fpixels)``) of image array ``name`` of a :func:`whole_frames`
    store, made durable: each shard they fill written whole, others with the rest of their frames kept (their
    chunks compressed on ``pool``'s threads where given: :mod:`.shards`)."""
    synced = synced if synced is not None else set()
    if g.sharded(name):
        g.put_frames(name, images, synced, pool)
        return
    for frame, image in sorted(images.items()):
        g[name][frame] = image
        sync_chunk(g.path, g[name], (frame // frames_per_shard(g), 0, 0), synced)


def write_tile_image(
    g: OpenStore, name: str, frame: int, tile: TileSpec, image: np.ndarray, synced: set | None = None
) -> None:
    """One tile of a frame of image array ``name`` (``int``, ``noise``): its chunk (made durable, its
    folder added to ``synced``, where that set is given)."""
    if g.direct(name) and g.aligned(name, tile):
        g.put_chunk(name, (frame, *tile.chunk), image, synced)
    else:
        g[name][(frame, *tile.region)] = image


def drop_frame_images(path: str, name: str, frames) -> None:
    """Remove frames ``frames`` of image array ``name`` (every chunk, or their place in their shards): a
    frame whose image the run no longer makes (its noise, where a run without noise computes the frame
    again).  A shard left with none of its frames is removed."""
    import shutil

    g = opened(path)
    frames = sorted(set(frames))
    if not frames:
        return
    if not g.sharded(name):
        for k in frames:
            shutil.rmtree(os.path.dirname(os.path.dirname(g.chunk_file(name, (k, 0, 0)))), ignore_errors=True)
        return
    with contextlib.suppress(DamagedChunk):  # a shard whose index is damaged keeps its damage: verify says it
        g.put_frames(name, dict.fromkeys(frames), set())


def read_tile_image(g: OpenStore, name: str, frame: int, tile: TileSpec) -> np.ndarray:
    """One tile ``(n_slow, n_fast)`` of a frame of image array ``name`` (:data:`FLOAT`...): straight from
    its chunk file where the tile is one whole chunk, from its frame's chunks in their shard where the array
    is sharded, else through zarr."""
    if g.direct(name) and g.aligned(name, tile):
        chunk = g.get_chunk(name, (frame, *tile.chunk))
        return chunk.reshape(chunk.shape[-2:])[: tile.shape[0], : tile.shape[1]]
    if g.sharded(name) and tile.panel is None:
        return g.read_band(name, frame, tile.s0, tile.s1)[:, tile.f0 : tile.f1]
    return np.asarray(g[name][(frame, *tile.region)])


def _frame_runs(items) -> list:
    """``items`` grouped by tile into runs of consecutive frames: ``(tile, frames, images, stats)``."""
    by_tile: dict = {}
    for frame, tile, image, stats in items:
        by_tile.setdefault(tile, []).append((frame, image, stats))
    runs = []
    for tile, rows in by_tile.items():
        rows.sort(key=lambda r: r[0])
        start = 0
        for k in range(1, len(rows) + 1):
            if k == len(rows) or rows[k][0] != rows[k - 1][0] + 1:
                part = rows[start:k]
                runs.append((tile, [r[0] for r in part], [r[1] for r in part], [r[2] for r in part]))
                start = k
    return runs


def write_frame_metadata(g: zarr.Group, frames, sim=None) -> None:
    """The frames' records (phi0, orientation, noise seed) and coordinates (frame number, phi, pixel
    centres), written whole: at every start of a run, so a resume writes a damaged record again.  A
    dataset of --vary (``sim``: the run's simulation): each frame's drawn values and its crystal's
    reciprocal basis too."""
    n = len(frames)
    w = {
        name: writable(g[name]) for name in ("phi0_deg", "orientation", "noise_seed", "phi_deg", "frame") if name in g
    }  # phi_deg, frame: coordinates (stores made before them have only the records)
    w["phi0_deg"][:] = np.degrees([f.phi0_rad for f in frames])
    if "phi_deg" in w:
        w["phi_deg"][:] = np.degrees([f.phi0_rad for f in frames])
    if "frame" in w:
        w["frame"][:] = np.arange(n)
    w["orientation"][:] = np.asarray([f.orientation for f in frames], dtype=np.float64).reshape(n, 3, 3)
    w["noise_seed"][:] = np.array([-1 if f.noise_seed is None else f.noise_seed for f in frames], dtype=np.int64)
    if "panel" in g:  # a detector of panels' coordinate
        panels = writable(g["panel"])
        panels[:] = np.arange(panels.shape[0])
    if sim is not None and "reciprocal_basis" in g:
        _write_labels(g, frames, sim)
    if "pixel_mask" in g:  # a preset's frame
        from bragg_dask.store.layout import frame_mask

        rows, cols = cast("AnyArray", g[FLOAT]).shape[-2:]
        frame = dict(cast("dict[str, Any]", g.attrs["bragg_dask"]))["geometry"]["frame"]
        writable(g["pixel_mask"])[...] = frame_mask(frame, rows, cols)
    pixel_mm = float(dict(cast("dict[str, Any]", g.attrs["bragg_dask"]))["geometry"]["pixel_size_m"]) * 1e3
    for name in ("x_mm", "y_mm"):
        writable(g[name])[:] = (np.arange(cast("AnyArray", g[name]).shape[0]) + 0.5) * pixel_mm


def _write_labels(g: zarr.Group, frames, sim) -> None:
    """A --vary dataset's per-frame labels: ``vary_KEY`` (the values drawn, N per axis) and
    ``reciprocal_basis`` (the frame's a*, b*, c*, 1/Angstrom, lab frame, after its orientation)."""
    drawn = [dict(f.drawn) for f in frames]
    for key in drawn[0] if drawn else ():
        if f"vary_{key}" in g:
            writable(g[f"vary_{key}"])[...] = np.asarray([d[key] for d in drawn], dtype=np.float64)
    basis = []
    for f in frames:
        cr = f.simulation(sim).crystal
        basis.append([cr.a_star_per_A, cr.b_star_per_A, cr.c_star_per_A])
    writable(g["reciprocal_basis"])[...] = np.asarray(basis, dtype=np.float64)


def write_frames_stats(g: OpenStore, frames: list[int], stats: list, int_scales: list[float]) -> None:
    """Per-frame statistics of several frames: one write per statistic (a dataset's frames at once)."""
    if not frames:
        return
    pos = [st.max_pos if st.max_pos is not None else (-1, -1) for st in stats]
    columns = (
        [st.max_I for st in stats],
        [p[0] for p in pos],
        [p[1] for p in pos],
        [st.mean for st in stats],
        [st.rms for st in stats],
        [st.rmsd for st in stats],
        list(int_scales),
    )
    idx = np.asarray(frames, dtype=np.int64)
    contiguous = bool(np.all(np.diff(idx) == 1))
    for name, values in zip(FRAME_STATS, columns):
        arr = g[name]
        v = np.asarray(values, dtype=arr.dtype)
        if contiguous:
            arr[int(idx[0]) : int(idx[-1]) + 1] = v
        else:
            arr.oindex[idx] = v


#: a dataset's reflection tables (:mod:`bragg_dask.physics.reflections`), every frame's rows one after the
#: other, ``refl_offset[k]:refl_offset[k + 1]`` frame ``k``'s: (array, field, dtype, trailing shape)
REFLECTION_ARRAYS = (
    ("refl_hkl", "hkl", "int32", (3,)),
    ("refl_panel", "panel", "int32", ()),
    ("refl_xy_px", "xy_px", "float64", (2,)),
    ("refl_d_A", "d_A", "float64", ()),
    ("refl_F", "F", "float64", ()),
    ("refl_photons", "photons", "float64", ()),
    ("refl_active", "active", "bool", ()),
)


#: the second dimension of the table's arrays of several numbers a row (a name each: xarray's dimensions)
TABLE_DIMS = {"refl_hkl": "miller_index", "refl_xy_px": "fast_slow"}
#: rows of a reflection table's chunk
REFLECTION_CHUNK = 1 << 16


class ReflectionWriter:
    """Every frame's reflection table into the store's ``refl_*`` arrays, streamed in frame order
    (:meth:`add`, then :meth:`close`), made anew: the rows are held until a whole chunk of
    :data:`REFLECTION_CHUNK` of them is there, then written (each chunk once), so that the memory held is a
    chunk's, whatever the dataset's size; :meth:`close` writes the rest and the per-frame index
    ``refl_offset`` (frames + 1: frame ``k``'s rows are ``refl_offset[k]:refl_offset[k + 1]``), last, so that
    a store whose label pass was cut short has no index (its labels read as absent, and the run again makes
    them)."""

    def __init__(self, path: str):
        from bragg_dask.store.layout import _labelled

        self.path, self.chunk = path, REFLECTION_CHUNK
        g = zarr.open_group(path, mode="r+")
        for name in [a[0] for a in REFLECTION_ARRAYS] + ["refl_offset"]:
            if name in g:
                del g[name]
        self.arrays = {}
        for name, field, dtype, tail in REFLECTION_ARRAYS:
            dims = ("reflection", *((TABLE_DIMS[name],) if tail else ()))
            self.arrays[field] = _labelled(g, name, shape=(0, *tail), chunks=(self.chunk, *tail), dtype=dtype,
                                           fill_value=0, dimension_names=dims)  # fmt: skip
        self.group, self.rows, self.offset = g, 0, [0]
        self.held: dict[str, list[np.ndarray]] = {field: [] for _, field, _, _ in REFLECTION_ARRAYS}

    def add(self, table: dict) -> None:
        """The next frame's table (the ``Reflections`` fields as arrays)."""
        n = len(table["hkl"])
        for _, field, dtype, tail in REFLECTION_ARRAYS:
            self.held[field].append(np.asarray(table[field]).reshape(-1, *tail).astype(dtype))
        self.offset.append(self.offset[-1] + n)
        if self.offset[-1] - self.rows >= self.chunk:
            self._write(last=False)

    def _write(self, last: bool) -> None:
        held = self.offset[-1] - self.rows
        n = held if last else held - held % self.chunk  # whole chunks only, until the last
        if n <= 0:
            return
        for field, arr in self.arrays.items():
            data = np.concatenate(self.held[field])
            arr.resize((self.rows + n, *arr.shape[1:]))
            arr[self.rows : self.rows + n] = data[:n]
            self.held[field] = [data[n:]]
        self.rows += n

    def close(self) -> None:
        from bragg_dask.store.layout import _labelled, consolidate

        self._write(last=True)
        offset = np.asarray(self.offset, dtype=np.int64)
        _labelled(self.group, "refl_offset", shape=offset.shape, chunks=offset.shape, dtype="int64", fill_value=0,
                  dimension_names=("frame_edge",))[...] = offset  # fmt: skip
        consolidate(self.path)


def write_reflections(path: str, tables) -> None:
    """Every frame's reflection table (``tables`` in frame order, each the ``Reflections`` fields) as the
    store's ``refl_*`` arrays (:class:`ReflectionWriter`)."""
    writer = ReflectionWriter(path)
    for t in tables:
        writer.add(t)
    writer.close()
