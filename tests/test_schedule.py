"""The book's scheduler (parallel jobs) and the run store's lock (one book per store)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cft_helpers.lock import ENV, LOCK_NAME, RunLock, RunLocked, check_run_lock, read_lock
from cft_helpers.params import load_params
from cft_helpers.jobs import plan_jobs
from cft_helpers.schedule import ScheduleError, run_jobs
from cft_helpers.job_runner import prepare_shared

from conftest import write_params

ROOT = Path(__file__).resolve().parents[1]

# A process that takes the lock like a book does, says so, and holds it.
HOLDER = """
import sys, time
from cft_helpers.lock import RunLock
RunLock(sys.argv[1], command="holder-for-test --params smoke").acquire()
print("locked", flush=True)
time.sleep(300)
"""


def _env(token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), env.get("PYTHONPATH")) if x)
    return {**env, ENV: token} if token else env


@pytest.fixture
def holder(tmp_path):
    """A live process holding <tmp>/run/book.lock."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            env=_env())
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc, run_dir
    finally:
        proc.kill()
        proc.wait()


def test_dependency_graph_of_the_smoke_params():
    p = load_params("smoke")
    jobs = plan_jobs(p)
    edges = {name: list(job.needs) for name, job in jobs.items()}
    mitigations = ["lf_h1", "lf_h2", "spectrum", "gr_5", "gr_10", "er_10", "lora"]
    trains = {"train:p1_alpaca": [], "train:p1_instruct": [], "train:p2_alpaca": ["train:p1_alpaca"],
              "train:p2_instruct": ["train:p1_instruct"], "train:mixture": [], "train:rev1": [],
              "train:rev2": ["train:rev1"], **{f"train:{a}": ["train:p1_instruct"] for a in mitigations}}
    evals = {"eval:base": [], **{f"eval:{a}": [f"train:{a}"] for a in p.arm_order()}}
    assert edges == {**trains, **evals}
    assert list(jobs)[:len(trains)] == [f"train:{a}" for a in p.arm_order()]  # trainings first, in order
    assert all(j.group is None for j in jobs.values())  # AlpacaEval is off: evaluations run side by side


def test_representation_jobs_follow_notebook_07(prepared):
    """Notebook 07's activations are one job per model it reads, after that model's training; a
    job computes exactly the caches the notebook then finds done."""
    from cft_helpers.representations import activations_pending, needed_models, notebook_sets
    from cft_helpers.jobs import book_jobs
    from cft_helpers.job_runner import job_done, run_job

    p = prepared
    jobs = book_jobs(p, ["07_representations"])
    acts = {n: list(j.needs) for n, j in jobs.items() if j.kind == "act"}
    assert acts == {f"act:{m}": ([f"train:{m}"] if m in p.arms else []) for m in needed_models(p)}
    assert {n for n, j in jobs.items() if j.kind == "train"} == {f"train:{m}" for m in needed_models(p) if m in p.arms} \
        | {f"train:{a}" for m in needed_models(p) if m in p.arms for a in [p.arms[m].start] if a in p.arms}
    assert set(notebook_sets(p, "base")) == {"prompts", "parallel"}  # the start model also reads Figure 4's set
    assert activations_pending(p, "base") and not job_done(p, jobs["act:base"])
    run_job(p, "act:base")
    assert not activations_pending(p, "base") and job_done(p, jobs["act:base"])


def test_heldout_jobs_fill_what_the_notebooks_read(prepared):
    """Notebooks 03-05's held-out losses are one job per model they read (after its training); a
    job caches every held-out dataset under the keys the notebooks' tables then hit."""
    from cft_helpers.heldout import (heldout_datasets, heldout_loss_table, heldout_pending, heldout_rows,
                                     response_loss, training_heldout_table)
    from cft_helpers.data.prepare import load_prepared
    from cft_helpers.models import load_model, load_tokenizer, model_checkpoint
    from cft_helpers.jobs import book_jobs, heldout_models
    from cft_helpers.job_runner import job_done, run_job

    p = prepared
    jobs = book_jobs(p, ["03_phase2_training"])
    held = {n: list(j.needs) for n, j in jobs.items() if j.kind == "heldout"}
    phases = p.arms_in_phase("phase1", "phase2", "mixture", "reverse1", "reverse2")
    assert held == {"heldout:base": [], **{f"heldout:{a}": [f"train:{a}"] for a in phases}}
    assert heldout_models(p, ["05_similarity"]) == [*p.arms_in_phase("phase2"), "p1_alpaca", "p1_instruct"]
    assert "heldout:lf_h2" in book_jobs(p, ["04_mitigation"])  # the mitigation tables' rows

    store = p.store
    everything = heldout_datasets(p)
    assert everything == ["alpaca", "multialpaca", "instruct"]  # minstruct: no arm trains on it
    assert heldout_pending(p, "base") == everything and not job_done(p, jobs["heldout:base"])
    before = os.environ.get("CFT_NOTEBOOK")
    run_job(p, "heldout:base")
    assert os.environ.get("CFT_NOTEBOOK") == before  # set for the job's progress lines only
    assert heldout_pending(p, "base") == [] and job_done(p, jobs["heldout:base"])
    # the job's numbers are the loss itself, and the table reads them (no second computation)
    ckpt = model_checkpoint(p, "base")
    tok, model = load_tokenizer(ckpt), load_model(ckpt)
    direct = response_loss(model, tok, load_prepared(store, "instruct", "heldout")[:heldout_rows(p)],
                           max_length=p.training.max_length)
    table = heldout_loss_table(p, ["base"], everything, n=heldout_rows(p), progress=False)
    assert table.loc["base", "instruct"] == pytest.approx(direct, rel=1e-6) and direct > 0
    assert training_heldout_table(p, progress=False).empty  # no arm trained yet: no rows


def test_a_worker_serves_jobs_in_turn_and_a_dead_one_fails_its_job(prepared, tmp_path):
    """A worker answers each job with its exit code, its output in the job's log; after a failed job
    it leaves. A worker killed under a job fails that job with the signal's code."""
    from cft_helpers.schedule import _Worker, worker_env

    p = prepared
    env, logs = worker_env(p), tmp_path
    w = _Worker(p, env, p.root, logs / "worker-1.log")
    try:
        assert w.start("heldout:base", logs / "a.log") and w.result() == 0
        assert "heldout:base: alpaca" in (logs / "a.log").read_text()
        assert w.start("nope:base", logs / "b.log") and w.result() == 1
        assert "unknown job 'nope:base'" in (logs / "b.log").read_text()  # the traceback is in the job's log
        assert w.proc.wait(timeout=60) == 1
    finally:
        w.close()
    dead = _Worker(p, env, p.root, logs / "worker-2.log")
    try:
        dead.proc.kill()
        dead.proc.wait()
        dead.start("heldout:base", logs / "c.log")
        assert dead.result() == -signal.SIGKILL
    finally:
        dead.close()


def test_second_book_on_a_busy_store_is_refused(holder, tmp_path, model_cache):
    from cft_helpers.book import run_book

    proc, run_dir = holder
    path = write_params(tmp_path, model_cache)
    info = read_lock(run_dir)
    t0 = time.perf_counter()
    with pytest.raises(RunLocked) as e:
        run_book(str(path), progress=False)
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert str(run_dir / LOCK_NAME) in msg and f"pid {proc.pid}" in msg
    assert info["started"] in msg and "holder-for-test --params smoke" in msg
    t0 = time.perf_counter()
    cli = subprocess.run([sys.executable, "-m", "cft_helpers.book", "--params", str(path)], capture_output=True,
                         text=True, timeout=120, env=_env(), cwd=ROOT)
    assert cli.returncode == 1 and time.perf_counter() - t0 < 30
    assert str(run_dir / LOCK_NAME) in cli.stderr and f"pid {proc.pid}" in cli.stderr
    assert not (run_dir / "notebooks").exists() and read_lock(run_dir) == info  # nothing ran, lock untouched


def test_stale_lock_of_a_killed_book_is_taken_over(holder, capsys):
    proc, run_dir = holder
    old = read_lock(run_dir)
    os.kill(proc.pid, signal.SIGKILL)  # the fixture reaps it; a zombie counts as gone already
    time.sleep(0.2)
    with RunLock(run_dir, command="second book") as lock:
        info = read_lock(run_dir)
        assert info["pid"] == os.getpid() and info["command"] == "second book"
        assert info["token"] == lock.token != old["token"] and os.environ[ENV] == lock.token
        check_run_lock(run_dir)  # this process holds it
    err = capsys.readouterr().err
    assert "stale lock" in err and str(old["pid"]) in err and len(err.strip().splitlines()) == 1
    assert not (run_dir / LOCK_NAME).exists() and ENV not in os.environ  # released


def test_child_processes_with_the_token_pass(holder, tmp_path, model_cache):
    proc, run_dir = holder
    token = read_lock(run_dir)["token"]
    code = ("import sys; from cft_helpers.lock import RunLock, check_run_lock; check_run_lock(sys.argv[1]); "
            "RunLock(sys.argv[1]).acquire(); print('passed')")
    child = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True,
                           timeout=60, env=_env(token))
    assert child.returncode == 0 and "passed" in child.stdout, child.stderr
    assert read_lock(run_dir)["token"] == token  # the child did not take or drop the book's lock
    other = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True,
                           timeout=60, env=_env("another-token"))
    assert other.returncode != 0 and "RunLocked" in other.stderr and str(run_dir / LOCK_NAME) in other.stderr
    with pytest.raises(RunLocked):
        check_run_lock(run_dir)
    # a worker started by hand (not by the book) on the busy store stops before any work
    path = write_params(tmp_path, model_cache)
    worker = subprocess.run([sys.executable, "-m", "cft_helpers.schedule", "--params", str(path),
                             "--job", "train:p1_alpaca"], capture_output=True, text=True, timeout=120, env=_env())
    assert worker.returncode == 1 and "book.lock" in worker.stderr and not (run_dir / "arms").exists()


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_scheduled_jobs_give_the_sequential_results(tmp_path, model_cache, capsys):
    """Three arms (a Phase-1 arm, a GR arm that generates its replay with it, LF_H2), two
    evaluations and two held-out loss jobs: two workers in child processes give what one process
    gives in order, bit for bit."""
    from cft_helpers.data import prepare_datasets
    from cft_helpers.evaluation.harness import evaluate_model
    from cft_helpers.heldout import heldout_datasets, heldout_loss_table, heldout_rows
    from cft_helpers.train import train_arms

    arms, models = ["p1_instruct", "gr_5", "lf_h2"], ["base", "gr_5"]
    (tmp_path / "seq").mkdir()
    (tmp_path / "par").mkdir()
    seq, par = (load_params(write_params(tmp_path / d, model_cache)) for d in ("seq", "par"))
    assert seq.runtime.threads == par.runtime.threads == 1
    for p in (seq, par):
        prepare_datasets(p, progress=False)
    train_arms(seq, arms, progress=False)  # the notebooks' way: one process, in order
    for m in models:
        evaluate_model(seq, m, progress=False)
    heldout_loss_table(seq, models, heldout_datasets(seq), n=heldout_rows(seq), progress=False)

    jobs = plan_jobs(par, arms, models, heldout=models)
    assert list(jobs) == ["train:p1_instruct", "train:lf_h2", "train:gr_5", "eval:base", "eval:gr_5",
                          "heldout:base", "heldout:gr_5"]
    capsys.readouterr()
    with RunLock(par.run_path):  # as in the book: the workers carry its token and pass
        prepare_shared(par, jobs)
        summary = run_jobs(par, jobs, workers=2)
    out = capsys.readouterr().out
    assert set(summary["ran"]) == set(jobs) and not summary["already_done"] and not summary["failed"]
    assert summary["workers_started"] == 2  # 7 jobs, each worker serving several in turn
    assert "(2 running" in out and "done train:gr_5 in" in out  # side by side; a line per start and finish
    for job in jobs.values():
        assert (par.run_path / "logs" / job.log_name).stat().st_size > 0

    s_store, p_store = seq.store, par.store
    for arm in arms:
        a, b = _tensors(s_store.arm_checkpoint(arm)), _tensors(p_store.arm_checkpoint(arm))
        assert a.keys() == b.keys() and a, arm
        for name in a:
            assert a[name].dtype == b[name].dtype and a[name].equal(b[name]), (arm, name)
        ms, mp = s_store.arm_metrics(arm), p_store.arm_metrics(arm)
        for key in ("steps", "train_loss", "eval_loss_before", "eval_loss_after", "examples"):
            assert ms[key] == mp[key], (arm, key)
    for m in models:
        rows = (seq.run_path / "eval" / f"{m}.samples.jsonl").read_text()
        assert rows and rows == (par.run_path / "eval" / f"{m}.samples.jsonl").read_text(), m
        bs = json.loads((seq.run_path / "eval" / f"{m}.json").read_text())["benchmarks"]
        bp = json.loads((par.run_path / "eval" / f"{m}.json").read_text())["benchmarks"]
        assert bs == bp, m
    held = [json.loads((p.run_path / "heldout_loss.json").read_text()) for p in (seq, par)]
    assert len(held[0]) == 2 * len(heldout_datasets(seq)) and held[0] == held[1]  # both jobs' entries merged

    again = run_jobs(par, jobs, workers=2)  # a rerun (a resumed book) starts nothing
    assert again["already_done"] == list(jobs) and not again["ran"]
    assert "already done (7)" in capsys.readouterr().out


def test_a_failing_job_is_named_with_its_log(tmp_path, model_cache):
    from cft_helpers.data import prepare_datasets

    p = load_params(write_params(tmp_path, model_cache))
    prepare_datasets(p, progress=False)
    with open(p.run_path / "data" / "instruct.train.jsonl", "a") as f:  # changed after preparation
        f.write('{"id": "extra"}\n')
    jobs = plan_jobs(p, ["p1_alpaca", "p1_instruct", "p2_instruct"], [])
    prepare_shared(p, jobs)
    with pytest.raises(ScheduleError) as e:
        run_jobs(p, jobs, workers=2, progress=False)
    msg = str(e.value)
    log = p.run_path / "logs" / "train-p1_instruct.log"
    assert "job train:p1_instruct failed with exit code 1" in msg and str(log) in msg
    assert "changed since it was prepared" in msg  # from the log's last lines
    assert "not started: train:p2_instruct" in msg and not (p.run_path / "logs" / "train-p2_instruct.log").exists()
    # the job running beside it finished; the failed one is recorded as failed
    store = p.store
    assert store.finished_arms(["p1_alpaca", "p1_instruct"]) == ["p1_alpaca"]
    assert store.arm_manifest("p1_instruct")["status"] == "failed"


def test_book_schedules_after_data_preparation(tmp_path, model_cache, capsys):
    """The book with two workers: notebook 01, the scheduler (Phase 1's two arms side by side),
    then notebook 02, which finds them done; the lock is released at the end."""
    from cft_helpers.book import run_book

    path = write_params(tmp_path, model_cache, runtime={"threads": 1, "workers": 2})
    timing = run_book(str(path), only=["01", "02"])
    out = capsys.readouterr().out
    assert list(timing) == ["01_data_prep", "scheduler", "02_phase1_training"]
    assert out.index("[book 1/2] 01_data_prep") < out.index("start train:p1_alpaca") < out.index("[book 2/2]")
    params = load_params(path)
    store = params.store
    assert store.finished_arms(["p1_alpaca", "p1_instruct"]) == ["p1_alpaca", "p1_instruct"]
    assert (params.run_path / "logs" / "train-p1_alpaca.log").exists()
    nb = (params.run_path / "notebooks" / "02_phase1_training.ipynb").read_text()
    assert "Traceback" not in nb and not (params.run_path / LOCK_NAME).exists()
