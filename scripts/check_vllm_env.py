"""Which vLLM releases can share an environment with this project's torch and transformers pins?

    python scripts/check_vllm_env.py                 # the 20 newest vLLM releases
    python scripts/check_vllm_env.py --latest 60 --pyproject pyproject.toml

Reads the pins from pyproject.toml (``torch==...``, ``transformers==...``), asks the package
index (PyPI's JSON API: ``/pypi/vllm/json`` for the releases, ``/pypi/vllm/<version>/json`` for
each release's ``requires_dist``) and prints, per release, what it requires of torch and
transformers and whether the pinned versions satisfy it (markers evaluated for this machine,
extras left out). Exit status: 0 when at least one release fits, 1 when none does (then vLLM
belongs in an environment of its own: docs/CLUSTER.md, "vLLM in its own environment"), 2 when the index
cannot be reached or answers nonsense.

Needs the standard library and ``packaging`` only; never installs anything.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Sequence

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

PINNED = ("torch", "transformers")  # what vLLM pins that the project pins too
INDEX = "https://pypi.org/pypi"


class IndexUnreachable(RuntimeError):
    pass


def project_pins(pyproject: Path, names: Iterable[str] = PINNED) -> dict[str, Version]:
    """The exact versions pyproject.toml pins for ``names`` (``name==X`` in the dependencies)."""
    deps = tomllib.loads(Path(pyproject).read_text())["project"]["dependencies"]
    wanted = {canonicalize_name(n) for n in names}
    pins: dict[str, Version] = {}
    for line in deps:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name not in wanted:
            continue
        exact = [s for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version]
        if len(exact) != 1:
            raise ValueError(f"{pyproject}: {line!r} is not an exact pin (name==version)")
        pins[name] = Version(exact[0].version)
    missing = wanted - set(pins)
    if missing:
        raise ValueError(f"{pyproject}: no pin for {sorted(missing)}")
    return pins


def requirement_of(requires_dist: Sequence[str] | None, name: str,
                   environment: dict[str, str] | None = None) -> SpecifierSet | None:
    """What a release requires of ``name``: the intersection of every ``requires_dist`` line
    naming it whose marker holds here without extras (None: it does not require ``name``)."""
    env = {**default_environment(), **(environment or {}), "extra": ""}
    spec, found = SpecifierSet(), False
    for line in requires_dist or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) != canonicalize_name(name):
            continue
        if req.marker is not None and not req.marker.evaluate(env):
            continue  # another platform's line, or one of an extra
        spec &= req.specifier
        found = True
    return spec if found else None


def fits(requires_dist: Sequence[str] | None, pins: dict[str, Version],
         environment: dict[str, str] | None = None) -> tuple[bool, dict[str, str]]:
    """(whether every pin satisfies the release's requirement, requirement text per pinned name)."""
    ok, shown = True, {}
    for name, version in pins.items():
        spec = requirement_of(requires_dist, name, environment)
        shown[name] = "(any)" if spec is None else (str(spec) or "(any)")
        if spec is not None and not spec.contains(version, prereleases=True):
            ok = False
    return ok, shown


def _get_json(url: str, timeout: float, missing_ok: bool = False) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        if missing_ok and exc.code == 404:  # (a mirror may serve the project's page but not each release's)
            return None
        raise IndexUnreachable(f"the package index at {url} answered HTTP {exc.code}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise IndexUnreachable(f"cannot reach the package index at {url}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise IndexUnreachable(f"the package index at {url} answered something that is not JSON: {exc}") from exc


def releases(index: str, latest: int, timeout: float, include_pre: bool = False) -> tuple[list[str], dict]:
    """(the newest ``latest`` vLLM versions with a file not yanked, newest first; the project
    page's ``info``, which holds the newest release's ``requires_dist``)."""
    data = _get_json(f"{index.rstrip('/')}/vllm/json", timeout)
    if not isinstance(data, dict) or "releases" not in data:
        raise IndexUnreachable(f"the package index at {index} answered no release list for vllm")
    out = []
    for text, files in data.get("releases", {}).items():
        try:
            v = Version(text)
        except InvalidVersion:
            continue
        if (v.is_prerelease or v.is_devrelease) and not include_pre:
            continue
        if files and all(f.get("yanked") for f in files):
            continue
        out.append(v)
    return [str(v) for v in sorted(out, reverse=True)[:latest]], data.get("info") or {}


def requires_dist(index: str, version: str, timeout: float) -> tuple[bool, list[str] | None]:
    """(whether the index has this release's metadata, its ``requires_dist``)."""
    data = _get_json(f"{index.rstrip('/')}/vllm/{version}/json", timeout, missing_ok=True)
    return data is not None, (data or {}).get("info", {}).get("requires_dist")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pyproject", default=str(Path(__file__).resolve().parents[1] / "pyproject.toml"))
    ap.add_argument("--latest", type=int, default=20, help="how many of the newest releases to check")
    ap.add_argument("--pre", action="store_true", help="include pre-releases")
    ap.add_argument("--index", default=INDEX, help="PyPI JSON API root (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=20.0)
    ns = ap.parse_args(argv)
    pins = project_pins(Path(ns.pyproject))
    print("project pins: " + ", ".join(f"{n}=={v}" for n, v in pins.items()))
    try:
        versions, newest = releases(ns.index, ns.latest, ns.timeout, ns.pre)
        if not versions:
            raise IndexUnreachable(f"the package index at {ns.index} lists no vLLM release")
        fitting, unknown = [], []
        for version in versions:
            if version == newest.get("version"):
                known, reqs = True, newest.get("requires_dist")
            else:
                known, reqs = requires_dist(ns.index, version, ns.timeout)
            if not known:
                unknown.append(version)
                print(f"vllm {version:<12} ?     (the index serves no metadata of this release)")
                continue
            ok, shown = fits(reqs, pins)
            fitting += [version] if ok else []
            print(f"vllm {version:<12} {'fits ' if ok else 'no   '} " + "  ".join(f"{n} {s}" for n, s in shown.items()))
    except IndexUnreachable as exc:
        print(f"error: {exc}\nThis check needs the package index (network access to {ns.index}); run it "
              "where pip can reach PyPI.", file=sys.stderr)
        return 2
    if fitting:
        held = " ".join(f"'{n}=={v}'" for n, v in pins.items())
        print(f"fits the project's pins: vllm {', '.join(fitting)}; install it with the pins held: "
              f"pip install 'vllm=={fitting[0]}' {held}")
        return 0
    checked = len(versions) - len(unknown)
    print(f"none of the {checked} vLLM releases checked fits these pins"
          + (f" ({len(unknown)} could not be checked)" if unknown else "")
          + ": install vLLM in an environment of its own and set runtime.vllm_python "
            "(docs/CLUSTER.md, \"vLLM in its own environment\")")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
