"""A one-node Slurm stand-in for the tests: sbatch, sacct, scontrol, scancel and srun.

    python fake_slurm.py install BIN_DIR      # writes the five commands into BIN_DIR

State lives in ``$FAKE_SLURM_DIR/state.json``. ``sbatch`` records a job's ``#SBATCH`` options
and starts a runner that waits for its ``afterok`` dependencies (cancelling it, as
``--kill-on-invalid-dep=yes`` asks, when one of them ended otherwise), then runs the script with
the job's ``SLURM_*`` variables. ``scontrol requeue`` makes the runner start the script again under
the same id when it exits, as Slurm does. Faults, by job name:

- ``FAKE_SLURM_PREEMPT=<job>@<kill point>``: the job's first run gets ``CFT_KILL_AT=<kill point>``
  with ``CFT_KILL_SIGNAL=USR2``, the signal Slurm sends before a preemption or the time limit;
- ``FAKE_SLURM_FAIL=<job>``: the job's script exits 1 at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

COMMANDS = ("sbatch", "sacct", "scontrol", "scancel", "srun")
ENDED_BADLY = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}


def _dir() -> Path:
    return Path(os.environ["FAKE_SLURM_DIR"])


@contextmanager
def _state():
    """The state, read and written back under a lock."""
    path = _dir() / "state.json"
    with open(_dir() / "state.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(path.read_text()) if path.exists() else {"next": 1000, "jobs": {}}
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, path)


def _read() -> dict:
    with _state() as s:
        return json.loads(json.dumps(s))


def sbatch(args: list[str]) -> int:
    script = Path(args[-1]).resolve()
    options = {}
    for line in script.read_text().splitlines():
        m = re.match(r"#SBATCH --([\w-]+)(?:=(.*))?$", line.strip())
        if m:
            options[m.group(1)] = (m.group(2) or "true").strip("'\"")
    with _state() as s:
        job_id = str(s["next"])
        s["next"] += 1
        s["jobs"][job_id] = {"name": options.get("job-name", script.stem), "options": options, "script": str(script),
                             "state": "PENDING", "runs": 0, "requeue": False, "pid": None, "cwd": os.getcwd(),
                             "env": dict(os.environ), "started": []}
    log = open(_dir() / f"runner-{job_id}.log", "a")
    subprocess.Popen([sys.executable, __file__, "_run", job_id], stdout=log, stderr=log, start_new_session=True)
    print(f"Submitted batch job {job_id}")
    return 0


def _dependencies_met(job: dict, jobs: dict) -> bool | None:
    """True: may start; False: wait; None: never (a dependency ended otherwise)."""
    ready = True
    for dep in filter(None, job["options"].get("dependency", "").split(",")):
        kind, _, ids = dep.partition(":")
        states = [jobs[i]["state"] for i in ids.split(":")]
        if kind == "afterok":
            if any(st in ENDED_BADLY for st in states):
                return None
            ready = ready and all(st == "COMPLETED" for st in states)
        else:
            assert kind == "afterany", dep
            ready = ready and all(st == "COMPLETED" or st in ENDED_BADLY for st in states)
    return ready


def run(job_id: str) -> int:
    while True:
        with _state() as s:
            job = s["jobs"][job_id]
            if job["state"] == "CANCELLED":
                return 0
            ready = _dependencies_met(job, s["jobs"])
            if ready is None:
                job["state"] = "CANCELLED"  # --kill-on-invalid-dep=yes
                return 0
            if ready:
                job["state"], job["requeue"] = "RUNNING", False
                job["runs"] += 1
                job["started"].append(time.time())
                runs, spec = job["runs"], dict(job)
        if ready:
            break
        time.sleep(0.2)
    env = dict(spec["env"])
    gpus = spec["options"].get("gpus-per-node", "0")
    env.update({"SLURM_JOB_ID": job_id, "SLURM_JOB_NAME": spec["name"], "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
                "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1",
                "SLURM_JOB_NODELIST": "fakenode1", "SLURM_GPUS_ON_NODE": gpus, "SLURM_SUBMIT_DIR": spec["cwd"],
                "SLURM_RESTART_COUNT": str(runs - 1)})
    preempt = env.get("FAKE_SLURM_PREEMPT", "")
    if runs == 1 and preempt.partition("@")[0] == spec["name"]:
        env.update({"CFT_KILL_AT": preempt.partition("@")[2], "CFT_KILL_SIGNAL": "USR2"})
    if env.get("FAKE_SLURM_FAIL") == spec["name"]:
        rc = 1
    else:
        out = spec["options"].get("output", str(_dir() / "%j.out")).replace("%j", job_id)
        with open(out, "a") as fh:
            proc = subprocess.Popen(["bash", spec["script"]], cwd=spec["cwd"], env=env, stdout=fh, stderr=fh,
                                    start_new_session=True)
            with _state() as s:
                s["jobs"][job_id]["pid"] = proc.pid
            rc = proc.wait()
    with _state() as s:
        job = s["jobs"][job_id]
        if job["requeue"]:
            job["state"] = "PENDING"  # Slurm: REQUEUED, then pending again under the same id
        elif job["state"] != "CANCELLED":
            job["state"] = "COMPLETED" if rc == 0 else "FAILED"
        again = job["requeue"]
    return run(job_id) if again else 0


def sacct(args: list[str]) -> int:
    ids = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    jobs = _read()["jobs"]
    print("JobID|State|NodeList")
    for i in ids:
        if i in jobs:
            print(f"{i}|{jobs[i]['state']}|fakenode1")
    return 0


def scontrol(args: list[str]) -> int:
    assert args[0] == "requeue", args
    with _state() as s:
        s["jobs"][args[1]]["requeue"] = True
        s["jobs"][args[1]]["state"] = "REQUEUED"
    return 0


def scancel(args: list[str]) -> int:
    job_id = args[0]
    sig = args[args.index("--signal") + 1] if "--signal" in args else None
    with _state() as s:
        job = s["jobs"][job_id]
        if sig is None:
            job["state"] = "CANCELLED"
        pid = job["pid"]
    if pid:
        try:
            os.killpg(pid, getattr(signal, sig if sig and sig.startswith("SIG") else f"SIG{sig or 'TERM'}"))
        except ProcessLookupError:
            pass
    return 0


def srun(args: list[str]) -> int:
    """Run the command with --output / --error (``%j``: the job id, ``%t``: the task, 0)."""
    files = {"--output": None, "--error": None}
    i = 0
    while i < len(args) and args[i].startswith("--"):
        if args[i] in files:
            files[args[i]] = args[i + 1].replace("%j", os.environ["SLURM_JOB_ID"]).replace("%t", "0")
            i += 2
        else:
            i += 1
    for flag, fd in (("--output", 1), ("--error", 2)):
        if files[flag]:
            Path(files[flag]).parent.mkdir(parents=True, exist_ok=True)
            out = os.open(files[flag], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(out, fd)
    os.execvp(args[i], args[i:])


def install(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} {name} \"$@\"\n")
        path.chmod(0o755)


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "install":
        install(Path(rest[0]))
    elif command == "_run":
        sys.exit(run(rest[0]))
    else:
        sys.exit({"sbatch": sbatch, "sacct": sacct, "scontrol": scontrol, "scancel": scancel, "srun": srun}[command](rest))
