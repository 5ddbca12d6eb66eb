"""Crystal lattice: cell -> reciprocal vectors, misset, real-space vectors, spindle and mosaic rotations.

All set-up arithmetic is float64 on Python scalars in the C program's order, so the cell vectors
are bit-identical to nanoBragg's.  The per-evaluation work happens in :mod:`.kernel`; this module
only builds the ``(n_orientations, 3, 3)`` stack of rotated cell vectors it consumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bragg_dask.physics.constants import RTD
from bragg_dask.physics.vectors import Vec3, cross, dot, magnitude, rescale, rotate_axis, rotate_umat, rotate_xyz, scale


@dataclass(frozen=True)
class CellVectors:
    """Real-space (metres) and regenerated reciprocal (1/Angstrom) cell vectors, lab frame."""

    a_m: Vec3
    b_m: Vec3
    c_m: Vec3
    a_star_per_A: Vec3
    b_star_per_A: Vec3
    c_star_per_A: Vec3


def reciprocal_from_cell(cell_A_deg: tuple[float, ...]) -> tuple[tuple[Vec3, Vec3, Vec3], float]:
    """Default-orientation reciprocal vectors (1/Angstrom) of ``(a, b, c, alpha, beta, gamma)``.

    Lengths in Angstrom, angles in degrees; missing/non-positive b, c default to a and angles to 90.
    Returns ``((a*, b*, c*), V_cell)`` with ``a*`` along +x and ``c`` along +z.
    """
    a, b, c, al, be, ga = cell_A_deg
    if b <= 0.0:
        b = a
    if c <= 0.0:
        c = a
    alpha = al / RTD if al > 0.0 else math.pi / 2
    beta = be / RTD if be > 0.0 else math.pi / 2
    gamma = ga / RTD if ga > 0.0 else math.pi / 2
    aavg = (alpha + beta + gamma) / 2
    skew = abs(math.sin(aavg) * math.sin(aavg - alpha) * math.sin(aavg - beta) * math.sin(aavg - gamma))
    v_cell = 2.0 * a * b * c * math.sqrt(skew)
    if v_cell <= 0.0:
        v_cell = np.finfo(np.float64).tiny
    v_star = 1.0 / v_cell
    a_s = b * c * math.sin(alpha) * v_star
    b_s = c * a * math.sin(beta) * v_star
    c_s = a * b * math.sin(gamma) * v_star
    a_s, b_s, c_s = (abs(x) if x > 0.0 or x < 0.0 else np.finfo(np.float64).tiny for x in (a_s, b_s, c_s))
    sin_gs = c * v_star / a_s / b_s
    cos_as = (math.cos(beta) * math.cos(gamma) - math.cos(alpha)) / (math.sin(beta) * math.sin(gamma))
    cos_bs = (math.cos(gamma) * math.cos(alpha) - math.cos(beta)) / (math.sin(gamma) * math.sin(alpha))
    cos_gs = (math.cos(alpha) * math.cos(beta) - math.cos(gamma)) / (math.sin(alpha) * math.sin(beta))
    sin_gs = min(1.0, max(-1.0, sin_gs))
    # the C program maps cos^2 > 1 to +1, whatever the sign
    cos_as, cos_bs, cos_gs = (1.0 if x * x > 1.0 else x for x in (cos_as, cos_bs, cos_gs))
    a_star = (a_s, 0.0, 0.0)
    b_star = (b_s * cos_gs, b_s * sin_gs, 0.0)
    c_star = (
        c_s * cos_bs,
        c_s * (cos_as - cos_bs * cos_gs) / sin_gs,
        c_s * v_cell / (a * b * c * sin_gs),
    )
    return (a_star, b_star, c_star), v_cell


def real_space_cell(
    recip_per_A: tuple[Vec3, Vec3, Vec3],
    misset_rad: tuple[float, float, float] | None,
    user_cell: tuple[float, float, float, float] | None,
) -> CellVectors:
    """Apply the misset to the reciprocal vectors and derive the real-space cell (C L1915-2060).

    ``user_cell`` is ``(a, b, c, V_cell)`` in Angstrom when ``-cell`` was given: it forces the
    real-space lengths and the volume, whatever the orientation source.
    """
    a_star, b_star, c_star = recip_per_A
    if misset_rad is not None:
        a_star, b_star, c_star = (rotate_xyz(v, *misset_rad) for v in (a_star, b_star, c_star))
    bxc = cross(b_star, c_star)
    cxa = cross(c_star, a_star)
    axb = cross(a_star, b_star)
    v_star = dot(a_star, bxc)
    if user_cell is not None:
        ua, ub, uc, uv = user_cell
        bxc = rescale(bxc, ua / uv)
        cxa = rescale(cxa, ub / uv)
        axb = rescale(axb, uc / uv)
        v_star = 1.0 / uv
    v_cell = 1.0 / v_star
    a = scale(bxc, v_cell)
    b = scale(cxa, v_cell)
    c = scale(axb, v_cell)
    a_star = scale(cross(b, c), v_star)
    b_star = scale(cross(c, a), v_star)
    c_star = scale(cross(a, b), v_star)
    return CellVectors(
        a_m=scale(a, 1e-10),
        b_m=scale(b, 1e-10),
        c_m=scale(c, 1e-10),
        a_star_per_A=a_star,
        b_star_per_A=b_star,
        c_star_per_A=c_star,
    )


def cells_from_sample_size(
    cell: CellVectors, n_cells: tuple[int, int, int], sample_xyz_m: tuple[float, float, float]
) -> tuple[int, int, int]:
    """Number of unit cells per axis: a positive sample size overrides N; anything <= 1 becomes 1."""
    out = []
    for n, size, vec in zip(n_cells, sample_xyz_m, (cell.a_m, cell.b_m, cell.c_m)):
        nn = float(n)
        if size > 0:
            nn = math.ceil(size / magnitude(vec))
        out.append(int(nn) if nn > 1.0 else 1)
    return out[0], out[1], out[2]


def phi_angles(phi0_rad: float, phistep_rad: float, phisteps: int) -> list[float]:
    """The phi value of every step, ``phi0 + k*phistep`` (left end of each step), as the C loop forms it."""
    return [phi0_rad + phistep_rad * k for k in range(phisteps)]


def zero_phi_rotations(phis_rad: list[float], mode: str) -> list[float | None]:
    """The spindle angle each phi step really uses; ``None`` means the unrotated cell.

    ``mode="unrotated"`` (spec): a step at exactly 0 uses the unrotated cell.  The C program
    skips the rotation at phi == 0 and keeps the vectors of the most recent nonzero phi: the
    previous step of the sweep if there is one (``"carried"`` and ``"fresh"`` alike); before any
    nonzero step of the sweep, the last nonzero phi of the previous sweep (``"carried"``), or the
    unrotated cell for a thread's first sweep (``"fresh"``).
    """
    last_nonzero = next((p for p in reversed(phis_rad) if p != 0.0), None)
    state = last_nonzero if mode == "carried" else None
    out: list[float | None] = []
    for phi in phis_rad:
        if phi != 0.0:
            out.append(phi)
            state = phi
        else:
            out.append(None if mode == "unrotated" else state)
    return out


def rotated_cells(
    cell: CellVectors,
    spindle_axis: Vec3,
    phis_rad: list[float],
    mosaic_umats: tuple[tuple[tuple[float, float, float], ...], ...],
    mosaic_spread_rad: float,
    zero_phi_uses: str = "unrotated",
) -> np.ndarray:
    """Cell vectors of every (phi step, mosaic domain): ``(n_phi * n_domains, 3, 3)`` float64, metres.

    Row ``[k * n_domains + m]`` holds ``(a, b, c)`` as rows for phi step ``k`` and domain ``m``:
    ``U_m @ R_spindle(phi_k) @ a0``, with the phi actually used at a zero step chosen by
    ``zero_phi_uses`` (see :func:`zero_phi_rotations`).
    """
    base = (cell.a_m, cell.b_m, cell.c_m)
    out = []
    for phi in zero_phi_rotations(phis_rad, zero_phi_uses):
        abc = base if phi is None else tuple(rotate_axis(v, spindle_axis, phi) for v in base)
        for u in mosaic_umats:
            out.append([rotate_umat(v, u) for v in abc] if mosaic_spread_rad > 0.0 else list(abc))
    return np.asarray(out, dtype=np.float64)


def carryover_matters(phis_rad: list[float]) -> bool:
    """True when the C program's carried-over rotation changes some phi step (a zero step that
    comes before any nonzero step of the sweep, in a sweep that has a nonzero step)."""
    fresh = zero_phi_rotations(phis_rad, "fresh")
    return fresh != zero_phi_rotations(phis_rad, "carried")
