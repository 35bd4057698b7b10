"""Training throughput: our Phase-2 training core against TRL's SFTTrainer, on the default params.

    python -m benchmarks.bench_training [--steps 6]

Same model (the default base, SmolLM2-135M-Instruct), same rows (the default MULTIALPACA
stand-in, the reverse-order arm ``rev1``: Phase-2 data from the base model), same global batch,
same number of optimizer steps, same learning-rate schedule and max_length, same seed (so the
same batches in the same order). Three sides, each in a fresh process:

- ``trl_defaults``: ``SFTConfig`` with TRL's defaults for everything that is not the experiment
  (bf16 autocast, activation checkpointing, fused AdamW, padded batches);
- ``trl_fp32`` and ``trl_bf16``: TRL without activation checkpointing, in fp32 and in bf16
  autocast (faster only on CPUs with native bf16, such as AVX512-BF16; docs/ENGINEERING.md, "The stack and its pins" saw
  2.6x slower without it); the faster of the two is reported as the best TRL configuration;
- ``ours``: ``build_trainer`` of the training core with the default params (padding-free batches,
  fp32);
- ``ours_bf16``: the same with ``training.precision: bf16``, on CPUs with native bf16 only (the
  same numerics as TRL's default bf16 autocast, so its loss is compared with the baseline's).

Measured: non-padding tokens per second over ``trainer.train()`` (no evaluation, no saves), and
the training loss (mean over the steps, and the last step's), which must agree within 2%.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import child, emit

ARM = "rev1"


def _params(steps: int, precision: str = "auto"):
    from cft_helpers.params import load_params

    return load_params("default", overrides={"training.max_steps": steps, "training.save_steps": 10_000,
                                             "training.precision": precision})


def part(name: str, steps: int) -> None:
    from cft_helpers.runtime import configure_runtime
    from cft_helpers.train import build_trainer

    params = _params(steps, "bf16" if name == "ours_bf16" else "auto")
    configure_runtime(params)
    store = params.store
    out = Path(tempfile.mkdtemp(prefix=f"bench-train-{name}-"))
    trainer = build_trainer(params, ARM, out, "cpu", progress=False).trainer
    if not name.startswith("ours"):  # the same model, tokenizer and rows, handed to a plain SFTTrainer
        from trl import SFTConfig, SFTTrainer

        t = params.arm_training(ARM)
        engine = {"trl_defaults": {}, "trl_fp32": {"bf16": False, "gradient_checkpointing": False},
                  "trl_bf16": {"bf16": True, "gradient_checkpointing": False}}[name]
        args = SFTConfig(output_dir=str(out / "trl"), per_device_train_batch_size=t.micro_batch_size,
                         gradient_accumulation_steps=t.global_batch_size // t.micro_batch_size,
                         max_steps=steps, learning_rate=t.learning_rate, lr_scheduler_type=t.scheduler,
                         warmup_steps=t.warmup_steps, weight_decay=t.weight_decay, max_length=t.max_length,
                         seed=t.seed, data_seed=t.seed, use_cpu=True, report_to="none", save_strategy="no",
                         logging_steps=1, include_num_input_tokens_seen="non_padding", disable_tqdm=True,
                         **engine)
        from cft_helpers.train import _to_dataset
        from cft_helpers.data.prepare import training_examples

        rows = training_examples(store, params.arms[ARM].datasets, seed=t.seed)
        trainer = SFTTrainer(model=trainer.model, args=args, train_dataset=_to_dataset(rows),
                             processing_class=trainer.processing_class)
    t0 = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - t0
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    emit({"side": name, "train_s": train_s, "tokens": int(trainer.state.num_input_tokens_seen),
          "tokens_per_s": trainer.state.num_input_tokens_seen / train_s, "train_loss": result.training_loss,
          "last_loss": losses[-1], "steps": trainer.state.global_step, "bf16": bool(trainer.args.bf16),
          "activation_checkpointing": bool(trainer.args.gradient_checkpointing),
          "padding_free": bool(getattr(trainer.data_collator, "padding_free", False))}, t0)


def run(steps: int = 6) -> dict:
    from cft_helpers.data import prepare_datasets
    from cft_helpers.models import model_checkpoint

    params = _params(steps)
    prepare_datasets(params, progress=False)  # once, before the children read it
    model_checkpoint(params, "base", progress=False)
    from cft_helpers.runtime import cpu_has_native_bf16

    names = ["trl_defaults", "trl_fp32", "trl_bf16", "ours"] + (["ours_bf16"] if cpu_has_native_bf16() else [])
    sides = {name: child("benchmarks.bench_training", name, "--steps", str(steps)) for name in names}
    base = sides["trl_defaults"]
    # ours at its fastest on this CPU: bf16 where the CPU has it (TRL's default numerics too)
    ours = sides.get("ours_bf16", sides["ours"])
    best_name = max(("trl_fp32", "trl_bf16"), key=lambda k: sides[k]["tokens_per_s"])
    best = sides[best_name]

    def gap(x, y):
        return max(abs(x[k] - y[k]) / y[k] for k in ("train_loss", "last_loss"))

    speedup = ours["tokens_per_s"] / base["tokens_per_s"]
    return {"goal": "Training throughput", "baseline": "TRL SFTTrainer defaults (bf16 autocast, activation "
            "checkpointing, padded batches), same model/data/batch/steps",
            "baseline_tok_s": base["tokens_per_s"], "best_trl": best_name, "best_trl_tok_s": best["tokens_per_s"],
            "ours": ours["side"], "ours_tok_s": ours["tokens_per_s"], "speedup": speedup,
            "speedup_fp32_vs_trl_fp32": sides["ours"]["tokens_per_s"] / sides["trl_fp32"]["tokens_per_s"],
            "speedup_vs_best_trl": ours["tokens_per_s"] / best["tokens_per_s"],
            "tokens": {k: v["tokens"] for k, v in sides.items()},
            "tok_s": {k: round(v["tokens_per_s"], 2) for k, v in sides.items()},
            "losses": {k: [round(v["train_loss"], 4), round(v["last_loss"], 4)] for k, v in sides.items()},
            "loss_gap_vs_baseline": gap(ours, base),
            "loss_gap_fp32_vs_trl_fp32": gap(sides["ours"], sides["trl_fp32"]),
            "target": ">= 1.5x non-padding tokens/s, final loss within 2%",
            "met": speedup >= 1.5 and gap(ours, base) <= 0.02}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--part")
    ap.add_argument("--steps", type=int, default=6)
    ns = ap.parse_args()
    if ns.part:
        part(ns.part, ns.steps)
    else:
        print(json.dumps(run(ns.steps), indent=1))
