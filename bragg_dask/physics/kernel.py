"""The tile kernel: the float image of one detector tile.

For every pixel the C program sums ``F_cell^2 F_latt^2`` over sensor layers, sub-pixels, sources,
phi steps and mosaic domains, then applies the per-pixel factors (solid angle, polarization,
capture fraction) and the scale ``r_e^2 fluence / steps``.  Here the sum is vectorised over a
batch of pixels and a chunk of orientations (:mod:`.intensity`), so memory is bounded by a budget,
never by detector size x steps.

The walk over a tile's pixels, sources and orientations is :mod:`.evaluation`'s (shared with the
pre-pass); :func:`pixel_values` is what the kernel computes on it.  With
``-oversample_thick/_polar/_omega`` the C program multiplies the *running* sum by the factor after
every evaluation; :func:`_running_values` reproduces that recurrence in loop order.
"""

from __future__ import annotations

import collections
import copy
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bragg_dask.physics import pixels
from bragg_dask.physics.backends import DEFAULT_CHOICE, REGISTRY, BackendChoice, native
from bragg_dask.physics.backends import inductor as fused
from bragg_dask.physics.constants import AVOGADRO, R_E_SQR, WATER_F, WATER_MW
from bragg_dask.physics.crystal import carryover_matters, phi_angles, rotated_cells
from bragg_dask.physics.evaluation import PixelBatch, TileWalk
from bragg_dask.physics.intensity import IntensityModel
from bragg_dask.physics.polarization import kahn_factor, solid_angle
from bragg_dask.physics.roi import rendered_mask
from bragg_dask.physics.sums import with_exact_sums
from bragg_dask.physics.tiles import TileSpec, TileState

__all__ = [
    "AVOGADRO",
    "DEFAULT_BUDGET_BYTES",
    "R_E_SQR",
    "WATER_F",
    "WATER_MW",
    "PreparedSimulation",
    "TileResult",
    "batch_points",
    "device_budget",
    "pixel_values",
    "prepare",
    "simulate_tile",
]

DEFAULT_BUDGET_BYTES = 256 * 2**20
#: a GPU tile's batches may take this share of the card's memory, up to GPU_BUDGET_CAP
GPU_BUDGET_SHARE = 8
GPU_BUDGET_CAP = 4 * 2**30


def device_budget(device) -> int:
    """Bytes a tile's batches may take on ``device``: a fixed budget on CPU; on a GPU, an eighth of
    the card's memory up to 4 GiB (large batches: few launches), whatever the detector size."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return DEFAULT_BUDGET_BYTES
    total = torch.cuda.get_device_properties(dev).total_memory
    return int(min(GPU_BUDGET_CAP, total // GPU_BUDGET_SHARE))


@dataclass(frozen=True)
class TileResult:
    """Float image of a tile, ``(n_slow, n_fast)`` float32 photons/pixel, and its rendered mask."""

    tile: TileSpec
    image: np.ndarray
    rendered: np.ndarray  # bool, same shape: inside ROI and not masked
    computed_stats: dict | None = None  # the statistics, where the device computed them (a GPU)

    def stats(self) -> dict:
        """Partial statistics over rendered pixels (sum, sum of squares, count, max, argmax)."""
        if self.computed_stats is not None:
            return dict(self.computed_stats)
        full = bool(self.rendered.all())
        v = self.image.reshape(-1) if full else self.image[self.rendered]
        if v.size == 0:
            return {"sum": 0.0, "sumsq": 0.0, "n": 0, "max": 0.0, "argmax": None}
        flat = self.image if full else np.where(self.rendered, self.image, -np.inf)
        s, f = np.unravel_index(int(np.argmax(flat)), flat.shape)
        partial = {"n": int(v.size), "max": float(self.image[s, f]), "argmax": _position(self.tile, int(s), int(f))}
        exact = with_exact_sums(partial, v)
        if "sum_parts" in exact:
            return exact
        w = v.astype(np.float64)  # a value not finite: the plain sums (inf or NaN, as they come)
        return partial | {"sum": float(w.sum()), "sumsq": float((w * w).sum())}


class PreparedSimulation:
    """Device tensors derived once per (simulation, device, dtype): orientations, sources, tables."""

    def __init__(
        self, sim, device: torch.device, dtype: torch.dtype, parity: str = "spec", setup: _Setup | None = None
    ):
        self.sim = sim
        self.device = device
        self.dtype = dtype
        self.parity = parity
        cr, det = sim.crystal, sim.detector
        phis = phi_angles(cr.phi0_rad, cr.phistep_rad, cr.phisteps)

        def model(zero_phi_uses: str, share: IntensityModel | None = None) -> IntensityModel:
            cells = rotated_cells(cr, cr.spindle_axis, phis, cr.mosaic_umats, cr.mosaic_spread_rad, zero_phi_uses)
            cells_t = torch.as_tensor(cells.reshape(-1, 3), dtype=dtype, device=device)
            return IntensityModel(cr, cells_t, sim.water_size_m != 0.0, dtype, device, share)

        # spec: a zero phi step is unrotated; c: it carries the last rotation, except in a
        # thread's first phi loop ("fresh"), which only the first executed evaluation sees
        self.model = model("unrotated" if parity == "spec" else "carried")
        self.model_fresh = model("fresh", self.model) if parity == "c" and carryover_matters(phis) else None
        self.n_orient = self.model.n_orient
        #: the detector's and the beam's tensors, shared by the frames that differ only in their crystal
        self.setup = setup if setup is not None else _Setup(sim, device)
        su = self.setup
        self.incident, self.wavelength = su.incident, su.wavelength  # (ns, 3), (ns,)
        self.fdet, self.sdet, self.odet, self.pix0 = su.fdet, su.sdet, su.odet, su.pix0
        self.beam_vec, self.polar_axis, self.layers = su.beam_vec, su.polar_axis, su.layers
        self.i_bg, self.fluence_scale = su.i_bg, su.fluence_scale
        self.running = det.oversample_thick or det.oversample_polar or det.oversample_omega
        self.points_per_pixel = det.thicksteps * det.oversample * det.oversample  # layers x sub-pixels
        self._panels: dict[int, PreparedSimulation] = {}  # a detector of panels: each panel's (see panel())

    def panel(self, k: int) -> PreparedSimulation:
        """Panel ``k`` of a detector of panels: these tensors (orientations, sources, tables: shared) with
        the panel's own simulation and basis (``self`` for a single-panel detector)."""
        if not self.sim.detector.panels:
            return self
        hit = self._panels.get(k)
        if hit is None:
            hit = copy.copy(self)
            hit.sim = self.sim.panel(k)  # (a single panel: its own panel() is itself, the shared cache unused)
            det = hit.sim.detector
            hit.points_per_pixel = det.thicksteps * det.oversample * det.oversample
            geo = hit.sim.detector.geometry
            f64: dict[str, Any] = {"dtype": torch.float64, "device": self.device}
            hit.fdet, hit.sdet, hit.odet, hit.pix0 = (
                torch.as_tensor(v, **f64) for v in (geo.fdet, geo.sdet, geo.odet, geo.pix0_m)
            )
            self._panels[k] = hit
        return hit

    def points_per_batch(self, budget_bytes: int) -> int:
        """Sub-pixel points per batch: about one inner chunk, within the memory budget.

        The inner loop keeps ``points x orientations-in-chunk`` near ``CHUNK_ELEMENTS``; each
        element costs ~10 temporaries of 3 values plus the per-point geometry.  The running-sum
        path keeps every orientation's term of the batch.
        """
        per_elem = 10 * 3 * 8
        if self.running:
            per_point = per_elem * self.n_orient * len(self.sim.beam.sources) + 512
            return max(1, min(4096, budget_bytes // per_point))
        chunk = self.model.chunk_elements
        want = max(chunk // self.n_orient, 1024)
        per_point = per_elem * max(1, min(self.n_orient, chunk // want)) + 512
        return max(1, min(want, budget_bytes // per_point))

    def fused_points_per_batch(self, budget_bytes: int) -> int:
        """Sub-pixel points per batch of the fused path: no ``points x orientations`` temporaries."""
        per_point = 512 + 96 * len(self.sim.beam.sources)
        return max(1, min(fused.max_points(self.device), budget_bytes // per_point))

    def pixels_per_batch(self, points: int) -> int:
        """Pixels per batch for ``points`` sub-pixel points per batch (at least one pixel)."""
        return max(1, points // self.points_per_pixel)


class _Setup:
    """What a prepared simulation takes from its detector and beam alone (not its crystal), as tensors: the
    frames of a dataset or a series (the same detector and beam objects, other crystals) share one, and with
    it the C pixel pass's parameters per tile (``pixel_params``: :func:`.backends.native._pixel_params`)."""

    def __init__(self, sim, device: torch.device):
        det, beam = sim.detector, sim.beam
        geo = det.geometry
        f64: dict[str, Any] = {"dtype": torch.float64, "device": device}
        self.incident = torch.as_tensor([s.incident for s in beam.sources], **f64)
        self.wavelength = torch.as_tensor([s.wavelength_m for s in beam.sources], **f64)
        self.fdet, self.sdet, self.odet, self.pix0 = (
            torch.as_tensor(v, **f64) for v in (geo.fdet, geo.sdet, geo.odet, geo.pix0_m)
        )
        self.beam_vec = torch.as_tensor(geo.beam, **f64)
        self.polar_axis = torch.as_tensor(beam.polar_vector, **f64)
        self.layers = torch.arange(det.thicksteps, **f64) * det.thickstep_m
        self.fluence_scale = R_E_SQR * beam.fluence
        w = sim.water_size_m
        self.i_bg = WATER_F * WATER_F * self.fluence_scale * w * w * w * 1e6 * AVOGADRO / WATER_MW
        self.pixel_params: dict = {}


#: recent prepared simulations and set-ups, by identity (a task's frames are new objects: hashing each
#: simulation would cost more than the set-up it finds); entries hold their keys' objects alive
_RECENT: collections.OrderedDict = collections.OrderedDict()
_SETUPS: collections.OrderedDict = collections.OrderedDict()
_PREPARE_LOCK = threading.Lock()


def prepare(sim, device: str = "cpu", dtype: torch.dtype = torch.float64, parity: str = "spec"):
    """The :class:`PreparedSimulation` of ``sim``: the same object for the same simulation object (recent
    ones), and the detector's and beam's tensors shared with the other frames on them."""
    key = (id(sim), str(device), dtype, parity)
    with _PREPARE_LOCK:
        hit = _RECENT.get(key)
        if hit is not None and hit.sim is sim:
            _RECENT.move_to_end(key)
            return hit
        skey = (id(sim.detector), id(sim.beam), sim.water_size_m, str(device))
        found = _SETUPS.get(skey)
        setup = found[2] if found is not None and found[0] is sim.detector and found[1] is sim.beam else None
    dev = torch.device(device)
    if setup is None:
        setup = _Setup(sim, dev)
    prep = PreparedSimulation(sim, dev, dtype, parity, setup)
    with _PREPARE_LOCK:
        _RECENT[key] = prep
        _SETUPS[skey] = (sim.detector, sim.beam, setup)
        for table in (_RECENT, _SETUPS):
            while len(table) > 8:
                table.popitem(last=False)
    return prep


def pixel_values(prep: PreparedSimulation, batch: PixelBatch, fused_sum=None) -> torch.Tensor:
    """Values of a batch of pixels: ``(P,)`` float64, photons per pixel.

    ``fused_sum``: the compiled orientation sum (:mod:`.backends.inductor`) replacing ``prep.model.sum``; only
    given where :func:`.backends.inductor.supports` holds (no running sum, no interpolation, spec parity).  The
    batch's geometry comes from the prologue cache (other frames on the same detector share it).
    """
    if prep.running:
        return _running_values(prep, batch)
    sim = prep.sim
    pro = batch.prologue(prep)
    p, q = pro.p, pro.q
    dev = pro.omega.device
    total = torch.zeros(p, dtype=torch.float64, device=dev)
    model_sum = prep.model.sum if fused_sum is None else fused_sum
    dmin = sim.dmin_m > 0.0
    planar = getattr(model_sum, "planar_input", False)
    for src in batch.sources(prep, pro.scatters, pro.kept_all):
        ok = src.interp_ok
        sc, rows = pro.scatter_in(prep.dtype, src.index, dmin, planar)
        if rows is not None:
            contrib = torch.zeros(p * q, dtype=torch.float64, device=dev)
            contrib[rows] = model_sum(sc, None if ok is None else ok[rows])
        else:
            contrib = model_sum(sc, ok)
        contrib = src.refresh(prep, contrib, _orientation_sum)
        total += contrib if q == 1 else contrib.view(p, q).sum(1)
    value = prep.fluence_scale * (prep.i_bg + total) / sim.steps
    return value * pro.capture * pro.polar * pro.omega


def _orientation_sum(model: IntensityModel, scatter: torch.Tensor, interp_ok) -> torch.Tensor:
    """:meth:`.intensity.IntensityModel.sum`: ``scatter`` ``(R, 3)`` 1/m -> ``(R,)`` float64."""
    return model.sum(scatter, interp_ok)


def _running_values(prep: PreparedSimulation, batch: PixelBatch) -> torch.Tensor:
    """Pixel values ``(P,)`` float64 (photons) with ``-oversample_*``: the running sum is multiplied
    after every evaluation."""
    sim, det = prep.sim, prep.sim.detector
    geo = batch.geometry(prep)
    pts = geo.points
    p, q = pts.airpath.shape
    omega_pt = solid_angle(pts.airpath, det.pixel_size_m, det.geometry.close_distance_m, det.point_pixel)
    capture_pt = pixels.capture_per_point(prep, pts.diffracted)  # (P, Q)
    d_flat = pts.diffracted.reshape(-1, 3)
    acc = torch.full((p,), prep.i_bg, dtype=torch.float64, device=d_flat.device)
    per_src = []
    for src in batch.sources(prep, geo.scatters, geo.kept_all):
        term = src.evaluate(prep, _all_terms)
        gate = ~torch.isnan(term)
        term = torch.nan_to_num(term, nan=0.0)
        gate &= geo.kept_all[:, src.index].reshape(-1)[:, None]
        factor = _running_factor(prep, d_flat, capture_pt, omega_pt, src.index)
        per_src.append((term.view(p, q, -1), gate.view(p, q, -1), factor.view(p, q)))
    for k in range(q):  # loop order: point (layer, subS, subF), then source, then orientation
        for term, gate, factor in per_src:
            acc = _apply_orientations(acc, term[:, k], gate[:, k], factor[:, k])
    value = prep.fluence_scale * acc / sim.steps
    if not det.oversample_thick:
        value = value * pixels.capture_last_layer(prep, pts.diffracted)
    if not det.oversample_polar:
        value = value * pixels.first_polar(prep, pts.diffracted, geo.kept_all)
    if not det.oversample_omega:
        value = value * omega_pt[:, 0]
    return value


def _running_factor(
    prep: PreparedSimulation, d_flat: torch.Tensor, capture_pt: torch.Tensor, omega_pt: torch.Tensor, s: int
) -> torch.Tensor:
    """The factor ``(P * Q,)`` (dimensionless; solid angle in sr) multiplying the running sum after each of
    source ``s``'s evaluations: capture, polarization and solid angle as ``-oversample_*`` ask.
    ``d_flat``: ``(P * Q, 3)`` unit vectors; ``capture_pt``, ``omega_pt``: ``(P, Q)``."""
    det, beam = prep.sim.detector, prep.sim.beam
    factor = torch.ones(d_flat.shape[0], dtype=torch.float64, device=d_flat.device)
    if det.oversample_thick:
        factor = factor * capture_pt.reshape(-1)
    if det.oversample_polar:  # recomputed per source, and -nopolar does not apply
        inc = prep.incident[s].expand_as(d_flat)
        factor = factor * kahn_factor(beam.polarization, inc, d_flat, prep.polar_axis)
    if det.oversample_omega:
        factor = factor * omega_pt.reshape(-1)
    return factor


def _all_terms(model: IntensityModel, scatter: torch.Tensor, interp_ok) -> torch.Tensor:
    """Every orientation's term ``(Q, O)`` float64 (electrons^2) of ``scatter`` ``(Q, 3)`` (1/m); NaN marks
    evaluations that fail the gate."""
    out = torch.empty(scatter.shape[0], model.n_orient, dtype=torch.float64, device=scatter.device)
    for t in model.terms(scatter, interp_ok):
        chunk = t.term.to(torch.float64)
        out[:, t.o0 : t.o1] = chunk if t.gate is None else torch.where(t.gate, chunk, float("nan"))
    return out


def _apply_orientations(acc: torch.Tensor, term: torch.Tensor, gate: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """``acc <- (acc + t_o) * f`` for every gated orientation ``o`` in order, in closed form.

    ``acc``, ``f``: ``(P,)``; ``term``, ``gate``: ``(P, O)``; ``acc`` and ``term`` in one unit, ``f``
    dimensionless.  Returns ``(P,)``.  An evaluation that fails the gate adds nothing and does not multiply.
    """
    g = gate.to(torch.float64)
    # number of gated evaluations from o to the end (inclusive): the powers of f each term meets
    remaining = torch.flip(torch.cumsum(torch.flip(g, [1]), 1), [1])
    fpow = f[:, None] ** remaining
    return acc * f ** g.sum(1) + (term * g * fpow).sum(1)


def simulate_tile(
    sim,
    tile: TileSpec,
    state: TileState | None = None,
    *,
    parity: str = "spec",
    device: str = "cpu",
    dtype: torch.dtype = torch.float64,
    budget_bytes: int | None = None,
    backend: BackendChoice = DEFAULT_CHOICE,
) -> TileResult:
    """Float image of ``tile``: ``TileResult.image`` is ``(n_slow, n_fast)`` float32, photons per pixel.

    ``parity="c"`` reproduces the C program's carried-over state; ``state`` (from
    :mod:`bragg_dask.planning.carryover`) is then the state entering each row of the tile.  Memory is bounded
    by ``budget_bytes`` (pixel batches x orientation chunks; default :func:`device_budget`), not by
    the tile size.  On a GPU the tile's values stay on the card until one copy at the end.

    ``backend`` (:class:`~bragg_dask.physics.backends.BackendChoice`: the run's settings) chooses the
    fast orientation sum (the C library, Inductor's or our Triton kernel) where it covers the
    configuration (:mod:`bragg_dask.physics.backends`).  The eager path is the reference.
    """
    if parity not in ("spec", "c"):
        raise ValueError(f"unknown parity {parity!r}")
    if parity == "c" and state is None:
        raise ValueError("the c-parity mode needs the tile's state (see bragg_dask.planning.carryover)")
    prep = prepare(sim, device, dtype, parity)
    if tile.panel is not None:  # a tile of one panel: that panel's basis, the rest shared
        prep = prep.panel(tile.panel)
        sim = prep.sim
    rendered = rendered_mask(sim.detector, tile)
    full = bool(rendered.all())
    n = rendered.size if full else int(np.count_nonzero(rendered))
    if n == 0:
        return TileResult(tile=tile, image=np.zeros(tile.shape, dtype=np.float32), rendered=rendered)
    fused_sum = REGISTRY.sum_for(prep, n * batch_points(sim), backend)
    if isinstance(fused_sum, native.NativeSum) and native.pixels_cover(prep):  # every pixel whole in C
        return TileResult(tile=tile, image=fused_sum.tile_image(prep, tile, rendered), rendered=rendered)
    budget = device_budget(prep.device) if budget_bytes is None else budget_bytes
    per_batch = prep.points_per_batch(budget) if fused_sum is None else prep.fused_points_per_batch(budget)
    walk = TileWalk(tile, rendered, prep.device, state if parity == "c" else None, on_device=full and parity == "spec")
    out = torch.empty(n, dtype=torch.float32, device=prep.device)
    with torch.inference_mode():
        for batch in walk.batches(prep.pixels_per_batch(per_batch)):
            out[batch.start : batch.stop] = pixel_values(prep, batch, fused_sum)  # float64 -> float32 in the copy
        stats = None if prep.device.type == "cpu" else _device_stats(out, tile, walk.ss, walk.ff)
    return TileResult(tile=tile, image=_image(out, walk), rendered=rendered, computed_stats=stats)


def _image(values: torch.Tensor, walk: TileWalk) -> np.ndarray:
    """The tile's ``(n_slow, n_fast)`` float32 image from its rendered pixels' ``values`` ``(N,)`` (raster
    order, photons); pixels not rendered are 0."""
    vals = values.numpy() if values.device.type == "cpu" else _to_host(values)
    if walk.ss is None:
        return vals.reshape(walk.tile.shape)
    image = np.zeros(walk.tile.shape, dtype=np.float32)
    image[walk.ss, walk.ff] = vals
    return image


def _to_host(values: torch.Tensor) -> np.ndarray:
    """A GPU tensor's values on the host, through page-locked memory: a copy to pageable memory
    runs at a fraction of the bus's speed (about 2 GB/s measured on an H200 machine, 15 ms of a
    Pilatus 6M image whose kernel took 4 ms).  The block returns to torch's pinned-memory cache
    once the array (the tile's image) is dropped."""
    try:
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
    except RuntimeError:  # no page-locked memory to be had: a plain copy
        return values.cpu().numpy()
    host.copy_(values)
    return host.numpy()


def _device_stats(vals: torch.Tensor, tile: TileSpec, ss, ff) -> dict | None:
    """:meth:`TileResult.stats` from the rendered values ``vals`` ``(N,)`` (photons, raster order) where
    they are (a GPU): one small copy instead of passes over the tile on the host; None (the host
    computes them) if a value is NaN."""
    v = vals.to(torch.float64)
    mx = vals.max()
    hits = vals == mx
    first = torch.argmax(hits.to(torch.uint8))  # the first maximum in raster order, as numpy's argmax
    total, sumsq, top, hit, i = torch.stack(
        [v.sum(), (v * v).sum(), mx.to(torch.float64), hits[first].to(torch.float64), first.to(torch.float64)]
    ).tolist()
    if not hit:
        return None
    i = int(i)
    s, f = divmod(i, tile.shape[1]) if ss is None else (int(ss[i]), int(ff[i]))
    partial = {"sum": total, "sumsq": sumsq, "n": int(vals.numel()), "max": top, "argmax": _position(tile, s, f)}
    return with_exact_sums(partial, vals)  # (the sums of mantissas made where the values are)


def _position(tile: TileSpec, s: int, f: int) -> tuple[int, ...]:
    """Pixel ``(s, f)`` of ``tile`` in the detector: ``(slow, fast)``, or ``(panel, slow, fast)`` on a
    detector of panels."""
    pos = (s + tile.s0, f + tile.f0)
    return pos if tile.panel is None else (tile.panel, *pos)


def batch_points(sim) -> int:
    """Evaluations per pixel (layers x sub-pixels x sources x orientations), for throughput figures."""
    det = sim.detector
    return det.thicksteps * det.oversample**2 * len(sim.beam.sources) * sim.n_orientations
