"""GPU check of layer freezing under FSDP, through the book's own launch path.

    python -m benchmarks.gpu_fsdp_check --out fsdp_check.json [--processes 1]

Trains a Phase-1 arm in this process, then Phase-2 arms from it (vanilla, LF_H1, Spectrum) with
``launch_arm``: ``accelerate launch --config_file params/accelerate/fsdp.yaml --num_processes N
-m cft_helpers.train ...`` (FULL_SHARD, use_orig_params, sharded resumable checkpoints, the final
model gathered into one state dict). One GPU is enough to run FSDP's wrapping, flat parameters
with mixed requires_grad, sharded saves and the final gather; more processes also shard.

Checks per arm: bf16 was used; the final checkpoint holds every tensor of the start model with
the same shape; tensors the freeze plan froze are bit-identical to the Phase-1 checkpoint and
the trainable ones changed; the held-out loss went down. Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.common import freeze_report

REPO = Path(__file__).resolve().parents[1]
LANGS = ["fr", "ar", "de", "es", "ja", "ru", "th", "vi"]
ARMS = {"vanilla": "phase2", "LF_H1": "mitigation", "Spectrum": "mitigation"}


def params_file(root: Path, steps: int, processes: int) -> Path:
    arms = {"p1": {"phase": "phase1", "start": "base", "datasets": ["instruct"]}}
    for s, phase in ARMS.items():
        arms[s.lower()] = {"phase": phase, "start": "p1", "datasets": ["multialpaca"], "strategy": s}
    raw = {
        "name": "gpu-fsdp-check", "seed": 0, "run_dir": str(root / "run"), "cache_dir": str(root / "cache"),
        "runtime": {"device": "cuda", "processes": processes,
                    "launch_config": str(REPO / "params" / "accelerate" / "fsdp.yaml")},
        "models": {"base": {"source": "random_init", "seed": 0, "tokenizer_vocab_size": 4096,
                            "config": {"model_type": "llama", "max_position_embeddings": 1024, "hidden_size": 512,
                                       "intermediate_size": 1408, "num_hidden_layers": 8,
                                       "num_attention_heads": 8, "num_key_value_heads": 4}}},
        "datasets": {"instruct": {"source": "builtin", "family": "reasoning", "langs": ["en"], "n": 512,
                                  "n_heldout": 32},
                     "multialpaca": {"source": "builtin", "family": "general", "langs": LANGS, "n": 640,
                                     "n_heldout": 32}},
        "training": {"learning_rate": 3e-4, "epochs": 1, "max_steps": steps, "global_batch_size": 32,
                     "micro_batch_size": 32 // processes, "warmup_steps": 2, "max_length": 512,
                     "precision": "auto", "save_steps": max(1, steps // 2), "n_eval": 32},
        "arms": arms,
        "mitigation": {"layer_freezing": {"n_layers": 3}},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--out", default="fsdp_check.json")
    ns = ap.parse_args()

    import torch

    from cft_helpers.checkpoints import read_tensor, tensor_files
    from cft_helpers.data import prepare_datasets
    from cft_helpers.params import load_params
    from cft_helpers.relaunch import launch_arm
    from cft_helpers.train import train_arm

    root = Path(tempfile.mkdtemp(prefix="gpu-fsdp-"))
    p = load_params(params_file(root, ns.steps, ns.processes))
    prepare_datasets(p, progress=False)
    store = p.store
    train_arm(p, "p1", progress=False)  # one process, no FSDP: the common start
    start = tensor_files(store.arm_checkpoint("p1"))
    results, ok = [], True
    for strategy in ARMS:
        arm = strategy.lower()
        launch_arm(p, arm)
        m = store.arm_metrics(arm)
        final = tensor_files(store.arm_checkpoint(arm))
        r = {"strategy": strategy, "device": torch.cuda.get_device_name(), "processes": ns.processes,
             "bf16": m["bf16"], "trainable_params": m["trainable_params"], "total_params": m["total_params"],
             "steps": m["steps"], "wall_s": round(m["wall_s"], 2),
             "eval_loss_before": round(m["eval_loss_before"], 4), "eval_loss_after": round(m["eval_loss_after"], 4),
             "all_tensors_saved": sorted(final) == sorted(start)}
        same, shapes_match = {}, True
        for n in final:
            if n in start:  # each tensor read once
                a, b = read_tensor(start[n], n), read_tensor(final[n], n)
                shapes_match &= a.shape == b.shape
                same[n] = a.shape == b.shape and torch.equal(a.float(), b.float())
        r["shapes_match"] = shapes_match
        checks = [m["bf16"], r["all_tensors_saved"], r["shapes_match"], m["eval_loss_after"] < m["eval_loss_before"]]
        freeze = freeze_report(store.arm_dir(arm), same)
        if freeze:
            r.update(freeze)
            checks += [freeze["frozen_identical"], freeze["trainable_changed"]]
        else:
            r["changed_tensors"] = sum(not v for v in same.values())
        r["ok"] = all(checks)
        ok &= r["ok"]
        results.append(r)
        print(json.dumps(r), flush=True)
        Path(ns.out).write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
