"""A dataset's labels beside its images: every frame's reflection table (:mod:`bragg_dask.physics.reflections`),
a Dask task per frame once the frames are in the store, gathered in frame order and written as the store's
``refl_*`` arrays (:func:`bragg_dask.store.write_reflections`).

Part of :mod:`bragg_dask.executors.dask` (which runs it for a dataset of ``--vary``).
"""

from __future__ import annotations

import dataclasses

import numpy as np


def frame_reflections(base_sim, frame, store: str, device: str = "cpu") -> dict:
    """Worker side: frame ``frame``'s reflection table (``Reflections`` fields as arrays), its photons
    summed over the frame's Bragg image: the store's float image, or, where the frame has a water
    background, its tiles computed again without it.  A store with a ``bragg`` array (``--labels bragg``)
    gets that image too."""
    from bragg_dask import store as zstore
    from bragg_dask.physics.reflections import predict, spot_photons

    sim = frame.simulation(base_sim)
    refl = predict(sim)
    g = zstore.opened(store)
    bands = _bragg_bands(sim, frame.index, store, device)
    if zstore.BRAGG in set(g.group.array_keys()):
        bands = _kept(bands, sim.detector.shape, g, frame.index)
    refl = spot_photons(sim, refl, bands)
    return {f.name: getattr(refl, f.name) for f in dataclasses.fields(refl)} | {"frame": frame.index}


def _kept(bands, shape: tuple, g, k: int):
    """``bands`` passed on, gathered into the frame's ``bragg`` image, written once all have passed."""
    from bragg_dask import store as zstore

    image = np.zeros(shape, dtype=np.float32)
    for p, s0, s1, rows in bands:
        image[(p, slice(s0, s1)) if len(shape) == 3 else slice(s0, s1)] = rows
        yield p, s0, s1, rows
    synced: set = set()
    if g.sharded(zstore.BRAGG):
        zstore.write_frame_image(g, zstore.BRAGG, k, image, synced)
    else:
        for t in zstore.frame_tiles(g.path):
            zstore.write_tile_image(g, zstore.BRAGG, k, t, image[t.region], synced)
    g.sync_folders(synced)


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


def label_pass(client, sim_future, frames, store: str, tag: str, device: str, window: int = 0) -> None:
    """Every frame's table, a task per frame on ``client``, streamed into ``store`` in frame order
    (:class:`bragg_dask.store.ReflectionWriter`).  At most ``window`` frames (0: four per worker thread, at
    least 8) are submitted and not yet written at any time: the tables held are bounded, not the dataset."""
    from distributed import as_completed

    from bragg_dask import store as zstore

    if not window:
        threads = sum(int(w.get("nthreads", 1)) for w in client.scheduler_info().get("workers", {}).values())
        window = max(8, 4 * threads)
    order = [f.index for f in frames]
    todo = iter(frames)
    writer = zstore.ReflectionWriter(store)
    held: dict[int, dict] = {}
    next_at, out = 0, 0  # the next frame to write (its place in order); frames submitted and not written

    def submit():
        f = next(todo, None)
        if f is None:
            return None
        return client.submit(frame_reflections, sim_future, f, store, device, key=f"labels-{tag}-{f.index}",
                             pure=False)  # fmt: skip

    first = []
    while out < window and (fut := submit()) is not None:
        first.append(fut)
        out += 1
    running = as_completed(first, loop=client.loop)  # (our client's loop: it is not a default client)
    for fut in running if first else ():
        table = fut.result()
        fut.release()
        held[table["frame"]] = table
        while next_at < len(order) and order[next_at] in held:
            writer.add(held.pop(order[next_at]))
            next_at, out = next_at + 1, out - 1
        while out < window and (more := submit()) is not None:
            running.add(more)
            out += 1
    if next_at != len(order):
        raise RuntimeError(f"labels: {len(order) - next_at} frames' tables missing")
    writer.close()
