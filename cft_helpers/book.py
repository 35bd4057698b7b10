"""The book runner: execute the notebooks in order with papermill into the run store.

    python -m cft_helpers.book --params params/default.yaml        # or: cft-book --params ...
    python -m cft_helpers.book --params smoke --only 01_data_prep 02_phase1_training
    python -m cft_helpers.book --params params/default.yaml --set training.learning_rate=3e-4
    python -m cft_helpers.book --params params/default.yaml --seeds 0 1 2    # three replicates

Each notebook gets the parameters ``params`` (the params file), ``force`` and ``overrides``;
executed copies land in ``<run_dir>/notebooks/``. The run stops at the first failing notebook
and names it, the failing cell and the error. Stages already done for the same inputs are
skipped inside the notebooks, so rerunning the book after an interruption continues where it
stopped. Wall time per notebook goes to ``<run_dir>/book_timing.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from cft_helpers.params import ParamsError, load_params
from cft_helpers.runs import RunStore, atomic_write_json


class BookError(RuntimeError):
    """A notebook of the book failed; the message names the notebook, the cell and the error."""


def notebook_dir(root: Path | str | None = None) -> Path:
    """The notebooks/ folder of the project (next to the package in a checkout)."""
    candidates = [Path(root) / "notebooks"] if root else []
    candidates.append(Path(__file__).resolve().parents[1] / "notebooks")
    for c in candidates:
        if c.is_dir():
            return c
    raise BookError(f"no notebooks/ folder found (looked in {[str(c) for c in candidates]})")


def list_notebooks(folder: Path, only: Sequence[str] | None = None) -> list[Path]:
    """The book's notebooks in order (``NN_name.ipynb``), optionally only the named ones."""
    books = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return books
    by_stem = {p.stem: p for p in books}
    by_num = {p.stem[:2]: p for p in books}
    chosen = []
    for name in only:
        p = by_stem.get(name) or by_num.get(name)
        if p is None:
            raise BookError(f"unknown notebook {name!r}; valid: {sorted(by_stem)}")
        chosen.append(p)
    return sorted(set(chosen))


FINDINGS = "09_findings"  # reads every seed's run store: runs once, after all seeds


def _override_text(overrides: dict) -> str:
    return "; ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())


def run_book(params: str, overrides: Sequence[str] | str | None = None, force: bool = False,
             only: Sequence[str] | None = None, progress: bool = True,
             seeds: Sequence[int] | None = None) -> dict[str, float]:
    """Run the book; returns wall seconds per notebook (of the parameter set's own seed). Raises
    BookError on the first failure.

    With several seeds (``seeds``, or ``seeds:`` in the params), the book runs once per extra
    seed first, into <run_dir>/seeds/seed-<s>/ (without the findings notebook), then for the
    parameter set's own seed, whose findings notebook decides the claims over all seeds."""
    if isinstance(overrides, (list, tuple)):
        overrides = "; ".join(overrides)
    if seeds:
        overrides = "; ".join(x for x in (overrides, f"seeds={json.dumps(list(seeds))}") if x)
    p = load_params(params, overrides=overrides)  # fail on bad params before any notebook starts
    notebooks = list_notebooks(notebook_dir(p.root), only or p.notebooks)
    for seed in p.seed_list()[1:]:
        extra = _override_text(p.seed_overrides(seed))
        if progress:
            print(f"[book] seed {seed} -> {p.seed_overrides(seed)['run_dir']}", flush=True)
        _run_notebooks(p.for_seed(seed), [nb for nb in notebooks if nb.stem != FINDINGS],
                       "; ".join(x for x in (overrides, extra) if x), force, progress)
    if progress and len(p.seed_list()) > 1:
        print(f"[book] seed {p.seed} -> {p.run_path}", flush=True)
    return _run_notebooks(p, notebooks, overrides or "", force, progress)


def _run_notebooks(p, notebooks: list[Path], overrides: str, force: bool, progress: bool) -> dict[str, float]:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    store = RunStore(p.run_path)
    store.save_params(p.resolved())
    out_dir = store.root / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    for i, nb in enumerate(notebooks, 1):
        out = out_dir / nb.name
        if progress:
            print(f"[book {i}/{len(notebooks)}] {nb.stem} -> {out}", flush=True)
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(nb), str(out), cwd=str(nb.parent), progress_bar=progress, kernel_name="python3",
                parameters={"params": p.source_path, "force": bool(force), "overrides": overrides or ""},
            )
        except PapermillExecutionError as exc:
            raise BookError(
                f"notebook {nb.name} failed in cell {exc.cell_index} (execution count "
                f"{exc.exec_count}): {exc.ename}: {exc.evalue}\nexecuted copy with the traceback: {out}"
            ) from None
        timing[nb.stem] = round(time.perf_counter() - t0, 1)
        atomic_write_json(store.root / "book_timing.json", timing)
    if progress:
        total = sum(timing.values())
        print("[book] done: " + ", ".join(f"{k} {v:.0f}s" for k, v in timing.items())
              + f"; total {total:.0f}s", flush=True)
    return timing


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cft_helpers.book", description=__doc__.split("\n")[0])
    ap.add_argument("--params", required=True, help="params YAML file or preset name (default, smoke)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="override a parameter, e.g. training.learning_rate=3e-4 (repeatable)")
    ap.add_argument("--only", nargs="+", help="run only these notebooks (names or numbers)")
    ap.add_argument("--force", action="store_true", help="redo every stage even if done")
    ap.add_argument("--seeds", nargs="+", type=int,
                    help="replicate the study with these seeds (the params' seed first); notebook 09 decides "
                         "the claims over all of them")
    ap.add_argument("--quiet", action="store_true", help="no progress output")
    ns = ap.parse_args(argv)
    try:
        run_book(ns.params, ns.overrides, ns.force, ns.only, progress=not ns.quiet, seeds=ns.seeds)
    except (BookError, ParamsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
