"""File formats: HKL, MOSFLM matrices, raw float images, SMV, PGM."""
