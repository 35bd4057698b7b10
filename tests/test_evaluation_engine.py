"""The shared-prefix engine (evaluation.engine: cft) gives lm-eval's own numbers.

Both engines run the same lm-eval tasks on the same model; every per-item metric must agree to
1e-5 (float32 sums in another order) and every generated answer must be identical. On the smoke
model (initializer_range 0.3, so that its greedy answers are non-empty and depend on the prompt)
and on a few items of every default benchmark on SmolLM2, the offline default's model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, write_params


def _samples(params, name: str = "base") -> dict[tuple, dict]:
    from cft_helpers.evaluation.harness import evaluate_model
    from cft_helpers.files import read_jsonl

    record = evaluate_model(params, name, progress=False)
    rows = read_jsonl(params.run_path / "eval" / f"{name}.samples.jsonl")
    return record, {(r["task"], r["doc_id"]): r for r in rows}


def _assert_same(a: dict, b: dict) -> int:
    """Every item's metrics within 1e-5 and answers identical; returns how many answers are non-empty."""
    assert a.keys() == b.keys() and a
    non_empty = 0
    for key, ra in a.items():
        rb = b[key]
        assert ra.get("response") == rb.get("response"), key
        non_empty += bool((ra.get("response") or "").strip())
        for m, v in ra.items():
            if isinstance(v, float):
                assert rb[m] == pytest.approx(v, abs=1e-5), (key, m)
            elif m not in ("task", "doc_id"):
                assert rb[m] == v, (key, m)
    return non_empty


def _engine_params(tmp_path: Path, model_cache: Path, engine: str, preset: str = "smoke", **changes):
    from cft_helpers.params import load_params

    raw = yaml.safe_load((ROOT / "params" / f"{preset}.yaml").read_text())
    raw.setdefault("evaluation", {})["engine"] = engine
    for key, value in changes.items():
        raw[key] = value
    folder = tmp_path / engine
    folder.mkdir()
    return load_params(write_params(folder, model_cache, preset, **raw))


def test_common_prefix_length_keeps_one_token_per_row():
    from cft_helpers.batching import common_prefix_length

    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter row keeps its last token
    assert common_prefix_length([[7, 8]]) == 1
    assert common_prefix_length([[1, 2], [3, 4]]) == 0


def test_engines_agree_on_the_smoke_suite(tmp_path, model_cache):
    models = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())["models"]
    models["base"]["config"]["initializer_range"] = 0.3
    runs = {e: _engine_params(tmp_path, model_cache, e, models=models) for e in ("lm_eval", "cft")}
    from cft_helpers.evaluation.harness import suite_hash

    assert suite_hash(runs["lm_eval"]) != suite_hash(runs["cft"])  # cached results never cross engines
    (rec_a, a), (rec_b, b) = (_samples(runs[e]) for e in ("lm_eval", "cft"))
    assert _assert_same(a, b) >= 10  # the generation comparison is not "" against ""
    scored = [r["p_correct"] for r in a.values() if "p_correct" in r]
    assert len(set(round(s, 6) for s in scored)) > 5  # log-likelihoods that differ between items
    for bench, entry in rec_a["benchmarks"].items():
        assert rec_b["benchmarks"][bench]["score"] == pytest.approx(entry["score"], abs=1e-6)


def test_requests_over_the_window_fall_back_to_lm_eval(tmp_path, model_cache, monkeypatch):
    """A max_length shorter than some items: lm-eval truncates them from the left; the engine
    hands exactly those to lm-eval's own loop and still agrees item by item."""
    from lm_eval.models.huggingface import HFLM

    evaluation = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text()).get("evaluation", {})
    evaluation["max_length"] = 64
    runs = {e: _engine_params(tmp_path, model_cache, e, evaluation=dict(evaluation)) for e in ("lm_eval", "cft")}
    _, a = _samples(runs["lm_eval"])
    handed, own = [], HFLM._loglikelihood_tokens

    def counting(self, requests, *args, **kwargs):
        handed.append(max(len(c) + len(x) for _, c, x in requests))
        return own(self, requests, *args, **kwargs)

    monkeypatch.setattr(HFLM, "_loglikelihood_tokens", counting)
    _, b = _samples(runs["cft"])
    assert handed and min(handed) > 65  # only requests over the window went to lm-eval's loop
    _assert_same(a, b)


@pytest.fixture(scope="module")
def smollm2_few(tmp_path_factory, smollm2_cache):
    """Default params on SmolLM2 with a few items of every benchmark (both engines)."""
    from cft_helpers.params import load_params

    out = {}
    base = tmp_path_factory.mktemp("smol_engine")
    for engine in ("lm_eval", "cft"):
        overrides = {"run_dir": str(base / engine), "cache_dir": str(smollm2_cache),
                     "runtime.threads": 1, "evaluation.engine": engine,
                     "evaluation.benchmarks.ifeval.n": 4, "evaluation.benchmarks.mmlu.n": 6,
                     "evaluation.benchmarks.hellaswag.n": 6,
                     "evaluation.benchmarks.mlqa.n": 2, "evaluation.benchmarks.mlqa.langs": ["ar", "de"],
                     "evaluation.benchmarks.xquad.n": 2, "evaluation.benchmarks.xquad.langs": ["th"],
                     "evaluation.benchmarks.xlsum.n": 2, "evaluation.benchmarks.xlsum.langs": ["ja", "fr"]}
        out[engine] = _samples(load_params("default", overrides=overrides))
    return out


def test_engines_agree_on_smollm2_items(smollm2_few):
    (rec_a, a), (rec_b, b) = smollm2_few["lm_eval"], smollm2_few["cft"]
    assert _assert_same(a, b) >= 8
    assert {r["task"] for r in a.values()} >= {"cft_mc", "cft_completion", "cft_instructions", "cft_summary_ja"}
    for bench, entry in rec_a["benchmarks"].items():
        assert rec_b["benchmarks"][bench]["score"] == pytest.approx(entry["score"], abs=1e-6)
    print(json.dumps({"lm_eval_items_per_s": rec_a["items_per_s"], "cft_items_per_s": rec_b["items_per_s"]}))


@pytest.mark.parametrize("engine", ["cft", "lm_eval"])
def test_generate_until_stops_at_the_chat_templates_end_of_turn(smoke_params, engine):
    """A template whose turns end with a special token that is not eos (Llama-3's <|eot_id|>):
    lm-eval's generate_until stops there in both engines, not at max_gen_toks."""
    from lm_eval.api.instance import Instance

    from cft_helpers.evaluation.harness import make_lm
    from test_generation import eot_model

    tok, model = eot_model()
    params = smoke_params.model_copy(update={"evaluation": smoke_params.evaluation.model_copy(
        update={"engine": engine, "max_length": 64})})
    lm = make_lm(params, model, tok, "cpu")
    context = tok.apply_chat_template([{"role": "user", "content": "hi there"}], tokenize=False,
                                      add_generation_prompt=True)
    requests = [Instance(request_type="generate_until", doc={}, idx=0,
                         arguments=(context, {"until": ["\n\n"], "max_gen_toks": 5, "do_sample": False}))]
    assert [s.strip() for s in lm.generate_until(requests, disable_tqdm=True)] == ["a"]
    lm.stop_ids = []  # eos alone, as before: the answer runs on past the end of turn
    assert [s.strip() for s in lm.generate_until(requests, disable_tqdm=True)] == ["a b b b"]
