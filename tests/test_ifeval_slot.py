"""The IFEval slot: held-out prompts that state verifiable instructions, answers scored by lm-eval's
own IFEval checkers, and what the findings decide from them.

The answers here are written, not generated: a Phase-1 model that follows every stated
instruction, and a Phase-2 model that drops one of them on half of the prompts. They are scored by
the helper module the harness writes beside the task (``ifeval_offline.write_instructions_task``:
lm-eval's ``process_results`` with the offline punkt data), so the numbers are the checkers' own.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import numpy as np
import pytest

from cft_helpers.cache import Cache
from cft_helpers import findings as F
from cft_helpers.data.generator import (FAMILY_INSTRUCTIONS, INSTRUCTIONS, TASKS, checker_kwargs, generate,
                                        state_instructions)
from cft_helpers.data.lexicon import LANGUAGES
from cft_helpers.data.schema import to_messages
from cft_helpers.params import load_params
from cft_helpers.files import write_jsonl

N = 64
PASSIVE = {"max_words", "one_sentence"}   # the generator's responses satisfy these as they are


@pytest.fixture(scope="module")
def task(tmp_path_factory, model_cache):
    """The slot's task written as the harness writes it: rows, and its scoring module imported."""
    from cft_helpers.evaluation.ifeval_offline import write_instructions_task

    folder = tmp_path_factory.mktemp("instructions")
    name = write_instructions_task(folder, Cache(model_cache), N, 0, 64, 1)
    rows = [json.loads(line) for line in (folder / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
    spec = importlib.util.spec_from_file_location("cft_instructions_test", folder / "cft_instructions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return rows, module.process_results


def without_one(row: dict) -> str:
    """The reference response of ``row`` with its first active instruction not followed."""
    drop = next(i for i, x in enumerate(row["instructions"]) if x["kind"] not in PASSIVE)
    kept = [x for j, x in enumerate(row["instructions"]) if j != drop]
    lex = LANGUAGES["en"]
    src = state_instructions(TASKS[row["task"]].render(lex, tuple(row["args"]), row["variant"]), kept, lex)
    src.pop("answer")
    return to_messages(src, "alpaca" if row["family"] == "general" else "orca")[-1]["content"]


def test_rows_state_two_or_three_instructions_of_every_kind_and_references_follow_them(task):
    rows, score = task
    assert len(rows) == N and Counter(r["family"] for r in rows) == {"general": N // 2, "reasoning": N // 2}
    assert {len(r["instruction_id_list"]) for r in rows} == {2, 3}
    kinds = Counter(x["kind"] for r in rows for x in r["instructions"])
    assert set(kinds) == set(INSTRUCTIONS)            # not only what one family's training rows state
    for r in rows:
        # every instruction is stated in the prompt, and the reference follows all of them
        assert r["prompt"].count("\n") >= len(r["instructions"])
        assert score(r, [r["response"]])["instructions_followed"] == 1.0
        assert score(r, [r["response"]])["prompt_level_strict_acc"] == 1.0
    # an answer that ignores the instructions follows only what a plain short answer happens to
    plain = [score(r, ["The answer is 7."])["instructions_followed"] for r in rows]
    assert np.mean(plain) < 0.35
    # no held-out instance is a training instance, in any language or family
    train = {row["meta"]["key"] for fam in ("general", "reasoning") for row in
             generate(fam, ["en", "fr", "de"], n=600, split="train", seed=0)}
    assert not train & {r["instance"] for r in rows}


def test_training_rows_state_their_familys_kinds_and_follow_them_in_every_language(task):
    case_checks: list[bool] = []
    for family, schema in (("general", "alpaca"), ("reasoning", "orca")):
        rows = generate(family, list(LANGUAGES), n=len(LANGUAGES) * 12, seed=1)
        stated = [r for r in rows if r["meta"]["instructions"]]
        kinds = {x["kind"] for r in stated for x in r["meta"]["instructions"]}
        assert kinds <= set(FAMILY_INSTRUCTIONS[family])
        share = len(stated) / len(rows)
        assert (0.2 < share < 0.5) if family == "general" else share == 1.0
        for r in stated:
            msgs = to_messages(r, schema)
            doc = {"key": 0, "prompt": msgs[-2]["content"],
                   "instruction_id_list": [INSTRUCTIONS[x["kind"]].checker for x in r["meta"]["instructions"]],
                   "kwargs": [checker_kwargs(x, r["lang"]) for x in r["meta"]["instructions"]]}
            for x, ok in zip(r["meta"]["instructions"], _inst(doc, msgs[-1]["content"])):
                # lm-eval's case checkers also ask langdetect whether the text is English, which it
                # cannot tell for some short capitalised answers: the letters are what is checked
                if x["kind"] in ("lowercase", "capital"):
                    text = msgs[-1]["content"]
                    assert text == (text.lower() if x["kind"] == "lowercase" else text.upper())
                    if r["lang"] == "en":
                        case_checks.append(ok)
                elif r["lang"] == "tr" and x["kind"] == "end_phrase" and "capital" in kinds_of(r):
                    # Python's casing of Turkish is not reversible ("ı".upper() is "I", "I".lower()
                    # "i"), so a capitalised end phrase never matches lm-eval's lowercased one;
                    # Turkish is a stand-in language of XQuAD, never a training language
                    continue
                else:
                    assert ok, (r["lang"], x, msgs[-1]["content"])
    # English case answers: most pass lm-eval's checker whole (the rest: langdetect's doing)
    more = generate("reasoning", ["en"], n=300, seed=2)
    for r in more:
        msgs = to_messages(r, "orca")
        doc = {"key": 0, "prompt": msgs[-2]["content"],
               "instruction_id_list": [INSTRUCTIONS[x["kind"]].checker for x in r["meta"]["instructions"]],
               "kwargs": [checker_kwargs(x, "en") for x in r["meta"]["instructions"]]}
        case_checks += [ok for x, ok in zip(r["meta"]["instructions"], _inst(doc, msgs[-1]["content"]))
                        if x["kind"] in ("lowercase", "capital")]
    assert len(case_checks) > 50 and 0.6 < sum(case_checks) / len(case_checks) < 1.0


def kinds_of(row) -> set[str]:
    return {x["kind"] for x in row["meta"]["instructions"]}


def _inst(doc, response):
    from lm_eval.tasks.ifeval.utils import process_results

    return process_results(doc, [response])["inst_level_strict_acc"]


def write_samples(params, answers: dict[str, list[str]], rows, score):
    """Every model's per-item scores: the IFEval slot from its answers (the checkers' scores), the
    other slots equal for every model and well above chance."""
    store = params.store
    rng = np.random.default_rng(0)
    others = {}
    from cft_helpers.evaluation.harness import task_plan

    for bench, tasks in task_plan(params).items():
        for t, _ in tasks:
            if bench != "ifeval":
                others[(bench, t)] = (rng.random(16) < 0.8).astype(float) if bench in ("mmlu", "hellaswag") \
                    else rng.random(16)
    for name, texts in answers.items():
        out = []
        for i, (row, text) in enumerate(zip(rows, texts)):
            out.append({"task": "cft_instructions", "doc_id": i, "response": text, **score(row, [text])})
        for (bench, t), arr in others.items():
            metric = params.evaluation.benchmarks[bench].metric
            out += [{"task": t, "doc_id": i, metric: float(v)} for i, v in enumerate(arr)]
        write_jsonl(store.root / "eval" / f"{name}.samples.jsonl", out)
    return store


MODELS = ["base", "p1_alpaca", "p2_alpaca", "p1_instruct", "p2_instruct", "mixture", "rev1", "rev2",
          "lf_h1", "lf_h2", "spectrum", "gr_5", "gr_10", "er_10", "lora"]


def test_dropping_a_stated_instruction_on_half_the_prompts_is_seen_and_decides_c3a(task, tmp_path):
    rows, score = task
    params = load_params("smoke", overrides={"run_dir": str(tmp_path / "run"), "findings.n_bootstrap": 1000})
    assert params.evaluation.benchmarks["ifeval"].task == "instructions"
    references = [r["response"] for r in rows]
    dropped = [without_one(r) if i % 2 == 0 else r["response"] for i, r in enumerate(rows)]
    assert all(score(r, [d])["instructions_followed"] < 1.0 for r, d in zip(rows[::2], dropped[::2]))
    # the base follows nothing it is asked (answers "The answer is 7."): both Phase-1 models are
    # above it, so the claims compare something
    answers = {m: references for m in MODELS}
    answers["base"] = ["The answer is 7."] * N
    answers["p2_instruct"] = dropped
    write_samples(params, answers, rows, score)
    claims, meta = F.decide_claims([F.SeedRun(params)])
    c = {x.id: x for x in claims}
    changes = F.benchmark_changes([F.SeedRun(params)], {"dissimilar": ("p1_instruct", "p2_instruct")},
                                  exclude=meta["dropped"])
    slot = changes.loc[("dissimilar", "ifeval")]
    assert slot["change"] < -0.1 and slot["high"] < 0
    assert c["C3a"].verdict == "reproduced" and c["C3b"].verdict == "reproduced"
    assert meta["phase1_against_base"]["p1_instruct"]["above"] is True
    assert "compares nothing" not in c["C3a"].note
    # the same store with no drop: nothing to see
    answers["p2_instruct"] = references
    write_samples(params, answers, rows, score)
    c = {x.id: x for x in F.decide_claims([F.SeedRun(params)])[0]}
    assert c["C3a"].value == pytest.approx(0.0) and c["C3a"].verdict == "inconclusive"


def test_instruction_kinds_breaks_the_slot_down_by_kind(task, tmp_path, model_cache):
    # references follow every kind; "The answer is 7." follows only the length kinds (it is one
    # short sentence); the dropped answers miss the first active kind on half of the prompts
    from cft_helpers.evaluation.answers import instruction_kinds
    from cft_helpers.evaluation.harness import suite_hash
    from cft_helpers.evaluation.ifeval_offline import write_instructions_task

    rows, score = task
    params = load_params("smoke", overrides={"run_dir": str(tmp_path / "run"), "cache_dir": str(model_cache)})
    store = params.store
    write_instructions_task(store.eval_tasks_dir(suite_hash(params)), Cache(model_cache), N, 0, 64, 1)
    dropped = [without_one(r) if i % 2 == 0 else r["response"] for i, r in enumerate(rows)]
    for name, texts in (("ref", [r["response"] for r in rows]), ("plain", ["The answer is 7."] * N),
                        ("dropped", dropped)):
        write_jsonl(store.eval_samples(name), [{"task": "cft_instructions", "doc_id": i, "response": t}
                                               for i, t in enumerate(texts)])
    table = instruction_kinds(params, ["ref", "plain", "dropped"])
    stated = Counter(x["kind"] for r in rows for x in r["instructions"])
    assert table["stated"].to_dict() == dict(stated)
    assert (table["ref"] == 1.0).all()
    assert table.loc["max_words", "plain"] == 1.0 and table.loc["one_sentence", "plain"] == 1.0
    assert table.loc[["title", "quotation", "postscript", "end_phrase", "highlight"], "plain"].max() == 0.0
    missed = Counter(next(x["kind"] for x in r["instructions"] if x["kind"] not in PASSIVE) for r in rows[::2])
    for kind, n in missed.items():
        assert table.loc[kind, "dropped"] == pytest.approx(1 - n / stated[kind]), kind
    off = load_params("smoke", overrides={"run_dir": str(tmp_path / "run"),
                                          "evaluation.benchmarks.ifeval": {"source": "off"}})
    assert instruction_kinds(off, ["ref"]).empty
