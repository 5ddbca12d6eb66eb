"""The fused orientation sum on CPU as a small C library, built on first use and cached on disk.

:mod:`.inductor` compiles the orientation sum with ``torch.compile``; on CPU that costs about 3 s of
imports and tracing in *every* process, even when the generated code is already on disk, which a
one-image run cannot repay.  This module runs the same arithmetic (``native_osum.c``, beside it)
compiled once per machine by the system C compiler into ``~/.cache/bragg_dask/native`` (one file
per source, flags, compiler and CPU), then loaded with :mod:`ctypes` in milliseconds.  Each call
splits the points over ``torch.get_num_threads()`` Python threads; ctypes releases the GIL, so
they run in parallel.  It computes the sum a :class:`.spec.FusedSpec` describes; besides what
:mod:`.inductor` compiles, it covers tricubic interpolation (``-interpolate``, spec mode:
:func:`.inductor.supports_native`), bit for bit the reference's ``F^2``.

The compiler and the cache folder are a :class:`~.toolchain.Toolchain`'s (passed down from the
settings; nothing here reads the environment).  Where no C compiler works the build fails once per
process and toolchain, said at WARNING once, and the caller uses ``torch.compile`` or the eager path
instead (the choice: :mod:`bragg_dask.physics.backends`).

A second library, built and cached the same way, holds the detector's point-spread function and the
counter-based noise's hot loops (``native_detector.c``: :func:`detector_library`, used by :mod:`bragg_dask.detector.psf`
on CPU and by :mod:`bragg_dask.detector.noise`, which give the same values without it); the detector
builds it with the default toolchain (a compiler on the ``PATH``, ``~/.cache/bragg_dask``).  A third,
``physics/native_labels.c`` (:func:`labels_library`), holds the reflection table's pass over a frame's pixels
(:func:`bragg_dask.physics.reflections.spot_photons`, which gives the same table without it) and a tile's exact
sums' bins (:func:`bragg_dask.physics.sums.exact_sums`, the same bins from torch without it).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import hashlib
import logging
import os
import platform
import subprocess
import threading
from pathlib import Path

import numpy as np
import torch

from bragg_dask.physics.backends.toolchain import DEFAULT_TOOLCHAIN, Toolchain
from bragg_dask.physics.spec import METHOD_CODE, SHAPE_CODE, spec_of

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native_osum.c")
DETECTOR_SOURCE = Path(__file__).parents[2] / "detector" / "native_detector.c"
DETECTOR_ABI = 4
LABELS_SOURCE = Path(__file__).parents[1] / "native_labels.c"
LABELS_ABI = 3
ABI = 3
BLOCK = 128  # points per block in the C code: thread slices are multiples of it
CFLAGS = (
    "-O3",
    "-march=native",
    "-fopenmp-simd",
    "-ffp-contract=off",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fPIC",
    "-shared",
)
#: first with glibc's vector maths (sin, cos, exp vectorised), then without it
VARIANTS = (("-DUSE_LIBMVEC", "-lmvec", "-lm"), ("-lm",))

_lock = threading.Lock()


class _Library:
    """A library of this process: built and loaded on first use, once per toolchain (``libs``: the
    library, or None where it could not be built); a failure is said once (``warned``)."""

    def __init__(self, what: str, fallback: str) -> None:
        self.what, self.fallback = what, fallback
        self.libs: dict[Toolchain, ctypes.CDLL | None] = {}
        self.warned = False


#: the orientation sum and the detector response's loops; where one cannot be built, a WARNING says so
#: once per process, naming the slower path used instead
OSUM = _Library(
    "the native orientation sum (C library)",
    "using torch's kernel instead (Inductor where it compiles, else the eager kernel: about 10x slower on CPU)",
)
DETECTOR = _Library("the native detector library (PSF, noise)", "using torch's PSF and noise loops instead (slower)")
LABELS = _Library(
    "the native reflection-table library (and exact sums)", "using numpy's loops instead (the same results, slower)"
)


class _Pool:
    """The threads the libraries' calls are split over (grown to the largest count asked)."""

    executor: concurrent.futures.ThreadPoolExecutor | None = None


_POOL = _Pool()


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags."""
    try:
        with open("/proc/cpuinfo") as fh:
            lines = [ln for ln in fh.read().splitlines() if ln.startswith(("model name", "flags", "Features"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _key(cc: str, flags: tuple[str, ...], source: Path = SOURCE) -> str:
    st = os.stat(os.path.realpath(cc))  # the compiler binary itself: another version is another file
    version = f"{os.path.realpath(cc)} {st.st_size} {st.st_mtime_ns}"
    h = hashlib.sha256()
    for part in (
        source.read_bytes(),
        " ".join(flags).encode(),
        cc.encode(),
        version.encode(),
        _cpu_id().encode(),
        platform.machine().encode(),
    ):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:20]


def _compile(toolchain: Toolchain, cc: str, variant: tuple[str, ...], source: Path, stem: str) -> ctypes.CDLL:
    """``source`` built with ``variant`` into the toolchain's cache (once per source, flags, compiler and
    CPU) and loaded."""
    flags = CFLAGS + variant
    path = toolchain.cache("native") / f"{stem}-{_key(cc, flags, source)}.so"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        defines = [f for f in variant if f.startswith("-D")]
        libs = [f for f in variant if f.startswith("-l")]
        cmd = [cc, *CFLAGS, *defines, "-o", str(tmp), str(source), *libs]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise OSError(f"{' '.join(cmd)}: {res.stderr.strip()[:500]}")
        os.replace(tmp, path)  # atomic: a concurrent process sees the whole library or none
    return ctypes.CDLL(str(path))


def _build(toolchain: Toolchain, cc: str, variant: tuple[str, ...]) -> ctypes.CDLL:
    lib = _compile(toolchain, cc, variant, SOURCE, "osum")
    if lib.osum_abi() != ABI:
        raise OSError(f"{SOURCE.name}: interface {lib.osum_abi()} (expected {ABI})")
    for name in ("osum_f64", "osum_f32"):
        getattr(lib, name).argtypes = [ctypes.c_void_p] * 9
        getattr(lib, name).restype = None
    for name in ("pix_f64", "pix_f32"):
        getattr(lib, name).argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int64] * 2 + [ctypes.c_void_p] * 4
        getattr(lib, name).restype = None
    return lib


def _build_detector(toolchain: Toolchain, cc: str, variant: tuple[str, ...]) -> ctypes.CDLL:
    lib = _compile(toolchain, cc, variant, DETECTOR_SOURCE, "detector")
    if lib.detector_abi() != DETECTOR_ABI:
        raise OSError(f"{DETECTOR_SOURCE.name}: interface {lib.detector_abi()} (expected {DETECTOR_ABI})")
    lib.psf_correlate.argtypes = [ctypes.c_void_p] * 4
    lib.counter_uniforms.argtypes = [ctypes.c_int64, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p]
    lib.poisson_small.argtypes = [ctypes.c_int64, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.psf_adu16.argtypes = [ctypes.c_void_p] * 6
    lib.adu16.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    for name in ("psf_correlate", "psf_adu16", "adu16", "counter_uniforms", "poisson_small"):
        getattr(lib, name).restype = None
    return lib


def _build_labels(toolchain: Toolchain, cc: str, variant: tuple[str, ...]) -> ctypes.CDLL:
    lib = _compile(toolchain, cc, variant, LABELS_SOURCE, "labels")
    if lib.labels_abi() != LABELS_ABI:
        raise OSError(f"{LABELS_SOURCE.name}: interface {lib.labels_abi()} (expected {LABELS_ABI})")
    lib.label_index.argtypes = [ctypes.c_void_p] * 8
    lib.label_index.restype = None
    lib.label_centroid.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_double] + [ctypes.c_void_p] * 3
    lib.label_centroid.restype = None
    lib.exact_bins.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
    lib.exact_bins.restype = ctypes.c_int64
    return lib


def _first_build(build, toolchain: Toolchain) -> tuple[ctypes.CDLL | None, list[str]]:
    """The library ``build(toolchain, cc, variant)`` makes with the first variant that compiles; errors
    otherwise."""
    cc = toolchain.compiler()
    if cc is None:
        return None, [f"no C compiler{f' {toolchain.cc!r}' if toolchain.cc else ''} (set CC)"]
    errors: list[str] = []
    for variant in VARIANTS:
        try:
            return build(toolchain, cc, variant), errors
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(str(exc))
    return None, errors


def _load_once(slot: _Library, build, toolchain: Toolchain) -> ctypes.CDLL | None:
    """``slot``'s library for ``toolchain``, built by ``build`` on the first call (tried once); None where
    it cannot be built: said once per process, at WARNING, with the path used instead."""
    if toolchain in slot.libs:
        return slot.libs[toolchain]
    with _lock:
        if toolchain not in slot.libs:
            lib, errors = _first_build(build, toolchain)
            if lib is None and not slot.warned:
                log.warning("%s unavailable (%s); %s", slot.what, "; ".join(errors)[:300], slot.fallback)
                slot.warned = True
            slot.libs[toolchain] = lib
    return slot.libs[toolchain]


def library(toolchain: Toolchain = DEFAULT_TOOLCHAIN) -> ctypes.CDLL | None:
    """The orientation-sum library, built with ``toolchain`` if needed; None where it cannot be built
    (tried once)."""
    return _load_once(OSUM, _build, toolchain)


def detector_library(toolchain: Toolchain = DEFAULT_TOOLCHAIN) -> ctypes.CDLL | None:
    """The detector-response library (``native_detector.c``: the PSF, the noise's loops), built if
    needed; None where it cannot be built (tried once)."""
    return _load_once(DETECTOR, _build_detector, toolchain)


def labels_library(toolchain: Toolchain = DEFAULT_TOOLCHAIN) -> ctypes.CDLL | None:
    """The reflection table's library (``physics/native_labels.c``: each pixel's reflection and what it adds
    to it), built if needed; None where it cannot be built (tried once)."""
    return _load_once(LABELS, _build_labels, toolchain)


def run_threaded(fn, n_items: int, min_per_thread: int) -> None:
    """``fn(i0, i1)`` over ``0 .. n_items`` split into contiguous slices, one per thread
    (``torch.get_num_threads()``, at most one per ``min_per_thread`` items); ctypes releases the GIL."""
    threads = max(1, min(torch.get_num_threads(), n_items // max(min_per_thread, 1)))
    if threads == 1:
        fn(0, n_items)
        return
    step = -(-n_items // threads)
    jobs = [_executor(threads).submit(fn, i0, min(n_items, i0 + step)) for i0 in range(0, n_items, step)]
    for job in jobs:
        job.result()


def available(toolchain: Toolchain = DEFAULT_TOOLCHAIN) -> bool:
    return library(toolchain) is not None


def _executor(n: int) -> concurrent.futures.ThreadPoolExecutor:
    with _lock:
        if _POOL.executor is None or _POOL.executor._max_workers < n:
            _POOL.executor = concurrent.futures.ThreadPoolExecutor(max_workers=n, thread_name_prefix="bragg-osum")
        return _POOL.executor


class NativeSum:
    """The orientation sum of one :class:`~.intensity.IntensityModel` by the C library (CPU only).

    Same interface as :class:`.inductor.FusedSum`: ``(Q, 3)`` scattering vectors -> ``(Q,)`` float64.
    Unlike it, covers tricubic interpolation (``-interpolate`` in the spec mode: ``interp_ok`` None).
    """

    planar_input = True  # give it (Q, 3) views of contiguous (3, Q) tensors: no copy at each call

    def __init__(self, model, lib: ctypes.CDLL):
        spec = spec_of(model, tricubic=True)
        assert spec is not None and model.cells.device.type == "cpu", "unsupported configuration"
        self.spec = spec
        self.dtype = spec.dtype
        self.fn = lib.osum_f64 if spec.dtype == torch.float64 else lib.osum_f32
        self.pix = lib.pix_f64 if spec.dtype == torch.float64 else lib.pix_f32
        n_o = model.n_orient
        self.cells = model.cells.reshape(n_o, 9).contiguous()
        self.table = model.nearest.table.contiguous() if spec.table else torch.zeros(1, dtype=spec.dtype)
        # tricubic: the amplitudes; with an axis under 5 planes no evaluation is ever in range (the
        # nearest-neighbour F^2 everywhere), and the C code's stencil needs 4
        tri = spec.tricubic and min(spec.tri_dims) >= 5
        self.amp = model.tricubic.table.to(spec.dtype).contiguous() if tri else torch.zeros(1, dtype=spec.dtype)
        self.ip = np.array(
            [
                0,
                n_o,
                SHAPE_CODE[spec.shape],
                *spec.n_cells,
                *(METHOD_CODE[m] for m in spec.methods),
                int(spec.table),
                *spec.offset,
                *spec.dims,
                int(tri),
                *spec.tri_min,
                *spec.tri_dims,
            ],
            dtype=np.int64,
        )
        self.dp = np.array([spec.fudge, *spec.recip, spec.default_f2], dtype=np.float64)

    def _run(self, s: torch.Tensor, out: torch.Tensor, p0: int, p1: int) -> None:
        """Points ``p0 .. p1`` of ``s`` ``(3, Q)`` (1/m, rows sx, sy, sz) into ``out`` ``(Q,)`` float64."""
        ip = self.ip.copy()
        ip[0] = p1 - p0
        size = s.element_size()
        base = s.data_ptr() + p0 * size
        stride = s.stride(0) * size
        self.fn(
            ip.ctypes.data,
            self.dp.ctypes.data,
            base,
            base + stride,
            base + 2 * stride,
            self.cells.data_ptr(),
            self.table.data_ptr(),
            self.amp.data_ptr(),
            out.data_ptr() + p0 * 8,
        )

    def __call__(self, scatter: torch.Tensor, interp_ok=None) -> torch.Tensor:
        """``(Q,)`` float64 (electrons^2) sum over orientations of ``scatter`` ``(Q, 3)`` (1/m)."""
        assert interp_ok is None
        q = scatter.shape[0]
        s = scatter.to(device="cpu", dtype=self.dtype).T.contiguous()  # (3, Q): sx, sy, sz rows
        out = torch.empty(q, dtype=torch.float64)
        threads = max(1, min(torch.get_num_threads(), q // (4 * BLOCK)))
        if threads == 1:
            self._run(s, out, 0, q)
            return out
        step = -(-q // threads // BLOCK) * BLOCK
        jobs = [_executor(threads).submit(self._run, s, out, p0, min(q, p0 + step)) for p0 in range(0, q, step)]
        for job in jobs:
            job.result()
        return out

    def tile_image(self, prep, tile, rendered: np.ndarray) -> np.ndarray:
        """The float32 image ``(n_slow, n_fast)`` of ``tile`` (photons; pixels not ``rendered`` 0), every
        rendered pixel whole in one pass of the C library (``native_osum.c``'s ``pix_*``: its points' geometry,
        this sum per source, its factors; nothing per pixel kept but its value), on ``torch.get_num_threads()``
        threads; where :func:`pixels_cover` holds."""
        gi, gp, src = _pixel_params(prep, tile)
        full = bool(rendered.all())
        if full:
            n, f, s = rendered.size, None, None
            image = np.empty(tile.shape, dtype=np.float32)
            vals = image.reshape(-1)
        else:
            ss, ff = np.nonzero(rendered)
            f = np.ascontiguousarray(ff + tile.f0, dtype=np.int64)
            s = np.ascontiguousarray(ss + tile.s0, dtype=np.int64)
            n = f.size
            vals = np.empty(n, dtype=np.float32)
        fp = None if f is None else f.ctypes.data
        sp = None if s is None else s.ctypes.data

        def run(p0: int, p1: int) -> None:
            self.pix(self.ip.ctypes.data, self.dp.ctypes.data, gi.ctypes.data, gp.ctypes.data, src.ctypes.data, fp,
                     sp, p0, p1 - p0, self.cells.data_ptr(), self.table.data_ptr(), self.amp.data_ptr(),
                     vals.ctypes.data + 4 * p0)  # fmt: skip

        if n:
            run_threaded(run, n, max(1, 4 * BLOCK // max(1, prep.points_per_pixel)))
        if full:
            return image
        image = np.zeros(tile.shape, dtype=np.float32)
        image[ss, ff] = vals
        return image


def pixels_cover(prep) -> bool:
    """Whether :meth:`NativeSum.pixel_values` computes ``prep``'s pixels: the spec mode on CPU, without a
    running sum (``-oversample_*``), a curved detector or a ``-dmin`` cut (those keep the prologue in torch)."""
    sim = prep.sim
    return (
        prep.parity == "spec"
        and prep.device.type == "cpu"
        and not prep.running
        and not sim.detector.curved
        and not sim.dmin_m > 0.0
        and prep.model_fresh is None
    )


#: guards the per-tile parameters' caches (``prep.setup.pixel_params``), shared by a worker's threads
_PARAMS_LOCK = threading.Lock()


def _pixel_params(prep, tile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``gi``, ``gp`` and ``src`` arrays of ``pix_*`` for ``prep``'s ``tile`` (see ``native_osum.c``), made
    once for the frames that share ``prep``'s detector and beam (``prep.setup``: they depend on nothing else
    but the tile, its panel and the simulation's steps)."""
    key = (tile.panel, tile.f0, tile.s0, tile.shape[1], prep.sim.steps)
    cache = prep.setup.pixel_params
    hit = cache.get(key)
    if hit is None:
        hit = _make_pixel_params(prep, tile)
        with _PARAMS_LOCK:
            cache[key] = hit
            while len(cache) > 4096:  # (tiles of many panels: the oldest go)
                del cache[next(iter(cache))]
    return hit


def _make_pixel_params(prep, tile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sim = prep.sim
    det, beam = sim.detector, sim.beam
    b_in, e_in = _polar_basis(tuple(prep.polar_axis.tolist()), tuple(prep.incident[0].tolist()))
    gi = np.array([det.oversample, det.thicksteps, int(det.point_pixel), prep.incident.shape[0],
                   int(det.thickness_m != 0.0), int(bool(beam.nopolar)), tile.f0, tile.s0, tile.shape[1]],
                  dtype=np.int64)  # fmt: skip
    gp = np.array(
        [*prep.fdet.tolist(), *prep.sdet.tolist(), *prep.odet.tolist(), *prep.pix0.tolist(),
         det.pixel_size_m / det.oversample, det.thickstep_m, det.pixel_size_m, det.geometry.close_distance_m,
         det.thickstep_m * det.mu_per_m, beam.polarization, prep.fluence_scale, prep.i_bg, float(sim.steps),
         *b_in, *e_in],
        dtype=np.float64,
    )  # fmt: skip
    src = torch.cat([prep.incident, prep.wavelength[:, None]], dim=1).to(torch.float64).contiguous().numpy()
    return gi, gp, np.ascontiguousarray(src)


@functools.lru_cache(maxsize=64)
def _polar_basis(axis: tuple, incident: tuple) -> tuple[list[float], list[float]]:
    """The first source's ``b_in`` and ``e_in`` (:func:`~bragg_dask.physics.polarization.kahn_factor`'s, by its
    own operations), for the frames of a dataset computed once."""
    from bragg_dask.physics.polarization import _unit

    inc = torch.tensor(incident, dtype=torch.float64)
    b_in = _unit(torch.linalg.cross(torch.tensor(axis, dtype=torch.float64), inc, dim=-1))
    e_in = _unit(torch.linalg.cross(inc, b_in, dim=-1))
    return b_in.tolist(), e_in.tolist()
