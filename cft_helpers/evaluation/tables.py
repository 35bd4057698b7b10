"""The paper's result tables from evaluation records, with its published numbers beside ours.

    phase_table(params, results)     # Tables 1-2: EA / MA after Phase 1 and after Phase 2
    strategy_table(params, results)  # Table 5 (or "D8"): EA, MA, combined per mitigation strategy
"""

from __future__ import annotations

from typing import Any, Sequence

from cft_helpers.evaluation.harness import abilities
from cft_helpers.paper_results import paper_phase_scores, paper_strategy_columns
from cft_helpers.params import Params
from cft_helpers.reports import frozen_share_table


def phase_table(params: Params, results: dict[str, dict[str, Any]]):
    """Tables 1-2's shape: per Phase-2 arm, EA and MA of its Phase-1 model (P1) and of itself
    (P2), and the paper's values for the pair its label names (Mistral-7B, Llama-3-8B)."""
    import pandas as pd

    rows = []
    for arm in params.arms_in_phase("phase2", "reverse2"):
        start = params.arms[arm].start
        if arm not in results or start not in results:
            continue
        a1, a2 = abilities(params, results[start]), abilities(params, results[arm])
        row = {"arm": arm, "pair": params.arms[arm].label or arm, "EA P1": a1["EA"], "EA P2": a2["EA"],
               "MA P1": a1["MA"], "MA P2": a2["MA"]}
        for model, (e1, e2, m1, m2) in paper_phase_scores(params.arms[arm].label).items():
            row.update({f"paper {model} EA P1": e1, f"paper {model} EA P2": e2,
                        f"paper {model} MA P1": m1, f"paper {model} MA P2": m2})
        rows.append(row)
    return pd.DataFrame(rows).set_index("arm") if rows else pd.DataFrame()


def strategy_table(params: Params, results: dict[str, dict[str, Any]], table: str = "T5",
                   frozen_share: bool = False):
    """Table 5's shape for one mitigation table (``table`` "T5": Table 5, on MULTIALPACA; "D8":
    Table D8, on MOPENORCA; never pooled): per strategy arm, EA, MA and combined, the paper's
    values for the same table beside, as printed. A printed value the paper's own scores
    contradict is kept and marked: the recomputed value in "paper <model> EA (mean of its
    benchmarks)", the reason in "paper note" and in ``df.attrs["footnote"]``. With
    ``frozen_share``, each arm's frozen share of parameters beside, from the run store
    (reports.frozen_share_table)."""
    import pandas as pd

    arms = [a for a in params.strategy_arms(table=table) if a in results]
    rows, notes = [], []
    for arm in arms:
        ab = abilities(params, results[arm])
        strategy = params.arms[arm].strategy
        row = {"arm": arm, "strategy": strategy, "EA": ab["EA"], "MA": ab["MA"], "combined": ab["combined"]}
        columns, misprinted = paper_strategy_columns(strategy, table)
        row.update(columns)
        for model, paper in misprinted:
            row[f"paper {model} EA (mean of its benchmarks)"] = paper["EA (mean of its benchmarks)"]
            row["paper note"] = "; ".join(filter(None, [row.get("paper note"), paper["note"]]))
            notes.append(f"{arm}: {paper['note']} (combined from that mean: "
                         f"{paper['combined (from that mean)']:.3f})")
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows).set_index("arm")
    if frozen_share:
        frozen = frozen_share_table(params, arms)
        df = df.join(frozen[["frozen share", "frozen share of", "trainable params"]])
        notes.append("frozen share: of the model's weights; for LoRA of the base model's weights, which "
                     "all stay frozen while the adapters (trainable params) train")
    if "paper note" in df:  # last, where it is read after the numbers it marks
        df = df[[c for c in df.columns if c != "paper note"] + ["paper note"]]
    df.attrs["footnote"] = "\n".join(notes)
    return df


def throughput_table(results: dict[str, dict[str, Any]]):
    """Items evaluated through lm-eval, wall time and items per second per model; AlpacaEval
    (answers + judge, outside lm-eval) in its own columns where it ran."""
    import pandas as pd

    rows = {}
    for n, r in results.items():
        rows[n] = {"items": r.get("items"), "wall_s": r.get("wall_s"), "items_per_s": r.get("items_per_s")}
        if "alpacaeval_wall_s" in r:
            rows[n].update(alpacaeval_items=r["tasks"]["alpacaeval"]["n"], alpacaeval_wall_s=r["alpacaeval_wall_s"])
    return pd.DataFrame.from_dict(rows, orient="index")


def _kind(params: Params, name: str) -> str:
    if name not in params.arms:
        return "start"
    phase = params.arms[name].phase
    return "reverse" if phase.startswith("reverse") else phase


def tradeoff_points(params: Params, results: dict[str, dict[str, Any]],
                    intervals: dict[str, Any] | None = None) -> list[dict]:
    """EA and MA of every evaluated model, with its kind (start, phase1, phase2, mixture,
    reverse, mitigation) and, for arms trained from another evaluated model, where it came from.
    With ``intervals`` (``findings.plotted_intervals``), EA and MA are the findings' (over the
    seeds, EA without the slots the findings leave out) with their 95% interval ends
    ("EA_low", "EA_high", "MA_low", "MA_high")."""
    scores = {n: abilities(params, r) for n, r in results.items()}
    if intervals is not None:
        scores = {n: {q: v[0] for q, v in ab.items()} for n, ab in intervals["abilities"].items()}
    points = []
    for name, ab in scores.items():
        spec = params.arms.get(name)
        label = (spec.strategy + ("" if spec.table == "T5" else f" ({spec.table})")
                 if spec is not None and spec.phase == "mitigation" else
                 (spec.label if spec is not None and spec.label else name))
        start = spec.start if spec is not None else None
        came_from = (scores[start]["EA"], scores[start]["MA"]) if start in scores else None
        point = {"name": name, "label": label, "kind": _kind(params, name), "EA": ab["EA"], "MA": ab["MA"],
                 "from": came_from if _kind(params, name) in ("phase2", "reverse", "mitigation") else None}
        if intervals is not None:
            for q in ("EA", "MA"):
                _, point[f"{q}_low"], point[f"{q}_high"] = intervals["abilities"][name][q]
        points.append(point)
    return points


def strategy_tables(params: Params, results: dict[str, dict[str, Any]], tables: Sequence[str] | None = None,
                    frozen_share: bool = False) -> dict[str, Any]:
    """``strategy_table`` per mitigation table (default: every one the params define)."""
    tables = params.mitigation_tables() if tables is None else tables
    return {t: strategy_table(params, results, t, frozen_share) for t in tables}


def ea_change(params: Params, results: dict[str, dict[str, Any]], intervals: dict[str, Any] | None = None):
    """The measured change in English Ability of each evaluated Phase-2 arm, EA of the arm minus
    EA of its start model (negative: it forgot); a DataFrame with column "change", indexed by arm,
    the shape ``similarity.similarity_vs_forgetting`` reads. Arms whose start model has no
    results are left out. With ``intervals`` (``findings.plotted_intervals``) the change is the
    findings' (over the seeds, EA without the slots they leave out), with "change_low" and
    "change_high". docs/METHODS.md, "Evaluation: English and Multilingual Ability"."""
    import pandas as pd

    if intervals is not None:
        return pd.DataFrame({c: {a: v[i] for a, v in intervals["ea_change"].items()}
                             for i, c in enumerate(("change", "change_low", "change_high"))})
    ea = {name: abilities(params, record)["EA"] for name, record in results.items()}
    return pd.DataFrame({"change": {a: ea[a] - ea[params.arms[a].start] for a in params.arms_in_phase("phase2")
                                    if a in ea and params.arms[a].start in ea}})