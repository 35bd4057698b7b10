"""Where and how a process computes: torch threads, the device, and bf16 or fp32.

Training, evaluation and representations all start with :func:`configure_runtime`; the
training core asks :func:`use_bf16` for its precision (docs/ENGINEERING.md, "Speed knobs").

torch is imported inside the functions: importing this module (the book's scheduler does, through
the training core, to hash arms) stays free of torch's few seconds.
"""

from __future__ import annotations

from cft_helpers.params import Params, Training


def configure_runtime(params: Params) -> str:
    """Apply runtime settings (torch threads) and return the device: "cuda" or "cpu"."""
    import torch

    threads = params.runtime.thread_count()
    if threads:
        torch.set_num_threads(threads)
    if params.runtime.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but torch sees no CUDA device")
    if params.runtime.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return params.runtime.device


def use_bf16(training: Training, device: str) -> bool:
    """Whether an arm trains with bf16 autocast on ``device`` (``training.precision``)."""
    import torch

    if training.precision == "fp32":
        return False
    if training.precision == "bf16":
        if device != "cuda" and not cpu_has_native_bf16():
            # bf16 autocast on a CPU without native bf16 is ~2.6x slower than fp32
            # (docs/ENGINEERING.md, "Speed knobs")
            raise ValueError("training.precision 'bf16' needs a CUDA device or a CPU with native bf16 "
                             "(AVX512-BF16 or AMX); use 'auto' or 'fp32' on this CPU")
        return True
    # "auto" keeps fp32 on every CPU: the same params give the same numbers on any machine
    return device == "cuda" and torch.cuda.is_bf16_supported()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 autocast trains
    ~1.5x faster than fp32 (benchmarks/bench_training.py); elsewhere ~2.6x slower."""
    import torch

    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def release_memory() -> None:
    """Collect what finished work left in reference cycles (a trainer holds its model through
    its callbacks) and return the freed GPU memory to the device."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fsdp_mixed_precision(trainer) -> dict[str, str] | None:
    """Under FSDP with bf16, the mixed-precision policy this project trains with, set on the
    Trainer's FSDP plugin before ``train()`` wraps the model; returns it as text (for the arm's
    metrics), or None when the trainer is not under FSDP or not in bf16.

    accelerate (1.15) otherwise gives FSDP bf16 for parameters, gradient reduction *and* buffers:
    gradients would be reduce-scattered in bf16, and RoPE's ``inv_freq`` buffer cast to bf16,
    which it stays in fp32 on one GPU and in evaluation. Parameters are gathered in bf16 (as
    autocast would compute with them anyway); gradients are reduced in fp32; buffers stay fp32.
    Nothing resets it afterwards: accelerate sets its own policy only where none is set
    (``set_mixed_precision(override=False)``), and ``prepare_model`` reads the plugin as it is.
    (Not expressible in the launch config: accelerate reads no FSDP mixed-precision setting there.)
    """
    import torch

    if not getattr(trainer, "is_fsdp_enabled", False) or not trainer.args.bf16:
        return None
    plugin = trainer.accelerator.state.fsdp_plugin
    if plugin.fsdp_version == 1:
        from torch.distributed.fsdp import MixedPrecision

        plugin.mixed_precision_policy = MixedPrecision(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.float32)
    else:  # FSDP2 never casts buffers; it has no buffer dtype
        from torch.distributed.fsdp import MixedPrecisionPolicy

        plugin.mixed_precision_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    plugin.validate_mixed_precision_policy()
    return describe_fsdp_policy(plugin.mixed_precision_policy)


def describe_fsdp_policy(policy) -> dict[str, str]:
    """An FSDP mixed-precision policy's dtypes as text: {"param": "bfloat16", ...}."""
    out = {}
    for field, name in (("param_dtype", "param"), ("reduce_dtype", "reduce"), ("buffer_dtype", "buffer")):
        if hasattr(policy, field):
            value = getattr(policy, field)
            out[name] = str(value).replace("torch.", "") if value is not None else "unchanged"
    return out
