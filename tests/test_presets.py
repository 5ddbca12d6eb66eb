"""Detector presets (``--detector NAME``): the published module layouts, tiled consistently, placed in
the plane of nanoBragg's flat detector of the full frame."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from bragg_dask.errors import ConfigError
from bragg_dask.io.panels import _Where, panels_of
from bragg_dask.io.presets import PRESETS, Preset, preset, preset_doc, preset_list, preset_panels
from bragg_dask.nanobragg.args import parse_nanobragg_args

# name: (columns, rows, module n_fast, n_slow, pixel um, gap fast, gap slow, frame n_fast, n_slow), as
# published (dxtbx FormatPilatusHelpers: module sizes, gaps and frames; Jungfraujoch: the JF4M)
PUBLISHED = {
    "pilatus6m": (5, 12, 487, 195, 172, 7, 17, 2463, 2527),
    "pilatus2m": (3, 8, 487, 195, 172, 7, 17, 1475, 1679),
    "eiger2-16m": (4, 8, 1028, 512, 75, 12, 38, 4148, 4362),
    "eiger2-9m": (3, 6, 1028, 512, 75, 12, 38, 3108, 3262),
    "eiger2-4m": (2, 4, 1028, 512, 75, 12, 38, 2068, 2162),
    "eiger2-1m": (1, 2, 1028, 512, 75, 12, 38, 1028, 1062),
    "eiger-16m": (4, 8, 1030, 514, 75, 10, 37, 4150, 4371),
    "eiger-4m": (2, 4, 1030, 514, 75, 10, 37, 2070, 2167),
    "jungfrau4m": (2, 4, 1030, 514, 75, 8, 36, 2068, 2164),
}


def _geometry(p: Preset, distance_mm: float = 200.0):
    """nanoBragg's flat detector of ``p``'s full frame, MOSFLM convention (the default)."""
    args = ["-cell", "50", "50", "50", "90", "90", "90", "-default_F", "1"]
    args += ["-detpixels_x", str(p.n_fast_total), "-detpixels_y", str(p.n_slow_total)]
    args += ["-pixel", f"{p.pixel_m * 1e3:g}", "-distance", f"{distance_mm:g}"]
    return parse_nanobragg_args(args, cwd=".").simulation.detector.geometry


def test_the_required_presets_exist():
    assert {"pilatus6m", "eiger2-16m", "eiger2-4m", "jungfrau4m"} <= set(PRESETS)
    assert set(PRESETS) == set(PUBLISHED)
    assert all(name == p.name and name == name.lower() for name, p in PRESETS.items())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_counts_sizes_and_frames_are_the_published_ones(name):
    cols, rows, nf, ns, px_um, _, _, frame_f, frame_s = PUBLISHED[name]
    p = PRESETS[name]
    assert (p.n_modules, p.grid) == (cols * rows, (cols, rows))
    assert (p.n_fast, p.n_slow) == (nf, ns)
    assert p.pixel_m == pytest.approx(px_um * 1e-6, rel=1e-12)
    assert (p.n_fast_total, p.n_slow_total) == (frame_f, frame_s)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_the_modules_tile_the_frame_with_the_published_gaps(name):
    cols, rows, nf, ns, _, gap_f, gap_s, frame_f, frame_s = PUBLISHED[name]
    p = PRESETS[name]
    # row-major: slow row by slow row, fast column by fast column, each gap as published
    expected = [(c * (nf + gap_f), r * (ns + gap_s)) for r in range(rows) for c in range(cols)]
    assert list(p.offsets) == expected
    assert p.offsets[0] == (0, 0) and p.offsets[-1] == (frame_f - nf, frame_s - ns)
    covered = np.zeros((frame_s, frame_f), dtype=np.int8)
    for fo, so in p.offsets:
        assert 0 <= fo and fo + nf <= frame_f and 0 <= so and so + ns <= frame_s
        covered[so : so + ns, fo : fo + nf] += 1
    assert covered.max() == 1  # no pixel in two modules
    assert int(covered.sum()) == p.n_modules * nf * ns
    for c in range(1, cols):  # the gap columns belong to no module, the whole frame down
        start = c * (nf + gap_f) - gap_f
        assert not covered[:, start : start + gap_f].any() and covered[:, start - 1].any()
    for r in range(1, rows):
        start = r * (ns + gap_s) - gap_s
        assert not covered[start : start + gap_s, :].any() and covered[start - 1, :].any()
    gaps = frame_f * frame_s - p.n_modules * nf * ns
    assert gaps == frame_s * gap_f * (cols - 1) + frame_f * gap_s * (rows - 1) - gap_f * gap_s * (cols - 1) * (rows - 1)


def test_module_names_count_rows_and_columns():
    p = PRESETS["pilatus6m"]
    names = p.module_names()
    assert names[:6] == ("m0000", "m0001", "m0002", "m0003", "m0004", "m0100") and names[-1] == "m1104"
    assert len(set(names)) == p.n_modules
    assert PRESETS["jungfrau4m"].module_names() == tuple(f"m{r:02d}{c:02d}" for r in range(4) for c in range(2))


@pytest.mark.parametrize("name", ["pilatus6m", "eiger2-16m", "eiger2-4m", "jungfrau4m"])
def test_preset_panels_place_the_modules_where_the_full_frame_has_them(name):
    p = PRESETS[name]
    g = _geometry(p)
    assert g.fdet == (0.0, 0.0, 1.0) and g.sdet == (0.0, -1.0, 0.0)  # MOSFLM
    panels = preset_panels(p, g)
    assert len(panels) == p.n_modules and [q.name for q in panels] == list(p.module_names())
    assert all((q.n_fast, q.n_slow, q.pixel_m) == (p.n_fast, p.n_slow, p.pixel_m) for q in panels)
    assert all(q.fdet == g.fdet and q.sdet == g.sdet for q in panels)
    assert panels[0].pix0_m == pytest.approx(g.pix0_m, abs=1e-15)
    fo, so = p.offsets[-1]
    px = p.pixel_m
    x0, y0, z0 = g.pix0_m
    # MOSFLM: fast along +z, slow along -y; the last module's first corner fo, so pixels on
    assert panels[-1].pix0_m == pytest.approx((x0, y0 - so * px, z0 + fo * px), abs=1e-12)
    # every module pixel's corner is the same full-frame pixel's corner
    f, s, p0 = (np.array(v) for v in (g.fdet, g.sdet, g.pix0_m))
    for q, (fo, so) in zip(panels, p.offsets):
        for i, j in ((0, 0), (p.n_fast - 1, 0), (0, p.n_slow - 1), (p.n_fast - 1, p.n_slow - 1)):
            here = np.array(q.pix0_m) + i * px * np.array(q.fdet) + j * px * np.array(q.sdet)
            assert np.allclose(here, p0 + (fo + i) * px * f + (so + j) * px * s, rtol=0, atol=1e-12)


def test_the_native_checks_accept_every_preset():
    for p in PRESETS.values():
        g = _geometry(p)
        panels = panels_of(preset_doc(p, g), _Where(p.name, "--detector"))
        assert len(panels) == p.n_modules


def test_the_native_checks_see_a_moved_module_overlap():
    p = PRESETS["eiger2-4m"]
    doc = preset_doc(p, _geometry(p))
    doc["panels"][1]["pix0_m"] = list(doc["panels"][0]["pix0_m"])  # m0001 onto m0000
    doc["panels"][1]["pix0_m"][2] += 100 * p.pixel_m
    with pytest.raises(ConfigError, match="overlaps panel 'm0000'"):
        panels_of(doc, _Where("x", "--detector"))


def test_a_plane_through_the_sample_is_a_config_error():
    p = PRESETS["eiger2-4m"]
    plane = SimpleNamespace(fdet=(0.0, 0.0, 1.0), sdet=(0.0, -1.0, 0.0), pix0_m=(0.0, 0.08, -0.08))
    with pytest.raises(ConfigError) as err:
        preset_panels(p, plane)
    assert err.value.flag == "--detector" and "passes through the sample" in str(err.value)


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("pilatus6m", "pilatus6m"),
        ("Pilatus6M", "pilatus6m"),
        ("PILATUS_6M", "pilatus6m"),
        ("pilatus3-6m", "pilatus6m"),
        ("EIGER2-16M", "eiger2-16m"),
        ("eiger2 16m", "eiger2-16m"),
        ("Eiger2_X_4M", "eiger2-4m"),
        ("jungfrau4m", "jungfrau4m"),
        ("JF4M", "jungfrau4m"),
        ("Jungfrau-4M", "jungfrau4m"),
        ("eiger16m", "eiger-16m"),
    ],
)
def test_names_and_aliases_in_any_case(given, name):
    assert preset(given) is PRESETS[name]


def test_an_unknown_preset_is_a_config_error_listing_the_known_ones():
    with pytest.raises(ConfigError) as err:
        preset("pilatus7m")
    assert err.value.flag == "--detector"
    text = str(err.value)
    assert text.startswith("--detector: unknown detector 'pilatus7m'")
    assert all(name in text for name in PRESETS) and "--detector list" in text
    with pytest.raises(ConfigError) as err:
        preset("", flag="-preset")
    assert err.value.flag == "-preset"


def test_preset_list_has_one_line_per_preset():
    lines = preset_list().splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    by_name = {line.split()[0]: line for line in lines}
    assert "60 modules (5 x 12) of 487 x 195 pixels of 172 um, frame 2463 x 2527 (gaps 7 x 17" in by_name["pilatus6m"]
    assert "32 modules (4 x 8) of 1028 x 512 pixels of 75 um, frame 4148 x 4362 (gaps 12 x 38" in by_name["eiger2-16m"]
    assert "8 modules (2 x 4) of 1028 x 512 pixels of 75 um, frame 2068 x 2162" in by_name["eiger2-4m"]
    assert "8 modules (2 x 4) of 1030 x 514 pixels of 75 um, frame 2068 x 2164 (gaps 8 x 36" in by_name["jungfrau4m"]
    assert "(gaps - x 38" in by_name["eiger2-1m"]  # one column: no fast gap


def test_an_inconsistent_layout_is_refused():
    p = PRESETS["eiger2-4m"]
    bad = {
        "overlap": ((0, 0), (1000, 0)),
        "outside": ((0, 0), (1040, 1700)),
        "not from the first pixel": ((1, 0), (1040, 0)),
        "short of the far edge": ((0, 0), (1030, 1650)),
        "none": (),
    }
    for offsets in bad.values():
        with pytest.raises(ValueError, match="preset eiger2-4m"):
            dataclasses.replace(p, offsets=offsets)
