#!/usr/bin/env python3
"""Write demo inputs: a P1 HKL file of random structure factors (deterministic).

usage: make_demo_inputs.py OUTDIR   -> OUTDIR/demo.hkl
"""

import os
import sys

import numpy as np


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    h, k, l = np.meshgrid(np.arange(-40, 41), np.arange(-40, 41), np.arange(-20, 21), indexing="ij")
    F = rng.gamma(2.0, 60.0, size=h.shape)
    rows = np.column_stack([h.ravel(), k.ravel(), l.ravel()])
    with open(os.path.join(out, "demo.hkl"), "w") as fh:
        for (a, b, c), v in zip(rows, F.ravel()):
            fh.write(f"{a} {b} {c} {v:.2f}\n")


if __name__ == "__main__":
    main()
