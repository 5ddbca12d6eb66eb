"""The --vary keys that draw more than a number a frame: the cell (``cell_rel``), the lattice's shape
(``shape``), a SASE-like spectrum (``sase``) and a spectrum file per frame (``spectrum_file``).  Each frame
is, byte for byte, the C program's run with the frame's values as its flags (``-cell``, ``-gauss_xtal``...,
a ``-sourcefile``); bad descriptions and runs are one line naming the key."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bragg_dask import simulation_from_args
from bragg_dask.planning.vary import read_variation, variation_of
from bragg_dask.planning.vary_keys import SHAPE_FLAGS, SHAPES

from .conftest import main_in

CELL = [52.0, 61.0, 70.0, 88.0, 93.0, 95.0]
BASE = ["-cell", *map(str, CELL), *"-default_F 100 -N 4 -distance 100 -detpixels 36 -oversample 1 -misset 10 20 30"
        .split()]  # fmt: skip


def _frames_equal_their_flags(tmp_path, doc: dict, flags_of) -> object:
    """Run ``doc`` into a store (tiles of 7); what it records of each frame (``vary_KEY``) is what the frame
    drew, and the frame byte-equal to the single run of ``flags_of(recorded, k)``; the store's group."""
    import zarr

    from bragg_dask.executors.serial import run_serial
    from bragg_dask.store import read_frame

    (tmp_path / "v.json").write_text(json.dumps(doc))
    assert main_in(tmp_path, [*BASE, "--vary", "v.json", "--zarr", "s.zarr", "--tile", "7", "-noprogress"]) == 0
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    v = read_variation(str(tmp_path / "v.json"))
    for k in range(doc["frames"]):
        recorded = {name[len("vary_") :]: np.asarray(g[name][k]).tolist() for name in g.array_keys()
                    if name.startswith("vary_")}  # fmt: skip
        assert recorded == {key: list(x) if isinstance(x, tuple) else x for key, x in v.draw(k).items()}
        # the frame re-run alone from what the store records of it
        want = run_serial(simulation_from_args(flags_of(recorded, k), cwd=str(tmp_path))).image
        assert read_frame(str(tmp_path / "s.zarr"), k).tobytes() == want.tobytes(), k
    return g


def test_the_cell_drawn_is_the_c_programs_cell_flag(tmp_path, capsys):
    doc = {"frames": 3, "seed": 4, "cell_rel": {"a": {"normal": [0, 0.02]}, "c": {"uniform": [-0.05, 0.05]},
                                                 "gamma": {"uniform": [-0.03, 0.03]}}}  # fmt: skip

    def flags(drawn, k):
        cell = [x * (1.0 + f) for x, f in zip(CELL, drawn["cell_rel"])]
        return [*BASE, "-cell", *map(repr, cell)]  # (the later -cell is the C program's)

    g = _frames_equal_their_flags(tmp_path, doc, flags)
    fractions = np.asarray(g["vary_cell_rel"])
    assert fractions.shape == (3, 6) and np.all(fractions[:, [1, 3, 4]] == 0) and np.all(fractions[:, 0] != 0)
    assert g["vary_cell_rel"].metadata.dimension_names == ("frame", "cell_field")
    # one distribution: each length its own draw, the angles kept
    v = variation_of({"frames": 1, "cell_rel": {"normal": [0, 0.01]}})
    d = v.draw(0)["cell_rel"]
    assert len(set(d[:3])) == 3 and d[3:] == (0.0, 0.0, 0.0)


def test_the_shape_drawn_is_the_c_programs_shape_flag(tmp_path, capsys):
    doc = {"frames": 4, "seed": 2, "shape": {"choice": ["gauss", "round", "tophat"]}}
    g = _frames_equal_their_flags(tmp_path, doc, lambda d, k: [*BASE, SHAPE_FLAGS[SHAPES[int(d["shape"])]]])
    assert len(set(np.asarray(g["vary_shape"]).tolist())) > 1


def _sourcefile(path, lams_m, beam=(1.0, 0.0, 0.0)) -> None:
    """A -sourcefile of sources along the beam (their positions behind the sample), one per wavelength."""
    path.write_text("".join(f"{-beam[0]} {-beam[1]} {-beam[2]} 1 {lam!r}\n" for lam in lams_m))


def test_a_sase_spectrum_is_a_sourcefile_of_its_spikes(tmp_path, capsys):
    doc = {"frames": 2, "seed": 9, "sase": {"bandwidth": 0.01, "spikes": {"integers": [2, 4]}, "sources": 6},
           "wavelength_A": {"uniform": [0.98, 1.02]}}  # fmt: skip

    def flags(drawn, k):
        _sourcefile(tmp_path / f"src{k}.txt", [drawn["wavelength_A"] / 1e10 * f for f in drawn["sase"]])
        return [*BASE, "-lambda", repr(drawn["wavelength_A"]), "-sourcefile", f"src{k}.txt"]

    g = _frames_equal_their_flags(tmp_path, doc, flags)
    lams = np.asarray(g["vary_sase"])
    assert lams.shape == (2, 6) and np.all(np.diff(lams, axis=1) >= 0) and len(set(lams[0])) >= 2
    assert np.all(np.abs(lams - 1) < 0.05)


def test_a_spectrum_file_per_frame(tmp_path, capsys, cli_error):
    (tmp_path / "spectra").mkdir()
    rows = {0: [(1.0, 3.0), (1.01, 1.0)], 1: [(0.99, 1.0), (1.0, 0.0), (1.02, 1.0)]}
    for k, lines in rows.items():
        body = "# wavelength_A weight\n" + "".join(f"{lam} {w}\n" for lam, w in lines)
        (tmp_path / "spectra" / f"s{k}.txt").write_text(body)
    doc = {"frames": 2, "spectrum_file": {"path": "spectra/s{frame}.txt", "sources": 4}}

    def flags(drawn, k):
        _sourcefile(tmp_path / f"src{k}.txt", [x / 1e10 for x in drawn["spectrum_file"]])
        return [*BASE, "-sourcefile", f"src{k}.txt"]

    g = _frames_equal_their_flags(tmp_path, doc, flags)
    assert np.asarray(g["vary_spectrum_file"]).tolist() == [[1.0, 1.0, 1.0, 1.01], [0.99, 0.99, 1.02, 1.02]]
    (tmp_path / "spectra" / "s1.txt").write_text("1.0 1\n1.0 x\n")
    (tmp_path / "v.json").write_text(json.dumps(doc))
    cli_error([*BASE, "--vary", "v.json", "--zarr", "t.zarr"], "--vary", "spectrum_file", "s1.txt", "line 2")
    (tmp_path / "spectra" / "s1.txt").unlink()
    cli_error([*BASE, "--vary", "v.json", "--zarr", "t.zarr"], "spectrum_file", "s1.txt", "cannot read")


@pytest.mark.parametrize(
    "key, spec, needle",
    [
        ("cell_rel", {"delta": {"normal": [0, 1]}}, "cell_rel"),
        ("cell_rel", {"a": {"uniform": [-2, -1.5]}}, "cell_rel.a: frame 0 draws"),
        ("cell_rel", {"a": {"normal": [0, "x"]}}, "cell_rel.a"),
        ("shape", "cubic", "shape"),
        ("shape", {"choice": ["gauss", "star"]}, "shape"),
        ("sase", {"bandwidth": 1.5, "spikes": 2, "sources": 4}, "sase: bandwidth"),
        ("sase", {"bandwidth": 0.01, "spikes": 5, "sources": 4}, "sase: frame 0 draws 5 spikes"),
        ("sase", {"bandwidth": 0.01, "spikes": 2, "sources": 0}, "sase: sources"),
        ("sase", {"bandwidth": 0.01, "spikes": 2}, "sase"),
        ("spectrum_file", {"path": "s.txt", "sources": 2}, "{frame}"),
        ("spectrum_file", {"path": "s{frame}{x}.txt", "sources": 2}, "does not format"),
    ],
)
def test_a_bad_key_is_one_line_naming_it(key, spec, needle):
    from bragg_dask.errors import ConfigError

    with pytest.raises(ConfigError, match="") as exc:
        variation_of({"frames": 2, key: spec})
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_runs_that_cannot_draw_them(tmp_path, cli_error):
    (tmp_path / "cell.json").write_text(json.dumps({"frames": 2, "cell_rel": {"normal": [0, 0.01]}}))
    no_over = [a for a in BASE if a not in ("-oversample", "1")]
    cli_error([*no_over, "--vary", "cell.json", "--zarr", "s.zarr"], "cell_rel", "-oversample")
    (tmp_path / "A.mat").write_text("0.02 0 0\n0 0.02 0\n0 0 0.02\n")
    cli_error(["-mat", "A.mat", *BASE[7:], "--vary", "cell.json", "--zarr", "s.zarr"], "cell_rel", "-cell a b c")
    cli_error([*BASE, "-mat", "A.mat", "--vary", "cell.json", "--zarr", "s.zarr"], "cell_rel", "not -mat")
    cli_error([*BASE, "-xtal_size", "0.001", "--vary", "cell.json", "--zarr", "s.zarr"], "cell_rel", "crystal size")
    (tmp_path / "sase.json").write_text(json.dumps({"frames": 2, "sase": {"bandwidth": 0.01, "spikes": 2,
                                                                           "sources": 3}}))  # fmt: skip
    cli_error([*BASE, "-dispersion", "1", "-dispsteps", "3", "--vary", "sase.json", "--zarr", "s.zarr"], "sase",
              "one source")  # fmt: skip
    (tmp_path / "f.json").write_text(json.dumps({"frames": 1, "wavelength_A": 1.0,
                                                 "spectrum_file": {"path": "x{frame}", "sources": 1}}))  # fmt: skip
    (tmp_path / "x0").write_text("1 1\n")
    cli_error([*BASE, "--vary", "f.json", "--zarr", "s.zarr"], "spectrum_file", "wavelength_A")


def test_the_table_of_a_spectrum_holds_what_its_band_excites(monkeypatch):
    """A wide spectrum excites reflections the central wavelength alone misses: the table predicts them all
    (its photons all of the image's but the forward beam's), where a table of the central sphere alone misses some."""
    import dataclasses

    from bragg_dask.config import Source
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.physics import reflections as rf

    sim = simulation_from_args([*BASE[:7], *"-default_F 100 -N 8 -distance 80 -detpixels 96 -misset 10 20 30"
                                .split()])  # fmt: skip
    inc = sim.beam.sources[0].incident
    lams = [sim.beam.wavelength_m * f for f in (0.97, 0.985, 1.0, 1.015, 1.03)]
    sim = dataclasses.replace(sim, beam=dataclasses.replace(sim.beam, sources=tuple(Source(inc, x) for x in lams)))
    image = run_serial(sim).image.astype(np.float64)

    def coverage():  # the share of the image's photons in the table (but the forward beam's, 000's)
        refl = rf.predict(sim)
        refl = rf.spot_photons(sim, refl, iter([(0, 0, image.shape[0], image)]))
        g = sim.detector.geometry
        plane = tuple(np.asarray(v, dtype=np.float64) for v in (g.fdet, g.sdet, g.odet, g.pix0_m))
        lam = rf._band(sim)[0]
        b = np.asarray(g.beam) / np.linalg.norm(g.beam) / lam
        frac = rf._fractional(plane, rf._cell(sim)[0], b, lam, sim.detector.pixel_size_m, 0, 96, 96)
        forward = np.all([x == 0 for x in frac], axis=0)
        assert not any((h == 0).all() for h in refl.hkl)
        return refl.photons.sum() / image[~forward].sum(), len(refl)

    wide, n_wide = coverage()
    monkeypatch.setattr(rf, "_band", lambda s: (s.beam.wavelength_m, 0.0, 1.0))
    narrow, n_narrow = coverage()
    assert wide > 0.999 and n_wide > n_narrow and narrow < 0.995, (wide, narrow, n_wide, n_narrow)


def test_the_same_dataset_from_python(tmp_path, capsys):
    """bragg_dask.vary_dataset: the command line's dataset from Python (files found from ``cwd``), the same
    frames and labels through simulate_dataset."""
    import zarr

    import bragg_dask
    from bragg_dask.errors import ConfigError
    from bragg_dask.store import read_frame

    (tmp_path / "sp").mkdir()
    for k in range(2):
        (tmp_path / "sp" / f"{k}.txt").write_text(f"1.0 1\n{1.0 + 0.01 * (k + 1)} 2\n")
    doc = {"frames": 2, "seed": 3, "cell_rel": {"normal": [0, 0.01]}, "rotation": "uniform",
           "spectrum_file": {"path": "sp/{frame}.txt", "sources": 3}}  # fmt: skip
    (tmp_path / "v.json").write_text(json.dumps(doc))
    assert main_in(tmp_path, [*BASE, "--vary", "v.json", "--zarr", "cli.zarr", "-noprogress"]) == 0
    sim, spec = bragg_dask.vary_dataset(BASE, doc, cwd=str(tmp_path))
    assert spec.cell_base and spec.variation.labels == "table"
    bragg_dask.simulate_dataset(sim, str(tmp_path / "py.zarr"), spec)
    a, b = (zarr.open_group(str(tmp_path / n), mode="r") for n in ("cli.zarr", "py.zarr"))
    for k in range(2):
        assert read_frame(str(tmp_path / "py.zarr"), k).tobytes() == read_frame(str(tmp_path / "cli.zarr"), k).tobytes()
    for name in ("refl_hkl", "refl_photons", "refl_xy_px", "vary_cell_rel", "vary_spectrum_file", "reciprocal_basis"):
        assert np.array_equal(np.asarray(a[name]), np.asarray(b[name])), name
    _, from_file = bragg_dask.vary_dataset(BASE, "v.json", cwd=str(tmp_path), labels="none")
    assert from_file.variation.keys == spec.variation.keys and from_file.variation.labels == "none"
    with pytest.raises(ConfigError, match="--labels"):
        bragg_dask.vary_dataset(BASE, doc, cwd=str(tmp_path), labels="all")
    with pytest.raises(ConfigError, match="cell_rel: .*-oversample"):
        bragg_dask.vary_dataset([a for a in BASE if a not in ("-oversample", "1")], doc, cwd=str(tmp_path))


def test_the_same_bytes_whatever_the_tiling_workers_or_a_resume(tmp_path, capsys):
    """Every array of a dataset of --vary with its labels (images, draws, the table) is the same bytes for
    another tiling and worker count, and after a run cut short (a frame's shard and its flags gone, the
    label pass never finished) is resumed."""
    import os

    import zarr

    from bragg_dask.store import FRAME_STATS

    doc = {"frames": 5, "seed": 21, "rotation": "uniform", "cell_rel": {"normal": [0, 0.01]},
           "shape": {"choice": ["square", "gauss"]}, "sase": {"bandwidth": 0.004, "spikes": 2, "sources": 3},
           "fluence": {"log_uniform": [1e23, 1e24]}}  # fmt: skip
    (tmp_path / "v.json").write_text(json.dumps(doc))
    runs = {"a.zarr": ["--tile", "12"], "b.zarr": ["--tile", "36", "--workers", "1"], "c.zarr": ["--tile", "12"]}
    for store, extra in runs.items():
        assert main_in(tmp_path, [*BASE, "--vary", "v.json", "--zarr", store, "-noprogress", *extra]) == 0
    c = str(tmp_path / "c.zarr")
    os.unlink(os.path.join(c, "float", "c", "3", "0", "0"))  # frame 3's shard, as if cut before it was written
    zarr.open_group(c, mode="r+")["tiles_done"][3] = False
    del zarr.open_group(c, mode="r+")["refl_offset"]  # the label pass cut short
    assert main_in(tmp_path, [*BASE, "--vary", "v.json", "--zarr", "c.zarr", "-noprogress", "--tile", "12"]) == 0
    capsys.readouterr()
    a = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    # every array but the per-tile records (the tiling's own): the frame statistics too (exact sums)
    names = sorted(n for n in a.array_keys() if n not in ("tile_stats", "tiles_done"))
    assert {"float", "refl_hkl", "refl_offset", "vary_sase", "vary_cell_rel", "vary_shape", "orientation"} <= set(names)
    assert set(FRAME_STATS) <= set(names)
    for other in ("b.zarr", "c.zarr"):
        b = zarr.open_group(str(tmp_path / other), mode="r")
        for name in names:
            assert np.asarray(a[name]).tobytes() == np.asarray(b[name]).tobytes(), (other, name)


def test_a_labelled_store_opens_with_xarray_alone(tmp_path, capsys):
    """Every array of a dataset with its labels under one set of dimensions (a name, one length): xarray
    opens it, a value drawn per frame a coordinate of the images, the table its own dimension."""
    xr = pytest.importorskip("xarray")
    doc = {"frames": 3, "seed": 2, "rotation": "uniform", "N": {"integers": [3, 5]}, "fluence": 1e24,
           "cell_rel": {"normal": [0, 0.01]}, "sase": {"bandwidth": 0.003, "spikes": 2, "sources": 4}}  # fmt: skip
    (tmp_path / "v.json").write_text(json.dumps(doc))
    assert main_in(tmp_path, [*BASE, "--vary", "v.json", "--zarr", "s.zarr", "-noprogress"]) == 0
    capsys.readouterr()
    ds = xr.open_zarr(str(tmp_path / "s.zarr"))
    assert ds["float"].dims == ("frame", "slow", "fast")
    assert "vary_fluence" in ds["float"].coords  # (a value a frame: a coordinate of the images; several: its own)
    assert ds["vary_N"].dims == ("frame", "crystal_axis") and ds["vary_sase"].dims == ("frame", "source")
    assert ds["refl_hkl"].dims == ("reflection", "miller_index") and ds["refl_xy_px"].dims == (
        "reflection",
        "fast_slow",
    )
    assert ds.sizes["source"] == 4 and ds.sizes["cell_field"] == 6 and ds.sizes["crystal_axis"] == 3


def test_the_draws_and_the_table_whatever_the_dtype(tmp_path, capsys):
    """--dtype float32 (a GPU's usual) against float64: every drawn value, the orientation and reciprocal
    basis and the table's reflections (hkl, panel, d, |F|, active, per-frame offsets) the same bytes; the
    images, the spots' photons and positions and the statistics within the float32 parity (1e-3)."""
    import zarr

    doc = {"frames": 4, "seed": 3, "rotation": "uniform", "N": {"integers": [4, 7]},
           "fluence": {"log_uniform": [1e23, 1e24]}, "mosaic_spread_deg": {"uniform": [0.1, 0.3]}}  # fmt: skip
    (tmp_path / "v.json").write_text(json.dumps(doc))
    for dtype in ("float64", "float32"):
        run = [*BASE, "--vary", "v.json", "--zarr", f"{dtype}.zarr", "--dtype", dtype, "-noprogress", "-seed", "4"]
        assert main_in(tmp_path, run) == 0, capsys.readouterr().err
    a, b = (zarr.open_group(str(tmp_path / f"{d}.zarr"), mode="r") for d in ("float64", "float32"))
    same = ["vary_N", "vary_fluence", "vary_mosaic_spread_deg", "orientation", "reciprocal_basis", "noise_seed",
            "refl_hkl", "refl_panel", "refl_d_A", "refl_F", "refl_active", "refl_offset"]  # fmt: skip
    for name in same:
        assert np.asarray(a[name]).tobytes() == np.asarray(b[name]).tobytes(), name
    for name in ("float", "refl_photons", "refl_xy_px", "max_I", "mean", "rms", "rmsd"):
        x, y = np.asarray(a[name], dtype=np.float64), np.asarray(b[name], dtype=np.float64)
        assert np.abs(x - y).max() <= 1e-3 * np.abs(x).max(), name
