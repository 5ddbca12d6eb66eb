"""A dataset's labels beside its images: every frame's reflection table (:mod:`bragg_dask.physics.reflections`),
made by the tile task that holds the whole frame (:func:`stage_tables`: its image still in memory, beside the
kernel's work on the other workers) and staged in the store, or, for the frames that have none (a detector of
panels, a water background, ``--labels bragg``, a run cut short), by a Dask task per frame once the frames
are in the store; all written in frame order as the store's ``refl_*`` arrays (:func:`label_pass`,
:class:`bragg_dask.store.ReflectionWriter`).

Part of :mod:`bragg_dask.executors.dask` (which runs it for a dataset of ``--vary``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import zipfile

import numpy as np


def frame_reflections(base_sim, frame, store: str, device: str = "cpu") -> dict:
    """Worker side: frame ``frame``'s reflection table (``Reflections`` fields as arrays), its photons
    summed over the frame's Bragg image: the store's float image, or, where the frame has a water
    background, its tiles computed again without it.  A store with a ``bragg`` array (``--labels bragg``)
    gets that image too."""
    return frames_reflections(base_sim, [frame], store, device)[0]


def frames_reflections(base_sim, frames, store: str, device: str = "cpu") -> list[dict]:
    """:func:`frame_reflections` of each of ``frames``; their Bragg images (``--labels bragg``) written
    together (a dataset's: a shard at a time, where ``frames`` are a shard's)."""
    from bragg_dask import store as zstore
    from bragg_dask.physics.reflections import predict, spot_photons

    g = zstore.opened(store)
    held: dict[int, np.ndarray] = {}
    out = []
    for frame in frames:
        sim = frame.simulation(base_sim)
        refl = predict(sim)
        bands = _bragg_bands(sim, frame.index, store, device)
        if zstore.BRAGG in g:
            bands = _kept(bands, sim.detector.shape, held, frame.index)
        refl = spot_photons(sim, refl, bands)
        out.append({f.name: getattr(refl, f.name) for f in dataclasses.fields(refl)} | {"frame": frame.index})
    if held:
        synced: set = set()
        if g.sharded(zstore.BRAGG):
            zstore.write_frame_images(g, zstore.BRAGG, held, synced)
        else:
            for k, image in held.items():
                for t in zstore.frame_tiles(g.path):
                    zstore.write_tile_image(g, zstore.BRAGG, k, t, image[t.region], synced)
        g.sync_folders(synced)
    return out


def _kept(bands, shape: tuple, held: dict, k: int):
    """``bands`` passed on, gathered into the frame's ``bragg`` image, put in ``held`` once all have passed."""
    image = np.zeros(shape, dtype=np.float32)
    for p, s0, s1, rows in bands:
        image[(p, slice(s0, s1)) if len(shape) == 3 else slice(s0, s1)] = rows
        yield p, s0, s1, rows
    held[k] = image


def _bragg_bands(sim, k: int, store: str, device: str):
    """``(panel, s0, s1, rows)`` of frame ``k``'s Bragg image, every panel (0 for a single one)."""
    from bragg_dask import store as zstore

    if sim.water_size_m == 0.0:  # the frame as stored, read whole (a dataset's: its shard file, once)
        image = zstore.read_frame(store, k, zstore.FLOAT)
        for p, panel in enumerate(image if image.ndim == 3 else [image]):
            yield p, 0, panel.shape[0], panel
        return
    from bragg_dask.physics.kernel import simulate_tile
    from bragg_dask.planning.plan import plan_for

    dry = dataclasses.replace(sim, water_size_m=0.0)
    rows: dict = {}
    for t in plan_for(sim.detector, None, device).tiles():
        rows.setdefault((t.panel or 0, t.s0, t.s1), []).append(t)
    for (p, s0, s1), tiles in rows.items():  # a row of tiles at a time: a band of the Bragg image
        band = np.zeros((s1 - s0, sim.detector.fpixels), dtype=np.float32)
        for t in tiles:
            band[:, t.f0 : t.f1] = simulate_tile(dry, t, device=device).image
        yield p, s0, s1, band


#: the folder in a store where tile tasks stage their frames' tables until the label pass writes them
STAGED = ".bragg_dask.tables"


def _staged_file(store: str, k: int) -> str:
    return os.path.join(store, STAGED, f"{k}.npz")


def stage_tables(base_sim, frames: dict, store: str, written: list) -> None:
    """Worker side, in a tile task that has just written its tiles ``(frame, tile, image, stats)``: the table
    of each whole frame among them (every tile of it here, a single panel, no water, no ``--labels bragg``)
    from its image in memory, the same as :func:`frame_reflections` from the store; staged for the label
    pass (a file per frame, by the rename of a complete one)."""
    from bragg_dask import store as zstore
    from bragg_dask.physics.reflections import predict, spot_photons

    g = zstore.opened(store)
    if zstore.BRAGG in g or g[zstore.FLOAT].ndim != 3:
        return
    rows, cols = (int(n) for n in g[zstore.FLOAT].shape[1:])
    n_tiles = len(zstore.frame_tiles(store))
    by_frame: dict = {}
    for k, tile, image, _ in written:
        by_frame.setdefault(k, []).append((tile, image))
    for k, parts in by_frame.items():
        sim = frames[k].simulation(base_sim)
        if not frames[k].labelled or len(parts) != n_tiles or sim.water_size_m != 0.0:
            continue
        image = np.zeros((rows, cols), dtype=np.float32)
        for tile, part in parts:
            image[tile.s0 : tile.s1, tile.f0 : tile.f1] = part
        refl = spot_photons(sim, predict(sim), iter([(0, 0, rows, image)]))
        os.makedirs(os.path.join(store, STAGED), exist_ok=True)
        target = _staged_file(store, k)
        tmp = f"{target}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "wb") as fh:
            np.savez(fh, **{f.name: getattr(refl, f.name) for f in dataclasses.fields(refl)})
        os.replace(tmp, target)


def _staged(store: str, k: int) -> dict | None:
    """Frame ``k``'s staged table; None where there is none or it cannot be read whole."""
    try:
        with np.load(_staged_file(store, k), allow_pickle=False) as z:
            return {name: z[name] for name in z.files} | {"frame": k}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


class _InOrder:
    """The tables written in frame order as they come (:meth:`ready`): a staged one read from its file (made
    here where it cannot be read whole), the others as their tasks give them (:attr:`held` until their turn)."""

    def __init__(self, store: str, frames, remake):
        from bragg_dask import store as zstore

        self.store, self.remake = store, remake
        self.order = [f.index for f in frames]
        self.staged = {k for k in self.order if os.path.exists(_staged_file(store, k))}
        self.writer = zstore.ReflectionWriter(store)
        self.held: dict[int, dict] = {}
        self.next_at = 0

    def ready(self) -> int:
        """Write what can be written now; how many of the tasks' tables were."""
        from_tasks = 0
        while self.next_at < len(self.order):
            k = self.order[self.next_at]
            if k in self.staged:
                table = _staged(self.store, k)
                self.writer.add(table if table is not None else self.remake(k))
            elif k in self.held:
                self.writer.add(self.held.pop(k))
                from_tasks += 1
            else:
                break
            self.next_at += 1
        return from_tasks

    def close(self) -> None:
        if self.next_at != len(self.order):
            raise RuntimeError(f"labels: {len(self.order) - self.next_at} frames' tables missing")
        self.writer.close()
        shutil.rmtree(os.path.join(self.store, STAGED), ignore_errors=True)


def label_pass(client, sim_future, frames, store: str, tag: str, device: str, window: int = 0) -> None:
    """Every frame's table streamed into ``store`` in frame order (:class:`bragg_dask.store.ReflectionWriter`):
    those its tile tasks staged (:func:`stage_tables`), and a task per frame on ``client`` for the others.
    At most ``window`` of those (0: four per worker thread, at least 8) are submitted and not yet written at
    any time: the tables held are bounded, not the dataset."""
    from distributed import as_completed

    if not window:
        threads = sum(int(w.get("nthreads", 1)) for w in client.scheduler_info().get("workers", {}).values())
        window = max(8, 4 * threads)
    by_index = {f.index: f for f in frames}
    stream = _InOrder(store, frames, lambda k: frame_reflections(sim_future.result(), by_index[k], store, device))
    todo = iter(_task_frames(store, [f for f in frames if f.index not in stream.staged]))

    def submit(out: int) -> tuple[list, int]:  # new tasks while fewer than ``window`` frames are out
        new: list = []
        while out < window and (group := next(todo, None)) is not None:
            new.append(client.submit(frames_reflections, sim_future, group, store, device,
                                     key=f"labels-{tag}-{group[0].index}", pure=False))  # fmt: skip
            out += len(group)
        return new, out

    first, out = submit(0)  # out: frames submitted, their tables not yet written
    stream.ready()
    running = as_completed(first, loop=client.loop)  # (our client's loop: it is not a default client)
    for fut in running if first else ():
        tables = fut.result()
        fut.release()
        for table in tables:
            stream.held[table["frame"]] = table
        out -= stream.ready()
        more, out = submit(out)
        for task in more:
            running.add(task)
    stream.ready()
    stream.close()


def _task_frames(store: str, frames: list) -> list[list]:
    """The label tasks' frames: a shard's together where the store keeps Bragg images in shards of several
    frames (each written once), else a frame each."""
    from bragg_dask import store as zstore

    g = zstore.opened(store)
    per = g.shard_frames(zstore.BRAGG) if zstore.BRAGG in g else 1
    groups: dict[int, list] = {}
    for f in frames:
        groups.setdefault(f.index // per, []).append(f)
    return list(groups.values())
