"""Dry-run planner: will each arm of a parameter set fit, and what will it cost, before launch?

    python -m cft_helpers.plan --params params/paper/mistral7b.yaml [--gpus 4 --engine fsdp] [--set KEY=VALUE]
    python -m cft_helpers.plan --calibration     # the activation fit against measured GPU runs

Nothing is downloaded: the architecture comes from the model's config (``plan.architecture`` in
the params for hub models; the checkpoint's config.json for local, converted or random-init
models) and the model is instantiated on the meta device, so parameter names and shapes are
exact. Trainable parameters per arm come from its strategy's entry (cft_helpers.mitigation), with
the same selection code the training core uses (LF_H1, LF_H2, Spectrum select the same *number*
of tensors whatever the scores; LoRA adds r x (in + out) per adapted linear layer). LF_H2 at
head granularity freezes rows with gradient masks: its trainable count leaves the masked rows
out, but their tensors still get gradients and AdamW state ("optimizer_params"; the arm's notes).

Memory per GPU, for this training core (fp32 master weights, bf16 autocast on GPU, AdamW), with
S shards (the GPUs under FSDP full shard or ZeRO-3, else 1), N all parameters, N_opt those with
AdamW state, N_grad those with a gradient buffer, T the tokens of one micro-batch:

    weights       4 B x N / S
    gradients     4 B x N_grad / S. FSDP (params/accelerate/fsdp.yaml: transformer-based wrap,
                  each decoder layer one unit, the rest - embeddings, final norm, LM head - the
                  root unit; use_orig_params) allocates the gradient of a unit's whole flat
                  parameter as soon as one tensor of it trains, so N_grad counts whole units:
                  Spectrum and LF_H2 (some matrices of a layer frozen, its norms training) get
                  the gradients of the whole model. LoRA under FSDP is wrapped by PEFT's policy
                  (transformers' update_fsdp_plugin_peft): each adapter matrix is its own unit
                  and the frozen base units get none. Elsewhere N_grad = N_opt, per tensor.
    optimizer     8 B x N_opt / S (two fp32 moments)
    optimizer temporaries (during the step, when activations are gone):
                  adamw_torch (foreach): 4 B x N_opt / S - torch's _multi_tensor_adamw makes one
                  fp32 list the size of the group's parameters (sqrt of the second moment) before
                  the update; one group holds nearly all of them. adamw_torch_fused: 0 (one
                  in-place kernel).
    bf16 weight copies  2 B x the matmul weights (all 2-D weights but the embedding): autocast
                  casts each fp32 weight per use and autograd keeps the cast for backward. One
                  GPU or DDP: all of them (autocast caches the casts of leaf parameters through
                  the forward). FSDP: none; its mixed-precision policy (runtime.fsdp_mixed_precision:
                  parameters gathered in bf16, gradients reduced in fp32, buffers kept fp32) hands
                  autocast weights that are bf16 already, and the gathered units are counted below.
    engine buffers  FSDP: 2 B x (root unit + 2 x the largest decoder unit) unsharded bf16
                  parameters (the root stays gathered through forward and backward; the current
                  unit and the one BACKWARD_PRE prefetches) + (2 + 4) B x the largest training
                  unit's unsharded gradient: computed in bf16, cast to fp32 for its
                  reduce-scatter. DDP: 4 B x N_grad (the reducer's gradient buckets). ZeRO-3: not
                  modelled.
    activations   T x per-token bytes, T = micro_batch x max_length: the collator pads each
                  micro-batch to its longest example and the peak is the micro-batch that holds
                  one of max_length (the worst case). With training.padding_free, T = micro_batch
                  x the arm's mean tokens per example (a typical micro-batch, not a bound).
                  Per token, a decoder layer saves 36h + 8f + 8kv bytes (h hidden, f MLP width,
                  kv = key/value heads x head dim): two RMSNorms' fp32 input and normalised
                  output (16h), a bf16 cast of its input per projection q, k, v, gate, up (10h),
                  q, k, v, their rotary copies, sdpa's output (8h + 8kv), o_proj's input (2h),
                  SwiGLU's gate, up, silu and product (8f); the LM head and loss 2h + 14 vocab
                  (bf16 logits, their fp32 copy, log-softmax, its gradient). Without
                  checkpointing: layers x that; with it: 4 B x h per layer (the fp32 residual
                  stream saved at each layer) + one layer recomputed + the LM head and loss.
                  The layer and loss terms are multiplied by ACTIVATION_SCALE, fitted on the
                  project's measured single-GPU H100 peaks (calibrate(); each run predicted from
                  the others by ``--calibration``: within 11% here). No sequence-squared term:
                  sdpa / flash attention.
    overhead      ``plan.overhead_gib`` (CUDA context, allocator fragmentation: the measured
                  peaks are torch.cuda.max_memory_allocated, which counts neither)

    total = weights + gradients + optimizer + overhead
            + max(activations + bf16 weight copies + engine buffers, optimizer temporaries)

Compute per token: 2N forward, 2N backward through activations, 2 N_opt weight gradients (N:
the base model under LoRA). Model FLOPs (the MFU convention: 6N for full fine-tuning) stop
there; hardware FLOPs add 2N when activations are recomputed. Attention's own FLOPs are left
out (small at these lengths), and so are the padded positions a padded micro-batch computes.

    compute GPU-hours   hardware FLOPs / (peak x plan.hfu)
    checkpoint hours    saves x (4 B x N + 8 B x N_opt) + a final 4 B x N model, over
                        plan.checkpoint_write_gbps; saves = a resumable checkpoint every
                        save_steps steps and one at the last step (the Trainer's rule)
    wall hours          compute GPU-hours / GPUs + checkpoint hours; GPU-hours = wall x GPUs

Not modelled: LoRA's own activations (each adapter keeps a dropout copy of its input and an
r-wide intermediate), ZeRO-3's buffers, FSDP's gradient reduce-scatter output beyond one unit.

Against a reported time (``plan.reported_hours``) the planner gives the utilisation that time
implies (model and hardware FLOPs over reported hours x GPUs x peak) and flags it as implausible
above ``plan.max_plausible_hfu``: the tokens planned are then likely more than were trained.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from cft_helpers import freezing, mitigation
from cft_helpers.models import model_checkpoint
from cft_helpers.params import LocalModel, Params, RandomInitModel, load_params, parse_overrides
from cft_helpers.replay import replay_count

GIB = 1024 ** 3
SHARDED = ("fsdp", "zero3")
FP32, BF16 = 4, 2
ROOT_UNIT = "<root>"

# Multiplier on the structural per-token activation bytes (layers and loss), fitted on every
# usable run of benchmarks/results/gpu_train_check_h100.json. Regenerate after new measurements:
#     python -m cft_helpers.plan --calibration
# (tests/test_plan.py checks that it matches the committed measurements).
ACTIVATION_SCALE = 0.900
MEASURED = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "gpu_train_check_h100.json"
# Tokens of the peak micro-batch of the measured runs on padded built-in rows (micro x the longest
# example of the longest micro-batch; their JSON records non-padding tokens only), replayed on
# CPU with the same data, tokenizer and seeded sampler: python -m benchmarks.padded_tokens
PADDED_PEAK_TOKENS = {"small": 6528, "1b": 6528}


class PlanError(ValueError):
    """A plan that cannot run as asked: the message gives the numbers."""


@dataclass
class ArmPlan:
    arm: str
    strategy: str
    engine: str
    total_params: int
    trainable_params: int
    rows: int
    tokens_per_epoch: float
    tokens_total: float
    optimizer_steps: int
    accumulation: int
    activation_tokens: int          # tokens of the micro-batch the activation peak is planned for
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    optimizer_temp_gib: float
    cast_weights_gib: float         # bf16 autocast copies of the matmul weights
    engine_buffers_gib: float       # FSDP unsharded units / DDP buckets
    activations_gib: float
    overhead_gib: float
    total_gib: float
    gpu_memory_gib: float
    fits: bool
    model_flops: float              # 6N convention: no recomputation
    hardware_flops: float           # what the GPUs execute: recomputation included
    compute_gpu_hours: float
    checkpoint_saves: int
    checkpoint_gb: float            # written over the run, 1e9 B
    checkpoint_hours: float
    gpu_hours: float
    wall_hours: float
    reported_hours: float | None = None
    implied_mfu: float | None = None   # model FLOPs / (reported hours x GPUs x peak)
    implied_hfu: float | None = None   # hardware FLOPs / (reported hours x GPUs x peak)
    implausible: bool = False          # implied_hfu above plan.max_plausible_hfu
    # values with AdamW state: trainable_params plus rows frozen by gradient masks
    optimizer_params: int | None = None
    # values with a gradient buffer: optimizer_params, or whole FSDP units where any tensor trains
    gradient_params: int | None = None
    notes: str = ""


# --------------------------------------------------------------------------- architecture


def architecture(params: Params, model: str) -> dict[str, Any]:
    """The transformers config (as a dict) of a models: entry, without downloading weights."""
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


def unit_of(name: str) -> str:
    """The FSDP unit of a parameter under the transformer-based wrap: its decoder layer, or the root."""
    layer = freezing.layer_of(name)
    return ROOT_UNIT if layer is None else f"layers.{layer}"


def unit_sizes(shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n, s in shapes.items():
        out[unit_of(n)] = out.get(unit_of(n), 0) + math.prod(s)
    return out


def gradient_tensors(params: Params, arm: str, shapes: dict[str, tuple[int, ...]],
                     config: dict[str, Any] | None) -> set[str] | None:
    """Names of the model's tensors that require gradients under the arm's strategy; None for
    LoRA (the base model is frozen, the adapters train)."""
    entry = mitigation.of_arm(params, arm)
    if entry.lora is not None:
        return None
    if entry.freeze is None:
        return set(shapes)
    # The estimate stands in for score-dependent choices (Spectrum, LF_H2): the same number of
    # tensors per type; a layer's norms train either way, so every such layer keeps a gradient.
    fn = entry.estimate or entry.freeze
    try:
        plan = fn(mitigation.FreezeInputs(params, arm, list(shapes), config, progress=False))
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    return set(plan.trainable)


def gradient_params(engine: str, shapes: dict[str, tuple[int, ...]], trains: set[str] | None,
                    with_grad: int) -> int:
    """Values holding a gradient buffer (all shards together). Under FSDP every unit with one
    trainable tensor allocates its whole flat parameter's gradient; LoRA's adapters are units of
    their own (PEFT's wrap policy), so LoRA keeps its adapter-only count."""
    if engine != "fsdp" or trains is None:
        return with_grad
    units = unit_sizes(shapes)
    return sum(units[u] for u in {unit_of(n) for n in trains})


# --------------------------------------------------------------------------- data


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


# --------------------------------------------------------------------------- activations


def _dims(config: dict[str, Any]) -> tuple[int, int, int, int, int]:
    h = config["hidden_size"]
    heads = config.get("num_attention_heads", 1)
    head_dim = config.get("head_dim") or h // heads
    kv = config.get("num_key_value_heads", heads) * head_dim
    return h, config.get("intermediate_size", 4 * h), kv, config["num_hidden_layers"], config["vocab_size"]


def layer_token_bytes(config: dict[str, Any]) -> float:
    """Bytes one decoder layer saves for backward per token (bf16 autocast, fp32 residual
    stream), before calibration: the module docstring's 36h + 8f + 8kv."""
    h, f, kv, _, _ = _dims(config)
    return 36 * h + 8 * f + 8 * kv


def loss_token_bytes(config: dict[str, Any]) -> float:
    """LM head and loss per token: its input's bf16 cast, bf16 logits, their fp32 copy, the
    log-softmax and its gradient."""
    h, _, _, _, vocab = _dims(config)
    return 2 * h + 14 * vocab


def structural_token_bytes(config: dict[str, Any]) -> float:
    """Per-token bytes without checkpointing that ACTIVATION_SCALE multiplies."""
    return _dims(config)[3] * layer_token_bytes(config) + loss_token_bytes(config)


def activation_bytes(config: dict[str, Any], tokens: int, checkpointing: bool,
                     scale: float = ACTIVATION_SCALE) -> float:
    h, _, _, layers, _ = _dims(config)
    if checkpointing:  # the saved layer inputs are exact; the recomputed layer and the loss are fitted
        per_token = FP32 * h * layers + scale * (layer_token_bytes(config) + loss_token_bytes(config))
    else:
        per_token = scale * structural_token_bytes(config)
    return per_token * tokens


def matmul_params(shapes: dict[str, tuple[int, ...]], names: set[str] | None = None) -> int:
    """Values of the weights autocast casts to bf16: 2-D weights other than the embeddings."""
    return sum(math.prod(s) for n, s in shapes.items()
               if len(s) == 2 and "embed" not in n and (names is None or n in names))


# --------------------------------------------------------------------------- memory


@dataclass
class Memory:
    weights: float
    gradients: float
    optimizer: float
    optimizer_temp: float
    cast_weights: float
    engine_buffers: float
    activations: float
    overhead: float

    @property
    def total(self) -> float:
        return (self.weights + self.gradients + self.optimizer + self.overhead
                + max(self.activations + self.cast_weights + self.engine_buffers, self.optimizer_temp))


def memory(config: dict[str, Any], shapes: dict[str, tuple[int, ...]], *, engine: str, gpus: int,
           grad_params: int, opt_params: int, trains: set[str] | None, optimizer: str, tokens: int,
           checkpointing: bool, overhead_gib: float, total_params: int | None = None,
           scale: float = ACTIVATION_SCALE) -> Memory:
    """Bytes per GPU of each part (the module docstring's formulas)."""
    shards = gpus if engine in SHARDED else 1
    total = total_params if total_params is not None else sum(math.prod(s) for s in shapes.values())
    temp = FP32 * opt_params / shards if optimizer == "adamw_torch" else 0.0  # foreach: one fp32 list
    units = unit_sizes(shapes)
    layers = {u: n for u, n in units.items() if u != ROOT_UNIT}
    largest = max(layers.values(), default=0)
    if engine == "fsdp":
        cast = 0.0            # FSDP gathers the weights in bf16 already: autocast copies nothing
    elif engine in SHARDED and checkpointing:
        # one decoder layer recomputed at a time, and the LM head's cast kept for backward
        big = max(layers, key=layers.get) if layers else None
        cast = BF16 * matmul_params(shapes, {n for n in shapes if unit_of(n) == big or "lm_head" in n})
    else:
        cast = BF16 * matmul_params(shapes)
    if engine == "fsdp":
        if trains is None:    # LoRA: adapters are their own units; base units carry no gradient
            grad_unit = 0
        else:
            grad_unit = max((units[unit_of(n)] for n in trains if unit_of(n) != ROOT_UNIT), default=0)
        # bf16 gathered units; a unit's gradient in bf16 and its fp32 cast for the reduction
        buffers = BF16 * (units.get(ROOT_UNIT, 0) + 2 * largest) + (BF16 + FP32) * grad_unit
    elif engine == "ddp":
        buffers = FP32 * grad_params
    else:
        buffers = 0.0
    return Memory(weights=FP32 * total / shards, gradients=FP32 * grad_params / shards,
                  optimizer=2 * FP32 * opt_params / shards, optimizer_temp=temp, cast_weights=cast,
                  engine_buffers=buffers, activations=activation_bytes(config, tokens, checkpointing, scale),
                  overhead=overhead_gib * GIB)


# --------------------------------------------------------------------------- one arm


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
    entry = mitigation.get(spec.strategy)
    own_rows = sum(dataset_rows(params, d) for d in spec.datasets)
    rows = own_rows + replay_count(own_rows, mitigation.replay_fraction(spec.strategy))  # the core's rounding
    tokens_epoch = sum(dataset_rows(params, d) * mean_tokens(params, d, t.max_length) for d in spec.datasets)
    mean_example = tokens_epoch / max(own_rows, 1)
    tokens_epoch *= rows / max(own_rows, 1)   # replay rows at the arm's mean length
    steps = t.max_steps or math.ceil(math.ceil(rows / t.global_batch_size) * t.epochs)
    tokens_total = tokens_epoch * t.epochs
    if t.max_steps:  # the Trainer runs exactly max_steps (epochs ignored): the examples they see
        tokens_total = tokens_epoch / max(rows, 1) * t.max_steps * t.global_batch_size
    # Padded micro-batches (the presets) peak at the one holding a max_length example.
    act_tokens = t.micro_batch_size * (math.ceil(mean_example) if t.padding_free else t.max_length)
    trains = gradient_tensors(params, arm, shapes, config)
    grads = gradient_params(cfg.engine, shapes, trains, with_grad)
    base = total - trainable if entry.lora is not None else total  # adapters on top of the base model
    mem = memory(config, shapes, engine=cfg.engine, gpus=gpus, grad_params=grads, opt_params=with_grad,
                 trains=trains, optimizer=t.optimizer, tokens=act_tokens,
                 checkpointing=t.activation_checkpointing, overhead_gib=cfg.overhead_gib, total_params=total)
    total_gib = mem.total / GIB
    model_flops = (2 * base + 2 * base + 2 * with_grad) * tokens_total
    hardware_flops = model_flops + (2 * base * tokens_total if t.activation_checkpointing else 0)
    peak = cfg.gpu_peak_tflops * 1e12
    compute_gpu_hours = hardware_flops / (peak * cfg.hfu) / 3600
    saves = steps // t.save_steps + (1 if steps % t.save_steps else 0)
    written = saves * (FP32 * total + 2 * FP32 * with_grad) + FP32 * base   # + the final model
    ckpt_hours = written / (cfg.checkpoint_write_gbps * 1e9) / 3600
    wall = compute_gpu_hours / gpus + ckpt_hours
    reported = cfg.reported_hours.get(arm)
    denom = reported * 3600 * gpus * peak if reported else None
    implied_hfu = hardware_flops / denom if denom else None
    return ArmPlan(arm=arm, strategy=spec.strategy, engine=cfg.engine, total_params=total,
                   trainable_params=trainable, rows=rows, tokens_per_epoch=tokens_epoch, tokens_total=tokens_total,
                   optimizer_steps=steps, accumulation=t.global_batch_size // per_step,
                   activation_tokens=act_tokens, weights_gib=mem.weights / GIB, gradients_gib=mem.gradients / GIB,
                   optimizer_gib=mem.optimizer / GIB, optimizer_temp_gib=mem.optimizer_temp / GIB,
                   cast_weights_gib=mem.cast_weights / GIB, engine_buffers_gib=mem.engine_buffers / GIB,
                   activations_gib=mem.activations / GIB, overhead_gib=cfg.overhead_gib, total_gib=total_gib,
                   gpu_memory_gib=cfg.gpu_memory_gib, fits=total_gib <= cfg.gpu_memory_gib,
                   model_flops=model_flops, hardware_flops=hardware_flops, compute_gpu_hours=compute_gpu_hours,
                   checkpoint_saves=saves, checkpoint_gb=written / 1e9, checkpoint_hours=ckpt_hours,
                   gpu_hours=wall * gpus, wall_hours=wall, reported_hours=reported,
                   implied_mfu=model_flops / denom if denom else None, implied_hfu=implied_hfu,
                   implausible=bool(implied_hfu is not None and implied_hfu > cfg.max_plausible_hfu),
                   optimizer_params=with_grad, gradient_params=grads, notes=note)


def plan(params: Params, arms: Sequence[str] | None = None) -> list[ArmPlan]:
    """Plan every arm that trains (arms with no datasets are models used as is)."""
    arms = [a for a in (arms or params.arm_order()) if params.arms[a].datasets]
    roots = {}
    out = []
    for arm in arms:
        root = params.root_model(arm)
        if root not in roots:
            config = architecture(params, root)
            roots[root] = (meta_shapes(config), config)
        out.append(plan_arm(params, arm, *roots[root]))
    return out


def refusals(plans: Sequence[ArmPlan]) -> list[str]:
    """One line per arm that does not fit, with the numbers."""
    return [f"arm {p.arm!r} ({p.strategy}) needs {p.total_gib:.1f} GiB per GPU but a GPU has "
            f"{p.gpu_memory_gib:.0f} GiB: over by {p.total_gib - p.gpu_memory_gib:.1f} GiB (weights "
            f"{p.weights_gib:.1f} + gradients {p.gradients_gib:.1f} + optimizer {p.optimizer_gib:.1f} + overhead "
            f"{p.overhead_gib:.1f} + the larger of activations {p.activations_gib:.1f} for {p.activation_tokens} "
            f"tokens + bf16 weight copies {p.cast_weights_gib:.1f} + {p.engine} buffers {p.engine_buffers_gib:.1f} "
            f"and optimizer temporaries {p.optimizer_temp_gib:.1f}). Use more GPUs with fsdp/zero3, "
            "activation checkpointing, a smaller micro batch, or LoRA."
            for p in plans if not p.fits]


def warnings_of(plans: Sequence[ArmPlan], max_hfu: float) -> list[str]:
    """One line per arm whose reported hours imply an implausible utilisation."""
    return [f"arm {p.arm!r}: the reported {p.reported_hours:g} h imply hardware FLOPs utilisation "
            f"{p.implied_hfu:.2f} (model FLOPs utilisation {p.implied_mfu:.2f}) of peak, above "
            f"{max_hfu:g}: the planned {p.tokens_total / 1e6:.0f}M tokens (rows x mean_tokens x epochs) are "
            "likely more than that run trained, or the hours are not comparable"
            for p in plans if p.implausible]


def table(plans: Sequence[ArmPlan]):
    import pandas as pd

    return pd.DataFrame([asdict(p) for p in plans]).set_index("arm")


# --------------------------------------------------------------------------- calibration


@dataclass
class MeasuredRun:
    """One single-GPU run of benchmarks/gpu_train_check.py (no checkpointing, bf16 autocast)."""

    name: str
    config: dict[str, Any]
    params: int
    tokens: int | None        # tokens of the peak micro-batch; None when unknown (padding)
    optimizer: str
    peak_gib: float
    excluded: str | None = None   # why the fit leaves it out


@dataclass
class Calibration:
    scale: float                                # fitted on every usable run
    runs: list[dict[str, Any]] = field(default_factory=list)   # per usable run, leave-one-out
    excluded: dict[str, str] = field(default_factory=dict)

    @property
    def max_abs_error(self) -> float:
        return max(abs(r["loo_error"]) for r in self.runs)


def load_measured_runs(path: str | Path = MEASURED, sizes: dict[str, dict] | None = None,
                       padded_tokens: dict[str, int] | None = None) -> list[MeasuredRun]:
    """The runs of a gpu_train_check JSON, their architecture from benchmarks/gpu_train_check.py
    SIZES (untied random-init Llamas; the vocabulary recovered from the parameter count). Runs on
    long rows hold micro x max_length tokens (every row truncated, no padding); runs on padded
    rows the tokens of ``padded_tokens`` (default PADDED_PEAK_TOKENS), or they are left out."""
    padded_tokens = PADDED_PEAK_TOKENS if padded_tokens is None else padded_tokens
    if sizes is None:
        from benchmarks.gpu_train_check import SIZES as sizes
    out = []
    for r in json.loads(Path(path).read_text()):
        size = dict(sizes[r["size"]])
        h, layers = size["hidden_size"], size["num_hidden_layers"]
        probe = {"model_type": "llama", **size, "vocab_size": 1, "bos_token_id": None, "eos_token_id": None}
        per_layer_and_norm = sum(math.prod(s) for s in meta_shapes(probe).values()) - 2 * h
        vocab, rest = divmod(r["params"] - per_layer_and_norm, 2 * h)   # embeddings + LM head, untied
        if rest:
            raise ValueError(f"run {r['run']!r}: {r['params']} parameters do not fit size {r['size']!r} "
                             f"({layers} layers of hidden {h}) with an untied vocabulary")
        config = {"model_type": "llama", **size, "vocab_size": vocab}
        why = None
        if not r.get("bf16"):
            why = "not bf16"
        elif r.get("compile"):
            why = "torch.compile fuses kernels and frees intermediates: not the eager activations planned"
        tokens = r["micro"] * r["max_length"] if r.get("rows") == "long" else padded_tokens.get(r["run"])
        if why is None and tokens is None:
            why = ("rows padded to the longest of each micro-batch, whose length the run does not record "
                   "(python -m benchmarks.padded_tokens replays it)")
        out.append(MeasuredRun(r["run"], config, r["params"], tokens, r["optimizer"], r["peak_mem_gib"], why))
    return out


def _single_gpu(run: MeasuredRun, scale: float) -> Memory:
    shapes = meta_shapes(run.config)
    return memory(run.config, shapes, engine="single", gpus=1, grad_params=run.params, opt_params=run.params,
                  trains=set(shapes), optimizer=run.optimizer, tokens=run.tokens or 0, checkpointing=False,
                  overhead_gib=0.0, scale=scale)   # max_memory_allocated: no context, no allocator cache


def calibrate(runs: Sequence[MeasuredRun]) -> Calibration:
    """Fit ACTIVATION_SCALE: per run, activations = peak - (weights + gradients + optimizer state
    + bf16 weight copies), a least-squares scale (through zero) of the structural per-token bytes
    x tokens; each run predicted from the others (leave-one-out) and from all."""
    usable, excluded = [], {r.name: r.excluded for r in runs if r.excluded}
    for r in runs:
        if r.excluded:
            continue
        m = _single_gpu(r, 0.0)
        static = m.weights + m.gradients + m.optimizer + m.cast_weights
        if r.peak_gib * GIB <= static + m.optimizer_temp:   # peak in the optimizer step: no activation signal
            excluded[r.name] = "its peak is the optimizer step, not the activations"
            continue
        usable.append((r, static, r.peak_gib * GIB - static, r.tokens * structural_token_bytes(r.config)))
    if len(usable) < 2:
        raise ValueError(f"calibration needs at least two usable runs (a fit and a held-out one); "
                         f"excluded: {excluded}")

    def fit(rows) -> float:
        return sum(a * x for _, _, a, x in rows) / sum(x * x for _, _, _, x in rows)

    out = []
    for i, (r, static, act, x) in enumerate(usable):
        k = fit(usable[:i] + usable[i + 1:])
        predicted = _single_gpu(r, k).total
        out.append({"run": r.name, "tokens": r.tokens, "measured_gib": r.peak_gib, "static_gib": static / GIB,
                    "activations_gib": act / GIB, "structural_gib": x / GIB, "loo_scale": k,
                    "predicted_gib": predicted / GIB, "loo_error": predicted / (r.peak_gib * GIB) - 1,
                    "activation_error": k * x / act - 1})
    return Calibration(fit(usable), out, excluded)


def print_calibration(cal: Calibration, path: str | Path) -> None:
    print(f"activation calibration on {path}")
    print(f"{'run':16} {'tokens':>7} {'peak GiB':>9} {'static':>7} {'acts':>7} {'fit k':>6} "
          f"{'predicted':>9} {'error':>7} {'acts err':>8}")
    for r in cal.runs:
        print(f"{r['run']:16} {r['tokens']:7} {r['measured_gib']:9.2f} {r['static_gib']:7.2f} "
              f"{r['activations_gib']:7.2f} {r['loo_scale']:6.3f} {r['predicted_gib']:9.2f} "
              f"{r['loo_error']:+7.1%} {r['activation_error']:+8.1%}")
    for name, why in cal.excluded.items():
        print(f"left out {name}: {why}")
    print(f"ACTIVATION_SCALE fitted on all {len(cal.runs)} usable runs: {cal.scale:.3f} "
          f"(in code: {ACTIVATION_SCALE}); held-out errors are each run predicted from the others")


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cft_helpers.plan", description=__doc__.split("\n\n")[0])
    ap.add_argument("--params")
    ap.add_argument("--engine", choices=["single", "ddp", "fsdp", "zero3"])
    ap.add_argument("--gpus", type=int)
    ap.add_argument("--gpu-memory", type=float, help="GiB per GPU")
    ap.add_argument("--arm", action="append", help="plan only these arms")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a params key (YAML value), e.g. datasets.mopenorca.path=ORG/NAME; repeatable")
    ap.add_argument("--calibration", nargs="?", const=str(MEASURED), metavar="JSON",
                    help="fit the activation scale on measured runs (default: the committed H100 runs) and print it")
    ns = ap.parse_args(argv)
    if ns.calibration:
        print_calibration(calibrate(load_measured_runs(ns.calibration)), ns.calibration)
        if not ns.params:
            return 0
    if not ns.params:
        ap.error("--params is required (or --calibration alone)")
    overrides = parse_overrides(ns.overrides)
    overrides.update({k: v for k, v in (("plan.engine", ns.engine), ("plan.gpus", ns.gpus),
                                        ("plan.gpu_memory_gib", ns.gpu_memory)) if v is not None})
    params = load_params(ns.params, overrides=overrides)
    c = params.plan
    plans = plan(params, ns.arm)
    df = table(plans)
    show = df[["strategy", "trainable_params", "tokens_total", "optimizer_steps", "weights_gib", "gradients_gib",
               "optimizer_gib", "optimizer_temp_gib", "activations_gib", "cast_weights_gib", "engine_buffers_gib",
               "total_gib", "compute_gpu_hours", "checkpoint_hours", "wall_hours"]].copy()
    show.columns = ["strategy", "train", "tokens", "steps", "weights", "grads", "adam", "adam_tmp", "acts",
                    "bf16_w", "buffers", "total", "compute_gpu_h", "ckpt_h", "wall_h"]
    show["train"] = (show["train"] / 1e9).round(3).astype(str) + "B"
    show["tokens"] = (show["tokens"] / 1e6).round(1).astype(str) + "M"
    if df["reported_hours"].notna().any():
        show["reported_h"] = df["reported_hours"]
        show["implied_hfu"] = df["implied_hfu"].round(2)
        show["implied_mfu"] = df["implied_mfu"].round(2)
    gpus = c.gpus if c.engine != "single" else 1
    print(f"{params.name}: {c.engine} on {gpus} x {c.gpu_memory_gib:.0f} GiB, {c.gpu_peak_tflops:.0f} TFLOP/s "
          f"peak, hardware FLOPs utilisation assumed {c.hfu:.0%} (recomputation counted), checkpoints written "
          f"at {c.checkpoint_write_gbps:g} GB/s")
    print("memory in GiB per GPU; total = weights + grads + adam + overhead + max(acts + bf16_w + buffers, "
          "adam_tmp); implied_hfu / implied_mfu: the FLOPs, with / without recomputation, over the reported "
          "hours x GPUs x peak")
    padded = sorted({p.activation_tokens for p in plans})
    print(f"activations planned for micro-batches of {padded} tokens: micro_batch x max_length (each micro-batch "
          "is padded to its longest example; the peak is one holding a max_length example) unless "
          "training.padding_free (micro_batch x mean tokens)")
    unknown = [d for d in params.datasets if d not in c.mean_tokens]
    if unknown:
        print(f"mean tokens per example unknown for {unknown}: max_length used (an upper bound)")
    import pandas as pd

    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(show.round(2).to_string())
    for p in plans:
        if p.notes:
            print(f"note: arm {p.arm!r}: {p.notes} (trainable {p.trainable_params / 1e9:.3f}B, with "
                  f"optimizer state {p.optimizer_params / 1e9:.3f}B)")
    for line in warnings_of(plans, c.max_plausible_hfu):
        print("WARNING (implausible):", line)
    bad = refusals(plans)
    for line in bad:
        print("REFUSED:", line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
