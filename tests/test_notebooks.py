"""The notebooks: every one is run top to bottom, its code cells in order in a fresh interpreter as a kernel
runs them, and what it leaves behind checked, none left out (tests/test_embedded_cluster.py: EXPECTED,
test_every_notebook_is_checked); here, that each is a notebook whose code parses."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_cells_parse(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and nb["nbformat"] == 4
    for i, cell in enumerate(code):
        ast.parse("".join(cell["source"]), f"{path.name}[code cell {i}]")
