"""benchmarks/gpu_paper_path.py: the GPU check of the paper's path, run in its --tiny CPU mode
(the same stages and checks as on a GPU, on params/smoke.yaml's 2-layer model, in fp32)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int = 170) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_paper_path", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_tiny_runs_every_stage_and_passes_every_check(tmp_path):
    from benchmarks.gpu_paper_path import ARMS, EVALUATED, STAGES

    out_file = tmp_path / "x.json"
    proc = _run("--tiny", "--out", str(out_file))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all checks passed" in proc.stdout
    out = json.loads(out_file.read_text())

    assert out["mode"] == "tiny-cpu" and out["device"] == "cpu" and out["ok"] is True
    assert "error" not in out
    assert out["torch"] and out["transformers"]
    assert list(out["stages"]) == list(STAGES)
    for name, stage in out["stages"].items():
        assert stage["wall_s"] > 0, name
        assert stage["peak_gpu_mem_gib"] is None  # no GPU: no GPU memory figure
    # the temporary run dir is removed at the end
    assert not Path(out["run_dir"]).exists()

    # every check there is, and each passed
    arms = ["p1", *ARMS]
    expected_checks = ({f"loss_down_{a}" for a in arms} | {f"precision_{a}" for a in arms}
                       | {"gr_replay_rows", "lora_changes_only_adapted", "spectrum_frozen_identical"}
                       | {f"eval_scores_finite_{m}" for m in EVALUATED} | {f"eval_dtype_{m}" for m in EVALUATED})
    assert set(out["checks"]) == expected_checks
    failed = {k: v for k, v in out["checks"].items() if v["ok"] is not True}
    assert not failed, failed

    # fp32 on a CPU: training, the saved checkpoints, and the evaluated weights
    assert out["expected_precision"] == "fp32"
    for arm in arms:
        a = out["arms"][arm]
        assert a["precision"] == "fp32" and a["saved_dtype"] == "float32", arm
        assert a["eval_loss_after"] < a["eval_loss_before"], arm
    assert out["arms"]["p1"]["steps"] == out["p1_steps"] == 16
    assert all(out["arms"][a]["steps"] == out["steps"] == 8 for a in ARMS)
    for model in EVALUATED:
        e = out["evaluation"][model]
        assert e["observed_dtype"] == "float32"
        assert e["record_dtype"] in ("float32", None)  # None only where params lack evaluation.dtype
        assert len(e["scores"]) == 6  # the six benchmarks that run (AlpacaEval is off)

    # the numbers behind the checks are the smoke model's: 66 multilingual rows -> 3 replay rows
    # (5%, rounded half up); LoRA on all 7 linear projections of 2 layers; Spectrum freezes 50% of
    # each type's 2 matrices
    gr = out["checks"]["gr_replay_rows"]
    assert (gr["phase2_rows"], gr["expected"], gr["replay_rows"], gr["empty_responses"]) == (66, 3, 3, 0)
    assert gr["training_rows"] == 69 and gr["engine"] == out["generation_engine"] == "hf"
    lora = out["checks"]["lora_changes_only_adapted"]
    assert lora["adapted_weights"] == lora["changed_tensors"] == 14
    assert out["arms"]["lora"]["trainable_params"] < out["arms"]["gr_5"]["trainable_params"]
    spectrum = out["checks"]["spectrum_frozen_identical"]
    assert spectrum["frozen_tensors"] == 7 and spectrum["frozen_changed"] == []


def test_gpu_mode_refuses_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out_file = tmp_path / "x.json"
    proc = _run("--out", str(out_file), timeout=60)
    assert proc.returncode == 2
    assert "needs a CUDA device" in proc.stderr and "--tiny" in proc.stderr
    assert not out_file.exists()


def test_checkpoint_comparisons(tmp_path):
    """The helpers behind the LoRA and Spectrum checks: bit-identity per tensor, and the adapted
    weights named from the adapter's lora_A tensors."""
    import torch
    from safetensors.torch import save_file

    from benchmarks.paper_path_setup import adapted_weights, saved_dtype, unchanged

    a, b, ad = tmp_path / "a", tmp_path / "b", tmp_path / "adapter"
    for d in (a, b, ad):
        d.mkdir()
    w = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    save_file({"x.weight": w, "y.weight": w.clone()}, str(a / "model.safetensors"))
    nudged = w.clone()
    nudged[0, 0] = torch.nextafter(nudged[0, 0], torch.tensor(1.0))  # one ulp: not identical
    save_file({"x.weight": w.clone(), "y.weight": nudged}, str(b / "model.safetensors"))
    assert unchanged(a, b) == {"x.weight": True, "y.weight": False}
    assert saved_dtype(b) == "float32"
    save_file({"base_model.model.y.lora_A.weight": torch.zeros(1, 3),
               "base_model.model.y.lora_B.weight": torch.zeros(2, 1)}, str(ad / "adapter_model.safetensors"))
    assert adapted_weights(ad) == {"y.weight"}


def test_launch_tiny_runs_the_arms_through_accelerate_launch_and_passes(tmp_path):
    """--launch --tiny: p1 -> p2 (killed before its stage is marked done, then relaunched) ->
    lf_h1 -> lora -> gr_5, each by accelerate launch in two processes (DDP over gloo), and the
    merged LoRA model evaluated: every check of the GPU's launch mode that a CPU can make."""
    out_file = tmp_path / "launch.json"
    proc = _run("--launch", "--tiny", "--out", str(out_file), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(out_file.read_text())
    assert out["mode"] == "launch-tiny-cpu" and out["ok"] is True and "error" not in out
    assert list(out["stages"]) == ["setup", "p1", "p2_killed", "p2", "lf_h1", "lora", "gr_5", "eval_lora"]
    assert {"sharded_checkpoints_p2", "p2_finished_not_retrained", "lf_h1_reuses_losses", "lora_merge",
            "gr_replay_rows", "eval_lora_fp32"} <= set(out["checks"])
    assert all(a["processes"] == 2 for a in out["arms"].values())
    assert out["checks"]["lf_h1_reuses_losses"]["new_cache_keys"] == 0
    assert out["checks"]["gr_replay_rows"]["processes"] == 2
