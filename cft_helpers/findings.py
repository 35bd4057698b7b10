"""The paper's claims, decided on the run store: one row per claim, a 95% interval, a verdict.

Read-only: it trains and evaluates nothing. It reads what notebooks 05 (DES, MPD), 06 (per-item
evaluation scores in ``eval/<model>.samples.jsonl``) and 07 (representation change) wrote, and
decides each claim by one stated rule (docs/METHODS.md, "Deciding a claim"):

- orient the claim's quantity so that a positive value is the paper's direction;
- ``reproduced`` when the interval's lower end is above 0 (above ``-margin`` for the
  non-inferiority claim C2), ``contradicted`` when its upper end is below 0 (below ``-margin``),
  ``inconclusive`` otherwise;
- intervals that hold their level (``Estimate``): with one seed, the percentile interval of a
  paired bootstrap over evaluation items (the same item indices drawn for every model in a
  replicate); with several seeds, a t-interval over the seeds' values with k - 1 degrees of
  freedom (a bootstrap over 3 seeds is [min, max] of them and covers about 75%). DES carries its
  own bootstrap sd; MPD and the representation change vary only across seeds, so they need 3;
- every verdict also at the family-wise level (Bonferroni over the rows with an interval), from
  t or normal intervals, whose far tails do not rest on a handful of replicates;
- an English slot with a chance level (the multiple-choice MMLU and HellaSwag slots) enters EA
  only if every Phase-1 model scores clearly above chance on it (``slot_checks``).

    claims, meta = decide_claims(seed_runs(params))    # one (params, store) per seed
    write_findings(store, claims, meta, title)         # findings_report: findings.json and .md

The rule and the intervals are in :mod:`cft_helpers.intervals`; the table, the Markdown and the
files in :mod:`cft_helpers.findings_report`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from cft_helpers import mitigation, paper_results as pr
from cft_helpers.evaluation.harness import ability_components, suite_hash, task_plan
from cft_helpers.params import ENGLISH_BENCHMARKS, MULTILINGUAL_BENCHMARKS, Params, for_seed
from cft_helpers.representations import load_representation_summary
from cft_helpers.runs import MissingArtifact
from cft_helpers.similarity import load_similarity_summary
from cft_helpers.intervals import (CHANCE, CONTRADICTED, INCONCLUSIVE, MISSING, NO_INTERVAL, NOT_RUN, REPRODUCED,
                                   SEED_ONLY_MIN_SEEDS, Estimate, SeedRun, SeedScores, estimate, seeds_needed,
                                   verdict)


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
    lo_familywise: float | None = None
    hi_familywise: float | None = None
    seeds_in_direction: list[int] | None = None   # [n, k]: n of k seeds on the paper's side
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2


def seed_runs(params: Params) -> list[SeedRun]:
    """One SeedRun per seed of the study (``params.seed_list()``), each with its own run store."""
    runs = []
    for seed in params.seed_list():
        p = for_seed(params, seed)
        runs.append(SeedRun(p))
    return runs


MODELS = ("Mistral-7B", "Llama-3-8B")


def _reverse_ma(model: str) -> tuple[float, float, float | None]:
    """Table B4's MULTIALPACA -> ALPACA MA after phase 1 and phase 2 as printed, and the phase-2
    average recomputed from its three scores where the paper misprints it (else None)."""
    m1, m2 = pr.REVERSE_MA[(model, "MULTIALPACA", "ALPACA")]
    fixed = pr.recomputed_average("B4", model, "MULTIALPACA -> ALPACA", "P2", "MA average")
    return m1, m2, fixed


def _paper_values(claim_id: str, strategy: str | None = None) -> tuple[dict[str, float | None], str]:
    """The paper's value of a claim's oriented quantity for Mistral-7B and Llama-3-8B, computed
    from the transcribed tables (cft_helpers.paper_results), and a note where they disagree or
    where a value rests on an average the paper misprints (the value recomputed beside it)."""
    ea, ma = pr.ENGLISH_ABILITY, pr.MULTILINGUAL_ABILITY

    def comb(e, m):
        return (e + m) / 2

    vals: dict[str, float | None] = {}
    fixed: dict[str, float] = {}   # the value with a misprinted average recomputed
    note = ""
    for m in MODELS:
        sim_e, dis_e = ea[(m, "ALPACA", "MULTIALPACA")], ea[(m, "Instruct", "MULTIALPACA")]
        mix_e, mix_m = pr.MIXTURE[(m, "ALPACA + MULTIALPACA")]
        if claim_id == "C1":
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
            r, v = pr.paper_strategy_row(m, strategy), pr.paper_strategy_row(m, "vanilla")
            if r is not None and ("note" in r or "note" in v):
                fixed[m] = r.get("EA (mean of its benchmarks)", r["EA"]) - v.get("EA (mean of its benchmarks)", v["EA"])
        elif claim_id == "C7b":   # ER_10's combined minus ``strategy``'s (Table 5)
            er, other = pr.paper_strategy_row(m, "ER_10"), pr.paper_strategy_row(m, strategy)
            vals[m] = None if er is None or other is None else er["combined"] - other["combined"]
            if er is not None and other is not None and ("note" in er or "note" in other):
                fixed[m] = (er.get("combined (from that mean)", er["combined"])
                            - other.get("combined (from that mean)", other["combined"]))
        elif claim_id in ("C8a", "C8b", "C8c", "C8d"):
            e2 = pr.REVERSE_EA[(m, "MULTIALPACA", "ALPACA")][1]
            m1, m2, m2_fixed = _reverse_ma(m)
            forward = ma[(m, "ALPACA", "MULTIALPACA")][1]
            quantity = {"C8a": lambda r2: m1 - r2, "C8b": lambda r2: forward - r2, "C8c": lambda r2: mix_m - r2,
                        "C8d": lambda r2: comb(mix_e, mix_m) - comb(e2, r2)}[claim_id]
            vals[m] = quantity(m2)
            if m2_fixed is not None:
                fixed[m] = quantity(m2_fixed)
    if claim_id == "C6":
        note = "Figure 2 prints no numbers: larger for Instruct -> MULTIALPACA in both models (read from the figure)"
    elif claim_id in ("C4", "C5"):
        note = "the paper reports it for Mistral-7B only"
    if fixed:
        where = {"C7a": "Table 5 misprints the EA average of this row or of vanilla; with each row's EA as the "
                        "mean of its four scores",
                 "C7b": "Table 5 misprints an EA average, and its combined score with it; with the combined "
                        "score from the mean of the four EA scores"}.get(
            claim_id, "Table B4 misprints the reverse order's Phase-2 MA average; recomputed from its three scores")
        note = f"{where}: " + ", ".join(f"{m} {v:+.3f}" for m, v in fixed.items())
    given = [v for v in vals.values() if v is not None]
    if len(given) == 2 and (given[0] > 0) != (given[1] > 0):
        note = "; ".join(x for x in (note, "the paper's two models disagree in sign") if x)
    return {m: (None if v is None else round(v, 4)) for m, v in vals.items()}, note


def paper_c7b() -> dict[str, Any]:
    """Which strategy has the best combined score of Table 5 in the paper, per model: as printed,
    and with each misprinted EA average replaced by the mean of its four scores (Mistral-7B
    ER_10: 0.599 printed, 0.472 the mean)."""
    out = {}
    for m in MODELS:
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
    """Which arms each claim compares (``params.findings`` names them; a missing one is None), and
    the model each Phase-1 arm starts from (its base, for the construct check)."""
    f = params.findings
    similar, dissimilar = _arm_or_none(params, f.similar), _arm_or_none(params, f.dissimilar)
    reverse = _arm_or_none(params, f.reverse)
    table5 = params.strategy_arms()
    vanilla = [a for a in table5 if mitigation.is_baseline(params.arms[a].strategy)]
    roles = {"similar": similar, "similar_p1": params.arms[similar].start if similar else None,
             "dissimilar": dissimilar, "dissimilar_p1": params.arms[dissimilar].start if dissimilar else None,
             "mixture": _arm_or_none(params, f.mixture), "reverse": reverse,
             "reverse_p1": params.arms[reverse].start if reverse else None,
             "vanilla": vanilla[0] if vanilla else None,
             "strategies": {params.arms[a].strategy: a for a in table5
                            if not mitigation.is_baseline(params.arms[a].strategy)}}
    bases = {}
    for key in ("similar_p1", "dissimilar_p1"):
        p1 = roles[key]
        if p1 in params.arms and params.arms[p1].datasets:  # trained here: compare with its start
            bases[p1] = params.arms[p1].start
    roles["bases"] = bases
    return roles


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
    "C7b vs": ("ER_10's combined score is above {s}'s.",
               "combined(ER_10) - combined({s})"),
    "C7b": ("ER_10 has the best combined score among the mitigation strategies.",
            "ER_10's combined minus each other strategy's (the rows above): reproduced if every one is "
            "above 0, contradicted if any is below 0"),
    "C8a": ("The reverse order loses Multilingual Ability in its second (English) phase.",
            "MA(reverse P1) - MA(reverse P2)"),
    "C8b": ("The reverse order ends below the two-phase order in Multilingual Ability.",
            "MA(similar P2) - MA(reverse P2)"),
    "C8c": ("The reverse order ends below the mixture in Multilingual Ability.",
            "MA(mixture) - MA(reverse P2)"),
    "C8d": ("The reverse order ends below the mixture in the combined score.",
            "combined(mixture) - combined(reverse P2)"),
}


def _new_claim(claim_id: str, strategy: str | None = None, margin: float = 0.0) -> Claim:
    key = "C7b vs" if claim_id == "C7b" and strategy else claim_id
    text, quantity = CLAIM_TEXT[key]
    paper, note = _paper_values(claim_id, strategy) if key != "C7b" else ({}, "")
    cid = f"C7a {strategy}" if claim_id == "C7a" else f"C7b vs {strategy}" if key == "C7b vs" else claim_id
    return Claim(id=cid, claim=text.format(s=strategy), quantity=quantity.format(s=strategy),
                 paper=paper, paper_note=note, margin=margin)


def _decide(c: Claim, est: Estimate, confidence: float, replicates: int) -> None:
    """Fill a claim's value, interval, verdict and seed count from its Estimate."""
    c.value = est.value
    c.lo, c.hi = est.interval(confidence)
    c.verdict = verdict(c.lo, c.hi, c.margin)
    c.interval = est.method(replicates)
    if est.k > 1:
        c.seeds_in_direction = [est.in_direction(c.margin), est.k]
        c.interval += f"; {c.seeds_in_direction[0]} of {est.k} seeds in the paper's direction"
        if c.verdict == INCONCLUSIVE:
            need = seeds_needed(est.values, confidence, c.margin, min_se=est.min_se)
            c.note = "; ".join(x for x in (c.note, (
                f"with this spread, about {need} seeds would decide it" if need else
                "its seeds average exactly on the line: no number of seeds would decide it")) if x)
    c.extra["estimate"] = est


def slot_checks(seeds: Sequence[SeedScores], roles: dict[str, Any], confidence: float, margin: float
                ) -> dict[str, dict[str, Any]]:
    """Whether each English slot with a chance level (``CHANCE``) counts towards EA: only if every
    Phase-1 model's score interval lies above chance + ``margin`` (a stand-in on which the Phase-1
    models sit at chance measures nothing and can lose nothing). Per slot: the chance level, the
    line, each Phase-1 model's score [interval], and ``counts``."""
    out: dict[str, dict[str, Any]] = {}
    p1s = [roles[k] for k in ("similar_p1", "dissimilar_p1") if roles[k]]
    benches = set().union(*(s.boot.tasks for s in seeds if s.boot)) if any(s.boot for s in seeds) else set()
    for bench, chance in CHANCE.items():
        if bench not in benches:
            continue
        entry: dict[str, Any] = {"chance": chance, "line": chance + margin, "p1": {}}
        for p1 in p1s:
            est = estimate(seeds, lambda a, p1=p1: a[p1][bench], [p1])
            if est is None:
                entry["p1"][p1] = None
                continue
            lo, hi = est.interval(confidence)
            entry["p1"][p1] = {"value": est.value, "lo": lo, "hi": hi}
        entry["counts"] = bool(p1s) and all(v is not None and v["lo"] is not None and v["lo"] > entry["line"]
                                            for v in entry["p1"].values())
        out[bench] = entry
    return out


def phase1_against_base(seeds: Sequence[SeedScores], roles: dict[str, Any], confidence: float,
                        exclude: frozenset[str]) -> dict[str, dict[str, Any]]:
    """Each trained Phase-1 model's English slots and EA minus its base model's, with intervals:
    whether Phase 1 taught something that Phase 2 could keep or lose (``above``: EA's interval
    above 0)."""
    out: dict[str, dict[str, Any]] = {}
    for p1, base in roles["bases"].items():
        if not all(n in s.scores for s in seeds for n in (p1, base)):
            out[p1] = {"base": base, "above": None}
            continue
        entry: dict[str, Any] = {"base": base}
        benches = [b for b in ENGLISH_BENCHMARKS if b in seeds[0].boot.tasks and b not in exclude] + ["EA"]
        for b in benches:
            est = estimate(seeds, lambda a, b=b: a[p1][b] - a[base][b], [p1, base], exclude)
            lo, hi = est.interval(confidence)
            entry[b] = {"value": est.value, "lo": lo, "hi": hi}
        entry["above"] = entry["EA"]["lo"] is not None and entry["EA"]["lo"] > 0
        out[p1] = entry
    return out


def _seed_values(run: SeedRun, roles: dict[str, Any]) -> dict[str, Any]:
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


def _wanted(roles: dict[str, Any]) -> list[str]:
    names = [roles[k] for k in ("similar", "similar_p1", "dissimilar", "dissimilar_p1", "mixture", "reverse",
                                "reverse_p1", "vanilla")] + list(roles["strategies"].values()) + list(roles["bases"].values())
    return list(dict.fromkeys(n for n in names if n))


def decide_claims(runs: Sequence[SeedRun], replicates: int | None = None, confidence: float | None = None,
                  seed: int | None = None) -> tuple[list[Claim], dict[str, Any]]:
    """Every claim's value, interval and verdict from the runs of one or more seeds.

    Returns the claims (in the paper's order) and what the intervals rest on (seeds, replicates,
    items per task, the slots EA averages and those it leaves out, each Phase-1 model against its
    base and against chance, half-widths of both pairs' EA change)."""
    if not runs:
        raise ValueError("decide_claims needs at least one (params, store) run")
    params = runs[0].params
    f = params.findings
    replicates = replicates or f.n_bootstrap
    confidence = confidence or f.confidence
    rng = np.random.default_rng(params.seed if seed is None else seed)
    roles = claim_roles(params)
    k = len(runs)
    seeds = [SeedScores(run, _wanted(roles), replicates, rng) for run in runs]
    missing = {n: why for s in seeds for n, why in s.missing.items()}
    checks = slot_checks(seeds, roles, confidence, f.chance_margin) if all(s.boot for s in seeds) else {}
    dropped = frozenset(b for b, c in checks.items() if not c["counts"])
    against_base = phase1_against_base(seeds, roles, confidence, dropped) if all(s.boot for s in seeds) else {}

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

    def evaluation_claim(c: Claim, fn: Callable[[dict], Any], role_keys: Sequence[str], arms: Sequence[str] = ()
                         ) -> Claim:
        why = lacking(role_keys)
        if why:
            c.verdict, c.note = NOT_RUN, why
            return c
        needs = [roles[r] for r in role_keys] + list(arms)
        est = estimate(seeds, fn, needs, dropped) if all(s.boot for s in seeds) else None
        if est is None:
            gone = [n for n in needs if n in missing]
            c.verdict, c.note = MISSING, (missing[gone[0]] if gone else "not evaluated")
            return c
        _decide(c, est, confidence, replicates)
        return c

    s, s1, d, d1 = roles["similar"], roles["similar_p1"], roles["dissimilar"], roles["dissimilar_p1"]
    mix, r2, r1, van = roles["mixture"], roles["reverse"], roles["reverse_p1"], roles["vanilla"]
    claims.append(evaluation_claim(_new_claim("C1"), lambda a: a[s]["combined"] - a[mix]["combined"],
                                   ["similar", "mixture"]))
    claims.append(evaluation_claim(_new_claim("C2", margin=f.margin), lambda a: a[s]["EA"] - a[s1]["EA"],
                                   ["similar", "similar_p1"]))
    claims.append(evaluation_claim(_new_claim("C3a"), lambda a: a[d1]["EA"] - a[d]["EA"],
                                   ["dissimilar", "dissimilar_p1"]))
    claims.append(evaluation_claim(_new_claim("C3b"), lambda a: (a[d1]["EA"] - a[d]["EA"]) - (a[s1]["EA"] - a[s]["EA"]),
                                   ["dissimilar", "dissimilar_p1", "similar", "similar_p1"]))
    # A Phase-1 model that is not above its base on EA taught nothing Phase 2 could keep or lose.
    for c in claims[1:4]:
        used = {"C2": [s1], "C3a": [d1], "C3b": [s1, d1]}[c.id]
        flat = [p for p in used if against_base.get(p, {}).get("above") is False]
        if flat:
            c.note = "; ".join(x for x in (c.note, "compares nothing: " + ", ".join(
                f"{p} is not above its base {roles['bases'][p]!r} in EA" for p in flat)) if x)

    sims = [_seed_values(run, roles) for run in runs]
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
            # DES carries its own bootstrap sd (rows resampled); across seeds a t-interval whose
            # standard error is at least one seed's own sd: seeds that share their rows (hub data)
            # share that noise, and it does not average out
            sds = [v[1] for v in vals]
            est = Estimate([v[0] for v in vals], sd=sds[0] if k == 1 else None,
                           min_se=float(np.sqrt(np.mean(np.square(sds)))) if k > 1 else 0.0)
            _decide(c, est, confidence, replicates)
            c.interval = ("normal from DES's bootstrap sd (rows resampled; the two DES treated as independent)"
                          if k == 1 else c.interval + "; standard error at least DES's own bootstrap sd")
        else:
            est = Estimate([float(v) for v in vals], min_seeds=SEED_ONLY_MIN_SEEDS)
            _decide(c, est, confidence, replicates)
            if c.lo is None:
                c.verdict = NO_INTERVAL
                c.seeds_in_direction = [est.in_direction(), est.k]
            if cid == "C6":
                c.extra["mean_change_similar_dissimilar"] = [sv["C6_scale"] for sv in sims]

    strategies = [n for n in mitigation.PAPER_STRATEGIES if n in roles["strategies"]]  # Table 5's order
    for name in strategies:
        arm = roles["strategies"][name]
        claims.append(evaluation_claim(_new_claim("C7a", strategy=name), lambda a, arm=arm: a[arm]["EA"] - a[van]["EA"],
                                       ["vanilla"], arms=[arm]))
    er = roles["strategies"].get("ER_10")
    leads: list[Claim] = []
    if er:
        for name in strategies:
            if name == "ER_10":
                continue
            arm = roles["strategies"][name]
            leads.append(evaluation_claim(_new_claim("C7b", strategy=name),
                                          lambda a, arm=arm: a[er]["combined"] - a[arm]["combined"], [], arms=[er, arm]))
        claims += leads
    c = _new_claim("C7b")
    paper = paper_c7b()
    c.paper = {m: (1.0 if v["best_printed"] == "ER_10" else 0.0) for m, v in paper.items()}
    c.paper_note = ("first by combined score as printed: "
                    + ", ".join(f"{m} {v['best_printed']}" for m, v in paper.items())
                    + "; with each misprinted EA average replaced by the mean of its four scores: "
                    + ", ".join(f"{m} {v['best_recomputed']}" for m, v in paper.items()))
    claims.append(c)
    if not er:
        c.verdict, c.note = NOT_RUN, "the parameter set has no ER_10 arm among its mitigation arms"
    elif not leads:
        c.verdict, c.note = NOT_RUN, "the parameter set has no other strategy to compare ER_10 with"
    elif any(x.verdict in (MISSING, NOT_RUN) for x in leads) and not any(x.verdict == CONTRADICTED for x in leads):
        gone = next(x for x in leads if x.verdict in (MISSING, NOT_RUN))
        c.verdict, c.note = gone.verdict, gone.note
    elif any(x.verdict in (MISSING, NOT_RUN) for x in leads):  # one lead below 0 refutes it already
        c.value = min(x.value for x in leads if x.value is not None)
        c.verdict, c.interval = CONTRADICTED, "the rows above: a lead below 0 (others missing)"
    else:
        c.value = min(x.value for x in leads)
        c.verdict = _all_of(x.verdict for x in leads)
        c.interval = "the rows above: each lead with its own interval"
        if k == 1:  # the share of replicates in which ER_10 ranks first: a note, not a test
            names = strategies
            stack = np.stack([seeds[0].ability(roles["strategies"][n], False, dropped)["combined"] for n in names])
            c.share = float(np.mean(np.array(names)[stack.argmax(axis=0)] == "ER_10"))
            c.note = f"ER_10 ranks first in {c.share:.1%} of the bootstrap replicates (not a calibrated test)"
        c.extra["point_ranking"] = sorted(strategies, key=lambda n: -float(np.mean(
            [sd.ability(roles["strategies"][n], True, dropped)["combined"] for sd in seeds])))

    claims.append(evaluation_claim(_new_claim("C8a"), lambda a: a[r1]["MA"] - a[r2]["MA"], ["reverse", "reverse_p1"]))
    claims.append(evaluation_claim(_new_claim("C8b"), lambda a: a[s]["MA"] - a[r2]["MA"], ["reverse", "similar"]))
    claims.append(evaluation_claim(_new_claim("C8c"), lambda a: a[mix]["MA"] - a[r2]["MA"], ["reverse", "mixture"]))
    claims.append(evaluation_claim(_new_claim("C8d"), lambda a: a[mix]["combined"] - a[r2]["combined"],
                                   ["reverse", "mixture"]))

    # Many claims at once: the family-wise column widens every interval to 1 - 0.05 / m
    # (Bonferroni, m the rows with an interval), from t or normal intervals.
    decided = [c for c in claims if c.lo is not None and math.isfinite(c.lo) and math.isfinite(c.hi)]
    m = len(decided)
    fw_conf = 1 - (1 - confidence) / max(m, 1)
    for c in decided:
        c.lo_familywise, c.hi_familywise = c.extra["estimate"].interval(fw_conf, familywise=True)
        c.verdict_familywise = verdict(c.lo_familywise, c.hi_familywise, c.margin)
    c7b = next(c for c in claims if c.id == "C7b")
    if leads and (all(x.verdict_familywise for x in leads)
                  or any(x.verdict_familywise == CONTRADICTED for x in leads)):
        c7b.verdict_familywise = _all_of(x.verdict_familywise for x in leads if x.verdict_familywise)
    for c in claims:
        c.extra.pop("estimate", None)

    by_id = {c.id: c for c in claims}
    half = {"similar": by_id["C2"].half_width, "dissimilar": by_id["C3a"].half_width}
    items: dict[tuple[str, str], int] = seeds[0].boot.items if seeds[0].boot else {}
    items_per_task: dict[str, dict[str, int]] = {}
    for b, tasks in task_plan(params).items():  # the params' order, as the tables show them
        for t, _lang in tasks:
            if (b, t) in items:
                items_per_task.setdefault(b, {})[t] = items[(b, t)]
    for (b, t), n in items.items():  # AlpacaEval runs outside lm-eval's plan
        items_per_task.setdefault(b, {}).setdefault(t, n)
    components = ability_components(params)
    meta = {"seeds": [r.params.seed for r in runs], "replicates": replicates, "confidence": confidence,
            "familywise_confidence": fw_conf, "claims_tested": m, "margin_C2": f.margin,
            "ea_change_half_width": half, "items_per_task": items_per_task, "roles": roles,
            "ea_components": [x for x in components["EA"] if x.split(" ")[0] not in dropped],
            "ma_components": components["MA"], "slot_checks": checks, "dropped": sorted(dropped),
            "phase1_against_base": against_base, "suite": suite_hash(params),
            "similarity_effect": similarity_effect(by_id), "scorers": slot_scorers(params),
            "paper_misprints": pr.misprints()}
    return claims, meta


def _all_of(verdicts) -> str:
    """C7b's rule over its leads: reproduced if every lead is, contradicted if any is, else inconclusive."""
    verdicts = list(verdicts)
    if any(v == CONTRADICTED for v in verdicts):
        return CONTRADICTED
    if verdicts and all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    return INCONCLUSIVE


def similarity_effect(by_id: dict[str, Claim]) -> dict[str, str]:
    """The paper's similarity effect as one verdict: reproduced when C2, C3a and C3b all are,
    contradicted when C3b is, inconclusive otherwise (C2 alone holds when nothing forgets at all);
    at the claims' level and family-wise."""
    out = {}
    for level, attr in (("claims", "verdict"), ("familywise", "verdict_familywise")):
        got = [getattr(by_id[c], attr) if c in by_id else None for c in ("C2", "C3a", "C3b")]
        out[level] = (REPRODUCED if all(v == REPRODUCED for v in got) else
                      CONTRADICTED if got[2] == CONTRADICTED else INCONCLUSIVE)
    return out


def slot_scorers(params: Params) -> dict[str, str]:
    """For each benchmark that runs: what stands in for it, its score, and where that is not the
    paper's metric, what the paper reports instead (the findings' footnote)."""
    paper_metric = {"ifeval": "prompt-level strict accuracy", "alpacaeval": "win rate against the reference",
                    "mmlu": "acc", "hellaswag": "acc_norm", "mlqa": "F1", "xquad": "F1", "xlsum": "ROUGE"}
    what = {
        "instructions": "held-out prompts stating 2-3 verifiable instructions, answers generated, scored by "
                        "lm-eval's IFEval checkers: share of each prompt's instructions followed",
        "ifeval": "the real IFEval prompts, scored by lm-eval's IFEval checkers",
        "mc": "four-option questions on held-out instances", "completion": "four endings of held-out answers",
        "response_ll": "per-byte probability of reference responses (teacher-forced, not generated)",
        "answer_line": "the answer-line convention of generated answers",
        "qa_lookup": "generated answers to which number an inventory lists, scored against the span",
        "qa_facts": "generated answers to a span of three fact sentences, scored against the span",
        "summary": "generated one-sentence summaries against the lead sentence",
    }
    out = {}
    for bench, b in params.evaluation.benchmarks.items():
        if b.source == "off":
            out[bench] = "not run (reported missing)"
            continue
        label = {"offline": what.get(b.task, b.task), "lm_eval": f"lm-eval task {b.task}",
                 "cft": f"our {b.task} task on the real data", "alpaca_eval": "alpaca_eval with a judge"}[b.source]
        scorer = f"; scorer {b.scorer}" if bench in ("mlqa", "xquad", "xlsum") else ""
        if bench == "xlsum":  # the paper names no ROUGE tokenizer: its numbers fit rouge_score's default
            scorer += (" (rouge_score's default tokenizer: an assumption, the paper names none)" if b.scorer == "paper"
                       else " (a tokenizer that reads every script; the paper's, rouge_score's default, is an "
                            "assumption: the paper names none)")
        metric = b.metric or ""
        differs = "" if metric in ("prompt_level_strict_acc", "acc", "f1", "win_rate") or (
            bench == "hellaswag" and metric == "acc_norm") or (bench == "xlsum" and metric.startswith("rouge")) \
            else f" (not the paper's metric: it reports {paper_metric[bench]})"
        out[bench] = f"{label}; {metric}{differs}{scorer}"
    return out


def benchmark_changes(runs: Sequence[SeedRun], pairs: dict[str, tuple[str, str]], replicates: int | None = None,
                      confidence: float | None = None, seed: int | None = None, exclude: Sequence[str] = ()):
    """Per benchmark (and EA, MA), the change from the first to the second model of each pair
    with its interval, drawn as the claims' are (one seed: paired bootstrap; several: t over
    seeds): what an EA or MA change is made of. ``pairs``: label -> (before, after), e.g.
    {"similar": ("p1_alpaca", "p2_alpaca")}; ``exclude``: slots EA leaves out (the claims'
    ``meta["dropped"]``)."""
    import pandas as pd

    params = runs[0].params
    replicates = replicates or params.findings.n_bootstrap
    confidence = confidence or params.findings.confidence
    rng = np.random.default_rng(params.seed if seed is None else seed)
    names = list(dict.fromkeys(n for pair in pairs.values() for n in pair))
    seeds = [SeedScores(run, names, replicates, rng) for run in runs]
    for s in seeds:
        if s.missing:
            raise MissingArtifact(next(iter(s.missing.values())))
    drop = frozenset(exclude)
    rows = []
    for label, (a, b) in pairs.items():
        for q in [*seeds[0].boot.tasks, "EA", "MA"]:
            est = estimate(seeds, lambda x, q=q: x[b][q] - x[a][q], [a, b], drop)
            lo, hi = est.interval(confidence)
            before = float(np.mean([s.ability(a, True, drop)[q] for s in seeds]))
            rows.append({"pair": label, "benchmark": q, "before": before, "after": before + est.value,
                         "change": est.value, "low": lo, "high": hi})
    order = {q: i for i, q in enumerate([*ENGLISH_BENCHMARKS, "EA", *MULTILINGUAL_BENCHMARKS, "MA"])}
    df = pd.DataFrame(rows)
    df = df.sort_values(["pair", "benchmark"], key=lambda c: c.map(order) if c.name == "benchmark" else c)
    return df.set_index(["pair", "benchmark"])


def plotted_intervals(runs: Sequence[SeedRun], names: Sequence[str] | None = None, replicates: int | None = None,
                      confidence: float | None = None, seed: int | None = None) -> dict[str, Any]:
    """What the figures plot of this run, with the findings' intervals: each model's EA, MA and
    combined, and each Phase-2 arm's EA change from its start, as (value, low, high), EA leaving
    out the slots the findings leave out (``dropped``). The same draws as ``decide_claims`` with
    the same seed and replicates: a figure's interval is the findings' (tests check it)."""
    params = runs[0].params
    replicates = replicates or params.findings.n_bootstrap
    confidence = confidence or params.findings.confidence
    rng = np.random.default_rng(params.seed if seed is None else seed)
    roles = claim_roles(params)
    names = list(names) if names is not None else params.evaluated_models()
    seeds = [SeedScores(run, list(dict.fromkeys([*_wanted(roles), *names])), replicates, rng) for run in runs]
    if not all(s.boot for s in seeds):
        return {"dropped": [], "abilities": {}, "ea_change": {}}
    dropped = frozenset(b for b, c in slot_checks(seeds, roles, confidence, params.findings.chance_margin).items()
                        if not c["counts"])
    out: dict[str, Any] = {"dropped": sorted(dropped), "abilities": {}, "ea_change": {}}
    for n in names:
        if any(n not in s.scores for s in seeds):
            continue
        out["abilities"][n] = {}
        for q in ("EA", "MA", "combined"):
            est = estimate(seeds, lambda a, q=q: a[n][q], [n], dropped)
            out["abilities"][n][q] = (est.value, *est.interval(confidence))
    for arm in params.arms_in_phase("phase2"):
        start = params.arms[arm].start
        est = estimate(seeds, lambda a: a[arm]["EA"] - a[start]["EA"], [arm, start], dropped)
        if est is not None:
            out["ea_change"][arm] = (est.value, *est.interval(confidence))
    return out
