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
    monkeypatch.setitem(IMPORTS, "bragg_dask.nanobragg.stats", IMPORTS["bragg_dask.nanobragg.stats"] | {"bragg_dask.store"})
    monkeypatch.setitem(IMPORTS, "bragg_dask.store", IMPORTS["bragg_dask.store"] | {"bragg_dask.nanobragg.stats"})
    assert ["bragg_dask.nanobragg.stats", "bragg_dask.store"] in _cycles()


def test_physics_stands_alone():
    outside = {
        name: sorted(m for m in IMPORTS[name]
                     if m.startswith("bragg_dask") and not m.startswith("bragg_dask.physics")
                     and m != "bragg_dask.errors")
        for name in MODULES if name.startswith("bragg_dask.physics")
    }
    assert {k: v for k, v in outside.items() if v} == {}


def _users(library: str) -> set[str]:
    return {name for name, mods in IMPORTS.items() if any(m == library or m.startswith(library + ".") for m in mods)}


def test_zarr_only_in_the_store():
    assert {m for m in _users("zarr") if m != "bragg_dask.store" and not m.startswith("bragg_dask.store.")} == set()
    assert "bragg_dask.store" in _users("zarr")


@pytest.mark.parametrize("library", ["dask", "distributed"])
def test_dask_only_in_the_executors_the_api_and_the_dashboard(library):
    users = _users(library)
    assert all(u.startswith(("bragg_dask.executors.", "bragg_dask.dashboard")) or u == "bragg_dask.api"
               for u in users), sorted(users)


def test_only_the_store_names_its_arrays():
    """No string literal outside the store equal to one of its array names (the image arrays are
    reached through the store's FLOAT/INT/NOISE)."""
    import bragg_dask.store as zstore

    names = {zstore.FLOAT, zstore.INT, zstore.NOISE, "tile_stats", "tiles_done", "phi0_deg", "orientation",
             *zstore.FRAME_STATS} - {"rms", "mean"}
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
    written through ``globals()`` (the package face's lazy loading aside: ``bragg_dask/__init__.py``)."""
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Global):
                found.append((name, node.lineno, "global"))
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "globals"
                    and name != "bragg_dask"):
                found.append((name, node.lineno, "globals()"))
    assert found == []


def test_modules_are_short():
    assert [(name, n) for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES] == []


def test_the_checks_see_the_whole_package():
    assert {"bragg_dask.cli", "bragg_dask.physics.kernel", "bragg_dask.store", "bragg_dask.executors.dask"} <= set(
        MODULES)
    assert sum(1 for _ in _functions()) > 300
