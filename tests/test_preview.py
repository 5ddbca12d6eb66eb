"""``bragg-dask preview STORE [--frame K] -o F.png [--rings]`` and ``bragg_dask.cli.preview.render``: a frame's
picture, its direct beam, its resolution rings, the band-wise max-pool, and bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from bragg_dask.cli import preview
from bragg_dask.store import StoreFrame, read_frame, store_metadata

from .conftest import incomplete_copy
from .test_cli import BASE, assert_one_line_error, run_cli

PIXEL_MM, XBEAM_MM, YBEAM_MM = 0.2, 5.0, 8.0


def _make_store(folder, name, extra):
    args = [a if a != "16" else "64" for a in BASE] + ["--tile", "24", "--zarr", name]
    p = run_cli(args + extra, folder)
    assert p.returncode == 0, p.stderr
    return str(folder / name)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A two-frame series (64 x 64 pixels, tiles of 24: bands that do not divide the pool) with the beam
    off centre, and a still whose detector is swung by -twotheta."""
    d = tmp_path_factory.mktemp("preview")
    off = ["-Xbeam", str(XBEAM_MM), "-Ybeam", str(YBEAM_MM)]
    return {
        "series": _make_store(d, "series.zarr", off + ["-phi", "0", "-osc", "1", "--frames", "2"]),
        "twotheta": _make_store(d, "tt.zarr", ["-twotheta", "10", "-Xbeam", "6", "-Ybeam", "7"]),
    }


def test_the_cli_writes_a_png(stores, tmp_path):
    from PIL import Image

    p = run_cli(["preview", stores["series"], "--frame", "1", "-o", "f.png", "--rings"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "wrote f.png"
    assert os.listdir(tmp_path) == ["f.png"]  # no temporary left beside it
    with Image.open(tmp_path / "f.png") as im:
        assert im.format == "PNG"
        w, h = im.size
    # a 64-pixel detector is drawn enlarged (about 480 screen pixels) with axes, title and colour bar
    assert 480 < w < 1000 and 480 < h < 1000


def test_render_returns_the_figure_and_writes_only_when_asked(stores, tmp_path):
    fig = preview.render(stores["series"], 1)
    assert os.listdir(tmp_path) == []
    ax = fig.axes[0]
    assert "frame 1 of 2" in ax.get_title() and "phi = 1 deg" in ax.get_title()
    assert ax.get_xlim() == (0.0, 64.0) and ax.get_ylim() == (64.0, 0.0)  # origin top left, in pixels
    assert "photons/pixel" in fig.axes[1].get_ylabel()
    out = tmp_path / "p.png"
    assert preview.render(stores["series"], path=out) is not None
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_beam_marker_is_on_the_direct_beam(stores):
    geometry = store_metadata(stores["series"])["geometry"]
    # MOSFLM: fast along -Ybeam, slow along -Xbeam, both plus half a pixel
    want = (YBEAM_MM / PIXEL_MM + 0.5, XBEAM_MM / PIXEL_MM + 0.5)
    fb, sb = geometry["beam_center_fast_slow_m"]
    assert preview.beam_position_px(geometry) == pytest.approx(want, abs=1e-9)
    assert (fb / geometry["pixel_size_m"], sb / geometry["pixel_size_m"]) == pytest.approx(want, abs=1e-9)
    fig = preview.render(stores["series"])
    (marker,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "direct beam"]
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == pytest.approx(want, abs=1e-9)


def test_the_beam_is_where_it_meets_a_swung_detector(stores):
    """With -twotheta the C program's derived beam centre is off the beam; the marker is on it."""
    g = store_metadata(stores["twotheta"])["geometry"]
    p0, f, s, o, b = (
        np.asarray(g[k]) for k in ("pix0_vector_m", "fdet_vector", "sdet_vector", "odet_vector", "beam_vector")
    )
    fast, slow = preview.beam_position_px(g)
    hit = p0 + (fast * f + slow * s) * g["pixel_size_m"]  # that detector point ...
    assert abs(hit @ o - p0 @ o) < 1e-15  # ... on the detector plane
    assert np.allclose(np.cross(hit, b), 0.0, atol=1e-15) and hit @ b > 0  # ... and on the beam
    fig = preview.render(stores["twotheta"], rings=True)
    assert any("perpendicular" in t.get_text() for t in fig.axes[0].get_legend().get_texts())


GEOMETRY = {
    "distance_m": 0.05,
    "wavelength_m": 1.0e-10,
    "pixel_size_m": 2.0e-4,
    "beam_center_fast_slow_m": [0.0081, 0.0051],
}


def test_ring_d_spacings_follow_braggs_law():
    # r = 100 pixels = 20 mm at 50 mm: tan(2 theta) = 0.4, d = lambda / (2 sin(theta))
    assert preview.d_spacing_A(100, GEOMETRY) == pytest.approx(1.0 / (2 * math.sin(math.atan(0.4) / 2)), rel=1e-12)
    assert preview.d_spacing_A(0, GEOMETRY) == math.inf
    assert math.isnan(preview.ring_radius_px(0.5, GEOMETRY))  # lambda / 2d = 1: no ring
    shape = (64, 64)
    ds = preview.ring_d_spacings(GEOMETRY, shape)
    assert len(ds) >= 3 and ds == sorted(ds, reverse=True)
    bf, bs = preview.beam_position_px(GEOMETRY)
    for d in ds:
        assert d == float(f"{d:.2g}")  # round values
        r_m = preview.ring_radius_px(d, GEOMETRY) * GEOMETRY["pixel_size_m"]
        theta = math.atan2(r_m, GEOMETRY["distance_m"]) / 2
        assert 2 * d * 1e-10 * math.sin(theta) == pytest.approx(GEOMETRY["wavelength_m"], rel=1e-12)
        r = r_m / GEOMETRY["pixel_size_m"]  # the ring crosses the detector
        assert max(math.hypot(x - bf, y - bs) for x in (0, 64) for y in (0, 64)) >= r


def test_the_rings_drawn_are_those_d_spacings(stores):
    from matplotlib.patches import Circle

    geometry = store_metadata(stores["series"])["geometry"]
    fig = preview.render(stores["series"], rings=True)
    ax = fig.axes[0]
    circles = [p for p in ax.patches if isinstance(p, Circle)]
    ds = preview.ring_d_spacings(geometry, (64, 64))
    assert [c.get_radius() for c in circles] == pytest.approx([preview.ring_radius_px(d, geometry) for d in ds])
    for c in circles:
        assert c.center == pytest.approx(preview.beam_position_px(geometry))
    labels = {t.get_text() for t in ax.texts}
    assert labels and labels <= {f"{d:g} \u00c5" for d in ds}
    assert not [p for p in preview.render(stores["series"]).axes[0].patches if isinstance(p, Circle)]


def _direct_max_pool(a: np.ndarray, k: int) -> np.ndarray:
    s, f = a.shape
    padded = np.full((-(-s // k) * k, -(-f // k) * k), -np.inf, np.float32)
    padded[:s, :f] = a
    return padded.reshape(padded.shape[0] // k, k, padded.shape[1] // k, k).max(axis=(1, 3))


@pytest.mark.parametrize("band_rows", [[10, 10, 10, 7], [1] * 37, [37], [3, 20, 14]])
@pytest.mark.parametrize("factor", [1, 2, 4, 5, 37, 60])
def test_band_wise_pooling_is_a_max_pool(band_rows, factor):
    a = np.random.default_rng(factor).random((37, 53)).astype(np.float32)
    edges = np.cumsum([0] + band_rows)
    bands = ((s0, s1, a[s0:s1]) for s0, s1 in zip(edges[:-1], edges[1:]))
    got = preview.pool_bands(bands, 53, factor)
    np.testing.assert_array_equal(got, _direct_max_pool(a, factor))


def test_a_large_frame_is_read_by_bands_and_pooled(stores, monkeypatch):
    assert preview.pool_factor((4362, 4148)) == 5 and preview.pool_factor((64, 64)) == 1
    assert preview.pool_factor((1024, 1000)) == 1 and preview.pool_factor((1025, 10)) == 2
    read = []
    real_bands = StoreFrame.bands

    def bands(self, array=StoreFrame.FLOAT):
        for s0, s1, band in real_bands(self, array):
            read.append(band.shape)
            yield s0, s1, band

    monkeypatch.setattr(StoreFrame, "bands", bands)
    view = preview.load(stores["series"], 1, max_px=16)
    assert read == [(24, 64), (24, 64), (16, 64)]  # a band of tiles at a time, never the frame
    assert view.factor == 4 and view.image.shape == (16, 16)
    np.testing.assert_array_equal(view.image, _direct_max_pool(read_frame(stores["series"], 1), 4))
    fig = preview.figure(view)
    assert "max of 4 x 4" in fig.axes[0].get_xlabel()
    assert fig.axes[0].get_xlim() == (0.0, 64.0)


@pytest.mark.parametrize(
    "args, needles",
    [
        (["nowhere.zarr", "-o", "x.png"], ("preview", "no store at nowhere.zarr")),
        (["{store}", "--frame", "2", "-o", "x.png"], ("--frame", "0..1")),
        (["{store}", "--frame", "-1", "-o", "x.png"], ("--frame",)),
        (["{store}", "-o", "nowhere/x.png"], ("-o", "does not exist")),
        (["{store}", "-o", "."], ("-o", "folder")),
        (["{store}"], ("preview", "-o")),
        (["{store}", "--frame", "one", "-o", "x.png"], ("preview", "--frame")),
        (["{store}", "--max-px", "3", "-o", "x.png"], ("--max-px",)),
        (["{incomplete}", "--frame", "1", "-o", "x.png"], ("--frame", "incomplete")),
        (["{plain}", "-o", "x.png"], ("preview", "not a bragg_dask store")),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(stores, tmp_path, monkeypatch, capsys, args, needles):
    from bragg_dask.cli import main

    plain = tmp_path / "plain"
    plain.mkdir()
    names = {
        "store": stores["series"],
        "incomplete": str(incomplete_copy(stores["series"], tmp_path)),
        "plain": str(plain),
    }
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    status = main(["preview"] + [a.format(**names) for a in args])
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bragg-dask: error:"), err
    for n in needles:
        assert n in lines[0], lines[0]
    assert os.listdir(out) == []


def test_an_incomplete_frame_through_the_process(stores, tmp_path):
    bad = str(incomplete_copy(stores["series"], tmp_path))
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_error(run_cli(["preview", bad, "--frame", "1", "-o", "x.png"], out), "--frame", "incomplete")
    assert os.listdir(out) == []
    assert run_cli(["preview", bad, "--frame", "0", "-o", "x.png"], out).returncode == 0  # a complete frame


def test_matplotlib_loads_only_for_a_picture():
    code = (
        "import sys, bragg_dask, bragg_dask.cli, bragg_dask.cli.preview; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
