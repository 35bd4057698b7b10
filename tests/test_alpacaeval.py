"""AlpacaEval through alpaca_eval: win rate, the judge on an OpenAI-compatible endpoint (a local
stub server that ranks the longer answer first), a local HF judge, caching, and the params."""

from __future__ import annotations

import json
import math
import re
import statistics
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cft_helpers.evaluation import alpacaeval as ae
from cft_helpers.params import AlpacaEvalData, Judge, ParamsError, load_params
from conftest import write_params

KEY = "sk-test-7f3a"  # never to be written to disk
_ANSWER = re.compile(r'"model": "(model_[12])",\s*"answer": """(.*?)"""', re.S)


class _Judge(BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions that prefers the longer answer, the way a judge
    with a length bias would; an answer containing UNREADABLE gets a verdict no parser reads."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        prompt = body["messages"][-1]["content"]
        answers = dict(_ANSWER.findall(prompt))
        if "UNREADABLE" in prompt:
            text = "Both answers have merit."
        else:
            first = max(("model_1", "model_2"), key=lambda m: len(answers[m]))
            other = "model_2" if first == "model_1" else "model_1"
            text = repr([{"model": first, "rank": 1}, {"model": other, "rank": 2}])
        out = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
               "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
               "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _openai_judge(server) -> Judge:
    return Judge(kind="openai", model="judge-7b", base_url=f"http://127.0.0.1:{server.server_port}/v1",
                 api_key_env="CFT_TEST_JUDGE_KEY", concurrency=2, max_retries=0)


def test_win_rate_worked_example():
    """A tie counts half; a graded preference counts its fraction (rounded in the discrete rate);
    an unreadable verdict is left out and counted, never a loss."""
    s = ae.win_rate([2, 2, 1, 1.5, 1.8, math.nan])
    assert s["win_rate"] == pytest.approx((1 + 1 + 0 + 0.5 + 0.8) / 5)
    assert s["discrete_win_rate"] == pytest.approx((1 + 1 + 0 + 0.5 + 1) / 5)
    d = [1, 1, 0, 0.5, 1]
    assert s["discrete_win_rate_stderr"] == pytest.approx(statistics.stdev(d) / math.sqrt(5))
    assert s["win_rate_stderr"] == pytest.approx(statistics.stdev([1, 1, 0, 0.5, 0.8]) / math.sqrt(5))
    assert (s["n_items"], s["n_unjudged"], s["n_total"], s["n_draws"]) == (6, 1, 5, 1)
    assert s["n_wins"] == 3 and s["n_wins_base"] == 1
    assert math.isnan(ae.win_rate([math.nan])["win_rate"])


def test_openai_compatible_judge_through_alpaca_eval(smoke_params, judge_server, monkeypatch, tmp_path):
    """alpaca_eval's annotator asks the endpoint (key sent, never stored), swaps the two answers
    for some items and undoes the swap: the verdicts follow the answers, not their position."""
    monkeypatch.setenv("CFT_TEST_JUDGE_KEY", KEY)
    items = [{"instruction": f"Question {i}?", "output": ref} for i, ref in
             enumerate(["a short one", "a reference answer that is rather long indeed", "ok", "fine"])]
    answers = ["a much longer answer than that", "short", "a longer answer", "UNREADABLE"]
    folder = tmp_path / "ae"
    prefs = ae.judge_answers(smoke_params, _openai_judge(judge_server), items, answers, folder, progress=False)
    assert prefs[:3] == [2.0, 1.0, 2.0] and math.isnan(prefs[3])
    seen = judge_server.seen
    assert len(seen) == 4 and {s["auth"] for s in seen} == {f"Bearer {KEY}"}
    assert seen[0]["path"] == "/v1/chat/completions" and seen[0]["body"]["model"] == "judge-7b"
    # position bias control: some items reach the judge with the model's answer first
    firsts = [dict(_ANSWER.findall(s["body"]["messages"][-1]["content"]))["model_1"] for s in seen]
    assert any(f in answers for f in firsts) and any(f in [i["output"] for i in items] for f in firsts)
    for f in folder.rglob("*"):
        assert not f.is_file() or KEY not in f.read_text(errors="ignore"), f
    # cached verdicts are not asked again; the unreadable one is
    again = ae.judge_answers(smoke_params, _openai_judge(judge_server), items, answers, folder, progress=False)
    assert again[:3] == prefs[:3] and len(judge_server.seen) == 5
    # all cached (whole-number verdicts read back from disk), then with a tie that needs no judge
    assert ae.judge_answers(smoke_params, _openai_judge(judge_server), items[:3], answers[:3], folder,
                            progress=False) == prefs[:3]
    tie = [*items[:3], {"instruction": "Same?", "output": "same"}]
    assert ae.judge_answers(smoke_params, _openai_judge(judge_server), tie, [*answers[:3], "same"], folder,
                            progress=False) == [2.0, 1.0, 2.0, 1.5]
    assert len(judge_server.seen) == 5
    # a cache cut mid-write by a kill is set aside and its verdicts asked again
    (cache,) = folder.rglob("annotations.json")
    cache.write_text(cache.read_text()[:50])
    assert ae.judge_answers(smoke_params, _openai_judge(judge_server), items[:3], answers[:3], folder,
                            progress=False) == prefs[:3]
    assert len(judge_server.seen) == 8 and list(cache.parent.glob("annotations.json.torn-*"))


def test_a_judge_cache_with_no_verdict_does_not_break_the_rerun(smoke_params, judge_server, monkeypatch, tmp_path):
    monkeypatch.setenv("CFT_TEST_JUDGE_KEY", KEY)
    items, answers = [{"instruction": "Q?", "output": "A"}], ["UNREADABLE"]
    for _ in range(2):
        prefs = ae.judge_answers(smoke_params, _openai_judge(judge_server), items, answers, tmp_path, progress=False)
        assert math.isnan(prefs[0])
    assert len(judge_server.seen) == 2  # asked again: an unreadable verdict is not cached


def test_an_unreachable_endpoint_is_an_error_naming_it(smoke_params, monkeypatch, tmp_path):
    import socket

    monkeypatch.setenv("CFT_TEST_JUDGE_KEY", KEY)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = Judge(kind="openai", model="judge-7b", base_url=f"http://127.0.0.1:{port}/v1",
                  api_key_env="CFT_TEST_JUDGE_KEY", max_retries=0, timeout_s=5)
    with pytest.raises(ae.JudgeError, match=f"127.0.0.1:{port}.*APIConnectionError"):
        ae.judge_answers(smoke_params, judge, [{"instruction": "Q?", "output": "A"}], ["B"], tmp_path, progress=False)


def test_missing_key_fails_before_anything_runs(smoke_params, monkeypatch):
    monkeypatch.delenv("CFT_TEST_JUDGE_KEY", raising=False)
    judge = Judge(kind="openai", model="gpt-4", api_key_env="CFT_TEST_JUDGE_KEY")
    with pytest.raises(ae.JudgeError, match="CFT_TEST_JUDGE_KEY"):
        ae.api_key(judge)


def test_reference_rows_from_the_wheel_and_from_a_local_folder(smoke_params, tmp_path):
    rows = ae.reference_rows(AlpacaEvalData(), smoke_params.cache)
    assert len(rows) == 805 and rows[0]["generator"] == "gpt4_1106_preview"
    assert {"instruction", "output"} <= set(rows[0]) and all(r["output"] for r in rows[:20])
    sub = ae.select_items(rows, 16, seed=3)
    assert len(sub) == 16 and sub == ae.select_items(rows, 16, seed=3) != ae.select_items(rows, 16, seed=4)
    assert [rows.index(r) for r in sub] == sorted(rows.index(r) for r in sub)  # file order kept
    # the hub path, on a local folder laid out like tatsu-lab/alpaca_eval
    repo = tmp_path / "alpaca_eval"
    repo.mkdir()
    (repo / "alpaca_eval.json").write_text(json.dumps(
        [{"instruction": "Say hi.", "output": "Hi!", "generator": "text_davinci_003", "dataset": "x"},
         {"instruction": "Say hi.", "output": "Hello!", "generator": "text_davinci_003", "dataset": "x"},
         {"instruction": "Count to 3.", "output": "1 2 3", "generator": "text_davinci_003", "dataset": "y"}]))
    hub = ae.reference_rows(AlpacaEvalData(source="hub", path=str(repo), data_files="alpaca_eval.json"),
                            smoke_params.cache)
    assert [r["output"] for r in hub] == ["Hi!", "Hello!", "1 2 3"]
    assert [r["output"] for r in ae.select_items(hub, None, 0)] == ["Hi!", "1 2 3"]  # one per instruction
    (repo / "bad.json").write_text(json.dumps([{"instruction": "x"}]))
    with pytest.raises(ValueError, match="lack a string"):
        ae.reference_rows(AlpacaEvalData(source="hub", path=str(repo), data_files="bad.json"),
                          smoke_params.cache)


def test_alpacaeval_params_are_checked(tmp_path, model_cache):
    path = write_params(tmp_path, model_cache)
    judge = "judge: {kind: openai, model: gpt-4}"
    with pytest.raises(ParamsError, match="needs a 'judge'"):
        load_params(path, overrides="evaluation.benchmarks.alpacaeval={source: alpaca_eval, metric: win_rate}")
    with pytest.raises(ParamsError, match="valid: \\['win_rate'"):
        load_params(path, overrides=f"evaluation.benchmarks.alpacaeval={{source: alpaca_eval, metric: acc, {judge}}}")
    with pytest.raises(ParamsError, match="alpacaeval only"):
        load_params(path, overrides=f"evaluation.benchmarks.mmlu={{source: alpaca_eval, metric: win_rate, {judge}}}")
    with pytest.raises(ParamsError, match="unknown model 'ghost'"):
        load_params(path, overrides="evaluation.benchmarks.alpacaeval={source: alpaca_eval, metric: win_rate, "
                                    "judge: {kind: hf, model: ghost}}")
    with pytest.raises(ParamsError, match="for source: alpaca_eval only"):
        load_params(path, overrides=f"evaluation.benchmarks.mmlu={{source: offline, task: mc, metric: acc, {judge}}}")
    p = load_params(path, overrides=f"evaluation.benchmarks.alpacaeval={{source: alpaca_eval, metric: win_rate, "
                                    f"n: 5, {judge}}}")
    assert p.evaluation.benchmarks["alpacaeval"].reference.source == "wheel"  # the offline default
    paper = load_params("params/paper/mistral7b.yaml")
    spec = paper.evaluation.benchmarks["alpacaeval"]
    assert spec.source == "alpaca_eval" and spec.reference.data_files == "alpaca_eval.json"  # text-davinci-003


def test_evaluate_model_scores_alpacaeval_with_the_judge(tmp_path, model_cache, judge_server, monkeypatch):
    """End to end on the smoke model: its answers, the judge's verdicts, the win rate in the
    record and in EA; the score matches what the stub judge decides from the saved answers."""
    from cft_helpers.evaluation.harness import abilities, evaluate_model

    monkeypatch.setenv("CFT_TEST_JUDGE_KEY", KEY)
    repo = tmp_path / "ref"
    repo.mkdir()
    refs = ["x", "a" * 400, "y", "b" * 400]  # two the model's answer beats, two it cannot
    (repo / "alpaca_eval.json").write_text(json.dumps(
        [{"instruction": f"Write about topic {i}.", "output": o, "generator": "ref"} for i, o in enumerate(refs)]))
    url = f"http://127.0.0.1:{judge_server.server_port}/v1"
    path = write_params(tmp_path, model_cache)
    p = load_params(path, overrides=(
        "evaluation.benchmarks={alpacaeval: {source: alpaca_eval, metric: win_rate, max_gen_toks: 6, "
        f"reference: {{source: hub, path: {repo}, data_files: alpaca_eval.json}}, "
        f"judge: {{kind: openai, model: judge-7b, base_url: '{url}', api_key_env: CFT_TEST_JUDGE_KEY}}}}}}"))
    rec = evaluate_model(p, "base", progress=False)
    samples = [json.loads(line) for line in (p.run_path / "eval" / "base.samples.jsonl").read_text().splitlines()]
    assert [s["target"] for s in samples] == refs
    expected = [2.0 if len(s["response"]) > len(r) else 1.0 if len(s["response"]) < len(r) else None
                for s, r in zip(samples, refs)]
    assert [s["preference"] for s in samples] == expected
    score = rec["benchmarks"]["alpacaeval"]["score"]
    assert score == pytest.approx(sum(e - 1 for e in expected) / len(expected))
    assert rec["tasks"]["alpacaeval"]["n"] == 4 and rec["benchmarks"]["alpacaeval"]["judge"]["model"] == "judge-7b"
    ab = abilities(p, rec)
    assert ab["EA"] == pytest.approx(score) and "alpacaeval" not in ab["EA_missing"]
    assert "<|im_start|>" in rec["chat_template"]
    n_calls = len(judge_server.seen)
    assert evaluate_model(p, "base", progress=False) == rec and len(judge_server.seen) == n_calls  # cached


def test_local_hf_judge_runs_and_an_unreadable_judge_fails_loudly(tmp_path, model_cache):
    """The hf judge (a models: entry) generates here with its chat template; a judge whose every
    verdict is unreadable (the random-init smoke model) is an error naming it, not a zero."""
    from cft_helpers.evaluation.harness import evaluate_model

    p = load_params(write_params(tmp_path, model_cache), overrides=(
        "evaluation.benchmarks={alpacaeval: {source: alpaca_eval, metric: win_rate, n: 2, max_gen_toks: 4, "
        "judge: {kind: hf, model: base, max_new_tokens: 4, batch_size: 2}}}"))
    with pytest.raises(ae.JudgeError, match="hf:base gave no readable verdict on any of 2 items"):
        evaluate_model(p, "base", progress=False)
    folder = p.run_path / "eval" / "alpacaeval"
    assert len(list(folder.glob("answers-base-*.jsonl"))) == 1  # the model's answers are kept
    gens = list(folder.rglob("generations.jsonl"))
    assert len(gens) == 1 and len(gens[0].read_text().splitlines()) == 2  # the judge was asked twice
    assert not (p.run_path / "eval" / "base.json").exists()  # no record with a made-up score
    with pytest.raises(ae.JudgeError, match="API"):
        ae.write_annotator_config(Judge(kind="hf", model="base", annotator="weighted_alpaca_eval_gpt4_turbo"),
                                  tmp_path / "w")
    with pytest.raises(ae.JudgeError, match="unknown alpaca_eval annotator"):
        ae.write_annotator_config(Judge(kind="openai", model="m", annotator="nope"), tmp_path / "n")


def test_chatml_prompts_become_chat_messages():
    prompt = ("<|im_start|>system\nYou rank.\n<|im_end|>\n<|im_start|>system name=example_user\nQ\n<|im_end|>\n"
              "<|im_start|>system name=example_assistant\nA\n<|im_end|>\n<|im_start|>user\nRank these.\n<|im_end|>")
    assert ae.chatml_to_messages(prompt) == [
        {"role": "system", "content": "You rank."}, {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"}, {"role": "user", "content": "Rank these."}]
