"""Beam sources: the divergence x dispersion grid (or a source list) of the C program.

Each source is an incident unit vector ``i`` (source -> sample, lab frame) and a wavelength in
metres.  Every source carries the weight 1/n_sources (the C program ignores file weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bragg_dask.physics.vectors import Vec3, rotate_axis, unitize

SOURCE_DISTANCE_M = 10.0


@dataclass(frozen=True)
class StepAxis:
    """One sampled axis after the auto rules: ``n`` points, full ``range``, ``step``."""

    n: int
    range: float
    step: float

    def positions(self) -> list[float]:
        """Grid positions ``step*i - range/2`` for ``i = 0..n-1`` (not centred when n=ceil(R/step))."""
        return [self.step * i - self.range / 2.0 for i in range(self.n)]


def auto_steps(n: int, rng: float, step: float) -> StepAxis:
    """The C program's rules for (steps, range, step) of divergence or dispersion (L1431-1581).

    Unset values are negative (steps <= 0 means unset).  After the rules, an axis with a
    non-positive range, step or count collapses to a single point (L1675-1690).
    """
    if n <= 0:
        if rng < 0.0:
            if step <= 0.0:
                n, rng, step = 1, 0.0, 0.0
            else:
                rng, n = step, 2
        elif step <= 0.0:
            step, n = rng, 2
        else:
            n = int(math.ceil(rng / step))
    elif rng < 0.0:
        if step <= 0.0:
            rng = 1.0
            step = rng / n
        else:
            rng, n = step, 2
    elif step <= 0.0:
        if n <= 1:
            n = 2
        step = rng / (n - 1)
    if rng <= 0.0 or step <= 0.0 or n <= 0:
        return StepAxis(1, 0.0, 0.0)
    return StepAxis(n, rng, step)


def divergence_sources(
    *,
    beam: Vec3,
    polar: Vec3,
    vert: Vec3,
    wavelength_m: float,
    hdiv: StepAxis,
    vdiv: StepAxis,
    disp: StepAxis,
    round_div: bool = True,
) -> tuple[tuple[Vec3, float], ...]:
    """Sources of the divergence/dispersion grid as ``((incident_unit_vector, wavelength_m), ...)``.

    Loop order hdiv (outer), vdiv, dispersion (inner), with elliptical culling when ``round_div``.
    """
    out: list[tuple[Vec3, float]] = []
    for hd in hdiv.positions():
        for vd in vdiv.positions():
            test = _ellipse_test(hd, vd, hdiv, vdiv)
            if round_div and test * 4.0 > 1.1:
                continue
            q = tuple(-SOURCE_DISTANCE_M * beam[i] for i in range(3))
            q = rotate_axis(rotate_axis(q, polar, vd), vert, hd)  # type: ignore[arg-type]
            for d in range(disp.n):
                out.append((q, wavelength_m * (1.0 + disp.step * d - disp.range / 2.0)))  # type: ignore[arg-type]
    return tuple((_incident(q), lam) for q, lam in out)


def _ellipse_test(hd: float, vd: float, h: StepAxis, v: StepAxis) -> float:
    """(h^2 - dh^2/4 [n_h even])/R_h^2 + (same for v); NaN (kept) when a range is 0."""

    def term(x: float, ax: StepAxis) -> float:
        num = x * x - ax.step * ax.step / 4.0 * (1 - ax.n % 2)
        if ax.range == 0.0:
            return math.nan if num == 0.0 else math.copysign(math.inf, num)
        return num / ax.range / ax.range

    return term(hd, h) + term(vd, v)


def _incident(q: Vec3) -> Vec3:
    """Incident direction: minus the unit vector from the sample to the source position."""
    u, _ = unitize(q)
    return (-u[0], -u[1], -u[2])
