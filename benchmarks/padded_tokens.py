"""Padded tokens of the peak micro-batch of each gpu_train_check run on padded rows, replayed on CPU.

    python -m benchmarks.padded_tokens [--runs small 1b] [--steps 12]

The runs of benchmarks/gpu_train_check.py on built-in rows pad each micro-batch to its longest
example, and their JSON records non-padding tokens only. Their activation peak is the micro-batch
with the most padded tokens (micro x its longest example). This script builds the same trainer
(same params, data, tokenizer and seeded sampler) on the CPU and reads the shapes of the
micro-batches those steps drew; the order does not depend on the model, so the ~20M "small"
architecture stands in for every size. The planner's calibration (cft_helpers.plan,
PADDED_PEAK_TOKENS) takes its numbers from here.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def peak_tokens(run: str, steps: int) -> dict:
    from benchmarks.gpu_train_check import RUNS, params_for
    from cft_helpers.data import prepare_datasets
    from cft_helpers.params import load_params
    from cft_helpers.train import build_trainer

    cfg = RUNS[run]
    if cfg["rows"] != "builtin":
        raise ValueError(f"run {run!r} has rows {cfg['rows']!r}: every row is max_length tokens, nothing to replay")
    root = Path(tempfile.mkdtemp(prefix=f"padded-{run}-"))
    # the data, tokenizer and sampler of `run`, on the small model (the order does not depend on it)
    path = params_for(run, root, root / "cache", steps)
    p = load_params(path, overrides={"runtime.device": "cpu", "models.base.config.hidden_size": 512,
                                     "models.base.config.intermediate_size": 1408,
                                     "models.base.config.num_hidden_layers": 4,
                                     "models.base.config.num_attention_heads": 8,
                                     "models.base.config.num_key_value_heads": 4})
    prepare_datasets(p, progress=False)
    built = build_trainer(p, "p", root / "out", device="cpu", progress=False)
    per_step = p.training.global_batch_size // p.training.micro_batch_size   # one process
    shapes = []
    for i, batch in enumerate(built.trainer.get_train_dataloader()):
        if i >= steps * per_step:
            break
        shapes.append(list(batch["input_ids"].shape))
    return {"run": run, "micro_batches": shapes, "peak_tokens": max(a * b for a, b in shapes)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", default=["small", "1b"])
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps the GPU runs made (their JSON's steps)")
    ns = ap.parse_args()
    out = {}
    for run in ns.runs:
        r = peak_tokens(run, ns.steps)
        print(json.dumps(r), flush=True)
        out[run] = r["peak_tokens"]
    print("PADDED_PEAK_TOKENS =", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
