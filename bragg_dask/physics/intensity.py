"""``F_cell^2 F_latt^2`` of scattering vectors for every crystal orientation.

Miller indices of a batch of scattering vectors for a chunk of orientations come from one matrix
product ``(Q, 3) @ (3, 3 * O_chunk)``; temporaries are ``Q x O_chunk`` and never grow with the
detector or the total number of orientations.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from bragg_dask.physics.lattice import gauss_lattice, round_lattice, square_lattice_sq, tophat_lattice
from bragg_dask.physics.structure_factors import F2Lookup, TricubicLookup

# elements (points x orientations) per inner chunk: big enough to amortise op overhead,
# small enough for the temporaries to stay in cache (CPU); on a GPU, big enough to fill the card
# with each launch (the budget still bounds the batch)
CHUNK_ELEMENTS = 1 << 16
CHUNK_ELEMENTS_GPU = 1 << 22


def chunk_elements(device: torch.device) -> int:
    """Points x orientations per inner chunk on ``device``."""
    return CHUNK_ELEMENTS if torch.device(device).type == "cpu" else CHUNK_ELEMENTS_GPU


@dataclass(frozen=True)
class Terms:
    """Per-evaluation results for points ``Q`` x orientations ``[o0, o1)``.

    ``term``: ``F_cell^2 F_latt^2``; ``gate``: the evaluation passes the C program's
    ``F_latt != 0 or water`` test (``None``: all pass); ``out_of_range``: a tricubic evaluation fell
    back to the nearest neighbour (``None`` without interpolation).  All ``(Q, o1 - o0)``.
    """

    o0: int
    o1: int
    term: torch.Tensor
    gate: torch.Tensor | None
    out_of_range: torch.Tensor | None


class IntensityModel:
    """The per-evaluation physics of a crystal, on one device and dtype."""

    nearest: F2Lookup | None  # the nearest-neighbour F^2 table (None: default_F everywhere)
    tricubic: TricubicLookup | None  # the amplitudes for -interpolate (None: no interpolation)

    def __init__(
        self,
        crystal,
        cells: torch.Tensor,
        water: bool,
        dtype: torch.dtype,
        device: torch.device,
        share_tables: IntensityModel | None = None,
    ):
        """``cells``: ``(3 O, 3)`` cell vectors (metres) of the ``O`` orientations in ``dtype`` on ``device``;
        ``share_tables``: a model of the same crystal whose structure-factor tables this one reuses."""
        self.shape = crystal.shape
        self.fudge = crystal.fudge
        self.cells = cells  # (3 O, 3): row 3o+j is cell vector j of orientation o, metres
        self.n_orient = cells.shape[0] // 3
        self.chunk_elements = chunk_elements(device)
        self.n_cells = torch.as_tensor([float(n) for n in crystal.n_cells], dtype=dtype, device=device)
        self.recip = torch.as_tensor(
            [crystal.a_star_per_A, crystal.b_star_per_A, crystal.c_star_per_A], dtype=dtype, device=device
        )
        sf = crystal.structure_factors
        self.default_f2 = sf.default_F * sf.default_F
        if share_tables is not None:  # another orientation set of the same crystal: same tables
            self.nearest, self.tricubic = share_tables.nearest, share_tables.tricubic
        else:
            self.nearest, self.tricubic = _tables(sf, crystal.interpolate, dtype, device)
        # the gate only matters where an evaluation can have F_latt == 0 exactly
        self.needs_gate = self.shape != "square" and not water

    def f_latt_sq(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(F_latt^2, gate)``: the gate is the C program's ``F_latt != 0`` test, on ``F_latt`` itself
        (its square underflows to 0 for a tiny nonzero ``F_latt``, which C still counts); ``None``
        where no gate is needed.  ``delta``: ``(..., 3)`` fractional Miller indices; both ``(...)``."""
        if self.shape == "square":
            return square_lattice_sq(delta, self.n_cells), None
        if self.shape == "round":
            f = round_lattice(delta, self.n_cells, self.fudge)
        elif self.shape == "gauss":
            f = gauss_lattice(delta, self.recip, self.n_cells, self.fudge)
        else:
            f = tophat_lattice(delta, self.recip, self.n_cells, self.fudge)
        return f * f, (f != 0 if self.needs_gate else None)

    def f_cell_sq(self, hkl: torch.Tensor, hkl0: torch.Tensor, interp_ok: torch.Tensor | None):
        """``(F^2, out_of_range)``, each ``(...)`` (electrons^2; bool), for ``(..., 3)`` indices ``hkl``
        (fractional) and ``hkl0`` (nearest integers); ``interp_ok`` ``(...)`` masks tricubic use (c-parity).
        ``(None, None)`` without a table (``default_F``)."""
        if self.tricubic is not None:
            shape = hkl.shape[:-1]
            flat, flat0 = hkl.reshape(-1, 3), hkl0.reshape(-1, 3)
            in_range = self.tricubic.in_range(flat)
            use = in_range if interp_ok is None else in_range & interp_ok.reshape(-1)
            return self.tricubic.f_sq(flat, flat0, use).view(shape), ~in_range.view(shape)
        if self.nearest is not None:
            return self.nearest(hkl0[..., 0], hkl0[..., 1], hkl0[..., 2]), None
        return None, None

    def chunk_size(self, q: int) -> int:
        """Orientations per chunk for ``q`` points (``q x chunk`` near :data:`CHUNK_ELEMENTS`)."""
        return max(1, min(self.n_orient, self.chunk_elements // max(q, 1)))

    def chunks(self, scatter: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(o0, o1, hkl)`` chunk by chunk of orientations: the fractional Miller indices ``hkl``
        ``(Q, o1 - o0, 3)`` (dimensionless, the model's dtype) of ``scatter`` ``(Q, 3)`` (1/m, lab frame)."""
        q = scatter.shape[0]
        step = self.chunk_size(q)
        for o0 in range(0, self.n_orient, step):
            o1 = min(o0 + step, self.n_orient)
            yield o0, o1, (scatter @ self.cells[3 * o0 : 3 * o1].T).view(q, o1 - o0, 3)

    def terms(self, scatter: torch.Tensor, interp_ok: torch.Tensor | None = None) -> Iterator[Terms]:
        """Per-evaluation terms of ``scatter`` ``(Q, 3)`` (1/m, lab frame), chunk by chunk of orientations;
        ``interp_ok``: ``(Q, O)`` bool or None (see :meth:`f_cell_sq`)."""
        for o0, o1, hkl in self.chunks(scatter):
            hkl0 = torch.ceil(hkl - 0.5)
            latt, gate = self.f_latt_sq(hkl - hkl0)
            ok = None if interp_ok is None else interp_ok[:, o0:o1]
            f2, oor = self.f_cell_sq(hkl, hkl0, ok)
            term = latt * (self.default_f2 if f2 is None else f2)
            if oor is not None and gate is not None:
                oor = oor & gate  # the range test runs only for evaluations that pass the gate
            yield Terms(o0, o1, term, gate, oor)

    def sum(self, scatter: torch.Tensor, interp_ok: torch.Tensor | None = None) -> torch.Tensor:
        """Sum over all orientations of ``F_cell^2 F_latt^2``: ``scatter`` ``(Q, 3)`` 1/m -> ``(Q,)`` float64
        (electrons^2, before the per-pixel factors)."""
        out = torch.zeros(scatter.shape[0], dtype=torch.float64, device=scatter.device)
        for t in self.terms(scatter, interp_ok):
            # a single orientation needs no reduction (common for stills: skip a kernel launch)
            out += t.term[:, 0] if t.term.shape[1] == 1 else t.term.sum(-1, dtype=torch.float64)
        return out

    def out_of_range(self, scatter: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(o0, o1, oor)``: evaluations of ``scatter`` ``(Q, 3)`` (1/m) whose tricubic stencil leaves the
        table (and pass the gate).

        The cheap pre-pass of the interpolation switch: Miller indices and the range test, with
        the lattice factor only where the gate needs it.  ``oor``: ``(Q, o1 - o0)`` bool.
        """
        assert self.tricubic is not None
        for o0, o1, hkl in self.chunks(scatter):
            oor = ~self.tricubic.in_range(hkl)
            if self.needs_gate:
                gate = self.f_latt_sq(hkl - torch.ceil(hkl - 0.5))[1]
                assert gate is not None  # (made whenever the gate is needed)
                oor &= gate
            yield o0, o1, oor


#: the tables of recent structure factors (key: the object's identity, kept alive by its entry): the frames
#: of a dataset share their crystal's structure factors, each frame's model its tables
_TABLES: collections.OrderedDict = collections.OrderedDict()
_TABLES_LOCK = threading.Lock()


def _tables(sf, interpolate: bool, dtype: torch.dtype, device: torch.device):
    """``(nearest, tricubic)`` lookups of ``sf`` (None where it has no table, or no interpolation), built once
    for the frames that share ``sf``."""
    if not sf.has_table:
        return None, None
    key = (id(sf), bool(interpolate), dtype, str(device))
    with _TABLES_LOCK:
        hit = _TABLES.get(key)
        if hit is not None and hit[0] is sf:
            _TABLES.move_to_end(key)
            return hit[1]
    made = (F2Lookup.build(sf, dtype, device), TricubicLookup.build(sf, dtype, device) if interpolate else None)
    with _TABLES_LOCK:
        _TABLES[key] = (sf, made)
        while len(_TABLES) > 8:
            _TABLES.popitem(last=False)
    return made
