"""Loading a parameter set: a file or a preset name, with overrides, validated whole."""

from __future__ import annotations

import copy
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cft_helpers.params.base import ParamsError
from cft_helpers.params.measures import FilePrompts
from cft_helpers.params.schema import Params
from cft_helpers.params.sections import (Arm, BuiltinDataset, GgufPackageModel, HubDataset, HubModel, LocalDataset,
                                         LocalModel, RandomInitModel)


def find_project_root(start: Path) -> Path:
    """Nearest ancestor holding pyproject.toml or .git; relative paths in params resolve there."""
    start = start.resolve()
    for d in [start, *start.parents]:
        if (d / "pyproject.toml").exists() or (d / ".git").exists():
            return d
    return start


def resolve_params_path(path: str | os.PathLike) -> Path:
    """Find a params file given as a path (from cwd or the project root) or a preset name."""
    p = Path(path)
    candidates = [p]
    if not p.is_absolute():
        root = find_project_root(Path.cwd())
        candidates += [root / p, root / "params" / p, root / "params" / f"{p}.yaml"]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    root = find_project_root(Path.cwd())
    presets = sorted(
        str(x.relative_to(root)) for x in (root / "params").rglob("*.yaml")
    ) if (root / "params").is_dir() else []
    raise ParamsError(
        f"params file {str(path)!r} not found (looked in {[str(c) for c in candidates]}); "
        f"available presets: {presets}"
    )


def parse_overrides(overrides: str | dict | list | None) -> dict[str, Any]:
    """``"a.b=1; c=[x, y]"`` or a dict -> {"a.b": 1, "c": ["x", "y"]}; values are YAML."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    items = overrides if isinstance(overrides, list) else [
        s for part in overrides.split(";") for s in [part.strip()] if s
    ]
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ParamsError(f"override {item!r} is not of the form key.path=value")
        key, value = item.split("=", 1)
        out[key.strip()] = _yaml_value(value)
    return out


# YAML 1.1 reads exponent notation without a dot ("1e-4") as a string; we read it as a number.
_EXPONENT_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _yaml_value(text: str) -> Any:
    """A YAML scalar, with '1e-4'-style numbers read as floats."""
    value = yaml.safe_load(text)
    return float(value) if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value) else value


def _apply_override(raw: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for i, k in enumerate(keys[:-1]):
        if not isinstance(node, dict) or k not in node or not isinstance(node[k], dict):
            if isinstance(node, dict) and k not in node:
                node[k] = {}  # e.g. training.* when the file relies on defaults
            else:
                raise ParamsError(f"override {dotted!r}: {'.'.join(keys[: i + 1])} is not a mapping")
        node = node[k]
    node[keys[-1]] = value


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid parameter set {source}:"]
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith("function-"))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            valid = _valid_keys_at(e["loc"][:-1])
            msg = f"unknown key {e['loc'][-1]!r}" + (f"; valid keys here: {valid}" if valid else "")
        elif e["type"] not in ("missing",) and "input" in e and not isinstance(e["input"], dict):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"  {loc or '<top level>'}: {msg}")
    return "\n".join(lines)


_TAGGED = {
    "models": {"hub": HubModel, "local": LocalModel, "gguf_package": GgufPackageModel,
               "random_init": RandomInitModel},
    "datasets": {"builtin": BuiltinDataset, "hub": HubDataset, "local": LocalDataset},
}


def _valid_keys_at(loc: tuple) -> list[str]:
    """Field names of the model found at ``loc`` in the Params tree (for 'unknown key' errors)."""
    rest = list(loc)
    model: Any = Params
    while rest:
        key = rest.pop(0)
        if model is Params and key in _TAGGED:  # models.<name>.<tag>.* / datasets.<name>.<tag>.*
            if len(rest) < 2:
                return []
            rest.pop(0)
            model = _TAGGED[key].get(rest.pop(0))
            if model is None:
                return []
            continue
        if model is Params and key == "arms":  # arms.<name>.*
            if not rest:
                return []
            rest.pop(0)
            model = Arm
            continue
        field = model.model_fields.get(key)
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return sorted(
        (f.alias or name) for name, f in model.model_fields.items() if name not in ("source_path", "root")
    )


def load_params(
    path: str | os.PathLike,
    overrides: str | dict | list | None = None,
) -> Params:
    """Load, override and validate a parameter set.

    ``path`` is a YAML file (relative to the working directory or the project root) or a
    preset name such as ``"smoke"``. ``overrides`` are dotted keys with YAML values, e.g.
    ``"training.learning_rate=1e-4; arms.p2.datasets=[multialpaca]"`` (papermill's
    ``-p overrides ...``). Relative paths inside the file are resolved against the project
    root (the nearest ancestor of the file with a pyproject.toml or .git).

    The environment variable ``CFT_PARAMS`` (a file or a preset name, found as ``path`` is)
    replaces ``path``: it is how JupyterLab, or any kernel started from that shell, runs the
    notebooks on another parameter set without editing their ``params`` cell, e.g.
    ``CFT_PARAMS=smoke jupyter lab``. It wins over every caller, a papermill ``-p params`` and
    ``--params`` of the book included, so that the book and its notebooks always agree; a
    ``UserWarning`` names both files whenever it replaces a different one, so an exported
    variable left over never goes unnoticed. ``overrides`` still apply on top of it.

    Raises ParamsError naming the key, the value and what is allowed.
    """
    chosen = os.environ.get("CFT_PARAMS", "").strip()
    if chosen:
        file = resolve_params_path(chosen)
        # for_seed() and the workers pass the file already chosen: say nothing then.
        if file != Path(path).resolve():
            warnings.warn(f"params: {file} from CFT_PARAMS={chosen!r}, in place of {str(path)!r}",
                          UserWarning, stacklevel=2)
    else:
        file = resolve_params_path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParamsError(f"{file}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    applied = parse_overrides(overrides)
    for key, value in applied.items():
        top = key.split(".")[0]
        if top not in Params.model_fields or top in ("source_path", "root", "overrides"):
            valid = sorted(k for k in Params.model_fields if k not in ("source_path", "root", "overrides"))
            raise ParamsError(f"override {key!r}: unknown key {top!r}; valid top-level keys: {valid}")
        _apply_override(raw, key, value)
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_format_validation_error(exc, str(file))) from None
    params.source_path = str(file)
    params.root = str(find_project_root(file.parent))
    params.overrides = applied
    _check_paths(params)
    _print_unset_note(params)
    return params


_NOTES_PRINTED: set[str] = set()


def _print_unset_note(params: Params) -> None:
    """Say once per process and parameter set which datasets have no path and which arms are
    left out for it (a notebook, the CLIs and every worker load the params; one note is enough)."""
    note = params.unset_note()
    if note and note not in _NOTES_PRINTED:
        _NOTES_PRINTED.add(note)
        print(note, file=sys.stderr)


def _check_paths(params: Params) -> None:
    """Local files named in the params must exist now, not an hour into a run."""
    for name, m in params.models.items():
        if isinstance(m, LocalModel) and not params.path(m.path).is_dir():
            raise ParamsError(f"models.{name}.path: folder {m.path!r} does not exist "
                              f"(resolved to {params.path(m.path)})")
    for name, d in params.datasets.items():
        if isinstance(d, LocalDataset) and not params.path(d.path).is_file():
            raise ParamsError(f"datasets.{name}.path: file {d.path!r} does not exist "
                              f"(resolved to {params.path(d.path)})")
        if isinstance(d, HubDataset) and d.path and d.path.startswith((".", "/", "~")) and not params.path(d.path).exists():
            raise ParamsError(f"datasets.{name}.path: local folder {d.path!r} does not exist")
    for folder in params.evaluation.include_paths:
        if not params.path(folder).is_dir():
            raise ParamsError(f"evaluation.include_paths: folder {folder!r} does not exist "
                              f"(resolved to {params.path(folder)})")
    if params.runtime.launch_config and not params.path(params.runtime.launch_config).is_file():
        raise ParamsError(f"runtime.launch_config: file {params.runtime.launch_config!r} does not exist "
                          f"(resolved to {params.path(params.runtime.launch_config)})")
    prompts = params.representations.prompts
    if isinstance(prompts, FilePrompts) and not params.path(prompts.path).is_file():
        raise ParamsError(f"representations.prompts.path: file {prompts.path!r} does not exist "
                          f"(resolved to {params.path(prompts.path)})")


def for_seed(params: Params, seed: int) -> Params:
    """The parameter set's replicate with ``seed`` (``params`` itself for its own seed): the
    same file and overrides, plus ``params.seed_overrides(seed)``."""
    if seed == params.seed:
        return params
    if params.source_path is None:
        raise ParamsError("for_seed needs a parameter set loaded from a file (load_params)")
    return load_params(params.source_path, overrides={**params.overrides, **params.seed_overrides(seed)})
