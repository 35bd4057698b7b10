"""The package's structure: no import cycles (imports inside functions counted), no module over
700 lines, and the run store reached through the parameters (docs/ENGINEERING.md, "Where the code
is")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cft_helpers"
MAX_LINES = 700
TEMPLATES = {"cft_helpers.data.lexicon"}  # word lists and sentence templates, not logic


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Lines of ``if TYPE_CHECKING:`` blocks: imports there never run."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            lines |= {n.lineno for sub in node.body for n in ast.walk(sub) if hasattr(n, "lineno")}
    return lines


def imported_modules(path: Path, modules: set[str], package: Path = PACKAGE) -> set[str]:
    """The package's modules that ``path`` imports, at any depth of its code."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path, package)
    here = me if path.name == "__init__.py" else me.rpartition(".")[0]
    skip = _type_checking_only(tree)
    out: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `from pkg import name`: the module, else pkg
                name = name.rpartition(".")[0]
            if name and name != me and not me.startswith(name + "."):  # a submodule's own package
                out.add(name)
    return out


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files = [p for p in package.rglob("*.py") if "__pycache__" not in p.parts]
    modules = {module_name(p, package) for p in files}
    return {module_name(p, package): imported_modules(p, modules, package) for p in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycles_are_found_in_a_constructed_package(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg import a\n")  # a package importing its modules: no cycle
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.sub.c import g\n")  # inside a function: counted
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from ..a import x\n")  # relative, two levels up
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    (pkg / "e.py").write_text("import pkg.d\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub.c"] == {"pkg.a"} and graph["pkg.d"] == set() and graph["pkg.e"] == {"pkg.d"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    (pkg / "b.py").write_text("import os\n")
    assert cycles(import_graph(pkg)) == []


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40 and "cft_helpers.jobs" in graph["cft_helpers.schedule"]
    found = cycles(graph)
    assert not found, "import cycles (each a set of modules that import each other):\n" + "\n".join(
        f"  {' -> '.join(c)}: " + "; ".join(f"{m} imports {sorted(graph[m] & set(c))}" for m in c) for c in found)


def test_no_module_is_over_700_lines():
    sizes = {module_name(p): sum(1 for _ in p.open(encoding="utf-8")) for p in PACKAGE.rglob("*.py")
             if "__pycache__" not in p.parts}
    over = {m: n for m, n in sizes.items() if n > MAX_LINES and m not in TEMPLATES}
    assert not over, f"modules over {MAX_LINES} lines (split them by what they do): {over}"


def params_and_store(package: Path = PACKAGE) -> list[str]:
    """Functions whose parameters include both the parameter set (first, ``params`` or ``p``) and a
    ``store``: the store is ``params.store``, so a second one could only name another run."""
    found = []
    for path in sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]]
                if names and names[0] in ("params", "p") and "store" in names:
                    found.append(f"{module_name(path, package)}.{node.name}")
    return found


def test_a_function_given_the_parameters_takes_no_store(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f(params, arm, store=None):\n    pass\n\n"
                              "def g(params, *, store):\n    pass\n\n"
                              "def h(store, params):\n    pass\n\n"
                              "def k(params, arm):\n    store = params.store\n")
    assert params_and_store(pkg) == ["pkg.a.f", "pkg.a.g"]
    found = params_and_store()
    assert not found, ("these take the parameters and a run store; read the store as params.store "
                       f"(docs/ENGINEERING.md, \"Where the code is\"): {found}")
