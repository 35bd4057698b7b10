"""Reruns: the same params and seed give the same data, metrics and results on CPU, and the run
store records what would explain a difference (input hashes, commit, package versions)."""

from __future__ import annotations

import json

from cft_helpers.data import prepare_datasets
from cft_helpers.evaluation.harness import evaluate_model
from cft_helpers.params import load_params
from cft_helpers.train import train_arm

from conftest import write_params

# What may differ between two identical runs: clocks and the run folder's own paths.
VOLATILE = {"wall_s", "items_per_s", "checkpoint", "started", "finished", "runtime"}


def _volatile(key: str) -> bool:
    return key in VOLATILE or "runtime" in key or "per_second" in key or key.endswith("_time")  # clocks


def _stable(obj):
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if not _volatile(k)}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


def test_two_runs_of_the_same_params_agree_apart_from_clocks_and_paths(tmp_path, model_cache):
    runs = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        params = load_params(write_params(tmp_path / name, model_cache))
        prepare_datasets(params, progress=False)
        metrics = train_arm(params, "p1_alpaca", progress=False)
        record = evaluate_model(params, "p1_alpaca", progress=False)
        runs.append((params.store, metrics, record))
    (s1, m1, r1), (s2, m2, r2) = runs
    for f in sorted(s1.data_dir.glob("*.jsonl")):                      # identical data, byte for byte
        assert f.read_bytes() == (s2.data_dir / f.name).read_bytes(), f.name
    assert _stable(m1) == _stable(m2)                                  # identical training metrics
    assert _stable(r1) == _stable(r2) and r1["benchmarks"]             # identical results JSON
    log1, log2 = (s.arm_dir("p1_alpaca") / "train_log.jsonl" for s in (s1, s2))
    assert [_stable(json.loads(l)) for l in log1.read_text().splitlines()] == \
        [_stable(json.loads(l)) for l in log2.read_text().splitlines()]
    man1, man2 = s1.arm_manifest("p1_alpaca"), s2.arm_manifest("p1_alpaca")
    assert man1["input_hash"] == man2["input_hash"]                    # same inputs, recorded
    assert {"commit", "dirty"} <= set(man1["git"]) and man1["versions"]["torch"] and man1["versions"]["transformers"]
