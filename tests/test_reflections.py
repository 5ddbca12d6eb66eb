"""The reflection table's fast paths against their plain forms: the lattice points near the Ewald sphere
(found through a separable bound, not an array of every point's vector) and each pixel's reflection (a
dense table of Miller indices, or a sorted search where that table would be large)."""

from __future__ import annotations

import numpy as np
import pytest

from bragg_dask import simulation_from_args
from bragg_dask.physics import reflections as rf


def _whole_box(real, recip, s0, lam, qmax, reach):
    lim = [int(np.ceil(qmax * np.linalg.norm(v))) for v in real]
    grid = np.stack(np.meshgrid(*(np.arange(-m, m + 1) for m in lim), indexing="ij"), -1).reshape(-1, 3)
    return grid[np.any(grid != 0, axis=1)].astype(np.int64)


CASES = [
    "-cell 40 50 60 90 90 90 -N 12 -misset 10 20 30 -distance 80 -detpixels 120",
    "-cell 31 47 66 78 95 103 -Na 4 -Nb 9 -Nc 2 -misset 33 -71 12 -distance 60 -detpixels 100 -mosaic 0.5 "
    "-mosaic_domains 3",
    "-cell 120 120 300 90 90 120 -N 30 -misset -5 40 7 -distance 300 -detpixels 90 -pixel 0.3 -lambda 1.3",
    "-cell 25 25 25 90 90 90 -N 5 -misset 1 2 3 -distance 50 -detpixels 110 -twotheta 30 -oversample 1",
    "-cell 60 70 80 85 95 100 -N 8 -misset 80 10 -20 -distance 100 -detpixels 100 -detector_rotx 12 "
    "-detector_roty -7 -Xbeam 3 -Ybeam 20 -round_xtal",
]


def _random_case(seed: int) -> str:
    rng = np.random.default_rng([17, seed])
    cell = [*rng.uniform(20, 150, 3), *rng.uniform(70, 115, 3)]
    n = rng.integers(1, 30, 3)
    return (f"-cell {' '.join(f'{x:.3f}' for x in cell)} -Na {n[0]} -Nb {n[1]} -Nc {n[2]} "
            f"-misset {' '.join(f'{x:.2f}' for x in rng.uniform(-180, 180, 3))} -distance {rng.uniform(40, 400):.1f} "
            f"-detpixels {int(rng.integers(40, 120))} -pixel {rng.uniform(0.05, 0.5):.3f} "
            f"-lambda {rng.uniform(0.5, 2.5):.3f} "
            f"-mosaic {rng.choice([0.0, 0.3, 2.0])} -mosaic_domains 2 -oversample 1")  # fmt: skip


@pytest.mark.parametrize("flags", CASES + [_random_case(s) for s in range(24)])
def test_the_points_near_the_sphere_are_those_of_the_whole_box(flags, monkeypatch):
    sim = simulation_from_args([*flags.split(), "-default_F", "10"])
    fast = rf.predict(sim)
    monkeypatch.setattr(rf, "_near_sphere", _whole_box)
    plain = rf.predict(sim)
    assert len(fast) > 5 or flags not in CASES  # (a random case may see few)
    for name in ("hkl", "panel", "xy_px", "d_A", "F", "active"):
        assert np.array_equal(getattr(fast, name), getattr(plain, name)), name


@pytest.mark.parametrize("flags", CASES)
def test_each_pixels_reflection_by_table_and_by_search(flags, monkeypatch):
    from bragg_dask.executors.serial import run_serial

    sim = simulation_from_args([*flags.split(), "-default_F", "10"])
    image = run_serial(sim).image
    bands = [(0, s0, min(s0 + 37, image.shape[0]), image[s0 : s0 + 37]) for s0 in range(0, image.shape[0], 37)]
    by_table = rf.predict(sim)
    by_table = rf.spot_photons(sim, by_table, iter(bands[::-1]))  # bands in any order
    monkeypatch.setattr(rf, "LOOKUP_ENTRIES", 0)
    by_search = rf.predict(sim)
    by_search = rf.spot_photons(sim, by_search, iter(bands))
    assert by_table.photons.sum() > 0
    assert np.allclose(by_table.photons, by_search.photons, rtol=1e-12, atol=0)
    assert np.allclose(by_table.xy_px, by_search.xy_px, rtol=1e-12, atol=1e-12)
    # every photon of a pixel whose nearest index is a reflection of the table counted once, no other
    real, _ = rf._cell(sim)
    g = sim.detector.geometry
    plane = tuple(np.asarray(v, dtype=np.float64) for v in (g.fdet, g.sdet, g.odet, g.pix0_m))
    b = np.asarray(g.beam, dtype=np.float64)
    lam = sim.beam.wavelength_m
    frac = rf._fractional(plane, real, b / np.linalg.norm(b) / lam, lam, sim.detector.pixel_size_m, 0,
                          image.shape[0], image.shape[1])  # fmt: skip
    pixel_hkl = np.stack([x.reshape(-1) for x in frac], axis=1).astype(int)
    listed = {tuple(h) for h in by_table.hkl.tolist()}
    mine = np.array([tuple(h) in listed for h in pixel_hkl.tolist()])
    assert by_table.photons.sum() == pytest.approx(image.reshape(-1)[mine].astype(np.float64).sum(), rel=1e-12)


@pytest.mark.parametrize("flags", CASES)
def test_the_c_pass_gives_the_numpy_table_bit_for_bit(flags, monkeypatch):
    """The reflection table through the C library (native_labels.c) and through numpy: the same bits."""
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.physics.backends.native import labels_library

    if labels_library() is None:
        pytest.skip("no C compiler here: the numpy path alone")  # (CI has one: this runs there)
    sim = simulation_from_args([*flags.split(), "-default_F", "10"])
    image = run_serial(sim).image.astype(np.float32)
    bands = [(0, s0, min(s0 + 29, image.shape[0]), image[s0 : s0 + 29]) for s0 in range(0, image.shape[0], 29)]
    native = rf.spot_photons(sim, rf.predict(sim), iter(bands))
    monkeypatch.setattr(rf, "_labels_library", lambda: None)
    plain = rf.spot_photons(sim, rf.predict(sim), iter(bands))
    assert len(native) > 5
    for name in ("hkl", "panel", "xy_px", "d_A", "F", "active", "photons"):
        assert getattr(native, name).tobytes() == getattr(plain, name).tobytes(), name
