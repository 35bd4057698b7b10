"""The book's worker processes against concurrent.futures and loky, on the smoke params' jobs.

    python -m benchmarks.bench_workers [--kill-after 0.5]

The same six jobs (held-out losses, activations and evaluation of the base model and of a
trained Phase-1 arm) run in two persistent processes three ways, each on its own copy of one run
store (data prepared, the arm trained):

- ``ours``: :func:`cft_helpers.schedule.run_jobs`, a worker per process serving jobs named on its
  stdin, a job's output in its own log (the book's default);
- ``futures``: ``concurrent.futures.ProcessPoolExecutor`` (spawn), each job through the same
  logged runner (``schedule._run_logged``);
- ``loky``: joblib's loky reusable executor, the same way.

Printed per way: wall seconds with nothing going wrong; then the same run with one worker
SIGKILLed ``--kill-after`` seconds after the first job started (a lost node, the OOM killer), and what came of each job:
``ok``, ``failed`` (its own worker was killed, or the executor failed it with the killed one) or
``not started``. The numbers are the reason cft_helpers/schedule.py keeps its own protocol (see
the comment above ``_Worker``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOBS = ["eval:base", "eval:p1_alpaca", "act:base", "act:p1_alpaca", "heldout:base", "heldout:p1_alpaca"]
_PARAMS = {}


def _pool_job(source: str, name: str, log: str) -> int:
    """One job in a pool process, through the worker's own logged runner (params loaded once)."""
    from cft_helpers.params import load_params
    from cft_helpers.schedule import _run_logged

    if source not in _PARAMS:
        _PARAMS[source] = load_params(source)
    rc = _run_logged(_PARAMS[source], name, Path(log))
    if rc:
        raise RuntimeError(f"{name} exited with {rc}")
    return rc


def _children(marker: str) -> list[int]:
    """Live child processes of this one whose command line holds ``marker``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] not in "ZX" and marker in cmd:
            out.append(int(stat.parent.name))
    return sorted(out)


def _killer(marker: str, trigger: Path, after: float, killed: list) -> threading.Thread:
    """SIGKILL a worker ``after`` seconds once ``trigger`` (the first job's log) exists: a job runs."""
    def run():
        deadline = time.monotonic() + 600
        while not trigger.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(after)
        pids = _children(marker)
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def template(folder: Path) -> Path:
    """A smoke params file whose run store holds the prepared data and the trained p1_alpaca."""
    import yaml

    from cft_helpers.data import prepare_datasets
    from cft_helpers.params import load_params
    from cft_helpers.train import train_arms

    raw = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    raw.update(run_dir=str(folder / "run"), cache_dir=str(folder / "cache"))
    path = folder / "smoke.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(path)
    prepare_datasets(params, progress=False)
    train_arms(params, ["p1_alpaca"], progress=False)
    from cft_helpers.job_runner import prepare_shared
    from cft_helpers.jobs import plan_jobs

    prepare_shared(params, plan_jobs(params, arms=[], models=["base", "p1_alpaca"]))
    return path


def copy_of(template_path: Path, folder: Path) -> Path:
    """The template's params and run store, copied (the model cache is shared)."""
    import yaml

    raw = yaml.safe_load(template_path.read_text())
    shutil.copytree(raw["run_dir"], folder / "run")
    raw["run_dir"] = str(folder / "run")
    path = folder / "smoke.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_ours(path: Path, kill_after: float | None) -> dict:
    from cft_helpers.jobs import plan_jobs
    from cft_helpers.params import load_params
    from cft_helpers.schedule import ScheduleError, run_jobs

    params = load_params(path)
    everything = plan_jobs(params, arms=[], models=["base", "p1_alpaca"], activations=["base", "p1_alpaca"],
                           heldout=["base", "p1_alpaca"])
    jobs = {n: everything[n] for n in JOBS}
    killed: list = []
    if kill_after is not None:
        _killer("--serve", params.run_path / "logs" / jobs[JOBS[0]].log_name, kill_after, killed)
    t0 = time.perf_counter()
    try:
        summary = run_jobs(params, jobs, 2, progress=False)
    except ScheduleError:
        summary = json.loads(Path(params.run_path / "logs" / "schedule.json").read_text())
    wall = time.perf_counter() - t0
    ok = set(summary["ran"])
    failed = set(summary["failed"])
    return {"wall_s": round(wall, 1), "ok": sorted(ok), "failed": sorted(failed),
            "not_started": sorted(set(JOBS) - ok - failed), "killed": killed}


def run_pool(kind: str, path: Path, kill_after: float | None) -> dict:
    import multiprocessing

    if kind == "futures":
        from concurrent.futures import ProcessPoolExecutor

        executor = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
        marker = "spawn_main"
    else:
        from joblib.externals.loky import get_reusable_executor

        executor = get_reusable_executor(max_workers=2, reuse=False)
        marker = "popen_loky_posix"
    logs = path.parent / "logs"
    logs.mkdir(exist_ok=True)
    killed: list = []
    t0 = time.perf_counter()
    futures = {n: executor.submit(_pool_job, str(path), n, str(logs / f"{n.replace(':', '-')}.log")) for n in JOBS}
    if kill_after is not None:
        _killer(marker, logs / f"{JOBS[0].replace(':', '-')}.log", kill_after, killed)
    out: dict = {"ok": [], "failed": [], "not_started": []}
    for name, fut in futures.items():
        try:
            fut.result()
            out["ok"].append(name)
        except Exception as exc:  # BrokenProcessPool / TerminatedWorkerError, or the job's own
            out["failed"].append(name)
            out.setdefault("errors", {})[name] = type(exc).__name__
    executor.shutdown(wait=True)
    return {"wall_s": round(time.perf_counter() - t0, 1), **out, "killed": killed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kill-after", type=float, default=0.5,
                    help="seconds after the first job starts that one worker is SIGKILLed")
    ns = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH")) if x)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        tmp = Path(tmp)
        (tmp / "template").mkdir()
        t0 = time.perf_counter()
        tpl = template(tmp / "template")
        print(f"template store: {time.perf_counter() - t0:.0f}s", flush=True)
        for kind in ("ours", "futures", "loky"):
            for label, kill in (("clean", None), ("one worker killed", ns.kill_after)):
                folder = tmp / f"{kind}-{'kill' if kill else 'clean'}"
                folder.mkdir()
                path = copy_of(tpl, folder)
                res = run_ours(path, kill) if kind == "ours" else run_pool(kind, path, kill)
                results[f"{kind}, {label}"] = res
                print(f"{kind:8s} {label:18s} wall {res['wall_s']:6.1f}s  ok {len(res['ok'])}  failed "
                      f"{len(res['failed'])}  not started {len(res['not_started'])}"
                      + (f"  errors {sorted(set(res.get('errors', {}).values()))}" if res.get("errors") else ""),
                      flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
