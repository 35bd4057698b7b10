"""The trained model's weights: gathered whole under every engine, saved, merged and checked.

Under FSDP or ZeRO-3 a process holds only its shards, and under DeepSpeed the model's own tensors
are the engine's low-precision copies; the final checkpoint is therefore written from a state
dict gathered in fp32 (:func:`final_state_dict`), never from the model's tensors. LoRA's merge
is built from files on the main process (:func:`merge_adapter`), the same under every engine.
docs/CLUSTER.md, "Precision under FSDP", says what each engine keeps in which precision.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from cft_helpers import freezing
from cft_helpers.models import load_model


def parameter_counts(model, masked_params: int | None = None) -> dict[str, int]:
    """trainable_params and total_params of a model about to train (ZeRO-3's partitioned
    parameters counted whole: freezing.values); with ``masked_params`` (LF_H2 at head
    granularity: rows frozen by gradient masks) also optimizer_params, the values the optimizer
    updates: a masked tensor holds AdamW state for all its rows (optimizer memory, checkpoint
    size) but only its unmasked rows train."""
    updated = sum(freezing.values(p) for p in model.parameters() if p.requires_grad)
    out = {"optimizer_params": updated} if masked_params is not None else {}
    return {**out, "trainable_params": updated - (masked_params or 0),
            "total_params": sum(freezing.values(p) for p in model.parameters())}


@contextlib.contextmanager
def whole_model_loading():
    """Within it, a model loads whole in this process, whatever the engine of the launch: not
    partitioned by a ZeRO-3 config that a Trainer registered with transformers (zero.Init, whose
    loading is a collective the other processes are not in), and not empty as FSDP's
    cpu_ram_efficient_loading leaves it on ranks other than 0. Both are restored after."""
    import os

    from transformers.integrations import deepspeed as hf_deepspeed

    registered = hf_deepspeed._hf_deepspeed_config_weak_ref
    saved = os.environ.get("FSDP_CPU_RAM_EFFICIENT_LOADING")
    hf_deepspeed.unset_hf_deepspeed_config()
    os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "false"
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = registered
        if saved is None:
            del os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"]
        else:
            os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = saved


def generation_model(start: Path, device: str, trust_remote_code: bool = False):
    """The start checkpoint in fp32 on ``device``, for GR's replay answers: whole in every process
    (each generates its own share of the prompts), loaded straight onto this process's GPU."""
    placement = None
    if device == "cuda":
        import torch

        placement = f"cuda:{torch.cuda.current_device()}"  # (the launch set each process's GPU)
    with whole_model_loading():
        return load_model(start, dtype="float32", trust_remote_code=trust_remote_code, device=placement)


def final_state_dict(trainer, start: Path, is_main: bool = True, trained_only: bool = False) -> dict[str, Any]:
    """The trained model's full state dict in fp32, gathered from every process (call it in all;
    only the main process, ``is_main``, keeps the tensors: the others get an empty dict).
    Under DeepSpeed, ``trained_only`` (LoRA: the adapter is saved, and merged from files) leaves
    the frozen tensors out instead of reading the whole base model only for PEFT to drop it.

    Under DeepSpeed the model's own tensors are the engine's low-precision copies (bf16 under
    ZeRO-3), so the trained tensors come from the optimizer's fp32 masters and the frozen ones,
    which never moved, from the start checkpoint, bit for bit. Elsewhere (one process, DDP, FSDP
    with a full state dict) accelerate gathers the fp32 parameters themselves."""
    import torch

    if not getattr(trainer, "is_deepspeed_enabled", False):
        state = trainer.accelerator.get_state_dict(trainer.model)  # (a collective: every process)
        return {k: v.float() if v.is_floating_point() else v for k, v in (state or {}).items()} if is_main else {}
    from deepspeed.utils import safe_get_full_fp32_param  # present wherever DeepSpeed runs

    from cft_helpers.trainer_callbacks import start_checkpoint_name

    model = trainer.accelerator.unwrap_model(trainer.model)
    state = {}
    frozen: dict[str, str] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            full = safe_get_full_fp32_param(p)  # a collective under ZeRO-3: every process calls it
            if is_main:
                state[name] = full.detach().cpu()
        elif is_main and not trained_only:  # (LoRA: a base weight's name in the start checkpoint)
            frozen[name] = start_checkpoint_name(name)
    if frozen:
        found = _checkpoint_tensors(start, set(frozen.values()))
        missing = sorted(k for k in frozen.values() if k not in found)
        if missing:
            raise RuntimeError(f"frozen tensors {missing[:3]} are not in the start checkpoint {start}")
        state.update({name: found[key].to(torch.float32) for name, key in frozen.items()})
    return state


def _checkpoint_tensors(folder: Path, names: set[str]) -> dict[str, Any]:
    """The tensors ``names`` of a safetensors checkpoint, read one by one (not the whole file)."""
    from safetensors import safe_open

    out: dict[str, Any] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            for key in names & set(fh.keys()):
                out[key] = fh.get_tensor(key)
    return out


def save_gathered(model, state: dict[str, Any], out: Path, start: Path, adapter_dir: Path | None = None,
                  trust_remote_code: bool = False) -> None:
    """Write the final model from a gathered state dict (:func:`final_state_dict`), never from
    ``model``'s own tensors, which under FSDP or ZeRO-3 are this process's shards only. With
    ``adapter_dir`` (LoRA) the adapter goes there and ``out`` gets the start model with the
    adapter merged."""
    if adapter_dir is None:
        model.save_pretrained(str(out), state_dict=state)
        return
    model.save_pretrained(str(adapter_dir), state_dict=state)  # PEFT keeps the adapter's tensors
    merge_adapter(start, adapter_dir, trust_remote_code).save_pretrained(str(out))


def merge_adapter(start: Path, adapter_dir: Path, trust_remote_code: bool = False):
    """The start model with a saved LoRA adapter merged into its weights, built on the CPU of the
    main process from files alone: the same under every engine (under FSDP or ZeRO-3 the trained
    model's own merge_and_unload would need the whole model on one process)."""
    from peft import PeftModel

    with whole_model_loading():  # (the main process alone, after the launch's training)
        base = load_model(start, dtype="float32", trust_remote_code=trust_remote_code)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def saved_dtypes(folder: Path) -> list[str]:
    """The dtypes of the floating-point tensors of a safetensors checkpoint (header only)."""
    import struct

    found = set()
    for f in Path(folder).glob("*.safetensors"):
        with f.open("rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        found |= {v["dtype"] for k, v in header.items() if k != "__metadata__" and v["dtype"].startswith(("F", "BF"))}
    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
    return sorted(names.get(d, d) for d in found)
