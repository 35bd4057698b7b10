"""Notebooks: paired with jupytext, stored without outputs, parameterised, and free of logic."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert [p.stem for p in NOTEBOOKS][:3] == ["01_data_prep", "02_phase1_training", "03_phase2_training"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_and_paired_with_its_py(nb):
    data = json.loads(nb.read_text())
    code = [c for c in data["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert data["metadata"]["kernelspec"]["name"] == "python3"
    py = nb.with_suffix(".py")
    assert py.exists()
    from_py = jupytext.read(py)
    sources = lambda n: [(c.cell_type, c.source.strip()) for c in n.cells]  # noqa: E731
    assert sources(from_py) == sources(jupytext.read(nb)), f"{nb.name} and {py.name} differ: run jupytext --sync"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_and_no_logic_defined_in_the_notebook(nb):
    data = jupytext.read(nb)
    params_cells = [c for c in data.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params_cells) == 1
    names = {t.id for node in ast.parse(params_cells[0].source).body for t in node.targets}
    assert {"params", "force", "overrides"} <= names
    for cell in data.cells:
        if cell.cell_type == "code":
            tree = ast.parse(cell.source)
            assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))], \
                f"{nb.name} defines a function or class: move it to cft_helpers"
    assert data.cells[0].cell_type == "markdown" and "**Question.**" in data.cells[0].source
