"""The package's layout rules, checked from its source (see docs/architecture.md).

* no import cycle between the package's modules (imports inside functions count);
* ``bragg_dask/physics/`` imports nothing of the package outside itself but ``errors``;
* zarr is imported only in ``bragg_dask/store/``; dask and distributed only in
  ``bragg_dask/executors/``, the API (``api.py``) and the dashboard page (``bragg_dask/dashboard/``, a
  Dask extension);
* the store alone names its arrays;
* no function longer than 60 lines or with more than 8 parameters, no module longer than 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bragg_dask"
MAX_LINES, MAX_PARAMS, MAX_MODULE_LINES = 60, 8, 500


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (top level or inside a function), resolved to full names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for a in node.names:  # "from . import kernel" imports the module kernel
                found.add(f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target)
    return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _internal(name: str) -> set[str]:
    return {m for m in IMPORTS[name] if m in MODULES and m != name}


def _cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan).  Only the imports written in a
    module count: importing ``a.b`` also runs ``a/__init__``, which is not an edge here (the package
    face ``bragg_dask/__init__`` imports lazily, through ``importlib``)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in _internal(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in MODULES:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert _cycles() == []


def test_the_cycle_check_finds_a_cycle(monkeypatch):
    monkeypatch.setitem(
        IMPORTS, "bragg_dask.nanobragg.stats", IMPORTS["bragg_dask.nanobragg.stats"] | {"bragg_dask.store"}
    )
    monkeypatch.setitem(IMPORTS, "bragg_dask.store", IMPORTS["bragg_dask.store"] | {"bragg_dask.nanobragg.stats"})
    assert ["bragg_dask.nanobragg.stats", "bragg_dask.store"] in _cycles()


def test_physics_stands_alone():
    outside = {
        name: sorted(
            m
            for m in IMPORTS[name]
            if m.startswith("bragg_dask") and not m.startswith("bragg_dask.physics") and m != "bragg_dask.errors"
        )
        for name in MODULES
        if name.startswith("bragg_dask.physics")
    }
    assert {k: v for k, v in outside.items() if v} == {}


def _users(library: str) -> set[str]:
    return {name for name, mods in IMPORTS.items() if any(m == library or m.startswith(library + ".") for m in mods)}


def test_zarr_only_in_the_store():
    assert {m for m in _users("zarr") if m != "bragg_dask.store" and not m.startswith("bragg_dask.store.")} == set()
    assert any(m.startswith("bragg_dask.store.") for m in _users("zarr"))


@pytest.mark.parametrize("library", ["dask", "distributed"])
def test_dask_only_in_the_executors_the_api_and_the_dashboard(library):
    users = _users(library)
    assert all(
        u.startswith(("bragg_dask.executors.", "bragg_dask.dashboard")) or u == "bragg_dask.api" for u in users
    ), sorted(users)


def test_only_the_store_names_its_arrays():
    """No string literal outside the store equal to one of its array names (the image arrays are
    reached through the store's FLOAT/INT/NOISE)."""
    import bragg_dask.store as zstore

    names = {
        zstore.FLOAT,
        zstore.INT,
        zstore.NOISE,
        "tile_stats",
        "tiles_done",
        "phi0_deg",
        "orientation",
        *zstore.FRAME_STATS,
    } - {"rms", "mean"}
    found = []
    for name, path in MODULES.items():
        if name.startswith("bragg_dask.store"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert found == []


def _functions():
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
                n = len(params) + (a.vararg is not None) + (a.kwarg is not None)
                if params and params[0].arg in ("self", "cls"):
                    n -= 1
                yield f"{name}.{node.name}:{node.lineno}", node.end_lineno - node.lineno + 1, n


def test_functions_are_short():
    assert [(f, n) for f, n, _ in _functions() if n > MAX_LINES] == []


def test_functions_take_few_parameters():
    assert [(f, p) for f, _, p in _functions() if p > MAX_PARAMS] == []


def test_no_global_state_written_through_global_or_globals():
    """Module state lives in objects (a class's attributes, a holder), never rebound by ``global`` nor
    reached through ``globals()``."""
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Global):
                found.append((name, node.lineno, "global"))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "globals":
                found.append((name, node.lineno, "globals()"))
    assert found == []


def test_modules_are_short():
    assert [
        (name, n) for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ] == []


def test_the_checks_see_the_whole_package():
    assert {"bragg_dask.cli", "bragg_dask.physics.kernel", "bragg_dask.store", "bragg_dask.executors.dask"} <= set(
        MODULES
    )
    assert sum(1 for _ in _functions()) > 300


#: the package face and the few modules every part shares; everything else lives in a folder by concept
TOP_LEVEL_MAX = 9


def test_few_modules_at_the_top():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= TOP_LEVEL_MAX, top


def _touches_environment(path: Path) -> list[int]:
    """Lines reading or writing the process environment (``os.environ``, ``os.getenv``, ``os.putenv``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv", "unsetenv"):
            found.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [node.lineno for a in node.names if a.name in ("environ", "getenv", "putenv")]
    return found


def test_the_environment_is_read_only_at_the_edge():
    """Only the command line, the settings and the process set-up (``runtime``) read or write environment
    variables; physics, the detector model, the store and the engine take what they need as arguments."""
    edge = ("bragg_dask.cli", "bragg_dask.settings", "bragg_dask.runtime")
    found = {
        name: lines
        for name, path in MODULES.items()
        if not name.startswith(edge) and (lines := _touches_environment(path))
    }
    assert found == {}


def test_the_environment_check_finds_an_access(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom os import getenv\nx = os.environ.get('A')\n")
    assert _touches_environment(probe) == [2, 3]


def test_the_engine_imports_no_command_module():
    """The engine (executors, store, planning, physics, detector) never imports a subcommand: the
    commands are built on it, not the other way round."""
    engine = (
        "bragg_dask.executors",
        "bragg_dask.store",
        "bragg_dask.planning",
        "bragg_dask.physics",
        "bragg_dask.detector",
    )
    found = {
        name: sorted(m for m in IMPORTS[name] if m.startswith("bragg_dask.cli"))
        for name in MODULES
        if name.startswith(engine)
    }
    assert {k: v for k, v in found.items() if v} == {}


def test_no_private_attribute_is_written_from_outside_its_object():
    """No ``obj._name = ...`` on another object (a cached preparation, an executor): what a function
    needs is passed to it, and caches live with their owner."""
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for t in targets:
                if (
                    isinstance(t, ast.Attribute)
                    and t.attr.startswith("_")
                    and not t.attr.startswith("__")
                    and not (isinstance(t.value, ast.Name) and t.value.id in ("self", "cls"))
                ):
                    found.append(f"{name}:{node.lineno} {ast.unparse(t)}")
    assert found == []


def test_each_lattice_constant_is_spelled_in_one_module():
    """The lattice shapes' constants live in one table (``physics/lattice.py``) that the eager path, the
    Inductor path and the Triton kernel read (the C source is held to it by ``tests/test_native.py``)."""
    import re

    from bragg_dask.physics.lattice import SHAPE_CONSTANTS

    spelled = {
        name
        for name, path in MODULES.items()
        for v in SHAPE_CONSTANTS.values()
        if re.search(rf"(?<![\d.]){re.escape(repr(v))}(?!\d)", path.read_text())
    }
    assert spelled == {"bragg_dask.physics.lattice"}
