"""Source lists (``-sourcefile``): ``X Y Z weight lambda`` per line.

(X, Y, Z) is the source position relative to the sample (only its direction matters); the C
program defaults a missing coordinate to the one of ``-10 m * beam``, here a line needs all
three.  The weight is read and, as in the C program, not used: every source weighs 1/n.  lambda
is in metres; a missing one is the beam's.  More than five columns is an error.
"""

from __future__ import annotations

import numpy as np

from bragg_dask.errors import InputFileError
from bragg_dask.io.textcols import read_columns
from bragg_dask.physics.sources import SOURCE_DISTANCE_M
from bragg_dask.physics.vectors import Vec3, unitize


def read_sources(path: str, beam: Vec3, wavelength_m: float) -> tuple[tuple[Vec3, float], ...]:
    """``((incident_unit_vector, wavelength_m), ...)`` from a source file."""
    data, lines = read_columns(path, 5, min_cols=3, what=" 'X Y Z [weight [lambda]]'")
    out = []
    for row, no in zip(data, lines):
        pos = [(-SOURCE_DISTANCE_M * beam[i]) if np.isnan(row[i]) else float(row[i]) for i in range(3)]
        lam = wavelength_m if np.isnan(row[4]) else float(row[4])
        if not lam > 0.0:
            raise InputFileError(
                path,
                no,
                f"source wavelength {lam!r} m is not positive (a line without a "
                "final newline, or with CRLF ending, zero-fills missing columns)",
            )
        u, mag = unitize((pos[0], pos[1], pos[2]))
        if mag == 0.0:
            raise InputFileError(path, no, "source position (0, 0, 0) has no direction")
        out.append(((-u[0], -u[1], -u[2]), lam))
    return tuple(out)
