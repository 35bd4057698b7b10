"""Our own lm-eval tasks over the real multilingual benchmarks (``source: cft`` in the params).

lm-eval 0.4.13's XQuAD task scores through ``squad_metrics``, whose import breaks under
transformers 5, and lm-eval ships no XLSum task. These tasks read the real documents (a hub
dataset, or local files in the same schema) and score them with ``cft_helpers.evaluation.scoring``,
the F1 / exact match and ROUGE that also score the offline stand-ins, with tokenisation that
works for Chinese, Japanese and Thai (characters) and Arabic (NFKC, punctuation removed):

- ``qa``: SQuAD schema (context, question, answers{text, answer_start}): XQuAD
  (``google/xquad``, config ``xquad.{lang}``, split ``validation``), MLQA;
- ``summary``: XLSum schema (text, summary): ``csebuetnlp/xlsum``, configs named by language
  (``arabic``, ``chinese_simplified``, ...), split ``test``.

A benchmark's ``scorer: paper`` (mlqa, xquad, xlsum) scores its tasks with the paper's scorer
instead (``scoring.qa_scores`` / ``summary_scores``): MLQA's official evaluation, SQuAD's, or
rouge_score's default tokenizer.

The prompts are the offline stand-ins' (zero-shot; the chat template is applied by the harness),
except XQuAD under ``scorer: paper``: the paper ran lm-eval's ``xquad_<lang>`` tasks, whose prompt
is in each language ("Kontext: ... Frage: ... Antwort:"), read here from the installed lm-eval's
``xquad_<lang>.yaml`` (``doc_to_text``; lm-eval's Arabic one reads "سيا:", a cut-short "سياق:",
kept as lm-eval has it).
``write_cft_tasks`` writes one YAML per language and one scoring module into a folder that
``TaskManager(include_path=...)`` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cft_helpers.evaluation.scoring import DEFAULT_SCORER

# Bump when a prompt or the scoring changes: cached results of an older suite are redone.
# 2: XQuAD under scorer: paper asks in each language, as lm-eval's xquad tasks do.
CFT_TASKS_VERSION = 2

_QA = {
    "doc_to_text": "Context: {{context}}\n\nQuestion: {{question}}\n\nAnswer:",
    "doc_to_target": "{{answers.text[0]}}",
    "metrics": ["f1", "exact_match"],
    "max_gen_toks": 64,
}
_SUMMARY = {
    "doc_to_text": "Summarize the following text in one sentence.\n\n{{text}}\n\nSummary:",
    "doc_to_target": "{{summary}}",
    "metrics": ["rouge1", "rouge2", "rougeL"],
    "max_gen_toks": 128,
}
# One entry per cft_helpers.params.CFT_TASK_KINDS (the kinds the params accept).
CFT_TASKS: dict[str, dict[str, Any]] = {"qa": _QA, "summary": _SUMMARY}
MODULE = "cft_hub_scoring"


def task_name(bench: str, lang: str) -> str:
    return f"cft_{bench}_{_ident(lang)}"


def _ident(lang: str) -> str:
    return lang.replace("-", "_")


def process_function(kind: str, lang: str, scorer: str = DEFAULT_SCORER, bench: str | None = None) -> str:
    """Name of the scoring module's function for a task kind and language under a scorer: shared
    by the benchmarks of a kind with the default scorer, one per benchmark with the paper's."""
    if scorer == DEFAULT_SCORER:
        return f"process_{kind}_{_ident(lang)}"
    return f"process_{kind}_{bench}_{scorer}_{_ident(lang)}"


def scoring_module(entries: set[tuple[str, str, str, str | None]]) -> str:
    """Python source of the scoring module: one process_results function per (kind, language,
    scorer, benchmark; None with the default scorer) (the documents carry no language field, and
    lm-eval passes only doc and results)."""
    lines = ['"""Written by cft_helpers.evaluation.hub_tasks: lm-eval calls these per document."""',
             "from cft_helpers.evaluation.scoring import qa_scores, summary_scores", "", "",
             "def _qa(lang, scorer, bench):", "    def process(doc, results):",
             '        return qa_scores(results[0], doc["answers"]["text"], lang, scorer, bench)',
             "    return process", "", "",
             "def _summary(lang, scorer, bench):", "    def process(doc, results):",
             '        return summary_scores(results[0], doc["summary"], lang, scorer, bench)', "    return process",
             "", ""]
    for kind, lang, scorer, bench in sorted(entries, key=lambda e: tuple(map(str, e))):
        lines.append(f"{process_function(kind, lang, scorer, bench)} = _{kind}({lang!r}, {scorer!r}, {bench!r})")
    return "\n".join(lines) + "\n"


def lm_eval_xquad_prompt(lang: str) -> str:
    """lm-eval's own XQuAD prompt in ``lang`` (``doc_to_text`` of its installed ``xquad_<lang>.yaml``)."""
    from importlib.resources import files

    folder = files("lm_eval") / "tasks" / "xquad"
    path = folder / f"xquad_{lang}.yaml"
    if not path.is_file():
        have = sorted(p.name[len("xquad_"):-len(".yaml")] for p in folder.iterdir() if p.name.startswith("xquad_")
                      and p.name.endswith(".yaml"))
        raise ValueError(f"lm-eval has no XQuAD task in {lang!r} to take the paper's prompt from; it has {have}")
    return yaml.safe_load(path.read_text(encoding="utf-8"))["doc_to_text"]


def task_yaml(bench: str, spec, lang: str, root: Path | None = None) -> str:
    """The lm-eval YAML of one language of a ``source: cft`` benchmark."""
    kind = CFT_TASKS[spec.task]
    if bench == "xquad" and spec.scorer == "paper":  # the paper's numbers: lm-eval's per-language prompt
        kind = {**kind, "doc_to_text": lm_eval_xquad_prompt(lang)}
    head = {"task": task_name(bench, lang), **spec.dataset.resolve(lang, root), "test_split": spec.dataset.split,
            "output_type": "generate_until",
            "generation_kwargs": {"until": ["\n"], "do_sample": False,
                                  "max_gen_toks": spec.max_gen_toks or kind["max_gen_toks"]},
            "doc_to_text": kind["doc_to_text"], "doc_to_target": kind["doc_to_target"]}
    metrics = [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in kind["metrics"]]
    text = yaml.safe_dump(head, sort_keys=False, allow_unicode=True, width=1000)
    text += f"process_results: !function {MODULE}.{process_function(spec.task, lang, spec.scorer, bench)}\n"
    text += yaml.safe_dump({"metric_list": metrics, "metadata": {"version": CFT_TASKS_VERSION}}, sort_keys=False)
    return text


def write_cft_tasks(folder: Path, benchmarks: dict[str, Any], root: Path | None = None) -> list[str]:
    """Write the YAMLs of every ``source: cft`` benchmark and the scoring module; returns the
    task names. ``root`` resolves relative ``data_files``."""
    folder.mkdir(parents=True, exist_ok=True)
    entries: set[tuple[str, str, str, str | None]] = set()
    names = []
    for bench, spec in benchmarks.items():
        if spec.source != "cft":
            continue
        for lang in spec.langs:
            (folder / f"{task_name(bench, lang)}.yaml").write_text(task_yaml(bench, spec, lang, root),
                                                                   encoding="utf-8")
            entries.add((spec.task, lang, spec.scorer, bench if spec.scorer != DEFAULT_SCORER else None))
            names.append(task_name(bench, lang))
    if names:
        (folder / f"{MODULE}.py").write_text(scoring_module(entries), encoding="utf-8")
    return names
