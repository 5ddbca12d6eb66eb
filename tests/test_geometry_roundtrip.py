"""The geometry written out (SMV header, store attributes) describes the pixels the kernel used."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from bragg_dask import store as zstore
from bragg_dask.io.smv import read_smv, smv_header, write_smv
from bragg_dask.nanobragg.args import parse_nanobragg_args
from bragg_dask.physics.geometry import PixelBasis, subpixel_positions
from bragg_dask.physics.kernel import prepare
from bragg_dask.planning.plan import plan_tiles

from .conftest import case_by_id

PIXELS = [(0, 0), (63, 0), (0, 63), (31, 17), (63, 63)]  # (slow, fast)


def kernel_centres(sim) -> np.ndarray:
    """Pixel-centre positions (m, lab frame) from the kernel's own geometry function."""
    prep = prepare(sim)
    s = torch.tensor([p[0] for p in PIXELS])
    f = torch.tensor([p[1] for p in PIXELS])
    pos = subpixel_positions(
        f,
        s,
        PixelBasis(prep.fdet, prep.sdet, prep.odet, prep.pix0),
        pixel_size_m=sim.detector.pixel_size_m,
        oversample=1,
        layer_offsets_m=torch.zeros(1, dtype=torch.float64),
    )
    return pos.reshape(len(PIXELS), 3).numpy()


def written(case_id, tmp_path):
    """(simulation, SMV header keys, store geometry attributes) of a golden case."""
    case = case_by_id(case_id)
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    img = tmp_path / "x.img"
    write_smv(str(img), sim, np.zeros(sim.detector.shape, np.uint16))
    keys, _ = read_smv(str(img))
    path = str(tmp_path / "s.zarr")
    zstore.open_or_create(path, sim, plan_tiles(*sim.detector.shape, 32))
    geo = zarr.open_group(path, mode="r").attrs["bragg_dask"]["geometry"]
    return sim, keys, geo


def centres_from(pix0, f, s, px) -> np.ndarray:
    pix0, f, s = (np.asarray(v, dtype=np.float64) for v in (pix0, f, s))
    return np.array([pix0 + (j + 0.5) * px * f + (i + 0.5) * px * s for i, j in PIXELS])


def test_store_basis_vectors_and_origin_are_the_kernels(tmp_path):
    for cid in ("xds_orgx_orgy", "dials_default", "custom_vectors", "pivot_sample_custom", "twotheta_axis"):
        (tmp_path / cid).mkdir()
        sim, _, geo = written(cid, tmp_path / cid)
        got = centres_from(geo["pix0_vector_m"], geo["fdet_vector"], geo["sdet_vector"], geo["pixel_size_m"])
        assert np.allclose(got, kernel_centres(sim), rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "cid",
    ["xds_orgx_orgy", "dials_default", "custom_vectors", "pivot_sample_custom", "twotheta_axis", "detector_rot_mosflm"],
)
def test_xds_origin_in_header_gives_the_kernels_pixels(cid, tmp_path):
    sim, keys, geo = written(cid, tmp_path)
    px = float(keys["PIXEL_SIZE"]) / 1000
    orgx, orgy = float(keys["XDS_ORGX"]), float(keys["XDS_ORGY"])
    close = float(keys["CLOSE_DISTANCE"]) / 1000
    f, s, o = (np.asarray(geo[k]) for k in ("fdet_vector", "sdet_vector", "odet_vector"))
    # XDS: the foot of the normal from the sample is at (ORGX, ORGY) pixels, pixel (1,1) centred at 1
    pix0 = -(orgx - 0.5) * px * f - (orgy - 0.5) * px * s + close * o
    assert np.allclose(centres_from(pix0, f, s, px), kernel_centres(sim), rtol=0, atol=2e-6 * close)


def test_dials_origin_in_header_gives_the_kernels_pixels(tmp_path):
    sim, keys, geo = written("dials_default", tmp_path)
    x, y, z = (float(v) for v in keys["DIALS_ORIGIN"].split(","))
    pix0 = np.array([-z, y, x]) / 1000  # DIALS_ORIGIN = 1000 * (P0_z, P0_y, -P0_x)
    px = float(keys["PIXEL_SIZE"]) / 1000
    got = centres_from(pix0, geo["fdet_vector"], geo["sdet_vector"], px)
    assert np.allclose(got, kernel_centres(sim), rtol=0, atol=1e-7)


def test_custom_beam_centre_in_header_gives_the_kernels_pixels(tmp_path):
    sim, keys, geo = written("custom_vectors", tmp_path)
    # CUSTOM, beam pivot, no rotation: pix0 = distance * beam - Xbeam * f - Ybeam * s
    d = float(keys["DISTANCE"]) / 1000
    xb, yb = float(keys["BEAM_CENTER_X"]) / 1000, float(keys["BEAM_CENTER_Y"]) / 1000
    f, s, b = (np.asarray(geo[k]) for k in ("fdet_vector", "sdet_vector", "beam_vector"))
    pix0 = d * b - xb * f - yb * s
    px = float(keys["PIXEL_SIZE"]) / 1000
    assert np.allclose(centres_from(pix0, f, s, px), kernel_centres(sim), rtol=0, atol=1e-7)


def test_mosflm_beam_centre_is_where_the_direct_beam_lands(tmp_path):
    sim, keys, geo = written("hkl_partial_defaultF_Xbeam", tmp_path)
    px = float(keys["PIXEL_SIZE"]) / 1000
    # MOSFLM_CENTER_X is along slow, _Y along fast, measured from the first pixel's corner + px/2
    sbeam = float(keys["MOSFLM_CENTER_X"]) / 1000 + px / 2
    fbeam = float(keys["MOSFLM_CENTER_Y"]) / 1000 + px / 2
    spot = (
        np.asarray(geo["pix0_vector_m"])
        + fbeam * np.asarray(geo["fdet_vector"])
        + sbeam * np.asarray(geo["sdet_vector"])
    )
    beam = np.asarray(geo["beam_vector"])
    assert np.allclose(np.cross(spot, beam), 0, atol=1e-8)  # on the beam axis


def test_header_fits_512_bytes_for_ordinary_geometry():
    case = case_by_id("cubic_defaultF_N5")
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    head = smv_header(sim)
    assert len(head) == 512 and head.startswith(b"{\nHEADER_BYTES=512;")
    ref = (case.path / "int.img").read_bytes()[:512]
    assert head == ref  # byte-identical to the C program's header


def test_smv_frame_with_a_stray_trailing_byte_reads_its_pixels(tmp_path):
    """A header grown past 512 bytes can leave the file an odd length; the pixels still read."""
    from bragg_dask.io.smv import read_smv_frame

    sim = parse_nanobragg_args(
        ["-cell", "50", "50", "50", "90", "90", "90", "-default_F", "1", "-detpixels_f", "5", "-detpixels_s", "3"]
    ).simulation
    img = tmp_path / "odd.img"
    pixels = np.arange(15, dtype=np.uint16).reshape(3, 5)
    write_smv(str(img), sim, pixels)
    img.write_bytes(img.read_bytes() + b"\x07")
    _, read = read_smv_frame(str(img))
    assert np.array_equal(read, pixels)
