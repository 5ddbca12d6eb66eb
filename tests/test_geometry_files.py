"""Geometry files of other programs read into native panels (``bragg_dask.io.geometry_files``): a CrystFEL
``.geom``, a DIALS ``.expt`` and NXmx files (hand-written, and a store's own export read back), each
mapped onto the C program's (MOSFLM) lab frame; every malformed file is one line naming the file, the
line, the panel and the field."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bragg_dask.errors import ConfigError
from bragg_dask.io.geometry_files import read_geometry
from bragg_dask.physics.constants import HC_EV_ANGSTROM

from .conftest import DATA, main_in

h5py = pytest.importorskip("h5py")

GEOM = DATA / "geometry" / "two_panels.geom"
EXPT = DATA / "geometry" / "hierarchy.expt"
DET = "/entry/instrument/detector"


def _vec(v, expected, atol=1e-15):
    np.testing.assert_allclose(v, expected, rtol=0, atol=atol)


def _line(text: str, start: str) -> int:
    """The number of the line of ``text`` that starts with ``start``."""
    return next(n for n, line in enumerate(text.splitlines(), start=1) if line.startswith(start))


# ---- CrystFEL -----------------------------------------------------------------------------------------


def test_crystfel_panels_in_the_c_frame():
    """CrystFEL (+z along the beam, y up) -> C: (X, Y, Z) -> (Z, Y, -X); corner / res, clen + coffset."""
    g = read_geometry(str(GEOM))
    assert g.source == "CrystFEL" and [p.name for p in g.panels] == ["p0", "p1"]
    p0, p1 = g.panels
    # fs = -x, ss = -y: MOSFLM's fast +z and slow -y; corner (10, 5) px of 0.1 mm, z = 0.1 + 0.001 m
    assert p0.fdet == (0.0, 0.0, 1.0) and p0.sdet == (0.0, -1.0, 0.0) and p0.odet == (1.0, 0.0, 0.0)
    _vec(p0.pix0_m, (0.101, 0.0005, -0.001))
    assert (p0.pixel_m, p0.n_fast, p0.n_slow) == (1e-4, 4, 3)
    # fs = 0.8y + 0.6z, ss = -x; corner (-20, 30) px, z = clen (the later default coffset = 0)
    _vec(p1.fdet, (0.6, 0.8, 0.0))
    _vec(p1.sdet, (0.0, 0.0, 1.0))
    _vec(p1.odet, (0.8, -0.6, 0.0))
    _vec(p1.pix0_m, (0.1, 0.003, 0.002))
    assert (p1.pixel_m, p1.n_fast, p1.n_slow) == (1e-4, 4, 3)
    assert g.beam_vector == (1.0, 0.0, 0.0)
    assert g.wavelength_m == (HC_EV_ANGSTROM / 9500.0) / 1.0e10


@pytest.mark.parametrize(
    "old, new, check",
    [
        ("clen = 0.1", "clen = 100 mm", lambda g: _vec(g.panels[0].pix0_m, (0.101, 0.0005, -0.001))),
        (
            "clen = 0.1",
            "clen = 0.1 m\ndetector_shift_x = 2 mm",
            lambda g: _vec(g.panels[0].pix0_m, (0.101, 5e-4, -3e-3)),
        ),
        ("photon_energy = 9500 eV", "photon_energy = 9.5 keV", lambda g: _wl(g, (HC_EV_ANGSTROM / 9500.0) / 1e10)),
        ("photon_energy = 9500 eV", "photon_energy = 9500", lambda g: _wl(g, (HC_EV_ANGSTROM / 9500.0) / 1e10)),
        ("photon_energy = 9500 eV", "wavelength = 1.5 A", lambda g: _wl(g, 1.5e-10)),
        ("photon_energy = 9500 eV", "wavelength = 1.5e-10 m", lambda g: _wl(g, 1.5e-10)),
        ("photon_energy = 9500 eV", "photon_energy = /LCLS/photon_energy_eV", lambda g: _wl(g, None)),
        ("photon_energy = 9500 eV", "", lambda g: _wl(g, None)),
        ("p0/fs = -x", "p0/fs = -1.0000x +0.0000y ; spaces, signs", lambda g: _vec(g.panels[0].fdet, (0, 0, 1))),
    ],
)
def test_crystfel_variants(tmp_path, old, new, check):
    text = GEOM.read_text()
    assert old in text
    path = tmp_path / "v.geom"
    path.write_text(text.replace(old, new))
    check(read_geometry(str(path)))


def _wl(g, expected):
    assert g.wavelength_m == expected


def test_crystfel_error_names_file_line_panel_and_field(tmp_path):
    text = GEOM.read_text().replace("p1/corner_x = -20", "p1/corner_x = minus20")
    path = tmp_path / "det.geom"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        read_geometry(str(path))
    line = _line(text, "p1/corner_x")
    assert str(exc.value) == f"--geometry: {path}: line {line}: panel 'p1': corner_x: not a number: 'minus20'"


# ---- DIALS --------------------------------------------------------------------------------------------


def test_dials_hierarchy_in_the_c_frame():
    """dxtbx composes the group's frame with each panel's; DIALS (x, y, z) -> C (-z, y, x), mm -> m."""
    g = read_geometry(str(EXPT))
    assert g.source == "DIALS" and [p.name for p in g.panels] == ["D0M0", "D0M1"]
    p0, p1 = g.panels
    # the group D0: fast (0, 1, 0), slow (-1, 0, 0), origin (10, -5, -150) mm; a panel's local (a, b, c)
    # is (-b, a, c) + origin; local fast (1, 0, 0) -> (0, 1, 0), slow (0, -1, 0) -> (1, 0, 0)
    for p in (p0, p1):
        _vec(p.fdet, (0.0, 1.0, 0.0))  # (0, 1, 0) -> (0, 1, 0)
        _vec(p.sdet, (0.0, 0.0, 1.0))  # (1, 0, 0) -> (0, 0, 1)
        assert (p.pixel_m, p.n_fast, p.n_slow) == (0.172 / 1000, 4, 3)
    _vec(p0.pix0_m, (0.150, -0.005, 0.010))  # (10, -5, -150) mm
    _vec(p1.pix0_m, (0.1495, -0.005, 0.012))  # local (0, -2, 0.5) -> (12, -5, -149.5) mm
    # the beam's direction (0, 0.6, 0.8) points to the source: C beam = map of (0, -0.6, -0.8)
    _vec(g.beam_vector, (0.8, -0.6, 0.0))
    assert g.wavelength_m == 0.9537 / 1.0e10


def test_dials_without_hierarchy_has_lab_frames(tmp_path):
    """Panels in the lab frame; names made file-safe and unique; no beam model: no beam, no wavelength."""
    doc = json.loads(EXPT.read_text())
    for key in ("experiment", "beam"):
        del doc[key]
    det = doc["detector"][0]
    del det["hierarchy"]
    det["panels"][0].update(origin=[-20.0, 10.0, -100.0], name="ARRAY D0/M0")
    det["panels"][1].update(origin=[-20.0, 5.0, -100.0], name="ARRAY D0/M0")
    path = tmp_path / "flat.expt"
    path.write_text(json.dumps(doc))
    g = read_geometry(str(path))
    assert [p.name for p in g.panels] == ["ARRAY_D0_M0", "ARRAY_D0_M0_1"]
    assert g.beam_vector is None and g.wavelength_m is None
    p0, p1 = g.panels
    _vec(p0.fdet, (0.0, 0.0, 1.0))  # a MOSFLM-like detector: DIALS fast +x -> C +z
    _vec(p0.sdet, (0.0, -1.0, 0.0))
    _vec(p0.pix0_m, (0.1, 0.010, -0.020))
    _vec(p1.pix0_m, (0.1, 0.005, -0.020))


# ---- NXmx ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("convention", ["mosflm", "xds"])
def test_nxmx_export_reads_back_as_the_stores_geometry(tmp_path, convention):
    """A store exported with ``bragg-dask export --nxmx`` reads back with the store's panel (MOSFLM: the
    store's own vectors; XDS: the same turned by the export's one rotation taking its beam onto +x)."""
    from bragg_dask import store as zstore
    from bragg_dask.io.nexus import mcstas_rotation

    sim = ["-cell", "50", "50", "50", "90", "90", "90", "-default_F", "10", "-N", "2", "-detpixels", "32"]
    sim += ["-detector_rotx", "3", "-detector_roty", "4", "-detector_rotz", "5", "-twotheta", "10"]
    sim += [f"-{convention}", "-nopgm", "-noprogress", "--dashboard-address", "none", "--workers", "1"]
    assert main_in(tmp_path, [*sim, "--zarr", "s.zarr"]) == 0
    assert main_in(tmp_path, ["export", "s.zarr", "--nxmx", "f.h5"]) == 0
    geo = zstore.store_metadata(str(tmp_path / "s.zarr"))["geometry"]
    g = read_geometry(str(tmp_path / "f.h5"))
    assert g.source == "NXmx" and len(g.panels) == 1
    (p,) = g.panels
    rot = mcstas_rotation(geo["beam_vector"])
    to_c = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]) @ rot  # store frame -> McStas -> C
    if convention == "mosflm":
        np.testing.assert_allclose(to_c, np.eye(3), atol=1e-15)
    for mine, key in ((p.fdet, "fdet_vector"), (p.sdet, "sdet_vector"), (p.pix0_m, "pix0_vector_m")):
        _vec(mine, to_c @ np.asarray(geo[key]), atol=1e-12)
    _vec(g.beam_vector, to_c @ np.asarray(geo["beam_vector"]), atol=1e-15)
    assert (p.pixel_m, p.n_fast, p.n_slow) == (geo["pixel_size_m"], 32, 32)
    assert g.wavelength_m == pytest.approx(geo["wavelength_m"], rel=1e-15)


def _axis(group, name, value, kind, vector, depends_on, units, offset=None, offset_units=None):
    d = group.create_dataset(name, data=np.asarray(value, dtype=np.float64))
    d.attrs["units"] = units
    d.attrs["transformation_type"] = kind
    d.attrs["vector"] = np.asarray(vector, dtype=np.float64)
    d.attrs["depends_on"] = depends_on
    if offset is not None:
        d.attrs["offset"] = np.asarray(offset, dtype=np.float64)
    if offset_units is not None:
        d.attrs["offset_units"] = offset_units
    return d


def _group(parent, name, nx_class):
    g = parent.create_group(name)
    g.attrs["NX_class"] = nx_class
    return g


def _write_nxmx(path, mutate=None):
    """Two 4 x 3 modules of 172 um pixels on a detector 200 mm along z, swung 20 deg about +y (a rotation
    the chain ends with); the beam tilted 0.5 deg about +x; wavelength 1.2 A (McStas frame)."""
    with h5py.File(path, "w") as fh:
        entry = _group(fh, "entry", "NXentry")
        entry["definition"] = "NXmx"
        inst = _group(entry, "instrument", "NXinstrument")
        beam = _group(inst, "beam", "NXbeam")
        beam["incident_wavelength"] = 1.2
        beam["incident_wavelength"].attrs["units"] = "angstrom"
        beam["depends_on"] = b"/entry/instrument/beam/transformations/tilt"
        _axis(_group(beam, "transformations", "NXtransformations"), "tilt", 0.5, "rotation", (1, 0, 0), ".", "deg")
        det = _group(inst, "detector", "NXdetector")
        tr = _group(det, "transformations", "NXtransformations")
        _axis(tr, "two_theta", 20.0, "rotation", (0, 1, 0), ".", "deg", offset=(0, 0, 0), offset_units="mm")
        _axis(tr, "det_z", 200.0, "translation", (0, 0, 1), "two_theta", "mm")  # a relative depends_on
        for name, origin, dy in (("module_b", [3, 0], -5.0), ("module_a", [0, 0], 5.0)):
            mod = _group(det, name, "NXdetector_module")
            mod["data_origin"] = np.array(origin, dtype=np.int32)
            mod["data_size"] = np.array([3, 4], dtype=np.int32)
            _axis(mod, "module_offset", 10.0, "translation", (1, 0, 0), f"{DET}/transformations/det_z", "mm",
                  offset=(0, dy, 0), offset_units="mm")  # fmt: skip
            _axis(mod, "fast_pixel_direction", 0.172, "translation", (-1, 0, 0), "module_offset", "mm")
            _axis(mod, "slow_pixel_direction", 172.0, "translation", (0, -1, 0), f"{mod.name}/module_offset", "um")
        if mutate is not None:
            mutate(fh)


def test_nxmx_modules_compose_their_chains(tmp_path):
    path = tmp_path / "two.nxs"
    _write_nxmx(path)
    g = read_geometry(str(path))
    assert g.source == "NXmx" and [p.name for p in g.panels] == [
        "a",
        "b",
    ]  # (our export's module_NAME: NAME)  # by data_origin
    c, s = math.cos(math.radians(20)), math.sin(math.radians(20))
    for p, dy in zip(g.panels, (0.005, -0.005)):
        # McStas: origin = Ry (0.01, dy, 0.2), fast = Ry (-1, 0, 0), slow = (0, -1, 0), Ry = [[c, 0, s],
        # [0, 1, 0], [-s, 0, c]]; C frame (X, Y, Z) -> (Z, Y, -X)
        _vec(p.pix0_m, (-0.01 * s + 0.2 * c, dy, -(0.01 * c + 0.2 * s)))
        _vec(p.fdet, (s, 0.0, c))
        _vec(p.sdet, (0.0, -1.0, 0.0))
        assert (p.pixel_m, p.n_fast, p.n_slow) == (0.172 / 1000, 4, 3)
        assert float(np.dot(p.pix0_m, p.odet)) == pytest.approx(0.2, abs=1e-15)  # the plane 200 mm away
    t = math.radians(0.5)
    _vec(g.beam_vector, (math.cos(t), -math.sin(t), 0.0))  # Rx (0, 0, 1) = (0, -sin, cos) -> (cos, -sin, 0)
    assert g.wavelength_m == 1.2 / 1.0e10


def test_nxmx_chains_as_the_nxmx_library_composes_them(tmp_path):
    """DIALS's own NXmx reader (the ``nxmx`` package) finds the same module origins and axes."""
    nxmx = pytest.importorskip("nxmx")
    path = tmp_path / "two.nxs"
    _write_nxmx(path)
    panels = {f"module_{p.name}": p for p in read_geometry(str(path)).panels}  # (module_NAME read as NAME)
    to_c = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # McStas -> C
    with h5py.File(path, "r") as fh:
        modules = nxmx.NXmx(fh).entries[0].instruments[0].detectors[0].modules
        assert sorted(m.path.rsplit("/", 1)[-1] for m in modules) == sorted(panels)
        for m in modules:
            p = panels[m.path.rsplit("/", 1)[-1]]
            for axis, mine in ((m.fast_pixel_direction, p.fdet), (m.slow_pixel_direction, p.sdet)):
                chain = nxmx.get_dependency_chain(axis.depends_on)
                whole = nxmx.get_cumulative_transformation(chain)[0]  # millimetres
                _vec(p.pix0_m, to_c @ whole[:3, 3] / 1000.0, atol=1e-15)
                _vec(mine, to_c @ whole[:3, :3] @ axis.vector, atol=1e-15)


# ---- malformed files ----------------------------------------------------------------------------------


def _geom(old: str, new: str, needles: list[str], at_old: bool = True) -> tuple[str, list[str]]:
    """The CrystFEL file with ``old`` replaced; ``at_old``: the error names ``old``'s line."""
    text = GEOM.read_text()
    assert old in text, old
    return text.replace(old, new), ([f"line {_line(text, old)}: "] if at_old else []) + needles


def _overlapping() -> str:
    """p1 in p0's plane (fs -x, ss -y, coffset 1 mm), its corner a pixel from p0's."""
    text = GEOM.read_text()
    for old, new in (("p1/fs = +0.8y +0.6z", "p1/fs = -x"), ("p1/ss = -x", "p1/ss = -y"),
                     ("coffset = 0.0", "coffset = 0.001"), ("p1/corner_x = -20", "p1/corner_x = 9"),
                     ("p1/corner_y = 30", "p1/corner_y = 4")):  # fmt: skip
        assert old in text
        text = text.replace(old, new)
    return text


P1 = f"line {_line(GEOM.read_text(), 'p1/')}: panel 'p1'"  # where p1 is first named
LAST_LINE = f"line {len(GEOM.read_text().splitlines()) + 1}: "
CRYSTFEL = {
    "corner not a number": _geom("p1/corner_x = -20", "p1/corner_x = 1.2.3", ["panel 'p1'", "corner_x", "number"]),
    "clen in the data": _geom("clen = 0.1", "clen = /LCLS/detector_1/EncoderValue", ["clen", "location"]),
    "not key = value": _geom("p0/min_fs = 0", "p0/min_fs 0", ["not 'key = value'"]),
    "bad direction": _geom("p0/fs = -x", "p0/fs = -q", ["panel 'p0'", "fs", "direction"]),
    "zero direction": _geom("p0/fs = -x", "p0/fs = 0x +0y", ["panel 'p0'", "fs", "zero vector"]),
    "not one pixel": _geom("p0/fs = -x", "p0/fs = -2x", ["panel 'p0'", "fs", "length 2"]),
    "no pixels": _geom("p0/max_ss = 2", "p0/max_ss = -1", ["panel 'p0'", "max_ss", "whole number"]),
    "max below min": _geom("p1/max_fs = 7", "p1/max_fs = 3", ["panel 'p1'", "max_fs", "below min_fs"]),
    "missing": _geom("p1/corner_y = 30", "", [P1, "corner_y", "missing"], at_old=False),
    "no panels": ("; nothing here\nclen = 0.1\n", ["line 2: ", "applies to no panel", "clen"]),
    "late default": (GEOM.read_text() + "res = 5000\n", [LAST_LINE, "res", "applies to no panel"]),
    "wavelength units": _geom("photon_energy = 9500 eV", "wavelength = 1.5", ["wavelength", "'N m | A'"]),
    "two wavelengths": _geom("clen = 0.1", "clen = 0.1\nwavelength = 1 A", ["line 7: ", "second wavelength"], False),
    "electrons": _geom("photon_energy = 9500 eV", "electron_voltage = 200 kV", ["X-rays"]),
    "facing away": _geom("p0/ss = -1.0000y", "p0/ss = +y", ["panel 'p0'", "ss:", "faces away"], at_old=False),
    "other pixel size": _geom("p1/no_index = 0", "p1/res = 5000", [P1, "one shape"], at_old=False),
    "overlap": (_overlapping(), [P1, "corner_x/corner_y/clen", "overlaps panel 'p0'"]),
    "empty": ("", ["no panels"]),
}


@pytest.mark.parametrize("case", sorted(CRYSTFEL))
def test_malformed_crystfel_is_one_line(tmp_path, case):
    text, needles = CRYSTFEL[case]
    path = tmp_path / "det.geom"
    path.write_text(text)
    _refused(path, needles)


def _expt(change) -> str:
    doc = json.loads(EXPT.read_text())
    change(doc)
    return json.dumps(doc)


def _panel1(**fields):
    def change(doc):
        doc["detector"][0]["panels"][1].update(fields)

    return change


DIALS = {
    "not json": ('{\n  "detector": [,]\n}', ["line 2", "not JSON"]),
    "no detector": ('{"beam": []}', ["not a DIALS experiment list"]),
    "native": ('{"panels": [{"name": "m0", "pix0_m": [0.1, 0, 0]}]}', ["--panels"]),
    "zero axis": (_expt(_panel1(fast_axis=[0, 0, 0])), ["panel 'D0M1'", "fast_axis", "zero vector"]),
    "text axis": (_expt(_panel1(origin=[0, "1", 0])), ["panel 'D0M1'", "origin", "3 finite numbers"]),
    "rectangular pixels": (_expt(_panel1(pixel_size=[0.172, 0.2])), ["panel 'D0M1'", "pixel_size", "square"]),
    "fraction of pixels": (_expt(_panel1(image_size=[4.5, 3])), ["panel 'D0M1'", "image_size", "whole numbers"]),
    "another shape": (_expt(_panel1(image_size=[5, 3])), ["panel 'D0M1'", "5 x 3", "one shape"]),
    "facing away": (_expt(_panel1(slow_axis=[0, 1, 0])), ["panel 'D0M1'", "slow_axis:", "faces away"]),
    "panel index": (
        _expt(lambda d: d["detector"][0]["hierarchy"]["children"][0]["children"][1].update(panel=5)),
        ["children[0].children[1].panel", "panel index 0..1"],
    ),
    "orphan panel": (
        _expt(lambda d: d["detector"][0]["hierarchy"]["children"][0]["children"].pop()),
        ["panel 'D0M1'", "in no group"],
    ),
    "wavelength": (_expt(lambda d: d["beam"][0].update(wavelength=-1)), ["beam.wavelength", "> 0"]),
    "experiment's detector": (_expt(lambda d: d["experiment"][0].update(detector=2)), ["experiment[0].detector"]),
}


@pytest.mark.parametrize("case", sorted(DIALS))
def test_malformed_dials_is_one_line(tmp_path, case):
    text, needles = DIALS[case]
    path = tmp_path / "bad.expt"
    path.write_text(text)
    _refused(path, needles)


def _set_attr(path, name, value):
    def mutate(fh):
        fh[path].attrs[name] = value

    return mutate


def _replace(path, value):
    def mutate(fh):
        attrs = dict(fh[path].attrs)
        del fh[path]
        fh[path] = value
        for k, v in attrs.items():
            fh[path].attrs[k] = v

    return mutate


def _delete(*paths):
    def mutate(fh):
        for path in paths:
            del fh[path]

    return mutate


def _offset_in_degrees(fh):
    axis = fh[f"{DET}/transformations/two_theta"]
    axis.attrs["offset"] = np.ones(3)
    del axis.attrs["offset_units"]  # then the axis's units, deg: not a length


def _no_type(fh):
    del fh[f"{MOD}/module_offset"].attrs["transformation_type"]


MOD = f"{DET}/module_a"
TR = f"{DET}/transformations"
NXMX = {
    "no module": (_delete(MOD, f"{DET}/module_b"), ["no NXdetector_module"]),
    "no fast axis": (_delete(f"{MOD}/fast_pixel_direction"), ["panel 'module_a'", "fast_pixel_direction", "missing"]),
    "units": (_set_attr(f"{TR}/det_z", "units", "furlong"), ["panel 'module_a'", "det_z", "'furlong'"]),
    "dangling": (_set_attr(f"{MOD}/module_offset", "depends_on", "/entry/nowhere"), ["/entry/nowhere", "not a field"]),
    "loop": (_set_attr(f"{TR}/two_theta", "depends_on", "det_z"), ["depends_on loops"]),
    "zero vector": (_set_attr(f"{MOD}/module_offset", "vector", np.zeros(3)), ["module_offset", "zero vector"]),
    "long vector": (_set_attr(f"{MOD}/module_offset", "vector", [2.0, 0, 0]), ["module_offset", "length 2"]),
    "no type": (_no_type, ["module_offset", "transformation_type"]),
    "rectangular": (_replace(f"{MOD}/slow_pixel_direction", 200.0), ["panel 'module_a'", "square"]),
    "moving": (_replace(f"{TR}/det_z", [200.0, 210.0]), ["det_z", "one finite value"]),
    "angle offset": (_offset_in_degrees, ["two_theta", "offset_units 'deg'"]),
    "overlap": (
        _set_attr(f"{DET}/module_b/module_offset", "offset", np.array([0.0, 5.0, 0.0])),
        ["panel 'b'", "overlaps panel 'a'"],
    ),
    "wavelength units": (
        _set_attr("/entry/instrument/beam/incident_wavelength", "units", "pc"),
        ["incident_wavelength"],
    ),
}


@pytest.mark.parametrize("case", sorted(NXMX))
def test_malformed_nxmx_is_one_line(tmp_path, case):
    mutate, needles = NXMX[case]
    path = tmp_path / "bad.h5"
    _write_nxmx(path, mutate)
    _refused(path, needles)


@pytest.mark.parametrize(
    "name, content, needles",
    [
        ("missing.geom", None, ["cannot read it"]),
        ("folder.geom", "folder", ["a folder"]),
        ("text.h5", b"clen = 0.1\n", ["not an HDF5 file"]),
        ("latin1.geom", "clen = 0.1 ; caf\xe9\n".encode("latin-1"), ["not UTF-8", "line 1"]),
        ("notes.txt", b"just some notes\n", ["not a geometry file"]),
    ],
)
def test_unreadable_files_are_one_line(tmp_path, name, content, needles):
    path = tmp_path / name
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    _refused(path, needles)


def _refused(path, needles):
    with pytest.raises(ConfigError) as exc:
        read_geometry(str(path), flag="--geometry")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"--geometry: {path}: "), msg
    for needle in needles:
        assert needle in msg, (needle, msg)
