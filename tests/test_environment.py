"""Packaging: environment.yml installs exactly what pyproject.toml pins; README commands exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_dependency_is_pinned_and_torch_exactly():
    deps = _pyproject()["project"]["dependencies"] + _pyproject()["project"]["optional-dependencies"]["dev"]
    for d in deps:
        assert "==" in d, f"{d} is not pinned"
    assert "torch==2.13.0" in deps


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    python = next(d for d in conda if d.startswith("python"))
    assert re.fullmatch(r"python=3\.1[12]", python)
    project = _pyproject()["project"]
    pinned = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    listed = {p for p in pip if not p.startswith("-e")}
    assert listed == pinned, f"only in environment.yml: {listed - pinned}; only in pyproject: {pinned - listed}"
    assert any(p.startswith("-e") and ".[dev]" in p for p in pip), "environment.yml must install the project"


def test_readme_quick_start_has_install_book_and_test_commands():
    readme = (ROOT / "README.md").read_text()
    assert 'pip install -e ".[dev]"' in readme
    assert "python -m cft_helpers.book --params params/default.yaml" in readme
    assert "pytest" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "OMP_NUM_THREADS=1" in ci and "pytest" in ci
