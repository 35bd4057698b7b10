"""Dry-run planner: will each arm of a parameter set fit, and what will it cost, before launch?

    python -m cft_helpers.plan --params params/paper/mistral7b.yaml [--gpus 4 --engine fsdp]

Nothing is downloaded: the architecture comes from the model's config (``plan.architecture`` in
the params for hub models; the checkpoint's config.json for local, converted or random-init
models) and the model is instantiated on the meta device, so parameter names and shapes are
exact. Trainable parameters per arm come from its strategy's entry (cft_helpers.mitigation), with
the same selection code the training core uses (LF_H1, LF_H2, Spectrum select the same *number*
of tensors whatever the scores; LoRA adds r x (in + out) per adapted linear layer). LF_H2 at
head granularity freezes rows with gradient masks: its trainable count leaves the masked rows
out, but their tensors still get gradients and AdamW state, so its gradient and optimizer
memory (and weight-gradient FLOPs) are those of the whole tensors ("optimizer_params"; said in
the arm's notes).

Memory per GPU follows this training core (fp32 master weights, bf16 autocast on GPU, AdamW):

    weights     4 B x all parameters            / shards
    gradients   4 B x trainable parameters      / shards
    optimizer   8 B x trainable parameters      / shards   (AdamW: two fp32 moments)
    activations per micro-batch of micro_batch x max_length tokens (padded worst case), bf16:
                with checkpointing: 2 B x hidden per token per layer (the saved layer inputs)
                                    + one layer's full activations (recomputed in backward)
                without:            2 B x (10 x hidden + 3 x intermediate) per token per layer
                (fused sdpa/flash attention: no sequence-squared term)
                + logits: 8 B x vocab per token (fp32 logits and their gradient)
    overhead    ``plan.overhead_gib`` (CUDA context, allocator slack)

shards = number of GPUs under FSDP full shard or ZeRO-3, 1 under DDP or a single GPU.

Compute: 2N FLOPs per token forward, 2N backward through activations, 2N_trainable for weight
gradients, and another 2N forward when activations are recomputed (attention's own FLOPs are
left out: small at these lengths). GPU-hours = FLOPs / (peak x MFU).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from cft_helpers import mitigation
from cft_helpers.models import model_checkpoint, model_spec_of_arm
from cft_helpers.params import LocalModel, Params, RandomInitModel, load_params
from cft_helpers.replay import replay_count

GIB = 1024 ** 3
SHARDED = ("fsdp", "zero3")


class PlanError(ValueError):
    """A plan that cannot run as asked: the message gives the numbers."""


@dataclass
class ArmPlan:
    arm: str
    strategy: str
    total_params: int
    trainable_params: int
    rows: int
    tokens_per_epoch: float
    tokens_total: float
    optimizer_steps: int
    accumulation: int
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    overhead_gib: float
    total_gib: float
    gpu_memory_gib: float
    fits: bool
    flops: float
    gpu_hours: float
    wall_hours: float
    reported_hours: float | None = None
    implied_mfu: float | None = None
    # values with gradients and AdamW state: trainable_params plus rows frozen by gradient masks
    optimizer_params: int | None = None
    notes: str = ""


def architecture(params: Params, model: str) -> dict[str, Any]:
    """The transformers config (as a dict) of a models: entry, without downloading weights."""
    import json

    if params.plan.architecture is not None:
        return dict(params.plan.architecture)
    spec = params.models[model]
    if isinstance(spec, RandomInitModel):  # its vocabulary is the tokenizer it trains
        return {"vocab_size": spec.tokenizer_vocab_size, **spec.config}
    if isinstance(spec, LocalModel):
        return json.loads((params.path(spec.path) / "config.json").read_text())
    if spec.source == "gguf_package":
        return json.loads((model_checkpoint(params, model, progress=False) / "config.json").read_text())
    raise PlanError(f"models.{model}: a hub model's architecture is not known without downloading it; "
                    "set plan.architecture to its config (model_type, hidden_size, ...), as the paper presets do")


def meta_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the model the config describes, built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(config)
    cfg_obj = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg_obj)
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


def parameter_counts(params: Params, arm: str, shapes: dict[str, tuple[int, ...]],
                     config: dict[str, Any] | None = None) -> tuple[int, int, int, str]:
    """(all parameters, trainable parameters, parameters with gradients and optimizer state,
    note) of an arm under its strategy (mitigation.parameter_counts); the last two differ only
    where rows are frozen by gradient masks (LF_H2, granularity head)."""
    try:
        return mitigation.parameter_counts(params, arm, shapes, config)
    except ValueError as exc:  # e.g. LF_H2 by heads with weight decay, or without the config
        raise PlanError(str(exc)) from None


def dataset_rows(params: Params, name: str) -> int:
    spec = params.datasets[name]
    if name in params.plan.dataset_rows:
        return params.plan.dataset_rows[name]
    if spec.n is not None:
        return spec.n
    raise PlanError(f"datasets.{name}: its number of training rows is unknown without downloading it; "
                    f"set plan.dataset_rows.{name} (or datasets.{name}.n)")


def mean_tokens(params: Params, name: str, max_length: int) -> float:
    """Mean tokens per example (prompt + response): ``plan.mean_tokens`` or, unknown, max_length
    (an upper bound, stated in the printout)."""
    return float(min(params.plan.mean_tokens.get(name, max_length), max_length))


def activation_bytes(config: dict[str, Any], tokens: int, checkpointing: bool) -> float:
    h = config["hidden_size"]
    ffn = config.get("intermediate_size", 4 * h)
    layers = config["num_hidden_layers"]
    vocab = config["vocab_size"]
    full_layer = 2 * (10 * h + 3 * ffn) * tokens
    if checkpointing:
        body = 2 * h * tokens * layers + full_layer
    else:
        body = full_layer * layers
    return body + 8 * vocab * tokens


def plan_arm(params: Params, arm: str, shapes: dict[str, tuple[int, ...]], config: dict[str, Any]) -> ArmPlan:
    cfg = params.plan
    t = params.arm_training(arm)
    gpus = 1 if cfg.engine == "single" else cfg.gpus
    per_step = t.micro_batch_size * gpus
    if t.global_batch_size % per_step:
        raise PlanError(f"arm {arm!r}: global batch {t.global_batch_size} is not a multiple of micro batch "
                        f"{t.micro_batch_size} x {gpus} GPU(s)")
    total, trainable, with_grad, note = parameter_counts(params, arm, shapes, config)
    spec = params.arms[arm]
    rows = sum(dataset_rows(params, d) for d in spec.datasets)
    rows += replay_count(rows, mitigation.replay_fraction(spec.strategy))  # the training core's own rounding
    tokens_epoch = sum(dataset_rows(params, d) * mean_tokens(params, d, t.max_length) for d in spec.datasets)
    tokens_epoch *= rows / max(sum(dataset_rows(params, d) for d in spec.datasets), 1)
    steps = t.max_steps or math.ceil(math.ceil(rows / t.global_batch_size) * t.epochs)
    tokens_total = tokens_epoch * t.epochs
    if t.max_steps:  # the Trainer runs exactly max_steps (epochs ignored): the examples they see
        tokens_total = tokens_epoch / max(rows, 1) * t.max_steps * t.global_batch_size
    shards = gpus if cfg.engine in SHARDED else 1
    weights = 4 * total / shards
    grads = 4 * with_grad / shards   # masked rows (head granularity) still get gradients and state
    optim = 8 * with_grad / shards
    acts = activation_bytes(config, t.micro_batch_size * t.max_length, t.activation_checkpointing)
    total_gib = (weights + grads + optim + acts) / GIB + cfg.overhead_gib
    base = total - trainable if mitigation.get(spec.strategy).lora is not None else total  # adapters on top
    flops_token = 2 * base + 2 * base + 2 * with_grad + (2 * base if t.activation_checkpointing else 0)
    flops = flops_token * tokens_total
    gpu_hours = flops / (cfg.gpu_peak_tflops * 1e12 * cfg.mfu) / 3600
    reported = cfg.reported_hours.get(arm)
    implied = flops / (reported * 3600 * gpus * cfg.gpu_peak_tflops * 1e12) if reported else None
    return ArmPlan(arm=arm, strategy=spec.strategy, total_params=total, trainable_params=trainable, rows=rows,
                   tokens_per_epoch=tokens_epoch, tokens_total=tokens_total, optimizer_steps=steps,
                   accumulation=t.global_batch_size // per_step, weights_gib=weights / GIB,
                   gradients_gib=grads / GIB, optimizer_gib=optim / GIB, activations_gib=acts / GIB,
                   overhead_gib=cfg.overhead_gib, total_gib=total_gib, gpu_memory_gib=cfg.gpu_memory_gib,
                   fits=total_gib <= cfg.gpu_memory_gib, flops=flops, gpu_hours=gpu_hours,
                   wall_hours=gpu_hours / gpus, reported_hours=reported, implied_mfu=implied,
                   optimizer_params=with_grad, notes=note)


def plan(params: Params, arms: Sequence[str] | None = None) -> list[ArmPlan]:
    """Plan every arm that trains (arms with no datasets are models used as is)."""
    arms = [a for a in (arms or params.arm_order()) if params.arms[a].datasets]
    roots = {}
    out = []
    for arm in arms:
        root, _ = model_spec_of_arm(params, arm)
        if root not in roots:
            config = architecture(params, root)
            roots[root] = (meta_shapes(config), config)
        out.append(plan_arm(params, arm, *roots[root]))
    return out


def refusals(plans: Sequence[ArmPlan]) -> list[str]:
    """One line per arm that does not fit, with the numbers."""
    return [f"arm {p.arm!r} ({p.strategy}) needs {p.total_gib:.1f} GiB per GPU but a GPU has "
            f"{p.gpu_memory_gib:.0f} GiB: over by {p.total_gib - p.gpu_memory_gib:.1f} GiB (weights "
            f"{p.weights_gib:.1f}, gradients {p.gradients_gib:.1f}, optimizer {p.optimizer_gib:.1f}, "
            f"activations {p.activations_gib:.1f}, overhead {p.overhead_gib:.1f}). Use more GPUs with "
            "fsdp/zero3, activation checkpointing, a smaller micro batch, or LoRA."
            for p in plans if not p.fits]


def table(plans: Sequence[ArmPlan]):
    import pandas as pd

    df = pd.DataFrame([asdict(p) for p in plans]).set_index("arm")
    return df


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cft_helpers.plan", description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", required=True)
    ap.add_argument("--engine", choices=["single", "ddp", "fsdp", "zero3"])
    ap.add_argument("--gpus", type=int)
    ap.add_argument("--gpu-memory", type=float, help="GiB per GPU")
    ap.add_argument("--arm", action="append", help="plan only these arms")
    ns = ap.parse_args(argv)
    overrides = {k: v for k, v in (("plan.engine", ns.engine), ("plan.gpus", ns.gpus),
                                   ("plan.gpu_memory_gib", ns.gpu_memory)) if v is not None}
    params = load_params(ns.params, overrides=overrides)
    c = params.plan
    plans = plan(params, ns.arm)
    df = table(plans)
    show = df[["strategy", "trainable_params", "rows", "tokens_total", "optimizer_steps", "weights_gib",
               "gradients_gib", "optimizer_gib", "activations_gib", "total_gib", "gpu_hours", "wall_hours"]].copy()
    show["trainable_params"] = (show["trainable_params"] / 1e9).round(3).astype(str) + "B"
    show["tokens_total"] = (show["tokens_total"] / 1e6).round(1).astype(str) + "M"
    if df["reported_hours"].notna().any():
        show["reported_h"] = df["reported_hours"]
        show["implied_mfu"] = df["implied_mfu"].round(3)
    print(f"{params.name}: {c.engine} on {c.gpus if c.engine != 'single' else 1} x {c.gpu_memory_gib:.0f} GiB, "
          f"{c.gpu_peak_tflops:.0f} TFLOP/s peak, MFU {c.mfu:.0%}")
    unknown = [d for d in params.datasets if d not in c.mean_tokens]
    if unknown:
        print(f"mean tokens per example unknown for {unknown}: max_length used (an upper bound)")
    print(show.round(2).to_string())
    for p in plans:
        if p.notes:
            print(f"note: arm {p.arm!r}: {p.notes} (trainable {p.trainable_params / 1e9:.3f}B, with "
                  f"optimizer state {p.optimizer_params / 1e9:.3f}B)")
    bad = refusals(plans)
    for line in bad:
        print("REFUSED:", line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
