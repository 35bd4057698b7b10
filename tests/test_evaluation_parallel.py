"""Evaluation in several processes (data parallel: each scores a shard of lm-eval's items, the
main one gathers and writes) gives the one-process numbers; the evaluation dtype."""

from __future__ import annotations

import json

import pytest

from conftest import write_params
from test_alpacaeval import KEY, judge_server  # noqa: F401 (a fixture: a stub OpenAI-compatible judge)


def test_two_processes_give_the_scores_of_one(tmp_path, model_cache, judge_server, monkeypatch):
    """``runtime.processes: 2`` launches ``python -m cft_helpers.evaluate`` under accelerate (gloo
    on this CPU): the two processes split every task's items, and the record (written by the
    main process only) holds the one-process scores, per-item answers and scores. AlpacaEval
    (on the smoke suite and a stub judge) runs once, on the main process."""
    from cft_helpers.evaluation.harness import evaluate_model
    from cft_helpers.params import load_params

    monkeypatch.setenv("CFT_TEST_JUDGE_KEY", KEY)  # (the launched processes inherit it)
    refs = tmp_path / "ref"
    refs.mkdir()
    (refs / "alpaca_eval.json").write_text(json.dumps(
        [{"instruction": f"Write about topic {i}.", "output": o, "generator": "ref"}
         for i, o in enumerate(["x", "a" * 400, "y"])]))
    url = f"http://127.0.0.1:{judge_server.server_port}/v1"
    alpaca = {"source": "alpaca_eval", "metric": "win_rate", "max_gen_toks": 6,
              "reference": {"source": "hub", "path": str(refs), "data_files": "alpaca_eval.json"},
              "judge": {"kind": "openai", "model": "judge-7b", "base_url": url, "api_key_env": "CFT_TEST_JUDGE_KEY"}}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = load_params(write_params(tmp_path / "one", model_cache), overrides={"evaluation.benchmarks.alpacaeval": alpaca})
    single = evaluate_model(one, "base", progress=False)
    calls = len(judge_server.seen)
    assert calls == 3
    two = load_params(write_params(tmp_path / "two", model_cache),
                      overrides={"runtime.processes": 2, "evaluation.benchmarks.alpacaeval": alpaca})
    parallel = evaluate_model(two, "base", progress=False)
    assert len(judge_server.seen) == 2 * calls  # AlpacaEval judged once more, not once per process
    assert "alpacaeval" in parallel["benchmarks"]
    assert single["processes"] == 1 and parallel["processes"] == 2
    assert single["dtype"] == parallel["dtype"] == "float32"  # CPU: auto is float32
    assert parallel["suite"] == single["suite"]
    # Each process batches its own shard: log-likelihoods are float32 sums in another order
    # (1e-8 apart here), so continuous metrics agree to 1e-6; answers and accuracies exactly.
    for bench, entry in single["benchmarks"].items():
        assert parallel["benchmarks"][bench]["score"] == pytest.approx(entry["score"], abs=1e-6), bench
        assert parallel["benchmarks"][bench]["by_language"] == pytest.approx(entry["by_language"], abs=1e-6)
    for task, entry in single["tasks"].items():
        assert parallel["tasks"][task]["n"] == entry["n"], task
        for metric, value in entry["metrics"].items():
            if not metric.endswith("_stderr"):  # (bootstrap: resampled in the order items were gathered)
                assert parallel["tasks"][task]["metrics"][metric] == pytest.approx(value, abs=1e-6), (task, metric)
    rows = [[json.loads(line) for line in p.store.eval_samples("base").read_text().splitlines()]
            for p in (one, two)]
    assert len(rows[1]) == len(rows[0]) == sum(e["n"] for e in single["tasks"].values())
    for a, b in zip(rows[0], rows[1]):  # every item once, in one process's order, same answer and score
        assert (b["task"], b["doc_id"], b["response"]) == (a["task"], a["doc_id"], a["response"])
        assert {k: v for k, v in b.items() if isinstance(v, float)} == \
            pytest.approx({k: v for k, v in a.items() if isinstance(v, float)}, abs=1e-6)
    assert {(r["task"], r["doc_id"]) for r in rows[1]} == {(r["task"], r["doc_id"]) for r in rows[0]}
    # a rerun reads the record the launched main process wrote (no new launch)
    assert evaluate_model(two, "base", progress=False) == parallel


def test_evaluation_dtype_is_float32_on_cpu_and_keys_only_what_is_not(smoke_params, monkeypatch):
    """auto: bf16 where a CUDA GPU supports it, float32 elsewhere; the suite's hash (the results'
    cache key) changes only when the dtype is not float32, so CPU keys stay those of before."""
    import torch

    from cft_helpers.evaluation.harness import eval_dtype, suite_hash

    before = suite_hash(smoke_params)
    assert eval_dtype(smoke_params) == "float32"
    explicit = smoke_params.model_copy(update={"evaluation": smoke_params.evaluation.model_copy(
        update={"dtype": "float32"})})
    assert suite_hash(explicit) == before
    bf16 = smoke_params.model_copy(update={"evaluation": smoke_params.evaluation.model_copy(
        update={"dtype": "bfloat16"})})
    assert eval_dtype(bf16) == "bfloat16" and suite_hash(bf16) != before
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert eval_dtype(smoke_params) == "bfloat16"            # a GPU with bf16: auto is bf16
    assert suite_hash(smoke_params) == suite_hash(bf16)
    assert eval_dtype(smoke_params, "cpu") == "float32"
    cpu = smoke_params.model_copy(update={"runtime": smoke_params.runtime.model_copy(update={"device": "cpu"})})
    assert eval_dtype(cpu) == "float32" and suite_hash(cpu) == before
    # the paper presets' runtime.device: cuda keys what runs there (bf16), not float32
    cuda = smoke_params.model_copy(update={"runtime": smoke_params.runtime.model_copy(update={"device": "cuda"})})
    assert eval_dtype(cuda) == eval_dtype(cuda, "cuda:1") == "bfloat16" and suite_hash(cuda) == suite_hash(bf16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert eval_dtype(smoke_params) == "float32"             # a GPU without bf16 (V100): float32


def test_bfloat16_evaluation_runs_the_weights_in_bf16_and_records_it(tmp_path, model_cache, monkeypatch):
    """``evaluation.dtype: bfloat16`` loads the weights in bf16 (log-softmax still in fp32) and
    the record says so."""
    import torch

    from cft_helpers.evaluation import harness
    from cft_helpers.params import load_params

    params = load_params(write_params(tmp_path, model_cache), overrides={"evaluation.dtype": "bfloat16"})
    seen = {}
    original = harness.make_lm

    def spy(params, model, tok, device, dtype="float32"):
        lm = original(params, model, tok, device, dtype)
        seen.update(weights=next(model.parameters()).dtype, softmax=lm.softmax_dtype)
        return lm

    monkeypatch.setattr(harness, "make_lm", spy)
    record = harness.evaluate_model(params, "base", progress=False)
    assert record["dtype"] == "bfloat16" and seen == {"weights": torch.bfloat16, "softmax": torch.float32}
    assert 0.0 <= record["benchmarks"]["mmlu"]["score"] <= 1.0
