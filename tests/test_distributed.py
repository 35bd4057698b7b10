"""The training core in several processes (accelerate launch, DDP over gloo on this CPU)."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from cft_helpers.data import prepare_datasets
from cft_helpers.params import Training, load_params
from cft_helpers.runs import RunStore
from cft_helpers.relaunch import launch_command
from cft_helpers.train import accumulation_steps, train_arms

from conftest import write_params

# Global batch 4 = micro 2 x 2 accumulation steps (one process) = micro 2 x 2 processes. 5 steps
# use 20 of the 22 Phase-2 rows, so no process ever gets a partial batch (accelerate would pad it
# by repeating rows, which one process does not do).
SAME_GLOBAL_BATCH = {"training.micro_batch_size": 2, "training.max_steps": 5}


def test_accumulation_keeps_the_global_batch_whatever_the_processes():
    t = Training(global_batch_size=16, micro_batch_size=4)
    assert [accumulation_steps(t, n) for n in (1, 2, 4)] == [4, 2, 1]
    with pytest.raises(ValueError, match=r"multiple of micro_batch_size \(4\) x processes \(3\)"):
        accumulation_steps(t, 3)


def test_launch_command_carries_processes_config_and_overrides(tmp_path, model_cache):
    (tmp_path / "fsdp.yaml").write_text("distributed_type: FSDP\n")
    params = load_params(write_params(tmp_path, model_cache),
                         overrides={"runtime.processes": 4, "runtime.launch_config": str(tmp_path / "fsdp.yaml"),
                                    "training.learning_rate": 1e-4})
    cmd = launch_command(params, "p2_alpaca")
    assert cmd[cmd.index("--num_processes") + 1] == "4" and cmd[cmd.index("--config_file") + 1].endswith("fsdp.yaml")
    assert "--multi_gpu" not in cmd and cmd[cmd.index("--arm") + 1] == "p2_alpaca"
    sets = [cmd[i + 1] for i, x in enumerate(cmd) if x == "--set"]
    assert "training.learning_rate=0.0001" in sets and "runtime.processes=4" in sets
    relaunched = load_params(params.source_path, overrides=sets)   # what each process loads
    assert relaunched.resolved() == params.resolved()


def test_two_processes_train_to_the_one_process_result(tmp_path, model_cache):
    """DDP over gloo with the same global batch gives the same weights as one process.

    Each optimizer step sees the same rows (process k takes micro-batch k of the step), the
    loss is averaged over the tokens of all processes (as over the accumulation steps in one
    process), and the gradient is the same sum in another order: equal up to float rounding,
    so the tolerance is 1e-6 on weights of size ~1 (measured: 0.0). Without the core's fix for
    evaluate-before-train, the processes were not wrapped in DDP and ended 1.5e-2 apart."""
    runs = {}
    for n in (1, 2):
        (tmp_path / f"p{n}").mkdir()
        params = load_params(write_params(tmp_path / f"p{n}", model_cache),
                             overrides={**SAME_GLOBAL_BATCH, "runtime.processes": n})
        prepare_datasets(params, progress=False)
        train_arms(params, ["p1_alpaca", "p2_alpaca"], progress=False)
        runs[n] = params
    metrics = {n: p.store.arm_metrics("p2_alpaca") for n, p in runs.items()}
    assert metrics[1]["processes"] == 1 and metrics[2]["processes"] == 2
    assert metrics[2]["steps"] == metrics[1]["steps"] == 5
    assert metrics[2]["trained_tokens"] == metrics[1]["trained_tokens"]
    for key in ("train_loss", "eval_loss_before", "eval_loss_after"):
        assert metrics[2][key] == pytest.approx(metrics[1][key], rel=1e-6), key
    one, two = (load_file(f"{m['checkpoint']}/model.safetensors") for m in (metrics[1], metrics[2]))
    assert max(float((one[k] - two[k]).abs().max()) for k in one) <= 1e-6
    params_json = json.loads((RunStore(runs[2].run_path).arm_dir("p2_alpaca") / "params.json").read_text())
    assert params_json["processes"] == 2


@pytest.mark.parametrize("name,kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("zero3", "DEEPSPEED")])
def test_shipped_accelerate_configs_parse(name, kind):
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(Path(__file__).resolve().parents[1] / "params" / "accelerate" / f"{name}.yaml"))
    assert cfg.distributed_type.name == kind and cfg.num_processes == 4
    if name == "fsdp":   # layer freezing inside an FSDP unit needs the original parameters
        assert cfg.fsdp_config["fsdp_use_orig_params"] is True
        assert cfg.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
    if name == "zero3":
        assert cfg.deepspeed_config["zero_stage"] == 3
