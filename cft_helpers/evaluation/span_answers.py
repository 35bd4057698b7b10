"""What the extractive answers are made of: the right span, the right span in a sentence, or not the span.

MLQA and XQuAD score a generated answer by token F1 against the gold span, so an answer that holds
the right span inside a longer sentence loses precision, and one without it loses everything. When
a model's MLQA score falls, these tell the two apart (docs/METHODS.md, "The multilingual slots"):
per item, from ``<run_dir>/eval/<model>.samples.jsonl``, whether the answer is the span (F1 1),
holds it among other words (the normalised gold found in the normalised answer), or misses it,
with the answer's length in tokens.

    span_report(params, store, ["p1_alpaca", "p2_alpaca"], "mlqa")
"""

from __future__ import annotations

from typing import Sequence

from cft_helpers.evaluation.harness import task_plan
from cft_helpers.evaluation.scoring import normalize, tokens
from cft_helpers.params import Params
from cft_helpers.runs import MissingArtifact, RunStore, read_jsonl


def span_items(params: Params, store: RunStore, model: str, benchmark: str) -> list[dict]:
    """One row per item of ``benchmark`` (an extractive QA benchmark): language, gold span,
    answer, F1 as scored, whether the answer holds the gold span, and its tokens."""
    plan = dict(task_plan(params).get(benchmark, []))
    if not plan:
        raise ValueError(f"{benchmark!r} does not run under these params; it has none of its tasks to read")
    path = store.eval_samples(model)
    if not path.exists():
        raise MissingArtifact(f"{model!r} has no per-item answers ({path}); run notebook 06_evaluation")
    rows = []
    for r in read_jsonl(path):
        if r.get("task") not in plan:
            continue
        lang = plan[r["task"]]
        gold, answer = str(r.get("target") or ""), str(r.get("response") or "")
        g, a = normalize(gold, lang), normalize(answer, lang)
        rows.append({"model": model, "task": r["task"], "doc_id": r["doc_id"], "lang": lang, "gold": gold,
                     "answer": answer, "f1": float(r.get("f1") or 0.0), "holds_span": bool(g) and g in a,
                     "tokens": len(tokens(answer, lang))})
    return rows


def span_report(params: Params, store: RunStore, models: Sequence[str], benchmark: str = "mlqa"):
    """Per model: items, mean F1, the share of answers that are the span exactly (F1 1), that hold
    it among other words, that miss it, and the mean answer length in tokens (empty, saying so,
    when the benchmark does not run)."""
    import pandas as pd

    if benchmark not in task_plan(params):
        empty = pd.DataFrame()
        empty.attrs["footnote"] = f"{benchmark} does not run under these params"
        return empty
    out = {}
    for m in models:
        items = span_items(params, store, m, benchmark)
        n = len(items) or 1
        exact = sum(i["f1"] == 1.0 for i in items)
        held = sum(i["holds_span"] and i["f1"] < 1.0 for i in items)
        out[m] = {"items": len(items), "F1": sum(i["f1"] for i in items) / n, "span exactly": exact / n,
                  "span among other words": held / n, "span missed": (len(items) - exact - held) / n,
                  "answer tokens": sum(i["tokens"] for i in items) / n}
    return pd.DataFrame.from_dict(out, orient="index")
