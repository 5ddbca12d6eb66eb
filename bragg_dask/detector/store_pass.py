"""``bragg-dask noisify STORE [--frame K | --all-frames] <noisify's flags>``: the detector response of a
store's frames, written to the store's ``int`` and ``noise`` arrays a tile at a time.

The same model as noisify's file mode (``noisify.py``): scale, PSF, gain, ADC, noise, 16-bit.  For each
frame a first pass over its tiles sums the photons the PSF loses beyond its radius (and finds the
largest value, for an automatic radius); a second pass blurs each tile from its halo read from the
store (``physics.psf.psf_tile``), adds the lost photons evenly and writes the tile's ADU (a whole
frame at a time for a dataset's sharded store).  The result is byte for byte that of
``bragg-dask noisify -floatfile F.bin --tile T`` on the frame's exported float image, ``T`` the
store's tile.  Frame ``k``'s noise seed is the seed + ``k``, as in the simulator's datasets; without
``-seed`` the seed is time-based and printed.  The detector model is recorded in the store's
attributes (``response``).
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from bragg_dask import store
from bragg_dask.detector.noisify import (
    _VALUE,
    MODEL_FLAGS,
    check_run,
    noise_seed_of,
    noisify_main,
    parse_args,
    photons_of,
    psf_of,
)
from bragg_dask.errors import ConfigError, UsageError
from bragg_dask.store.lock import StoreLock

log = logging.getLogger(__name__)
class _Active:
    """Frames in :func:`noisify_frame` in this process (a worker's task threads): they share the budget."""

    frames = 0
    lock = threading.Lock()

#: file-mode flags that mean nothing for a store (its frames are read and its arrays written)
_FILE_FLAGS = ("floatfile", "intfile", "noisefile", "pgmfile", "header", "tile")


def model_args(opts, outputs=None) -> list[str]:
    """The simulation's detector-model service flags as noisify's flags, with what the simulation's own
    flags mean for it (``outputs``, its OutputOptions): ``-scale`` (when given), ``-adc``, the run's noise
    ``-seed`` (when it has one), ``-nonoise``; and ``--parity c``."""
    args: list[str] = []
    for attr, _, flag in MODEL_FLAGS:
        v = getattr(opts, attr, None)
        if v is not None:
            args += [flag, repr(float(v)) if isinstance(v, float) else str(v)]
    if outputs is not None:
        if outputs.intfile_scale > 0:  # 0: nanoBragg's automatic scale, which noisify does not have
            args += ["-scale", repr(float(outputs.intfile_scale))]
        args += ["-adc", repr(float(outputs.adc))]
        if outputs.seed is not None:
            args += ["-seed", str(outputs.seed)]
        if outputs.noisefile is None:
            args.append("-nonoise")
    if getattr(opts, "parity", "spec") == "c":
        args += ["--parity", "c"]
    return args


def check_model(opts, outputs=None) -> None:
    """The detector model's flags checked before the simulation runs, errors naming the service flag."""
    try:
        o = parse_args(model_args(opts, outputs) + ["-floatfile", "-"])
        check_run(o)
    except ConfigError as exc:
        names = {noisify: service for _, service, noisify in MODEL_FLAGS}
        if exc.flag not in names:
            raise
        raise type(exc)(exc.message, flag=names[exc.flag]) from None


def noisify_cli(argv: list[str]) -> list[str]:
    """``bragg-dask noisify``: a store's frames when the first argument is a store, else the file mode."""
    if argv and not argv[0].startswith("-") and store.looks_like_store(argv[0]):
        store.check_metadata(argv[0], "noisify")  # a damaged store: one line naming the file
        return noisify_store_main(argv[0], argv[1:])
    return noisify_main(argv)


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


def store_options(path: str, argv: list[str]) -> dict:
    """noisify's flags for a store: no file flags, 16 bits, the store's pixel unless ``-pixel``."""
    for name in _FILE_FLAGS:
        for spelling in _VALUE[name][0]:
            if spelling in argv:
                raise UsageError(f"means nothing with a store (its float frames are read, its {store.INT} and "
                                 f"{store.NOISE} arrays written)", flag=spelling)
    o = parse_args(argv + ["-floatfile", path])
    if o["bits"] != 16:
        raise ConfigError(f"a store's {store.INT} and {store.NOISE} arrays are 16-bit: -bits {o['bits']} is for "
                          "files", flag="-bits")
    if "-pixel" not in argv:  # the PSF's scale: the store's own pixel
        o["pixel"] = float(store.store_metadata(path)["geometry"]["pixel_size_m"]) * 1000.0
    check_run(o)
    return o


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
            raise ConfigError(f"frame {k} of {path} is incomplete (tiles not done): finish its run first",
                              flag="--all-frames" if every else "--frame")
    return frames


class _FrameSource:
    """One frame's images from the store, window by window: photons (``-scale``, fluence) and, with
    noise, the counted photons (counter-based: any window, the same values).

    Each row of chunks is read from the store (straight from its chunk files), scaled and counted once
    and kept while a window may need it: the whole frame when twice its float64 image fits in its share
    of a quarter of the memory budget (shared by the frames this process runs at once), so that the
    first pass costs the second nothing; else only the rows a halo may still need (:meth:`release_below`;
    a row released is read and counted again if asked)."""

    def __init__(self, o: dict, frame: store.StoreFrame, seed: int) -> None:
        from bragg_dask.planning.memory import memory_budget

        self.o, self.frame, self.seed = o, frame, seed
        self.shape = frame.shape
        self.fpixels = frame.shape[1]
        self.band = frame.tile_shape[0]
        self._opened = store.opened(frame.path, "r")
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # row of chunks -> (photons, source)
        self.partials: dict = {}  # tile -> (lost photons, largest value): the first pass's shares
        share = memory_budget()[0] // 4 // max(1, _Active.frames)  # frames running in this process share it
        kept = 2 * 8 * frame.shape[0] * frame.shape[1]  # photons and counts, float64
        self.keep_all = 2 * kept <= share

    def index(self, s0: int, s1: int, f0: int, f1: int) -> np.ndarray:
        return np.arange(s0, s1, dtype=np.int64)[:, None] * self.fpixels + np.arange(f0, f1, dtype=np.int64)[None, :]

    def _row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Row of chunks ``i``: ``(photons, what the PSF blurs)``, each ``(rows, fpixels)`` float64."""
        if i not in self._rows:
            self._rows[i] = self._compute_row(i)
        return self._rows[i]

    def _compute_row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s0, s1 = i * self.band, min((i + 1) * self.band, self.shape[0])
        photons = photons_of(self.o, self._opened.read_band(store.FLOAT, self.frame.frame, s0, s1))
        return photons, self._counted(photons, s0, s1)

    def _counted(self, photons: np.ndarray, s0: int, s1: int) -> np.ndarray:
        """What the PSF blurs: the photons with ``-nonoise``, else the counted photons."""
        from bragg_dask.detector.adu import photon_counts

        o = self.o
        if o["nonoise"]:
            return photons
        return photon_counts(photons, s0 * self.fpixels, seed=self.seed,
                             calib_seed=int(o["calib_seed"]), flicker=o["flicker"], calibration=o["calibration"])

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

        return torch.as_tensor(self.blurred_source(s0, s1, f0, f1), dtype=torch.float64, device=self.o["device"])

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


def _band_images(o: dict, psf, src: _FrameSource, tiles: list, pass1) -> dict:
    """One row of ``tiles``' ADU images ``{INT: ..., NOISE: ...}`` (uint16 ``(rows, fpixels)``): what the
    PSF blurs (the photons, or with noise the counted photons) as ADU, and with noise the noiseless int
    image of the photons."""
    from bragg_dask.detector.adu import adu_noiseless, adu_noisy

    box = (tiles[0].s0, tiles[0].s1, 0, src.shape[1])
    adu = _band_fused(o, psf, src, box, pass1)
    if adu is None:
        blurred = _band_blurred(o, psf, src, tiles, pass1) if psf is not None else src.blurred_source(*box)
        if o["nonoise"]:
            adu = adu_noiseless(blurred, o["gain"], o["adc"], 16)
        else:
            index = src.index(*box) if o["readout"] > 0 else None  # only the readout noise draws here
            adu, _ = adu_noisy(blurred, index, seed=src.seed, gain=o["gain"], adc=o["adc"], readout=o["readout"],
                               bits=16)
    if o["nonoise"]:
        return {store.INT: adu}
    return {store.INT: adu_noiseless(src.photons(*box), o["gain"], o["adc"], 16), store.NOISE: adu}


def _band_blurred(o: dict, psf, src: _FrameSource, tiles: list, pass1) -> np.ndarray:
    """The row of ``tiles`` blurred, the lost photons added (float64): the whole row at once from its halo
    where that is each tile's PSF from its own bit for bit (``physics.psf.tiling_exact``: the C library's
    gather), else tile by tile."""
    import torch

    from bragg_dask.detector.psf import psf_tile, tiling_exact

    S, F = src.shape
    lost, radius = pass1
    boxes = ([(tiles[0].s0, tiles[0].s1, 0, F)] if tiling_exact(psf, radius, o["device"])
             else [(t.s0, t.s1, t.f0, t.f1) for t in tiles])
    out = torch.cat([psf_tile(psf, src.tensor, b, (S, F), radius=radius, parity=o["parity"]) for b in boxes],
                    dim=1) + lost / (S * F)
    blurred = out.cpu().numpy()
    return blurred.astype(np.float32).astype(np.float64) if o["parity"] == "c" else blurred  # noisify's float


def _band_fused(o: dict, psf, src: _FrameSource, box: tuple, pass1) -> np.ndarray | None:
    """The ADU of what the PSF blurs, by the C library in one pass (``physics.psf.psf_tile_adu16``: the
    same bytes as :func:`_band_blurred` then the ADU), where it applies: a PSF of fixed radius in spec
    parity, on CPU, without readout noise; else None."""
    from bragg_dask.detector.psf import psf_tile_adu16, tiling_exact

    if psf is None or o["parity"] != "spec" or o["readout"] > 0 or not tiling_exact(psf, pass1[1], o["device"]):
        return None
    S, F = src.shape
    done = psf_tile_adu16(psf, src.fill_source, box, (S, F), radius=pass1[1], add=pass1[0] / (S * F),
                          gain=o["gain"], adc=o["adc"])
    return None if done is None else done[0]


def noisify_frame(path: str, o: dict, k: int, seed: int) -> None:
    """Frame ``k``'s int (and noise) images into the store, a row of tiles at a time, each tile written
    to its chunk (a whole frame at a time for a sharded dataset store).  When the whole frame's source is
    kept (:class:`_FrameSource`), its rows of chunks and then its rows of tiles are computed and written
    on ``torch.get_num_threads()`` threads (numpy, the C PSF and file writes release the GIL); the
    result is the same as one at a time."""
    from bragg_dask.runtime import tune_allocator

    tune_allocator()  # the rows' and bands' arrays, megabytes each, reused from the heap (as the kernel's)
    with _Active.lock:
        _Active.frames += 1
    try:
        _noisify_frame(path, o, k, seed)
    finally:
        with _Active.lock:
            _Active.frames -= 1


def _noisify_frame(path: str, o: dict, k: int, seed: int) -> None:
    import concurrent.futures

    import torch

    frame = store.StoreFrame(path, k)
    tiles = store.frame_tiles(path)
    psf = psf_of(o, frame.shape)
    src = _FrameSource(o, frame, seed)
    threads = max(1, torch.get_num_threads()) if src.keep_all else 1
    rows: dict = {}
    for t in tiles:
        rows.setdefault((t.s0, t.s1), []).append(t)
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="bragg-noisify") as pool:
        src.prefetch(pool, psf, tiles)
        pass1 = _lost_and_radius(psf, src, tiles) if psf is not None else None
        g = store.opened(path)
        whole = store.whole_frames(g)
        names = [store.INT] if o["nonoise"] else [store.INT, store.NOISE]
        images = {name: np.zeros(frame.shape, dtype=np.uint16) for name in names} if whole else {}
        synced: set = set()
        halo = pass1[1] + 1 if pass1 is not None else 0  # rows above a tile its PSF reads (the c wrap: one more)

        def one(band) -> None:
            src.release_below(band[0] - halo)
            for name, img in _band_images(o, psf, src, rows[band], pass1).items():
                if whole:
                    images[name][band[0] : band[1]] = img
                    continue
                for t in rows[band]:
                    store.write_tile_image(g, name, k, t, img[:, t.f0 : t.f1], synced)

        for _ in pool.map(one, sorted(rows)):
            pass
        for name, img in images.items():
            store.write_frame_image(g, name, k, img, synced, pool)
    g.sync_folders(synced)


def _model(o: dict) -> dict:
    """The detector model's flags (what the response depends on)."""
    keys = ("scale", "fluence", "gain", "adc", "bits", "psf", "psf_fwhm", "psf_radius", "pixel", "nonoise",
            "readout", "flicker", "calibration", "calib_seed", "parity")
    return {k: o[k] for k in keys if k in o}


class DetectorPass:
    """The detector model on frames of a store: :meth:`begin` (the options, the seed, the arrays made),
    :func:`noisify_frame` for each frame (anywhere: in this process or as a Dask task; frames are
    independent), :meth:`record` (the model and seeds in the store's attributes)."""

    def __init__(self, path: str, argv: list[str]) -> None:
        """``argv``: noisify's flags (no ``--frame``/``--all-frames``), checked against the store."""
        self.path = path
        self.o = store_options(path, argv)
        self.seed = noise_seed_of(self.o)  # a time-based one is reported here, once
        self.names = [store.INT] if self.o["nonoise"] else [store.INT, store.NOISE]

    def begin(self) -> None:
        for name in self.names:
            store.ensure_image_array(self.path, name)

    def frame_args(self, k: int) -> tuple:
        """:func:`noisify_frame`'s arguments for frame ``k`` (its seed: the seed + ``k``)."""
        return self.path, self.o, k, self.seed + k

    def record(self, frames: list[int]) -> None:
        response = dict(store.store_metadata(self.path).get("response") or {})
        done = dict(response.get("frames") or {})
        for k in frames:
            done[str(k)] = {"model": _model(self.o), "noise_seed": None if self.o["nonoise"] else self.seed + k,
                            "arrays": self.names}
        store.record_response(self.path, {"frames": done})

    def summary(self, frames: list[int], every: bool) -> str:
        which = f"frames 0..{frames[-1]}" if every else f"frame {frames[0]}"
        return f"{self.path} ({', '.join(self.names)}: {which})"


def noisify_store_main(path: str, argv: list[str]) -> list[str]:
    """``bragg-dask noisify STORE ...``: the frames' int and noise arrays written; what was written."""
    frame, every, rest = _store_flags(argv)
    job = DetectorPass(path, rest)
    frames = frames_of(path, frame, every)
    lock = StoreLock(path).acquire()
    try:
        job.begin()
        for k in frames:
            noisify_frame(*job.frame_args(k))
        job.record(frames)
    finally:
        lock.release()
    return [job.summary(frames, every)]
