"""Structure factors: the HKL table, nearest-neighbour lookup, tricubic interpolation.

The table covers ``[h_min, h_max] x [k_min, k_max] x [l_min, l_max]``; entries missing from the
file hold ``default_F``, and so does every index outside the table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class StructureFactors:
    """Structure-factor amplitudes.

    ``values``: ``(n_h, n_k, n_l)`` float64 amplitudes for indices starting at ``hkl_min``;
    ``None`` when no HKL file was given (every reflection is ``default_F``).
    ``n_records``: the number of records read (the C program's ``hkls``).
    """

    default_F: float = 0.0
    values: np.ndarray | None = None
    hkl_min: tuple[int, int, int] = (0, 0, 0)
    n_records: int = 0
    source: str = ""
    digest: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.values is not None:
            v = np.ascontiguousarray(self.values, dtype=np.float64)
            v.setflags(write=False)
            object.__setattr__(self, "values", v)
            h = hashlib.sha256(v.tobytes())
            h.update(repr((self.hkl_min, v.shape, self.default_F)).encode())
            object.__setattr__(self, "digest", h.hexdigest())
        else:
            object.__setattr__(self, "digest", f"default_F={self.default_F!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StructureFactors) and self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    @property
    def has_table(self) -> bool:
        return self.values is not None and self.n_records > 0

    @property
    def hkl_max(self) -> tuple[int, int, int]:
        assert self.values is not None
        return tuple(m + n - 1 for m, n in zip(self.hkl_min, self.values.shape))  # type: ignore[return-value]

    def to_dict(self) -> dict:
        d = {"default_F": self.default_F, "n_records": self.n_records, "source": self.source}
        if self.values is not None:
            d.update(hkl_min=list(self.hkl_min), shape=list(self.values.shape), sha256=self.digest)
        return d


@dataclass(frozen=True)
class F2Lookup:
    """A padded table of F^2 on a device, for vectorised nearest-neighbour lookup.

    The table is padded by one plane of ``default_F^2`` on every side; clamping an index into the
    padded range therefore lands on ``default_F^2`` exactly when it is out of range on any axis.
    """

    table: torch.Tensor  # (n_h + 2) * (n_k + 2) * (n_l + 2), flattened
    offset: tuple[int, int, int]  # h_min - 1, ...
    dims: tuple[int, int, int]  # padded sizes

    @classmethod
    def build(cls, sf: StructureFactors, dtype: torch.dtype, device: torch.device) -> F2Lookup:
        """The padded table of ``sf`` (F in electrons): ``F^2`` flattened, in ``dtype`` on ``device``."""
        assert sf.values is not None
        nh, nk, nl = sf.values.shape
        pad = np.full((nh + 2, nk + 2, nl + 2), sf.default_F * sf.default_F, dtype=np.float64)
        pad[1:-1, 1:-1, 1:-1] = sf.values * sf.values
        t = torch.as_tensor(pad.ravel(), dtype=dtype, device=device)
        off = tuple(m - 1 for m in sf.hkl_min)
        return cls(table=t, offset=off, dims=(nh + 2, nk + 2, nl + 2))  # type: ignore[arg-type]

    def __call__(self, h0: torch.Tensor, k0: torch.Tensor, l0: torch.Tensor) -> torch.Tensor:
        """F^2 (electrons^2) at integer-valued (float) indices ``h0, k0, l0`` of any common shape ``(...)``:
        ``(...)`` in the table's dtype."""
        return nearest_f2(self.table, self.offset, self.dims, h0, k0, l0)


def nearest_f2(table: torch.Tensor, offset, dims, h0: torch.Tensor, k0: torch.Tensor, l0: torch.Tensor):
    """The nearest-neighbour lookup, the one place it is written in Python (the eager path and the
    Inductor path call it; the C library and the Triton kernel spell it in their languages): ``F^2`` of
    the flat padded ``table`` (:class:`F2Lookup`) at integer-valued indices ``h0, k0, l0`` ``(...)``,
    each clamped into the padded range (which lands on ``default_F^2`` out of range)."""
    dh, dk, dl = dims
    ih = (h0 - offset[0]).clamp_(0, dh - 1)  # (new tensors, changed in place)
    ik = (k0 - offset[1]).clamp_(0, dk - 1)
    il = (l0 - offset[2]).clamp_(0, dl - 1)
    flat = (ih.mul_(dk).add_(ik)).mul_(dl).add_(il)
    return table[flat.to(torch.int64)]


@dataclass(frozen=True)
class TricubicLookup:
    """Tricubic (4-point Lagrange per axis) interpolation of F, as the C program's ``polin3``.

    An evaluation is *in range* when ``h - h_min + 3 <= n_h`` and ``h - 2 >= h_min`` on every
    axis (one stricter than the stencil needs, as in C).  Out-of-range evaluations fall back to
    the nearest-neighbour value; ``in_range`` reports which ones did.
    """

    table: torch.Tensor  # (n_h, n_k, n_l) amplitudes
    hkl_min: tuple[int, int, int]
    nearest: F2Lookup

    @classmethod
    def build(cls, sf: StructureFactors, dtype: torch.dtype, device: torch.device) -> TricubicLookup:
        """The amplitude table of ``sf`` ``(n_h, n_k, n_l)`` (F, electrons) and its nearest-neighbour table."""
        assert sf.values is not None
        t = torch.tensor(sf.values, dtype=dtype, device=device)  # a copy: the table is read-only
        return cls(table=t, hkl_min=sf.hkl_min, nearest=F2Lookup.build(sf, dtype, device))

    def in_range(self, hkl: torch.Tensor) -> torch.Tensor:
        """``(...)`` bool: the fractional Miller indices ``hkl`` ``(..., 3)`` are in range."""
        ok = torch.ones(hkl.shape[:-1], dtype=torch.bool, device=hkl.device)
        for ax in range(3):
            x = hkl[..., ax]
            lo, n = self.hkl_min[ax], self.table.shape[ax]
            ok &= ~((x - lo + 3 > n) | (x - 2 < lo))
        return ok

    def f_sq(self, hkl: torch.Tensor, hkl0: torch.Tensor, use_interp: torch.Tensor) -> torch.Tensor:
        """``F^2``: tricubic where ``use_interp`` (and in range), nearest neighbour elsewhere.

        ``hkl``, ``hkl0``: ``(E, 3)`` Miller indices; ``use_interp``: ``(E,)`` bool.  Returns ``(E,)``,
        electrons^2.
        """
        out = self.nearest(hkl0[:, 0], hkl0[:, 1], hkl0[:, 2])
        sel = use_interp.nonzero().squeeze(1)
        if sel.numel():
            f = self._polin3(hkl[sel])
            out = out.index_put((sel,), f * f)
        return out

    def _polin3(self, x: torch.Tensor) -> torch.Tensor:
        """Interpolated amplitude ``(E,)`` (electrons) at Miller indices ``x`` ``(E, 3)`` (all in range):
        along l, then k, then h."""
        base = torch.floor(x) - 1.0  # stencil floor-1 .. floor+2
        idx = [
            (base[:, ax].to(torch.int64) - self.hkl_min[ax])[:, None] + torch.arange(4, device=x.device)
            for ax in range(3)
        ]
        nh, nk, nl = self.table.shape
        flat = (idx[0][:, :, None, None] * nk + idx[1][:, None, :, None]) * nl + idx[2][:, None, None, :]
        y = self.table.reshape(-1)[flat]  # (E, 4, 4, 4)
        y = _polint(base[:, 2, None, None], y, x[:, 2, None, None])  # (E, 4, 4)
        y = _polint(base[:, 1, None], y, x[:, 1, None])  # (E, 4)
        return _polint(base[:, 0], y, x[:, 0])


# denominators of the 4-point Lagrange terms on consecutive integer nodes
_LAGRANGE_DEN = (-6.0, 2.0, -2.0, 6.0)


def _polint(x0: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """C ``polint`` on nodes ``x0 + (0, 1, 2, 3)`` along the last axis of ``y``, term by term.

    ``y``: ``(..., 4)`` values at the nodes; ``x0``, ``x``: broadcast against ``(...)``.  Returns ``(...)``,
    in ``y``'s unit.
    """
    d = [x - (x0 + float(i)) for i in range(4)]
    terms = []
    for i in range(4):
        others = [d[j] for j in range(4) if j != i]
        terms.append(others[0] * others[1] * others[2] * y[..., i] / _LAGRANGE_DEN[i])
    return terms[0] + terms[1] + terms[2] + terms[3]
