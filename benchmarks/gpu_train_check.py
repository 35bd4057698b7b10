"""GPU check of the training core: the bf16 CUDA path, end to end, on random-init Llamas.

    python -m benchmarks.gpu_train_check --out results.json [--runs small 1b 1b-long]

Each run builds a params set (random-init Llama, precision "auto"), prepares the data, runs
``train_arm`` (the same code path the notebooks use) and prints: the device, whether bf16 was
used, the attention implementation, the loss before/after on held-out rows, the dtype of the
saved checkpoint, peak GPU memory, and non-padding tokens per second two ways:

- ``tokens_per_s``: over the whole ``trainer.train`` call (checkpoint saves included);
- ``steady_tokens_per_s``: over the optimizer steps after the first two, each timed from its
  first micro-batch to the end of its optimizer step (CUDA synchronised), saves excluded.

Model-FLOPs utilisation is 6 x parameters x tokens / time against the card's dense bf16 peak
(attention FLOPs not counted, so it understates). Runs:

- ``small``: ~20M parameters on built-in rows: correctness of the bf16 path;
- ``1b``: ~1.1B parameters on built-in rows (short, ~100 tokens, padded per micro-batch);
- ``1b-long``: ~1.1B parameters on local rows truncated to 1024 tokens (no padding), the
  paper's regime of long sequences; fused AdamW.

Exits non-zero when a check fails.
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


RUNS = {
    "small": dict(size="small", rows="builtin", micro=32, max_length=512, optimizer="adamw_torch"),
    "1b-long": dict(size="1b", rows="long", micro=8, max_length=1024, optimizer="adamw_torch_fused"),
    "1b": dict(size="1b", rows="builtin", micro=32, max_length=512, optimizer="adamw_torch"),
    # the same rows, twice the micro-batch (fewer accumulation steps), and then also compiled
    "1b-long-m16": dict(size="1b", rows="long", micro=16, max_length=1024, optimizer="adamw_torch_fused"),
    "1b-long-compile": dict(size="1b", rows="long", micro=16, max_length=1024, optimizer="adamw_torch_fused",
                            compile=True),
}


def long_rows(path: Path, n: int, seed: int = 0) -> Path:
    """ALPACA-schema rows of ~1500 words of the built-in lexicon: every row is truncated to
    max_length, so micro-batches carry no padding."""
    import random

    from cft_helpers.data.lexicon import EN

    words = sorted({w for v in EN.values() if isinstance(v, str) for w in v.split() if w.isalpha()})
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"instruction": " ".join(rng.choices(words, k=40)),
                                "output": " ".join(rng.choices(words, k=1500))}) + "\n")
    return path


def params_for(run: str, root: Path, cache: Path, steps: int) -> Path:
    cfg = RUNS[run]
    if cfg["rows"] == "builtin":
        data = {"source": "builtin", "family": "reasoning", "langs": LANGS, "n": 2048, "n_heldout": 64}
    else:
        data = {"source": "local", "path": str(long_rows(root / "long.jsonl", 64 * steps + 64)),
                "schema": "alpaca", "lang": "en", "n_heldout": 16}
    raw = {
        "name": f"gpu-check-{run}", "seed": 0, "run_dir": str(root / "run"),
        "cache_dir": str(cache), "runtime": {"device": "cuda"},
        "models": {"base": {"source": "random_init", "seed": 0, "tokenizer_vocab_size": 4096,
                            "config": {"model_type": "llama", "max_position_embeddings": 2048,
                                       **SIZES[cfg["size"]]}}},
        "datasets": {"multialpaca": data},
        "training": {"learning_rate": 3e-4, "epochs": 1, "max_steps": steps, "global_batch_size": 64,
                     "micro_batch_size": cfg["micro"], "warmup_steps": 2, "max_length": cfg["max_length"],
                     "precision": "auto", "optimizer": cfg["optimizer"], "save_steps": steps,
                     "torch_compile": cfg.get("compile", False),
                     "n_eval": 16 if cfg["rows"] == "long" else 64},
        "arms": {"p": {"phase": "phase2", "start": "base", "datasets": ["multialpaca"]}},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class StepTimer:
    """Trainer callback: wall time and non-padding tokens of each optimizer step, CUDA synchronised."""

    def __new__(cls):
        import torch
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self):
                self.steps: list[tuple[float, int]] = []

            def on_step_begin(self, args, state, control, **kw):
                torch.cuda.synchronize()
                self._t, self._tok = time.perf_counter(), state.num_input_tokens_seen

            def on_step_end(self, args, state, control, **kw):
                torch.cuda.synchronize()
                self.steps.append((time.perf_counter() - self._t, int(state.num_input_tokens_seen - self._tok)))

        return _Timer()


def check(run: str, steps: int, cache: Path) -> dict:
    import torch

    from cft_helpers.data import prepare_datasets
    from cft_helpers.models import model_checkpoint
    from cft_helpers.params import load_params
    from cft_helpers.train import train_arm

    root = Path(tempfile.mkdtemp(prefix=f"gpu-{run}-"))
    p = load_params(params_for(run, root, cache, steps))
    prepare_datasets(p, progress=False)
    t0 = time.perf_counter()
    model_checkpoint(p, "base")
    init_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    timer = StepTimer()
    m = train_arm(p, "p", callbacks=[timer], progress=False)
    store = p.store
    from safetensors import safe_open

    ckpt = store.arm_checkpoint("p")
    with safe_open(str(ckpt / "model.safetensors"), framework="pt") as f:
        names = list(f.keys())
        saved_dtype = str(f.get_tensor(names[0]).dtype)
        n_params = sum(math.prod(f.get_slice(k).get_shape()) for k in names)
    attn = m.get("attn_implementation")
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    tok_s = m["trained_tokens"] / m["wall_s"]
    steady = timer.steps[2:] or timer.steps
    steady_tok_s = sum(t for _, t in steady) / sum(s for s, _ in steady)

    def mfu(rate):
        return round(6 * n_params * rate / (peak * 1e12), 4) if peak else None

    return {"run": run, **RUNS[run], "device": name, "torch": torch.__version__, "params": n_params,
            "bf16": m["bf16"], "attn": attn, "steps": m["steps"], "trained_tokens": m["trained_tokens"],
            "tokens_per_step": round(m["trained_tokens"] / m["steps"]), "wall_s": round(m["wall_s"], 2),
            "tokens_per_s": round(tok_s), "mfu_6N": mfu(tok_s),
            "steady_steps": len(steady), "steady_step_s": round(sum(s for s, _ in steady) / len(steady), 3),
            "steady_tokens_per_s": round(steady_tok_s), "steady_mfu_6N": mfu(steady_tok_s),
            "eval_loss_before": m["eval_loss_before"], "eval_loss_after": m["eval_loss_after"],
            "saved_dtype": saved_dtype, "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "random_init_s": round(init_s, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="gpu_train_check.json")
    ns = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="gpu-cache-"))  # the 1.1B random init is made once
    results, ok = [], True
    for run in ns.runs:
        try:
            r = check(run, ns.steps, cache)
        except Exception as exc:  # one failed variant must not cost the others their device time
            print(f"run {run} failed: {exc!r}", flush=True)
            ok = False
            continue
        results.append(r)
        print(json.dumps(r), flush=True)
        Path(ns.out).write_text(json.dumps(results, indent=2))
        ok &= r["bf16"] and r["eval_loss_after"] < r["eval_loss_before"] and r["saved_dtype"] == "torch.float32"
    print(f"{'run':8} {'params':>8} {'tok/step':>8} {'tok/s':>8} {'MFU':>6} {'steady tok/s':>12} {'MFU':>6} "
          f"{'loss before':>11} {'after':>6} {'peak GiB':>8}")
    for r in results:
        print(f"{r['run']:8} {r['params'] / 1e6:7.0f}M {r['tokens_per_step']:8} {r['tokens_per_s']:8} "
              f"{r['mfu_6N'] or 0:6.3f} {r['steady_tokens_per_s']:12} {r['steady_mfu_6N'] or 0:6.3f} "
              f"{r['eval_loss_before']:11.3f} {r['eval_loss_after']:6.3f} {r['peak_mem_gib']:8.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
