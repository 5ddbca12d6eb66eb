"""The C program's random generators, reproduced exactly.

nanoBragg uses the Numerical Recipes ``ran1`` (Park-Miller minimal standard with a Bays-Durham
shuffle).  Its shuffle table and ``iy`` are *static*: one table is shared by every seed variable
(misset, mosaic, noise).  :class:`Ran1` models that shared table; each stream is a plain integer
seed passed in and returned, exactly as the C program passes ``long *idum``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np

_IA = 16807
_IM = 2147483647
_IQ = 127773
_IR = 2836
_NTAB = 32
_NDIV = 1 + (_IM - 1) // _NTAB
_RNMX = 1.0 - 1.2e-7


def _schrage(idum: int) -> int:
    k = int(idum / _IQ)  # C integer division truncates toward zero
    idum = _IA * (idum - k * _IQ) - _IR * k
    if idum < 0:
        idum += _IM
    return idum


class Ran1:
    """The shared ``ran1`` state (static ``iy`` and ``iv`` of the C function).

    Call :meth:`draw` with a stream's seed; it returns ``(deviate, new_seed)``.  A seed <= 0 (or an
    uninitialised table) reloads the shared shuffle table, as in C.
    """

    def __init__(self) -> None:
        self.iy = 0
        self.iv = [0] * _NTAB

    def draw(self, idum: int) -> tuple[float, int]:
        if idum <= 0 or self.iy == 0:
            idum = 1 if -idum < 1 else -idum
            for j in range(_NTAB + 7, -1, -1):
                idum = _schrage(idum)
                if j < _NTAB:
                    self.iv[j] = idum
            self.iy = self.iv[0]
        idum = _schrage(idum)
        j = self.iy // _NDIV
        self.iy = self.iv[j]
        self.iv[j] = idum
        # AM*iy: AM is a double constant in C (1.0/IM); the product is stored in a float.
        temp = float(np.float32((1.0 / _IM) * self.iy))
        if temp > _RNMX:
            return float(np.float32(_RNMX)), idum
        return temp, idum


def _load_powf():
    """The C library's single-precision ``powf``, which the C program calls; ``None`` if unavailable.

    ``powf`` is not correctly rounded (glibc's is off by one ulp on ~0.05% of arguments), and
    numpy's float32 power differs from it far more often, so the C library's own function is the
    only way to get the very same float; a random misset of 90 "radians" turns that one ulp into
    1e-4 of the image.
    """
    try:
        name = ctypes.util.find_library("m")
        lib = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        f = lib.powf
    except (OSError, AttributeError, TypeError):
        return None
    f.restype = ctypes.c_float
    f.argtypes = [ctypes.c_float, ctypes.c_float]
    return f


_POWF = _load_powf()


def powf(x: float, y: float) -> float:
    """C ``powf((float)x, (float)y)``, widened to a Python float."""
    x32, y32 = float(np.float32(x)), float(np.float32(y))
    if _POWF is not None:
        return float(_POWF(x32, y32))
    return float(np.float32(math.pow(x32, y32)))  # correctly rounded in all but rare cases


def mosaic_rotation_umat(mosaicity: float, rng: Ran1, seed: int) -> tuple[np.ndarray, int]:
    """Random rotation of nanoBragg's ``mosaic_rotation_umat``.

    ``mosaicity`` (radians) passes through a C ``float`` parameter and the angle is formed with
    ``powf`` in float32, which matters for bit-exact orientations.

    Returns ``(U, seed)``: ``U`` is ``(3, 3)`` float64, row-major as the C ``umat[9]``.
    """
    r1_f, seed = rng.draw(seed)
    r2_f, seed = rng.draw(seed)
    r3_f, seed = rng.draw(seed)
    r1 = 2.0 * r1_f - 1.0
    r2 = 2.0 * r2_f - 1.0
    r3 = 2.0 * r3_f - 1.0
    xyrad = math.sqrt(1.0 - r2 * r2)
    mos32 = np.float32(mosaicity)
    # powf((float)(1-r3*r3), (float)(1/3)); product float*float -> float, then widened to double
    p = np.float32(powf(1.0 - r3 * r3, 1.0 / 3.0))
    rot = float(np.float32(mos32 * p))
    v1 = xyrad * math.sin(math.pi * r1)
    v2 = xyrad * math.cos(math.pi * r1)
    v3 = r2
    t1 = math.cos(rot)
    t2 = 1.0 - t1
    t6 = t2 * v1
    t7 = t6 * v2
    t8 = math.sin(rot)
    t9 = t8 * v3
    t11 = t6 * v3
    t12 = t8 * v2
    t19 = t2 * v2 * v3
    t20 = t8 * v1
    u = np.array(
        [
            [t1 + t2 * v1 * v1, t7 - t9, t11 + t12],
            [t7 + t9, t1 + t2 * v2 * v2, t19 - t20],
            [t11 - t12, t19 + t20, t1 + t2 * v3 * v3],
        ],
        dtype=np.float64,
    )
    return u, seed


def umat_to_misset(u: np.ndarray) -> tuple[float, float, float]:
    """Angles (rx, ry, rz), radians, with ``Rz @ Ry @ Rx == u`` (C ``umat2misset``).

    The rows are normalised (twice, as the C function does around its cross-product repair,
    which never triggers for a rotation matrix) before the angles are read off.
    """
    m = [list(map(float, row)) for row in u]
    for _ in range(2):
        for row in m:
            n = math.sqrt(row[0] * row[0] + row[1] * row[1] + row[2] * row[2])
            if n > 0:
                row[0], row[1], row[2] = row[0] / n, row[1] / n, row[2] / n
    (uxx, uxy, _), (uyx, uyy, _), (uzx, uzy, uzz) = m
    if uzx * uzx < 1.0:
        return (math.atan2(uzy, uzz), math.atan2(-uzx, math.sqrt(uzy * uzy + uzz * uzz)), math.atan2(uyx, uxx))
    return (math.atan2(1, 1) * 4, math.atan2(1, 1) * 2, math.atan2(uxy, -uyy))
