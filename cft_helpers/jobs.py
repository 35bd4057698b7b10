"""The book's job graph, declared once: which notebook trains which arms, evaluates which models
and reads which activations and held-out losses.

A *job* is one cached stage of the run store that a notebook would otherwise compute in line:

- ``train:<arm>``: train an arm (notebooks 02-04); it needs the arm it starts from, whose final
  checkpoint it continues (that model also generates a GR arm's replay and is what LF_H2 and
  Spectrum rank layers of);
- ``eval:<model>``: the evaluation suite on a model or arm (notebooks 04 and 06);
- ``act:<model>``: notebook 07's activations of a model;
- ``heldout:<model>``: the held-out response losses that notebooks 03-05 tabulate.

Anything of an arm needs that arm's training. Every executor reads this graph, and only this
one: the notebooks, run one by one, compute each stage where they reach it; the book's local
workers (:mod:`cft_helpers.schedule`) run the jobs of the notebooks it is about to run first;
submitit (:mod:`cft_helpers.executors`) submits them to Slurm, or to local processes, with their
dependencies. Messages about something missing name the notebook that makes it through
:func:`training_notebook` and :func:`notebook_of`.

This module imports only the params, so that every module may name a notebook.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Sequence

from cft_helpers import mitigation
from cft_helpers.params import Params

DATA_PREP = "01_data_prep"             # every job reads the prepared data: it runs before them
PHASE1_NOTEBOOK = "02_phase1_training"
PHASE2_NOTEBOOK = "03_phase2_training"
MITIGATION_NOTEBOOK = "04_mitigation"  # trains what its tables compare, with their upstream
SIMILARITY_NOTEBOOK = "05_similarity"
EVALUATION_NOTEBOOK = "06_evaluation"
REPRESENTATIONS_NOTEBOOK = "07_representations"
FINDINGS = "09_findings"               # reads every seed's run store: runs once, after all seeds

# Which notebook trains the arms of each phase.
TRAINING_NOTEBOOKS = {
    PHASE1_NOTEBOOK: ("phase1",),
    PHASE2_NOTEBOOK: ("phase2", "mixture", "reverse1", "reverse2"),
    MITIGATION_NOTEBOOK: ("mitigation",),
}
# The phases of notebook 03's held-out table.
TABLE_PHASES = ("phase1", "phase2", "mixture", "reverse1", "reverse2")
KINDS = ("train", "eval", "act", "heldout")


@dataclasses.dataclass(frozen=True)
class Job:
    name: str                      # "train:p1_alpaca", "eval:base"
    kind: str                      # "train", "eval", "act" or "heldout"
    target: str                    # the arm or model
    needs: tuple[str, ...] = ()    # jobs that must be done first (some may lie outside the plan)
    group: str | None = None       # jobs of one group never run at the same time

    @property
    def log_name(self) -> str:
        return f"{self.kind}-{self.target}.log"


def parse_job(name: str) -> tuple[str, str]:
    """(kind, target) of a job name; ValueError for a name that is none."""
    kind, _, target = name.partition(":")
    if kind not in KINDS or not target:
        raise ValueError(f"unknown job {name!r}: train:<arm>, eval:<model>, act:<model> or heldout:<model>")
    return kind, target


# --------------------------------------------------------------------------- which notebook


def training_notebook(params: Params, arm: str) -> str:
    """The notebook that trains ``arm``, as a user runs it: ``notebooks/02_phase1_training``."""
    phase = params.arms[arm].phase
    return "notebooks/" + next((stem for stem, phases in TRAINING_NOTEBOOKS.items() if phase in phases),
                               MITIGATION_NOTEBOOK)


def notebook_of(params: Params, job: str) -> str:
    """The stem of the notebook whose stage ``job`` computes (its progress lines name it)."""
    kind, target = parse_job(job)
    if kind == "train":
        return training_notebook(params, target).split("/")[-1] if target in params.arms else ""
    return {"eval": EVALUATION_NOTEBOOK, "act": REPRESENTATIONS_NOTEBOOK, "heldout": PHASE2_NOTEBOOK}[kind]


# --------------------------------------------------------------------------- what notebooks read


@dataclasses.dataclass(frozen=True)
class MitigationSelection:
    """The arms notebook 04 runs for ``-p strategy`` and ``-p table``.

    ``by_table``: each mitigation table's strategy arms (Table 5 and D8 are drawn apart, never
    pooled); ``arms``: all of them; ``compared``: those plus each table's vanilla Phase-2 arm,
    what every strategy is compared against."""
    tables: list[str]
    by_table: dict[str, list[str]]
    arms: list[str]
    compared: list[str]


def mitigation_selection(params: Params, strategy: str = "all", table: str = "all") -> MitigationSelection:
    """The arms of one strategy (or "all") in one mitigation table (or "all" the params define);
    an unknown strategy or table raises ParamsError naming the valid ones."""
    tables = params.mitigation_tables() if table == "all" else [table]
    by_table = {t: params.strategy_arms(strategy, t) for t in tables}
    arms = [a for t in tables for a in by_table[t]]
    vanilla = [a for t in tables for a in params.strategy_arms(mitigation.baseline(), t)]
    return MitigationSelection(tables, by_table, arms, list(dict.fromkeys(vanilla + arms)))


def table_models(params: Params, arms: Sequence[str]) -> list[str]:
    """The rows of a held-out table of ``arms``: their ``models:`` start points, then the arms."""
    starts = sorted({params.arms[a].start for a in arms if params.arms[a].start in params.models})
    return starts + list(arms)


def heldout_models(params: Params, notebooks: Sequence[str]) -> list[str]:
    """The models whose held-out losses the given notebooks (file stems) read: 03's table, 04's
    mitigation tables, 05's forgetting check."""
    arms: list[str] = []
    for stem in notebooks:
        if stem == PHASE2_NOTEBOOK:
            arms += params.arms_in_phase(*TABLE_PHASES)
        elif stem == MITIGATION_NOTEBOOK:
            arms += mitigation_selection(params).compared
        elif stem == SIMILARITY_NOTEBOOK:
            arms += params.arms_in_phase("phase2")
    arms = list(dict.fromkeys(arms))
    return list(dict.fromkeys(table_models(params, arms) + [params.arms[a].start for a in arms]))


def model_pairs(params: Params) -> dict[str, list[tuple[str, str]]]:
    """(Phase-1 model, Phase-2 model) pairs: ``phase2`` for Figures 1 and 2, ``mitigation`` for
    Figure D3 (every strategy arm of Table 5, vanilla included, against its start)."""
    phase2 = [(params.arms[a].start, a) for a in params.arms_in_phase("phase2")]
    mitigation = [(params.arms[a].start, a) for a in params.strategy_arms()]
    return {"phase2": phase2, "mitigation": mitigation}


def base_models(params: Params) -> list[str]:
    """The models Figure 4 reads: every model entry an arm starts from (the paper: base models)."""
    return list(dict.fromkeys(a.start for a in params.arms.values() if a.start in params.models))


def needed_models(params: Params) -> list[str]:
    """Every model and arm notebook 07 reads, in training order (starts first)."""
    read = {m for pairs in model_pairs(params).values() for pair in pairs for m in pair} | set(base_models(params))
    return [n for n in [*base_models(params), *params.arm_order()] if n in read]


# --------------------------------------------------------------------------- the graph


def arm_needs(params: Params, arm: str) -> list[str]:
    """The arms whose results training ``arm`` reads: the arm it starts from. LF_H2's base and
    every other start point are ``models:`` entries."""
    start = params.arms[arm].start
    return [start] if start in params.arms else []


def _after_training(params: Params, name: str) -> tuple[str, ...]:
    return (f"train:{name}",) if name in params.arms else ()


def plan_jobs(params: Params, arms: Sequence[str] | None = None,
              models: Sequence[str] | None = None, activations: Sequence[str] = (),
              heldout: Sequence[str] = ()) -> dict[str, Job]:
    """The jobs that train ``arms`` (default: every arm), evaluate ``models`` (default:
    ``params.evaluated_models()``) and compute the activations of ``activations`` and the
    held-out losses of ``heldout``, trainings first in training order; name -> Job."""
    arms = params.arm_order() if arms is None else [a for a in params.arm_order() if a in set(arms)]
    models = params.evaluated_models() if models is None else list(dict.fromkeys(models))
    # AlpacaEval's judge caches (one per judge, shared by every model) take one writer at a time
    alpaca = params.evaluation.benchmarks.get("alpacaeval")
    group = "alpacaeval" if alpaca is not None and alpaca.source == "alpaca_eval" else None
    jobs = [Job(f"train:{a}", "train", a, tuple(f"train:{x}" for x in arm_needs(params, a))) for a in arms]
    jobs += [Job(f"eval:{m}", "eval", m, _after_training(params, m), group) for m in models]
    jobs += [Job(f"act:{m}", "act", m, _after_training(params, m)) for m in activations]
    jobs += [Job(f"heldout:{m}", "heldout", m, _after_training(params, m)) for m in heldout]
    return {j.name: j for j in jobs}


def book_jobs(params: Params, notebooks: Sequence[str]) -> dict[str, Job]:
    """The jobs of the notebooks a book runs (file stems): what they would train, evaluate and
    read. 02 trains Phase 1, 03 Phase 2 / mixture / reverse order, 04 the mitigations with what
    they compare (and evaluates those), 06 evaluates every model, 07 reads each model's
    activations, and 03, 04 and 05 read held-out losses of their models."""
    arms: list[str] = []
    models: list[str] = []
    activations: list[str] = []
    heldout = heldout_models(params, notebooks)
    arms += [m for m in heldout if m in params.arms]
    for stem in notebooks:
        if stem == MITIGATION_NOTEBOOK:
            compared = mitigation_selection(params).compared
            arms += params.with_upstream(compared)
            models += compared
        elif stem in TRAINING_NOTEBOOKS:
            arms += params.arms_in_phase(*TRAINING_NOTEBOOKS[stem])
        elif stem == EVALUATION_NOTEBOOK:
            models += params.evaluated_models()
        elif stem == REPRESENTATIONS_NOTEBOOK:
            activations += needed_models(params)
            arms += [m for m in activations if m in params.arms]
    if not (arms or models or activations or heldout):
        return {}
    return plan_jobs(params, arms, models, list(dict.fromkeys(activations)), heldout)


def grid_jobs(params: Params) -> dict[str, Job]:
    """The whole book's jobs: every arm trained, every evaluated model evaluated, and the
    activations and held-out losses its notebooks read (what ``python -m cft_helpers.schedule``
    plans and submits; the book then finds each stage done)."""
    stems = [*TRAINING_NOTEBOOKS, SIMILARITY_NOTEBOOK, EVALUATION_NOTEBOOK, REPRESENTATIONS_NOTEBOOK]
    book = book_jobs(params, stems)
    return plan_jobs(params, activations=[j.target for j in book.values() if j.kind == "act"],
                     heldout=[j.target for j in book.values() if j.kind == "heldout"])


def descendants(jobs: dict[str, Job]) -> dict[str, int]:
    """How many jobs wait, directly or not, on each job (what to start first)."""
    children: dict[str, list[str]] = {n: [] for n in jobs}
    for j in jobs.values():
        for n in j.needs:
            if n in children:
                children[n].append(j.name)
    out = {}
    for name in jobs:
        seen: set[str] = set()
        todo = deque(children[name])
        while todo:
            c = todo.popleft()
            if c not in seen:
                seen.add(c)
                todo.extend(children[c])
        out[name] = len(seen)
    return out
