"""Offline stand-ins for the paper's benchmarks, built by the generator from held-out instances.

None of MMLU, HellaSwag, MLQA, XQuAD or XLSum ships offline (docs/ENGINEERING.md, "The offline world"), so the offline
parameter sets evaluate on data in the same *schemas*, written by the built-in generator from
task instances that no training split contains (``generator.split_of``), in the same languages
as the real benchmarks where the generator has them:

- ``mc`` (MMLU schema: question, choices, answer): English questions of both task families with
  four options; distractors are near misses (neighbouring numbers, the other boxes' values,
  other weekdays, other words).
- ``completion`` (HellaSwag schema: ctx, endings, label): an English answer sentence cut before
  its answer; four endings, one true.
  Both score each item by lm-eval's rule (``acc``; ``acc_norm``: per character) and by
  ``p_correct``, the true choice's probability among the four (softmax of their
  log-likelihoods): continuous, so a change between two models shows with far fewer items
  (benchmarks/bench_ea_power.py).
- ``qa_lookup`` (SQuAD schema: context, question, answers{text, answer_start}), per language:
  an inventory passage and the question which box holds what (the MLQA stand-in).
- ``qa_facts`` (SQuAD schema), per language: three fact sentences and a question answered by a
  span of one of them (the XQuAD stand-in).
- ``summary`` (XLSum schema: text, summary), per language: four sentences and their lead
  sentence as the reference summary (a lead-1 summary, as news summaries often are).
- ``response_ll`` (instruction, reference response), English, both task families: the
  per-byte probability of the reference response under the model, teacher-forced after the
  chat-templated prompt (with the row's system prompt where the family has one):
  ``byte_prob = exp(loglikelihood / UTF-8 bytes of the response)`` = 2^-bits-per-byte, in (0, 1].
  A continuous score per item (lm-eval ``loglikelihood``; lm-eval moves the template's newline
  after ``<|im_start|>assistant`` into the scored continuation, so that token counts too).
- ``instructions`` (the IFEval slot; IFEval's schema: key, prompt, instruction_id_list, kwargs):
  held-out English prompts of both task families, each stating two or three verifiable
  instructions of IFEval's kinds (``generator.INSTRUCTIONS``: any kind, not only those a family's
  training rows state), answered greedily and scored by lm-eval's own IFEval checkers
  (``ifeval_offline.write_instructions_task``): per prompt, the share of its instructions
  followed (strict, and loose beside it) and IFEval's prompt-level accuracies.
- ``answer_line``: English prompts of the ``reasoning`` family (system prompt, passage,
  question), answered greedily; ``follows`` is 1 when the answer's last non-empty line is
  ``Answer: <something>``, the response convention that family's training data teaches (a
  verifiable instruction-following check, as IFEval's are).

Each writer returns rows; ``write_task_files`` puts them with lm-eval task YAMLs in a folder
that ``lm_eval.tasks.TaskManager(include_path=...)`` reads.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Callable

from cft_helpers.data.generator import (FAMILY_SCHEMA, INSTRUCTIONS, TASKS, checker_kwargs, compatible,
                                        draw_instruction, instance_key, split_of, state_instructions, tasks_of)
from cft_helpers.data.lexicon import LANGUAGES
from cft_helpers.data.schema import to_messages
from cft_helpers.evaluation.scoring import DEFAULT_SCORER, PAPER_SCORED, check_scorer
from cft_helpers.params import PER_LANGUAGE, SCORED_AS

# Bump when the task data or prompts change: cached results of an older suite are redone.
SUITE_VERSION = 2  # 2: the IFEval slot of stated instructions; generator version 2


def heldout_instances(task: str, n: int, seed: int, exclude: set[str] | None = None,
                      repeat: bool = True, stream: str = "") -> list[tuple]:
    """``n`` held-out argument tuples of a generator task (never in a training split), distinct
    while there are enough; tasks with a small space (weekdays, opposites) repeat theirs in a
    shuffled cycle unless ``repeat`` is False (then fewer than ``n`` may come back). ``stream``:
    another draw of the same held-out space (mostly other instances than the default stream's)."""
    spec = TASKS[task]
    rng = random.Random(f"{seed}|eval|{task}" + (f"|{stream}" if stream else ""))
    pool = [a for a in spec.space if split_of(f"{task}|{','.join(map(str, a))}") == "heldout"] \
        if spec.space else None
    if pool is not None:
        rng.shuffle(pool)
        if not repeat:
            return pool[:n]
        return [pool[i % len(pool)] for i in range(n)] if pool else []
    seen: set[tuple] = set()
    out: list[tuple] = []
    for _ in range(200 * n):
        args = spec.sample(rng)
        key = f"{task}|{','.join(map(str, args))}"
        if args in seen or split_of(key) != "heldout" or (exclude and key in exclude):
            continue
        seen.add(args)
        out.append(args)
        if len(out) == n:
            break
    return out


def _numeric_distractors(answer: int, rng: random.Random, avoid: set[int] = frozenset()) -> list[int]:
    options = [answer + d for d in (-10, -2, -1, 1, 2, 10, 3, -3, 5, -5) if answer + d > 0]
    options = [o for o in options if o != answer and o not in avoid]
    rng.shuffle(options)
    return options[:3]


def _prompt(row: dict) -> str:
    if "instruction" in row:
        return row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    return row["question"]


def mc_rows(n: int, seed: int) -> list[dict]:
    """MMLU-schema multiple choice in English."""
    lex, rng = LANGUAGES["en"], random.Random(f"{seed}|mc")
    tasks = ["sum", "product", "largest", "next_day", "opposite", "box_total", "box_diff", "box_lookup"]
    per = -(-n // len(tasks))
    rows = []
    for task in tasks:
        for args in heldout_instances(task, 2 * per, seed, repeat=False):
            row = TASKS[task].render(lex, args, 0)
            answer = row["answer"]
            if task == "next_day":
                wrong = [d for d in lex["days"] if d != answer]
            elif task == "opposite":
                pair, direction = args
                wrong = [lex["opposites"][pair][direction]] + [p[1 - direction] for i, p in
                                                               enumerate(lex["opposites"]) if i != pair]
            elif task == "largest":
                wrong = [str(v) for v in args if str(v) != answer]
            elif task == "box_lookup":
                wrong = [str(v) for v in args[:-1] if str(v) != answer]
            else:
                wrong = [str(v) for v in _numeric_distractors(int(answer), rng)]
            rng.shuffle(wrong)
            choices = [answer] + wrong[:3]
            rng.shuffle(choices)
            rows.append({"id": f"mc-{task}-{'-'.join(map(str, args))}", "lang": "en", "task": task,
                         "question": _prompt(row), "choices": choices, "answer": choices.index(answer)})
    rng.shuffle(rows)
    return rows[:n]


def completion_rows(n: int, seed: int) -> list[dict]:
    """HellaSwag-schema sentence completion in English: context up to the answer, four endings."""
    lex, rng = LANGUAGES["en"], random.Random(f"{seed}|completion")
    tasks = ["sum", "product", "next_day", "opposite", "largest"]
    per = -(-n // len(tasks))
    rows = []
    for task in tasks:
        for args in heldout_instances(task, 2 * per, seed, repeat=False):
            row = TASKS[task].render(lex, args, 0)
            out, answer = row["output"], row["answer"]
            cut = out.rfind(answer)
            ctx, rest = out[:cut].rstrip(), out[cut + len(answer):]
            if task == "next_day":
                wrong = [d for d in lex["days"] if d != answer]
            elif task == "opposite":
                wrong = [p[i] for p in lex["opposites"] for i in (0, 1) if p[i] != answer]
            elif task == "largest":
                wrong = [str(v) for v in args if str(v) != answer]
            else:
                wrong = [str(v) for v in _numeric_distractors(int(answer), rng)]
            rng.shuffle(wrong)
            endings = [f" {answer}{rest}"] + [f" {w}{rest}" for w in wrong[:3]]
            rng.shuffle(endings)
            rows.append({"id": f"completion-{task}-{'-'.join(map(str, args))}", "lang": "en", "task": task,
                         "ctx": ctx, "endings": endings, "label": endings.index(f" {answer}{rest}")})
    rng.shuffle(rows)
    return rows[:n]


def _without_label(question: str) -> str:
    """'Frage: Welche Zahl ...?' -> 'Welche Zahl ...?' (the prompt adds its own 'Question:')."""
    for colon in (":", "："):
        head, sep, tail = question.partition(colon)
        if sep and len(head) <= 12:
            return tail.strip()
    return question


def qa_lookup_rows(lang: str, n: int, seed: int) -> list[dict]:
    """SQuAD-schema extractive QA: which number an inventory lists for a box."""
    lex = LANGUAGES[lang]
    rows = []
    for args in heldout_instances("box_lookup", n, seed):
        *vals, which = args
        k = "ABCD"[which]
        lines = [lex["box_line"].format(k=box, v=v) for box, v in zip("ABCD", vals)]
        context = "\n".join(lines)
        line_start = context.index(lines[which])
        answer = str(vals[which])
        start = line_start + lines[which].rindex(answer)
        question = _without_label(lex["q_lookup"].format(k=k))
        rows.append({"id": f"qa_lookup-{lang}-{'-'.join(map(str, args))}", "lang": lang, "context": context,
                     "question": question, "answers": {"text": [answer], "answer_start": [start]}})
    return rows


def qa_facts_rows(lang: str, n: int, seed: int) -> list[dict]:
    """SQuAD-schema extractive QA over three fact sentences (next weekday, opposite, sum)."""
    lex, rng = LANGUAGES[lang], random.Random(f"{seed}|qa_facts|{lang}")
    days = heldout_instances("next_day", n, seed)
    opposites = heldout_instances("opposite", n, seed)
    sums = heldout_instances("sum", n, seed)
    rows = []
    for i in range(n):
        facts = {"next_day": TASKS["next_day"].render(lex, days[i], 0),
                 "opposite": TASKS["opposite"].render(lex, opposites[i], 0),
                 "sum": TASKS["sum"].render(lex, sums[i], 0)}
        order = list(facts)
        rng.shuffle(order)
        context = " ".join(facts[t]["output"] for t in order)
        asked = "next_day" if i % 2 == 0 else "opposite"
        row = facts[asked]
        sentence_start = context.index(row["output"])
        start = sentence_start + row["output"].rindex(row["answer"])
        rows.append({"id": f"qa_facts-{lang}-{i}", "lang": lang, "context": context, "question": row["instruction"],
                     "answers": {"text": [row["answer"]], "answer_start": [start]}})
    return rows


def summary_rows(lang: str, n: int, seed: int) -> list[dict]:
    """XLSum-schema summarisation: four sentences, the lead sentence as the reference summary."""
    lex = LANGUAGES[lang]
    tasks = ["sum", "product", "next_day", "opposite"]
    inst = {t: heldout_instances(t, n, seed) for t in tasks}
    rows = []
    for i in range(n):
        sentences = [TASKS[t].render(lex, inst[t][(i + j) % len(inst[t])], 0)["output"]
                     for j, t in enumerate(tasks[i % 4:] + tasks[: i % 4])]
        rows.append({"id": f"summary-{lang}-{i}", "lang": lang, "text": " ".join(sentences),
                     "summary": sentences[0]})
    return rows


def _round_robin(per_task: list[list[dict]], n: int) -> list[dict]:
    """Up to ``n`` rows taken one per task in turn (a task that runs out drops out)."""
    rows, i = [], 0
    while len(rows) < n and any(i < len(t) for t in per_task):
        rows += [t[i] for t in per_task if i < len(t)][: n - len(rows)]
        i += 1
    return rows


def _chat_rows(family: str, n: int, seed: int, kind: str) -> list[dict]:
    """Held-out English instances of a family's tasks as (system, prompt, response) rows, the
    messages training would see (``schema.to_messages``), tasks in equal turns while they last."""
    lex, rng = LANGUAGES["en"], random.Random(f"{seed}|{kind}|{family}")
    per_task = []
    for task in tasks_of(family):
        rows = []
        for args in heldout_instances(task.name, n, seed, repeat=False, stream=kind):
            variant = rng.randrange(2)
            src = task.render(lex, args, variant)
            answer = src.pop("answer")
            msgs = to_messages(src, FAMILY_SCHEMA[family])
            system = msgs[0]["content"] if msgs[0]["role"] == "system" else ""
            rows.append({"id": f"{kind}-{task.name}-{'-'.join(map(str, args))}", "lang": "en", "family": family,
                         "task": task.name, "key": instance_key(task.name, args), "system": system,
                         "prompt": msgs[-2]["content"], "response": msgs[-1]["content"], "answer": answer,
                         "args": list(args), "variant": variant})
        per_task.append(rows)
    return _round_robin(per_task, n)


def response_ll_rows(n: int, seed: int) -> list[dict]:
    """Prompts with their reference responses, half from each task family (English)."""
    general = _chat_rows("general", n - n // 2, seed, "response_ll")
    rows = general + _chat_rows("reasoning", n - len(general), seed, "response_ll")
    random.Random(f"{seed}|response_ll").shuffle(rows)
    return rows


def instructions_rows(n: int, seed: int, valid: Callable[[dict], bool] | None = None) -> list[dict]:
    """Held-out English prompts stating two or three verifiable instructions each, half of each
    task family, in IFEval's schema (``key``, ``prompt``, ``instruction_id_list``, ``kwargs``),
    with the family's system prompt and a compliant reference response. The instructions are
    drawn from every kind that fits the prompt's family, without conflicts.

    ``valid(row)``: whether the checkers accept the row's reference response; a row they do not
    gets other instructions (drawn again, up to 50 times). IFEval's case checkers also ask
    langdetect whether the text is English, which it cannot tell for some short, capitalised or
    numeric answers: such an item could not be followed by any answer, so it is never asked."""
    lex, rng = LANGUAGES["en"], random.Random(f"{seed}|instructions")
    general = _chat_rows("general", n - n // 2, seed, "instructions")
    rows = []
    for i, row in enumerate(general + _chat_rows("reasoning", n - len(general), seed, "instructions")):
        for _ in range(50):
            kinds: list[str] = []
            for _ in range(2 + rng.randrange(2)):
                options = compatible(kinds, row["family"])
                if options:
                    kinds.append(rng.choice(options))
            stated = [draw_instruction(k, row["family"], rng) for k in kinds]
            task, args = TASKS[row["task"]], tuple(row["args"])
            src = state_instructions(task.render(lex, args, row["variant"]), stated, lex)
            src.pop("answer")
            msgs = to_messages(src, FAMILY_SCHEMA[row["family"]])
            item = {**row, "id": f"instructions-{row['key']}", "key": i, "instance": row["key"],
                    "prompt": msgs[-2]["content"], "response": msgs[-1]["content"], "instructions": stated,
                    "instruction_id_list": [INSTRUCTIONS[x["kind"]].checker for x in stated],
                    "kwargs": [checker_kwargs(x, "en") for x in stated]}
            if valid is None or valid(item):
                break
        else:
            raise RuntimeError(f"no instructions the checkers accept on {row['key']!r} after 50 draws")
        rows.append(item)
    random.Random(f"{seed}|instructions").shuffle(rows)
    return rows


def answer_line_rows(n: int, seed: int) -> list[dict]:
    """Reasoning-family prompts (system prompt, passage, question), English."""
    rows = _chat_rows("reasoning", n, seed, "answer_line")
    random.Random(f"{seed}|answer_line").shuffle(rows)
    return rows


# The reasoning family's response convention: a last line "Answer: <x>" (lexicon ``answer``).
_ANSWER_LINE = re.compile(r"^\s*Answer:\s*\S")


def follows_answer_line(response: str) -> float:
    """1.0 when the last non-empty line of ``response`` is ``Answer: <something>``, else 0.0."""
    lines = [line for line in (response or "").splitlines() if line.strip()]
    return float(bool(lines) and bool(_ANSWER_LINE.match(lines[-1])))


def choice_scores(lls, gold: int, choices: list[str]) -> dict[str, float]:
    """A multiple-choice item's scores from its choices' log-likelihoods, by lm-eval 0.4.13's rule
    (``ConfigurableTask.process_results``): ``acc`` (argmax of the log-likelihoods is the gold
    choice), ``acc_norm`` (argmax of log-likelihood per character of the choice), and
    ``p_correct``: the gold choice's probability among the choices (softmax of the
    log-likelihoods, lm-eval's ``prob_norm``), a continuous score in (0, 1)."""
    import numpy as np

    lls = np.asarray(lls, dtype=float)
    lengths = np.array([float(len(c)) for c in choices])
    e = np.exp(lls - lls.max())
    return {"acc": float(np.argmax(lls) == gold), "acc_norm": float(np.argmax(lls / lengths) == gold),
            "p_correct": float(e[gold] / e.sum())}


def byte_prob(loglikelihood: float, response: str) -> float:
    """exp(loglikelihood / UTF-8 bytes of ``response``) = 2^-bits-per-byte, in (0, 1]."""
    return math.exp(loglikelihood / max(1, len(response.encode("utf-8"))))


# --------------------------------------------------------------------------- lm-eval task files

_HEADER = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
"""

# Multiple choice: lm-eval's acc / acc_norm (its rule, ``choice_scores``) and p_correct per item.
_MC_BODY = """output_type: multiple_choice
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
process_results: !function cft_scoring.process_mc
"""

_COMPLETION_BODY = """output_type: multiple_choice
doc_to_text: "{{{{ctx}}}}"
doc_to_choice: "{{{{endings}}}}"
doc_to_target: label
process_results: !function cft_scoring.process_completion
"""

_GENERATE = """output_type: generate_until
generation_kwargs:
  until: ["\\n"]
  do_sample: false
  max_gen_toks: {max_gen_toks}
"""

_QA_BODY = _GENERATE + """doc_to_text: "Context: {{{{context}}}}\\n\\nQuestion: {{{{question}}}}\\n\\nAnswer:"
doc_to_target: "{{{{answers.text[0]}}}}"
process_results: !function cft_scoring.{process}
"""

# A per-document system prompt: lm-eval resolves ``description`` per document (a field name) and
# makes it the chat's system message; empty: none (the chat template's default, as in training).
_RESPONSE_LL_BODY = """output_type: loglikelihood
description: system
doc_to_text: prompt
doc_to_target: response
target_delimiter: ""
process_results: !function cft_scoring.process_response_ll
"""

_ANSWER_LINE_BODY = """output_type: generate_until
generation_kwargs:
  until: []
  do_sample: false
  max_gen_toks: {max_gen_toks}
description: system
doc_to_text: prompt
doc_to_target: answer
process_results: !function cft_scoring.process_answer_line
"""

_SUMMARY_BODY = _GENERATE + """doc_to_text: "Summarize the following text in one sentence.\\n\\n{{{{text}}}}\\n\\nSummary:"
doc_to_target: "{{{{summary}}}}"
process_results: !function cft_scoring.{process}
"""


def _task_yaml(body: str, metrics: list[str]) -> str:
    """An lm-eval task YAML template: our JSONL file, a body, mean-aggregated metrics."""
    listed = "".join(f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true\n" for m in metrics)
    return _HEADER + body + "metric_list:\n" + listed + "metadata:\n  version: {version}\n"


_REFERENCE = {"qa": 'doc["answers"]["text"]', "summary": 'doc["summary"]'}
# lm-eval loads ``!function`` targets from a module beside the YAML files. ``process_qa`` and
# ``process_summary`` score with the default (script-aware) scorer; one function per benchmark
# that has a paper scorer follows (``process_function``).
_SCORING_MODULE = '''"""Written by cft_helpers.evaluation.offline_tasks: lm-eval calls these per document."""
from cft_helpers.evaluation.scoring import exact_match, f1, qa_scores, rouge, summary_scores
from cft_helpers.evaluation.offline_tasks import byte_prob, choice_scores, follows_answer_line


def process_qa(doc, results):
    answers = doc["answers"]["text"]
    return {"f1": f1(results[0], answers, doc["lang"]), "exact_match": exact_match(results[0], answers, doc["lang"])}


def process_summary(doc, results):
    return rouge(results[0], doc["summary"], doc["lang"])


def process_mc(doc, results):  # results: (loglikelihood, is_greedy) per choice
    out = choice_scores([r[0] for r in results], doc["answer"], ["A", "B", "C", "D"])
    return {"acc": out["acc"], "p_correct": out["p_correct"]}


def process_completion(doc, results):
    return choice_scores([r[0] for r in results], doc["label"], doc["endings"])


def process_response_ll(doc, results):  # results[0]: (loglikelihood, is_greedy)
    return {"byte_prob": byte_prob(results[0][0], doc["response"])}


def process_answer_line(doc, results):
    return {"follows": follows_answer_line(results[0])}
''' + "".join(
    f"\n\ndef process_{kind}_{bench}_paper(doc, results):\n"
    f"    return {kind}_scores(results[0], {_REFERENCE[kind]}, doc[\"lang\"], \"paper\", \"{bench}\")\n"
    for bench, kind in PAPER_SCORED.items())

KINDS: dict[str, tuple[str, Callable]] = {
    "mc": (_task_yaml(_MC_BODY, ["acc", "p_correct"]), mc_rows),
    "completion": (_task_yaml(_COMPLETION_BODY, ["acc", "acc_norm", "p_correct"]), completion_rows),
    "qa_lookup": (_task_yaml(_QA_BODY, ["f1", "exact_match"]), qa_lookup_rows),
    "qa_facts": (_task_yaml(_QA_BODY, ["f1", "exact_match"]), qa_facts_rows),
    "summary": (_task_yaml(_SUMMARY_BODY, ["rouge1", "rouge2", "rougeL"]), summary_rows),
    "response_ll": (_task_yaml(_RESPONSE_LL_BODY, ["byte_prob"]), response_ll_rows),
    "answer_line": (_task_yaml(_ANSWER_LINE_BODY, ["follows"]), answer_line_rows),
}
# The kinds written once per language (PER_LANGUAGE) and what each scored kind's answers are
# scored as (SCORED_AS: scoring.qa_scores / scoring.summary_scores) come from cft_helpers.params,
# which validates the params' offline tasks against them and against KINDS' names (OFFLINE_TASKS).


def process_function(kind: str, scorer: str = DEFAULT_SCORER, benchmark: str | None = None) -> str:
    """The scoring module's ``process_results`` function of a kind under a scorer (``paper``: the
    scorer of ``benchmark``, which must have one for that kind of answer)."""
    scored = SCORED_AS[kind]
    if scorer == DEFAULT_SCORER:
        return f"process_{scored}"
    check_scorer(scorer, benchmark, scored)
    return f"process_{scored}_{benchmark}_paper"


def task_name(kind: str, lang: str | None = None) -> str:
    return f"cft_{kind}" + (f"_{lang}" if lang else "")


def write_task_files(folder: Path, kind: str, langs: list[str] | None, n: int, seed: int,
                     max_gen_toks: int = 32, scorer: str = DEFAULT_SCORER, benchmark: str | None = None
                     ) -> list[str]:
    """Write the data (JSONL) and lm-eval YAML of one offline task (per language where it has
    languages) into ``folder``; returns the task names. ``scorer`` / ``benchmark``: whose scorer
    the answers of a generative kind are scored with (``scoring``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown offline task kind {kind!r}; valid: {sorted(KINDS)}")
    template, build = KINDS[kind]
    process = process_function(kind, scorer, benchmark) if kind in SCORED_AS else None
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cft_scoring.py").write_text(_SCORING_MODULE)
    names = []
    for lang in (langs if kind in PER_LANGUAGE else [None]):
        if lang is not None and lang not in LANGUAGES:
            raise ValueError(f"{kind}: the generator has no language {lang!r}; it has {sorted(LANGUAGES)}")
        rows = build(lang, n, seed) if lang else build(n, seed)
        name = task_name(kind, lang)
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        (folder / f"{name}.yaml").write_text(template.format(task=name, data=json.dumps(str(data)),
                                                             version=SUITE_VERSION, max_gen_toks=max_gen_toks,
                                                             process=process))
        names.append(name)
    return names
