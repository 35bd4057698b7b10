"""What one job of the graph does, in whichever process runs it, and whether it is done.

A job (:mod:`cft_helpers.jobs`) is a stage the notebooks would compute in line: training an arm,
evaluating a model, notebook 07's activations, the held-out losses. :func:`run_job` runs it in
this process through the same functions the notebooks call, so every executor (the book's
workers, submitit's local processes, a Slurm job) computes the notebooks' numbers;
:func:`job_done` asks the run store whether its result is there for the current inputs.
"""

from __future__ import annotations

import os
from pathlib import Path

from cft_helpers.data.prepare import data_input_hash
from cft_helpers.evaluation.harness import evaluate_model, evaluation_done, write_suite
from cft_helpers.heldout import heldout_pending, model_heldout_losses
from cft_helpers.jobs import Job, notebook_of, parse_job
from cft_helpers.mitigation import models_read
from cft_helpers.models import model_checkpoint
from cft_helpers.params import Params
from cft_helpers.progress import NOTEBOOK_ENV
from cft_helpers.representations import activation_sets, activations_pending, notebook_sets
from cft_helpers.train import arm_input_hash, train_arms


def data_ready(params: Params) -> bool:
    """Whether the prepared data of these parameters is in the store (every job reads it)."""
    store = params.store
    return store.stage("data", data_input_hash(params)).is_done()


def job_done(params: Params, job: Job) -> bool:
    """Whether the run store holds this job's result for the current inputs (what makes
    ``train_arm`` skip an arm and ``evaluate_model`` return its cached record)."""
    store = params.store
    try:
        if job.kind == "train":
            return store.stage(f"arms/{job.target}", arm_input_hash(params, job.target)).is_done()
        if job.kind == "act":
            return not activations_pending(params, job.target)
        if job.kind == "heldout":
            return not heldout_pending(params, job.target)
        return evaluation_done(params, job.target)
    except (RuntimeError, KeyError, ValueError, OSError):  # upstream not done, unreadable record
        return False


def graph_status(params: Params, jobs: dict[str, Job]) -> dict[str, bool]:
    """Done or not, for every job of the plan and every job they need outside it: a job counts
    as done only when what it needs is done too (every executor's starting point)."""
    outside = {n for j in jobs.values() for n in j.needs if n not in jobs}
    status = {n: job_done(params, Job(n, *n.split(":", 1))) for n in outside}
    for name, job in jobs.items():  # in plan order: what a job needs comes before it
        status[name] = all(status.get(n, False) for n in job.needs) and job_done(params, job)
    return status


def prepare_shared(params: Params, jobs: dict[str, Job]) -> None:
    """Build what several jobs would otherwise build at once, in this process: the model
    checkpoints of ``models:`` entries (conversion, random init) and the evaluation suite's files."""
    names: list[str] = []
    for job in jobs.values():
        if job.kind == "train":
            names.append(params.root_model(job.target))
            names.extend(models_read(params, job.target))  # LF_H2: its base model
        elif job.target in params.models:
            names.append(job.target)
    for name in dict.fromkeys(names):
        model_checkpoint(params, name, progress=False)
    if any(j.kind == "eval" for j in jobs.values()):
        write_suite(params)


def run_job(params: Params, name: str) -> None:
    """One job in this process (a worker's work). While it runs, ``CFT_NOTEBOOK`` names the
    notebook whose stage it computes, for the book's progress lines."""
    kind, target = parse_job(name)
    notebook = notebook_of(params, name)
    saved = os.environ.get(NOTEBOOK_ENV)
    os.environ[NOTEBOOK_ENV] = notebook[:2]
    try:
        _run_job(params, name, kind, target)
    finally:  # the caller's environment as it was (a test, a notebook calling this)
        if saved is None:
            os.environ.pop(NOTEBOOK_ENV, None)
        else:
            os.environ[NOTEBOOK_ENV] = saved


def _run_job(params: Params, name: str, kind: str, target: str) -> None:
    if kind == "train":
        if target not in params.arms:
            raise KeyError(f"unknown arm {target!r}; valid: {sorted(params.arms)}")
        m = train_arms(params, [target], progress=False)[target]
        print(f"{name}: " + ", ".join(f"{k}={m[k]}" for k in ("steps", "train_loss", "eval_loss_after", "wall_s",
                                                             "checkpoint") if k in m), flush=True)
    elif kind == "eval":
        record = evaluate_model(params, target, progress=False)
        scores = {b: round(v["score"], 4) for b, v in record.get("benchmarks", {}).items() if "score" in v}
        print(f"{name}: {scores}", flush=True)
    elif kind == "act":
        got = activation_sets(params, target, notebook_sets(params, target), progress=False)
        print(f"{name}: " + ", ".join(f"{k} {v.shape}" for k, v in got.items()), flush=True)
    elif kind == "heldout":
        losses = model_heldout_losses(params, target)
        print(f"{name}: " + ", ".join(f"{d} {v:.4f}" for d, v in losses.items()), flush=True)
    else:
        raise ValueError(f"unknown job {name!r}: train:<arm>, eval:<model>, act:<model> or heldout:<model>")


def worker_env(params: Params) -> dict[str, str]:
    """The environment of a worker: this one (with the run lock's token), plus its thread count."""
    env = dict(os.environ)
    threads = params.runtime.thread_count()
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    package_root = str(Path(__file__).resolve().parents[1])  # the same code as this process runs
    env["PYTHONPATH"] = os.pathsep.join(x for x in (package_root, env.get("PYTHONPATH")) if x)
    return env
