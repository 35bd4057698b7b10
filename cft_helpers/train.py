"""The training core: one arm of the grid, full fine-tuning with TRL's SFTTrainer.

Every arm (Phase 1, Phase 2, mixture, reverse order; later the mitigations) goes through
:func:`train_arm`. It

- starts from a ``models:`` entry or from the final checkpoint of another arm,
- trains on the arm's datasets (train splits concatenated and shuffled), loss on the
  assistant's response only (TRL prompt/completion data: completion-only loss),
- uses the paper's Table A1 hyperparameters unless the params override them (AdamW, cosine,
  linear warmup, weight decay 0, global batch via gradient accumulation), bf16 on a GPU and
  fp32 on CPU,
- saves Trainer checkpoints (safetensors) every ``save_steps`` and resumes from the last one
  when a crashed or killed run is started again,
- writes the training log, metrics and the final checkpoint into the run store, and is skipped
  when it is already done for the same inputs (``force=True`` retrains).

In a notebook::

    metrics = train_arm(params, "p2_alpaca_multialpaca")

From a shell (the same code path; under ``accelerate launch`` for several GPUs)::

    python -m cft_helpers.train --params params/default.yaml --arm p1_alpaca
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from cft_helpers.data.prepare import dataset_hash, heldout_examples, training_examples
from cft_helpers.data.schema import prompt_completion
from cft_helpers.models import load_model, load_tokenizer, model_checkpoint, model_spec_of_arm, trusts_remote_code
from cft_helpers.params import REPLAY_FRACTION, Params, Training, load_params, stable_hash
from cft_helpers.runs import RunStore, atomic_write_json, ensure_free_space, update_json, write_jsonl


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
    import torch

    if training.precision == "fp32":
        return False
    if training.precision == "bf16":
        if device != "cuda" and not cpu_has_native_bf16():
            # bf16 autocast on a CPU without native bf16 is ~2.6x slower than fp32 (SPEC.md 8).
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


def arm_input_hash(params: Params, store: RunStore, arm: str) -> str:
    """Everything that determines an arm's result: spec, hyperparameters, start point, data.

    Raises RuntimeError when the prepared data in the run store was made from other dataset
    parameters (rerun data preparation) or the start arm is not done (train it first).
    """
    from cft_helpers.data.prepare import data_input_hash

    data_stage = store.stage("data", data_input_hash(params))
    if not data_stage.is_done():
        raise RuntimeError(
            f"the prepared data in {store.data_dir} is {data_stage.status()} for these parameters "
            "(missing, or made from other dataset settings); run notebook 01_data_prep "
            "(cft_helpers.data.prepare_datasets) first")
    spec = params.arms[arm]
    if spec.start in params.arms:
        upstream = store.arm_manifest(spec.start)
        if not upstream or upstream.get("status") != "done":
            raise RuntimeError(
                f"arm {arm!r} starts from arm {spec.start!r}, which is not done "
                f"(status: {(upstream or {}).get('status', 'missing')}); train {spec.start!r} first")
        start = {"arm": spec.start, "input_hash": upstream["input_hash"]}
    else:
        start = {"model": params.models[spec.start].model_dump(by_alias=True)}
    inputs = {
        # vanilla arms hash as before strategies existed, so older run stores stay valid; the
        # table an arm is reported in does not change what it trains
        "arm": spec.model_dump(by_alias=True, exclude={"label", "table"}
                               | ({"strategy"} if spec.strategy == "vanilla" else set())),
        "training": params.arm_training(arm).model_dump(),
        "start": start,
        "data": {d: dataset_hash(store, d) for d in spec.datasets},
        "seed": params.seed,
    }
    settings = strategy_settings(params, arm, store)
    if settings is not None:
        inputs["mitigation"] = settings
    if spec.strategy.startswith("GR"):
        from cft_helpers.generation import uses_vllm

        if uses_vllm(params):                 # its replay answers may differ from HF's
            inputs["replay_engine"] = "vllm"  # (absent for HF: hashes kept)
    return stable_hash(inputs)


def strategy_settings(params: Params, arm: str, store: RunStore | None = None) -> dict[str, Any] | None:
    """The settings that shape an arm's mitigation strategy (None for vanilla training); with
    ``store``, also the content hash of the replay's English dataset."""
    strategy = params.arms[arm].strategy
    m = params.mitigation
    if strategy in ("LF_H1", "LF_H2"):
        lf = m.layer_freezing.model_dump()
        # settings added later enter the hash only when not at their defaults, so arms of older
        # run stores keep theirs; granularity never shapes LF_H1
        if lf["fraction"] is None:
            del lf["fraction"]
        if lf["granularity"] == "projection" or strategy == "LF_H1":
            del lf["granularity"]
        if strategy == "LF_H2":
            base = lf_h2_base(params, arm)
            lf["base"] = params.models[base].model_dump(by_alias=True)
        return {"layer_freezing": lf, "seed": params.seed}
    if strategy == "Spectrum":
        return {"spectrum": m.spectrum.model_dump()}
    if strategy in REPLAY_FRACTION:
        from cft_helpers.replay import SELECTION_VERSION

        english = m.replay.english_for(params.arms[arm].datasets)
        data = dataset_hash(store, english) if (english and store is not None) else None
        # this arm's English dataset, not the whole mapping: other setups' entries change nothing here
        return {"replay": {**m.replay.model_dump(), "english_dataset": english}, "english_data": data,
                "selection": SELECTION_VERSION}
    if strategy == "LoRA":
        return {"lora": m.lora.model_dump()}
    return None


def lf_h2_base(params: Params, arm: str) -> str:
    """The base model LF_H2 compares the Phase-1 model with (a ``models:`` name)."""
    return params.mitigation.layer_freezing.base_model or model_spec_of_arm(params, arm)[0]


def start_checkpoint(params: Params, store: RunStore, arm: str) -> Path:
    start = params.arms[arm].start
    return store.arm_checkpoint(start) if start in params.arms else model_checkpoint(params, start)


def checkpoint_bytes(total_params: int, trainable_params: int, kept: int = 2) -> float:
    """Disk an arm needs at its peak: ``kept`` Trainer checkpoints (fp32 weights, AdamW's two
    moments of the trainable ones) plus the final fp32 model, with 10% slack."""
    per_checkpoint = 4 * total_params + 8 * trainable_params
    return 1.1 * (kept * per_checkpoint + 4 * total_params)


def last_checkpoint(folder: Path) -> Path | None:
    """The Trainer checkpoint with the highest step that has its trainer state written."""
    if not folder.is_dir():
        return None
    ckpts = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1]), default=None)


def accumulation_steps(training: Training, world_size: int = 1) -> int:
    """Micro-batches per optimizer step in each process, so that micro x processes x steps is
    the global batch (Table A1's 16) whatever the number of processes."""
    per_step = training.micro_batch_size * world_size
    if training.global_batch_size % per_step:
        raise ValueError(f"training.global_batch_size ({training.global_batch_size}) must be a multiple of "
                         f"micro_batch_size ({training.micro_batch_size}) x processes ({world_size})")
    return training.global_batch_size // per_step


def sft_config(training: Training, output_dir: Path, device: str, progress: bool = True, world_size: int = 1):
    """TRL SFTConfig for one arm. Every TRL default that differs from Table A1 is set here."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        learning_rate=training.learning_rate,
        num_train_epochs=training.epochs,
        max_steps=training.max_steps or -1,
        per_device_train_batch_size=training.micro_batch_size,
        per_device_eval_batch_size=training.micro_batch_size,
        gradient_accumulation_steps=accumulation_steps(training, world_size),
        lr_scheduler_type=training.scheduler,
        warmup_steps=training.warmup_steps,
        weight_decay=training.weight_decay,
        optim=training.optimizer,
        max_length=training.max_length,
        bf16=use_bf16(training, device),
        use_cpu=device == "cpu",
        # TRL turns activation checkpointing on by default; on CPU it costs ~40% speed.
        activation_checkpointing=training.activation_checkpointing,
        torch_compile=training.torch_compile,
        completion_only_loss=True,
        packing=False,
        save_strategy="steps",
        save_steps=training.save_steps,
        save_total_limit=2,
        save_only_model=False,  # optimizer + scheduler + RNG states are needed to resume
        logging_steps=training.logging_steps,
        logging_first_step=True,
        # Padding-free batches have no attention mask, and the Trainer's non-padding count then
        # drops every token equal to the pad token (<|im_end|> for SmolLM2): count them all.
        include_num_input_tokens_seen="all" if training.padding_free else "non_padding",
        report_to="none",
        seed=training.seed,
        data_seed=training.seed,
        dataloader_pin_memory=device == "cuda",
        disable_tqdm=not progress,
        eval_strategy="no",
    )


def _to_dataset(rows: list[dict]):
    import datasets
    from datasets import Dataset

    datasets.disable_progress_bars()  # per-map bars drown the Trainer's own progress bar
    return Dataset.from_list([prompt_completion(r) for r in rows])


def _loss_summary(log: list[dict]) -> dict[str, Any]:
    losses = [e["loss"] for e in log if "loss" in e and "step" in e]
    if not losses:
        return {}
    k = max(1, math.ceil(len(losses) / 4))  # first and last quarter of the logged steps
    return {"loss_first": losses[0], "loss_last": losses[-1],
            "loss_first_quarter_mean": sum(losses[:k]) / k,
            "loss_last_quarter_mean": sum(losses[-k:]) / k, "logged_steps": len(losses)}


def _eval_losses(trainer, names: Sequence[str] | None = None) -> dict[str, float]:
    """Mean response loss on each evaluation set (held-out rows, training rows), or on ``names``."""
    names = list(trainer.eval_dataset) if names is None else list(names)
    out = trainer.evaluate(eval_dataset={n: trainer.eval_dataset[n] for n in names})
    return {name: out[f"eval_{name}_loss"] for name in names}


def _eval_set_keys(params: Params, store: RunStore, arm: str, trainer, world_size: int) -> dict[str, str]:
    """Per evaluation set, what its loss before training depends on: the start model's identity,
    the tokenized rows and the evaluation settings. Arms that start from the same model on the
    same rows (every mitigation from the Phase-1 model, on the held-out rows) share the value."""
    from cft_helpers.models import resolve_model

    _, ident, _ = resolve_model(params, store, params.arms[arm].start)
    args = trainer.args
    settings = {"start": ident, "batch": args.per_device_eval_batch_size, "max_length": args.max_length,
                "padding_free": bool(getattr(trainer.data_collator, "padding_free", False)), "bf16": args.bf16,
                "device": str(args.device), "processes": world_size, "lora": params.arms[arm].strategy == "LoRA"}
    keys = {}
    for name, ds in trainer.eval_dataset.items():
        rows = ds.select_columns(["input_ids", "labels"]).to_dict()
        keys[name] = stable_hash({**settings, "rows": rows})
    return keys


class _LossesBeforeTraining:
    """Trainer callback: the evaluation sets' losses at the start of ``train()``, before any step.

    Evaluates the sets in ``missing`` once, on the first train begin, and adds them to ``losses``
    and to the run store's cache (``cache``: {key: loss}). When ``files`` is given (the main
    process) it writes the cache and the arm's losses (read back when a killed run resumes).
    ``seconds`` is the time it took, which is not training time."""

    def __new__(cls, trainer, losses: dict, missing: dict[str, str], cache: dict,
                files: tuple[Path, Path] | None):
        from transformers import TrainerCallback

        class _Callback(TrainerCallback):
            seconds = 0.0
            done = False

            def on_train_begin(self, args, state, control, **kwargs):
                if self.done:
                    return
                t0 = time.perf_counter()
                if missing:
                    got = _eval_losses(trainer, list(missing))
                    losses.update(got)
                    cache.update({missing[name]: value for name, value in got.items()})
                if files is not None:
                    cache_file, losses_file = files
                    if missing:  # merged into the file: arms trained in parallel share it
                        update_json(cache_file, {k: cache[k] for k in missing.values()})
                    atomic_write_json(losses_file, losses)
                self.done = True
                self.seconds = time.perf_counter() - t0

        return _Callback()


def train_arm(params: Params, arm: str, store: RunStore | None = None, force: bool = False,
              callbacks: Sequence[Any] = (), progress: bool = True) -> dict[str, Any]:
    """Train one arm (or reuse it when done for the same inputs); returns its metrics.

    Raises RuntimeError when the arm's start arm or the prepared data is missing, naming what
    to run first. On any exception the stage is marked failed and its checkpoints are kept, so
    the next call resumes from the last one.
    """
    if arm not in params.arms:
        raise KeyError(f"unknown arm {arm!r}; valid: {sorted(params.arms)}")
    from cft_helpers.distributed import Processes

    store = store or RunStore(params.run_path)
    spec = params.arms[arm]
    stage = store.stage(f"arms/{arm}", arm_input_hash(params, store, arm))
    if stage.is_done() and not force:
        return store.arm_metrics(arm)
    procs = Processes()  # under accelerate launch: the main process alone writes the run store
    device = configure_runtime(params)
    training = params.arm_training(arm)
    root_model, _ = model_spec_of_arm(params, arm)
    start = start_checkpoint(params, store, arm)

    if procs.is_main:
        resumable = stage.begin(force=force, keep=("checkpoints", "replay"))
    procs.wait()
    if not procs.is_main:  # begin() emptied the folder unless the main process resumes
        resumable = (stage.dir / "checkpoints").is_dir()
    try:
        if procs.is_main:
            atomic_write_json(stage.dir / "params.json", {
                "arm": arm, **spec.model_dump(by_alias=True), "training": training.model_dump(),
                "start_checkpoint": str(start), "root_model": root_model, "device": device,
                "processes": procs.world_size})
        if not spec.datasets:  # a model used as is (the paper's off-the-shelf Instruct model)
            metrics = {"arm": arm, "trained": False, "checkpoint": str(start)}
            if procs.is_main:
                atomic_write_json(stage.dir / "metrics.json", metrics)
                stage.finish({"checkpoint": str(start)})
            procs.wait()
            return metrics
        metrics = _run_training(params, arm, store, stage.dir, device, resumable, callbacks, progress, procs)
        if procs.is_main:
            stage.finish({"checkpoint": metrics["checkpoint"]})
        procs.wait()
        return metrics
    except BaseException as exc:
        if procs.is_main:
            stage.fail(exc)
        raise


def build_trainer(params: Params, arm: str, store: RunStore, output_dir: Path, device: str | None = None,
                  callbacks: Sequence[Any] = (), progress: bool = True, procs=None):
    """The SFTTrainer of one arm, with its model, tokenizer and data loaded (not yet trained).

    Returns (trainer, n_train_rows, n_heldout_rows). Exposed so tests can check exactly what the
    trainer is fed (e.g. which tokens carry loss).
    """
    from trl import SFTTrainer

    from cft_helpers.distributed import Processes

    procs = procs or Processes()
    spec = params.arms[arm]
    device = device or configure_runtime(params)
    training = params.arm_training(arm)
    trust = trusts_remote_code(params, arm)
    start = start_checkpoint(params, store, arm)
    chat_template = getattr(params.models.get(spec.start), "chat_template", None)
    tok = load_tokenizer(start, chat_template=chat_template, trust_remote_code=trust)
    model = load_model(start, dtype="float32", trust_remote_code=trust)
    rows = training_examples(store, spec.datasets, seed=training.seed)
    held = heldout_examples(store, spec.datasets, training.n_eval, seed=training.seed)
    # Loss before/after on the same rows: held-out rows, and the first Phase-2 training rows
    # (whose per-step loss is too noisy on tiny runs to say whether training lowered it).
    evals = {"heldout": _to_dataset(held), "train": _to_dataset(rows[: training.n_eval])} if held else None
    info: dict[str, Any] = {"strategy": spec.strategy}
    if spec.strategy in REPLAY_FRACTION:  # GR_5 / GR_10 / ER_10: add replay rows, shuffled in
        from cft_helpers.generation import uses_vllm
        from cft_helpers.replay import build_replay

        # vLLM generates in a child process from the checkpoint, while this model still sits on
        # the CPU it loaded on (the GPU is vLLM's until it exits); HF generate uses this model.
        vllm = spec.strategy.startswith("GR") and uses_vllm(params)
        if device == "cuda" and not vllm:
            model.to(device)  # GR generates with this model: on the GPU, not the CPU it loaded on
        if not procs.is_main:
            procs.wait()      # the main process generates and caches; the others read the cache
        replay, summary = build_replay(params, store, arm, model, tok, progress=progress,
                                       vllm_checkpoint=start if vllm else None, trust_remote_code=trust)
        if procs.is_main:
            procs.wait()
        rows = rows + replay
        random.Random(f"{training.seed}|{arm}|replay").shuffle(rows)
        info["replay"] = summary
    if spec.strategy in ("LF_H1", "LF_H2", "Spectrum"):
        from cft_helpers import freezing

        plan = freeze_plan(params, store, arm, model, progress=progress, write=procs.is_main)
        trainable_values = freezing.apply(model, plan)
        if procs.is_main:
            atomic_write_json(store.arm_dir(arm) / "freeze.json", plan.as_dict())
        info["frozen_tensors"] = len(plan.frozen)
        if plan.masked:  # LF_H2 at head granularity: rows frozen by gradient masks
            info["masked_tensors"] = len(plan.masked)
            info["masked_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad) - trainable_values
            callbacks = [*callbacks, _masked_rows_check(model, plan, start, arm)]
    # TRL truncates what is longer than max_length without a word: count it for the metrics.
    info["rows_over_max_length"] = rows_over_length(tok, rows, training.max_length)
    if info["rows_over_max_length"]:
        import warnings

        warnings.warn(f"arm {arm!r}: {info['rows_over_max_length']} of {len(rows)} training examples are longer "
                      f"than training.max_length={training.max_length} tokens and will be truncated "
                      "(counted in metrics.json as rows_over_max_length)", stacklevel=2)
    peft_config = lora_config(params) if spec.strategy == "LoRA" else None
    args = sft_config(training, output_dir, device, progress, world_size=procs.world_size)
    trainer = SFTTrainer(model=model, args=args, train_dataset=_to_dataset(rows), eval_dataset=evals,
                         processing_class=tok, callbacks=list(callbacks), peft_config=peft_config)
    if training.padding_free:
        # TRL's own collator in its padding-free mode. TRL refuses padding_free=True together with
        # max_length because its collator does not truncate; the dataset preparation above already
        # truncated every example to max_length, so switching the collator afterwards is exact.
        trainer.data_collator.padding_free = True
    params_total = sum(p.numel() for p in trainer.model.parameters())
    if info.get("masked_tensors") and (getattr(trainer, "is_fsdp_enabled", False)
                                       or getattr(trainer, "is_deepspeed_enabled", False)):
        raise ValueError(f"arm {arm!r}: LF_H2 with mitigation.layer_freezing.granularity 'head' freezes rows by "
                         "gradient hooks on the parameters, unverified under FSDP / DeepSpeed (flattened or "
                         "sharded parameters); train it in one process or with DDP (runtime.launch_config), or "
                         "use granularity 'projection'")
    # values the optimizer updates: a masked tensor holds AdamW state for all its rows (optimizer
    # memory, checkpoint size) but only its unmasked rows train ("trainable_params")
    info["optimizer_params"] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    info["trainable_params"] = info["optimizer_params"] - info.get("masked_params", 0)
    if not info.get("masked_tensors"):
        del info["optimizer_params"]  # equal to trainable_params: metrics written as before
    info["total_params"] = params_total
    info["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    trainer.cft_info = info  # what the strategy did, for the arm's metrics
    return trainer, len(rows), len(held)


def rows_over_length(tok, rows: list[dict], max_length: int, batch: int = 256) -> int:
    """How many examples (chat template applied, prompt + response) exceed ``max_length`` tokens
    and will be truncated, losing the end of their response."""
    over = 0
    for i in range(0, len(rows), batch):
        texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in rows[i:i + batch]]
        over += sum(len(ids) > max_length for ids in tok(texts, add_special_tokens=False)["input_ids"])
    return over


def freeze_plan(params: Params, store: RunStore, arm: str, model, progress: bool = True, write: bool = True):
    """The FreezePlan of an LF_H1 / LF_H2 / Spectrum arm for ``model`` (its start checkpoint)."""
    from cft_helpers import freezing, spectrum
    from cft_helpers.runs import atomic_write_text

    spec = params.arms[arm]
    names = [n for n, _ in model.named_parameters()]
    lf = params.mitigation.layer_freezing
    if spec.strategy == "LF_H1":
        return freezing.lf_h1(names, lf.count(freezing.n_layers_of(names)),
                              params.seed if lf.seed is None else lf.seed)
    start = start_checkpoint(params, store, arm)
    if spec.strategy == "LF_H2":
        base = model_checkpoint(params, lf_h2_base(params, arm))
        if Path(base).resolve() == Path(start).resolve():
            raise ValueError(f"LF_H2 for arm {arm!r}: the base and the Phase-1 model are the same checkpoint "
                             f"({start}); set mitigation.layer_freezing.base_model to the base model")
        count = lf.count(freezing.n_layers_of(names))
        if lf.granularity == "head":
            freezing.check_masking(params.arm_training(arm).weight_decay, arm)
            layout = freezing.head_layout(model.config)
            changes = freezing.head_changes(base, start, layout, lf.projections)
            return freezing.lf_h2_heads(names, changes, count, layout)
        changes = freezing.projection_changes(base, start, lf.projections)
        return freezing.lf_h2(names, changes, count, lf.scope)
    cfg = params.mitigation.spectrum
    scores = spectrum.scan(start, cfg.module_types, progress=progress)
    arm_dir = store.arm_dir(arm)
    if write:
        atomic_write_json(arm_dir / "spectrum_snr.json", scores)
        atomic_write_text(arm_dir / "unfrozen.yaml", spectrum.unfrozen_yaml(spectrum.select(scores, cfg.percent)))
    return freezing.spectrum_plan(names, scores, cfg.percent, cfg.direction)


def _masked_rows_check(model, plan, start: Path, arm: str):
    """A callback that, when training ends, checks that the rows frozen by gradient masks are
    still bit-identical to the start checkpoint, and fails the arm if any moved."""
    from transformers import TrainerCallback

    from cft_helpers import freezing

    class MaskedRowsCheck(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            moved = freezing.masked_rows_moved(model, plan, start)
            if moved:
                raise RuntimeError(f"arm {arm!r}: rows frozen by gradient masks moved in {moved[:5]} "
                                   f"({len(moved)} tensors); the freezing did not hold on this training path")

    return MaskedRowsCheck()


def lora_config(params: Params):
    from peft import LoraConfig

    cfg = params.mitigation.lora
    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM")


def _run_training(params, arm, store, arm_dir: Path, device: str, resumable: bool, callbacks,
                  progress: bool, procs) -> dict[str, Any]:
    spec = params.arms[arm]
    ckpt_dir = arm_dir / "checkpoints"
    trainer, n_rows, n_held = build_trainer(params, arm, store, ckpt_dir, device, callbacks, progress, procs)
    if procs.is_main:
        ensure_free_space(arm_dir, checkpoint_bytes(trainer.cft_info["total_params"],
                                                    trainer.cft_info.get("optimizer_params",
                                                                         trainer.cft_info["trainable_params"])),
                          f"training arm {arm!r}")
    tok, args = trainer.processing_class, trainer.args

    # Losses before training, kept next to the checkpoints so that a resumed run reports them.
    before_file = ckpt_dir / "eval_before.json"
    before: dict[str, float] = {}
    # every process decides alike: the file is written only after the (collective) evaluation
    resume = last_checkpoint(ckpt_dir) if resumable else None
    before_cb = None
    if n_held and resumable and before_file.exists():
        before = json.loads(before_file.read_text())
    elif n_held and resume is None:  # (a resumed model is no longer the start model)
        cache_file = store.root / "losses_before_training.json"
        cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
        keys = _eval_set_keys(params, store, arm, trainer, procs.world_size)
        before.update({name: cache[k] for name, k in keys.items() if k in cache})
        missing = {name: k for name, k in keys.items() if k not in cache}
        # Evaluated at the start of train(), once the engine has prepared the model: an
        # evaluate() before train() lets FSDP wrap the model for evaluation, after which train()
        # builds no optimizer; under DDP it leaves the model unwrapped for training.
        before_cb = _LossesBeforeTraining(trainer, before, missing, cache,
                                          (cache_file, before_file) if procs.is_main else None)
        trainer.add_callback(before_cb)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall_s = time.perf_counter() - t0 - (before_cb.seconds if before_cb else 0.0)
    after = _eval_losses(trainer) if n_held else {}

    # Final checkpoint: written to a temporary folder, then renamed, so it is whole or absent.
    final = arm_dir / "model"
    tmp = arm_dir / ".model.tmp"
    if getattr(trainer, "is_fsdp_enabled", False):
        # Sharded state dicts keep the resumable checkpoints cheap, but with one save_model writes
        # no weights at all: gather a full state dict (on the main process) for the final model.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    if not procs.is_main:
        if spec.strategy != "LoRA":  # collective under FSDP / ZeRO-3 (gathers the shards); writes nothing here
            trainer.save_model(str(tmp))
        return {"checkpoint": str(final), "process": "worker"}
    shutil.rmtree(tmp, ignore_errors=True)
    if spec.strategy == "LoRA":  # evaluated merged (SPEC.md section 2); the adapter is kept too
        trainer.model.save_pretrained(str(arm_dir / "adapter"))
        trainer.model.merge_and_unload().save_pretrained(str(tmp))
    else:
        trainer.save_model(str(tmp))
    if not any(tmp.glob("*.safetensors")):  # e.g. an engine config that saves shards only
        raise RuntimeError(f"arm {arm!r}: the final checkpoint {tmp} holds no safetensors weights")
    tok.save_pretrained(str(tmp))
    # Our checkpoints hold no pickle: the Trainer's training_args.bin is a torch.save'd object.
    if (tmp / "training_args.bin").exists():
        (tmp / "training_args.bin").unlink()
    (tmp / "training_args.json").write_text(args.to_json_string())
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)

    log = trainer.state.log_history
    write_jsonl(arm_dir / "train_log.jsonl", log)
    metrics = {
        "arm": arm, "trained": True, "phase": spec.phase, "datasets": spec.datasets,
        "checkpoint": str(final), "examples": n_rows, "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch, "trained_tokens": int(trainer.state.num_input_tokens_seen),
        "train_loss": result.training_loss, **_loss_summary(log),
        "eval_examples": n_held, "eval_loss_before": before.get("heldout"),
        "eval_loss_after": after.get("heldout"), "train_rows_loss_before": before.get("train"),
        "train_rows_loss_after": after.get("train"),
        "wall_s": wall_s, "resumed_from": resume.name if resume else None, "device": device,
        "bf16": args.bf16, "processes": procs.world_size, **trainer.cft_info,
    }
    atomic_write_json(arm_dir / "metrics.json", metrics)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # resume state is no longer needed
    return metrics


def train_arms(params: Params, arms: Sequence[str], force: bool = False,
               progress: bool = True) -> dict[str, dict[str, Any]]:
    """Train several arms in dependency order; returns metrics per arm.

    With ``runtime.processes`` above 1 (and not already inside a launched process), each arm
    not done yet is trained by ``accelerate launch`` in that many processes (:func:`launch_arm`)."""
    store = RunStore(params.run_path)
    order = [a for a in params.arm_order() if a in arms]
    if params.runtime.processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        out = {}
        for a in order:
            stage = store.stage(f"arms/{a}", arm_input_hash(params, store, a))
            if force or not stage.is_done():
                launch_arm(params, a, force=force)
            out[a] = store.arm_metrics(a)
        return out
    return {a: train_arm(params, a, store, force=force, progress=progress) for a in order}


def launch_command(params: Params, arm: str, force: bool = False) -> list[str]:
    """``accelerate launch`` of this module for one arm, with the params' processes and config.

    The launched processes load the same params file with the same overrides (passed as
    ``--set key=<JSON>``; JSON is YAML). Without a config file, ``--multi_gpu`` selects
    accelerate's torchrun launcher, which also serves CPU-only machines (gloo): accelerate's
    ``--cpu`` would start a single process there."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(params.runtime.processes),
           "--num_machines", "1"]
    if params.runtime.launch_config:
        cmd += ["--config_file", str(params.path(params.runtime.launch_config))]
    else:
        cmd += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["-m", "cft_helpers.train", "--params", str(params.source_path), "--arm", arm, *override_args(params)]
    return cmd + (["--force"] if force else [])


def override_args(params: Params) -> list[str]:
    """``--set key=<JSON>`` for each override the params were loaded with (JSON is YAML), so
    that a child process loads the same parameter set."""
    return [x for key, value in params.overrides.items() for x in ("--set", f"{key}={json.dumps(value)}")]


def launch_arm(params: Params, arm: str, force: bool = False) -> None:
    """Train one arm in ``runtime.processes`` processes; raises naming the arm if it fails."""
    import subprocess

    cmd = launch_command(params, arm, force)
    proc = subprocess.run(cmd, cwd=params.root or None)
    if proc.returncode != 0:
        raise RuntimeError(f"arm {arm!r}: `{' '.join(cmd)}` exited with {proc.returncode}; its output is above")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cft_helpers.train", description=__doc__.split("\n")[0])
    ap.add_argument("--params", required=True, help="params YAML file or preset name")
    ap.add_argument("--arm", required=True, action="append",
                    help="arm to train, or a phase (phase1, phase2, ...: its arms); repeatable")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="override, e.g. training.learning_rate=1e-4 (repeatable)")
    ap.add_argument("--force", action="store_true", help="retrain even if done")
    ns = ap.parse_args(argv)
    params = load_params(ns.params, overrides=ns.overrides)
    from cft_helpers.lock import RunLocked, check_run_lock

    try:
        check_run_lock(params.run_path)  # a book running on this store: only its own children pass
    except RunLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    phases = {a.phase for a in params.arms.values()}
    arms = [x for name in ns.arm for x in (params.arms_in_phase(name) if name in phases and name not in params.arms
                                           else [name])]
    for name, m in train_arms(params, arms, force=ns.force).items():
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in m.items() if k in (
            "steps", "train_loss", "loss_first", "loss_last", "eval_loss_before", "eval_loss_after",
            "wall_s", "checkpoint")))
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # launched: leave the process group cleanly
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
