"""The paper's claims, decided on the run store: one row per claim, a 95% interval, a verdict.

Read-only: it trains and evaluates nothing. It reads what notebooks 05 (DES, MPD), 06 (per-item
evaluation scores in ``eval/<model>.samples.jsonl``) and 07 (representation change) wrote, and
decides each claim by one stated rule (docs/METHODS.md, "Deciding a claim"):

- orient the claim's quantity so that a positive value is the paper's direction;
- ``reproduced`` when the interval's lower end is above 0 (above ``-margin`` for the
  non-inferiority claim C2), ``contradicted`` when its upper end is below 0 (below ``-margin``),
  ``inconclusive`` otherwise; a share-of-replicates claim (C7b) is ``reproduced`` at a share of at
  least 0.95 and ``contradicted`` at most 0.05;
- intervals are percentile intervals of a paired bootstrap over evaluation items (the same item
  indices drawn for every model in a replicate); with several seeds, seeds are drawn first, then
  items within each drawn seed. DES carries its own bootstrap sd; MPD and the representation
  change vary only across seeds, so with one seed they have no interval.

    claims = decide_claims([(params, store)])          # one (params, store) per seed
    write_findings(store, claims, meta)                # <run_dir>/findings.json and findings.md
"""

from __future__ import annotations

import math
from pathlib import Path
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, Callable, Sequence

import numpy as np

from cft_helpers import mitigation, paper_results as pr
from cft_helpers.evaluation.harness import ability_components, suite_hash, task_plan
from cft_helpers.params import ENGLISH_BENCHMARKS, MULTILINGUAL_BENCHMARKS, Params
from cft_helpers.representations import load_representation_summary
from cft_helpers.runs import MissingArtifact, RunStore, atomic_write_json, atomic_write_text, read_json, read_jsonl
from cft_helpers.similarity import load_similarity_summary

REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive"
NO_INTERVAL = "inconclusive (no interval)"
NOT_RUN = "not run"
MISSING = "missing"
SHARE_THRESHOLD = 0.95  # C7b: share of replicates in which ER_10 ranks first


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
    """C7b's rule on the share of replicates in which the claimed arm ranks first."""
    if share is None or not math.isfinite(share):
        return NO_INTERVAL
    if share >= threshold:
        return REPRODUCED
    if share <= 1 - threshold:
        return CONTRADICTED
    return INCONCLUSIVE


def percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of bootstrap draws."""
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(np.asarray(draws, dtype=float), [alpha, 1 - alpha])
    return float(lo), float(hi)


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


def item_scores(params: Params, store: RunStore, name: str) -> dict[str, dict[str, dict[Any, float]]]:
    """Per-item scores of one evaluated model: benchmark -> task -> doc_id -> score, for every
    benchmark that ran, with the benchmark's own metric (acc, f1, rougeL, ...).

    A benchmark group (e.g. lm-eval's mmlu) pools its subtasks' items, as lm-eval's size-weighted
    group mean does. Raises ``MissingArtifact`` when the model has no per-item file."""
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


# --------------------------------------------------------------------------- the bootstrap


class ItemBootstrap:
    """Paired bootstrap over evaluation items for a set of models evaluated on the same suite.

    Each replicate draws, per task, n item indices with replacement (n: the task's items) and
    applies the same draw to every model. ``ability(name)`` gives each model's EA, MA and
    combined per replicate, averaged exactly as the point estimates are (benchmark = mean over its
    languages' tasks; EA / MA = mean over the benchmarks that ran)."""

    def __init__(self, params: Params, scores: dict[str, dict[str, dict[str, dict[Any, float]]]],
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

    def ability(self, name: str, point: bool = False) -> dict[str, Any]:
        """EA, MA, combined and each benchmark of ``name``: arrays of replicates, or the point
        estimates on all items (``point=True``)."""
        out: dict[str, Any] = {b: self._bench(name, b, point) for b in self.tasks}
        for ability, group in (("EA", ENGLISH_BENCHMARKS), ("MA", MULTILINGUAL_BENCHMARKS)):
            present = [out[b] for b in group if b in self.tasks]
            out[ability] = sum(present) / len(present) if present else (
                float("nan") if point else np.full(self.replicates, np.nan))
        out["combined"] = (out["EA"] + out["MA"]) / 2
        return out


# --------------------------------------------------------------------------- claims


@dataclass
class Claim:
    """One row of the findings table."""

    id: str
    claim: str
    quantity: str
    paper: dict[str, float | None]
    paper_note: str
    value: float | None = None
    lo: float | None = None
    hi: float | None = None
    verdict: str = NOT_RUN
    interval: str = ""
    margin: float = 0.0
    share: float | None = None
    verdict_familywise: str | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2


@dataclass
class SeedRun:
    """One seed's parameter set and run store (every seed's arms live in their own arm folders)."""

    params: Params
    store: RunStore


def seed_runs(params: Params) -> list[SeedRun]:
    """One SeedRun per seed of the study (``params.seed_list()``), each with its own run store."""
    runs = []
    for seed in params.seed_list():
        p = params.for_seed(seed)
        runs.append(SeedRun(p, RunStore(p.run_path)))
    return runs


def _paper_values(claim_id: str, strategy: str | None = None) -> tuple[dict[str, float | None], str]:
    """The paper's value of a claim's oriented quantity for Mistral-7B and Llama-3-8B, computed
    from the transcribed tables (cft_helpers.paper_results), and a note where they disagree."""
    models = ("Mistral-7B", "Llama-3-8B")
    ea, ma = pr.ENGLISH_ABILITY, pr.MULTILINGUAL_ABILITY

    def comb(e, m):
        return (e + m) / 2

    vals: dict[str, float | None] = {}
    note = ""
    for m in models:
        sim_e, dis_e = ea[(m, "ALPACA", "MULTIALPACA")], ea[(m, "Instruct", "MULTIALPACA")]
        if claim_id == "C1":
            mix_e, mix_m = pr.MIXTURE[(m, "ALPACA + MULTIALPACA")]
            vals[m] = comb(sim_e[1], ma[(m, "ALPACA", "MULTIALPACA")][1]) - comb(mix_e, mix_m)
        elif claim_id == "C2":
            vals[m] = sim_e[1] - sim_e[0]
        elif claim_id == "C3a":
            vals[m] = dis_e[0] - dis_e[1]
        elif claim_id == "C3b":
            vals[m] = (dis_e[0] - dis_e[1]) - (sim_e[0] - sim_e[1])
        elif claim_id == "C4":
            vals[m] = (pr.DES[("ALPACA", "MULTIALPACA")] - pr.DES[("Instruct", "MULTIALPACA")]
                       if m == pr.DES_INSTRUCT_MODEL else None)
        elif claim_id == "C5":
            vals[m] = pr.MPD["Instruct"] - pr.MPD["ALPACA"] if m == pr.MPD_REFERENCE[0] else None
        elif claim_id == "C6":
            vals[m] = None
        elif claim_id == "C7a":
            row, vanilla = pr.TABLE5.get((m, strategy)), pr.TABLE5[(m, "vanilla")]
            vals[m] = None if row is None else row[0] - vanilla[0]
        elif claim_id in ("C8a", "C8b"):
            (e1, e2), (m1, m2) = pr.REVERSE_EA[(m, "MULTIALPACA", "ALPACA")], pr.REVERSE_MA[(m, "MULTIALPACA", "ALPACA")]
            if claim_id == "C8a":
                vals[m] = m1 - m2
            else:
                mix_e, mix_m = pr.MIXTURE[(m, "ALPACA + MULTIALPACA")]
                vals[m] = comb(mix_e, mix_m) - comb(e2, m2)
    if claim_id == "C6":
        note = "Figure 2 prints no numbers: larger for Instruct -> MULTIALPACA in both models (read from the figure)"
    elif claim_id in ("C4", "C5"):
        note = "the paper reports it for Mistral-7B only"
    elif claim_id == "C7a":
        # Table 5's misprinted EA averages: give the quantity with each row's mean of its scores too
        fixed = {}
        for m in models:
            row, van = pr.paper_strategy_row(m, strategy), pr.paper_strategy_row(m, "vanilla")
            if row is None or not ("note" in row or "note" in van):
                continue
            ea = row.get("EA (mean of its benchmarks)", row["EA"])
            fixed[m] = ea - van.get("EA (mean of its benchmarks)", van["EA"])
        if fixed:
            note = ("Table 5 misprints the EA average of this row or of vanilla; with each row's EA as the "
                    "mean of its four scores: " + ", ".join(f"{m} {v:+.3f}" for m, v in fixed.items()))
    given = [v for v in vals.values() if v is not None]
    if len(given) == 2 and (given[0] > 0) != (given[1] > 0):
        note = "; ".join(x for x in (note, "the paper's two models disagree in sign") if x)
    return {m: (None if v is None else round(v, 4)) for m, v in vals.items()}, note


def paper_c7b() -> dict[str, Any]:
    """Which strategy has the best combined score of Table 5 in the paper, per model: as printed,
    and with each misprinted EA average replaced by the mean of its four scores (Mistral-7B
    ER_10: 0.599 printed, 0.472 the mean)."""
    out = {}
    for m in ("Mistral-7B", "Llama-3-8B"):
        rows = {s: v for (mm, s), v in pr.TABLE5.items() if mm == m and not mitigation.is_baseline(s)}
        best_printed = max(rows, key=lambda s: rows[s][2])
        entry = {"best_printed": best_printed}
        fixed = {}
        for s in rows:
            row = pr.paper_strategy_row(m, s)
            fixed[s] = row.get("combined (from that mean)", row["combined"])
        entry["best_recomputed"] = max(fixed, key=fixed.get)
        out[m] = entry
    return out


def _arm_or_none(params: Params, name: str | None) -> str | None:
    return name if name and name in params.arms else None


def claim_roles(params: Params) -> dict[str, Any]:
    """Which arms each claim compares (``params.findings`` names them; a missing one is None)."""
    f = params.findings
    similar, dissimilar = _arm_or_none(params, f.similar), _arm_or_none(params, f.dissimilar)
    reverse = _arm_or_none(params, f.reverse)
    table5 = params.strategy_arms()
    vanilla = [a for a in table5 if mitigation.is_baseline(params.arms[a].strategy)]
    return {"similar": similar, "similar_p1": params.arms[similar].start if similar else None,
            "dissimilar": dissimilar, "dissimilar_p1": params.arms[dissimilar].start if dissimilar else None,
            "mixture": _arm_or_none(params, f.mixture), "reverse": reverse,
            "reverse_p1": params.arms[reverse].start if reverse else None,
            "vanilla": vanilla[0] if vanilla else None,
            "strategies": {params.arms[a].strategy: a for a in table5 if not mitigation.is_baseline(params.arms[a].strategy)}}


CLAIM_TEXT = {
    "C1": ("Two-phase fine-tuning beats the single-phase mixture.",
           "combined(similar Phase 2) - combined(mixture); combined = (EA + MA) / 2"),
    "C2": ("The similar pair keeps or improves English Ability in Phase 2 (non-inferiority).",
           "EA(similar P2) - EA(similar P1)"),
    "C3a": ("The dissimilar pair loses English Ability in Phase 2.",
            "EA(dissimilar P1) - EA(dissimilar P2)"),
    "C3b": ("The dissimilar pair loses more English Ability than the similar pair.",
            "[EA(dissimilar P1) - EA(dissimilar P2)] - [EA(similar P1) - EA(similar P2)]"),
    "C4": ("DES ranks the similar pair above the dissimilar pair.",
           "DES(similar pair's datasets) - DES(dissimilar pair's datasets)"),
    "C5": ("MPD is lower for the similar pair.",
           "MPD(dissimilar P1, reference) - MPD(similar P1, reference), normalised as Table 4"),
    "C6": ("The representation change in Phase 2 is larger for the dissimilar pair.",
           "mean over layers of the covariance change (Figure 2): dissimilar - similar"),
    "C7a": ("{s} keeps more English Ability than vanilla Phase 2 from the same start.",
            "EA({s}) - EA(vanilla Phase 2)"),
    "C7b": ("ER_10 has the best combined score among the mitigation strategies.",
            "share of bootstrap replicates in which ER_10 has the highest combined score"),
    "C8a": ("The reverse order loses Multilingual Ability in its second (English) phase.",
            "MA(reverse P1) - MA(reverse P2)"),
    "C8b": ("The reverse order ends below the mixture.",
            "combined(mixture) - combined(reverse P2)"),
}


def _new_claim(claim_id: str, strategy: str | None = None, margin: float = 0.0) -> Claim:
    text, quantity = CLAIM_TEXT[claim_id]
    paper, note = _paper_values(claim_id, strategy) if claim_id != "C7b" else ({}, "")
    cid = f"C7a {strategy}" if claim_id == "C7a" else claim_id
    return Claim(id=cid, claim=text.format(s=strategy), quantity=quantity.format(s=strategy),
                 paper=paper, paper_note=note, margin=margin)


def _combine_seeds(per_seed: list[dict[str, np.ndarray]], points: list[dict[str, float]], replicates: int,
                   rng: np.random.Generator) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Seeds first, then items: replicate r draws k seeds with replacement and averages, for each
    drawn seed, an independent item replicate of that seed. Each seed's arrays hold
    ``replicates * k`` item replicates (k: the number of seeds)."""
    k = len(per_seed)
    keys = set(per_seed[0]).intersection(*per_seed[1:]) if k > 1 else set(per_seed[0])
    point = {q: float(np.mean([p[q] for p in points])) for q in keys}
    if k == 1:
        return point, {q: per_seed[0][q] for q in keys}
    drawn = rng.integers(k, size=(replicates, k))
    rows, cols = np.arange(replicates)[:, None], np.arange(k)[None, :]
    out = {}
    for q in keys:
        stack = np.stack([s[q].reshape(replicates, k) for s in per_seed])  # (seed, replicate, slot)
        out[q] = stack[drawn, rows, cols].mean(axis=1)
    return point, out


def _evaluation_quantities(run: SeedRun, roles: dict[str, Any], replicates: int, rng: np.random.Generator,
                           ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, str], dict]:
    """Every evaluation-based quantity of one seed: replicate arrays, point values, the models
    each quantity could not be computed for (name -> reason), and the items per (benchmark, task)."""
    params, store = run.params, run.store
    wanted = [roles[k] for k in ("similar", "similar_p1", "dissimilar", "dissimilar_p1", "mixture", "reverse",
                                 "reverse_p1", "vanilla") if roles[k]] + list(roles["strategies"].values())
    wanted = list(dict.fromkeys(wanted))
    scores, missing = {}, {}
    for name in wanted:
        try:
            scores[name] = item_scores(params, store, name)
        except MissingArtifact as exc:
            missing[name] = str(exc)
    boot = ItemBootstrap(params, scores, replicates, rng) if scores else None
    draws = {n: boot.ability(n) for n in scores} if boot else {}
    points = {n: boot.ability(n, point=True) for n in scores} if boot else {}
    arrays: dict[str, np.ndarray] = {}
    values: dict[str, float] = {}

    def define(key: str, fn: Callable[[dict], Any], needs: Sequence[str]) -> None:
        if all(n in scores for n in needs):
            arrays[key] = np.asarray(fn(draws), dtype=float)
            values[key] = float(fn(points))

    s, s1, d, d1 = roles["similar"], roles["similar_p1"], roles["dissimilar"], roles["dissimilar_p1"]
    mix, r2, r1, van = roles["mixture"], roles["reverse"], roles["reverse_p1"], roles["vanilla"]
    if s and mix:
        define("C1", lambda a: a[s]["combined"] - a[mix]["combined"], [s, mix])
    if s:
        define("C2", lambda a: a[s]["EA"] - a[s1]["EA"], [s, s1])
    if d:
        define("C3a", lambda a: a[d1]["EA"] - a[d]["EA"], [d, d1])
    if s and d:
        define("C3b", lambda a: (a[d1]["EA"] - a[d]["EA"]) - (a[s1]["EA"] - a[s]["EA"]), [s, s1, d, d1])
    if van:
        for strategy, arm in roles["strategies"].items():
            define(f"C7a {strategy}", lambda a, arm=arm: a[arm]["EA"] - a[van]["EA"], [arm, van])
    for strategy, arm in roles["strategies"].items():
        define(f"combined {strategy}", lambda a, arm=arm: a[arm]["combined"], [arm])
    if r2 and r1:
        define("C8a", lambda a: a[r1]["MA"] - a[r2]["MA"], [r1, r2])
    if r2 and mix:
        define("C8b", lambda a: a[mix]["combined"] - a[r2]["combined"], [mix, r2])
    return arrays, values, missing, (boot.items if boot else {})


def _similarity_values(run: SeedRun, roles: dict[str, Any]) -> dict[str, Any]:
    """DES difference with its sd (C4), MPD difference (C5), mean covariance change difference
    (C6) of one seed; a value the store lacks is given as the reason instead."""
    params, store = run.params, run.store
    s, d = roles["similar"], roles["dissimilar"]
    out: dict[str, Any] = {}
    try:
        sim = load_similarity_summary(store)
    except MissingArtifact as exc:
        sim = None
        out["C4"] = out["C5"] = str(exc)
    if sim is not None and s and d:
        des = sim.get("des", {})
        pairs = []
        for arm in (s, d):
            d1 = params.phase1_dataset(params.arms[arm].start)
            d2 = params.arms[arm].datasets[0] if len(params.arms[arm].datasets) == 1 else None
            pairs.append((d1, d2))
        try:
            (a1, a2), (b1, b2) = pairs
            diff = des["matrix"][a1][a2] - des["matrix"][b1][b2]
            sd = math.hypot(des["sd"][a1][a2], des["sd"][b1][b2])
            out["C4"] = (diff, sd)
        except (KeyError, TypeError):
            out["C4"] = f"DES of {pairs} is not in the similarity summary; rerun notebook 05_similarity"
        mpd = sim.get("mpd", {})
        p1s, p1d = params.arms[s].start, params.arms[d].start
        if p1s in mpd and p1d in mpd:
            out["C5"] = mpd[p1d]["mpd_normalised"] - mpd[p1s]["mpd_normalised"]
        else:
            out["C5"] = f"the MPD table lacks {p1s!r} or {p1d!r}; rerun notebook 05_similarity"
    try:
        rep = load_representation_summary(store)
        curves = rep.get("phase2_covariance", {})
        ls, ld = params.arms[s].label or s, params.arms[d].label or d
        if ls in curves and ld in curves:
            out["C6"] = float(np.mean(curves[ld]) - np.mean(curves[ls]))
            out["C6_scale"] = (float(np.mean(curves[ls])), float(np.mean(curves[ld])))
        else:
            out["C6"] = f"Figure 2's curves lack {ls!r} or {ld!r}; rerun notebook 07_representations"
    except MissingArtifact as exc:
        out["C6"] = str(exc)
    return out


def decide_claims(runs: Sequence[SeedRun], replicates: int | None = None, confidence: float | None = None,
                  seed: int | None = None) -> tuple[list[Claim], dict[str, Any]]:
    """Every claim's value, interval and verdict from the runs of one or more seeds.

    Returns the claims (in the paper's order) and what the intervals rest on (seeds, replicates,
    items per task, half-widths of both pairs' EA change)."""
    if not runs:
        raise ValueError("decide_claims needs at least one (params, store) run")
    params = runs[0].params
    f = params.findings
    replicates = replicates or f.n_bootstrap
    confidence = confidence or f.confidence
    rng = np.random.default_rng(params.seed if seed is None else seed)
    roles = claim_roles(params)
    k = len(runs)

    per_seed, points, missing, items = [], [], {}, {}
    for run in runs:
        arrays, values, miss, seed_items = _evaluation_quantities(run, roles, replicates * k, rng)
        per_seed.append(arrays)
        points.append(values)
        missing.update(miss)
        items = items or seed_items  # the first seed's items per task, for the record
    point, draws = _combine_seeds(per_seed, points, replicates, rng) if per_seed[0] else ({}, {})

    claims: list[Claim] = []

    def lacking(role_keys: Sequence[str]) -> str | None:
        """The first arm a claim compares that the parameter set lacks, named, or None."""
        for r in role_keys:
            if roles[r] is None:
                base = r.removesuffix("_p1")
                configured = getattr(f, base, None) if base != "vanilla" else None
                return (f"the parameter set has no arm {configured!r} (findings.{base})" if configured else
                        "the parameter set has no vanilla Phase-2 arm beside its mitigation arms"
                        if base == "vanilla" else f"findings.{base} names no arm")
        return None

    def from_draws(c: Claim, key: str, role_keys: Sequence[str], interval: str, arms: Sequence[str] = ()) -> None:
        why = lacking(role_keys)
        if why:
            c.verdict, c.note = NOT_RUN, why
            return
        if key not in draws:
            needed = [roles[r] for r in role_keys] + list(arms)
            gone = [n for n in needed if n in missing]
            c.verdict = MISSING
            c.note = missing[gone[0]] if gone else "not evaluated"
            return
        c.value = point[key]
        c.lo, c.hi = percentile_interval(draws[key], confidence)
        c.verdict = verdict(c.lo, c.hi, c.margin)
        c.interval = interval

    items_note = ("paired bootstrap over evaluation items" if k == 1 else
                  f"bootstrap over {k} seeds, then evaluation items") + f", {replicates} replicates, percentile"
    c = _new_claim("C1")
    from_draws(c, "C1", ["similar", "mixture"], items_note)
    claims.append(c)
    c = _new_claim("C2", margin=f.margin)
    from_draws(c, "C2", ["similar"], items_note)
    claims.append(c)
    for cid in ("C3a", "C3b"):
        c = _new_claim(cid)
        from_draws(c, cid, ["dissimilar"] + (["similar"] if cid == "C3b" else []), items_note)
        claims.append(c)

    sims = [_similarity_values(run, roles) for run in runs]
    for cid in ("C4", "C5", "C6"):
        c = _new_claim(cid)
        claims.append(c)
        why = lacking(["similar", "dissimilar"])
        if why:
            c.note = why
            continue
        vals = [sv.get(cid) for sv in sims]
        if any(isinstance(v, str) or v is None for v in vals):
            c.verdict = MISSING
            c.note = next(v for v in vals if isinstance(v, str) or v is None) or "not computed"
            continue
        if cid == "C4":
            diffs = np.array([v[0] for v in vals])
            sds = np.array([v[1] for v in vals])
            c.value = float(diffs.mean())
            # DES carries its own bootstrap sd (rows resampled); across seeds: seeds first.
            if k == 1:
                z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
                c.lo, c.hi = float(diffs[0] - z * sds[0]), float(diffs[0] + z * sds[0])
            else:
                slot = rng.integers(k, size=(replicates, k))
                noise = rng.standard_normal((replicates, k)) * sds[slot]
                c.lo, c.hi = percentile_interval((diffs[slot] + noise).mean(axis=1), confidence)
            c.verdict = verdict(c.lo, c.hi)
            c.interval = ("normal from DES's bootstrap sd (rows resampled; the two DES treated as "
                          "independent)" + ("" if k == 1 else f", seeds resampled ({k})"))
        else:
            arr = np.array(vals, dtype=float)
            c.value = float(arr.mean())
            if cid == "C6":
                c.extra["mean_change_similar_dissimilar"] = [sv["C6_scale"] for sv in sims]
            if k < 2:
                c.verdict = NO_INTERVAL
                c.interval = "varies only across seeds: one seed gives no interval"
            else:
                c.lo, c.hi = percentile_interval(arr[rng.integers(k, size=(replicates, k))].mean(axis=1), confidence)
                c.verdict = verdict(c.lo, c.hi)
                c.interval = f"bootstrap over {k} seeds, {replicates} replicates, percentile"

    for name in mitigation.PAPER_STRATEGIES:  # Table 5's order
        if name not in roles["strategies"]:
            continue
        c = _new_claim("C7a", strategy=name)
        from_draws(c, f"C7a {name}", ["vanilla"], items_note, arms=[roles["strategies"][name]])
        claims.append(c)
    c = _new_claim("C7b")
    paper = paper_c7b()
    c.paper = {m: (1.0 if v["best_printed"] == "ER_10" else 0.0) for m, v in paper.items()}
    c.paper_note = ("first by combined score as printed: "
                    + ", ".join(f"{m} {v['best_printed']}" for m, v in paper.items())
                    + "; with each misprinted EA average replaced by the mean of its four scores: "
                    + ", ".join(f"{m} {v['best_recomputed']}" for m, v in paper.items()))
    claims.append(c)
    combined_keys = {s: f"combined {s}" for s in roles["strategies"]}
    if "ER_10" not in roles["strategies"]:
        c.verdict, c.note = NOT_RUN, "the parameter set has no ER_10 arm among its mitigation arms"
    elif any(k_ not in draws for k_ in combined_keys.values()):
        gone = [a for a in roles["strategies"].values() if a in missing]
        c.verdict, c.note = MISSING, (missing[gone[0]] if gone else "not evaluated")
    else:
        names = list(combined_keys)
        stack = np.stack([draws[combined_keys[s]] for s in names])
        c.share = float(np.mean(np.array(names)[stack.argmax(axis=0)] == "ER_10"))
        c.value = point[combined_keys["ER_10"]] - max(point[combined_keys[s]] for s in names if s != "ER_10")
        c.verdict = share_verdict(c.share)
        c.interval = f"{items_note}; value: ER_10's combined minus the best other strategy's"
        c.extra["point_ranking"] = sorted(names, key=lambda s: -point[combined_keys[s]])
    for cid in ("C8a", "C8b"):
        c = _new_claim(cid)
        from_draws(c, cid, ["reverse"] + (["mixture"] if cid == "C8b" else []), items_note)
        claims.append(c)

    # Many claims at once: the share of rows that a 95% interval misjudges by chance grows with
    # their number. The family-wise column widens every interval to 1 - 0.05 / m (Bonferroni).
    decided = [c for c in claims if c.lo is not None and c.id != "C7b"]
    m = len(decided) + (1 if claims and any(c.id == "C7b" and c.share is not None for c in claims) else 0)
    fw_conf = 1 - (1 - confidence) / max(m, 1)
    for c in claims:
        if c.lo is not None and c.id in draws:  # DES has no draws: its row keeps no family-wise verdict
            lo, hi = percentile_interval(draws[c.id], fw_conf)
            c.verdict_familywise = verdict(lo, hi, c.margin)
    c7b = next((c for c in claims if c.id == "C7b"), None)
    if c7b is not None and c7b.share is not None:
        c7b.verdict_familywise = share_verdict(c7b.share, 1 - (1 - SHARE_THRESHOLD) / max(m, 1))

    by_id = {c.id: c for c in claims}
    half = {"similar": by_id["C2"].half_width, "dissimilar": by_id["C3a"].half_width}
    components = ability_components(params)
    items_per_task: dict[str, dict[str, int]] = {}
    for b, tasks in task_plan(params).items():  # the params' order, as the tables show them
        for t, _lang in tasks:
            if (b, t) in items:
                items_per_task.setdefault(b, {})[t] = items[(b, t)]
    for (b, t), n in items.items():  # AlpacaEval runs outside lm-eval's plan
        items_per_task.setdefault(b, {}).setdefault(t, n)
    meta = {"seeds": [r.params.seed for r in runs], "replicates": replicates, "confidence": confidence,
            "familywise_confidence": fw_conf, "claims_tested": m, "margin_C2": f.margin,
            "ea_change_half_width": half, "items_per_task": items_per_task, "roles": roles,
            "ea_components": components["EA"], "ma_components": components["MA"], "suite": suite_hash(params)}
    return claims, meta


def benchmark_changes(runs: Sequence[SeedRun], pairs: dict[str, tuple[str, str]], replicates: int | None = None,
                      confidence: float | None = None, seed: int | None = None):
    """Per benchmark (and EA, MA), the change from the first to the second model of each pair
    with its paired-bootstrap interval: what an EA or MA change is made of. ``pairs``: label ->
    (before, after), e.g. {"similar": ("p1_alpaca", "p2_alpaca")}. Seeds first, then items."""
    import pandas as pd

    params = runs[0].params
    replicates = replicates or params.findings.n_bootstrap
    confidence = confidence or params.findings.confidence
    rng = np.random.default_rng(params.seed if seed is None else seed)
    k = len(runs)
    names = list(dict.fromkeys(n for pair in pairs.values() for n in pair))
    per_seed, points = [], []
    for run in runs:
        scores = {n: item_scores(run.params, run.store, n) for n in names}
        boot = ItemBootstrap(run.params, scores, replicates * k, rng)
        arrays, values = {}, {}
        for label, (a, b) in pairs.items():
            da, db = boot.ability(a), boot.ability(b)
            pa, pb = boot.ability(a, point=True), boot.ability(b, point=True)
            for q in [*boot.tasks, "EA", "MA"]:
                arrays[(label, q)] = db[q] - da[q]
                values[(label, q)] = pb[q] - pa[q]
                values[(label, q, "before")], values[(label, q, "after")] = pa[q], pb[q]
        per_seed.append(arrays)
        points.append(values)
    point, draws = _combine_seeds(per_seed, points, replicates, rng)
    rows = []
    for (label, q), arr in draws.items():
        lo, hi = percentile_interval(arr, confidence)
        before, after = (float(np.mean([p[(label, q, w)] for p in points])) for w in ("before", "after"))
        rows.append({"pair": label, "benchmark": q, "before": before, "after": after, "change": point[(label, q)],
                     "low": lo, "high": hi})
    order = {q: i for i, q in enumerate([*ENGLISH_BENCHMARKS, "EA", *MULTILINGUAL_BENCHMARKS, "MA"])}
    df = pd.DataFrame(rows)
    df = df.sort_values(["pair", "benchmark"], key=lambda c: c.map(order) if c.name == "benchmark" else c)
    return df.set_index(["pair", "benchmark"])



# --------------------------------------------------------------------------- output


def claims_frame(claims: Sequence[Claim]):
    """The claims table as a DataFrame (one row per claim), as the notebook shows it."""
    import pandas as pd

    rows = []
    for c in claims:
        rows.append({"claim": c.id, "statement": c.claim, "quantity": c.quantity,
                     "paper Mistral-7B": c.paper.get("Mistral-7B"), "paper Llama-3-8B": c.paper.get("Llama-3-8B"),
                     "ours": c.value, "95% low": c.lo, "95% high": c.hi, "share": c.share, "verdict": c.verdict,
                     "family-wise": c.verdict_familywise, "note": "; ".join(x for x in (c.paper_note, c.note) if x)})
    return pd.DataFrame(rows).set_index("claim")


def _fmt(v: float | None, signed: bool = True) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


RULE_TEXT = (
    "Each quantity is oriented so that a positive value is the paper's direction. A claim is "
    "**reproduced** when its 95% interval lies above 0 (above -{margin} for C2, a non-inferiority "
    "claim with margin {margin}), **contradicted** when it lies below 0 (below -{margin} for C2), "
    "and **inconclusive** otherwise. C7b is reproduced when ER_10 ranks first in at least 95% of "
    "the bootstrap replicates and contradicted when in at most 5%. A claim without an interval "
    "(MPD and the representation change on one seed) is inconclusive (no interval); a claim whose "
    "arms the parameter set lacks is not run.")


def findings_markdown(claims: Sequence[Claim], meta: dict[str, Any], title: str) -> str:
    """The findings as Markdown: the rule, the table, the half-widths, what the intervals rest on."""
    lines = [f"# Findings: {title}", "",
             "Generated by notebook `09_findings` from the run store; no number here is typed by hand. "
             "Method: docs/METHODS.md, \"Deciding a claim\".", "",
             RULE_TEXT.format(margin=meta["margin_C2"]), "",
             f"Seeds: {meta['seeds']}; {meta['replicates']} bootstrap replicates; intervals at "
             f"{meta['confidence']:.0%}. {meta['claims_tested']} claims are tested at once: even if none held, "
             "a few 95% intervals would exclude 0 by chance, so a single `reproduced` is weak evidence on its "
             f"own. The family-wise column repeats each verdict at {meta['familywise_confidence']:.2%} "
             "(Bonferroni), which holds the chance of any false verdict in the table at 5%.", "",
             "| claim | statement | quantity | paper Mistral-7B | paper Llama-3-8B | ours [95% interval] | verdict "
             "| family-wise | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in claims:
        if c.id == "C7b":
            ours = "—" if c.share is None else f"share {c.share:.3f} (combined lead {_fmt(c.value)})"
            paper = [("first" if c.paper.get(m) else "not first") if c.paper else "—"
                     for m in ("Mistral-7B", "Llama-3-8B")]
        else:
            ours = "—" if c.value is None else (
                f"{_fmt(c.value)} [{_fmt(c.lo)}, {_fmt(c.hi)}]" if c.lo is not None else f"{_fmt(c.value)}")
            paper = [_fmt(c.paper.get(m)) for m in ("Mistral-7B", "Llama-3-8B")]
        note = "; ".join(x for x in (c.paper_note, c.note, c.interval) if x).replace("|", "/")
        lines.append(f"| {c.id} | {c.claim} | {c.quantity} | {paper[0]} | {paper[1]} | {ours} | **{c.verdict}** "
                     f"| {c.verdict_familywise or '—'} | {note} |")
    hw = meta["ea_change_half_width"]
    lines += ["", "Half-widths of the 95% interval of each Phase-2 pair's EA change (P1 -> P2): "
              + ", ".join(f"{k} pair {_fmt(v, signed=False)}" for k, v in hw.items()) + ".", "",
              "EA averages: " + (", ".join(meta["ea_components"]) or "none") + "; MA averages: "
              + (", ".join(meta["ma_components"]) or "none") + ". Items per task: "
              + "; ".join(f"{b}: " + ", ".join(f"{t} {n}" for t, n in tasks.items())
                          for b, tasks in meta["items_per_task"].items()) + ".", "",
              f"Evaluation suite {meta['suite']}. Arms compared: "
              + ", ".join(f"{k} = {v}" for k, v in meta["roles"].items() if k != "strategies" and v)
              + "; strategies: " + ", ".join(f"{s} = {a}" for s, a in meta["roles"]["strategies"].items()) + "."]
    return "\n".join(lines) + "\n"


def write_findings(store: RunStore, claims: Sequence[Claim], meta: dict[str, Any], title: str,
                   copy_to: Path | str | None = None) -> dict[str, str]:
    """``<run_dir>/findings.json`` and ``findings.md`` (and a copy of the Markdown in ``copy_to``,
    the figures folder, where the default run's is committed); returns their paths."""
    json_path, md_path = store.findings_json, store.findings_md
    text = findings_markdown(claims, meta, title)
    atomic_write_json(json_path, {"claims": [asdict(c) | {"half_width": c.half_width} for c in claims], **meta})
    atomic_write_text(md_path, text)
    out = {"json": str(json_path), "md": str(md_path)}
    if copy_to is not None:
        out["copy"] = str(Path(copy_to) / "findings.md")
        atomic_write_text(Path(out["copy"]), text)
    return out


def load_findings(store: RunStore) -> dict[str, Any]:
    path = store.findings_json
    if not path.exists():
        raise MissingArtifact(f"no findings in the run store ({path}); run notebook 09_findings")
    return read_json(path)


def phase2_pairs(meta: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The similar and dissimilar Phase-2 pairs ``decide_claims`` found (its ``meta["roles"]``),
    as ``benchmark_changes`` takes them: pair -> (Phase-1 arm, Phase-2 arm); a pair the params
    lack is left out."""
    roles = meta["roles"]
    return {k: (roles[f"{k}_p1"], roles[k]) for k in ("similar", "dissimilar") if roles[k]}


def precision_report(meta: dict[str, Any]) -> str:
    """What the EA change's precision rests on: each pair's interval half-width, what EA and MA
    average, and the items per task (``decide_claims``'s ``meta``)."""
    widths = {pair: round(hw, 4) if hw is not None else None for pair, hw in meta["ea_change_half_width"].items()}
    return (f"EA change, half-width of the 95% interval: {widths}\n"
            f"EA averages: {meta['ea_components']} | MA averages: {meta['ma_components']}\n"
            f"items per task: {meta['items_per_task']}")


def verdict_lines(claims: Sequence[Claim]) -> str:
    """One line per claim: id, verdict, and its share (C7b) or value with interval."""
    def shown(c: Claim) -> str:
        if c.share is not None:
            return f"share {c.share:.3f}"
        if c.lo is not None:
            return f"{c.value:+.3f} [{c.lo:+.3f}, {c.hi:+.3f}]"
        return f"{c.value:+.3f}" if c.value is not None else "—"

    return "\n".join(f"{c.id:>14}  {c.verdict:<27} {shown(c)}" for c in claims)
