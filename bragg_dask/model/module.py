"""``bragg_dask.Model``: a simulation as a ``torch.nn.Module`` whose image is differentiable with respect to
named parameters (:data:`~bragg_dask.model.start.PARAMETERS`).

Part of :mod:`bragg_dask.model`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import torch

from bragg_dask.errors import ConfigError
from bragg_dask.model import fastsum
from bragg_dask.model import forward as fw
from bragg_dask.model.fastsum import NativeSums, SumSpec, recomputed
from bragg_dask.model.start import PARAMETERS, check_model, start_values
from bragg_dask.physics.roi import rendered_mask
from bragg_dask.planning.plan import TileSpec


class Model(torch.nn.Module):
    """The image of ``sim`` (a :class:`~bragg_dask.config.Simulation`, spec mode) as a function of the
    parameters named in ``free`` (:attr:`PARAMETERS`), each an ``nn.Parameter`` of this module under its name,
    in the units of the flags, starting at the simulation's values; the others are fixed (buffers).

    ``model()`` is the whole image ``(spixels, fpixels)``; ``model(tile)`` one tile's (a
    :class:`~bragg_dask.planning.plan.TileSpec`); pixels outside the ROI or masked are 0, as in the
    simulator's images.  ``dtype``: float64 (checks) or float32 (speed).  ``parity="c"`` is refused.

    ``backend``: ``"native"`` (the orientation sum and its gradient by the C library, :mod:`.fastsum`; CPU),
    ``"eager"`` (torch's autograd through :func:`.forward.orientation_sums`: the reference), or ``"auto"`` (the
    C library on CPU where it builds, said once at WARNING where it does not; eager on CUDA).
    """

    #: the names ``free`` takes: ``{name: (units, what it is)}``
    PARAMETERS = PARAMETERS

    def __init__(
        self, sim, free: Iterable[str] = (), *, dtype: torch.dtype = torch.float64, device: str = "cpu",
        parity: str = "spec", backend: str = "auto",
    ) -> None:  # fmt: skip
        super().__init__()
        free = [free] if isinstance(free, str) else list(free)  # (one name alone, not its letters)
        check_model(sim, free, parity)
        if dtype not in (torch.float64, torch.float32):
            raise ConfigError(f"{dtype}: the model computes in float64 or float32", field="dtype")
        try:
            kind = torch.device(device).type
        except (RuntimeError, TypeError):
            raise ConfigError(f"{device!r}: not a device (cpu or cuda)", flag="--device") from None
        if kind not in ("cpu", "cuda"):
            raise ConfigError(f"{device!r}: the model runs on cpu or cuda", flag="--device")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{device}: no CUDA device here", flag="--device")
        self.sim, self.dtype, self.device = sim, dtype, torch.device(device)
        self.free = tuple(free)
        start = start_values(sim)
        self._start = start
        for name, value in start.values.items():
            if value is None:
                continue
            t = torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=dtype, device=self.device)
            if name in free:
                self.register_parameter(name, torch.nn.Parameter(t))
            else:
                self.register_buffer(name, t)
        for name, array in (("mosaic_axes", start.mosaic_axes), ("plane0", start.plane), ("beam_dir", start.beam)):
            self.register_buffer(name, torch.as_tensor(array, dtype=dtype, device=self.device))
        self.default_f = float(sim.crystal.structure_factors.default_F)
        sf = sim.crystal.structure_factors
        lo = [int(v) - 1 for v in sf.hkl_min] if sf.values is not None else [0, 0, 0]
        self.sum_spec = SumSpec(sim.crystal.shape, float(sim.crystal.fudge), self.default_f, (lo[0], lo[1], lo[2]))
        self.backend = _backend(backend, self.device)

    def frame(self, sim) -> Model:
        """A model of another frame ``sim`` (the same crystal, detector and beam seen at another rotation: a
        series' frame) whose free parameters are this model's own tensors: a stack of frames fitted together
        (:func:`~.parallel.loss_and_grad` with a list of models)."""
        other = Model(sim, self.free, dtype=self.dtype, device=str(self.device), backend=self.backend)
        if other.sim.detector.shape != self.sim.detector.shape:
            raise ConfigError("the frame's detector differs from the model's", field="sim")
        for name in self.free:
            if getattr(other, name).shape != getattr(self, name).shape:
                raise ConfigError(f"the frame's {name} differs in shape from the model's", field="sim")
            setattr(other, name, getattr(self, name))
        return other

    def parameters_by_name(self) -> dict[str, torch.Tensor]:
        """Every parameter's tensor (free or fixed), by name."""
        return {name: getattr(self, name) for name in PARAMETERS if hasattr(self, name)}

    def axes(self, params: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(real, reciprocal)``: the cell vectors (rows a, b, c; metres) and a*, b*, c* (1/Angstrom), of the
        model's parameters or ``params`` (name -> tensor)."""
        p = params or self.parameters_by_name()
        real, recip = fw.crystal_axes(p["cell"], p["misset"])
        return real, recip * self._start.recip_scale

    def orientations(self, params: dict | None = None) -> torch.Tensor:
        """Every (phi step, mosaic domain)'s cell vectors ``(O, 3, 3)`` (rows a, b, c; metres)."""
        p = params or self.parameters_by_name()
        real, _ = self.axes(p)
        axes, angles = self._buffer("mosaic_axes"), self._start.mosaic_angles
        return fw.orientations(real, self.sim.crystal, p["mosaic_spread"], axes, angles)

    def plane(self, params: dict | None = None, panel: int = 0) -> tuple[torch.Tensor, ...]:
        """The detector's (or panel ``panel``'s) fast, slow and normal unit axes and the corner of its first pixel
        (metres)."""
        p = params or self.parameters_by_name()
        k = panel
        one = not self.sim.detector.panels  # (one plane: its parameters without a panel axis)
        rotation = p["detector_rotation"] if one else p["detector_rotation"][k]
        rot = fw.rotation_xyz(torch.deg2rad(rotation))
        f0, s0, o0 = self._buffer("plane0")[k].unbind()
        f, s, o = rot @ f0, rot @ s0, rot @ o0
        centre, distance = (p["beam_center"] if one else p["beam_center"][k]) * 1e-3, p["distance"][k] * 1e-3
        if self._start.pivot[k] == "sample":  # about the sample: the plane's point rotates too
            pix0 = rot @ (-centre[0] * f0 - centre[1] * s0 + distance * self._start.ratio[k] * o0)
        else:  # about the beam centre
            pix0 = -centre[0] * f - centre[1] * s + distance * self._buffer("beam_dir")
        return f, s, o, pix0

    def crystal(self, params: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(cells, recip, table)``: the orientations' cell vectors ``(O, 3, 3)``, the reciprocal vectors
        ``(3, 3)`` (1/Angstrom) and the table of ``|F|`` padded with ``default_F`` (None without a table)."""
        p = params or self.parameters_by_name()
        _, recip = self.axes(p)
        return self.orientations(p), recip, fw.padded_table(p.get("structure_factors"), self.default_f)

    def forward(self, tile: TileSpec | None = None) -> torch.Tensor:
        det = self.sim.detector
        if tile is None and det.panels:  # every panel's image, (panel, slow, fast)
            whole = [TileSpec(0, det.spixels, 0, det.fpixels, panel=k) for k in range(len(det.panels))]
            return torch.stack([self.forward(t) for t in whole])
        if tile is None:
            tile = TileSpec(index=(0, 0), s0=0, s1=det.spixels, f0=0, f1=det.fpixels)
        k = tile.panel or 0
        rendered = rendered_mask(self.sim.panel(k).detector, tile)
        ss, ff = np.nonzero(rendered)
        fpix = torch.as_tensor(ff + tile.f0, device=self.device)
        spix = torch.as_tensor(ss + tile.s0, device=self.device)
        step = self.pixels_per_chunk(k)
        names = list(self.parameters_by_name())  # (their tensors: the module's, or a functional call's)
        p = {name: getattr(self, name) for name in names}
        crystal = self.crystal(p)
        run = self._native_chunk if self.backend == "native" else self._eager_chunk
        parts = [run(fpix[i : i + step], spix[i : i + step], p, crystal, k) for i in range(0, fpix.shape[0], step)]
        values = torch.cat(parts) if parts else torch.zeros(0, dtype=self.dtype, device=self.device)
        image = torch.zeros(tile.shape, dtype=self.dtype, device=self.device)
        return image.index_put((torch.as_tensor(ss), torch.as_tensor(ff)), values)

    def _eager_chunk(self, f: torch.Tensor, s: torch.Tensor, p: dict, crystal, panel: int) -> torch.Tensor:
        """One chunk's values on the eager path: under a checkpoint where gradients are on (its intermediates
        recomputed in the backward pass from the chunk's inputs, not kept)."""
        names, n_p = list(p), len(p)

        def chunk(f: torch.Tensor, s: torch.Tensor, *ts: torch.Tensor) -> torch.Tensor:
            table = ts[n_p + 2] if len(ts) > n_p + 2 else None
            return fw.pixel_values(self, (f, s, panel), dict(zip(names, ts[:n_p])), (ts[n_p], ts[n_p + 1], table))

        tensors = [*p.values(), *(t for t in crystal if t is not None)]
        if torch.is_grad_enabled():
            return recomputed(functools.partial(chunk, f, s), *tensors)[0]
        return chunk(f, s, *tensors)

    def _native_chunk(self, f: torch.Tensor, s: torch.Tensor, p: dict, crystal, panel: int) -> torch.Tensor:
        """One chunk's values on the C library's path: the scattering vectors under a checkpoint (kept: 3
        numbers a point; their torch intermediates recomputed), the orientation sum by :class:`.fastsum.NativeSums`
        (whose backward recomputes its own)."""
        lib = fastsum.library()
        if lib is None:  # (a worker that cannot build it: said there once, at WARNING)
            return self._eager_chunk(f, s, p, crystal, panel)
        names = list(p)

        def points(f: torch.Tensor, s: torch.Tensor, *ts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return fw.scattering(self, (f, s, panel), dict(zip(names, ts)))

        if torch.is_grad_enabled():
            scatter, factors = recomputed(functools.partial(points, f, s), *p.values())
        else:
            scatter, factors = points(f, s, *p.values())
        cells, recip, table = crystal
        if table is None:
            table = torch.zeros(1, dtype=self.dtype)
        sums = NativeSums.apply(scatter, cells, p["N"], recip, table, self.sum_spec, lib)
        return fw.pixel_sum(self, sums, factors, p, panel)

    def _buffer(self, name: str) -> torch.Tensor:
        t = getattr(self, name)
        assert isinstance(t, torch.Tensor)
        return t

    def pixels_per_chunk(self, panel: int = 0) -> int:
        """Pixels whose evaluations (points x sources x orientations) fill :data:`CHUNK_EVALS` at most (eager), or
        whose points (x sources) fill :data:`CHUNK_POINTS` (native)."""
        sim = self.sim.panel(panel)
        det = sim.detector
        points = det.thicksteps * det.oversample**2 * len(sim.beam.sources)
        if self.backend == "native":  # (nothing per orientation is held: the torch prologue's per point)
            return max(1, CHUNK_POINTS // points)
        return max(1, CHUNK_EVALS // (points * sim.n_orientations))


#: evaluations a chunk of pixels holds at once: a backward pass recomputes one chunk at a time, whose
#: intermediates (about 100 float64 numbers per evaluation) stay within the tile budget of 256 MiB (measured on
#: mosaic-rotation: 215 MB over the forward pass's peak; benchmarks/model_grad.py)
CHUNK_EVALS = 1 << 18
#: points (x sources) a chunk holds on the native path, whose torch prologue keeps about 50 numbers a point
CHUNK_POINTS = 1 << 16


BACKENDS = ("auto", "native", "eager")


def _backend(name: str, device: torch.device) -> str:
    """The orientation sum's path for ``name`` (:data:`BACKENDS`) on ``device``: ``"native"`` or ``"eager"``."""
    if name not in BACKENDS:
        raise ConfigError(f"backend {name!r} is not one of {', '.join(BACKENDS)}", field="backend")
    if name == "eager" or (name == "auto" and device.type != "cpu"):
        return "eager"
    if device.type != "cpu":
        raise ConfigError("the native backend runs on CPU only (use backend='auto' or 'eager')", field="backend")
    if fastsum.library() is None:
        if name == "native":
            raise ConfigError("the model's C library could not be built (see the WARNING above)", field="backend")
        return "eager"
    return "native"
