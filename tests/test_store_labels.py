"""A store reads as labelled data: coordinates, units and long names on every array, and the
detector as a pyFAI PONI equal to the simulation's geometry."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

import bragg_dask
from bragg_dask import store as zstore

BASE = [
    "-cell",
    "50",
    "50",
    "50",
    "90",
    "90",
    "90",
    "-default_F",
    "100",
    "-N",
    "5",
    "-lambda",
    "1.0",
    "-pixel",
    "0.2",
    "-detpixels_f",
    "40",
    "-detpixels_s",
    "30",
    "-nonoise",
    "-nopgm",
]
GEOMETRIES = {
    "mosflm": ["-distance", "50"],
    "xds": ["-xds", "-distance", "60"],
    "rotated": [
        "-distance",
        "50",
        "-detector_rotx",
        "5",
        "-detector_roty",
        "-7",
        "-detector_rotz",
        "20",
        "-Xbeam",
        "2",
        "-Ybeam",
        "5",
    ],
    "twotheta": ["-distance", "50", "-twotheta", "25"],
    "adxv_tilted": ["-adxv", "-distance", "55", "-detector_roty", "12"],
}


def _store(tmp_path, extra, frames=1):
    args = BASE + extra + ["-phi", "10", "-osc", "1", "--zarr", "s.zarr", "--quiet"]
    if frames > 1:
        args += ["--frames", str(frames)]
    p = subprocess.run([sys.executable, "-m", "bragg_dask", *args], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return str(tmp_path / "s.zarr")


def test_xarray_opens_a_store_with_coordinates_and_units(tmp_path):
    xr = pytest.importorskip("xarray")
    path = _store(tmp_path, GEOMETRIES["mosflm"], frames=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(path)
    img = ds["float"]
    assert set(img.coords) == {"frame", "phi_deg", "y_mm", "x_mm"}
    assert img.coords["x_mm"].dims == ("fast",) and img.coords["y_mm"].dims == ("slow",)
    np.testing.assert_allclose(ds["phi_deg"].values, [10.0, 11.0, 12.0])
    np.testing.assert_allclose(ds["x_mm"].values, (np.arange(40) + 0.5) * 0.2)
    np.testing.assert_allclose(ds["y_mm"].values, (np.arange(30) + 0.5) * 0.2)
    assert list(ds["frame"].values) == [0, 1, 2]
    for name in list(ds.data_vars) + list(ds.coords):
        attrs = ds[name].attrs
        assert attrs.get("units") and attrs.get("long_name"), name
    assert img.attrs["units"] == "photons" and ds["int"].attrs["units"] == "ADU"
    assert ds["phi_deg"].attrs["units"] == "degree" and ds["x_mm"].attrs["units"] == "mm"
    # a frame picked by its angle
    assert float(img.set_xindex("phi_deg").sel(phi_deg=11.0, method="nearest").sum()) == float(img[1].sum())


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_the_poni_gives_every_pixel_the_simulations_scattering_angle(tmp_path, name):
    pytest.importorskip("pyFAI")
    from bragg_dask.io.integrate import integrator

    path = _store(tmp_path, GEOMETRIES[name])
    geo = zstore.store_metadata(path)["geometry"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tth = integrator(path).center_array((30, 40), unit="2th_rad")
    px = geo["pixel_size_m"]
    f = (np.arange(40) + 0.5) * px
    s = (np.arange(30) + 0.5) * px
    pos = (
        np.asarray(geo["pix0_vector_m"])
        + f[None, :, None] * np.asarray(geo["fdet_vector"])
        + s[:, None, None] * np.asarray(geo["sdet_vector"])
    )
    beam = np.asarray(geo["beam_vector"]) / np.linalg.norm(geo["beam_vector"])
    ours = np.arccos(np.clip(pos @ beam / np.linalg.norm(pos, axis=2), -1.0, 1.0))
    assert np.abs(tth - ours).max() < 1e-6  # pyFAI computes in float32


def test_a_frame_integrates_with_pyfai(tmp_path):
    pytest.importorskip("pyFAI")
    path = _store(tmp_path, GEOMETRIES["rotated"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tth, intensity = bragg_dask.azimuthal(path, 0, npt=40, unit="2th_deg")
    assert tth.shape == intensity.shape == (40,) and np.all(np.diff(tth) > 0)
    assert np.isfinite(intensity).all() and intensity.max() > 0
    rec = zstore.frame_record(path, 0)
    assert rec.complete


def test_azimuthal_names_what_is_missing(tmp_path, monkeypatch):
    import builtins

    path = _store(tmp_path, GEOMETRIES["mosflm"])
    real = builtins.__import__

    def no_pyfai(name, *a, **k):
        if name.startswith("pyFAI"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pyfai)
    from bragg_dask.errors import UsageError

    with pytest.raises(UsageError, match=r"pip install bragg-dask\[pyfai\]"):
        bragg_dask.azimuthal(path, 0)


def test_a_curved_detector_has_no_poni(tmp_path):
    path = _store(tmp_path, ["-distance", "50", "-curved_det"])
    assert zstore.store_metadata(path)["poni"] is None
