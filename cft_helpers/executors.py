"""The job graph on submitit: a Slurm cluster, or local processes as its stand-in.

    python -m cft_helpers.schedule --params paper/mistral7b --executor slurm          # submit, return
    python -m cft_helpers.schedule --params paper/mistral7b --executor slurm --wait   # and follow
    python -m cft_helpers.schedule --params smoke --executor local --set run_dir=DIR  # run here

Every job of :func:`cft_helpers.jobs.plan_jobs` that the run store does not hold yet becomes one
submitit job that runs :func:`cft_helpers.job_runner.run_job`, the notebooks' own code.

- **Slurm** (``--executor slurm``): every pending job is submitted at once, each with
  ``--dependency=afterok:<the jobs it needs>`` and ``--kill-on-invalid-dep=yes``, so a failed job
  stops its dependants. Resources come from ``slurm:`` in the params: a training job takes
  ``slurm.gpus_per_node`` GPUs and runs ``accelerate launch`` with that many processes and
  ``runtime.launch_config``; an evaluation runs data parallel on them. A job is a submitit
  ``Checkpointable``: at a preemption or its time limit submitit requeues the same call under the
  same job id (its dependants keep waiting), and the call resumes from the run store.
- **Local** (``--executor local``): submitit's local executor, which knows no dependencies: a job
  is submitted once the jobs it needs are done, at most ``--workers`` at a time, and the command
  waits for all of them.

Each submission is recorded in ``<run_dir>/submitit/jobs.json`` (job -> id). Rerunning the command
submits only what is neither done in the run store nor still pending or running (asked of
``sacct``); docs/CLUSTER.md, "The grid on Slurm", says how the jobs pass the run store's lock and
what happens when jobs on several nodes write one file.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import submitit
from submitit.helpers import Checkpointable
from submitit.slurm.slurm import SlurmInfoWatcher

from cft_helpers.files import atomic_write_json, read_json
from cft_helpers.job_runner import graph_status, run_job, worker_env
from cft_helpers.jobs import Job, descendants
from cft_helpers.lock import ENV, check_run_lock
from cft_helpers.params import Params, load_params
from cft_helpers.runs import RunStore

EXECUTORS = ("slurm", "local")
# Slurm states of a job that is not over (it may still start, run or be requeued).
IN_FLIGHT = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED",
             "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT"}


class ExecutorError(RuntimeError):
    """A job of the graph failed or could not be submitted; the message names it."""


class GraphJob(Checkpointable):
    """One job of the graph, run by submitit in its own process (a Slurm job, a local process).

    Its checkpoint (submitit's default) resubmits the same call: every stage of the run store
    resumes by itself (a training from its last Trainer checkpoint), so the call needs no state."""

    def __call__(self, source: str, overrides: dict[str, Any], name: str, token: str | None = None) -> str:
        if token:  # the submitter's run lock: this job passes it, as the book's children do
            os.environ[ENV] = token
        params = load_params(source, overrides=overrides)
        check_run_lock(params.run_path)  # a book that is not ours on this store: stop before any work
        run_job(params, name)
        return name


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_submitted(store: RunStore) -> dict[str, Any]:
    """``jobs.json``: {"executor": ..., "jobs": {job: {"id", "submitted"}}}; empty when absent."""
    path = store.submitted_file
    return read_json(path) if path.exists() else {"executor": None, "jobs": {}}


def slurm_states(ids: list[str]) -> dict[str, str]:
    """Job id -> Slurm state (``sacct``; submitit's parser), for the ids ``sacct`` knows."""
    if not ids:
        return {}
    cmd = ["sacct", "-o", "JobID,State,NodeList", "--parsable2", *[x for i in ids for x in ("-j", i)]]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    info = SlurmInfoWatcher().read_info(out)
    # "CANCELLED by 123" -> "CANCELLED"
    return {i: info[i]["State"].split()[0] for i in ids if i in info and info[i].get("State")}


def in_flight(store: RunStore) -> dict[str, str]:
    """The Slurm jobs recorded in the store that are still pending or running (job -> id); empty
    where none was submitted or ``sacct`` is not on this machine (nothing to ask)."""
    record = read_submitted(store)
    if record.get("executor") != "slurm" or not record["jobs"] or shutil.which("sacct") is None:
        return {}
    ids = {n: e["id"] for n, e in record["jobs"].items()}
    states = slurm_states(sorted(set(ids.values())))
    return {n: i for n, i in ids.items() if states.get(i) in IN_FLIGHT}


def _job_params(params: Params) -> tuple[str, dict[str, Any]]:
    """The params file and overrides a job loads: the params' own, and on Slurm the GPUs of a job."""
    if params.source_path is None:
        raise ExecutorError("the executors need params loaded from a file (load_params)")
    return str(params.source_path), dict(params.overrides)


def _slurm_overrides(params: Params) -> dict[str, Any]:
    gpus = params.slurm.gpus_per_node
    return {"runtime.processes": gpus} if gpus > 1 else {}


@contextmanager
def _job_environment(params: Params) -> Iterator[None]:
    """What a submitted job inherits (submitit copies this process's environment): the threads
    and the code of the book's workers (:func:`cft_helpers.job_runner.worker_env`)."""
    saved = dict(os.environ)
    os.environ.update(worker_env(params))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _folder(params: Params) -> Path:
    store = params.store
    return params.path(params.slurm.folder) if params.slurm.folder else store.submitit_dir


def slurm_resources(params: Params, job: Job) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters of one job (the dependency apart)."""
    s = params.slurm
    out: dict[str, Any] = {"job_name": job.name, "nodes": 1, "ntasks_per_node": 1, "gpus_per_node": s.gpus_per_node,
                           "time": s.train_time_min if job.kind == "train" else s.eval_time_min,
                           "additional_parameters": {"kill-on-invalid-dep": "yes", **s.sbatch}}
    for key, value in (("partition", s.partition), ("account", s.account), ("qos", s.qos),
                       ("cpus_per_task", s.cpus_per_task), ("mem", f"{s.mem_gb:g}GB" if s.mem_gb else None)):
        if value is not None:
            out[key] = value
    if s.setup:
        out["setup"] = list(s.setup)
    return out


def submit_slurm(params: Params, jobs: dict[str, Job],
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Submit every job of ``jobs`` that is neither done nor in flight, with its dependencies;
    returns {"done", "in_flight", "submitted", "left_out"} (job names; submitted: job -> id)."""
    store = params.store
    record = read_submitted(store)
    known = {n: e["id"] for n, e in record["jobs"].items()}
    states = slurm_states(sorted(set(known.values())))
    status = graph_status(params, jobs)
    source, overrides = _job_params(params)
    overrides.update(_slurm_overrides(params))
    folder = str(_folder(params) / "%j")
    ids: dict[str, str] = {}   # job -> the id its dependants wait on (in flight or submitted now)
    last_of_group: dict[str, str] = {}  # jobs of one group run one after the other (afterany)
    out: dict[str, Any] = {"done": [], "in_flight": {}, "submitted": {}, "left_out": []}
    with _job_environment(params):
        for name, job in jobs.items():
            if status[name]:
                out["done"].append(name)
                continue
            if name in known and states.get(known[name]) in IN_FLIGHT:
                ids[name] = known[name]
                out["in_flight"][name] = known[name]
                if job.group:
                    last_of_group[job.group] = known[name]
                continue
            waits = [n for n in job.needs if not status.get(n, False)]
            if any(n not in ids for n in waits):  # needs work that is neither done nor submitted
                out["left_out"].append(name)
                continue
            resources = slurm_resources(params, job)
            after = ["afterok:" + ":".join(ids[n] for n in waits)] if waits else []
            if job.group in last_of_group:  # AlpacaEval's judge caches: one writer at a time
                after.append(f"afterany:{last_of_group[job.group]}")
            if after:
                resources["dependency"] = ",".join(after)
            # one executor per job: parameters set for one job (a dependency) never carry over
            executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=params.slurm.max_requeues)
            executor.update_parameters(**resources)
            submitted = executor.submit(GraphJob(), source, overrides, name, None)
            ids[name] = out["submitted"][name] = str(submitted.job_id)
            if job.group:
                last_of_group[job.group] = ids[name]
            record["jobs"][name] = {"id": ids[name], "submitted": _now()}
            record["executor"] = "slurm"
            atomic_write_json(store.submitted_file, record)  # after each: a crash here loses no id
            log(f"[slurm] submitted {name} as job {ids[name]}" + (f" after {', '.join(waits)}" if waits else ""))
    return out


def follow_slurm(params: Params, poll_s: float = 60.0,
                 log: Callable[[str], None] = print, timeout_s: float | None = None) -> dict[str, Any]:
    """Wait until no recorded job is in flight; returns {"completed", "failed", "stopped"}: job ->
    its final Slurm state (stopped: cancelled because a job it needs failed). ``timeout_s``: give
    up waiting (ExecutorError) after that long."""
    store = params.store
    record = read_submitted(store)
    ids = {n: e["id"] for n, e in record["jobs"].items()}
    t0 = time.monotonic()
    while True:
        states = slurm_states(sorted(set(ids.values())))
        waiting = [n for n, i in ids.items() if states.get(i) in IN_FLIGHT]
        if not waiting:
            break
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            raise ExecutorError(f"still in flight after {timeout_s:.0f}s: {', '.join(waiting)}")
        time.sleep(poll_s)
    out: dict[str, Any] = {"completed": {}, "failed": {}, "stopped": {}}
    for name, i in ids.items():
        state = states.get(i, "UNKNOWN")
        kind = "completed" if state == "COMPLETED" else "stopped" if state == "CANCELLED" else "failed"
        out[kind][name] = f"{i} {state}"
    for kind in ("failed", "stopped"):
        for name, what in out[kind].items():
            log(f"[slurm] {kind}: {name} (job {what})")
    return out


def run_local(params: Params, jobs: dict[str, Job], workers: int,
              poll_s: float = 0.5, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``jobs`` through submitit's local executor, each once the jobs it needs are done, at
    most ``workers`` at a time; returns {"done", "ran", "failed", "stopped", "left_out"}. A failed
    job's dependants are not started (stopped); the others go on. A job that needs work outside
    ``jobs`` that is not done is left out. The caller holds the run lock, whose token the jobs
    inherit."""
    store = params.store
    status = graph_status(params, jobs)
    source, overrides = _job_params(params)
    folder = _folder(params)
    executor = submitit.LocalExecutor(folder=str(folder / "%j"))
    executor.update_parameters(timeout_min=max(params.slurm.train_time_min, params.slurm.eval_time_min))
    record = read_submitted(store)
    record["executor"] = "local"
    done = {n for n, ok in status.items() if ok}
    out: dict[str, Any] = {"done": [n for n in jobs if n in done], "ran": {}, "failed": {}, "stopped": [],
                           "left_out": []}
    pending = []
    for name in (n for n in jobs if n not in done):  # in plan order: what a job needs comes first
        needs = jobs[name].needs
        if any(n in out["left_out"] or (n not in jobs and n not in done) for n in needs):
            out["left_out"].append(name)
        else:
            pending.append(name)
    weight = descendants({n: jobs[n] for n in pending})
    running: dict[str, tuple[Any, float]] = {}
    blocked: set[str] = set()
    t0 = time.perf_counter()
    with _job_environment(params):
        while pending or running:
            for name in sorted(pending, key=lambda n: -weight[n]):
                job = jobs[name]
                if any(n in blocked or n in out["failed"] for n in job.needs):
                    pending.remove(name)
                    blocked.add(name)
                    out["stopped"].append(name)
                    continue
                busy = {jobs[n].group for n in running} - {None}
                if len(running) >= workers or any(n not in done for n in job.needs) or job.group in busy:
                    continue
                handle = executor.submit(GraphJob(), source, overrides, name, os.environ.get(ENV))
                running[name] = (handle, time.perf_counter())
                pending.remove(name)
                record["jobs"][name] = {"id": str(handle.job_id), "submitted": _now()}
                atomic_write_json(store.submitted_file, record)
                log(f"[local {time.perf_counter() - t0:5.0f}s] start {name} (job {handle.job_id})")
            for name, (handle, started) in list(running.items()):
                if not handle.done():
                    continue
                del running[name]
                try:
                    handle.result()
                except Exception:  # the job's traceback is in its submitit log: its last line says why
                    out["failed"][name] = f"{_last_error(handle.paths.stderr)}; log {handle.paths.stderr}"
                    log(f"[local] FAILED {name}: {out['failed'][name]}")
                    continue
                done.add(name)
                out["ran"][name] = round(time.perf_counter() - started, 1)
                log(f"[local {time.perf_counter() - t0:5.0f}s] done {name} in {out['ran'][name]:.0f}s")
            if running:
                time.sleep(poll_s)
    return out


def _last_error(log: Path) -> str:
    """The last line of a traceback in a job's log (``KeyError: ...``), or what there is."""
    try:
        lines = [x for x in Path(log).read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    errors = [x for x in lines if not x.startswith((" ", "\t", "Traceback")) and ":" in x]
    return (errors or lines or ["empty log"])[-1][:500]


def summary_lines(kind: str, out: dict[str, Any]) -> list[str]:
    """What a run of the executor did, one line per outcome (failed jobs named, with what they stop)."""
    lines = [f"[{kind}] " + ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in out.items())]
    lines += [f"[{kind}] failed: {name}: {why}" for name, why in out.get("failed", {}).items()]
    if out.get("stopped"):
        lines.append(f"[{kind}] not run, a job they need failed: {', '.join(out['stopped'])}")
    if out.get("left_out"):
        lines.append(f"[{kind}] left out, they need work outside the plan that is not done: "
                     f"{', '.join(out['left_out'])}")
    return lines
