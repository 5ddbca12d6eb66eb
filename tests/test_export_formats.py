"""``bragg-dask export STORE --nxmx F / --cbf F [--frame K | --all-frames]``: NeXus/NXmx and miniCBF files
for crystallographic processing programs, checked against the store they come from."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
fabio = pytest.importorskip("fabio")

from bragg_dask import store as zstore  # noqa: E402
from bragg_dask.io.cbf import numbered, series_template  # noqa: E402
from bragg_dask.io.nexus import mcstas_rotation  # noqa: E402

from .conftest import incomplete_copy  # noqa: E402

CLI = [sys.executable, "-m", "bragg_dask"]
# a small non-square detector: 32 fast x 24 slow pixels
SIM = [
    "-default_F",
    "100",
    "-N",
    "5",
    "-cell",
    "50",
    "50",
    "50",
    "90",
    "90",
    "90",
    "-distance",
    "50",
    "-pixel",
    "0.2",
    "-lambda",
    "1.0",
    "-phi",
    "0",
    "-osc",
    "0.5",
    "-detpixels_f",
    "32",
    "-detpixels_s",
    "24",
    "-noprogress",
    "-nopgm",
    "--workers",
    "1",
    "--tile",
    "16",
]
SHAPE = (24, 32)
DET = "/entry/instrument/detector"


def run_cli(args, cwd, timeout=300):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        CLI + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def assert_one_line_error(p, *needles):
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("bragg-dask: error:")
    for n in needles:
        assert n in lines[0], lines[0]


def _make_store(folder, name, extra):
    p = run_cli(SIM + list(extra) + ["--zarr", name], folder)
    assert p.returncode == 0, p.stderr
    return folder / name


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A 3-frame rotation series (MOSFLM convention), one XDS-convention frame and one MOSFLM frame on a
    rotated detector with an off-centre beam."""
    d = tmp_path_factory.mktemp("stores")
    return {
        "series": _make_store(d, "series.zarr", ["--frames", "3"]),
        "xds": _make_store(d, "xds.zarr", ["-xds", "-nonoise"]),
        "rotated": _make_store(
            d,
            "rot.zarr",
            [
                "-detector_rotx",
                "3",
                "-detector_roty",
                "4",
                "-detector_rotz",
                "5",
                "-Xbeam",
                "2",
                "-Ybeam",
                "3",
                "-nonoise",
            ],
        ),
    }


def _str(v) -> str:
    v = v[()] if isinstance(v, h5py.Dataset) else v
    return v.decode() if isinstance(v, bytes) else str(v)


def _translation(fh, path):
    """Where a chain of translations (NXtransformations) puts the origin, and the last axis' direction."""
    point = np.zeros(3)
    while path != ".":
        d = fh[path]
        assert _str(d.attrs["transformation_type"]) == "translation"
        assert _str(d.attrs["units"]) == "m" and _str(d.attrs["offset_units"]) == "m"
        point += float(d[()]) * np.asarray(d.attrs["vector"]) + np.asarray(d.attrs["offset"])
        path = _str(d.attrs["depends_on"])
    return point


def _module_geometry(fh):
    """``(origin, fast, slow)`` of the detector module in the file's (McStas) frame, metres."""
    mod = fh[f"{DET}/module"]
    origin = _translation(fh, _str(mod["fast_pixel_direction"].attrs["depends_on"]))
    assert np.allclose(origin, _translation(fh, _str(mod["slow_pixel_direction"].attrs["depends_on"])))
    return (
        origin,
        np.asarray(mod["fast_pixel_direction"].attrs["vector"]),
        np.asarray(mod["slow_pixel_direction"].attrs["vector"]),
    )


REQUIRED = {  # group -> NX_class
    "/entry": "NXentry",
    "/entry/data": "NXdata",
    "/entry/instrument": "NXinstrument",
    "/entry/instrument/beam": "NXbeam",
    DET: "NXdetector",
    f"{DET}/module": "NXdetector_module",
    f"{DET}/transformations": "NXtransformations",
    "/entry/sample": "NXsample",
    "/entry/sample/transformations": "NXtransformations",
}
UNITS = {  # field -> units
    "/entry/instrument/beam/incident_wavelength": "angstrom",
    f"{DET}/distance": "m",
    f"{DET}/x_pixel_size": "m",
    f"{DET}/y_pixel_size": "m",
    f"{DET}/sensor_thickness": "m",
    f"{DET}/module/module_offset": "m",
    f"{DET}/module/fast_pixel_direction": "m",
    f"{DET}/module/slow_pixel_direction": "m",
    f"{DET}/transformations/det_z": "m",
    "/entry/sample/transformations/omega": "deg",
    "/entry/sample/transformations/omega_increment_set": "deg",
    "/entry/sample/transformations/omega_end": "deg",
}


def test_nxmx_of_a_series_has_the_stores_frames_geometry_and_angles(stores, tmp_path):
    store = stores["series"]
    p = run_cli(["export", store, "--all-frames", "--nxmx", "series.h5"], tmp_path)
    assert p.returncode == 0, p.stderr
    meta = zstore.store_metadata(str(store))
    geo, cfg = meta["geometry"], meta["config"]
    with h5py.File(tmp_path / "series.h5", "r") as fh:
        for path, cls in REQUIRED.items():
            assert _str(fh[path].attrs["NX_class"]) == cls, path
        for path, units in UNITS.items():
            assert _str(fh[path].attrs["units"]) == units, path
        assert _str(fh["/entry/definition"]) == "NXmx"
        assert _str(fh["/entry/start_time"]).endswith("Z") and _str(fh["/entry/end_time"]).endswith("Z")
        for name in ("depends_on", "saturation_value", "sensor_material"):
            assert name in fh[DET], name
        mod = fh[f"{DET}/module"]
        assert list(mod["data_origin"][()]) == [0, 0] and list(mod["data_size"][()]) == list(SHAPE)
        for name in ("module_offset", "fast_pixel_direction", "slow_pixel_direction"):
            for attr in ("transformation_type", "vector", "offset", "depends_on"):
                assert attr in mod[name].attrs, (name, attr)
        # the data: the store's int image, frame by frame, one compressed chunk per frame
        data = fh["/entry/data/data"]
        assert _str(fh["/entry/data"].attrs["signal"]) == "data"
        assert data.shape == (3, *SHAPE) and data.dtype == np.uint16
        assert data.chunks == (1, *SHAPE) and data.compression == "gzip"
        assert fh[f"{DET}/data"] == data  # the same dataset, linked
        for k in range(3):
            np.testing.assert_array_equal(data[k], zstore.read_frame(str(store), k, zstore.INT))
        # the configuration
        assert fh[f"{DET}/x_pixel_size"][()] == fh[f"{DET}/y_pixel_size"][()] == cfg["detector"]["pixel_size_m"]
        assert fh[f"{DET}/distance"][()] == geo["distance_m"] == fh[f"{DET}/transformations/det_z"][()]
        assert fh[f"{DET}/module/fast_pixel_direction"][()] == cfg["detector"]["pixel_size_m"]
        assert fh["/entry/instrument/beam/incident_wavelength"][()] == pytest.approx(
            cfg["beam"]["wavelength_m"] * 1e10, rel=1e-15
        )
        assert fh[f"{DET}/saturation_value"][()] == 65535
        # the goniometer: phi of every frame, the oscillation range
        assert _str(fh["/entry/sample/depends_on"]) == "/entry/sample/transformations/omega"
        omega = fh["/entry/sample/transformations/omega"]
        assert _str(omega.attrs["transformation_type"]) == "rotation" and _str(omega.attrs["depends_on"]) == "."
        np.testing.assert_array_equal(omega[()], zstore.frames_phi0_deg(str(store)))
        np.testing.assert_allclose(omega[()], [0.0, 0.5, 1.0])
        assert fh["/entry/sample/transformations/omega_increment_set"][()] == pytest.approx(0.5, abs=1e-12)
        np.testing.assert_allclose(fh["/entry/sample/transformations/omega_end"][()], [0.5, 1.0, 1.5])
        # MOSFLM's lab frame (beam +x) turned onto McStas (beam +z): (x, y, z) -> (-z, y, x)
        origin, fast, slow = _module_geometry(fh)
        np.testing.assert_allclose(fast, [-1, 0, 0], atol=1e-15)
        np.testing.assert_allclose(slow, [0, -1, 0], atol=1e-15)
        np.testing.assert_allclose(omega.attrs["vector"], [-1, 0, 0], atol=1e-15)
        pix0 = geo["pix0_vector_m"]
        np.testing.assert_allclose(origin, [-pix0[2], pix0[1], pix0[0]], rtol=0, atol=1e-15)


@pytest.mark.parametrize("which", ["series", "xds", "rotated"])
def test_nxmx_geometry_gives_the_stores_beam_centre(stores, tmp_path, which):
    """The beam (McStas +z from the sample) meets the module's plane at the store's beam centre, for the
    MOSFLM convention (beam along the C program's +x), XDS (beam along its +z) and a rotated detector."""
    store = stores[which]
    p = run_cli(["export", store, "--frame", "0", "--nxmx", "one.h5"], tmp_path)
    assert p.returncode == 0, p.stderr
    geo = zstore.store_metadata(str(store))["geometry"]
    px = geo["pixel_size_m"]
    with h5py.File(tmp_path / "one.h5", "r") as fh:
        origin, fast, slow = _module_geometry(fh)
        spindle = np.asarray(fh["/entry/sample/transformations/omega"].attrs["vector"])
        assert fh["/entry/data/data"].shape == (1, *SHAPE)
    t, u, v = np.linalg.solve(np.stack([[0.0, 0.0, 1.0], -fast, -slow], axis=1), origin)
    fbeam, sbeam = geo["beam_center_fast_slow_m"]
    assert (u / px, v / px) == pytest.approx((fbeam / px, sbeam / px), abs=1e-9)
    assert t == pytest.approx(geo["distance_m"], rel=1e-12)
    # one rotation of the whole lab frame: lengths, angles and handedness are the store's
    fdet, sdet, beam = (np.asarray(geo[k]) for k in ("fdet_vector", "sdet_vector", "beam_vector"))
    spindle_lab = np.asarray(zstore.store_metadata(str(store))["config"]["crystal"]["spindle_axis"])
    assert np.linalg.norm(origin) == pytest.approx(np.linalg.norm(geo["pix0_vector_m"]), rel=1e-12)
    pairs = (
        (fast[2], fdet @ beam),
        (slow[2], sdet @ beam),
        (spindle[2], spindle_lab @ beam),
        (fast @ slow, fdet @ sdet),
        (np.cross(fast, slow) @ spindle, np.cross(fdet, sdet) @ spindle_lab),
    )
    for mine, theirs in pairs:
        assert mine == pytest.approx(theirs, abs=1e-12)
    if which == "xds":  # beam already along +z: nothing turned
        np.testing.assert_allclose(fast, fdet, atol=1e-15)
        np.testing.assert_allclose(slow, sdet, atol=1e-15)


def test_mcstas_rotation_is_a_rotation_taking_the_beam_to_z():
    rng = np.random.default_rng(5)
    for beam in [(1, 0, 0), (0, 0, 1), (0, 0, -1), (0, 1, 0), *rng.normal(size=(5, 3))]:
        r = mcstas_rotation(beam)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-14)
        assert np.linalg.det(r) == pytest.approx(1.0)
        np.testing.assert_allclose(r @ (np.asarray(beam) / np.linalg.norm(beam)), [0, 0, 1], atol=1e-14)
    np.testing.assert_allclose(mcstas_rotation((1, 0, 0)) @ [1.0, 2.0, 3.0], [-3.0, 2.0, 1.0], atol=1e-15)


def test_nxmx_from_the_float_image_with_a_scale_equals_the_intfile(stores, tmp_path):
    store = stores["series"]
    p = run_cli(["export", store, "--frame", "1", "-scale", "3", "--nxmx", "f1.h5", "-intfile", "f1.img"], tmp_path)
    assert p.returncode == 0, p.stderr
    from bragg_dask.io.smv import read_smv

    _, pixels = read_smv(str(tmp_path / "f1.img"))
    with h5py.File(tmp_path / "f1.h5", "r") as fh:
        np.testing.assert_array_equal(fh["/entry/data/data"][0], pixels)
        assert fh["/entry/sample/transformations/omega"][()] == pytest.approx([0.5])
    assert not np.array_equal(pixels, zstore.read_frame(str(store), 1, zstore.INT))  # another scale


def test_cbf_series_holds_the_int_images_and_the_pilatus_header(stores, tmp_path):
    store = stores["series"]
    p = run_cli(["export", store, "--all-frames", "--cbf", "series_#####.cbf"], tmp_path)
    assert p.returncode == 0, p.stderr
    meta = zstore.store_metadata(str(store))
    geo = meta["geometry"]
    px = geo["pixel_size_m"]
    phi = zstore.frames_phi0_deg(str(store))
    assert sorted(os.listdir(tmp_path)) == [f"series_{k:05d}.cbf" for k in (1, 2, 3)]
    for k in range(3):
        img = fabio.open(str(tmp_path / f"series_{k + 1:05d}.cbf"))
        assert img.data.shape == SHAPE
        np.testing.assert_array_equal(img.data, zstore.read_frame(str(store), k, zstore.INT))
        head = img.pilatus_headers
        assert head["Wavelength"] == pytest.approx(meta["config"]["beam"]["wavelength_m"] * 1e10, rel=1e-9)
        assert head["Detector_distance"] == pytest.approx(geo["distance_m"], rel=1e-9)
        assert tuple(head["Pixel_size"]) == pytest.approx((px, px), rel=1e-9)
        fbeam, sbeam = geo["beam_center_fast_slow_m"]
        assert tuple(head["Beam_xy"]) == pytest.approx((fbeam / px, sbeam / px), abs=1e-4)
        assert head["Start_angle"] == pytest.approx(phi[k], abs=1e-6)
        assert head["Angle_increment"] == pytest.approx(0.5, abs=1e-6)
        assert head["Count_cutoff"] == 65535
        assert b"x-CBF_BYTE_OFFSET" in (tmp_path / f"series_{k + 1:05d}.cbf").read_bytes()


def test_cbf_names(stores, tmp_path):
    store = stores["series"]
    assert run_cli(["export", store, "--all-frames", "--cbf", "img.cbf"], tmp_path).returncode == 0
    assert run_cli(["export", store, "--frame", "2", "--cbf", "one.cbf"], tmp_path).returncode == 0
    assert run_cli(["export", store, "--frame", "2", "--cbf", "f_###.cbf"], tmp_path).returncode == 0
    assert sorted(os.listdir(tmp_path)) == ["f_003.cbf", "img_00001.cbf", "img_00002.cbf", "img_00003.cbf", "one.cbf"]
    np.testing.assert_array_equal(
        fabio.open(str(tmp_path / "one.cbf")).data, zstore.read_frame(str(store), 2, zstore.INT)
    )
    assert numbered("a/b_##_c###.cbf", 7) == "a/b_##_c007.cbf"
    assert numbered("x.cbf", 7) == "x.cbf"
    assert series_template("d/x") == "d/x_#####.cbf"


def test_bad_input_is_one_line_and_writes_nothing(stores, tmp_path):
    store = stores["series"]
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_error(run_cli(["export", store, "--nxmx", "nowhere/x.h5"], out), "--nxmx", "does not exist")
    assert_one_line_error(run_cli(["export", store, "--all-frames", "--cbf", "nowhere/x_#.cbf"], out), "--cbf")
    assert_one_line_error(run_cli(["export", store, "--frame", "3", "--nxmx", "x.h5"], out), "--frame", "0..2")
    assert_one_line_error(
        run_cli(["export", store, "--frame", "1", "--all-frames", "--nxmx", "x.h5"], out), "--all-frames"
    )
    assert_one_line_error(run_cli(["export", store, "--all-frames", "-intfile", "x.img"], out), "--all-frames")
    assert_one_line_error(run_cli(["export", store, "--nxmx", "."], out), "--nxmx", "folder")
    bad = incomplete_copy(store, tmp_path)
    assert_one_line_error(
        run_cli(["export", bad, "--all-frames", "--nxmx", "x.h5", "--cbf", "x.cbf"], out),
        "--all-frames",
        "frame 1",
        "incomplete",
    )
    assert_one_line_error(run_cli(["export", bad, "--frame", "1", "--cbf", "x.cbf"], out), "--frame", "incomplete")
    assert os.listdir(out) == []  # nothing written, no temporary left
    assert run_cli(["export", bad, "--frame", "2", "--cbf", "x.cbf"], out).returncode == 0  # a complete frame


@pytest.mark.parametrize("flag, library, extra", [("--nxmx", "h5py", "nexus"), ("--cbf", "fabio", "cbf")])
def test_a_missing_library_is_one_line(stores, tmp_path, monkeypatch, capsys, flag, library, extra):
    from bragg_dask.cli import main

    monkeypatch.setitem(sys.modules, library, None)  # "import h5py" now fails
    status = main(["export", str(stores["series"]), "--frame", "0", flag, str(tmp_path / "x.out")])
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bragg-dask: error:"), err
    assert flag in lines[0] and f"pip install bragg-dask[{extra}]" in lines[0], err
    assert os.listdir(tmp_path) == []


def test_nexusformat_opens_the_file_where_installed(stores, tmp_path):
    nexusformat = pytest.importorskip("nexusformat.nexus")
    p = run_cli(["export", stores["series"], "--all-frames", "--nxmx", "s.h5"], tmp_path)
    assert p.returncode == 0, p.stderr
    root = nexusformat.nxload(str(tmp_path / "s.h5"))
    tree = root.tree
    assert "NXmx" in tree and "NXdetector_module" in tree
    assert root["entry/data/data"].shape == (3, *SHAPE)


def test_dials_nxmx_reader_reads_the_file(stores, tmp_path):
    """DIALS's own NXmx reader (the ``nxmx`` package) parses the file: definition, beam, module, and a
    sample whose dependency chain is the rotation axis with every frame's angle."""
    nxmx = pytest.importorskip("nxmx")
    p = run_cli(["export", stores["series"], "--all-frames", "--nxmx", "s.h5"], tmp_path)
    assert p.returncode == 0, p.stderr
    with h5py.File(tmp_path / "s.h5", "r") as fh:
        entry = nxmx.NXmx(fh).entries[0]
        assert entry.definition == "NXmx"
        wavelength = entry.instruments[0].beams[0].incident_wavelength
        assert wavelength.to("angstrom").magnitude == pytest.approx(
            float(zstore.store_metadata(stores["series"])["geometry"]["wavelength_m"]) * 1e10
        )
        module = entry.instruments[0].detectors[0].modules[0]
        assert tuple(module.data_size) == SHAPE
        chain = nxmx.get_dependency_chain(entry.samples[0].depends_on)
        assert [c.transformation_type for c in chain] == ["rotation"]
        angles = np.asarray(chain[0][()]).ravel()
        np.testing.assert_allclose(angles, zstore.frames_phi0_deg(stores["series"]))


def test_a_write_fault_mid_series_leaves_nothing(stores, tmp_path, monkeypatch, capsys):
    import errno

    import bragg_dask.io.cbf as cbf
    from bragg_dask.cli import main

    real, calls = cbf.write_cbf, []

    def failing(path, image, header):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real(path, image, header)

    monkeypatch.setattr(cbf, "write_cbf", failing)
    status = main(["export", str(stores["series"]), "--all-frames", "--cbf", str(tmp_path / "s_#.cbf")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "No space left on device" in lines[0], lines
    assert len(calls) == 2 and os.listdir(tmp_path) == []  # the first file was not renamed into place either


def test_exports_say_which_image_they_carry_and_take_the_noise_image_when_asked(stores, tmp_path):
    """``--image int`` (the default) carries the noiseless int image, ``--image noise`` the store's noise
    image, frame for frame; the run says which on its log."""
    store = stores["series"]  # made with noise (SIM has no -nonoise)
    p = run_cli(["export", store, "--all-frames", "--nxmx", "int.h5"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "the frames carry the int image: noiseless counts" in p.stdout
    p = run_cli(
        ["export", store, "--all-frames", "--nxmx", "noise.h5", "--cbf", "n_#####.cbf", "--image", "noise"], tmp_path
    )
    assert p.returncode == 0, p.stderr
    assert "the frames carry the store's noise image" in p.stdout
    with h5py.File(tmp_path / "noise.h5", "r") as fh, h5py.File(tmp_path / "int.h5", "r") as fi:
        for k in range(3):
            noise = zstore.read_frame(str(store), k, zstore.NOISE)
            np.testing.assert_array_equal(fh["/entry/data/data"][k], noise)
            np.testing.assert_array_equal(fabio.open(str(tmp_path / f"n_{k + 1:05d}.cbf")).data, noise)
            np.testing.assert_array_equal(fi["/entry/data/data"][k], zstore.read_frame(str(store), k, zstore.INT))
            assert not np.array_equal(noise, zstore.read_frame(str(store), k, zstore.INT))


def test_the_noise_image_refused_where_there_is_none_or_with_int_flags(stores, tmp_path):
    assert_one_line_error(
        run_cli(["export", stores["xds"], "--nxmx", "x.h5", "--image", "noise"], tmp_path), "--image", "no noise image"
    )
    assert_one_line_error(
        run_cli(["export", stores["series"], "--nxmx", "x.h5", "--image", "noise", "-scale", "2"], tmp_path),
        "--image",
        "-scale",
    )
    assert_one_line_error(
        run_cli(["export", stores["series"], "-intfile", "x.img", "--image", "noise"], tmp_path),
        "--image",
        "--nxmx and --cbf",
    )
    assert_one_line_error(
        run_cli(["export", stores["series"], "--nxmx", "x.h5", "--image", "photons"], tmp_path), "--image"
    )
    assert os.listdir(tmp_path) == []
