"""What generated answers are made of: which stated instructions they follow; whether an
extractive answer is the span, the span in a sentence, or not the span.

``instruction_kinds``: the IFEval slot's answers (``task: instructions``) scored again by lm-eval's
checkers one instruction at a time, and the share followed per kind of instruction and model:
what a Phase-1 model learned or lost, kind by kind (docs/METHODS.md, "The English slots").

MLQA and XQuAD score a generated answer by token F1 against the gold span, so an answer that holds
the right span inside a longer sentence loses precision, and one without it loses everything. When
a model's MLQA score falls, these tell the two apart (docs/METHODS.md, "The multilingual slots"):
per item, from ``<run_dir>/eval/<model>.samples.jsonl``, whether the answer is the span (F1 1),
holds it among other words (the normalised gold found in the normalised answer), or misses it,
with the answer's length in tokens.

    span_report(params, store, ["p1_alpaca", "p2_alpaca"], "mlqa")
    instruction_kinds(params, store, ["base", "p1_instruct", "p2_instruct"])
"""

from __future__ import annotations

from typing import Sequence

import json

from cft_helpers.evaluation.harness import suite_hash, task_plan
from cft_helpers.evaluation.ifeval_offline import use_punkt_data
from cft_helpers.evaluation.scoring import normalize, tokens
from cft_helpers.params import Params
from cft_helpers.runs import MissingArtifact
from cft_helpers.files import read_jsonl


def span_items(params: Params, model: str, benchmark: str) -> list[dict]:
    """One row per item of ``benchmark`` (an extractive QA benchmark): language, gold span,
    answer, F1 as scored, whether the answer holds the gold span, and its tokens."""
    store = params.store
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


def span_report(params: Params, models: Sequence[str], benchmark: str = "mlqa"):
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
        items = span_items(params, m, benchmark)
        n = len(items) or 1
        exact = sum(i["f1"] == 1.0 for i in items)
        held = sum(i["holds_span"] and i["f1"] < 1.0 for i in items)
        out[m] = {"items": len(items), "F1": sum(i["f1"] for i in items) / n, "span exactly": exact / n,
                  "span among other words": held / n, "span missed": (len(items) - exact - held) / n,
                  "answer tokens": sum(i["tokens"] for i in items) / n}
    return pd.DataFrame.from_dict(out, orient="index")


def instruction_kinds(params: Params, models: Sequence[str]):
    """Per kind of stated instruction (rows) and model (columns): the share of the IFEval slot's
    prompts stating it whose answer follows it, by lm-eval's strict checker; the column "stated"
    counts the prompts. Empty, saying so, when the IFEval slot is not ``task: instructions``."""
    store = params.store
    import pandas as pd

    spec = params.evaluation.benchmarks.get("ifeval")
    if spec is None or spec.source != "offline" or spec.task != "instructions":
        empty = pd.DataFrame()
        empty.attrs["footnote"] = "the IFEval slot is not the stated-instructions task under these params"
        return empty
    rows_path = store.eval_tasks_dir(suite_hash(params)) / "cft_instructions.jsonl"
    if not rows_path.exists():
        raise MissingArtifact(f"the IFEval slot's prompts are not in the run store ({rows_path}); "
                              "run notebook 06_evaluation")
    use_punkt_data(params.cache)
    from langdetect import DetectorFactory
    from lm_eval.tasks.ifeval.utils import process_results  # (after use_punkt_data: it looks for punkt)

    DetectorFactory.seed = 0   # as the slot's scoring module does
    docs = [json.loads(line) for line in rows_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    stated: dict[str, int] = {}
    followed: dict[str, dict[str, int]] = {m: {} for m in models}
    for m in models:
        path = store.eval_samples(m)
        if not path.exists():
            raise MissingArtifact(f"{m!r} has no per-item answers ({path}); run notebook 06_evaluation")
        answers = {r["doc_id"]: r.get("response") or "" for r in read_jsonl(path) if r.get("task") == "cft_instructions"}
        for i, doc in enumerate(docs):
            if i not in answers:
                continue
            ok = process_results(doc, [answers[i]])["inst_level_strict_acc"]
            for inst, hit in zip(doc["instructions"], ok):
                kind = inst["kind"]
                if m == models[0]:
                    stated[kind] = stated.get(kind, 0) + 1
                followed[m][kind] = followed[m].get(kind, 0) + int(hit)
    table = pd.DataFrame({m: {k: followed[m].get(k, 0) / n for k, n in stated.items()} for m in models})
    table["stated"] = pd.Series(stated)
    return table.sort_index()
