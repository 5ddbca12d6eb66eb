"""A detector of panels (``--panels FILE.json``): each panel equals the C program run on that panel alone.

The references in ``tests/data/panels/<case>/`` are the C program's float images, one run per panel
(``c_commands.txt``: custom ``-fdet_vector``/``-sdet_vector``/``-odet_vector``/``-beam_vector`` and the
``-Xbeam``/``-Ybeam``/``-distance`` with ``-pivot beam`` that put its ``pix0`` at the panel's origin).
``modules``: six coplanar modules with 3- and 5-pixel gaps, off-centre, a sensor of two layers;
``tilted``: three panels tilted, turned in their plane and off-centre, a beam off the x axis, the
automatic oversample differing between panels.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from bragg_dask.io.panels import read_panels, with_panels
from bragg_dask.nanobragg.args import parse_nanobragg_args
from bragg_dask.physics.geometry import DetectorGeometryInput, panel_geometry, resolve_detector_geometry

from .conftest import DATA, main_in, tree_state

PANELS = DATA / "panels"
CASES = ("modules", "tilted")


def _case(name: str, tmp_path):
    src = PANELS / name
    shutil.copy(src / "panels.json", tmp_path / "panels.json")
    doc = json.loads((src / "panels.json").read_text())
    refs = np.stack(
        [np.fromfile(src / f"c_{p['name']}.bin", "<f4").reshape(p["n_slow"], p["n_fast"]) for p in doc["panels"]]
    )
    return (src / "args.txt").read_text().split(), doc["panels"], refs


def _simulation(name: str):
    args = (PANELS / name / "args.txt").read_text().split()
    parsed = parse_nanobragg_args(args, cwd=".")
    over = parsed.raw.oversample if parsed.raw.oversample > 0 else None
    return with_panels(parsed.simulation, read_panels(str(PANELS / name / "panels.json")), over)


def _max_rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("tile", ["5", "64"])
def test_each_panel_equals_the_c_program_on_that_panel(name, tile, tmp_path, capsys):
    args, panels, refs = _case(name, tmp_path)
    rc = main_in(tmp_path, [*args, "--panels", "panels.json", "--tile", tile, "-floatfile", "f.bin", "-noprogress"])
    assert rc == 0, capsys.readouterr().err
    got = np.fromfile(tmp_path / "f.bin", "<f4").reshape(refs.shape)  # (panel, slow, fast), stacked in order
    for k in range(len(panels)):
        assert np.array_equal(got[k], refs[k]) or _max_rel(got[k], refs[k]) <= 1e-12, panels[k]["name"]
    out = capsys.readouterr().out
    assert f"simulated {len(panels)} panels of {panels[0]['n_fast']}x{panels[0]['n_slow']} pixels" in out
    k = int(np.argmax(refs.max(axis=(1, 2))))
    assert f"max_I = {refs.max():g}" in out and f"of panel {panels[k]['name']}" in out


def test_automatic_oversample_is_each_panels_own():
    det = _simulation("tilted").detector
    assert len(set(det.panel_oversample)) > 1  # the panels' distances differ enough for the C rule to differ
    assert det.oversample == max(det.panel_oversample)
    for k in range(det.n_panels):
        assert det.panel(k).oversample == det.panel_oversample[k]


@pytest.mark.parametrize("tile", [1, 3, 7, (4, 9), 500])
def test_any_tiling_gives_the_same_image(tile):
    from bragg_dask.executors.serial import run_serial

    sim = _simulation("modules")
    whole = run_serial(sim, tile=500)
    got = run_serial(sim, tile=tile)
    assert got.image.shape == (6, 12, 16)
    assert np.array_equal(got.image, whole.image)
    a, b = got.stats, whole.stats
    assert (a.max_I, a.max_pos, a.n) == (b.max_I, b.max_pos, b.n) and len(a.max_pos) == 3
    assert (a.mean, a.rms, a.rmsd) == pytest.approx((b.mean, b.rms, b.rmsd), rel=1e-12)  # sums in another order


def test_one_panel_of_a_mosflm_detector_reproduces_its_run():
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.io.panels import Panel

    args = "-cell 50 60 70 90 90 90 -default_F 100 -N 4 -lambda 1 -distance 90 -detpixels_x 30 -detpixels_y 22".split()
    sim = parse_nanobragg_args([*args, "-Xbeam", "1.37", "-Ybeam", "2.11", "-oversample", "2"], cwd=".").simulation
    geo = sim.detector.geometry
    panel = Panel("only", geo.fdet, geo.sdet, geo.pix0_m, 1e-4, 30, 22)
    one = with_panels(sim, (panel,), 2)
    a, b = run_serial(sim, tile=8), run_serial(one, tile=8)
    assert np.array_equal(b.image[0], a.image)
    assert one.detector.panels[0].close_distance_m == geo.close_distance_m


def test_a_panel_geometry_derives_what_the_c_program_would():
    """The beam centre and distance the geometry reports for a panel are the ones that, given to the C
    program with these vectors and -pivot beam, put its pix0 at the panel's origin."""
    base = resolve_detector_geometry(DetectorGeometryInput())
    f, s = (0.0, 0.6, 0.8), (0.0, -0.8, 0.6)
    g = panel_geometry(base, f, s, (0.1, -0.02, 0.03), 1e-4)
    again = resolve_detector_geometry(
        DetectorGeometryInput(
            convention="custom",
            custom_vectors=(("fdet", f), ("sdet", s), ("odet", g.odet), ("beam", base.beam)),
            xbeam_m=g.fbeam_m,
            ybeam_m=g.sbeam_m,
            distance_m=abs(g.distance_m),
            pivot="beam",
        )
    )
    assert np.allclose(again.pix0_m, g.pix0_m, rtol=0, atol=1e-15)
    assert again.close_distance_m == pytest.approx(g.close_distance_m, rel=1e-15)


def test_the_files_of_a_detector_of_panels(tmp_path, capsys):
    from bragg_dask.io.smv import read_smv

    args, panels, refs = _case("modules", tmp_path)
    files = ["-intfile", "i.img", "-pgmfile", "p.pgm", "-noisefile", "n.img", "-seed", "5", "-floatfile", "f.bin"]
    rc = main_in(tmp_path, [*args, "--panels", "panels.json", *files, "-noprogress"])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    scale = 55000.0 / float(refs.max())  # one scale: the statistics are over every panel
    noise = []
    for k, p in enumerate(panels):
        keys, pixels = read_smv(str(tmp_path / f"i_{p['name']}.img"))
        assert (int(keys["SIZE1"]), int(keys["SIZE2"])) == (16, 12)
        geo = _simulation("modules").detector.panels[k]
        assert float(keys["BEAM_CENTER_X"]) == pytest.approx(geo.fbeam_m * 1e3, abs=1e-3)  # the panel's own header
        expect = np.floor(refs[k].astype(np.float64) * scale + 40.0)
        assert np.abs(pixels.astype(np.float64) - np.minimum(expect, 65535)).max() <= 1
        assert (tmp_path / f"p_{p['name']}.pgm").read_bytes().startswith(b"P5\n16 12\n")
        noise.append(read_smv(str(tmp_path / f"n_{p['name']}.img"))[1])
        assert f"wrote ./i_{p['name']}.img" in out
    # the panels' noise: every pixel its own draw (the stacked image's), not one pattern repeated per panel
    assert not np.array_equal(noise[0] - np.floor(refs[0]), noise[1] - np.floor(refs[1]))
    assert not (tmp_path / "i.img").exists() and (tmp_path / "f.bin").stat().st_size == refs.size * 4


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["-distance", "100"], "-distance"),
        (["-detpixels_x", "64"], "-detpixels_x"),
        (["-Xbeam", "5"], "-Xbeam"),
        (["-pix0_vector", "0.1", "0", "0"], "-pix0_vector"),
        (["-detector_rotx", "3"], "-detector_rotx"),
        (["-twotheta", "10"], "-twotheta"),
        (["-xds"], "-xds"),
        (["-pixel", "0.1"], "-pixel"),
        (["-roi", "0", "3", "0", "3"], "-roi"),
        (["-curved_det"], "-curved_det"),
        (["--parity", "c"], "--parity"),
        (["--geometry", "g.geom"], "one detector"),
    ],
)
def test_what_a_detector_of_panels_contradicts_is_refused(extra, needle, tmp_path, cli_error):
    shutil.copy(PANELS / "modules" / "panels.json", tmp_path / "panels.json")
    args = (PANELS / "modules" / "args.txt").read_text().split()
    cli_error([*args, *extra, "--panels", "panels.json", "-floatfile", "f.bin"], needle)


def test_a_bad_panels_file_is_one_line_and_nothing_changes(tmp_path, cli_error):
    doc = json.loads((PANELS / "tilted" / "panels.json").read_text())
    doc["panels"][1]["fdet"] = [0, 0, 0]
    (tmp_path / "panels.json").write_text(json.dumps(doc))
    (tmp_path / "f.bin").write_bytes(b"keep")
    before = tree_state(tmp_path)
    args = (PANELS / "tilted" / "args.txt").read_text().split()
    cli_error([*args, "--panels", "panels.json", "-floatfile", "f.bin"], "--panels", "panels.json", "'t1'", "fdet")
    cli_error([*args, "--panels", "missing.json"], "--panels", "missing.json")
    cli_error([*args, "--panels", "panels.json", "-intfile", "panels_t0.json"])  # (an input is never overwritten)
    assert tree_state(tmp_path) == before


def test_an_output_of_a_panel_would_overwrite_an_input(tmp_path, cli_error):
    """``-intfile x.json`` writes ``x_NAME.json`` per panel: one of them the --panels file is refused."""
    doc = json.loads((PANELS / "tilted" / "panels.json").read_text())
    (tmp_path / "in_t0.json").write_text(json.dumps(doc))
    args = (PANELS / "tilted" / "args.txt").read_text().split()
    cli_error([*args, "--panels", "in_t0.json", "-intfile", "in.json"], "-intfile", "in_t0.json")


def test_a_single_panel_description_keeps_its_fingerprint():
    """A single-panel detector's description is as before panels existed (stores made then resume)."""
    sim = parse_nanobragg_args("-cell 50 60 70 90 90 90 -default_F 1 -N 2".split(), cwd=".").simulation
    d = sim.to_dict()["detector"]
    assert not {"panels", "panel_names", "panel_oversample"} & set(d)
    multi = _simulation("modules")
    assert len(multi.to_dict()["detector"]["panels"]) == 6
    assert multi.fingerprint() != _simulation("tilted").fingerprint()


# ------------------------------------------------------------------------------------- on Dask, in a store


def test_a_store_of_panels_holds_each_panel_as_the_c_program(tmp_path, capsys):
    """(frame, panel, slow, fast) arrays equal to the C references; damage found per panel tile, a resume
    computes only it; the files exported from the store are the in-process run's."""
    import xarray as xr
    import zarr

    args, panels, refs = _case("tilted", tmp_path)
    run = [*args, "--panels", "panels.json", "--tile", "6", "-noprogress"]
    files = ["-floatfile", "f.bin", "-intfile", "i.img", "-noisefile", "n.img", "-seed", "9"]
    assert main_in(tmp_path, [*run, "--zarr", "s.zarr", "--workers", "2", *files]) == 0, capsys.readouterr().err
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    got = np.asarray(g["float"][0])
    assert got.shape == refs.shape and g["float"].chunks == (1, 1, 6, 6)
    for k in range(len(panels)):
        assert np.array_equal(got[k], refs[k]) or _max_rel(got[k], refs[k]) <= 1e-12
    ds = xr.open_zarr(str(tmp_path / "s.zarr"))
    assert ds["float"].dims == ("frame", "panel", "slow", "fast") and list(ds["panel"].values) == [0, 1, 2]
    attrs = dict(g.attrs)["bragg_dask"]["geometry"]["panels"]
    assert [p["name"] for p in attrs] == ["t0", "t1", "t2"]
    assert np.allclose(attrs[2]["fdet_vector"], panels[2]["fdet"], atol=1e-15)
    serial = tmp_path / "serial"
    serial.mkdir()
    shutil.copy(tmp_path / "panels.json", serial / "panels.json")
    assert main_in(serial, [*run, *files]) == 0
    for name in ["f.bin"] + [f"{x}_{p['name']}.img" for x in ("i", "n") for p in panels]:
        assert (tmp_path / name).read_bytes() == (serial / name).read_bytes(), name
    capsys.readouterr()
    # a chunk of panel 1 lost: verify names its (panel, slow, fast) tile; the same command computes it alone
    (tmp_path / "s.zarr" / "float" / "c" / "0" / "1" / "2" / "1").unlink()
    assert main_in(tmp_path, ["verify", "s.zarr"]) == 1
    assert "tile (1, 2, 1)" in capsys.readouterr().out
    assert main_in(tmp_path, [*run, "--zarr", "s.zarr", "--workers", "2"]) == 0
    assert "tiles computed: 1 of 36" in capsys.readouterr().out
    assert main_in(tmp_path, ["verify", "s.zarr"]) == 0
    assert "1 of 1 frames complete" in capsys.readouterr().out
    # exported from the store: the in-process run's files
    assert main_in(tmp_path, ["export", "s.zarr", "-floatfile", "e.bin", "-intfile", "e.img"]) == 0
    assert (tmp_path / "e.bin").read_bytes() == (serial / "f.bin").read_bytes()
    assert (tmp_path / "e_t1.img").read_bytes() == (serial / "i_t1.img").read_bytes()


def test_a_dataset_of_a_detector_of_panels(tmp_path, capsys):
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.planning.frames import DatasetSpec, make_frames
    from bragg_dask.store import read_frame

    args, panels, _ = _case("modules", tmp_path)
    rc = main_in(tmp_path, [*args, "--panels", "panels.json", "--orientations", "3", "--zarr", "d.zarr", "-noprogress"])
    assert rc == 0, capsys.readouterr().err
    sim = _simulation("modules")
    for frame in make_frames(sim, DatasetSpec("orientations", 3)):
        want = run_serial(frame.simulation(sim), tile=64).image
        assert np.array_equal(read_frame(str(tmp_path / "d.zarr"), frame.index), want)


def test_the_preview_draws_the_panels_where_they_are(tmp_path, capsys):
    from bragg_dask.cli.preview import load

    args, panels, refs = _case("modules", tmp_path)
    assert main_in(tmp_path, [*args, "--panels", "panels.json", "--zarr", "s.zarr", "-noprogress"]) == 0
    view = load(str(tmp_path / "s.zarr"), 0, max_px=1000)
    # six 16 x 12 modules with gaps of 3 (fast) and 5 (slow) pixels, in one plane: 35 x 46 pixels
    assert view.image.shape == (46, 35) and view.factor == 1 and view.panels == 6
    assert np.isnan(view.image[:, 16:19]).all() and np.isnan(view.image[12:17, :]).all()
    assert np.array_equal(view.image[:12, :16], refs[0]) and np.array_equal(view.image[34:, 19:], refs[5])
    assert main_in(tmp_path, ["preview", "s.zarr", "-o", "p.png", "--rings"]) == 0
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")


def test_a_miniCBF_of_a_store_of_panels_is_one_line(tmp_path, cli_error, capsys):
    args, _, _ = _case("modules", tmp_path)
    assert main_in(tmp_path, [*args, "--panels", "panels.json", "--zarr", "s.zarr", "-noprogress"]) == 0
    capsys.readouterr()
    cli_error(["export", "s.zarr", "--cbf", "x.cbf"], "--cbf", "panels")


MODEL = ["-psf", "gauss", "-psf_fwhm", "300", "-pixel", "0.172"]


def test_the_detector_response_of_a_store_of_panels_is_each_panels_own(tmp_path, capsys):
    """noisify STORE blurs within each panel (no light crosses a gap, each panel's lost photons its own):
    every panel equals the file mode's noisify of that panel's float image alone; with noise, panel 0 draws
    as that file (the panels' pixels are numbered as in the panels stacked)."""
    from bragg_dask.io.smv import read_smv
    from bragg_dask.store import read_frame

    args, panels, _ = _case("modules", tmp_path)
    assert main_in(tmp_path, [*args, "--panels", "panels.json", "--zarr", "s.zarr", "-noprogress"]) == 0
    floats = read_frame(str(tmp_path / "s.zarr"), 0)
    blurred = None
    for noise, extra in ((False, ["-nonoise"]), (True, ["-seed", "7"])):
        assert main_in(tmp_path, ["noisify", "s.zarr", *MODEL, *extra]) == 0, capsys.readouterr().err
        ints = read_frame(str(tmp_path / "s.zarr"), 0, "noise" if noise else "int")
        blurred = ints if not noise else blurred
        for k in range(len(panels) if not noise else 1):
            floats[k].astype("<f4").tofile(tmp_path / f"p{k}.bin")
            one = ["noisify", "-floatfile", f"p{k}.bin", "-detpixels_x", "16", "-detpixels_y", "12", *MODEL, *extra]
            out = ["-intfile", f"i{k}.img", "-noisefile", f"n{k}.img"] if noise else ["-intfile", f"i{k}.img"]
            assert main_in(tmp_path, [*one, *out, "-nopgm"]) == 0, capsys.readouterr().err
            want = read_smv(str(tmp_path / f"{'n' if noise else 'i'}{k}.img"))[1]
            assert np.array_equal(ints[k], want), (noise, k)
    capsys.readouterr()
    # the run's detector model (--psf ... with --zarr): the same pass, on the cluster
    rc = main_in(tmp_path, [*args, "--panels", "panels.json", "--zarr", "m.zarr", "--psf", "gauss", "--psf-fwhm",
                            "300", "-nonoise", "-noprogress"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert np.array_equal(read_frame(str(tmp_path / "m.zarr"), 0, "int"), blurred)


# ------------------------------------------------------------------------------------------------ presets


def test_a_preset_is_its_frame_with_the_gaps_not_computed():
    """Every module of --detector eiger2-4m equals the pixels under it of the C program's single detector of
    the preset's whole frame (2068 x 2162 pixels of 75 um), placed by the same flags."""
    from bragg_dask.cli import prepare
    from bragg_dask.cli.options import service_parser, split_argv
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.io.presets import PRESETS

    xtal = "-cell 50 60 70 90 90 90 -default_F 10 -N 3 -lambda 1 -distance 200 -Xbeam 80 -Ybeam 75".split()
    full = parse_nanobragg_args([*xtal, "-detpixels_x", "2068", "-detpixels_y", "2162", "-pixel", "0.075"], cwd=".")
    service, c_args = split_argv([*xtal, "--detector", "EIGER2-4M", "-nonoise", "-nopgm", "-noprogress"])
    sim = prepare(service_parser().parse_args(service), c_args)[3]
    p = PRESETS["eiger2-4m"]
    assert (
        sim.detector.shape == (8, 512, 1028)
        and sim.detector.panel_oversample == (full.simulation.detector.oversample,) * 8
    )
    got, ref = run_serial(sim).image, run_serial(full.simulation).image
    for k, (fo, so) in enumerate(p.offsets):
        assert _max_rel(got[k], ref[so : so + 512, fo : fo + 1028]) <= 1e-9  # the origin moved: float32 ulps
    assert got.sum() < ref.sum()  # the gaps are not computed


def test_detector_list_and_the_preset_refusals(tmp_path, capsys, cli_error):
    from bragg_dask.io.presets import PRESETS

    assert main_in(tmp_path, ["--detector", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("pilatus6m", "eiger2-16m", "eiger2-4m", "jungfrau4m"):
        assert name in out and name in PRESETS
    xtal = "-cell 50 60 70 90 90 90 -default_F 10 -N 3".split()
    cli_error([*xtal, "--detector", "pilatus7m"], "--detector", "pilatus6m")
    cli_error([*xtal, "-detpixels", "100", "--detector", "pilatus6m"], "-detpixels")
    cli_error([*xtal, "-pixel", "0.1", "--detector", "pilatus6m"], "-pixel")
    cli_error([*xtal, "--detector", "pilatus6m", "--panels", "p.json"], "--panels", "one detector")


# ------------------------------------------------------------------------------- the field's files: NXmx...


def _panels_of_run(argv: list[str], cwd) -> tuple:
    from bragg_dask.cli import prepare
    from bragg_dask.cli.options import service_parser, split_argv

    service, c_args = split_argv(argv)
    here = os.getcwd()
    os.chdir(cwd)
    try:
        return prepare(service_parser().parse_args(service), c_args)[3]
    finally:
        os.chdir(here)


@pytest.mark.parametrize(
    "name, place",
    [
        ("eiger2-4m", ["-distance", "200", "-Xbeam", "74.9625", "-Ybeam", "82.4625"]),
        ("pilatus6m", ["-distance", "250", "-Xbeam", "223.514", "-Ybeam", "206.314"]),
    ],
)
def test_a_preset_equals_its_published_layout_in_crystfel_and_dials_files(name, place, tmp_path):
    """tests/data/geometry/presets: the preset's layout written by hand from the published numbers."""
    from bragg_dask.io.geometry_files import read_geometry

    xtal = ["-cell", "50", "60", "70", "90", "90", "90", "-default_F", "10", "-N", "3", "-nonoise", "-nopgm"]
    preset = _panels_of_run([*xtal, *place, "--detector", name], tmp_path).detector
    for ext in ("geom", "expt"):
        path = DATA / "geometry" / "presets" / f"{name}.{ext}"
        read = read_geometry(str(path))
        assert [p.name for p in read.panels] == list(preset.panel_names)
        for p, g in zip(read.panels, preset.panels):
            assert (p.n_fast, p.n_slow) == (preset.fpixels, preset.spixels) and p.pixel_m == pytest.approx(
                preset.pixel_size_m, rel=1e-12
            )
            assert np.allclose(p.fdet, g.fdet, atol=1e-9) and np.allclose(p.sdet, g.sdet, atol=1e-9)
            assert np.allclose(p.pix0_m, g.pix0_m, atol=1e-8), (ext, p.name)  # the files' decimals: 10 nm
        assert read.wavelength_m == pytest.approx(1e-10, rel=1e-6)
        assert np.allclose(read.beam_vector, (1.0, 0.0, 0.0), atol=1e-12)


def test_nxmx_of_a_store_of_panels_is_read_by_dials_reader_and_back_by_geometry(tmp_path, capsys):
    """The export writes a module per panel whose chain DIALS's NXmx reader (the nxmx package) composes into
    the store's vectors and origins; --geometry reads the file back into the same detector, same image."""
    import h5py
    import nxmx

    from bragg_dask.io.nexus import mcstas_rotation

    args, panels, refs = _case("modules", tmp_path)
    assert main_in(tmp_path, [*args, "--panels", "panels.json", "--zarr", "s.zarr", "-noprogress"]) == 0
    assert main_in(tmp_path, ["export", "s.zarr", "--nxmx", "s.h5"]) == 0
    capsys.readouterr()
    sim = _simulation("modules")
    rot = mcstas_rotation(sim.detector.geometry.beam)
    with h5py.File(tmp_path / "s.h5", "r") as fh:
        modules = nxmx.NXmx(fh).entries[0].instruments[0].detectors[0].modules
        assert [m.path.rsplit("/", 1)[-1] for m in modules] == [f"module_{n}" for n in sim.detector.panel_names]
        for m, g in zip(modules, sim.detector.panels):
            assert list(m.data_origin) == [12 * sim.detector.panel_names.index(m.path.rsplit("_", 1)[-1]), 0]
            for axis, want in ((m.fast_pixel_direction, g.fdet), (m.slow_pixel_direction, g.sdet)):
                whole = nxmx.get_cumulative_transformation(nxmx.get_dependency_chain(axis.depends_on))[0]
                assert np.allclose(whole[:3, 3] / 1000.0, rot @ np.asarray(g.pix0_m), rtol=0, atol=1e-15)
                assert np.allclose(whole[:3, :3] @ axis.vector, rot @ np.asarray(want), rtol=0, atol=1e-15)
        data = np.asarray(fh["/entry/data/data"][0])
    assert data.shape == (6 * 12, 16)
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(tmp_path / "s.h5", again / "s.h5")
    rc = main_in(again, [*args, "--geometry", "s.h5", "-floatfile", "f.bin", "-intfile", "i.img", "-noprogress"])
    assert rc == 0, capsys.readouterr().err
    got = np.fromfile(again / "f.bin", "<f4").reshape(refs.shape)
    for k in range(len(panels)):
        assert np.array_equal(got[k], refs[k]) or _max_rel(got[k], refs[k]) <= 1e-12
    from bragg_dask.io.smv import read_smv

    assert np.array_equal(read_smv(str(again / "i_m11.img"))[1], data[36:48])  # the NXmx counts: the SMV's


def test_a_detector_of_panels_is_tiled_by_whole_panels_by_default():
    import dataclasses

    from bragg_dask.planning.plan import PANEL_TILE_PIXELS, plan_for

    det = _simulation("modules").detector
    plan = plan_for(det)
    assert plan.tile_shape == (12, 16) and plan.chunk_grid == (6, 1, 1) and len(plan.tiles()) == 6
    assert plan_for(det, 5).tile_shape == (5, 5)  # --tile as given, within each panel
    big = dataclasses.replace(det, fpixels=2100, spixels=1000)  # over PANEL_TILE_PIXELS: even parts of ~256
    assert 2100 * 1000 > PANEL_TILE_PIXELS
    tiles = plan_for(big).tiles()
    assert plan_for(big).tile_shape == (250, 234) and {t.shape for t in tiles} == {(250, 234), (250, 228)}
    assert all(t.panel is not None and t.s1 <= 1000 and t.f1 <= 2100 for t in tiles)


def test_the_python_api_with_panels(tmp_path):
    import bragg_dask
    from bragg_dask.executors.serial import run_serial

    args = (PANELS / "tilted" / "args.txt").read_text().split()
    sim = bragg_dask.with_panels(
        bragg_dask.simulation_from_args(args, cwd="."), bragg_dask.read_panels(str(PANELS / "tilted" / "panels.json"))
    )
    want = run_serial(sim).image
    lazy = bragg_dask.to_dask_array(sim, tile=7)
    assert lazy.shape == (3, 14, 20) and lazy.numblocks == (3, 2, 3)
    assert np.array_equal(lazy.compute(scheduler="synchronous"), want)
    assert np.array_equal(bragg_dask.simulate(sim, tile=9), want)


def test_a_preset_store_and_its_nxmx_carry_the_frame_and_its_mask(tmp_path, capsys):
    """--detector eiger2-1m (2 modules of 1028 x 512, a 38-pixel gap, frame 1028 x 1062): the store's
    pixel_mask flags the gap; the NXmx file holds the whole frame, the gap 0 and flagged in pixel_mask
    (bit 0), a module per panel at its place; --geometry reads it back into the same image."""
    import h5py
    import zarr

    xtal = "-cell 50 60 70 90 90 90 -default_F 10 -N 3 -lambda 1 -distance 120 -oversample 1".split()
    run = [*xtal, "--detector", "eiger2-1m", "-noprogress", "-nonoise", "-nopgm"]
    assert main_in(tmp_path, [*run, "--zarr", "s.zarr", "-floatfile", "f.bin"]) == 0, capsys.readouterr().err
    mask = np.asarray(zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["pixel_mask"])
    assert mask.shape == (1062, 1028) and (mask[512:550] == 1).all() and mask[:512].sum() == mask[550:].sum() == 0
    assert main_in(tmp_path, ["export", "s.zarr", "--nxmx", "s.h5"]) == 0
    floats = np.fromfile(tmp_path / "f.bin", "<f4").reshape(2, 512, 1028)
    with h5py.File(tmp_path / "s.h5", "r") as fh:
        det = fh["/entry/instrument/detector"]
        data = np.asarray(fh["/entry/data/data"][0])
        assert data.shape == (1062, 1028) and np.array_equal(np.asarray(det["pixel_mask"]), mask)
        assert (data[512:550] == 0).all() and data[550:].max() > 40  # counts above the ADC offset
        assert list(det["module_m0100/data_origin"][()]) == [550, 0]
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(tmp_path / "s.h5", again / "s.h5")
    geo = [a for a in run if a not in ("--detector", "eiger2-1m", "-distance", "120")]  # (the file places it)
    assert main_in(again, [*geo, "--geometry", "s.h5", "-floatfile", "f.bin"]) == 0, capsys.readouterr().err
    got = np.fromfile(again / "f.bin", "<f4").reshape(2, 512, 1028)
    assert _max_rel(got, floats) <= 1e-9  # (the origins through the file's chain: float32 ulps)


def test_a_preset_equals_its_published_layout_written_as_nxmx(tmp_path):
    """The EIGER2 X 4M's published layout (2 x 4 modules of 1028 x 512 pixels of 75 um, gaps 12 and 38
    pixels) written here as an NXmx file by hand, in the McStas frame: the detector at 200 mm, the direct
    beam 1100 pixels along fast and 1000 along slow from the frame's first pixel corner, fast along -x and
    slow along -y (a detector seen from the sample, x to the left); --geometry reads the preset's panels."""
    import h5py

    from bragg_dask.io.geometry_files import read_geometry

    px, det_path = 75e-6, "/entry/instrument/detector"
    corner = np.array([1100 * px, 1000 * px, 0.0])  # from the point at 200 mm on the beam, McStas
    with h5py.File(tmp_path / "e4m.nxs", "w") as fh:
        entry = fh.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        inst = entry.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        beam = inst.create_group("beam")
        beam.attrs["NX_class"] = "NXbeam"
        beam.create_dataset("incident_wavelength", data=1.0).attrs["units"] = "angstrom"
        det = inst.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        tr = det.create_group("transformations")
        tr.attrs["NX_class"] = "NXtransformations"
        z = tr.create_dataset("det_z", data=200.0)
        z.attrs.update(units="mm", transformation_type="translation", vector=[0.0, 0.0, 1.0], depends_on=".")
        for row in range(4):
            for col in range(2):
                name = f"m{row:02d}{col:02d}"
                mod = det.create_group(name)
                mod.attrs["NX_class"] = "NXdetector_module"
                fo, so = col * (1028 + 12), row * (512 + 38)
                mod["data_origin"] = np.array([so, fo], dtype=np.int32)
                mod["data_size"] = np.array([512, 1028], dtype=np.int32)
                offset = corner - np.array([fo * px, so * px, 0.0])
                d = mod.create_dataset("module_offset", data=np.linalg.norm(offset))
                d.attrs.update(units="m", transformation_type="translation", vector=offset / np.linalg.norm(offset),
                               depends_on=f"{det_path}/transformations/det_z")  # fmt: skip
                for axis, vec in (("fast_pixel_direction", [-1.0, 0, 0]), ("slow_pixel_direction", [0, -1.0, 0])):
                    a = mod.create_dataset(axis, data=px)
                    a.attrs.update(units="m", transformation_type="translation", vector=vec,
                                   depends_on=f"{det_path}/{name}/module_offset")  # fmt: skip
    read = read_geometry(str(tmp_path / "e4m.nxs"))
    xtal = ["-cell", "50", "60", "70", "90", "90", "90", "-default_F", "10", "-N", "3", "-nonoise", "-nopgm"]
    place = ["-distance", "200", "-Xbeam", "74.9625", "-Ybeam", "82.4625"]  # (MOSFLM: the same beam centre)
    preset = _panels_of_run([*xtal, *place, "--detector", "eiger2-4m"], tmp_path).detector
    assert [p.name for p in read.panels] == list(preset.panel_names) and read.wavelength_m == pytest.approx(1e-10)
    for p, g in zip(read.panels, preset.panels):
        assert np.allclose(p.fdet, g.fdet, atol=1e-12) and np.allclose(p.sdet, g.sdet, atol=1e-12)
        assert np.allclose(p.pix0_m, g.pix0_m, rtol=0, atol=1e-12), p.name
