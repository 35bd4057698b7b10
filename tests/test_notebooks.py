"""Notebooks: paired with jupytext, stored without outputs, parameterised, and free of logic."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import jupytext
import pytest

from cft_helpers.params import load_params

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PARAMS_FILES = sorted([*ROOT.glob("params/*.yaml"), *ROOT.glob("params/paper/*.yaml")])

# What a notebook's code cell may not hold: it calls cft_helpers, the package computes
# (a loop, a comprehension or a function in a notebook is logic no test covers).
LOGIC = {ast.For: "a `for` loop", ast.AsyncFor: "a `for` loop", ast.While: "a `while` loop",
         ast.ListComp: "a comprehension", ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
         ast.GeneratorExp: "a comprehension", ast.Lambda: "a lambda", ast.FunctionDef: "a def",
         ast.AsyncFunctionDef: "a def", ast.ClassDef: "a class"}


def params_names() -> set[str]:
    """Every arm, strategy, benchmark and benchmark task the parameter files name (lower case):
    a notebook takes them from the params, never spells them, so that they change in one place.
    A phase is the package's vocabulary, not a name the params choose: the mixture arm shares its
    phase's name, and ``P.arms_in_phase("mixture")`` stays allowed."""
    names: set[str] = set()
    phases: set[str] = set()
    for path in PARAMS_FILES:
        p = load_params(path)
        names |= set(p.arms) | set(p.disabled_arms) | {arm.strategy for arm in p.arms.values()}
        names |= set(p.evaluation.benchmarks) | {b.task for b in p.evaluation.benchmarks.values() if b.task}
        phases |= {arm.phase for arm in p.arms.values()}
    return {n.lower() for n in names - phases}


def rule_violations(nb, names: set[str]) -> list[str]:
    """What breaks the notebook rules in a jupytext notebook: in any code cell, a loop, a
    comprehension, a lambda, a def or a class; outside the cell tagged ``parameters``, a string
    literal (f-string parts included) that is exactly a name in ``names`` (case-insensitive)."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        parameters = "parameters" in cell.metadata.get("tags", [])
        for node in ast.walk(ast.parse(cell.source)):
            if type(node) in LOGIC:
                out.append(f"cell {i}, line {node.lineno}: {LOGIC[type(node)]}: move it to cft_helpers")
            elif (not parameters and isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and node.value.strip().lower() in names):
                out.append(f"cell {i}, line {node.lineno}: the literal {node.value!r} names an arm or a "
                           "benchmark: take it from the params (or a -p parameter)")
    return out


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
    assert data.cells[0].cell_type == "markdown" and "**Question.**" in data.cells[0].source


@pytest.fixture(scope="module")
def names():
    return params_names()


def test_the_params_names_are_read_from_the_params_files(names):
    # arms, strategies, benchmarks and tasks of the default, smoke and paper presets
    assert {"p2_alpaca", "lf_h2", "d8_lora", "mlqa", "xlsum", "alpacaeval", "qa_lookup"} <= names


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_call_and_never_compute(nb, names):
    violations = rule_violations(jupytext.read(nb), names)
    assert not violations, f"{nb.name} breaks the notebook rules:\n  " + "\n  ".join(violations)


CLEAN = """# %% [markdown]
# **Question.** What does the arm of the parameters cell learn?

# %% tags=["parameters"]
params = "params/smoke.yaml"
arm = "p2_alpaca"
force = False
overrides = ""

# %%
table = arm_table(P, [arm], store)
print(f"{len(table)} arm: {arm}")
"""


def test_the_rules_accept_a_notebook_that_only_calls(names):
    # the parameters cell may name an arm; a list display, an f-string and a call are no logic
    assert rule_violations(jupytext.reads(CLEAN, fmt="py:percent"), names) == []


@pytest.mark.parametrize("planted, what", [
    ("for a in arms:\n    print(a)", "a `for` loop"),
    ("while arms:\n    arms.pop()", "a `while` loop"),
    ("losses = [loss(a) for a in arms]", "a comprehension"),
    ("by_arm = {a: loss(a) for a in arms}", "a comprehension"),
    ("total = sum(loss(a) for a in arms)", "a comprehension"),
    ("first = lambda a: a[0]", "a lambda"),
    ("def first(a):\n    return a[0]", "a def"),
    ("train_arms(P, [\"p2_alpaca\"])", "'p2_alpaca' names an arm"),
    ("language_table(results, \"MLQA\")", "'MLQA' names an arm or a benchmark"),
    ("print(f\"{x}\" f\"lf_h2\")", "'lf_h2' names an arm"),
], ids=["for", "while", "list-comprehension", "dict-comprehension", "generator", "lambda", "def", "arm",
        "benchmark", "f-string"])
def test_the_rules_catch_a_planted_violation(planted, what, names):
    violations = rule_violations(jupytext.reads(CLEAN + planted + "\n", fmt="py:percent"), names)
    assert len(violations) == 1 and what in violations[0], violations
