"""The rule that turns an interval into a verdict, and the intervals it is applied to.

- :func:`verdict`: an oriented quantity is ``reproduced`` when its interval lies above
  ``-margin``, ``contradicted`` when below, ``inconclusive`` when it straddles it
  (docs/METHODS.md, "Deciding a claim");
- :class:`Estimate`: one quantity's value and its interval, from a paired item bootstrap on one
  seed (percentile) or a t-interval over seeds (several seeds);
- :func:`item_scores`, :class:`ItemBootstrap`, :class:`SeedScores`: the per-item evaluation
  scores of a run store, resampled with the same item indices for every model of a replicate.

:mod:`cft_helpers.findings` decides the paper's claims with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats

from cft_helpers.evaluation.harness import task_plan
from cft_helpers.params import ENGLISH_BENCHMARKS, MULTILINGUAL_BENCHMARKS, Params
from cft_helpers.files import read_jsonl
from cft_helpers.runs import MissingArtifact, RunStore


REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive"
NO_INTERVAL = "inconclusive (no interval)"
NOT_RUN = "not run"
MISSING = "missing"
SHARE_THRESHOLD = 0.95  # kept for share_verdict (C7b's share of replicates is now a note only)
# Chance level of the multiple-choice English slots (four options, whatever the metric: acc,
# acc_norm and the true option's probability all sit at 1/4 for a model that cannot tell them).
CHANCE = {"mmlu": 0.25, "hellaswag": 0.25}
SEED_ONLY_MIN_SEEDS = 3  # a quantity that varies only between seeds: a t-interval from 3 seeds up


# --------------------------------------------------------------------------- the rule


def verdict(lo: float | None, hi: float | None, margin: float = 0.0) -> str:
    """The verdict of an oriented quantity's interval [lo, hi]: above ``-margin`` entirely is
    ``reproduced``, below it entirely ``contradicted``, straddling it ``inconclusive``."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return NO_INTERVAL
    if lo > hi:
        raise ValueError(f"interval lower end {lo} is above its upper end {hi}")
    if lo > -margin:
        return REPRODUCED
    if hi < -margin:
        return CONTRADICTED
    return INCONCLUSIVE


def share_verdict(share: float | None, threshold: float = SHARE_THRESHOLD) -> str:
    """A rule on the share of replicates in which an arm ranks first (reported, no longer a verdict)."""
    if share is None or not math.isfinite(share):
        return NO_INTERVAL
    if share >= threshold:
        return REPRODUCED
    if share <= 1 - threshold:
        return CONTRADICTED
    return INCONCLUSIVE


# --------------------------------------------------------------------------- intervals


def percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of bootstrap draws."""
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(np.asarray(draws, dtype=float), [alpha, 1 - alpha])
    return float(lo), float(hi)


def normal_interval(value: float, sd: float, confidence: float) -> tuple[float, float]:
    """value +- z sd, z the normal quantile of a central ``confidence`` interval."""
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    return float(value - z * sd), float(value + z * sd)


def t_interval(values: Sequence[float], confidence: float, min_se: float = 0.0) -> tuple[float, float]:
    """The t-interval of the mean of ``values`` (one per seed): mean +- t(k - 1) se, se the
    seeds' standard deviation (ddof 1) over sqrt(k), at least ``min_se`` (a noise that does not
    average out over seeds). Needs two values or more."""
    v = np.asarray(values, dtype=float)
    k = len(v)
    if k < 2:
        raise ValueError(f"a t-interval needs at least 2 values, got {k}")
    se = max(float(v.std(ddof=1)) / math.sqrt(k), float(min_se))
    half = float(stats.t.ppf(1 - (1 - confidence) / 2, k - 1)) * se
    return float(v.mean() - half), float(v.mean() + half)


def seeds_needed(values: Sequence[float], confidence: float, margin: float = 0.0, cap: int = 1000,
                 min_se: float = 0.0) -> int | None:
    """How many seeds a t-interval with the observed spread and mean would need to exclude the
    decision line (``-margin``): the smallest k with t(k - 1) max(s / sqrt(k), min_se) < |mean +
    margin|; None when the mean sits on the line or no k up to ``cap`` would do."""
    v = np.asarray(values, dtype=float)
    distance = abs(float(v.mean()) + margin)
    sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    if distance == 0:
        return None
    for k in range(2, cap + 1):
        if float(stats.t.ppf(1 - (1 - confidence) / 2, k - 1)) * max(sd / math.sqrt(k), min_se) < distance:
            return k
    return None


@dataclass
class Estimate:
    """A quantity's values (one per seed) and what its interval is drawn from.

    - one seed with ``draws`` (a paired bootstrap over items): the percentile interval at the
      claim's level; at a family-wise level (a tail of 0.05 / 2m holds a few of 2000 replicates)
      the normal interval with the draws' standard deviation;
    - one seed with ``sd`` (DES's own bootstrap): the normal interval;
    - several seeds: the t-interval over the seed values (k - 1 degrees of freedom), its
      standard error at least ``min_se`` (DES: one seed's own sd, since seeds that share their
      rows share that noise); fewer than ``min_seeds`` seeds: no interval.
    """

    values: list[float]
    draws: np.ndarray | None = None
    sd: float | None = None
    min_seeds: int = 2
    min_se: float = 0.0

    @property
    def value(self) -> float:
        return float(np.mean(self.values))

    @property
    def k(self) -> int:
        return len(self.values)

    def interval(self, confidence: float, familywise: bool = False) -> tuple[float | None, float | None]:
        if self.k == 1:
            if self.draws is not None:
                if familywise:
                    return normal_interval(self.value, float(np.std(self.draws)), confidence)
                return percentile_interval(self.draws, confidence)
            if self.sd is not None and math.isfinite(self.sd):
                return normal_interval(self.value, self.sd, confidence)
            return None, None
        if self.k < self.min_seeds:
            return None, None
        return t_interval(self.values, confidence, self.min_se)

    def method(self, replicates: int) -> str:
        if self.k == 1:
            if self.draws is not None:
                return (f"paired bootstrap over evaluation items, {replicates} replicates, percentile "
                        "(family-wise: normal from the replicates' sd)")
            return "normal from a bootstrap sd" if self.sd is not None else "one seed: no interval"
        if self.k < self.min_seeds:
            return f"varies only across seeds: {self.k} seed(s) give no interval (a t-interval needs {self.min_seeds})"
        return f"t over {self.k} seed values ({self.k - 1} df)"

    def in_direction(self, margin: float = 0.0) -> int:
        """How many seeds' values lie on the paper's side of the line (above ``-margin``)."""
        return int(sum(v > -margin for v in self.values))


# --------------------------------------------------------------------------- per-item scores


def _item_value(bench: str, metric: str, row: dict) -> float | None:
    """One item's score for a benchmark's metric, from a row of ``<model>.samples.jsonl``.

    AlpacaEval rows carry alpaca_eval's preference (1: the reference wins, 2: the model wins,
    1.5: a tie; None: unreadable verdict, left out as in the win rate)."""
    if bench == "alpacaeval":
        p = row.get("preference")
        if p is None or (isinstance(p, float) and math.isnan(p)):
            return None
        if metric == "discrete_win_rate":
            return 1.0 if p > 1.5 else 0.5 if p == 1.5 else 0.0
        return float(p) - 1.0
    value = row.get(metric)
    if value is None:
        return None
    if isinstance(value, (list, tuple)):  # lm-eval logs some metrics as a one-element list
        value = value[0]
    return float(value)


def item_scores(params: Params, name: str) -> dict[str, dict[str, dict[Any, float]]]:
    """Per-item scores of one evaluated model: benchmark -> task -> doc_id -> score, for every
    benchmark that ran, with the benchmark's own metric (acc, f1, rougeL, ...).

    A benchmark group (e.g. lm-eval's mmlu) pools its subtasks' items, as lm-eval's size-weighted
    group mean does. Raises ``MissingArtifact`` when the model has no per-item file."""
    store = params.store
    path = store.eval_samples(name)
    if not path.exists():
        raise MissingArtifact(f"{name!r} has no per-item scores ({path}); run notebook 06_evaluation")
    rows = read_jsonl(path)
    plan = task_plan(params)
    if any(b.source == "alpaca_eval" for b in params.evaluation.benchmarks.values()):
        plan["alpacaeval"] = [("alpacaeval", None)]
    owner = {task: bench for bench, tasks in plan.items() for task, _lang in tasks}
    # lm-eval's mmlu group logs its items under subtask names (mmlu_<subject>)
    group = "mmlu" if "mmlu" in owner and params.evaluation.benchmarks["mmlu"].source == "lm_eval" else None
    out: dict[str, dict[str, dict[Any, float]]] = {}
    for r in rows:  # one pass: a row belongs to its own task, or to the group it is a subtask of
        t = r.get("task")
        task = t if t in owner else group if group and isinstance(t, str) and t.startswith(group + "_") else None
        if task is None:
            continue
        bench = owner[task]
        v = _item_value(bench, params.evaluation.benchmarks[bench].metric, r)
        if v is not None:
            out.setdefault(bench, {}).setdefault(task, {})[(t, r["doc_id"])] = v
    # benchmarks and tasks in the plan's order, as before
    return {b: {t: out[b][t] for t, _ in plan[b] if t in out[b]} for b in plan if b in out}


@dataclass
class SeedRun:
    """One seed's parameter set, and through it its run store (every seed's arms live in their
    own arm folders)."""

    params: Params

    @property
    def store(self) -> RunStore:
        return self.params.store


# --------------------------------------------------------------------------- the bootstrap


class ItemBootstrap:
    """Paired bootstrap over evaluation items for a set of models evaluated on the same suite.

    Each replicate draws, per task, n item indices with replacement (n: the task's items) and
    applies the same draw to every model. ``ability(name)`` gives each model's EA, MA and
    combined per replicate, averaged exactly as the point estimates are (benchmark = mean over its
    languages' tasks; EA / MA = mean over the benchmarks that ran, less those ``exclude`` names)."""

    def __init__(self, params: Params | None, scores: dict[str, dict[str, dict[str, dict[Any, float]]]],
                 replicates: int, rng: np.random.Generator):
        self.params = params
        self.replicates = replicates
        names = list(scores)
        if not names:
            raise ValueError("ItemBootstrap needs at least one model")
        benches = set(scores[names[0]])
        for n in names[1:]:
            if set(scores[n]) != benches:
                raise ValueError(f"models {names[0]!r} and {n!r} were evaluated on different benchmarks "
                                 f"({sorted(benches)} vs {sorted(scores[n])}); rerun notebook 06")
        self.tasks: dict[str, list[str]] = {b: sorted(scores[names[0]][b]) for b in sorted(benches)}
        self.items: dict[tuple[str, str], int] = {}
        self._means: dict[str, dict[tuple[str, str], np.ndarray]] = {n: {} for n in names}
        self._points: dict[str, dict[tuple[str, str], float]] = {n: {} for n in names}
        for b, tasks in self.tasks.items():
            for t in tasks:
                ids = sorted(scores[names[0]][b][t], key=str)
                for n in names[1:]:
                    if set(scores[n][b].get(t, {})) != set(ids):
                        raise ValueError(f"task {t}: models {names[0]!r} and {n!r} have different items; "
                                         "a paired comparison needs the same items (rerun notebook 06)")
                self.items[(b, t)] = len(ids)
                # counts[r, i]: how often item i is drawn in replicate r (one draw for all models)
                counts = rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=replicates)
                for n in names:
                    s = np.array([scores[n][b][t][i] for i in ids], dtype=float)
                    self._means[n][(b, t)] = counts @ s / len(ids)
                    self._points[n][(b, t)] = float(s.mean())

    def _bench(self, name: str, bench: str, point: bool):
        src = self._points[name] if point else self._means[name]
        vals = [src[(bench, t)] for t in self.tasks[bench]]
        return sum(vals) / len(vals)

    def ability(self, name: str, point: bool = False, exclude: frozenset[str] | set[str] = frozenset()
                ) -> dict[str, Any]:
        """EA, MA, combined and each benchmark of ``name``: arrays of replicates, or the point
        estimates on all items (``point=True``). Benchmarks in ``exclude`` stay in the output but
        out of EA and MA."""
        out: dict[str, Any] = {b: self._bench(name, b, point) for b in self.tasks}
        for ability, group in (("EA", ENGLISH_BENCHMARKS), ("MA", MULTILINGUAL_BENCHMARKS)):
            present = [out[b] for b in group if b in self.tasks and b not in exclude]
            out[ability] = sum(present) / len(present) if present else (
                float("nan") if point else np.full(self.replicates, np.nan))
        out["combined"] = (out["EA"] + out["MA"]) / 2
        return out


class SeedScores:
    """One seed's per-item scores of the models the claims compare, and their paired bootstrap.
    A model without scores is listed in ``missing`` (name -> why)."""

    def __init__(self, run: SeedRun, names: Sequence[str], replicates: int, rng: np.random.Generator):
        self.run = run
        self.scores: dict[str, Any] = {}
        self.missing: dict[str, str] = {}
        for name in dict.fromkeys(n for n in names if n):
            try:
                self.scores[name] = item_scores(run.params, name)
            except MissingArtifact as exc:
                self.missing[name] = str(exc)
        self.boot = ItemBootstrap(run.params, self.scores, replicates, rng) if self.scores else None
        self._cache: dict[tuple, dict[str, Any]] = {}

    def ability(self, name: str, point: bool, exclude: frozenset[str]) -> dict[str, Any]:
        key = (name, point, exclude)
        if key not in self._cache:
            self._cache[key] = self.boot.ability(name, point=point, exclude=exclude)
        return self._cache[key]


def estimate(seeds: Sequence[SeedScores], fn: Callable[[dict], Any], needs: Sequence[str],
             exclude: frozenset[str] = frozenset()) -> Estimate | None:
    """The Estimate of ``fn`` (of the needed models' abilities) over the seeds: each seed's point
    value, and with one seed its bootstrap draws; None when a seed lacks one of ``needs``."""
    if any(n not in s.scores for s in seeds for n in needs):
        return None
    values = [float(fn({n: s.ability(n, True, exclude) for n in needs})) for s in seeds]
    draws = None
    if len(seeds) == 1:
        draws = np.asarray(fn({n: seeds[0].ability(n, False, exclude) for n in needs}), dtype=float)
    return Estimate(values, draws=draws)
