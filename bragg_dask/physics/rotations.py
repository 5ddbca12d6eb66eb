"""Whole-crystal rotations of a random-orientation dataset (``--orientations N --orientation-seed S``).

Frame k of such a dataset is the crystal turned by a rotation ``U_k`` uniform on SO(3), drawn from
the seed: its lab-frame cell vectors become ``U_k a`` (real space, metres) and ``U_k a*``
(reciprocal, 1/Angstrom); mosaic and phi rotations then apply as usual.  Not a C program feature:
the rotation is applied to the resolved crystal, after the C program's set-up.
"""

from __future__ import annotations

import copy

import numpy as np

#: the cell vectors a rotation turns (the resolved crystal's fields)
CELL_FIELDS = ("a_m", "b_m", "c_m", "a_star_per_A", "b_star_per_A", "c_star_per_A")


def random_rotations(n: int, seed: int) -> np.ndarray:
    """``(n, 3, 3)`` float64 rotation matrices uniform on SO(3) (normalised Gaussian quaternions)."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        1,
    )


def rotate_vector(u: np.ndarray, v) -> tuple[float, float, float]:
    """``u @ v``: ``u`` ``(3, 3)`` rotation, ``v`` a 3-vector (any unit) -> Python floats, same unit."""
    x, y, z = (float(c) for c in u @ np.asarray(v, dtype=np.float64))
    return (x, y, z)


def rotate_crystal(crystal, u: np.ndarray):
    """The crystal (a resolved ``Crystal``, any dataclass with :data:`CELL_FIELDS`) turned by ``u``
    ``(3, 3)``: its real-space (m) and reciprocal (1/Angstrom) cell vectors rotated, nothing else.  A copy
    with those fields set: a rotation keeps a valid cell valid, so the crystal's checks are not run again (a
    dataset's frames: a tenth of a millisecond each)."""
    out = copy.copy(crystal)
    for f in CELL_FIELDS:
        object.__setattr__(out, f, rotate_vector(u, getattr(crystal, f)))
    return out
