"""The job graph on submitit: Slurm (a one-node stand-in on PATH: tests/fake_slurm.py) and local
processes, whose results the book then reads as its own."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_params

from cft_helpers import executors
from cft_helpers.jobs import grid_jobs, plan_jobs
from cft_helpers.params import load_params
from cft_helpers.runs import RunStore

ROOT = Path(__file__).resolve().parents[1]
FAKE = Path(__file__).resolve().parent / "fake_slurm.py"
SLURM = {"partition": "gpu", "account": "lab", "gpus_per_node": 1, "train_time_min": 90, "eval_time_min": 30,
         "sbatch": {"constraint": "a100"}, "setup": ["echo setup-ran"]}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch, sacct, scontrol, scancel and srun on PATH; yields a reader of the fake's state.
    Every job still waiting at the end is cancelled (its runner exits)."""
    bin_dir, state_dir = tmp_path / "bin", tmp_path / "slurm-state"
    state_dir.mkdir()
    subprocess.run([sys.executable, str(FAKE), "install", str(bin_dir)], check=True)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state_dir))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH")) if x))

    def jobs() -> dict[str, dict]:
        path = state_dir / "state.json"
        return {j["name"]: {**j, "id": i} for i, j in json.loads(path.read_text())["jobs"].items()} \
            if path.exists() else {}

    yield jobs
    for job in jobs().values():
        if job["state"] in ("PENDING", "RUNNING"):
            subprocess.run([str(bin_dir / "scancel"), job["id"]], check=False)


def _prepared(tmp_path, model_cache, **changes):
    from cft_helpers.data import prepare_datasets

    params = load_params(write_params(tmp_path, model_cache, slurm=SLURM, **changes))
    prepare_datasets(params, progress=False)
    return params


def test_slurm_jobs_wait_for_what_they_need_a_preempted_one_resumes_a_failed_one_stops_its_dependants(
        tmp_path, model_cache, fake_slurm, monkeypatch):
    params = _prepared(tmp_path, model_cache)
    store = params.store
    monkeypatch.setenv("FAKE_SLURM_PREEMPT", "train:p1_alpaca@train:metrics-written")  # Slurm's USR2, once
    monkeypatch.setenv("FAKE_SLURM_FAIL", "train:p1_instruct")
    jobs = plan_jobs(params, arms=["p1_alpaca", "p2_alpaca", "p1_instruct", "p2_instruct"], models=[])
    out = executors.submit_slurm(params, jobs, log=lambda _: None)
    assert list(out["submitted"]) == list(jobs) and not out["done"] and not out["left_out"]
    follow = executors.follow_slurm(params, poll_s=0.5, log=lambda _: None, timeout_s=900)
    slurm = fake_slurm()

    # resources and dependencies, as sbatch got them
    ids = {name: slurm[name]["id"] for name in jobs}
    assert ids == {n: out["submitted"][n] for n in jobs}
    for name, job in slurm.items():
        o = job["options"]
        assert (o["partition"], o["account"], o["gpus-per-node"], o["time"], o["constraint"]) == \
            ("gpu", "lab", "1", "90", "a100"), name
        assert o["kill-on-invalid-dep"] == "yes" and o["job-name"] == name and o["nodes"] == "1"
        assert "echo setup-ran" in Path(job["script"]).read_text()
    assert "dependency" not in slurm["train:p1_alpaca"]["options"]
    assert "dependency" not in slurm["train:p1_instruct"]["options"]  # (none carried over from p2_alpaca)
    assert slurm["train:p2_alpaca"]["options"]["dependency"] == f"afterok:{ids['train:p1_alpaca']}"
    assert slurm["train:p2_instruct"]["options"]["dependency"] == f"afterok:{ids['train:p1_instruct']}"

    # preempted once: requeued under its id, resumed from the store (the model written before the
    # signal is kept, not retrained), and only then its dependant ran
    p1, p2 = slurm["train:p1_alpaca"], slurm["train:p2_alpaca"]
    assert (p1["state"], p1["runs"], p2["state"], p2["runs"]) == ("COMPLETED", 2, "COMPLETED", 1)
    assert p2["started"][0] > p1["started"][1]
    assert store.arm_file("p1_alpaca", "metrics.json").stat().st_mtime < p1["started"][1]
    assert store.finished_arms(["p1_alpaca", "p2_alpaca"]) == ["p1_alpaca", "p2_alpaca"]
    logs = "".join(p.read_text(errors="replace") for p in (params.run_path / "submitit").rglob("*.out"))
    assert "sending SIGUSR2" in logs and logs.count("train:p1_alpaca: steps=") == 1

    # the failed job stops its dependant, and the summary names both
    assert slurm["train:p1_instruct"]["state"] == "FAILED"
    assert (slurm["train:p2_instruct"]["state"], slurm["train:p2_instruct"]["runs"]) == ("CANCELLED", 0)
    assert set(follow["failed"]) == {"train:p1_instruct"} and set(follow["stopped"]) == {"train:p2_instruct"}
    assert set(follow["completed"]) == {"train:p1_alpaca", "train:p2_alpaca"}
    lines = executors.summary_lines("slurm", follow)
    assert any("failed: train:p1_instruct" in x for x in lines)

    # rerun after the failure: only what is not done is submitted again, with its dependency
    monkeypatch.delenv("FAKE_SLURM_FAIL")
    again = executors.submit_slurm(params, jobs, log=lambda _: None)
    assert again["done"] == ["train:p1_alpaca", "train:p2_alpaca"]
    assert list(again["submitted"]) == ["train:p1_instruct", "train:p2_instruct"]
    executors.follow_slurm(params, poll_s=0.5, log=lambda _: None, timeout_s=900)
    slurm = fake_slurm()
    assert slurm["train:p2_instruct"]["options"]["dependency"] == f"afterok:{again['submitted']['train:p1_instruct']}"
    assert store.finished_arms(["p1_instruct", "p2_instruct"]) == ["p1_instruct", "p2_instruct"]
    recorded = executors.read_submitted(store)["jobs"]
    assert recorded["train:p1_instruct"]["id"] == again["submitted"]["train:p1_instruct"]


def test_a_rerun_leaves_jobs_in_flight_alone_and_waits_on_them(tmp_path, model_cache, fake_slurm):
    """Jobs recorded by an earlier command that sacct still reports running are not submitted
    again; what needs them waits on their ids, and jobs of one group (AlpacaEval's judge caches)
    run one after the other."""
    params = _prepared(tmp_path, model_cache)
    store = params.store
    state_dir = Path(os.environ["FAKE_SLURM_DIR"])
    # jobs 77 and 78 were submitted earlier and still run (no runner: they stay so)
    running = {"options": {}, "state": "RUNNING", "runs": 1, "requeue": False, "pid": None, "started": [time.time()]}
    (state_dir / "state.json").write_text(json.dumps({"next": 1000, "jobs": {
        "77": {"name": "train:p1_alpaca", **running}, "78": {"name": "eval:base", **running}}}))
    store.submitted_file.parent.mkdir(parents=True)
    store.submitted_file.write_text(json.dumps({"executor": "slurm", "jobs": {
        "train:p1_alpaca": {"id": "77"}, "eval:base": {"id": "78"}}}))
    jobs = plan_jobs(params, arms=["p1_alpaca", "p2_alpaca"], models=["base", "p1_alpaca"])
    jobs = {n: dataclasses.replace(j, group="judge" if j.kind == "eval" else None) for n, j in jobs.items()}
    out = executors.submit_slurm(params, jobs, log=lambda _: None)
    assert out["in_flight"] == {"train:p1_alpaca": "77", "eval:base": "78"}
    assert list(out["submitted"]) == ["train:p2_alpaca", "eval:p1_alpaca"]
    slurm = fake_slurm()
    assert slurm["train:p2_alpaca"]["options"]["dependency"] == "afterok:77"
    assert slurm["eval:p1_alpaca"]["options"]["dependency"] == "afterok:77,afterany:78"


def test_the_book_waits_for_slurm_jobs_on_its_store(tmp_path, model_cache, fake_slurm):
    from cft_helpers.book import BookError, run_book

    path = write_params(tmp_path, model_cache)
    store = RunStore(load_params(path).run_path)
    (Path(os.environ["FAKE_SLURM_DIR"]) / "state.json").write_text(json.dumps({"next": 1000, "jobs": {
        "91": {"name": "train:p1_alpaca", "options": {}, "state": "PENDING", "pid": None}}}))
    store.submitted_file.parent.mkdir(parents=True)
    store.submitted_file.write_text(json.dumps({"executor": "slurm", "jobs": {"train:p1_alpaca": {"id": "91"}}}))
    with pytest.raises(BookError, match=r"train:p1_alpaca \(job 91\)"):
        run_book(str(path), progress=False)
    assert not (store.root / "notebooks").exists()


def test_slurm_resources_of_a_multi_gpu_job(tmp_path, model_cache):
    params = load_params(write_params(tmp_path, model_cache, slurm={**SLURM, "gpus_per_node": 4, "mem_gb": 200}))
    jobs = plan_jobs(params, arms=["p1_alpaca"], models=["p1_alpaca"])
    train = executors.slurm_resources(params, jobs["train:p1_alpaca"])
    evaluation = executors.slurm_resources(params, jobs["eval:p1_alpaca"])
    assert (train["gpus_per_node"], train["time"], train["mem"], train["partition"]) == (4, 90, "200GB", "gpu")
    assert evaluation["time"] == 30 and evaluation["job_name"] == "eval:p1_alpaca"
    # every job runs with the node's GPUs as its processes: accelerate launch for a training
    assert executors._slurm_overrides(params) == {"runtime.processes": 4}


def test_local_executor_stops_the_dependants_of_a_failed_job_and_leaves_out_what_it_cannot_run(
        tmp_path, model_cache, monkeypatch):
    from cft_helpers.jobs import Job

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH")) if x))
    params = _prepared(tmp_path, model_cache)
    jobs = {"train:ghost": Job("train:ghost", "train", "ghost"),                      # no such arm: fails
            "eval:ghost": Job("eval:ghost", "eval", "ghost", ("train:ghost",)),       # stopped by it
            "eval:p2_alpaca": Job("eval:p2_alpaca", "eval", "p2_alpaca", ("train:p2_alpaca",))}  # its arm: not done
    lines: list[str] = []
    out = executors.run_local(params, jobs, 2, log=lines.append, poll_s=0.2)
    assert list(out["failed"]) == ["train:ghost"] and "KeyError" in out["failed"]["train:ghost"]
    assert out["stopped"] == ["eval:ghost"] and out["left_out"] == ["eval:p2_alpaca"] and not out["ran"]
    summary = executors.summary_lines("local", out)
    assert summary[0] == "[local] 0 done, 0 ran, 1 failed, 1 stopped, 1 left out"
    assert any("a job they need failed: eval:ghost" in x for x in summary)


def test_local_executor_then_the_book_give_the_recorded_numbers(tmp_path, model_cache):
    """`schedule --executor local` runs every job of the graph through submitit's local processes;
    the book then finds them done, and its numbers are the recorded ones (tests/expected). The
    figures stay interactive only (no PNG or SVG through Chrome): the book fixture of test_book.py
    checks their export, and here they would only add time."""
    from cft_helpers.book import run_book
    from test_book import _assert_recorded, record_expectations

    path = write_params(tmp_path, model_cache, figures={"formats": ["html"], "notebook_png": False})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH")) if x)}
    proc = subprocess.run([sys.executable, "-m", "cft_helpers.schedule", "--params", str(path), "--executor", "local",
                           "--workers", "2"], capture_output=True, text=True, timeout=1800, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    params = load_params(path)
    jobs = grid_jobs(params)
    assert f"[local] 0 done, {len(jobs)} ran, 0 failed, 0 stopped, 0 left out" in proc.stdout
    recorded = executors.read_submitted(params.store)
    assert recorded["executor"] == "local" and set(recorded["jobs"]) == set(jobs)
    run_book(str(path), progress=False)
    numbers = record_expectations().collect(params.run_path)
    for section in ("arms", "eval", "findings"):
        _assert_recorded(section, numbers[section])
