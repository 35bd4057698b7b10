"""Two English stand-ins kept as options: ``response_ll`` (per-byte probability of held-out
reference responses, teacher-forced: not what IFEval measures, docs/METHODS.md, "The English
slots") and ``answer_line`` (the reasoning family's ``Answer: <x>`` convention, checked on greedy
answers). The IFEval slot itself is tests/test_ifeval_slot.py's."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from cft_helpers.data.generator import generate, split_of
from cft_helpers.evaluation import offline_tasks as ot

from conftest import write_params

ROW_KEYS = {"id", "lang", "family", "task", "key", "system", "prompt", "response", "answer", "args", "variant"}


@pytest.mark.parametrize("build,n", [(ot.response_ll_rows, 60), (ot.answer_line_rows, 30)])
def test_rows_are_heldout_disjoint_from_training_and_deterministic(build, n):
    rows = build(n, 0)
    assert len(rows) == n and len({r["id"] for r in rows}) == n
    assert all(set(r) == ROW_KEYS and r["lang"] == "en" and r["prompt"] and r["response"] for r in rows)
    assert build(n, 0) == rows and build(n, 1) != rows
    assert all(split_of(r["key"]) == "heldout" for r in rows)
    train = {row["meta"]["key"] for family in ("general", "reasoning")
             for row in generate(family, ["en", "fr"], 600, split="train", seed=0)}
    assert not train & {r["key"] for r in rows}
    for r in rows:  # the messages training sees: a system prompt exactly where the family has one
        assert bool(r["system"]) == (r["family"] == "reasoning")
        assert r["answer"] in r["response"]


def test_response_ll_has_both_families_and_answer_line_the_convention():
    rows = ot.response_ll_rows(40, 0)
    assert sum(r["family"] == "general" for r in rows) == 20
    assert len({r["task"] for r in rows}) == 11  # every task of both families
    for r in ot.answer_line_rows(10, 0):
        assert r["family"] == "reasoning" and ot.follows_answer_line(r["response"]) == 1.0


def test_answer_line_regex():
    yes = ["Box A contains 3. Adding them: 3 + 4 = 7.\nAnswer: 7", "Answer: even", "reasoning\n  Answer: x\n\n",
           "Answer:positive"]
    no = ["", "The answer is 7.", "Answer: 7\nBecause 3 + 4 = 7.", "Answer:", "Answer:   \n", "answer: 7",
          "Final Answer: 7", "Antwort: 7"]
    assert [ot.follows_answer_line(s) for s in yes] == [1.0] * len(yes)
    assert [ot.follows_answer_line(s) for s in no] == [0.0] * len(no)


def test_task_files_name_the_hooks(tmp_path):
    assert ot.write_task_files(tmp_path, "response_ll", None, 3, 0) == ["cft_response_ll"]
    assert ot.write_task_files(tmp_path, "answer_line", None, 3, 0, max_gen_toks=40) == ["cft_answer_line"]
    text = (tmp_path / "cft_response_ll.yaml").read_text()
    assert "output_type: loglikelihood" in text and "process_response_ll" in text and "byte_prob" in text
    assert "max_gen_toks: 40" in (tmp_path / "cft_answer_line.yaml").read_text()
    spec = importlib.util.spec_from_file_location("cft_scoring", tmp_path / "cft_scoring.py")
    scoring = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scoring)
    doc = {"response": "ab\u00e9"}  # 4 UTF-8 bytes
    assert scoring.process_response_ll(doc, [(-2.0, False)]) == {"byte_prob": pytest.approx(math.exp(-0.5))}
    assert scoring.process_answer_line({}, ["x\nAnswer: 1"]) == {"follows": 1.0}


def _direct_byte_prob(model, tok, doc: dict) -> float:
    """Teacher-forced log-likelihood of the reference response after the chat-templated prompt,
    over the response's UTF-8 bytes, exponentiated. The scored text is the assistant turn after
    ``<|im_start|>assistant``: lm-eval moves the template's trailing newline from the context into
    the continuation (``_encode_pair``), so that newline's token is scored with the response."""
    import torch

    msgs = ([{"role": "system", "content": doc["system"]}] if doc["system"] else []) + \
        [{"role": "user", "content": doc["prompt"]}]
    context = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    head = context.rstrip()
    ctx_ids = tok(head)["input_ids"]
    ids = tok(head + context[len(head):] + doc["response"])["input_ids"]
    assert ids[:len(ctx_ids)] == ctx_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].double(), dim=-1)
    ll = sum(float(logp[i - 1, ids[i]]) for i in range(len(ctx_ids), len(ids)))
    return math.exp(ll / len(doc["response"].encode("utf-8")))


def test_harness_logs_per_item_scores_equal_to_a_direct_computation(tmp_path, model_cache):
    """Both kinds through evaluate_model on the smoke model: samples.jsonl carries the per-item
    metric, and response_ll's equals the direct teacher-forced computation."""
    from cft_helpers.data import prepare_datasets
    from cft_helpers.evaluation.harness import evaluate_model
    from cft_helpers.models import load_model, load_tokenizer, model_checkpoint
    from cft_helpers.params import load_params

    p = load_params(write_params(tmp_path, model_cache), overrides=(
        "evaluation.benchmarks.ifeval={source: offline, task: response_ll, metric: byte_prob, n: 3}; "
        "evaluation.benchmarks.mmlu={source: offline, task: answer_line, metric: follows, n: 2, max_gen_toks: 6}"))
    prepare_datasets(p, progress=False)
    rec = evaluate_model(p, "base", progress=False)
    assert rec["tasks"]["cft_response_ll"]["n"] == 3 and rec["tasks"]["cft_answer_line"]["n"] == 2
    samples = [json.loads(line) for line in (p.run_path / "eval" / "base.samples.jsonl").read_text().splitlines()]
    ll = {s["doc_id"]: s["byte_prob"] for s in samples if s["task"] == "cft_response_ll"}
    docs = ot.response_ll_rows(3, p.seed)
    ckpt = model_checkpoint(p, "base", progress=False)
    tok, model = load_tokenizer(ckpt), load_model(ckpt).eval()
    for i in (0, 1, 2):
        assert 0.0 < ll[i] <= 1.0
        assert ll[i] == pytest.approx(_direct_byte_prob(model, tok, docs[i]), rel=1e-4)
    assert rec["benchmarks"]["ifeval"]["score"] == pytest.approx(sum(ll.values()) / 3)
    follows = [s for s in samples if s["task"] == "cft_answer_line"]
    assert all(s["follows"] == ot.follows_answer_line(s["response"]) for s in follows)


def test_choice_hooks_score_as_lm_eval_does(tmp_path, model_cache):
    """mc and completion through our hook (acc, acc_norm, p_correct) against the same tasks scored
    by lm-eval's own multiple-choice rule (the YAML without the hook), per item."""
    import lm_eval
    import numpy as np
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from cft_helpers.models import load_model, load_tokenizer, model_checkpoint
    from cft_helpers.params import load_params

    for kind in ("mc", "completion"):
        ot.write_task_files(tmp_path, kind, None, 6, 0)
        name = ot.task_name(kind)
        own = (tmp_path / f"{name}.yaml").read_text().replace(
            "  - metric: p_correct\n    aggregation: mean\n    higher_is_better: true\n", "")
        own = "".join(line for line in own.splitlines(keepends=True) if not line.startswith("process_results"))
        (tmp_path / f"{name}_own.yaml").write_text(own.replace(f"task: {name}\n", f"task: {name}_own\n"))
    p = load_params(write_params(tmp_path, model_cache))
    ckpt = model_checkpoint(p, "base", progress=False)
    lm = HFLM(pretrained=load_model(ckpt).eval(), tokenizer=load_tokenizer(ckpt), batch_size=8, device="cpu")
    names = ["cft_mc", "cft_mc_own", "cft_completion", "cft_completion_own"]
    out = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=TaskManager(include_path=[str(tmp_path)]),
                                  apply_chat_template=True, log_samples=True, bootstrap_iters=0, verbosity="ERROR")
    for kind, metrics in (("mc", ["acc"]), ("completion", ["acc", "acc_norm"])):
        ours = {s["doc_id"]: s for s in out["samples"][f"cft_{kind}"]}
        theirs = {s["doc_id"]: s for s in out["samples"][f"cft_{kind}_own"]}
        assert sorted(ours) == sorted(theirs) == list(range(6))
        for i, s in ours.items():
            lls = [r[0] for r in s["filtered_resps"]]
            assert lls == [r[0] for r in theirs[i]["filtered_resps"]]
            for m in metrics:
                assert float(s[m]) == float(theirs[i][m]), (kind, i, m)
            gold = s["doc"]["answer"] if kind == "mc" else s["doc"]["label"]
            e = np.exp(np.array(lls) - max(lls))
            assert s["p_correct"] == pytest.approx(e[gold] / e.sum())
