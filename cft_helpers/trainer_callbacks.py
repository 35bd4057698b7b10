"""Trainer callbacks of the training core (cft_helpers.train).

They subclass transformers' TrainerCallback, whose import costs torch's few seconds; the training
core imports this module when it builds a trainer, so that importing the training core (the
book's scheduler does, to hash arms) stays free of torch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback

from cft_helpers import freezing
from cft_helpers.freezing import FreezePlan
from cft_helpers.progress import StageProgress
from cft_helpers.files import atomic_write_json, update_json


class LossesBeforeTraining(TrainerCallback):
    """The evaluation sets' losses at the start of ``train()``, before any step.

    Evaluates the sets in ``missing`` ({name: cache key}) once, on the first train begin, with
    ``evaluate`` (names -> {name: loss}), and adds them to ``losses`` and to the run store's cache
    (``cache``: {key: loss}). When ``files`` (cache file, losses file) is given (the main process)
    it writes the cache and the arm's losses (read back when a killed run resumes). ``seconds`` is
    the time it took, which is not training time."""

    def __init__(self, evaluate: Callable[[list[str]], dict[str, float]], losses: dict, missing: dict[str, str],
                 cache: dict, files: tuple[Path, Path] | None):
        self.evaluate, self.losses, self.missing, self.cache, self.files = evaluate, losses, missing, cache, files
        self.seconds = 0.0
        self.done = False

    def on_train_begin(self, args, state, control, **kwargs):
        if self.done:
            return
        t0 = time.perf_counter()
        if self.missing:
            got = self.evaluate(list(self.missing))
            self.losses.update(got)
            self.cache.update({self.missing[name]: value for name, value in got.items()})
        if self.files is not None:
            cache_file, losses_file = self.files
            if self.missing:  # merged into the file: arms trained in parallel share it
                update_json(cache_file, {k: self.cache[k] for k in self.missing.values()})
            atomic_write_json(losses_file, self.losses)
        self.done = True
        self.seconds = time.perf_counter() - t0


class MaskedRowsCheck(TrainerCallback):
    """When training ends, checks that the rows frozen by gradient masks (LF_H2 at head
    granularity) are still bit-identical to the ``start`` checkpoint, and fails the arm if any moved."""

    def __init__(self, model, plan: FreezePlan, start: Path, arm: str):
        self.model, self.plan, self.start, self.arm = model, plan, start, arm

    def on_train_end(self, args, state, control, **kwargs):
        moved = freezing.masked_rows_moved(self.model, self.plan, self.start)
        if moved:
            raise RuntimeError(f"arm {self.arm!r}: rows frozen by gradient masks moved in {moved[:5]} "
                               f"({len(moved)} tensors); the freezing did not hold on this training path")


class TrainingProgress(TrainerCallback):
    """The book's progress line of a training (``training p1_alpaca · step 3/6 · 41 s left``):
    a stage event per optimizer step, at most one a second (cft_helpers.progress)."""

    def __init__(self, stage: str):
        self.stage = stage
        self.bar: StageProgress | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = StageProgress(self.stage, total=state.max_steps, unit="step", enabled=False)
        self.bar.update(state.global_step)  # a resumed run starts where it stopped

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def start_checkpoint_name(name: str) -> str:
    """A parameter's name in the start checkpoint: PEFT's wrapping (``base_model.model.``, and
    ``.base_layer.`` inside adapted layers) taken off."""
    return name.replace("base_model.model.", "", 1).replace(".base_layer.", ".")


class Fp32StartMasters(TrainerCallback):
    """Under DeepSpeed with bf16, the optimizer's fp32 master of every trained tensor set from the
    fp32 start checkpoint when training begins (not when it resumes: the DeepSpeed checkpoint
    holds the masters then).

    DeepSpeed builds its masters from the engine's bf16 copies (under ZeRO-3 the parameters are
    partitioned in bf16 as the model loads), so an arm chained from a trained fp32 checkpoint
    (Phase 2 from Phase 1, the reverse order's second phase) would start from bf16(start), while
    its frozen tensors are saved exactly: a mix that FSDP runs do not give. Every process calls
    ``safe_set_full_fp32_param`` (a collective under ZeRO-3) for every trained tensor in the same
    order, reading one tensor at a time from the start checkpoint: no process holds the whole
    model. Adapter tensors (LoRA), which the start does not hold, keep their initialisation.
    ``restored`` counts the tensors set (None until it ran)."""

    def __init__(self, start: Path):
        self.start = Path(start)
        self.restored: int | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.restored is not None:
            return
        import torch
        from deepspeed.utils import safe_set_full_fp32_param  # present wherever DeepSpeed runs

        from cft_helpers.checkpoints import read_tensor, tensor_files

        files = tensor_files(self.start)
        n = 0
        for name, p in model.named_parameters():
            key = start_checkpoint_name(name)
            if p.requires_grad and key in files:
                safe_set_full_fp32_param(p, read_tensor(files[key], key).to(torch.float32))
                n += 1
        self.restored = n
