"""GPU check of the training core: the bf16 CUDA path, end to end, on random-init Llamas.

    python benchmarks/gpu_train_check.py --out results.json [--sizes small 1b]

For each size it builds a params set in memory (random-init Llama, built-in multilingual data,
precision "auto"), prepares the data, runs ``train_arm`` (the same code path the notebooks use)
and prints: the device, whether bf16 was used, the loss before/after on held-out rows, the
dtype of the saved checkpoint, peak GPU memory, non-padding tokens per second over the whole
``trainer.train`` call (checkpoint saves included), and the model-FLOPs utilisation at 6 x
parameters x tokens against the card's dense bf16 peak. Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import yaml

SIZES = {
    # ~20M parameters: correctness of the bf16 path.
    "small": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4),
    # ~1.1B parameters (Llama-style 2048 x 22 layers): throughput.
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4),
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
LANGS = ["fr", "ar", "de", "es", "id", "ja", "ko", "pt", "ru", "th", "vi"]


def params_for(size: str, root: Path, steps: int) -> Path:
    raw = {
        "name": f"gpu-check-{size}", "seed": 0, "run_dir": str(root / "run"),
        "cache_dir": str(root / "cache"), "runtime": {"device": "cuda"},
        "models": {"base": {"source": "random_init", "seed": 0, "tokenizer_vocab_size": 4096,
                            "config": {"model_type": "llama", "max_position_embeddings": 1024,
                                       **SIZES[size]}}},
        "datasets": {"multialpaca": {"source": "builtin", "family": "reasoning", "langs": LANGS,
                                     "n": 2048, "n_heldout": 64}},
        "training": {"learning_rate": 3e-4, "epochs": 1, "max_steps": steps, "global_batch_size": 64,
                     "micro_batch_size": 32, "warmup_steps": 2, "max_length": 512, "precision": "auto",
                     "save_steps": max(1, steps // 2), "n_eval": 64},
        "arms": {"p": {"phase": "phase2", "start": "base", "datasets": ["multialpaca"]}},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def check(size: str, steps: int) -> dict:
    import torch

    from cft_helpers.data import prepare_datasets
    from cft_helpers.models import model_checkpoint
    from cft_helpers.params import load_params
    from cft_helpers.runs import RunStore
    from cft_helpers.train import train_arm

    root = Path(tempfile.mkdtemp(prefix=f"gpu-{size}-"))
    p = load_params(params_for(size, root, steps))
    prepare_datasets(p, progress=False)
    t0 = time.perf_counter()
    model_checkpoint(p, "base")
    init_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    m = train_arm(p, "p", progress=False)
    store = RunStore(p.run_path)
    from safetensors import safe_open

    ckpt = store.arm_checkpoint("p")
    with safe_open(str(ckpt / "model.safetensors"), framework="pt") as f:
        names = list(f.keys())
        saved_dtype = str(f.get_tensor(names[0]).dtype)
        n_params = sum(math.prod(f.get_slice(k).get_shape()) for k in names)
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    tok_s = m["trained_tokens"] / m["wall_s"]
    mfu = 6 * n_params * tok_s / (peak * 1e12) if peak else None
    return {"size": size, "device": name, "params": n_params, "bf16": m["bf16"], "steps": m["steps"],
            "trained_tokens": m["trained_tokens"], "wall_s": round(m["wall_s"], 2),
            "tokens_per_s": round(tok_s), "mfu_6N": round(mfu, 4) if mfu else None,
            "eval_loss_before": m["eval_loss_before"], "eval_loss_after": m["eval_loss_after"],
            "saved_dtype": saved_dtype, "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "random_init_s": round(init_s, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["small", "1b"], choices=list(SIZES))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="gpu_train_check.json")
    ns = ap.parse_args()
    results, ok = [], True
    for size in ns.sizes:
        r = check(size, ns.steps)
        results.append(r)
        print(json.dumps(r), flush=True)
        ok &= r["bf16"] and r["eval_loss_after"] < r["eval_loss_before"] and r["saved_dtype"] == "torch.float32"
    Path(ns.out).write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
