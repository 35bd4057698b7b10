"""Running the benchmark suite through lm-evaluation-harness, and EA / MA as the paper averages.

Every benchmark of ``params.evaluation`` runs through lm-eval 0.4.13, zero-shot, with the
model's chat template applied (recorded with the results): offline stand-ins as local JSON
tasks (``offline_tasks``), real benchmarks by their lm-eval task names. A model loaded once is
handed to lm-eval in memory (``HFLM(pretrained=model)``). With ``evaluation.engine: cft`` (the
default) our ``SharedPrefixHFLM`` runs lm-eval's requests, computing shared prefixes once
(``shared_prefix.py``); lm-eval still builds the requests and computes every metric.

Results per model go to ``<run_dir>/eval/<model>.json`` (all metrics, stderr, per task and
language, sample counts, task versions, the chat template, time and items/s) and the generated
answers to ``<run_dir>/eval/<model>.samples.jsonl``. They are cached by the checkpoint's
identity and the suite's settings: rerunning evaluates only what changed.

    results = evaluate_models(params, ["p1_alpaca", "p2_alpaca"])
    ability_table(params, results)        # per model: each benchmark, EA, MA, combined

Weights run in ``evaluation.dtype`` (auto: bf16 on a CUDA GPU that has it, fp32 elsewhere;
log-softmax always in fp32). With ``runtime.processes`` above 1 a model is evaluated by
``accelerate launch`` of ``python -m cft_helpers.evaluate`` in that many processes: data
parallel, each process scores its shard of every task's items (lm-eval's rank / world_size),
lm-eval gathers the per-item results to the main process, which alone writes the run store.
AlpacaEval (generation + judge) runs on the main process only. Answers stop at the chat
template's end-of-turn token as well as at eos (``generation.stop_token_ids``).

Imports :mod:`cft_helpers.evaluation.shared_prefix` inside the function that runs lm-eval: it
imports torch, which the book's scheduler (it imports this module) must not.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

from cft_helpers.evaluation import hub_tasks
from cft_helpers.evaluation.hub_tasks import CFT_TASKS_VERSION, write_cft_tasks
from cft_helpers.evaluation.ifeval_offline import write_ifeval_task, write_instructions_task
from cft_helpers.evaluation.offline_tasks import (PER_LANGUAGE, SCORED_AS, SUITE_VERSION, task_name,
                                                  write_task_files)
from cft_helpers.evaluation.scoring import DEFAULT_SCORER
from cft_helpers.generation import stop_token_ids, uses_vllm
from cft_helpers.params import ENGLISH_BENCHMARKS, MULTILINGUAL_BENCHMARKS, Params
from cft_helpers.files import stable_hash
from cft_helpers.evaluation.alpacaeval import alpaca_spec, reference_label, run_alpaca_eval
from cft_helpers.models import load_model, load_tokenizer, resolve_model
from cft_helpers.runs import MissingArtifact
from cft_helpers.files import KeyedFile, atomic_write_json, read_json, write_jsonl
from cft_helpers.relaunch import launch_evaluation, launched
from cft_helpers.runtime import configure_runtime, release_memory


def eval_dtype(params: Params, device: str | None = None) -> str:
    """The weights' dtype while evaluating (``evaluation.dtype``): auto is bfloat16 on a CUDA
    device that supports it, else float32 (every CPU, so CPU numbers stay those of before)."""
    chosen = params.evaluation.dtype
    if chosen != "auto":
        return chosen
    device = device or params.runtime.device
    if device == "cpu":  # (no torch import: the scheduler hashes suites)
        return "float32"
    import torch

    if not torch.cuda.is_available():
        return "float32"  # (device "auto" without CUDA, or "cuda" where configure_runtime refuses)
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"  # "auto" or "cuda[:k]"


def suite_hash(params: Params) -> str:
    versions = {"suite_version": SUITE_VERSION}
    dtype = eval_dtype(params)
    if dtype != "float32":  # in the hash only when not float32: the hashes of before stay valid
        versions["dtype"] = dtype
    if alpaca_spec(params) and uses_vllm(params):  # its answers may differ from HF's
        versions["generation_engine"] = "vllm"
    if params.evaluation.engine != "lm_eval":  # another engine's float32 sums (absent for lm-eval's)
        versions["request_engine"] = params.evaluation.engine
    if any(b.source == "cft" for b in params.evaluation.benchmarks.values()):
        versions["cft_tasks_version"] = CFT_TASKS_VERSION  # (absent otherwise: older hashes stay valid)
    evaluation = params.evaluation.model_dump(exclude={"models", "engine", "dtype"})
    for b in evaluation["benchmarks"].values():  # fields only AlpacaEval sets: absent when unset,
        for k in ("judge", "reference"):       # so the suites of before they existed keep their hash
            if b.get(k) is None:
                b.pop(k, None)
        if b.get("scorer") == DEFAULT_SCORER:  # likewise the scorer: in the hash only when not the default
            b.pop("scorer")
    return stable_hash({"evaluation": evaluation, "seed": params.seed, **versions})


def task_plan(params: Params) -> dict[str, list[tuple[str, str | None]]]:
    """Benchmark -> [(lm-eval task name, language or None)] for every benchmark that runs."""
    plan: dict[str, list[tuple[str, str | None]]] = {}
    for bench, b in params.evaluation.benchmarks.items():
        if b.source in ("off", "alpaca_eval"):  # alpaca_eval runs outside lm-eval (alpacaeval.py)
            continue
        if b.source == "cft":
            plan[bench] = [(hub_tasks.task_name(bench, lang), lang) for lang in b.langs]
        elif b.source == "offline":
            langs = b.langs if b.task in PER_LANGUAGE else [None]
            plan[bench] = [(task_name(b.task, lang), lang) for lang in langs]
        else:
            plan[bench] = ([(b.task.format(lang=lang), lang) for lang in b.langs] if "{lang}" in b.task
                           else [(b.task, None)])
    seen: dict[str, str] = {}
    for bench, tasks in plan.items():  # one task scored for two benchmarks would overwrite itself
        for t, _ in tasks:
            if t in seen:
                raise ValueError(f"evaluation: task {t!r} is used by both {seen[t]} and {bench}")
            seen[t] = bench
    return plan


def write_suite(params: Params) -> Path:
    """Write the offline tasks of the suite (data + lm-eval YAML) once per suite hash."""
    store = params.store
    folder = store.eval_tasks_dir(suite_hash(params))
    done = folder / "written.json"
    if done.exists():
        return folder
    for bench, b in params.evaluation.benchmarks.items():
        if b.source == "offline" and b.task == "ifeval":
            write_ifeval_task(folder, params.cache, b.n, b.max_gen_toks or 1280, SUITE_VERSION)
        elif b.source == "offline" and b.task == "instructions":
            write_instructions_task(folder, params.cache, b.n or 32, params.seed, b.max_gen_toks or 64,
                                    SUITE_VERSION)
        elif b.source == "offline":
            write_task_files(folder, b.task, b.langs or None, b.n or 32, params.seed, b.max_gen_toks or 32,
                             scorer=b.scorer, benchmark=bench)
    write_cft_tasks(folder, params.evaluation.benchmarks, params.path("."))
    atomic_write_json(done, {"suite": suite_hash(params)})
    return folder


def scorer_label(spec) -> str:
    """What scores a benchmark's answers: our scorer (``script_aware`` or ``paper``: cft tasks and
    the offline QA and summary stand-ins), ``lm_eval`` (the task's own metric in lm-eval: lm_eval
    tasks, offline multiple choice and IFEval), ``judge`` (AlpacaEval), '' (off)."""
    if spec.source == "cft" or (spec.source == "offline" and spec.task in SCORED_AS):
        return spec.scorer
    return {"offline": "lm_eval", "lm_eval": "lm_eval", "alpaca_eval": "judge", "off": ""}[spec.source]


def benchmark_table(params: Params):
    """The mapping from each paper benchmark to what runs in its place (shown in every report)."""
    import pandas as pd

    rows = []
    for bench, b in params.evaluation.benchmarks.items():
        ability = "EA" if bench in ENGLISH_BENCHMARKS else "MA"
        what = {"off": "not run (reported as missing)", "offline": f"offline stand-in '{b.task}'",
                "lm_eval": f"lm-eval task '{b.task}'",
                "cft": f"our '{b.task}' task on {b.dataset.path if b.dataset else ''}",
                "alpaca_eval": (f"alpaca_eval, judge {b.judge.kind}:{b.judge.model} ({b.judge.annotator}), "
                                f"reference {reference_label(b.reference)}" if b.judge else "")}[b.source]
        rows.append({"benchmark": bench, "ability": ability, "runs as": what, "metric": b.metric or "",
                     "scorer": scorer_label(b), "languages": ", ".join(b.langs), "items per task": b.n})
    return pd.DataFrame(rows).set_index("benchmark")


def evaluation_key(params: Params, model_identity: str) -> str:
    """The key of a model's evaluation record: its checkpoint's identity and the suite's hash."""
    return stable_hash({"model": model_identity, "suite": suite_hash(params)})


def evaluation_done(params: Params, name: str) -> bool:
    """Whether ``<run_dir>/eval/<name>.json`` holds this model's results on this suite (what
    makes ``evaluate_model`` return the cached record)."""
    store = params.store
    result = KeyedFile(store.eval_result(name))
    if not result.path.exists():  # (before resolve_model, which refuses an arm not trained yet)
        return False
    return result.read(evaluation_key(params, resolve_model(params, name)[1])) is not None


def _processes(params: Params):
    """The processes of this launch (one: a plain ``Processes``); collectives time out after
    ``runtime.dist_timeout_s``, so no process waits in one while another works for long."""
    from cft_helpers.distributed import Processes

    return Processes(timeout_s=params.runtime.dist_timeout_s)


def _run_token(procs) -> str:
    """A token of this evaluation, the same in every process (the main one draws it): the
    others know the record is written when it carries the token (a rerun with ``force``
    finds the previous record under the same key)."""
    import uuid

    token = [uuid.uuid4().hex]
    if procs.world_size > 1:
        import torch.distributed as dist

        dist.broadcast_object_list(token, src=0)
    return token[0]


def _process_device(device: str) -> str:
    """This process's device: under a launch each process takes the GPU of its local rank."""
    if device == "cuda" and launched():
        import torch

        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def evaluate_model(params: Params, name: str, force: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    """Run the suite on one model or arm (cached); returns its results record.

    With ``runtime.processes`` above 1 (and not already in a launched process) the evaluation
    runs in that many processes (:func:`cft_helpers.relaunch.launch_evaluation`); inside a launch,
    every process calls this, each evaluates its shard, and every process returns the record the
    main one wrote."""
    store = params.store
    procs = _processes(params)
    if not procs.is_main:
        procs.wait()  # the main process resolves first: it may build the checkpoint (a model cache entry)
    ckpt, ident, template = resolve_model(params, name)
    if procs.is_main:
        procs.wait()
    key = evaluation_key(params, ident)
    result = KeyedFile(store.eval_result(name))
    if not force:
        cached = result.read(key)
        if cached is not None:
            for bench, entry in cached.get("benchmarks", {}).items():  # records of before the scorer
                if bench in params.evaluation.benchmarks and "scorer" not in entry:  # was recorded
                    entry["scorer"] = scorer_label(params.evaluation.benchmarks[bench])
            return cached
    if params.runtime.processes > 1 and not launched():
        launch_evaluation(params, [name], force=force)
        record = result.read(key)
        if record is None:
            raise RuntimeError(f"model {name!r}: the launched evaluation wrote no results to {result.path}")
        return record
    plan = task_plan(params)
    alpaca = alpaca_spec(params)
    run = _run_token(procs)
    record: dict[str, Any] = {"model": name, "key": key, "checkpoint": str(ckpt), "suite": suite_hash(params),
                              "benchmarks": {}, "tasks": {}}
    if plan or alpaca:
        device = _process_device(configure_runtime(params))
        dtype = eval_dtype(params, device)
        record.update(dtype=dtype, processes=procs.world_size)
        tok = load_tokenizer(ckpt, chat_template=template)
        chat = tok.chat_template or ""
        record.update(chat_template_sha=hashlib.sha256(chat.encode()).hexdigest()[:16], chat_template=chat)
        samples: list[dict] = []
        alpaca_samples: list[dict] = []
        vllm = bool(alpaca) and uses_vllm(params)
        model = None
        # One process: AlpacaEval first (a judge that fails, no key, does so before lm-eval's
        # hour; vLLM, a child process, finds the GPU free of the HF model). Several: lm-eval
        # first, in every process, then AlpacaEval in the main one alone (one answer cache, one
        # judge client) while the others wait outside any collective (it may take hours).
        alpaca_first = procs.world_size == 1
        if alpaca and alpaca_first:
            if not vllm:
                model = load_model(ckpt, dtype).to(device).eval()
            _add_alpaca_eval(params, name, model, tok, ident, record, alpaca_samples, progress,
                             vllm_checkpoint=ckpt if vllm else None)
        if plan:
            if procs.is_main:
                write_suite(params)
            procs.wait()  # (the others read the task files the main process wrote)
            model = model if model is not None else load_model(ckpt, dtype).to(device).eval()
            lm = _run_lm_eval(params, model, tok, device, plan, samples, name, dtype)
            if lm is not None:  # None in every process but the main one
                record["benchmarks"].update(lm.pop("benchmarks"))
                record["tasks"].update(lm.pop("tasks"))
                record.update(lm)
        if alpaca and not alpaca_first and procs.is_main:
            if vllm and model is not None:  # the GPU for vLLM's child process
                del model
                model = None
                release_memory()
            elif model is None:
                model = load_model(ckpt, dtype).to(device).eval()
            _add_alpaca_eval(params, name, model, tok, ident, record, alpaca_samples, progress,
                             vllm_checkpoint=ckpt if vllm else None)
        if procs.is_main:
            write_jsonl(store.eval_samples(name), alpaca_samples + samples)
        del model
    else:
        record["dtype"] = eval_dtype(params)
    if procs.world_size > 1:  # (one process: no token, so two runs give the same record)
        record["run"] = run
    if procs.is_main:
        result.write(key, record)
        return record
    procs.wait_until(lambda: (result.read(key) or {}).get("run") == run, f"the main process's results of {name}")
    return result.read(key)


def _add_alpaca_eval(params, name, model, tok, ident, record, samples, progress,
                     vllm_checkpoint=None) -> None:
    """AlpacaEval's entry in the record (generation + judge: outside lm-eval's items/s)."""
    out = run_alpaca_eval(params, name, model, tok, ident, progress=progress, vllm_checkpoint=vllm_checkpoint)
    record["benchmarks"]["alpacaeval"] = {**out["benchmark"], "scorer": "judge"}
    record["tasks"]["alpacaeval"] = out["task"]
    record["alpacaeval_wall_s"] = out["wall_s"]
    samples += out["samples"]


@functools.lru_cache(maxsize=4)
def _task_manager(include_paths: tuple[str, ...], with_lm_eval_tasks: bool = True):
    """lm-eval's task index, built once per process and task folders, not once per model. The
    folders are named by the suite's hash, so a cached index never serves another suite's tasks
    (a YAML added to one of your include_paths mid-session is found after a kernel restart).
    Indexing lm-eval's own ~26,000 task YAMLs takes 6-12 s: skipped when no benchmark is one of
    lm-eval's tasks (an evaluation worker of the book's scheduler then starts that much sooner)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_paths), include_defaults=with_lm_eval_tasks)


def make_lm(params: Params, model, tok, device: str, dtype: str = "float32"):
    """lm-eval's model over ``model`` in memory: ``SharedPrefixHFLM`` (engine cft) or lm-eval's
    ``HFLM`` (engine lm_eval, as ``LaunchHFLM``), either one sharding lm-eval's requests over the
    processes of a launch and stopping answers at :func:`generation.stop_token_ids`."""
    from cft_helpers.evaluation.shared_prefix import LaunchHFLM, SharedPrefixHFLM

    cfg = params.evaluation
    cls = SharedPrefixHFLM if cfg.engine == "cft" else LaunchHFLM
    # bf16 weights: log-softmax in fp32 all the same (fp32 weights: as before, lm-eval's default)
    extra = {"softmax_dtype": "float32"} if dtype != "float32" else {}
    return cls(pretrained=model, tokenizer=tok, batch_size=cfg.batch_size, max_length=cfg.max_length,
               device=device, stop_token_ids=stop_token_ids(tok, model), **extra)


def _run_lm_eval(params, model, tok, device, plan, samples, name: str = "",
                 dtype: str = "float32") -> dict[str, Any] | None:
    """lm-eval's calls for the suite; the results record's lm-eval part, or None in every
    process of a launch but the main one (lm-eval gathers the results there)."""
    import lm_eval

    folder = write_suite(params)
    cfg = params.evaluation
    lm = make_lm(params, model, tok, device, dtype)
    lm.stage = f"evaluating {name}".strip()  # the book's progress lines (our engine reports them)
    manager = _task_manager((str(folder), *(str(params.path(p)) for p in cfg.include_paths)),
                            any(b.source == "lm_eval" for b in cfg.benchmarks.values()))
    # Offline tasks hold exactly their items and set their answer length in their YAML: one call.
    # Each lm-eval benchmark gets its own call: its item limit and answer length.
    calls: list[tuple[list[str], int | None, dict | None]] = []
    offline = [t for b, tasks in plan.items() if cfg.benchmarks[b].source == "offline" for t, _ in tasks]
    if offline:
        calls.append((offline, None, None))
    for b, tasks in plan.items():
        spec = cfg.benchmarks[b]
        if spec.source == "lm_eval":
            calls.append(([t for t, _ in tasks], spec.n,
                          {"max_gen_toks": spec.max_gen_toks} if spec.max_gen_toks else None))
        elif spec.source == "cft":  # answer length is in the task YAML
            calls.append(([t for t, _ in tasks], spec.n, None))
    t0 = time.perf_counter()
    outs = [lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, apply_chat_template=True,
                                    log_samples=True, limit=limit, gen_kwargs=gen, bootstrap_iters=100,
                                    verbosity="ERROR") for names, limit, gen in calls]
    wall = time.perf_counter() - t0
    if any(out is None for out in outs):
        return None
    tasks: dict[str, Any] = {}
    for (names, _, _), out in zip(calls, outs):
        for t in names:
            metrics = {k.split(",")[0]: v for k, v in out["results"][t].items() if "," in k}
            tasks[t] = {"metrics": metrics, "n": _n_samples(out, t), "version": out["versions"].get(t)}
            samples += _samples(out, t, metrics)
    benchmarks = {}
    for bench, entries in plan.items():
        metric = params.evaluation.benchmarks[bench].metric
        per_lang = {}
        for t, lang in entries:
            if metric not in tasks[t]["metrics"]:
                raise RuntimeError(f"task {t} reports no metric {metric!r}; it has {sorted(tasks[t]['metrics'])}")
            per_lang[lang or "en"] = tasks[t]["metrics"][metric]
        benchmarks[bench] = {"score": sum(per_lang.values()) / len(per_lang), "metric": metric,
                             "scorer": scorer_label(params.evaluation.benchmarks[bench]), "by_language": per_lang}
    items = sum(v["n"] for v in tasks.values())
    return {"benchmarks": benchmarks, "tasks": tasks, "items": items, "wall_s": wall,
            "items_per_s": items / wall if wall else None,
            "lm_eval_version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None}


def evaluable_models(params: Params) -> tuple[list[str], list[str]]:
    """(models ready to evaluate, arms not trained yet) among ``params.evaluated_models()``."""
    store = params.store
    names = params.evaluated_models()
    arms = [n for n in names if n in params.arms]
    done = set(store.finished_arms(arms))
    return [n for n in names if n not in params.arms or n in done], [n for n in arms if n not in done]


def load_results(params: Params, names: Sequence[str] | None = None
                 ) -> dict[str, dict[str, Any]]:
    """The evaluation records already in the run store (read only: nothing is evaluated).

    Raises ``MissingArtifact`` naming the first model or arm without results, or with results
    from another evaluation suite than these params', and the notebook that writes them."""
    store = params.store
    names = list(names) if names is not None else params.evaluated_models()
    suite = suite_hash(params)
    out = {}
    for name in names:
        kind = "arm" if name in params.arms else "model"
        path = store.eval_result(name)
        if not path.exists():
            raise MissingArtifact(f"{kind} {name!r} has no evaluation results in the run store ({path}); "
                                    "run notebook 06_evaluation first")
        record = read_json(path)
        if record.get("suite") != suite:
            raise MissingArtifact(f"{kind} {name!r}: the results in {path} come from another evaluation "
                                    "suite than these params'; rerun notebook 06_evaluation")
        out[name] = record
    return out


def save_eval_summary(params: Params, results: dict[str, dict[str, Any]]) -> Path:
    """EA, MA, combined and per-benchmark scores of every model in ``<run_dir>/eval/summary.json``."""
    store = params.store
    out = {name: {"benchmarks": {b: v["score"] for b, v in r.get("benchmarks", {}).items()},
                  **abilities(params, r), "items_per_s": r.get("items_per_s")} for name, r in results.items()}
    path = store.eval_summary
    atomic_write_json(path, out)
    return path


def _n_samples(out: dict, task: str) -> int:
    """Items scored for a task; a group (e.g. mmlu) has no entry of its own: sum its subtasks."""
    if task in out["n-samples"]:
        return out["n-samples"][task]["effective"]
    return sum(_n_samples(out, sub) for sub in out.get("group_subtasks", {}).get(task, []))


def _samples(out: dict, task: str, metrics: dict) -> list[dict]:
    """The generated answers of a task (and of a group's subtasks), one row per item."""
    rows = []
    for sub in [task, *out.get("group_subtasks", {}).get(task, [])]:
        # gathered from several processes, the items come shard by shard: back in the order of
        # one process (by filter, then item)
        filters: dict[Any, int] = {}
        listed = out["samples"].get(sub, [])
        for s in listed:
            filters.setdefault(s.get("filter"), len(filters))
        for s in sorted(listed, key=lambda s: (filters[s.get("filter")], s["doc_id"])):
            resp = s.get("filtered_resps", [None])
            rows.append({"task": sub, "doc_id": s["doc_id"], "target": s.get("target"),
                         "response": resp[0] if isinstance(resp, list) and resp and isinstance(resp[0], str)
                         else None, **{m: s[m] for m in metrics if m in s}})
    return rows


def evaluate_models(params: Params, names: Sequence[str] | None = None,
                    force: bool = False, progress: bool = True) -> dict[str, dict[str, Any]]:
    names = list(names) if names is not None else params.evaluated_models()
    it = names
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(names, desc="evaluating", unit="model")
    return {n: evaluate_model(params, n, force=force, progress=progress) for n in it}


def abilities(params: Params, record: dict[str, Any]) -> dict[str, Any]:
    """EA, MA and combined as the paper averages them (docs/METHODS.md, "Evaluation: English and Multilingual Ability"), over the benchmarks
    that ran; a benchmark that is off or missing is listed, never counted as zero."""
    scores = {b: v["score"] for b, v in record.get("benchmarks", {}).items()}
    out: dict[str, Any] = {}
    for ability, group in (("EA", ENGLISH_BENCHMARKS), ("MA", MULTILINGUAL_BENCHMARKS)):
        present = [scores[b] for b in group if b in scores]
        out[ability] = sum(present) / len(present) if present else float("nan")
        out[f"{ability}_missing"] = [b for b in group if b not in scores]
    out["combined"] = (out["EA"] + out["MA"]) / 2 if not (math.isnan(out["EA"]) or math.isnan(out["MA"])) \
        else float("nan")
    return out


def ability_table(params: Params, results: dict[str, dict[str, Any]]):
    """One row per model: every benchmark's score, EA, MA, combined (NaN = not run)."""
    import pandas as pd

    rows = []
    for name, record in results.items():
        label = params.arms[name].label if name in params.arms else name
        row = {"model": name, "label": label or name}
        for b in (*ENGLISH_BENCHMARKS, *MULTILINGUAL_BENCHMARKS):
            row[b] = record.get("benchmarks", {}).get(b, {}).get("score", float("nan"))
        ab = abilities(params, record)
        row.update({"EA": ab["EA"], "MA": ab["MA"], "combined": ab["combined"]})
        rows.append(row)
    df = pd.DataFrame(rows).set_index("model")
    missing = [b for b in (*ENGLISH_BENCHMARKS, *MULTILINGUAL_BENCHMARKS) if df[b].isna().all()]
    comps = ability_components(params)
    df.attrs["footnote"] = "; ".join(
        [f"EA = mean of {', '.join(comps['EA']) or 'nothing'}", f"MA = mean of {', '.join(comps['MA']) or 'nothing'}"]
        + ([f"not run: {', '.join(missing)}; EA and MA average the benchmarks that ran"] if missing else []))
    return df


def ability_components(params: Params) -> dict[str, list[str]]:
    """What EA and MA average under these params: each benchmark that runs, with what runs in its
    place and its metric (e.g. "mmlu (offline mc, p_correct)")."""
    out: dict[str, list[str]] = {"EA": [], "MA": []}
    for ability, group in (("EA", ENGLISH_BENCHMARKS), ("MA", MULTILINGUAL_BENCHMARKS)):
        for bench in group:
            b = params.evaluation.benchmarks.get(bench)
            if b is None or b.source == "off":
                continue
            what = {"offline": f"offline {b.task}", "lm_eval": f"lm-eval {b.task}", "cft": f"our {b.task}",
                    "alpaca_eval": "alpaca_eval"}.get(b.source, b.source)
            out[ability].append(f"{bench} ({what}, {b.metric})")
    return out


def language_table(results: dict[str, dict[str, Any]], benchmark: str):
    """Per-language scores of one multilingual benchmark (rows: models), Tables B5-B7's shape."""
    import pandas as pd

    rows = {name: r.get("benchmarks", {}).get(benchmark, {}).get("by_language", {}) for name, r in results.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def language_report(results: dict[str, dict[str, Any]]) -> str:
    """``language_table`` of every multilingual benchmark that has per-language scores, as text
    (Tables B5-B7; notebooks 06 and 08)."""
    blocks = []
    for benchmark in MULTILINGUAL_BENCHMARKS:
        per_language = language_table(results, benchmark)
        if not per_language.empty:
            blocks.append(f"{benchmark}:\n{per_language.round(3).to_string()}\n")
    return "\n".join(blocks) or "no per-language scores"
