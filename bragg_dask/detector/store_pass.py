"""The detector response of a store's frames (the bands strategy of :mod:`bragg_dask.detector.pipeline`),
written to the store's ``int`` and ``noise`` arrays a row of tiles at a time: ``bragg-dask noisify STORE``
and a simulation's ``--psf ...`` options.

The same model and stages as the whole-image strategy (scale, PSF, gain, ADC, noise, 16-bit).  For each
frame a first pass over its tiles sums the photons the PSF loses beyond its radius (and finds the
largest value, for an automatic radius); a second pass blurs each band from its halo read from the
store (``detector.psf.psf_tile``), adds the lost photons evenly and writes the tiles' ADU (a whole
frame at a time for a dataset's sharded store).  The result is byte for byte that of
``bragg-dask noisify -floatfile F.bin --tile T`` on the frame's exported float image, ``T`` the
store's tile.  Frame ``k``'s noise seed is the seed + ``k``, as in the simulator's datasets; without
a seed it is time-based and printed.  The detector model is recorded in the store's attributes
(``response``).
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from bragg_dask import store
from bragg_dask.detector.model import DetectorModel
from bragg_dask.detector.pipeline import adu_images, source
from bragg_dask.errors import ConfigError, UsageError

log = logging.getLogger(__name__)


class _Active:
    """Frames in :func:`noisify_frame` in this process (a worker's task threads): they share the budget."""

    frames = 0
    lock = threading.Lock()


def frames_of(path: str, frame: int | None, every: bool, check: bool = True) -> list[int]:
    """The frames to process (``--frame K``, ``--all-frames``, else frame 0), each complete and (``check``)
    their float images whole (:func:`store.check_frames`: damage is one line, before anything is written)."""
    n = store.frame_count(path)
    frames = list(range(n)) if every else [0 if frame is None else frame]
    if not every and not 0 <= frames[0] < n:
        raise UsageError(f"frame {frames[0]} not in store (0..{n - 1})", flag="--frame")
    # the frames' float images and done flags, and the records, checked before any is read
    done = store.check_frames(path, frames, [store.FLOAT], "noisify").done if check else store.tiles_done(path)
    for k in frames:
        if not done[k].all():
            raise ConfigError(
                f"frame {k} of {path} is incomplete (tiles not done): finish its run first",
                flag="--all-frames" if every else "--frame",
            )
    return frames


class _FrameSource:
    """One frame's images from the store, window by window: photons (``-scale``, fluence) and, with
    noise, the counted photons (counter-based: any window, the same values).

    Each row of chunks is read from the store (straight from its chunk files), scaled and counted once
    and kept while a window may need it: the whole frame when twice its float64 image fits in its share
    of a quarter of the memory budget (shared by the frames this process runs at once), so that the
    first pass costs the second nothing; else only the rows a halo may still need (:meth:`release_below`;
    a row released is read and counted again if asked)."""

    def __init__(self, model: DetectorModel, frame: store.StoreFrame, seed: int) -> None:
        from bragg_dask.planning.memory import memory_budget

        self.model, self.frame, self.seed = model, frame, seed
        self.shape = frame.shape  # (a panel's, for one panel of a detector of panels)
        self.fpixels = frame.shape[1]
        # the pixels' numbers (their noise draws): a panel's as in the panels stacked into one image
        self.first = (frame.panel or 0) * frame.shape[0] * frame.shape[1]
        self.band = frame.tile_shape[0]
        self._opened = store.opened(frame.path, "r")
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # row of chunks -> (photons, source)
        self.partials: dict = {}  # tile -> (lost photons, largest value): the first pass's shares
        share = memory_budget()[0] // 4 // max(1, _Active.frames)  # frames running in this process share it
        kept = 2 * 8 * frame.shape[0] * frame.shape[1]  # photons and counts, float64
        self.keep_all = 2 * kept <= share

    def index(self, s0: int, s1: int, f0: int, f1: int) -> np.ndarray:
        rows = np.arange(s0, s1, dtype=np.int64)[:, None] * self.fpixels + self.first
        return rows + np.arange(f0, f1, dtype=np.int64)[None, :]

    def _row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Row of chunks ``i``: ``(photons, what the PSF blurs)``, each ``(rows, fpixels)`` float64."""
        if i not in self._rows:
            self._rows[i] = self._compute_row(i)
        return self._rows[i]

    def _compute_row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s0, s1 = i * self.band, min((i + 1) * self.band, self.shape[0])
        photons = self.model.photons(self._opened.read_band(store.FLOAT, self.frame.frame, s0, s1, self.frame.panel))
        return photons, source(self.model, photons, self.first + s0 * self.fpixels, self.seed)

    def _pieces(self, which: int, s0: int, s1: int, f0: int, f1: int):
        """Rows ``s0:s1`` (clipped to the frame), columns ``f0:f1`` of the photons (``which`` 0) or of what
        the PSF blurs (1), a row of chunks at a time: ``(first row, that part)``."""
        s0, s1 = max(s0, 0), min(s1, self.shape[0])
        for i in range(s0 // self.band, -(-s1 // self.band)):
            a, b = max(s0, i * self.band), min(s1, (i + 1) * self.band)
            yield a, self._row(i)[which][a - i * self.band : b - i * self.band, f0:f1]

    def _window(self, which: int, s0: int, s1: int, f0: int, f1: int) -> np.ndarray:
        parts = [part for _, part in self._pieces(which, s0, s1, f0, f1)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def fill_source(self, out: np.ndarray, s0: int, s1: int, f0: int, f1: int) -> None:
        """That window of what the PSF blurs, clamped at zero, written into ``out`` (row by row of chunks:
        no joined copy)."""
        for a, part in self._pieces(1, s0, s1, f0, f1):
            np.maximum(part, 0.0, out=out[a - s0 : a - s0 + part.shape[0]])

    def photons(self, s0: int, s1: int, f0: int, f1: int) -> np.ndarray:
        return self._window(0, s0, s1, f0, f1)

    def blurred_source(self, s0: int, s1: int, f0: int, f1: int) -> np.ndarray:
        return self._window(1, s0, s1, f0, f1)

    def tensor(self, s0: int, s1: int, f0: int, f1: int):
        import torch

        return torch.as_tensor(self.blurred_source(s0, s1, f0, f1), dtype=torch.float64, device=self.model.device)

    def release_below(self, s: int) -> None:
        """Forget the rows of chunks wholly above row ``s`` (unless the whole frame is kept)."""
        if not self.keep_all:
            for i in [i for i in self._rows if (i + 1) * self.band <= s]:
                del self._rows[i]

    def prefetch(self, pool, psf=None, tiles=()) -> None:
        """Every row of chunks read and counted at once on ``pool``'s threads (the whole frame kept),
        with its tiles' :func:`_tile_partial` (given the ``psf`` and the frame's ``tiles``)."""
        if not self.keep_all:
            return
        n = -(-self.shape[0] // self.band)
        by_row: dict = {}
        for t in tiles:
            by_row.setdefault(t.s0 // self.band, []).append(t)

        def row(i: int):
            self._row(i)
            return [(t, _tile_partial(psf, self, t)) for t in by_row.get(i, ())] if psf is not None else []

        for parts in pool.map(row, range(n)):
            self.partials.update(parts)


def _tile_partial(psf, src: _FrameSource, t) -> tuple[float, float]:
    """A tile's share of the first pass: the photons it loses beyond the radius, its largest value."""
    from bragg_dask.detector.psf import lost_photons

    x = src.tensor(t.s0, t.s1, t.f0, t.f1)
    return lost_photons(psf, x), float(x.max())


def _lost_and_radius(psf, src: _FrameSource, tiles) -> tuple[float, int]:
    """The first pass: the photons lost beyond the radius, summed over the frame in tile order (the
    tiles' shares from :meth:`_FrameSource.prefetch` where it made them), and the halo radius (of the
    frame's largest value)."""
    lost, top = 0.0, 0.0
    for t in tiles:
        part = src.partials.get(t) or _tile_partial(psf, src, t)
        lost += part[0]
        top = max(top, part[1])
        if t.f1 == src.fpixels:
            src.release_below(t.s1)
    return lost, psf.halo_radius(top)


def _band_images(model: DetectorModel, psf, src: _FrameSource, tiles: list, pass1) -> dict:
    """One row of ``tiles``' ADU images ``{INT: ..., NOISE: ...}`` (uint16 ``(rows, fpixels)``): the
    pipeline's last stage (:func:`~bragg_dask.detector.pipeline.adu_images`) on the band blurred from its
    halo."""
    box = (tiles[0].s0, tiles[0].s1, 0, src.shape[1])
    fused = _band_fused(model, psf, src, box, pass1)
    blurred = None
    if fused is None:
        blurred = _band_blurred(model, psf, src, tiles, pass1) if psf is not None else src.blurred_source(*box)
    index = src.index(*box) if model.readout > 0 else None  # only the readout noise draws there
    photons = src.photons(*box) if model.noise else None
    images = adu_images(model, photons, blurred, index, src.seed, fused)
    if images.noise_image is None:
        return {store.INT: images.int_image}
    return {store.INT: images.int_image, store.NOISE: images.noise_image}


def _band_blurred(model: DetectorModel, psf, src: _FrameSource, tiles: list, pass1) -> np.ndarray:
    """The row of ``tiles`` blurred, the lost photons added (float64): the whole row at once from its halo
    where that is each tile's PSF from its own bit for bit (``detector.psf.tiling_exact``: the C library's
    gather), else tile by tile."""
    import torch

    from bragg_dask.detector.psf import psf_tile, tiling_exact

    S, F = src.shape
    lost, radius = pass1
    boxes = (
        [(tiles[0].s0, tiles[0].s1, 0, F)]
        if tiling_exact(psf, radius, model.device)
        else [(t.s0, t.s1, t.f0, t.f1) for t in tiles]
    )
    out = torch.cat(
        [psf_tile(psf, src.tensor, b, (S, F), radius=radius, parity=model.parity) for b in boxes], dim=1
    ) + lost / (S * F)
    blurred = out.cpu().numpy()
    return blurred.astype(np.float32).astype(np.float64) if model.parity == "c" else blurred  # noisify's float


def _band_fused(model: DetectorModel, psf, src: _FrameSource, box: tuple, pass1) -> tuple[np.ndarray, int] | None:
    """``(ADU, overloads)`` of what the PSF blurs, by the C library in one pass (``detector.psf.psf_tile_adu16``: the
    same bytes as :func:`_band_blurred` then the ADU), where it applies: a PSF of fixed radius in spec
    parity, on CPU, without readout noise; else None."""
    from bragg_dask.detector.psf import psf_tile_adu16, tiling_exact

    if psf is None or model.parity != "spec" or model.readout > 0 or not tiling_exact(psf, pass1[1], model.device):
        return None
    S, F = src.shape
    done = psf_tile_adu16(
        psf, src.fill_source, box, (S, F), radius=pass1[1], add=pass1[0] / (S * F), gain=model.gain, adc=model.adc
    )
    return done


def noisify_frame(path: str, model: DetectorModel, k: int, seed: int) -> None:
    """Frame ``k``'s int (and noise) images into the store, a row of tiles at a time, each tile written
    to its chunk (for a dataset's sharded store: the frame written into its shard, the shard's other
    frames kept).  When the whole frame's source is kept (:class:`_FrameSource`), its rows of chunks and
    then its rows of tiles are computed and written on ``torch.get_num_threads()`` threads (numpy, the C
    PSF and file writes release the GIL); the result is the same as one at a time."""
    noisify_frames([(path, model, k, seed)])


def noisify_frames(jobs: list[tuple]) -> None:
    """Frames of one store (``jobs``: :func:`noisify_frame`'s arguments each) one after the other; in a
    dataset's sharded store their images are held and written a shard at a time (jobs of whole shards: each
    file written once; :meth:`DetectorPass.shards` groups them so)."""
    import concurrent.futures

    from bragg_dask.runtime import tune_allocator

    tune_allocator()  # the rows' and bands' arrays, megabytes each, reused from the heap (as the kernel's)
    held: dict[str, dict] = {}
    for path, model, k, seed in jobs:
        with _Active.lock:
            _Active.frames += 1
        try:
            _noisify_frame(path, model, k, seed, held)
        finally:
            with _Active.lock:
                _Active.frames -= 1
    if held:
        g = store.opened(jobs[0][0])
        synced: set = set()
        with concurrent.futures.ThreadPoolExecutor(_threads(), thread_name_prefix="bragg-noisify") as pool:
            for name, images in held.items():
                store.write_frame_images(g, name, images, synced, pool)
        g.sync_folders(synced)


def _threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


def _noisify_frame(path: str, model: DetectorModel, k: int, seed: int, held: dict) -> None:
    """Frame ``k``; a detector of panels' a panel at a time, each as an image of its own (the PSF blurs
    within a panel: no light crosses a gap; the photons lost beyond its radius are the panel's own)."""
    panels = store.StoreFrame(path, k).panels
    for p in range(panels) if panels else (None,):
        _noisify_image(path, model, k, seed, p, held)


def _noisify_image(path: str, model: DetectorModel, k: int, seed: int, panel: int | None, held: dict) -> None:
    """One image's int and noise: written tile by tile, or (a sharded store) held whole in ``held`` (array
    name -> frame -> image) for the caller to write a shard at a time."""
    import concurrent.futures

    frame = store.StoreFrame(path, k, panel=panel)
    tiles = [t for t in store.frame_tiles(path) if t.panel == panel]
    psf = model.psf_for(frame.shape)
    src = _FrameSource(model, frame, seed)
    threads = _threads() if src.keep_all else 1
    rows: dict = {}
    for t in tiles:
        rows.setdefault((t.s0, t.s1), []).append(t)
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="bragg-noisify") as pool:
        src.prefetch(pool, psf, tiles)
        pass1 = _lost_and_radius(psf, src, tiles) if psf is not None else None
        g = store.opened(path)
        whole = store.whole_frames(g)
        names = [store.INT, store.NOISE] if model.noise else [store.INT]
        images = {name: np.zeros(frame.shape, dtype=np.uint16) for name in names} if whole else {}
        synced: set = set()
        halo = pass1[1] + 1 if pass1 is not None else 0  # rows above a tile its PSF reads (the c wrap: one more)

        def one(band) -> None:
            src.release_below(band[0] - halo)
            for name, img in _band_images(model, psf, src, rows[band], pass1).items():
                if whole:
                    images[name][band[0] : band[1]] = img
                    continue
                for t in rows[band]:
                    store.write_tile_image(g, name, k, t, img[:, t.f0 : t.f1], synced)

        for _ in pool.map(one, sorted(rows)):
            pass
    for name, img in images.items():
        held.setdefault(name, {})[k] = img
    g.sync_folders(synced)


class DetectorPass:
    """The detector model on frames of a store: :meth:`begin` (the options, the seed, the arrays made),
    :func:`noisify_frame` for each frame (anywhere: in this process or as a Dask task; frames are
    independent), :meth:`record` (the model and seeds in the store's attributes)."""

    def __init__(self, path: str, model: DetectorModel, per_frame: dict | None = None) -> None:
        """``model``: the detector model (its pixel, unless a flag set it, the store's own: the PSF's
        scale; without its seed, a time-based one, reported here, once); ``per_frame``: frame -> the
        model's fields that frame drew (a dataset of --vary), each frame's model recorded as it ran."""
        import dataclasses

        from bragg_dask.detector.flags import noise_seed

        self.path, self.per_frame = path, dict(per_frame or {})
        if "pixel" not in dict(model.flags):
            pixel_mm = float(store.store_metadata(path)["geometry"]["pixel_size_m"]) * 1000.0
            model = dataclasses.replace(model, pixel=pixel_mm)
        self.model = model
        self.seed = noise_seed(model.seed, model.noise)
        self.names = [store.INT, store.NOISE] if model.noise else [store.INT]

    def begin(self) -> None:
        for name in self.names:
            store.ensure_image_array(self.path, name)

    def model_of(self, k: int) -> DetectorModel:
        """Frame ``k``'s model: the pass's, with the fields the frame drew."""
        import dataclasses

        return dataclasses.replace(self.model, **self.per_frame[k]) if k in self.per_frame else self.model

    def frame_args(self, k: int) -> tuple:
        """:func:`noisify_frame`'s arguments for frame ``k`` (its seed: the seed + ``k``)."""
        return self.path, self.model_of(k), k, self.seed + k

    def shards(self, frames: list[int]) -> list[list[tuple]]:
        """:func:`noisify_frames`' jobs for ``frames``: those of a shard of the store's together (a frame each
        in a store of another layout)."""
        per = store.frames_per_shard(store.opened(self.path))
        groups: dict[int, list] = {}
        for k in frames:
            groups.setdefault(k // per, []).append(self.frame_args(k))
        return list(groups.values())

    def record(self, frames: list[int]) -> None:
        response = dict(store.store_metadata(self.path).get("response") or {})
        done = dict(response.get("frames") or {})
        for k in frames:
            done[str(k)] = {
                "model": self.model_of(k).record(),
                "noise_seed": self.seed + k if self.model.noise else None,
                "arrays": self.names,
            }
        store.record_response(self.path, {"frames": done})

    def summary(self, frames: list[int], every: bool) -> str:
        return pass_summary(self.path, self.model, frames, every)


def pass_summary(path: str, model: DetectorModel, frames: list[int], every: bool) -> str:
    """What a detector pass wrote, in words: the store, its arrays, the frames."""
    which = f"frames 0..{frames[-1]}" if every else f"frame {frames[0]}"
    names = [store.INT, store.NOISE] if model.noise else [store.INT]
    return f"{path} ({', '.join(names)}: {which})"
