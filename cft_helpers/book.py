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

With ``runtime.workers`` above 1 (``auto``: one per CPU core), after data preparation the book
trains the arms and evaluates the models as parallel worker processes (:mod:`cft_helpers.schedule`;
its time is the ``scheduler`` entry of book_timing.json), and the notebooks then find them done.
The book holds ``<run_dir>/book.lock`` while it runs: a second book on the same run store stops at
once, naming the holder (:mod:`cft_helpers.lock`).

Which notebook computes what, and what the scheduler runs for it, is declared in
:mod:`cft_helpers.jobs`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from cft_helpers.executors import in_flight
from cft_helpers.jobs import DATA_PREP, FINDINGS
from cft_helpers.lock import RunLock, RunLocked
from cft_helpers.params import ParamsError, cpu_cores, for_seed, load_params, parse_overrides
from cft_helpers.progress import ENV, NOTEBOOK_ENV, BookProgress, format_seconds
from cft_helpers.files import atomic_write_json, read_json


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


BUSY_LOAD = 0.5  # load average per core above which the machine counts as busy at start


def warn_if_busy() -> None:
    """One line on stderr when other work already keeps the cores busy: times will be longer."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this system
        return
    cores = cpu_cores()
    if load > BUSY_LOAD * cores:
        print(f"warning: the machine is busy (load average {load:.1f} on {cores} cores) before the book "
              "starts; it will run slower than the times in the README", file=sys.stderr, flush=True)


def run_book(params: str, overrides: Sequence[str] | str | None = None, force: bool = False,
             only: Sequence[str] | None = None, progress: bool = True,
             seeds: Sequence[int] | None = None, plain: bool = False) -> dict[str, float]:
    """Run the book; returns wall seconds per notebook (of the parameter set's own seed). Raises
    BookError on the first failure.

    ``progress``: a line per running stage (a training's steps, an evaluation's requests, ...) with
    the time it has left, and per notebook the elapsed time and what is left of the book once it
    can be estimated; ``plain``: only a line per notebook. Either way, every line also goes to
    ``<run_dir>/book.log``.

    With several seeds (``seeds``, or ``seeds:`` in the params), the book runs once per extra
    seed first, into <run_dir>/seeds/seed-<s>/ (without the findings notebook), then for the
    parameter set's own seed, whose findings notebook decides the claims over all seeds."""
    # Overrides travel as one dict, to the notebooks too (papermill writes it as a Python
    # literal), so that a value holding ";" or "=" arrives whole.
    overrides = parse_overrides(list(overrides) if isinstance(overrides, (list, tuple)) else overrides)
    if seeds:
        overrides["seeds"] = list(seeds)
    p = load_params(params, overrides=overrides)  # fail on bad params before any notebook starts
    notebooks = list_notebooks(notebook_dir(p.root), only or p.notebooks)
    # One lock for the whole book, every seed's store included (they lie under run_dir/seeds/);
    # the papermill kernels and scheduler workers inherit its token.
    with RunLock(p.run_path):
        busy = in_flight(p.store)  # Slurm jobs are no children: they hold no lock
        if busy:
            raise BookError(f"Slurm jobs submitted on this run store still run or wait: "
                            f"{', '.join(f'{n} (job {i})' for n, i in busy.items())}; wait for them "
                            f"(python -m cft_helpers.schedule --params {params} --executor slurm --wait) or "
                            f"cancel them (scancel)")
        warn_if_busy()
        for seed in p.seed_list()[1:]:
            if progress:
                print(f"[book] seed {seed} -> {p.seed_overrides(seed)['run_dir']}", flush=True)
            _run_notebooks(for_seed(p, seed), [nb for nb in notebooks if nb.stem != FINDINGS],
                           {**overrides, **p.seed_overrides(seed)}, force, progress, plain)
        if progress and len(p.seed_list()) > 1:
            print(f"[book] seed {p.seed} -> {p.run_path}", flush=True)
        return _run_notebooks(p, notebooks, overrides, force, progress, plain)


class _BookLog:
    """``<run_dir>/book.log``: every line the book shows (and the stages' progress), with the time."""

    def __init__(self, path: Path, show: bool):
        self.path, self.show = path, show

    def __call__(self, text: str, show: bool | None = None) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
        if self.show if show is None else show:
            print(text, flush=True)


def _remaining_notebooks(previous: dict[str, float], left: Sequence[str]) -> float | None:
    """What the notebooks still to run took last time (book_timing.json of an earlier book on
    this store), or None when one of them has no earlier time."""
    if not left or any(stem not in previous for stem in left):
        return None
    return sum(previous[stem] for stem in left)


def _run_notebooks(p, notebooks: list[Path], overrides: dict, force: bool, progress: bool,
                   plain: bool = False) -> dict[str, float]:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    store = p.store
    store.save_params(p.resolved())
    out_dir = store.notebooks_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    log = _BookLog(store.book_log, show=progress)
    previous = read_json(store.book_timing) if store.book_timing.exists() else {}
    events = store.progress_file
    events.write_text("")  # the book holds the lock: nobody else writes here now
    display = BookProgress(events, log=lambda text: log(text, show=False), show=progress and not plain)
    scheduler_left: list = []  # the running scheduler's estimate, once it has one
    state = {"left": [nb.stem for nb in notebooks]}

    def estimate() -> str | None:
        sched = scheduler_left[0].seconds() if scheduler_left else None
        rest = _remaining_notebooks(previous, state["left"])
        if sched is not None and rest is not None:
            return f"book about {format_seconds(sched + rest)} left"
        if sched is not None:
            return f"jobs about {format_seconds(sched)} left"
        return f"book about {format_seconds(rest)} left (as last time)" if rest is not None else None

    display.estimate = estimate
    saved_env = {k: os.environ.get(k) for k in (ENV, NOTEBOOK_ENV)}
    os.environ[ENV] = str(events)  # the kernels and workers report their stages there
    display.start()
    timing: dict[str, float] = {}
    t_book = time.perf_counter()
    try:
        # Without force, the scheduler runs the stages of the notebooks in parallel first (after
        # data preparation); with force it would redo them and the notebooks again: they run alone.
        scheduled = force or p.runtime.workers == 1
        for i, nb in enumerate(notebooks, 1):
            if not scheduled and nb.stem != DATA_PREP:
                scheduled = True
                t0 = time.perf_counter()
                from cft_helpers.schedule import ScheduleError, schedule_book

                try:
                    ran = schedule_book(p, [x.stem for x in notebooks[i - 1:]], progress=progress and not plain,
                                        log=lambda text: log(text, show=progress and not plain),
                                        remaining=scheduler_left)
                except ScheduleError as exc:
                    raise BookError(f"the scheduler stopped: {exc}") from None
                scheduler_left.clear()
                if ran is not None:
                    timing["scheduler"] = round(time.perf_counter() - t0, 1)
                    atomic_write_json(store.book_timing, timing)
                    if plain:
                        log(f"[book] scheduler: {len(ran['ran'])} jobs in {timing['scheduler']:.0f}s")
            out = out_dir / nb.name
            left = estimate()
            log(f"[book {i}/{len(notebooks)}] {nb.stem} -> {out} "
                f"({format_seconds(time.perf_counter() - t_book)} elapsed" + (f", {left})" if left else ")"))
            os.environ[NOTEBOOK_ENV] = nb.stem[:2]
            t0 = time.perf_counter()
            try:
                papermill.execute_notebook(
                    str(nb), str(out), cwd=str(nb.parent), progress_bar=progress and not plain,
                    kernel_name="python3",
                    parameters={"params": p.source_path, "force": bool(force), "overrides": overrides or ""},
                )
            except PapermillExecutionError as exc:
                raise BookError(
                    f"notebook {nb.name} failed in cell {exc.cell_index} (execution count "
                    f"{exc.exec_count}): {exc.ename}: {exc.evalue}\nexecuted copy with the traceback: {out}"
                ) from None
            timing[nb.stem] = round(time.perf_counter() - t0, 1)
            state["left"] = state["left"][1:]
            atomic_write_json(store.book_timing, timing)
    finally:
        display.stop()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    total = sum(timing.values())
    log("[book] done: " + ", ".join(f"{k} {v:.0f}s" for k, v in timing.items()) + f"; total {total:.0f}s")
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
    ap.add_argument("--quiet", action="store_true", help="no progress output (book.log still has it)")
    ap.add_argument("--plain", action="store_true", help="one line per notebook, no live stage lines")
    ns = ap.parse_args(argv)
    try:
        run_book(ns.params, ns.overrides, ns.force, ns.only, progress=not ns.quiet, seeds=ns.seeds,
                 plain=ns.plain)
    except (BookError, ParamsError, RunLocked) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
