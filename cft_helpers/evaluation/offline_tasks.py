"""Offline stand-ins for the paper's benchmarks, built by the generator from held-out instances.

None of MMLU, HellaSwag, MLQA, XQuAD or XLSum ships offline (SPEC.md section 7), so the offline
parameter sets evaluate on data in the same *schemas*, written by the built-in generator from
task instances that no training split contains (``generator.split_of``), in the same languages
as the real benchmarks where the generator has them:

- ``mc`` (MMLU schema: question, choices, answer): English questions of both task families with
  four options; distractors are near misses (neighbouring numbers, the other boxes' values,
  other weekdays, other words).
- ``completion`` (HellaSwag schema: ctx, endings, label): an English answer sentence cut before
  its answer; four endings, one true.
- ``qa_lookup`` (SQuAD schema: context, question, answers{text, answer_start}), per language:
  an inventory passage and the question which box holds what (the MLQA stand-in).
- ``qa_facts`` (SQuAD schema), per language: three fact sentences and a question answered by a
  span of one of them (the XQuAD stand-in).
- ``summary`` (XLSum schema: text, summary), per language: four sentences and their lead
  sentence as the reference summary (a lead-1 summary, as news summaries often are).

Each writer returns rows; ``write_task_files`` puts them with lm-eval task YAMLs in a folder
that ``lm_eval.tasks.TaskManager(include_path=...)`` reads.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable

from cft_helpers.data.generator import TASKS, split_of
from cft_helpers.data.lexicon import LANGUAGES

# Bump when the task data or prompts change: cached results of an older suite are redone.
SUITE_VERSION = 1


def heldout_instances(task: str, n: int, seed: int, exclude: set[str] | None = None,
                      repeat: bool = True) -> list[tuple]:
    """``n`` held-out argument tuples of a generator task (never in a training split), distinct
    while there are enough; tasks with a small space (weekdays, opposites) repeat theirs in a
    shuffled cycle unless ``repeat`` is False (then fewer than ``n`` may come back)."""
    spec = TASKS[task]
    rng = random.Random(f"{seed}|eval|{task}")
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


# --------------------------------------------------------------------------- lm-eval task files

_HEADER = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
"""

_MC_BODY = """output_type: multiple_choice
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
"""

_COMPLETION_BODY = """output_type: multiple_choice
doc_to_text: "{{{{ctx}}}}"
doc_to_choice: "{{{{endings}}}}"
doc_to_target: label
"""

_GENERATE = """output_type: generate_until
generation_kwargs:
  until: ["\\n"]
  do_sample: false
  max_gen_toks: {max_gen_toks}
"""

_QA_BODY = _GENERATE + """doc_to_text: "Context: {{{{context}}}}\\n\\nQuestion: {{{{question}}}}\\n\\nAnswer:"
doc_to_target: "{{{{answers.text[0]}}}}"
process_results: !function cft_scoring.process_qa
"""

_SUMMARY_BODY = _GENERATE + """doc_to_text: "Summarize the following text in one sentence.\\n\\n{{{{text}}}}\\n\\nSummary:"
doc_to_target: "{{{{summary}}}}"
process_results: !function cft_scoring.process_summary
"""


def _task_yaml(body: str, metrics: list[str]) -> str:
    """An lm-eval task YAML template: our JSONL file, a body, mean-aggregated metrics."""
    listed = "".join(f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true\n" for m in metrics)
    return _HEADER + body + "metric_list:\n" + listed + "metadata:\n  version: {version}\n"


# lm-eval loads ``!function`` targets from a module beside the YAML files.
_SCORING_MODULE = '''"""Written by cft_helpers.evaluation.offline_tasks: lm-eval calls these per document."""
from cft_helpers.evaluation.scoring import exact_match, f1, rouge


def process_qa(doc, results):
    answers = doc["answers"]["text"]
    return {"f1": f1(results[0], answers, doc["lang"]), "exact_match": exact_match(results[0], answers, doc["lang"])}


def process_summary(doc, results):
    return rouge(results[0], doc["summary"], doc["lang"])
'''

KINDS: dict[str, tuple[str, Callable]] = {
    "mc": (_task_yaml(_MC_BODY, ["acc"]), mc_rows),
    "completion": (_task_yaml(_COMPLETION_BODY, ["acc", "acc_norm"]), completion_rows),
    "qa_lookup": (_task_yaml(_QA_BODY, ["f1", "exact_match"]), qa_lookup_rows),
    "qa_facts": (_task_yaml(_QA_BODY, ["f1", "exact_match"]), qa_facts_rows),
    "summary": (_task_yaml(_SUMMARY_BODY, ["rouge1", "rouge2", "rougeL"]), summary_rows),
}
PER_LANGUAGE = {"qa_lookup", "qa_facts", "summary"}


def task_name(kind: str, lang: str | None = None) -> str:
    return f"cft_{kind}" + (f"_{lang}" if lang else "")


def write_task_files(folder: Path, kind: str, langs: list[str] | None, n: int, seed: int,
                     max_gen_toks: int = 32) -> list[str]:
    """Write the data (JSONL) and lm-eval YAML of one offline task (per language where it has
    languages) into ``folder``; returns the task names."""
    if kind not in KINDS:
        raise ValueError(f"unknown offline task kind {kind!r}; valid: {sorted(KINDS)}")
    template, build = KINDS[kind]
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
                                                             version=SUITE_VERSION, max_gen_toks=max_gen_toks))
        names.append(name)
    return names
