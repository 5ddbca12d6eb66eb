"""Per-shot variation (``--vary FILE``): each frame's draws from one seed, applied as the C program's flags
would set them, recorded as per-frame labels in the store."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from bragg_dask import simulation_from_args
from bragg_dask.errors import ConfigError
from bragg_dask.planning.vary import read_variation, variation_of

from .conftest import main_in

BASE = "-cell 50 60 70 90 90 90 -default_F 100 -distance 100 -detpixels 40 -oversample 1 -misset 10 20 30".split()
DOC = {
    "frames": 4,
    "seed": 3,
    "rotation": "uniform",
    "N": {"a": {"integers": [3, 6]}, "b": 4, "c": {"choice": [2, 5]}},
    "mosaic_spread_deg": {"uniform": [0.1, 0.5]},
    "mosaic_domains": {"choice": [1, 3]},
    "wavelength_A": {"normal": [1.0, 0.01]},
    "fluence": {"log_uniform": [1e23, 1e24]},
    "water_um": {"uniform": [0, 20]},
}


def _flags(drawn: dict, k: int) -> list[str]:
    """The C program's flags that set what frame ``k`` drew (as the module notes say)."""
    n = [str(int(x)) for x in drawn["N"]]
    return ["-Na", n[0], "-Nb", n[1], "-Nc", n[2], "-mosaic", repr(drawn["mosaic_spread_deg"]), "-mosaic_domains",
            str(int(drawn["mosaic_domains"])), "-mosaic_seed", str(k + 1), "-lambda", repr(drawn["wavelength_A"]),
            "-fluence", repr(drawn["fluence"]), "-water", repr(drawn["water_um"])]  # fmt: skip


def test_each_frame_draws_from_the_seed_alone():
    v = variation_of(DOC)
    more = variation_of({**DOC, "frames": 9})
    for k in range(4):
        assert v.draw(k) == more.draw(k)  # a frame's values do not depend on the others
    assert v.draw(0) != v.draw(1) and variation_of({**DOC, "seed": 4}).draw(0) != v.draw(0)
    d = v.draw(2)
    assert 3 <= d["N"][0] <= 6 and d["N"][1] == 4 and d["N"][2] in (2, 5) and 0.1 <= d["mosaic_spread_deg"] <= 0.5
    u = np.asarray(d["rotation"])
    assert np.allclose(u @ u.T, np.eye(3), atol=1e-12) and np.linalg.det(u) == pytest.approx(1.0)
    around = variation_of({"frames": 3, "rotation": {"around": np.eye(3).tolist(), "spread_deg": 0.0}})
    assert np.allclose(around.draw(1)["rotation"], np.eye(3), atol=1e-15)


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"spin": 1}, "spin: unknown key"),
        ({"frames": 0}, "frames: a whole number"),
        ({"seed": -1}, "seed: a whole number"),
        ({"fluence": {"gamma": [1, 2]}}, "fluence: a number or one of"),
        ({"fluence": {"uniform": [2, 1]}}, "fluence: uniform: [low, high]"),
        ({"fluence": {"log_uniform": [0, 1]}}, "fluence: log_uniform: bounds > 0"),
        ({"water_um": {"normal": [1, -1]}}, "water_um: normal"),
        ({"N": {"integers": [0, 3]}}, "N: frame"),
        ({"mosaic_spread_deg": 95}, "mosaic_spread_deg: frame 0 draws 95"),
        ({"wavelength_A": {"normal": [0.0, 0.5]}}, "wavelength_A: frame"),
        ({"rotation": {"around": [[1, 0, 0], [0, 1, 0], [0, 0, 2]], "spread_deg": 1}}, "rotation: around"),
        ({"rotation": "random"}, "rotation: expected"),
    ],
)
def test_a_bad_description_names_its_key(change, needle):
    with pytest.raises(ConfigError) as e:
        variation_of({**DOC, **change})
    assert needle in str(e.value) and "\n" not in str(e.value) and e.value.flag == "--vary"


def test_a_dataset_of_vary_is_its_frames_as_the_c_programs_flags_set_them(tmp_path, capsys):
    """Every frame equals, byte for byte, the single simulation of the run's flags with the frame's drawn
    values as flags (-Na/-Nb/-Nc, -mosaic, -mosaic_domains, -mosaic_seed k+1, -lambda, -fluence, -water),
    its recorded rotation applied to the crystal; the labels are what the frame used; any tiling the same."""
    import zarr

    from bragg_dask import simulation_from_args
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.physics.rotations import rotate_crystal
    from bragg_dask.store import read_frame

    (tmp_path / "v.json").write_text(json.dumps(DOC))
    for store, tile in (("a.zarr", "7"), ("b.zarr", "40")):
        rc = main_in(tmp_path, [*BASE, "--vary", "v.json", "--zarr", store, "--tile", tile, "-noprogress"])
        assert rc == 0, capsys.readouterr().err
    g = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    v = read_variation(str(tmp_path / "v.json"))
    for k in range(4):
        drawn = v.draw(k)
        assert np.array_equal(np.asarray(g["orientation"][k]), np.asarray(drawn["rotation"]))
        assert list(g["vary_N"][k]) == list(drawn["N"]) and g["vary_fluence"][k] == drawn["fluence"]
        # the frame re-run alone from what the store records of it: its vary_KEY values and orientation
        recorded = {key: np.asarray(g[f"vary_{key}"][k]).tolist() for key in DOC if key not in ("frames", "seed",
                    "rotation")}  # fmt: skip
        assert recorded == {key: list(x) if isinstance(x, tuple) else x for key, x in drawn.items() if key in recorded}
        sim = simulation_from_args([*BASE, *_flags(recorded, k)], cwd=str(tmp_path))
        sim = dataclasses.replace(sim, crystal=rotate_crystal(sim.crystal, np.asarray(g["orientation"][k])))
        want = run_serial(sim).image
        got = read_frame(str(tmp_path / "a.zarr"), k)
        assert got.tobytes() == want.tobytes(), k
        assert read_frame(str(tmp_path / "b.zarr"), k).tobytes() == want.tobytes()
        basis = np.asarray(g["reciprocal_basis"][k])
        assert np.array_equal(basis, [sim.crystal.a_star_per_A, sim.crystal.b_star_per_A, sim.crystal.c_star_per_A])


def test_vary_refusals(tmp_path, cli_error):
    (tmp_path / "v.json").write_text(json.dumps(DOC))
    cli_error([*BASE, "--vary", "v.json"], "--vary", "--zarr")
    cli_error([*BASE, "--vary", "v.json", "--zarr", "s.zarr", "--frames", "3"], "--frames")
    no_over = [a for a in BASE if a not in ("-oversample", "1")]
    cli_error([*no_over, "--vary", "v.json", "--zarr", "s.zarr"], "--vary", "N:", "-oversample")
    cli_error([*BASE, "-dispersion", "1", "-dispsteps", "3", "--vary", "v.json", "--zarr", "s.zarr"], "wavelength_A")
    (tmp_path / "bad.json").write_text('{"frames": 2,\n "fluence": [1, 2}')
    cli_error([*BASE, "--vary", "bad.json", "--zarr", "s.zarr"], "--vary", "bad.json", "line 2")
    (tmp_path / "key.json").write_text(json.dumps({**DOC, "spin": 1}))
    cli_error([*BASE, "--vary", "key.json", "--zarr", "s.zarr"], "--vary", "spin")


def _assignment(sim, shape):
    """Each pixel's nearest reflection (its centre's fractional index against the mid-sweep cell), an
    independent reading of the physics for the label checks."""
    from bragg_dask.physics.reflections import _cell

    real, _ = _cell(sim)
    g, px = sim.detector.geometry, sim.detector.pixel_size_m
    f, s, p = (np.asarray(v) for v in (g.fdet, g.sdet, g.pix0_m))
    lam = sim.beam.wavelength_m
    cols, rows = np.arange(shape[1]) + 0.5, np.arange(shape[0]) + 0.5
    x = p + cols[None, :, None] * px * f + rows[:, None, None] * px * s
    q = x / np.linalg.norm(x, axis=-1, keepdims=True) / lam - np.asarray(g.beam) / lam
    return np.rint(q @ real.T).astype(int), cols, rows


@pytest.mark.parametrize("water", [0, 30])
def test_the_reflection_table_tells_the_truth(tmp_path, capsys, water):
    """Spots above 50 photons: the noiseless image's intensity-weighted centroid within 0.5 pixel of the
    labelled position; every reflection's photons the sum of the Bragg image (without the water background)
    over its pixels; the table readable with zarr alone, a frame's rows at refl_offset[k]:refl_offset[k+1]."""
    import zarr

    from bragg_dask.executors.serial import run_serial
    from bragg_dask.planning.frames import DatasetSpec, make_frames
    from bragg_dask.store import read_frame

    doc = {"frames": 2, "seed": 1, "rotation": "uniform", "mosaic_spread_deg": 0.05, "mosaic_domains": 5,
           "water_um": water}  # fmt: skip
    (tmp_path / "v.json").write_text(json.dumps(doc))
    base = "-cell 40 50 60 90 90 90 -default_F 100 -N 12 -lambda 1 -distance 80 -detpixels 160 -oversample 2".split()
    assert main_in(tmp_path, [*base, "--vary", "v.json", "--zarr", "s.zarr", "-noprogress"]) == 0, (
        capsys.readouterr().err
    )
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    off = np.asarray(g["refl_offset"])
    table = {name: np.asarray(g[name]) for name in ("refl_hkl", "refl_xy_px", "refl_photons", "refl_active")}
    sim0 = simulation_from_args(base, cwd=str(tmp_path))
    checked = 0
    for frame in make_frames(sim0, DatasetSpec("vary", 2, variation=variation_of(doc))):
        sim = frame.simulation(sim0)
        bragg = read_frame(str(tmp_path / "s.zarr"), frame.index).astype(np.float64)
        if water:
            bragg = run_serial(dataclasses.replace(sim, water_size_m=0.0)).image.astype(np.float64)
        hkl, cols, rows = _assignment(sim, bragg.shape)
        rows_k = slice(off[frame.index], off[frame.index + 1])
        assert off[frame.index + 1] - off[frame.index] > 10
        for h, xy, photons in zip(
            table["refl_hkl"][rows_k], table["refl_xy_px"][rows_k], table["refl_photons"][rows_k]
        ):
            spot = np.all(hkl == h, axis=-1)
            assert photons == pytest.approx((bragg * spot).sum(), rel=1e-9, abs=1e-9)
            if photons > 50:
                w = bragg * spot
                centroid = ((w * cols[None, :]).sum() / w.sum(), (w * rows[:, None]).sum() / w.sum())
                assert np.hypot(centroid[0] - xy[0], centroid[1] - xy[1]) <= 0.5, (h, xy, centroid)
                checked += 1
    assert checked >= 10 and table["refl_active"].all()


def test_training_reads_frames_and_labels_with_workers(tmp_path, capsys):
    """bragg_dask.training: the map-style dataset gives frame k's image and its rows of the table; the
    stream splits the frames between a DataLoader's worker processes, every frame once."""
    import zarr
    from torch.utils.data import DataLoader

    from bragg_dask.store import read_frame
    from bragg_dask.training import StoreDataset, StoreStream, collate

    (tmp_path / "v.json").write_text(json.dumps({**DOC, "frames": 5, "water_um": 0}))
    assert main_in(tmp_path, [*BASE, "--vary", "v.json", "--zarr", "s.zarr", "-noprogress"]) == 0
    capsys.readouterr()
    path = str(tmp_path / "s.zarr")
    g = zarr.open_group(path, mode="r")
    off = np.asarray(g["refl_offset"])
    ds = StoreDataset(path, transform=lambda s: {**s, "seen": True})
    assert len(ds) == 5
    s3 = ds[3]
    assert s3["seen"] and s3["frame"] == 3 and np.array_equal(s3["image"].numpy(), read_frame(path, 3))
    assert np.array_equal(s3["reflections"]["hkl"], np.asarray(g["refl_hkl"])[off[3] : off[4]])
    assert s3["vary"]["fluence"] == g["vary_fluence"][3] and s3["reciprocal_basis"].shape == (3, 3)
    with pytest.raises(IndexError):
        ds[5]
    loader = DataLoader(StoreStream(path), batch_size=2, num_workers=2, collate_fn=collate)
    seen = []
    for batch in loader:
        assert batch["image"].shape[1:] == (40, 40) and len(batch["reflections"]) == len(batch["frame"])
        for k, image in zip(batch["frame"].tolist(), batch["image"]):
            assert np.array_equal(image.numpy(), read_frame(path, k))
            seen.append(k)
    assert sorted(seen) == list(range(5))


def test_labels_none_keeps_the_draws_without_the_table(tmp_path, capsys, cli_error):
    import zarr

    (tmp_path / "v.json").write_text(json.dumps({**DOC, "frames": 2}))
    rc = main_in(tmp_path, [*BASE, "--vary", "v.json", "--labels", "none", "--zarr", "s.zarr", "-noprogress"])
    assert rc == 0, capsys.readouterr().err
    names = set(zarr.open_group(str(tmp_path / "s.zarr"), mode="r").array_keys())
    assert "vary_N" in names and "reciprocal_basis" in names and not any(n.startswith("refl_") for n in names)
    cli_error([*BASE, "--labels", "table"], "--labels", "--vary")


@pytest.mark.parametrize("frames", [3, 1])  # (sharded whole frames, and a frame of chunks of its own)
def test_labels_bragg_keeps_each_frames_bragg_image(tmp_path, capsys, frames):
    """--labels bragg: the store's bragg array is each frame's image without its water background, the
    image the reflection table sums; verify checks it; the training sample carries it."""
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.planning.frames import DatasetSpec, make_frames
    from bragg_dask.store import read_frame
    from bragg_dask.training import StoreDataset

    doc = {"frames": frames, "seed": 2, "rotation": "uniform", "water_um": {"uniform": [5, 30]}}
    (tmp_path / "v.json").write_text(json.dumps(doc))
    run = [*BASE, "--vary", "v.json", "--labels", "bragg", "--zarr", "s.zarr", "--tile", "20", "-noprogress"]
    assert main_in(tmp_path, run) == 0, capsys.readouterr().err
    sim0 = simulation_from_args(BASE, cwd=str(tmp_path))
    for frame in make_frames(sim0, DatasetSpec("vary", frames, variation=variation_of(doc))):
        dry = dataclasses.replace(frame.simulation(sim0), water_size_m=0.0)
        want = run_serial(dry, tile=20).image
        assert np.array_equal(read_frame(str(tmp_path / "s.zarr"), frame.index, "bragg"), want)
        assert not np.array_equal(read_frame(str(tmp_path / "s.zarr"), frame.index), want)  # (the water's)
    assert main_in(tmp_path, ["verify", "s.zarr"]) == 0
    assert np.array_equal(
        StoreDataset(str(tmp_path / "s.zarr"))[0]["bragg"].numpy(), read_frame(str(tmp_path / "s.zarr"), 0, "bragg")
    )


def test_the_detector_model_draws_per_frame(tmp_path, capsys, cli_error):
    """psf_fwhm_um, gain, readout_adu...: each frame through the run's detector model with its own values,
    the same as noisify STORE on that frame with those flags; recorded per frame (verify --repair's)."""
    import zarr

    from bragg_dask.store import read_frame

    doc = {"frames": 2, "seed": 4, "rotation": "uniform", "psf_fwhm_um": {"uniform": [60, 200]},
           "gain": {"choice": [1, 2]}}  # fmt: skip
    (tmp_path / "v.json").write_text(json.dumps(doc))
    model = ["--psf", "gauss", "--psf-radius", "4", "-nonoise"]
    run = [*BASE, "--vary", "v.json", "--zarr", "s.zarr", *model, "-noprogress"]
    assert main_in(tmp_path, run) == 0, capsys.readouterr().err
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    records = dict(g.attrs)["bragg_dask"]["response"]["frames"]
    v = variation_of(doc)
    for k in range(2):
        drawn = v.draw(k)
        assert records[str(k)]["model"]["psf_fwhm"] == drawn["psf_fwhm_um"] and g["vary_gain"][k] == drawn["gain"]
        one = ["noisify", "s.zarr", "--frame", str(k), "-psf", "gauss", "-psf_fwhm", repr(drawn["psf_fwhm_um"]),
               "-psf_radius", "4", "-gain", str(int(drawn["gain"])), "-nonoise"]  # fmt: skip
        before = read_frame(str(tmp_path / "s.zarr"), k, "int")
        assert main_in(tmp_path, one) == 0, capsys.readouterr().err
        assert np.array_equal(read_frame(str(tmp_path / "s.zarr"), k, "int"), before)
    (tmp_path / "m.json").write_text(json.dumps({"frames": 2, "gain": 2}))
    cli_error([*BASE, "--vary", "m.json", "--zarr", "t.zarr"], "--vary", "gain", "--psf")


def test_the_detectors_place_drawn_per_frame_is_the_c_programs_flags(tmp_path, capsys, cli_error):
    """distance_mm, beam_x_mm, beam_y_mm: frame k is the run with -distance, -Xbeam, -Ybeam appended, byte
    for byte; -oversample needed (the automatic one depends on the distance); not with panels."""
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.store import read_frame

    doc = {"frames": 3, "seed": 6, "rotation": "uniform", "distance_mm": {"uniform": [80, 120]},
           "beam_x_mm": {"normal": [2.0, 0.3]}, "beam_y_mm": {"normal": [2.05, 0.3]}}  # fmt: skip
    (tmp_path / "v.json").write_text(json.dumps(doc))
    assert main_in(tmp_path, [*BASE, "--vary", "v.json", "--zarr", "s.zarr", "-noprogress"]) == 0, (
        capsys.readouterr().err
    )
    v = variation_of(doc)
    for k in range(3):
        d = v.draw(k)
        flags = ["-distance", repr(d["distance_mm"]), "-Xbeam", repr(d["beam_x_mm"]), "-Ybeam", repr(d["beam_y_mm"])]
        sim = simulation_from_args([*BASE, *flags], cwd=str(tmp_path))
        sim = dataclasses.replace(sim, crystal=_rotated(sim.crystal, d["rotation"]))
        assert read_frame(str(tmp_path / "s.zarr"), k).tobytes() == run_serial(sim).image.tobytes(), k
    no_over = [a for a in BASE if a not in ("-oversample", "1")]
    cli_error([*no_over, "--vary", "v.json", "--zarr", "t.zarr"], "distance_mm", "-oversample")


def _rotated(crystal, u):
    from bragg_dask.physics.rotations import rotate_crystal

    return rotate_crystal(crystal, np.asarray(u))


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"frames": 10**12}, "frames: a whole number of frames in [1, 10000000]"),
        ({"N": 1e30}, "N: frame 0 draws 1e+30"),
        ({"mosaic_domains": 10**9}, "mosaic_domains: frame 0 draws 1e+09"),
        ({"fluence": -5}, "fluence: frame 0 draws -5"),
        ({"fluence": float("nan")}, "fluence: a number or one of"),
        ({"water_um": {"uniform": [-1e308, 1e308]}}, "water_um: uniform: a range of finite width"),
        ({"distance_mm": 0}, "distance_mm: frame 0 draws 0"),
    ],
)
def test_absurd_values_are_one_line(change, needle):
    with pytest.raises(ConfigError) as e:
        variation_of({**DOC, **change})
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_an_output_never_overwrites_the_description(tmp_path, cli_error):
    (tmp_path / "one.json").write_text(json.dumps({"frames": 1, "fluence": 1e24}))
    cli_error([*BASE, "--vary", "one.json", "--zarr", "z.zarr", "-floatfile", "one.json"], "-floatfile", "--vary")
