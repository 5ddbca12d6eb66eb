"""Small 3-vector helpers that follow the C program's arithmetic order exactly.

These run once at set-up on Python floats (float64), so that derived geometry and cell vectors are
bit-identical to nanoBragg's.  Vectors are plain ``tuple[float, float, float]`` (x, y, z, lab frame).
"""

from __future__ import annotations

import math

Vec3 = tuple[float, float, float]


def dot(a: Vec3, b: Vec3) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def cross(a: Vec3, b: Vec3) -> Vec3:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def magnitude(v: Vec3) -> float:
    return math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])


def scale(v: Vec3, k: float) -> Vec3:
    return (v[0] * k, v[1] * k, v[2] * k)


def unitize(v: Vec3) -> tuple[Vec3, float]:
    """Unit vector and the length before normalising; a zero vector stays zero."""
    mag = magnitude(v)
    if mag != 0.0:
        return (v[0] / mag, v[1] / mag, v[2] / mag), mag
    return (0.0, 0.0, 0.0), mag


def rescale(v: Vec3, new_length: float) -> Vec3:
    """``v`` scaled to ``new_length`` (C ``vector_rescale``); a zero vector stays zero."""
    old = magnitude(v)
    if old <= 0.0:
        old = 1.0
    k = new_length / old
    return (k * v[0], k * v[1], k * v[2])


def rotate_xyz(v: Vec3, rx: float, ry: float, rz: float) -> Vec3:
    """``Rz @ Ry @ Rx @ v`` (C ``rotate``); a factor whose angle is exactly 0 is skipped."""
    x, y, z = v
    if rx != 0:
        c, s = math.cos(rx), math.sin(rx)
        x, y, z = x, y * c + z * (-s), y * s + z * c
    if ry != 0:
        c, s = math.cos(ry), math.sin(ry)
        x, y, z = x * c + y * 0.0 + z * s, y, x * (-s) + y * 0.0 + z * c
    if rz != 0:
        c, s = math.cos(rz), math.sin(rz)
        x, y, z = x * c + y * (-s), x * s + y * c, z
    return (x, y, z)


def rotate_axis(v: Vec3, axis: Vec3, phi: float) -> Vec3:
    """Rodrigues rotation of ``v`` by ``phi`` radians about ``axis`` (C ``rotate_axis``).

    The axis is used as given, not normalised, as in the C program.
    """
    sinphi = math.sin(phi)
    cosphi = math.cos(phi)
    d = (axis[0] * v[0] + axis[1] * v[1] + axis[2] * v[2]) * (1.0 - cosphi)
    return (
        axis[0] * d + v[0] * cosphi + (-axis[2] * v[1] + axis[1] * v[2]) * sinphi,
        axis[1] * d + v[1] * cosphi + (+axis[2] * v[0] - axis[0] * v[2]) * sinphi,
        axis[2] * d + v[2] * cosphi + (-axis[1] * v[0] + axis[0] * v[1]) * sinphi,
    )


def rotate_umat(v: Vec3, u) -> Vec3:
    """``U @ v`` for a row-major ``(3, 3)`` matrix (C ``rotate_umat``)."""
    return (
        u[0][0] * v[0] + u[0][1] * v[1] + u[0][2] * v[2],
        u[1][0] * v[0] + u[1][1] * v[1] + u[1][2] * v[2],
        u[2][0] * v[0] + u[2][1] * v[1] + u[2][2] * v[2],
    )
