"""What extractive answers are made of (evaluation/answers.py): the span, the span in a
sentence, or a miss, read from a constructed store."""

from __future__ import annotations

import pytest

from cft_helpers.evaluation.answers import span_items, span_report
from cft_helpers.params import load_params
from cft_helpers.runs import MissingArtifact
from cft_helpers.files import write_jsonl


def test_span_report_tells_a_sentence_around_the_span_from_a_miss(tmp_path):
    p = load_params("smoke", overrides={"run_dir": str(tmp_path / "run")})
    store = p.store
    # smoke's MLQA stand-in: cft_qa_lookup_ar and cft_qa_lookup_de
    write_jsonl(store.eval_samples("a"), [
        {"task": "cft_qa_lookup_de", "doc_id": 0, "target": "17", "response": "17", "f1": 1.0},
        {"task": "cft_qa_lookup_de", "doc_id": 1, "target": "42", "response": "Kiste B: 42.", "f1": 0.5},
        {"task": "cft_qa_lookup_ar", "doc_id": 0, "target": "9", "response": "الصندوق 8", "f1": 0.0},
        {"task": "cft_qa_lookup_ar", "doc_id": 1, "target": "9", "response": "", "f1": 0.0},
        {"task": "cft_mc", "doc_id": 0, "acc": 1.0}])    # another benchmark's item: not read
    items = span_items(p, "a", "mlqa")
    assert [(i["lang"], i["holds_span"], i["tokens"]) for i in items] == [
        ("de", True, 1), ("de", True, 3), ("ar", False, 2), ("ar", False, 0)]
    row = span_report(p, ["a"], "mlqa").loc["a"]
    assert row["items"] == 4 and row["F1"] == pytest.approx(0.375)
    assert (row["span exactly"], row["span among other words"], row["span missed"]) == (0.25, 0.25, 0.5)
    assert row["answer tokens"] == pytest.approx(1.5)
    with pytest.raises(MissingArtifact, match="06_evaluation"):
        span_items(p, "nobody", "mlqa")
    with pytest.raises(ValueError, match="'alpacaeval' does not run"):
        span_items(p, "a", "alpacaeval")


def test_span_report_of_a_benchmark_that_does_not_run_is_empty_and_says_so(tmp_path):
    p = load_params("smoke", overrides={"run_dir": str(tmp_path / "run"), "evaluation.benchmarks.mlqa": {"source": "off"}})
    df = span_report(p, ["a"], "mlqa")
    assert df.empty and df.attrs["footnote"] == "mlqa does not run under these params"
