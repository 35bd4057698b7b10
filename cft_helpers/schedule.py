"""The book's scheduler: independent heavy stages as parallel worker processes.

Before its notebooks run, the book (``runtime.workers`` above 1) trains the arms and evaluates
the models, computes notebook 07's activations and the held-out losses of notebooks 03-05 as
*jobs*, ``train:<arm>``, ``eval:<model>``, ``act:<model>`` and ``heldout:<model>``, in up to
``runtime.workers`` processes at a time. A job starts once the jobs it needs are done: an arm needs the arm it
starts from (whose final checkpoint it continues; that model also generates a GR arm's replay
and is what LF_H2 and Spectrum rank layers of), an evaluation needs the arm it scores. Every
stage is cached by input hash in the run store, so the notebooks then find these jobs done and
only read and report them; a killed book resumes, and what was finished is skipped.

Jobs run in worker processes, each serving one job after another (imports and library set-up
are paid once per worker, not per job; a job's output goes to ``<run_dir>/logs/<kind>-<name>.log``)::

    python -m cft_helpers.schedule --params params/default.yaml --set k=<json> ... --serve

with ``runtime.threads`` torch threads (OMP_NUM_THREADS): the count is fixed by the parameters,
never by what runs beside, so a job computes the same numbers as the notebooks, which also run
stage after stage in one process. ``--job train:p1_alpaca`` runs one job in a fresh process.
When a job fails, the running ones finish, no new one starts, and the error names the job, its
exit code and its log's last lines; the failed job's worker is not reused.

The jobs of a book are those of the notebooks it runs, as the job graph declares them
(:mod:`cft_helpers.jobs`); what a job does is :func:`cft_helpers.job_runner.run_job`. Other stages
(similarity, projections, figures) stay in the notebooks. From a shell::

    python -m cft_helpers.schedule --params default --plan                 # the whole book's jobs (jobs.grid_jobs)
    python -m cft_helpers.schedule --params default --workers 2            # run them (no notebooks)
    python -m cft_helpers.schedule --params P --executor slurm [--wait]    # as Slurm jobs (submitit)
    python -m cft_helpers.schedule --params P --executor local             # submitit's local processes

The last two are :mod:`cft_helpers.executors`.
"""

from __future__ import annotations

import argparse
import gc
import os
import select
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

from cft_helpers.data import prepare_datasets
from cft_helpers.executors import EXECUTORS, ExecutorError, follow_slurm, run_local, submit_slurm, summary_lines
from cft_helpers.files import atomic_write_json, read_json
from cft_helpers.job_runner import data_ready, graph_status, prepare_shared, run_job, worker_env
from cft_helpers.jobs import Job, book_jobs, descendants, grid_jobs
from cft_helpers.lock import RunLock, RunLocked, check_run_lock
from cft_helpers.params import Params, ParamsError, load_params
from cft_helpers.relaunch import override_args

TAIL_LINES = 20


class ScheduleError(RuntimeError):
    """A job failed (the message names it, its exit code and its log's last lines)."""


def worker_command(params: Params) -> list[str]:
    """A worker process: this module with the same params file and overrides, serving jobs."""
    return [sys.executable, "-m", "cft_helpers.schedule", "--params", str(params.source_path),
            *override_args(params), "--serve"]


# Why not concurrent.futures' ProcessPoolExecutor or loky, which also keep their workers: when
# one worker dies (SIGKILL, the OOM killer), both fail every job at once, the one running on the
# other worker included (BrokenProcessPool, TerminatedWorkerError), and neither can retire just
# the worker of a failed job. Here a killed worker fails its own job only; the others finish.
# python -m benchmarks.bench_workers (benchmarks/results/bench_workers.txt): six smoke jobs on two
# workers, one killed 0.5 s in: ours 1 failed, 1 finished, 4 not started (left to a rerun);
# ProcessPoolExecutor and loky 6 failed. Without a kill the three take 6-8 s for the six jobs.
class _Worker:
    """One worker process. It imports torch and the libraries once and runs jobs one after the
    other: the parent writes ``<job>\t<log file>`` to its stdin, it answers ``<job>\t<code>``
    on its stdout. A job's output goes to its own log. A worker whose job failed exits, so what
    follows starts in a fresh process."""

    def __init__(self, params: Params, env: dict[str, str], cwd: str | None, log: Path):
        self.log = open(log, "a", encoding="utf-8")  # what the worker prints outside any job
        self.proc = subprocess.Popen(worker_command(params), cwd=cwd, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1)
        self.job: tuple[str, float, Path] | None = None  # (name, start time, log) of the running job

    def start(self, name: str, log: Path) -> bool:
        """Hand a job to the worker; False when it is gone."""
        self.job = (name, time.perf_counter(), log)
        try:
            self.proc.stdin.write(f"{name}\t{log}\n")
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def result(self) -> int:
        """The exit code of the running job (blocks until the worker answers or dies)."""
        parts = self.proc.stdout.readline().rstrip("\n").split("\t")
        if len(parts) == 2 and parts[0] == self.job[0]:
            return int(parts[1])
        rc = self.proc.wait()  # no answer: the worker died with the job (killed, crashed)
        return rc if rc else 1

    def close(self, kill: bool = False) -> None:
        try:
            if kill:
                self.proc.terminate()
            else:
                self.proc.stdin.close()
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        except OSError:
            pass
        self.log.close()


def _tail(path: Path, n: int = TAIL_LINES) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in lines[-n:])


class Remaining:
    """What is left of a scheduler run, in seconds: the jobs waiting and running, each at the mean
    time of its kind (``train``, ``eval``, ...) in this run, else in the store's previous run
    (``logs/schedule.json``), shared among the workers. None while a kind left has no time yet."""

    def __init__(self, workers: int, previous: dict[str, float] | None = None):
        self.workers = max(1, workers)
        self.times: dict[str, list[float]] = {}
        self.prior: dict[str, list[float]] = {}
        for name, took in (previous or {}).items():
            self.prior.setdefault(name.split(":", 1)[0], []).append(took)
        self.waiting: list[str] = []                 # kinds of the jobs not started
        self.running: dict[str, tuple[str, float]] = {}  # job -> (kind, start time)

    def mean(self, kind: str) -> float | None:
        got = self.times.get(kind) or self.prior.get(kind)
        return sum(got) / len(got) if got else None

    def seconds(self) -> float | None:
        now, total = time.perf_counter(), 0.0
        for kind in self.waiting:
            m = self.mean(kind)
            if m is None:
                return None
            total += m
        for kind, t0 in list(self.running.values()):
            m = self.mean(kind)
            if m is None:
                return None
            total += max(m - (now - t0), 0.0)
        return total / self.workers


def run_jobs(params: Params, jobs: dict[str, Job], workers: int,
             progress: bool = True, poll_s: float = 0.2, log=None,
             remaining: list | None = None) -> dict[str, Any]:
    """Run ``jobs`` in up to ``workers`` worker processes, each job once what it needs is done.

    Jobs already done are skipped (and listed); a job that needs a job outside ``jobs`` which
    is not done is left out (to the notebooks, which then name what is missing). Raises
    ScheduleError after the running jobs finished when any job failed. Returns a summary.
    ``log``: called with each line (instead of printing it); ``remaining``: a list that gets this
    run's :class:`Remaining` (the book's progress shows its estimate)."""
    store = params.store
    log_dir = store.logs_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    previous = store.schedule_file
    left = Remaining(workers, read_json(previous).get("ran") if previous.exists() else None)
    if remaining is not None:
        remaining.append(left)

    def say(text: str) -> None:
        line = f"[schedule {time.perf_counter() - t_start:5.0f}s] {text}"
        if log is not None:
            log(line)
        elif progress:
            print(line, flush=True)

    status = graph_status(params, jobs)
    already = [n for n in jobs if status[n]]
    left_out: list[str] = []
    todo: list[str] = []
    for name, job in jobs.items():
        if status[name]:
            continue
        if any(n in left_out or (n not in jobs and not status[n]) for n in job.needs):
            left_out.append(name)
        else:
            todo.append(name)
    if already:
        say(f"already done ({len(already)}): {', '.join(already)}")
    if left_out:
        say(f"left to the notebooks (they need work that is not done nor scheduled): {', '.join(left_out)}")
    summary: dict[str, Any] = {"workers": workers, "threads": params.runtime.thread_count(),
                               "already_done": already, "left_out": left_out, "ran": {}, "failed": {}}
    if not todo:
        say(f"nothing to run: {len(already)} of {len(jobs)} jobs done")
        return summary
    say(f"{len(todo)} jobs on {workers} workers, {params.runtime.thread_count() or 'default'} torch "
        f"thread(s) each; logs in {log_dir}")
    weight = descendants({n: jobs[n] for n in todo})
    order = {n: i for i, n in enumerate(todo)}
    pending = list(todo)
    left.waiting = [jobs[n].kind for n in pending]
    finished = {n for n, done in status.items() if done}
    idle: list[_Worker] = []
    running: dict[str, _Worker] = {}
    failed: dict[str, tuple[int, Path]] = {}
    env, cwd = worker_env(params), params.root or None
    spawned = 0
    try:
        while pending or running:
            if not failed:
                busy = {jobs[n].group for n in running} - {None}
                ready = [n for n in pending if all(d in finished for d in jobs[n].needs)
                         and (jobs[n].group is None or jobs[n].group not in busy)]
                ready.sort(key=lambda n: (-weight[n], order[n]))
                for name in ready:
                    if len(running) >= workers:
                        break
                    if jobs[name].group is not None and jobs[name].group in busy:
                        continue
                    busy.add(jobs[name].group)
                    if not idle:
                        spawned += 1
                        idle.append(_Worker(params, env, cwd, log_dir / f"worker-{spawned}.log"))
                    worker = idle.pop()
                    job_log = log_dir / jobs[name].log_name
                    with open(job_log, "a", encoding="utf-8") as fh:
                        fh.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {name} in worker {spawned} "
                                 f"(pid {worker.proc.pid}): {' '.join(worker_command(params))}\n")
                    pending.remove(name)
                    left.waiting.remove(jobs[name].kind)
                    left.running[name] = (jobs[name].kind, time.perf_counter())
                    running[name] = worker
                    if not worker.start(name, job_log):
                        say(f"worker pid {worker.proc.pid} is gone; {name} fails with it")
                    say(f"start {name} ({len(running)} running, {len(pending)} waiting)")
            if not running:
                if pending and not failed:  # cannot happen for a plan without cycles
                    raise ScheduleError(f"jobs {pending} wait on each other; nothing can start")
                break
            by_pipe = {w.proc.stdout: n for n, w in running.items()}
            answered, _, _ = select.select(list(by_pipe), [], [], poll_s)
            for pipe in answered:
                name = by_pipe[pipe]
                worker = running.pop(name)
                rc = worker.result()
                took = time.perf_counter() - worker.job[1]
                left.running.pop(name, None)
                if rc == 0:
                    left.times.setdefault(jobs[name].kind, []).append(took)
                    idle.append(worker)
                    finished.add(name)
                    summary["ran"][name] = round(took, 1)
                    say(f"done {name} in {took:.0f}s ({len(summary['ran'])} of {len(todo)})")
                else:
                    worker.close()  # a failed job's worker is not reused
                    failed[name] = (rc, worker.job[2])
                    summary["failed"][name] = rc
                    say(f"FAILED {name} (exit code {rc}) after {took:.0f}s; log: {worker.job[2]}"
                        + (f"; waiting for {len(running)} running job(s), starting no new ones" if running else ""))
    except BaseException:  # interrupted (Ctrl-C, an error here): no worker outlives the book
        for worker in running.values():
            worker.close(kill=True)
        running.clear()
        raise
    finally:
        for worker in [*idle, *running.values()]:
            worker.close()
    summary["workers_started"] = spawned
    summary["wall_s"] = round(time.perf_counter() - t_start, 1)
    atomic_write_json(store.schedule_file, summary)
    if failed:
        parts = [f"job {name} failed with exit code {rc}; log {job_log}, last {TAIL_LINES} lines:\n{_tail(job_log)}"
                 for name, (rc, job_log) in failed.items()]
        if pending:
            parts.append(f"not started: {', '.join(pending)}")
        raise ScheduleError("\n".join(parts))
    say(f"all {len(todo)} jobs done in {summary['wall_s']:.0f}s")
    return summary


def schedule_book(params: Params, notebooks: Sequence[str], progress: bool = True, log=None,
                  remaining: list | None = None) -> dict[str, Any] | None:
    """The book's step before its notebooks: run the jobs of ``notebooks`` (stems) in parallel.
    None when there is nothing to schedule: ``runtime.workers`` resolves to 1, or the prepared
    data is missing (the notebooks then run every stage and say what is missing)."""
    workers = params.runtime.worker_count()
    if workers <= 1:
        return None
    jobs = book_jobs(params, notebooks)
    if not jobs:
        return None
    if not data_ready(params):
        if progress:
            print("[schedule] the prepared data is not in the run store for these parameters: no jobs "
                  "scheduled, the notebooks run every stage in order", flush=True)
        return None
    prepare_shared(params, jobs)
    return run_jobs(params, jobs, workers, progress=progress, log=log, remaining=remaining)


def _run_logged(params: Params, name: str, log: Path) -> int:
    """One job in this worker with its output (this process's and its children's, through file
    descriptors 1 and 2) appended to ``log``; the job's exit code (a traceback goes to the log)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        run_job(params, name)
        return 0
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) and exc.code else 1
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        gc.collect()  # the job's model goes before the next job loads its own


def serve(params: Params) -> int:
    """A worker's loop: run the jobs named on stdin, in order, answering each on stdout. Stops at
    the end of stdin, or after a failed job (the next job then gets a fresh process)."""
    answer = os.fdopen(os.dup(1), "w", buffering=1)  # stays the pipe while a job's output is redirected
    for line in sys.stdin:
        name, log = line.rstrip("\n").split("\t")
        rc = _run_logged(params, name, Path(log))
        answer.write(f"{name}\t{rc}\n")
        if rc:
            return rc
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cft_helpers.schedule", description=__doc__.split("\n")[0])
    ap.add_argument("--params", required=True, help="params YAML file or preset name")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="override, e.g. training.learning_rate=1e-4 (repeatable)")
    ap.add_argument("--job", help="run one job in this process (train:<arm>, eval:<model>, act:<model> or "
                    "heldout:<model>): a worker")
    ap.add_argument("--serve", action="store_true",
                    help="be a worker: run the jobs named on stdin (<job>\\t<log file> per line), one by one")
    ap.add_argument("--workers", type=int, help="jobs at a time (default: runtime.workers)")
    ap.add_argument("--plan", action="store_true", help="print the jobs and what each needs, run nothing")
    ap.add_argument("--executor", choices=("workers", *EXECUTORS), default="workers",
                    help="workers: the book's worker processes (default); local: submitit's local processes; "
                         "slurm: one Slurm job per job, with its dependencies (slurm: in the params)")
    ap.add_argument("--wait", action="store_true", help="slurm: wait for the submitted jobs and name those that failed")
    ns = ap.parse_args(argv)
    try:
        params = load_params(ns.params, overrides=ns.overrides)
        if ns.job or ns.serve:
            check_run_lock(params.run_path)  # the book's own workers carry its token
            if ns.serve:
                return serve(params)
            run_job(params, ns.job)
            return 0
        jobs = grid_jobs(params)
        if ns.plan:
            for job in jobs.values():
                print(f"{job.name}" + (f"  <- {', '.join(job.needs)}" if job.needs else ""))
            return 0
        workers = ns.workers or params.runtime.worker_count()
        with RunLock(params.run_path):
            prepare_datasets(params, progress=False)
            prepare_shared(params, jobs)
            if ns.executor == "workers":
                run_jobs(params, jobs, workers)
                return 0
            if ns.executor == "local":
                out = run_local(params, jobs, workers)
            else:
                out = submit_slurm(params, jobs)
        for line in summary_lines(ns.executor, out):
            print(line)
        if ns.executor == "slurm" and ns.wait:
            out = follow_slurm(params)
            for line in summary_lines("slurm", out):
                print(line)
        return 1 if out.get("failed") else 0
    except (ParamsError, RunLocked, ScheduleError, ExecutorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
