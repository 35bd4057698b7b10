"""The paper's path through ``accelerate launch``: the device check's launch mode.

    python -m benchmarks.gpu_paper_path --launch [--out PATH]       # one CUDA GPU, FSDP (about 5 min)
    python -m benchmarks.gpu_paper_path --launch --tiny --out x.json  # CPU: DDP over gloo, 2 processes

``gpu_paper_path`` alone trains in one process and never touches ``accelerate launch``, FSDP or
DeepSpeed. Here the 1B-class random-init model (tiny: the smoke model) goes through the arms
p1 -> p2 -> lf_h1 -> lora -> gr_5, each trained by ``launch_arm`` (``accelerate launch`` of the
training CLI) with ``params/accelerate/fsdp.yaml`` and one process on a GPU (accelerate refuses
FSDP on a CPU: tiny runs DDP over gloo in two processes), 10 optimizer steps per arm (tiny: 3).
p2 is killed once just before its stage is marked done (``CFT_KILL_AT``), its checkpoints looked
at, and launched again. Checks, each a bool with its numbers, written to the JSON:

- ``fsdp_policy_<arm>``: the FSDP mixed-precision policy the arm trained with (bf16 parameters,
  fp32 reduction, fp32 buffers) and RoPE's ``inv_freq`` dtype after training (GPU);
- ``precision_<arm>`` and ``complete_fp32_<arm>``: bf16 training (fp32 tiny), and a final
  checkpoint of fp32 tensors holding every tensor of the base model, with its shape;
- ``sharded_checkpoints_p2``: the resumable checkpoints are FSDP shards (GPU; tiny: checkpoints),
  and ``p2_finished_not_retrained``: the relaunch found the arm written and marked it done;
- ``lf_h1_reuses_losses``: LF_H1 (p2's start and held-out rows) read p2's losses before training
  from the run store's cache, evaluating none;
- ``lora_merge``: the merged LoRA checkpoint differs from P1 in exactly the adapted weights;
- ``gr_replay_rows``: GR_5's replay rows generated inside the launch (a live process group);
- ``peak_memory_<arm>``: the process's peak GPU memory over ``train()`` against the dry-run
  planner's prediction for that arm (GPU);
- ``eval_lora_bf16``: the merged LoRA model evaluated in bf16 (fp32 tiny), finite scores;
- ``zero3_exact_start`` (when DeepSpeed imports, GPU): p1 -> p2 under ``zero3.yaml`` with
  learning rate 0 and 1 step; p2's trained tensors must equal P1's fp32 tensors bit for bit
  (DeepSpeed would otherwise build its masters from bf16 copies).

benchmarks/run_launch_check.sh gives the device call (the carry, the timeout).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from pathlib import Path

import yaml

from benchmarks.paper_path_setup import adapted_weights, build_params, saved_dtype, tensor_shapes, unchanged

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_ARMS = {"p1": ("phase1", "base", "instruct", None), "p2": ("phase2", "p1", "multialpaca", None),
               "lf_h1": ("mitigation", "p1", "multialpaca", "LF_H1"),
               "lora": ("mitigation", "p1", "multialpaca", "LoRA"),
               "gr_5": ("mitigation", "p1", "multialpaca", "GR_5")}
WANT_POLICY = {"param": "bfloat16", "reduce": "float32", "buffer": "float32"}


def launch_params(root: Path, tiny: bool, steps: int, zero3: bool = False) -> Path:
    """The check's params: gpu_paper_path's model and data, the launch arms, each trained in
    ``accelerate launch`` (tiny: 2 processes, DDP over gloo; GPU: 1 process under fsdp.yaml, or
    zero3.yaml with learning rate 0 and one step)."""
    root.mkdir(parents=True, exist_ok=True)
    path = build_params(root, tiny, steps, steps)
    raw = yaml.safe_load(path.read_text())
    save = max(1, steps // 2)  # a resumable checkpoint before the end, one at it
    raw["arms"] = {a: {"phase": ph, "start": start, "datasets": [ds], **({"strategy": s} if s else {})}
                   for a, (ph, start, ds, s) in LAUNCH_ARMS.items() if not zero3 or a in ("p1", "p2")}
    raw["training"].update(max_steps=1 if zero3 else steps, save_steps=1 if zero3 else save)
    if zero3:
        raw["training"]["learning_rate"] = 0.0
    if tiny:  # global batch 4 = micro 2 x 2 processes; LF_H1 freezes 1 of the 2 layers
        raw["training"].update(micro_batch_size=2, global_batch_size=4)
        raw["mitigation"]["layer_freezing"] = {"n_layers": 1}
    raw["runtime"].update(processes=2 if tiny else 1)
    if not tiny:
        raw["runtime"]["launch_config"] = str(ROOT / "params" / "accelerate" / ("zero3.yaml" if zero3 else "fsdp.yaml"))
    raw["plan"] = {"gpus": 1, "engine": "zero3" if zero3 else "fsdp", "gpu_memory_gib": 80, "overhead_gib": 0.0}
    raw["name"] += "-zero3" if zero3 else "-launch"
    out = root / ("params-zero3.yaml" if zero3 else "params-launch.yaml")
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def _launch(params, arm: str, kill_at: str | None = None) -> int:
    from cft_helpers.relaunch import launch_command

    env = {**os.environ}
    env.pop("CFT_KILL_AT", None)
    if kill_at:
        env["CFT_KILL_AT"] = kill_at
    return subprocess.run(launch_command(params, arm), cwd=params.root or None, env=env).returncode


def run_launch_check(ns, out: dict, save, check, stages) -> None:
    """The launch arms and their checks, filling ``out`` (``save`` writes it after each arm)."""
    from cft_helpers.data import prepare_datasets
    from cft_helpers.evaluation import harness
    from cft_helpers.models import model_checkpoint
    from cft_helpers.params import load_params
    from cft_helpers.plan import plan
    from cft_helpers.files import read_json

    cuda = not ns.tiny
    root = Path(ns.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    p = load_params(launch_params(root, ns.tiny, ns.steps))
    store = p.store
    want_precision = "fp32" if ns.tiny else "bf16"
    out.update({"mode": "launch-" + ("tiny-cpu" if ns.tiny else "gpu"), "steps": ns.steps,
                "engine": "ddp (gloo), 2 processes" if ns.tiny else "fsdp.yaml, 1 process", "arms": {}})

    def setup():  # the data, and the base model built once here (as train_arms does before launches)
        prepare_datasets(p, progress=False)
        base = model_checkpoint(p, "base", progress=False)
        out["model_params"] = sum(math.prod(s) for s in tensor_shapes(base).values())
        return base
    base = stages.run("setup", setup)
    base_shapes = tensor_shapes(base)
    save()
    predicted = {x.arm: x for x in plan(p)} if cuda else {}
    cache_file = store.losses_before_training_file
    for arm in LAUNCH_ARMS:
        cached_before = set(read_json(cache_file)) if cache_file.exists() else set()
        if arm == "p2":  # killed before its stage is marked done, then launched again
            code = stages.run("p2_killed", lambda: _launch(p, "p2", "train:before-finish"))
            ckpts = sorted(store.arm_checkpoints_dir("p2").glob("checkpoint-*"))
            shards = sorted({q.name for c in ckpts for q in c.iterdir() if "fsdp" in q.name})
            check("sharded_checkpoints_p2", code != 0 and bool(ckpts) and (ns.tiny or bool(shards)),
                  exit_code=code, checkpoints=[c.name for c in ckpts], fsdp_shards=shards)
            written = store.arm_file("p2", "metrics.json").read_text() if code != 0 else None
        code = stages.run(arm, lambda arm=arm: _launch(p, arm))
        if code != 0:
            raise RuntimeError(f"arm {arm!r}: the launch exited with {code}")
        m = store.arm_metrics(arm)
        ckpt = store.arm_checkpoint(arm)
        a = out["arms"][arm] = {k: m.get(k) for k in (
            "steps", "processes", "bf16", "final_dtype", "eval_loss_before", "eval_loss_after", "resumed_from",
            "fsdp_mixed_precision", "rope_inv_freq_dtype", "peak_gpu_mem_gib", "trainable_params", "wall_s")}
        a.update(precision="bf16" if m["bf16"] else "fp32", saved_dtype=saved_dtype(ckpt))  # (the summary's columns)
        shapes = tensor_shapes(ckpt)
        check(f"precision_{arm}", ("bf16" if m["bf16"] else "fp32") == want_precision, bf16=m["bf16"])
        check(f"complete_fp32_{arm}", saved_dtype(ckpt) == "float32" and shapes == base_shapes,
              saved=saved_dtype(ckpt), tensors=len(shapes), base_tensors=len(base_shapes),
              differing=sorted(set(shapes) ^ set(base_shapes))[:5])
        if cuda:
            check(f"fsdp_policy_{arm}", m.get("fsdp_mixed_precision") == WANT_POLICY
                  and m.get("rope_inv_freq_dtype") == ["float32"],
                  policy=m.get("fsdp_mixed_precision"), inv_freq=m.get("rope_inv_freq_dtype"))
            want = predicted[arm].total_gib if arm in predicted else None
            check(f"peak_memory_{arm}", want is not None and m.get("peak_gpu_mem_gib") is not None
                  and m["peak_gpu_mem_gib"] <= want, measured_gib=m.get("peak_gpu_mem_gib"), predicted_gib=want)
        if arm == "p2":  # the relaunch found everything written: it marks the arm done, trains nothing
            check("p2_finished_not_retrained", written is not None
                  and store.arm_file("p2", "metrics.json").read_text() == written
                  and not store.arm_checkpoints_dir("p2").exists() and m["steps"] == p.arm_training("p2").max_steps,
                  steps=m["steps"], resumed_from=m.get("resumed_from"))
        elif arm == "lf_h1":
            p2 = store.arm_metrics("p2")
            after = set(read_json(cache_file)) if cache_file.exists() else set()
            check("lf_h1_reuses_losses", after == cached_before and m["eval_loss_before"] == p2["eval_loss_before"]
                  and m["train_rows_loss_before"] == p2["train_rows_loss_before"],
                  new_cache_keys=len(after - cached_before), lf_h1_before=m["eval_loss_before"],
                  p2_before=p2["eval_loss_before"])
        elif arm == "lora":
            same = unchanged(store.arm_checkpoint("p1"), ckpt)
            adapted = adapted_weights(store.arm_adapter_dir(arm))
            changed = {n for n, s in same.items() if not s}
            check("lora_merge", changed == adapted and bool(adapted), adapted=len(adapted), changed=len(changed))
        elif arm == "gr_5":
            summary = m["replay"]
            rows = [json.loads(x) for x in store.replay_file(arm).read_text(encoding="utf-8").split("\n") if x.strip()]
            check("gr_replay_rows", len(rows) == summary["replay_rows"] > 0 and summary["empty_responses"] == 0
                  and summary.get("generation_processes", 1) == p.runtime.processes,
                  replay_rows=len(rows), empty=summary["empty_responses"],
                  processes=summary.get("generation_processes", 1))
        save()

    rec = stages.run("eval_lora", lambda: harness.evaluate_model(p, "lora", progress=False))
    scores = {b: v["score"] for b, v in rec["benchmarks"].items()}
    want_eval = "float32" if ns.tiny else "bfloat16"
    check("eval_lora_bf16" if cuda else "eval_lora_fp32", rec.get("dtype") == want_eval and all(
        isinstance(v, (int, float)) and math.isfinite(v) for v in scores.values()),
        dtype=rec.get("dtype"), expected=want_eval, scores=scores)
    save()

    if cuda:
        try:
            import deepspeed  # noqa: F401
        except Exception as exc:  # not installed, or a build that does not import
            out["zero3"] = f"not run: deepspeed does not import ({type(exc).__name__})"
            return
        z = load_params(launch_params(root / "zero3", False, 1, zero3=True))
        zstore = z.store
        prepare_datasets(z, progress=False)
        model_checkpoint(z, "base", progress=False)
        for arm in ("p1", "p2"):
            code = stages.run(f"zero3_{arm}", lambda arm=arm: _launch(z, arm))
            if code != 0:
                raise RuntimeError(f"zero3 arm {arm!r}: the launch exited with {code}")
        same = unchanged(zstore.arm_checkpoint("p1"), zstore.arm_checkpoint("p2"))
        m = zstore.arm_metrics("p2")
        check("zero3_exact_start", all(same.values()), tensors=len(same),
              differing=[n for n, s in same.items() if not s][:5], masters=m.get("deepspeed_start_masters"))
        save()
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
