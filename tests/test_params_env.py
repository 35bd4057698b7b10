"""CFT_PARAMS: the environment picks the parameter set of every load_params call (JupyterLab
runs the notebooks on another preset without editing their parameters cell), loudly."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from cft_helpers.params import ParamsError, for_seed, load_params

ROOT = Path(__file__).resolve().parents[1]


def _smoke_copy(tmp_path: Path) -> Path:
    raw = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    raw["name"] = "from-env"
    raw["run_dir"] = str(tmp_path / "run")
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


def test_cft_params_replaces_the_notebook_default_and_says_so(tmp_path, monkeypatch):
    env_file = _smoke_copy(tmp_path)
    monkeypatch.setenv("CFT_PARAMS", str(env_file))
    with pytest.warns(UserWarning, match="CFT_PARAMS") as caught:
        p = load_params("params/default.yaml")   # what every notebook's parameters cell says
    assert (p.name, p.source_path, p.run_dir) == ("from-env", str(env_file.resolve()), str(tmp_path / "run"))
    message = str(caught[0].message)
    assert str(env_file.resolve()) in message and "params/default.yaml" in message


def test_overrides_apply_on_top_of_the_file_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CFT_PARAMS", str(_smoke_copy(tmp_path)))
    with pytest.warns(UserWarning):
        p = load_params("params/default.yaml", overrides="training.learning_rate=1e-4")
    assert p.name == "from-env" and p.training.learning_rate == 1e-4
    assert p.overrides == {"training.learning_rate": 1e-4}


def test_a_preset_name_works_and_unset_or_empty_changes_nothing(monkeypatch):
    monkeypatch.setenv("CFT_PARAMS", "smoke")
    with pytest.warns(UserWarning):
        assert load_params("default").name == "smoke"
    for value in (None, "", "  "):
        if value is None:
            monkeypatch.delenv("CFT_PARAMS")
        else:
            monkeypatch.setenv("CFT_PARAMS", value)
        with warnings.catch_warnings():
            warnings.simplefilter("error")   # no note when nothing is replaced
            assert load_params("default").name == load_params(ROOT / "params" / "default.yaml").name != "smoke"


def test_the_same_file_and_its_seed_replicates_load_silently(tmp_path, monkeypatch):
    """for_seed() and the book's workers reload the chosen file by its path: no warning there,
    and the seed's overrides still reach it."""
    env_file = _smoke_copy(tmp_path)
    monkeypatch.setenv("CFT_PARAMS", str(env_file))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = load_params(env_file)
        replicate = for_seed(p, p.seed + 1)
    assert replicate.name == "from-env" and replicate.seed == p.seed + 1
    assert Path(replicate.run_dir) == p.run_path / "seeds" / f"seed-{p.seed + 1}"


def test_a_missing_file_in_the_environment_is_an_error_naming_it(monkeypatch):
    monkeypatch.setenv("CFT_PARAMS", "no_such_preset")
    with pytest.raises(ParamsError, match="no_such_preset"):
        load_params("params/default.yaml")   # never silently falls back to the argument
