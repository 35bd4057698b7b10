"""Fault injection: kill the smoke book at random points, corrupt inputs, and check that nothing
is lost and nothing wrong is kept.

    python scripts/fault_injection.py [--rounds 2] [--kills 4] [--seed 0] [--workdir runs/fault-injection]

1. A reference run: the smoke book, uninterrupted, in its own run store.
2. Faulty runs, each in a fresh store (``--rounds``): the book is started and SIGKILLed (the
   whole process group: book, papermill kernels, training) after a random delay, ``--kills``
   times, then run to the end.
3. Kills at named points (``CFT_KILL_AT``, cft_helpers/faults.py), which a random delay almost
   never hits: an arm killed after its final model and metrics are written but before its stage
   is marked done, and after that but before its checkpoints are removed. The rerun must train
   nothing (neither again from the start nor a step more from the last checkpoint), leave the
   metrics as they were, and end with the reference run's weights.
4. Input faults: a prepared data file truncated after preparation, a dataset file with malformed
   lines, a params file with a typo. Each must stop the book with a message naming the problem.
5. Checks on the faulty run against the reference: every stage done, every arm's final weights
   equal (CPU is deterministic; resumed training matches within 1e-5), every evaluation score
   equal, every JSON file in the store parses, no temporary files left where results belong.

Prints one summary line: faults injected, runs recovered, artifacts corrupted (must be 0); exits 1
otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def write_params(folder: Path, name: str, **changes) -> Path:
    raw = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    raw.update(run_dir=str(folder / name), cache_dir=str(ROOT / "runs" / "cache"), **changes)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


def book(params: Path, only: list[str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cft_helpers.book", "--params", str(params), "--quiet"]
    if only:
        cmd += ["--only", *only]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def run_to_end(params: Path, only: list[str] | None = None) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    proc = book(params, only)
    out, _ = proc.communicate()
    return proc.returncode, out, time.perf_counter() - t0


def kill_after(params: Path, delay: float) -> bool:
    """Start the book, SIGKILL its process group after ``delay`` s; True if it was still running."""
    proc = book(params)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def final_weights(run: Path) -> dict[str, Path]:
    out = {}
    for manifest in sorted((run / "arms").glob("*/manifest.json")):
        m = json.loads(manifest.read_text())
        if m.get("status") == "done":
            out[manifest.parent.name] = Path(m["outputs"]["checkpoint"])
    return out


def compare(reference: Path, faulty: Path) -> list[str]:
    """Every difference that would make a results table wrong; empty when the faulty run is whole."""
    from safetensors.torch import load_file

    problems = []
    ref_w, got_w = final_weights(reference), final_weights(faulty)
    if set(ref_w) != set(got_w):
        problems.append(f"arms done differ: {sorted(set(ref_w) ^ set(got_w))}")
    for arm in sorted(set(ref_w) & set(got_w)):
        a = load_file(str(ref_w[arm] / "model.safetensors"))
        b = load_file(str(got_w[arm] / "model.safetensors"))
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        if diff > 1e-5:
            problems.append(f"arm {arm}: final weights differ by {diff:.2e}")
    for ref_eval in sorted((reference / "eval").glob("*.json")):
        got = faulty / "eval" / ref_eval.name
        if not got.exists():
            problems.append(f"eval {ref_eval.name} missing")
            continue
        r, g = json.loads(ref_eval.read_text()), json.loads(got.read_text())
        rs = {b: v.get("score") for b, v in r.get("benchmarks", {}).items()}
        gs = {b: v.get("score") for b, v in g.get("benchmarks", {}).items()}
        if any(abs((rs[b] or 0) - (gs.get(b) or 0)) > 1e-6 for b in rs) or set(rs) != set(gs):
            problems.append(f"eval {ref_eval.name}: scores differ {rs} vs {gs}")
    for path in faulty.rglob("*.json"):
        try:
            json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            problems.append(f"{path} does not parse")
    for path in faulty.rglob("*"):  # hidden temporaries are harmless litter; a visible one is not
        if ".tmp" in path.name and not path.name.startswith(".") and "checkpoint" not in str(path):
            problems.append(f"temporary file where a result belongs: {path}")
    for manifest in faulty.rglob("manifest.json"):
        if json.loads(manifest.read_text()).get("status") != "done":
            problems.append(f"stage not done: {manifest.parent}")
    return problems


def train_arm_cli(params: Path, arm: str, kill_at: str | None = None) -> tuple[int, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("CFT_KILL_AT", None)
    if kill_at:
        env["CFT_KILL_AT"] = kill_at
    proc = subprocess.run([sys.executable, "-m", "cft_helpers.train", "--params", str(params), "--arm", arm],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def named_kills(work: Path, reference: Path, arm: str = "p1_alpaca") -> list[tuple[str, bool, str]]:
    """(kill point, recovered without retraining from the start, what happened) per point."""
    from safetensors.torch import load_file

    from cft_helpers.faults import POINTS

    ref = load_file(str(final_weights(reference)[arm] / "model.safetensors"))
    out = []
    for i, point in enumerate(POINTS):
        params = write_params(work, f"kill{i}")
        run_to_end(params, ["01"])                     # the data, prepared
        code, text = train_arm_cli(params, arm, point)
        if code != -signal.SIGKILL:
            out.append((point, False, f"not killed there (exit {code}): {_excerpt(text, 'Error')}"))
            continue
        run = work / f"kill{i}"
        before = (run / "arms" / arm / "metrics.json").read_text()   # written before every point
        code, text = train_arm_cli(params, arm)
        after = (run / "arms" / arm / "metrics.json").read_text()
        metrics = json.loads(after) if code == 0 else {}
        resumed = metrics.get("resumed_from")
        whole = code == 0 and not (run / "arms" / arm / "checkpoints").exists()
        got = load_file(str(final_weights(run)[arm] / "model.safetensors")) if whole else {}
        same = whole and max(float((ref[k] - got[k]).abs().max()) for k in ref) <= 1e-5
        # the arm's files were all written at every point: the rerun trains nothing
        ok = same and after == before and resumed is None
        out.append((point, ok, f"rerun exit {code}, metrics unchanged: {after == before}, "
                               f"weights as the reference: {same}"))
    return out


def input_faults(work: Path) -> list[tuple[str, bool, str]]:
    """(fault, detected with a clear message, message excerpt) for each corrupted input."""
    out = []
    # a prepared data file truncated after preparation
    params = write_params(work, "truncated")
    code, text, _ = run_to_end(params, ["01"])
    data = work / "truncated" / "data" / "alpaca.train.jsonl"
    data.write_text("".join(data.read_text().splitlines(keepends=True)[:-2]))
    code, text, _ = run_to_end(params, ["02"])
    out.append(("prepared file truncated", code != 0 and "changed since it was prepared" in text,
                _excerpt(text, "changed since")))
    # a dataset file with a malformed line and an empty response
    bad = work / "bad.jsonl"
    bad.write_text('{"instruction": "Add 1 and 2.", "output": "3"}\n{"instruction": "x", "output": "  "}\n'
                   '{not json\n')
    raw = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    datasets = {**raw["datasets"], "alpaca": {"source": "local", "path": str(bad), "schema": "alpaca", "lang": "en"}}
    params = write_params(work, "bad_data", datasets=datasets)
    code, text, _ = run_to_end(params, ["01"])
    out.append(("malformed dataset file", code != 0 and "bad.jsonl:3: not JSON" in text, _excerpt(text, "bad.jsonl")))
    # a params typo
    params = write_params(work, "typo", trainig={"epochs": 1})
    code, text, _ = run_to_end(params, ["01"])
    out.append(("params typo", code != 0 and "trainig" in text and "training" in text, _excerpt(text, "trainig")))
    return out


def _excerpt(text: str, key: str) -> str:
    for line in text.splitlines():
        if key.lower() in line.lower():
            return line.strip()[:160]
    return text.strip().splitlines()[-1][:160] if text.strip() else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kills", type=int, default=4, help="kills per round")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "fault-injection"))
    ns = ap.parse_args(argv)
    work = Path(ns.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = random.Random(ns.seed)

    code, text, ref_s = run_to_end(write_params(work, "reference"))
    if code != 0:
        print(text[-3000:])
        print("reference run failed")
        return 1
    print(f"reference run: {ref_s:.0f} s")

    # Each round: a fresh store, killed --kills times at random points spread over one book's
    # length (so every kill lands in work not yet done), then run to the end and compared.
    kills, recovered, problems = 0, 0, []
    for r in range(ns.rounds):
        faulty = write_params(work, f"faulty{r}")
        for i in range(ns.kills):
            delay = rng.uniform(5.0, 2 * ref_s / ns.kills)
            killed = kill_after(faulty, delay)
            kills += killed
            print(f"round {r + 1}, start {i + 1}: {'killed' if killed else 'finished'} after {delay:.0f} s")
        code, text, _ = run_to_end(faulty)
        recovered += code == 0
        if code != 0:
            print(text[-3000:])
        found = compare(work / "reference", work / f"faulty{r}") if code == 0 else ["the final run failed"]
        for p in found:
            print("CORRUPTED:", p)
        problems += found

    named = named_kills(work, work / "reference")
    for point, ok, msg in named:
        print(f"kill at {point}: {'recovered' if ok else 'NOT RECOVERED;'} {msg}")
    problems += [f"kill at {p}: {m}" for p, ok, m in named if not ok]
    kills += len(named)

    detected = input_faults(work)
    for fault, ok, msg in detected:
        print(f"input fault '{fault}': {'stopped with' if ok else 'NOT DETECTED;'} {msg}")
    injected = kills + len(detected)
    corrupted = len(problems) + sum(not ok for _, ok, _ in detected)
    print(f"faults injected: {injected} ({kills} kills, {len(detected)} corrupted inputs), runs recovered: "
          f"{recovered}/{ns.rounds}, artifacts corrupted: {corrupted}")
    return 0 if corrupted == 0 and recovered == ns.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
