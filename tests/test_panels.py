"""The native description of a detector of panels (``--panels FILE.json``): read, made unit, checked; a
bad file is one line naming the file, the panel and the field."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from bragg_dask.errors import ConfigError
from bragg_dask.io.panels import Panel, read_panels

PIXEL = 172e-6


def _module(name: str, f0: int, s0: int, distance: float = 0.2) -> dict:
    """A 487 x 195 Pilatus module whose first pixel is ``f0, s0`` pixels along -z and -y (MOSFLM-like)."""
    return {"name": name, "fdet": [0, 0, 1], "sdet": [0, -1, 0],
            "pix0_m": [distance, 0.04 - s0 * PIXEL, -0.04 + f0 * PIXEL], "pixel_m": PIXEL,
            "n_fast": 487, "n_slow": 195}  # fmt: skip


DOC = {"panels": [_module("m0", 0, 0), _module("m1", 487 + 7, 0), _module("m2", 0, 195 + 17)]}


def _write(tmp_path, doc) -> str:
    path = tmp_path / "det.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_a_description_reads_into_unit_panels(tmp_path):
    doc = copy.deepcopy(DOC)
    doc["panels"][1]["fdet"] = [0, 0, 2.5]  # given vectors are made unit, as the C program does
    panels = read_panels(_write(tmp_path, doc))
    assert [p.name for p in panels] == ["m0", "m1", "m2"] and all(isinstance(p, Panel) for p in panels)
    assert panels[1].fdet == (0.0, 0.0, 1.0) and panels[0].odet == (1.0, 0.0, 0.0)
    assert panels[2].pix0_m == pytest.approx((0.2, 0.04 - 212 * PIXEL, -0.04))
    corners = panels[0].corners()
    assert np.allclose(corners[2] - corners[0], [0, -195 * PIXEL, 487 * PIXEL])


def _bad(**change):
    """DOC with panel m1's fields changed (None: removed)."""
    doc = copy.deepcopy(DOC)
    for k, v in change.items():
        if v is None:
            del doc["panels"][1][k]
        else:
            doc["panels"][1][k] = v
    return doc


BAD = {
    "missing": (_bad(sdet=None), ["panel 'm1'", "sdet", "missing"]),
    "unknown": (_bad(pixel=1e-4), ["panel 'm1'", "pixel", "unknown field"]),
    "zero": (_bad(fdet=[0, 0, 0]), ["panel 'm1'", "fdet", "zero vector"]),
    "parallel": (_bad(sdet=[0, 0, -3]), ["panel 'm1'", "sdet", "parallel"]),
    "skewed": (_bad(sdet=[0, -1, 0.01]), ["panel 'm1'", "sdet", "not perpendicular"]),
    "short vector": (_bad(pix0_m=[0.2, 0]), ["panel 'm1'", "pix0_m", "three numbers"]),
    "text number": (_bad(pixel_m="172e-6"), ["panel 'm1'", "pixel_m", "finite number"]),
    "infinite": (_bad(pix0_m=[0.2, float("inf"), 0]), ["panel 'm1'", "pix0_m", "finite number"]),
    "pixel size": (_bad(pixel_m=0), ["panel 'm1'", "pixel_m", "> 0"]),
    "fraction of pixels": (_bad(n_fast=487.5), ["panel 'm1'", "n_fast", "whole number"]),
    "no pixels": (_bad(n_slow=0), ["panel 'm1'", "n_slow", "whole number"]),
    "a boolean": (_bad(n_slow=True), ["panel 'm1'", "n_slow", "whole number"]),
    "empty name": (_bad(name=""), ["panel #1", "name", "non-empty"]),
    "same name": (_bad(name="m0"), ["panel 'm0'", "name", "second panel"]),
    "another shape": (_bad(n_fast=486), ["panel 'm1'", "486 x 195", "one shape"]),
    "overlap": (_bad(pix0_m=[0.2, 0.04, -0.04 + 400 * PIXEL]), ["panel 'm1'", "overlaps panel 'm0'"]),
    "through the sample": (_bad(pix0_m=[0.0, 0.04, 0.1]), ["panel 'm1'", "pix0_m", "passes through the sample"]),
    "not an object": ({"panels": [DOC["panels"][0], 7]}, ["panel #1", "not an object"]),
    "no panels": ({"panels": []}, ["panels", "at least one panel"]),
    "other keys": ({"panels": DOC["panels"], "beam": [1, 0, 0]}, ['one key, "panels"']),
    "not json": ('{"panels": [\n  {"name": "m0",,}\n]}', ["line 2", "not JSON"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_description_is_one_line_naming_file_panel_and_field(case, tmp_path):
    doc, needles = BAD[case]
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as err:
        read_panels(path)
    text = str(err.value)
    assert err.value.flag == "--panels" and "\n" not in text and path in text
    for needle in needles:
        assert needle in text, text


def test_panels_apart_or_at_angles_do_not_overlap(tmp_path):
    """A panel touching its neighbour edge to edge, one in a parallel plane behind it, and one tilted
    through its plane are all allowed."""
    doc = copy.deepcopy(DOC)
    doc["panels"][1]["pix0_m"] = [0.2, 0.04, -0.04 + 487 * PIXEL]  # edge to edge
    doc["panels"][2]["pix0_m"] = [0.25, 0.04, -0.04]  # behind m0, its plane parallel
    read_panels(_write(tmp_path, doc))
    tilt = 0.3
    doc["panels"][2].update(fdet=[np.sin(tilt), 0, np.cos(tilt)], pix0_m=[0.2, 0.04, -0.04])
    assert len(read_panels(_write(tmp_path, doc))) == 3


def test_an_unreadable_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        read_panels(str(tmp_path / "none.json"))
    assert "none.json: cannot read it" in str(err.value) and err.value.flag == "--panels"
