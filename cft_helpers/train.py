"""The training core: one arm of the grid, full fine-tuning with TRL's SFTTrainer.

Every arm (Phase 1, Phase 2, mixture, reverse order, the mitigations) goes through
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
  when it is already done for the same inputs (``force=True`` retrains),
- does what the arm's mitigation strategy asks (freezing, replay, LoRA: the registry in
  :mod:`cft_helpers.mitigation`).

Threads, device and precision come from :mod:`cft_helpers.runtime`; ``accelerate launch`` from
:mod:`cft_helpers.relaunch`; the final weights, gathered whole under every engine, from
:mod:`cft_helpers.weights`.

In a notebook::

    metrics = train_arm(params, "p2_alpaca_multialpaca")

From a shell (the same code path; under ``accelerate launch`` for several GPUs)::

    python -m cft_helpers.train --params params/default.yaml --arm p1_alpaca

trl, transformers, datasets and :mod:`cft_helpers.trainer_callbacks` (transformers) are imported
inside the functions that build and run a trainer: the book's scheduler imports this module to
hash arms, without torch.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from cft_helpers import freezing, mitigation
from cft_helpers.jobs import training_notebook
from cft_helpers.data.prepare import (data_input_hash, heldout_examples,
                                      training_examples)
from cft_helpers.data.schema import prompt_completion
from cft_helpers.distributed import Processes
from cft_helpers.faults import kill_point
from cft_helpers.generation import uses_vllm
from cft_helpers.models import (load_model, load_tokenizer, model_checkpoint, resolve_model,
                                trusts_remote_code)
from cft_helpers.lock import refuse_if_locked
from cft_helpers.params import Params, Training, load_params
from cft_helpers.files import stable_hash
from cft_helpers.relaunch import launch_arm, launched
from cft_helpers.replay import build_replay
from cft_helpers.runs import RunStore
from cft_helpers.files import KeyedCache, atomic_write_json, ensure_free_space, write_jsonl
from cft_helpers.runtime import configure_runtime, fsdp_mixed_precision, release_memory, use_bf16
from cft_helpers.weights import final_state_dict, generation_model, parameter_counts, save_gathered, saved_dtypes


# Training settings that only say where the curves go (docs/ENGINEERING.md, "Trackers"): left
# out of the arms' input hashes, so turning a tracker on neither retrains nor invalidates an arm.
TRACKING_FIELDS = ("report_to", "run_name")


def arm_input_hash(params: Params, arm: str) -> str:
    """Everything that determines an arm's result: spec, hyperparameters, start point, data.

    Raises RuntimeError when the prepared data in the run store was made from other dataset
    parameters (rerun data preparation) or the start arm is not done (train it first).
    """
    store = params.store
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
                f"(status: {(upstream or {}).get('status', 'missing')}); run {training_notebook(params, spec.start)} "
                f"first (or train_arms(params, [{spec.start!r}]))")
        start = {"arm": spec.start, "input_hash": upstream["input_hash"]}
    else:
        start = {"model": params.models[spec.start].model_dump(by_alias=True)}
    entry = mitigation.get(spec.strategy)
    inputs = {
        # vanilla arms hash as before strategies existed, so older run stores stay valid; the
        # table an arm is reported in does not change what it trains
        "arm": spec.model_dump(by_alias=True, exclude={"label", "table"} | ({"strategy"} if entry.baseline else set())),
        # where the curves are logged does not change the weights (hashes kept)
        "training": params.arm_training(arm).model_dump(exclude=set(TRACKING_FIELDS)),
        "start": start,
        "data": {d: store.data_hash(d) for d in spec.datasets},
        "seed": params.seed,
    }
    settings = mitigation.settings(params, arm)
    if settings is not None:
        inputs["mitigation"] = settings
    if entry.replay is not None and entry.replay.generated and uses_vllm(params):
        inputs["replay_engine"] = "vllm"  # its replay answers may differ from HF's (absent for HF: hashes kept)
    return stable_hash(inputs)


def start_checkpoint(params: Params, arm: str) -> Path:
    store = params.store
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


def sft_config(training: Training, output_dir: Path, device: str, progress: bool = True, world_size: int = 1,
               run_name: str | None = None, project: str | None = None, dist_timeout_s: int = 7200):
    """TRL SFTConfig for one arm. Every TRL default that differs from Table A1 is set here.

    ``run_name`` (the filled-in ``training.run_name``) names the run in the tracker
    ``training.report_to``; ``project`` is trackio's project (the params' name).

    Under a DeepSpeed launch (ZeRO-3) the config registers DeepSpeed's settings with transformers
    as it is built, so a model loaded while it exists is partitioned as it loads (zero.Init):
    :func:`build_trainer` builds it before the model and keeps it.
    """
    from trl import SFTConfig

    tracking = {} if project is None else {"project": project}

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
        report_to=training.report_to,
        run_name=run_name,
        **tracking,
        seed=training.seed,
        data_seed=training.seed,
        dataloader_pin_memory=device == "cuda",
        disable_tqdm=not progress,
        eval_strategy="no",
        ddp_timeout=dist_timeout_s,  # too late for the group cft_helpers.distributed created; kept equal
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


def _eval_set_keys(params: Params, arm: str, trainer, world_size: int) -> dict[str, str]:
    """Per evaluation set, what its loss before training depends on: the start model's identity,
    the tokenized rows and the evaluation settings. Arms that start from the same model on the
    same rows (every mitigation from the Phase-1 model, on the held-out rows) share the value."""
    _, ident, _ = resolve_model(params, params.arms[arm].start)
    args = trainer.args
    settings = {"start": ident, "batch": args.per_device_eval_batch_size, "max_length": args.max_length,
                "padding_free": bool(getattr(trainer.data_collator, "padding_free", False)), "bf16": args.bf16,
                # the device's type, never its index: cuda:<local rank> differs between ranks
                "device": args.device.type, "processes": world_size,
                "lora": mitigation.of_arm(params, arm).lora is not None}
    keys = {}
    for name, ds in trainer.eval_dataset.items():
        rows = ds.select_columns(["input_ids", "labels"]).to_dict()
        keys[name] = stable_hash({**settings, "rows": rows})
    return keys


def train_arm(params: Params, arm: str, force: bool = False,
              callbacks: Sequence[Any] = (), progress: bool = True) -> dict[str, Any]:
    """Train one arm (or reuse it when done for the same inputs); returns its metrics.

    Raises RuntimeError when the arm's start arm or the prepared data is missing, naming what
    to run first. On any exception the stage is marked failed and its checkpoints are kept, so
    the next call resumes from the last one.
    """
    if arm not in params.arms:
        raise KeyError(f"unknown arm {arm!r}; valid: {sorted(params.arms)}")
    store = params.store
    spec = params.arms[arm]
    stage = store.stage(f"arms/{arm}", arm_input_hash(params, arm))
    # under accelerate launch: the main process alone writes the run store, and takes every
    # choice that reads it, for all (Processes.decide; docs/CLUSTER.md, "One choice, every rank")
    procs = Processes(params.runtime.dist_timeout_s)
    found = None if force else procs.decide(
        lambda: "done" if stage.is_done() else "written" if _written_not_marked(stage, store, arm) else None)
    if found is not None:
        if procs.is_main:
            if found == "written":
                # Killed after its last file and before the stage was marked done: nothing to
                # train. (Resuming from the last checkpoint instead would train one step more
                # where training.max_steps is set: transformers' loop checks it only after a step.)
                stage.finish(_stage_outputs(store.arm_metrics(arm)))
            _remove_checkpoints(store, arm)  # (left by a kill before they were removed)
        procs.wait()
        return store.arm_metrics(arm)
    training = params.arm_training(arm)
    if spec.datasets:
        accumulation_steps(training, procs.world_size)  # a global batch that does not divide: now
    device = configure_runtime(params)
    root_model = params.root_model(arm)
    # The main process first: it may build or convert the start model into the cache (one
    # process, not every rank racing), which the others then find (a launch started by hand).
    if procs.is_main:
        start = start_checkpoint(params, arm)
    procs.wait()
    if not procs.is_main:
        start = start_checkpoint(params, arm)

    # begin() empties the folder unless it resumes: the main process's answer holds for all
    resumable = procs.decide(lambda: stage.begin(force=force, keep=("checkpoints", "replay", "tracker")))
    try:
        if procs.is_main:
            atomic_write_json(store.arm_file(arm, "params.json"), {
                "arm": arm, **spec.model_dump(by_alias=True), "training": training.model_dump(),
                "start_checkpoint": str(start), "root_model": root_model, "device": device,
                "processes": procs.world_size})
        if not spec.datasets:  # a model used as is (the paper's off-the-shelf Instruct model)
            metrics = {"arm": arm, "trained": False, "checkpoint": str(start)}
            if procs.is_main:
                atomic_write_json(store.arm_file(arm, "metrics.json"), metrics)
                stage.finish({"checkpoint": str(start)})
            procs.wait()
            return metrics
        metrics = _run_training(params, arm, stage.dir, device, resumable, callbacks, progress, procs)
        if procs.is_main:
            kill_point("train:before-finish")
            stage.finish(_stage_outputs(metrics))
            kill_point("train:finished")
            # Only now: a kill before finish() finds the arm written (train_arm's "written" above)
            _remove_checkpoints(store, arm)
        procs.wait()
        return metrics
    except BaseException as exc:
        if procs.is_main:
            stage.fail(exc)
        raise


class BuiltTrainer(NamedTuple):
    """An arm's trainer, ready to train, and what the arm's metrics say about it."""

    trainer: Any          # TRL's SFTTrainer
    rows: int             # training rows (the datasets' and any replay's)
    heldout_rows: int     # held-out rows, evaluated before and after training
    info: dict[str, Any]  # what the strategy did (frozen tensors, replay) and the parameter counts


def build_trainer(params: Params, arm: str, output_dir: Path, device: str | None = None,
                  callbacks: Sequence[Any] = (), progress: bool = True, procs=None) -> BuiltTrainer:
    """The SFTTrainer of one arm, with its model, tokenizer and data loaded (not yet trained),
    and the arm's strategy applied. Exposed so tests can check exactly what the trainer is fed
    (e.g. which tokens carry loss).
    """
    store = params.store
    from trl import SFTTrainer

    from cft_helpers.trainer_callbacks import MaskedRowsCheck

    procs = procs or Processes(params.runtime.dist_timeout_s)
    spec = params.arms[arm]
    device = device or configure_runtime(params)
    training = params.arm_training(arm)
    accumulation_steps(training, procs.world_size)  # a batch that does not divide: before any load
    trust = trusts_remote_code(params, arm)
    start = start_checkpoint(params, arm)
    chat_template = getattr(params.models.get(spec.start), "chat_template", None)
    tok = load_tokenizer(start, chat_template=chat_template, trust_remote_code=trust)
    rows = training_examples(store, spec.datasets, seed=training.seed)
    held = heldout_examples(store, spec.datasets, training.n_eval, seed=training.seed)
    # Loss before/after on the same rows: held-out rows, and the first Phase-2 training rows
    # (whose per-step loss is too noisy on tiny runs to say whether training lowered it).
    evals = {"heldout": _to_dataset(held), "train": _to_dataset(rows[: training.n_eval])} if held else None
    entry = mitigation.get(spec.strategy)
    info: dict[str, Any] = {"strategy": spec.strategy}
    if entry.replay is not None:  # GR_5 / GR_10 / ER_10: add replay rows, shuffled in
        # Before the training model loads: GR generates with a model of its own (every process
        # a share of the prompts, on its own GPU; vLLM in a child process), freed before the
        # engine loads the training model sharded. Its fp32 weights equal the training model's
        # before training, so the answers are those the training model would give.
        vllm = entry.replay.generated and uses_vllm(params)
        _, start_id, _ = resolve_model(params, spec.start)  # (names the answering model in the cache)
        replay, summary = build_replay(params, arm, None, tok, progress=progress,
                                       vllm_checkpoint=start if vllm else None, trust_remote_code=trust,
                                       load_generator=lambda: generation_model(start, device, trust), procs=procs,
                                       model_id=start_id)
        rows = rows + replay
        random.Random(f"{training.seed}|{arm}|replay").shuffle(rows)
        info["replay"] = summary
        release_memory()  # the generation model, before the training model loads
    # The config first: under ZeRO-3 a model loaded while it exists is partitioned as it loads.
    args = sft_config(training, output_dir, device, progress, world_size=procs.world_size,
                      run_name=training.tracker_run_name(params.name, params.seed, arm), project=params.name,
                      dist_timeout_s=params.runtime.dist_timeout_s)
    # Under an FSDP launch with cpu_ram_efficient_loading (params/accelerate/fsdp.yaml), only
    # local rank 0 reads the weights; the others build the model empty and FSDP broadcasts rank
    # 0's (sync_module_states) when it wraps it: transformers does this by itself once the
    # process group exists, which Processes() made sure of.
    model = load_model(start, dtype="float32", trust_remote_code=trust)
    if entry.freeze is not None:  # LF_H1 / LF_H2 / Spectrum
        # chosen once, by the main process (Spectrum's scan reads the whole start checkpoint)
        plan = procs.decide(lambda: mitigation.freeze_plan(
            params, arm, model, start, store.arm_dir(arm), progress=progress,
            checkpoint=lambda name: model_checkpoint(params, name, progress=progress)))
        trainable_values = freezing.apply(model, plan)
        if procs.is_main:
            atomic_write_json(store.arm_file(arm, "freeze.json"), plan.as_dict())
        info["frozen_tensors"] = len(plan.frozen)
        if plan.masked:  # LF_H2 at head granularity: rows frozen by gradient masks
            info["masked_tensors"] = len(plan.masked)
            info["masked_params"] = sum(freezing.values(p) for p in model.parameters() if p.requires_grad) - trainable_values
            callbacks = [*callbacks, MaskedRowsCheck(model, plan, start, arm)]
    # TRL truncates what is longer than max_length without a word, and drops an example whose prompt
    # alone fills max_length (no response token left to learn): count both for the metrics.
    info["rows_over_max_length"] = rows_over_length(tok, rows, training.max_length)
    dropped = rows_without_response(tok, rows, training.max_length)
    if dropped:  # (only when there are: metrics of before keep their keys)
        info["rows_dropped_prompt_over_max_length"] = dropped
    if info["rows_over_max_length"]:
        import warnings

        warnings.warn(f"arm {arm!r}: {info['rows_over_max_length']} of {len(rows)} training examples are longer "
                      f"than training.max_length={training.max_length} tokens and will be truncated "
                      "(counted in metrics.json as rows_over_max_length)"
                      + (f"; {dropped} of them have a prompt that alone fills max_length and are dropped, with no "
                         "response token left (rows_dropped_prompt_over_max_length)" if dropped else ""), stacklevel=2)
    peft_config = mitigation.lora_config(params, arm)  # None: no adapters, full fine-tuning
    trainer = SFTTrainer(model=model, args=args, train_dataset=_to_dataset(rows), eval_dataset=evals,
                         processing_class=tok, callbacks=list(callbacks), peft_config=peft_config)
    _tracker_into_store(trainer, store.arm_tracker_dir(arm))
    policy = fsdp_mixed_precision(trainer)  # (before train() wraps the model)
    if policy is not None:
        info["fsdp_mixed_precision"] = policy
    if training.padding_free:
        # TRL's own collator in its padding-free mode. TRL refuses padding_free=True together with
        # max_length because its collator does not truncate; the dataset preparation above already
        # truncated every example to max_length, so switching the collator afterwards is exact.
        trainer.data_collator.padding_free = True
    if info.get("masked_tensors") and (getattr(trainer, "is_fsdp_enabled", False)
                                       or getattr(trainer, "is_deepspeed_enabled", False)):
        raise ValueError(f"arm {arm!r}: LF_H2 with mitigation.layer_freezing.granularity 'head' freezes rows by "
                         "gradient hooks on the parameters, unverified under FSDP / DeepSpeed (flattened or "
                         "sharded parameters); train it in one process or with DDP (runtime.launch_config), or "
                         "use granularity 'projection'")
    info.update(parameter_counts(trainer.model, info.get("masked_params") if info.get("masked_tensors") else None))
    info["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    return BuiltTrainer(trainer, len(rows), len(held), info)


def _tracker_into_store(trainer, folder: Path) -> None:
    """TensorBoard's event files go to the arm's tracker folder of the run store, next to its
    train_log.jsonl, instead of transformers' default under output_dir (the checkpoints folder,
    deleted once the arm is done), so that ``tensorboard --logdir <run_dir>/arms`` shows every
    arm. The other trackers keep a store of their own, configured by their environment
    variables (docs/ENGINEERING.md, "Trackers")."""
    from transformers.integrations import TensorBoardCallback

    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback) and cb.tb_writer is None:
            # read when the writer opens, at the start of train() on the main process
            cb.logging_dir = str(folder)


def rows_over_length(tok, rows: list[dict], max_length: int, batch: int = 256) -> int:
    """How many examples (chat template applied, prompt + response) exceed ``max_length`` tokens
    and will be truncated, losing the end of their response."""
    over = 0
    for i in range(0, len(rows), batch):
        texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in rows[i:i + batch]]
        over += sum(len(ids) > max_length for ids in tok(texts, add_special_tokens=False)["input_ids"])
    return over


def rows_without_response(tok, rows: list[dict], max_length: int, batch: int = 256) -> int:
    """How many examples have a prompt (chat template applied, with the assistant's opening) of
    ``max_length`` tokens or more: truncation leaves none of their response, and TRL drops them."""
    dropped = 0
    for i in range(0, len(rows), batch):
        texts = [tok.apply_chat_template(r["messages"][:-1], tokenize=False, add_generation_prompt=True)
                 for r in rows[i:i + batch]]
        dropped += sum(len(ids) >= max_length for ids in tok(texts, add_special_tokens=False)["input_ids"])
    return dropped


def _run_training(params, arm, arm_dir: Path, device: str, resumable: bool, callbacks,
                  progress: bool, procs) -> dict[str, Any]:
    store = params.store
    built = build_trainer(params, arm, store.arm_checkpoints_dir(arm), device, callbacks, progress, procs)
    try:
        return _train_and_save(params, arm, arm_dir, device, resumable, procs, built)
    finally:  # the next arm of this process (a launch of several arms) starts from an empty device
        built.trainer.accelerator.free_memory()
        del built  # the trainer's reference cycles hold the model until a collection
        release_memory()


def _train_and_save(params, arm, arm_dir: Path, device: str, resumable: bool, procs,
                    built: BuiltTrainer) -> dict[str, Any]:
    store = params.store
    from cft_helpers.trainer_callbacks import Fp32StartMasters, LossesBeforeTraining, TrainingProgress

    spec = params.arms[arm]
    ckpt_dir = store.arm_checkpoints_dir(arm)
    start = start_checkpoint(params, arm)
    trainer, n_rows, n_held, info = built
    trainer.add_callback(TrainingProgress(f"training {arm}"))
    if procs.is_main:
        ensure_free_space(arm_dir, checkpoint_bytes(info["total_params"],
                                                    info.get("optimizer_params", info["trainable_params"])),
                          f"training arm {arm!r}")
    tok, args = trainer.processing_class, trainer.args

    # Losses before training, kept next to the checkpoints so that a resumed run reports them.
    before_file = ckpt_dir / "eval_before.json"
    cache_file = store.losses_before_training_file

    def plan() -> tuple[Path | None, dict[str, float], dict[str, str] | None]:
        """(checkpoint to resume from, losses known, sets to evaluate: {name: cache key} or None)."""
        resume = last_checkpoint(ckpt_dir) if resumable else None
        if n_held and resumable and before_file.exists():
            return resume, json.loads(before_file.read_text()), None
        if n_held and resume is None:  # (a resumed model is no longer the start model)
            cache = KeyedCache(cache_file).load()
            keys = _eval_set_keys(params, arm, trainer, procs.world_size)
            return None, {n: cache[k] for n, k in keys.items() if k in cache}, \
                {n: k for n, k in keys.items() if k not in cache}
        return resume, {}, None

    # Chosen by the main process for all: a rank that finds the cache (or a checkpoint) where
    # another does not would evaluate (or resume) alone, and the engine's collectives then hang.
    resume, before, missing = procs.decide(plan)
    masters = None
    if getattr(trainer, "is_deepspeed_enabled", False) and args.bf16 and resume is None:
        # (added before the losses-before-training callback: every rank runs both in one order)
        masters = Fp32StartMasters(start)
        trainer.add_callback(masters)
    before_cb = None
    if missing is not None:
        # Evaluated at the start of train(), once the engine has prepared the model: an
        # evaluate() before train() lets FSDP wrap the model for evaluation, after which train()
        # builds no optimizer; under DDP it leaves the model unwrapped for training.
        before_cb = LossesBeforeTraining(lambda names: _eval_losses(trainer, names), before, missing,
                                         KeyedCache(cache_file).load() if procs.is_main else {},
                                         (cache_file, before_file) if procs.is_main else None)
        trainer.add_callback(before_cb)
    cuda = device == "cuda"
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()  # this process's peak over train(): the planner's quantity
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall_s = time.perf_counter() - t0 - (before_cb.seconds if before_cb else 0.0)
    if cuda:
        info["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    # RoPE's inv_freq as training left it (FSDP's buffer dtype; fp32 on one GPU)
    rope = sorted({str(b.dtype).removeprefix("torch.") for n, b in trainer.model.named_buffers()
                   if n.endswith("inv_freq")})
    if rope:
        info["rope_inv_freq_dtype"] = rope
    after = _eval_losses(trainer) if n_held else {}

    # Final checkpoint: written to a temporary folder, then renamed, so it is whole or absent.
    # Every process takes part (gathering the shards is a collective); the main one writes.
    final = store.arm_model_dir(arm)
    tmp = arm_dir / ".model.tmp"
    if getattr(trainer, "is_fsdp_enabled", False):
        # Sharded state dicts keep the resumable checkpoints cheap, but with one save_model writes
        # no weights at all: gather a full state dict (on the main process) for the final model.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    adapters = mitigation.of_arm(params, arm).lora is not None
    deepspeed = getattr(trainer, "is_deepspeed_enabled", False)
    # LoRA, and any model under DeepSpeed: the full fp32 state dict, gathered by every process
    # (under ZeRO-3 save_model would write the bf16 copies, rounding the fp32 start weights)
    state = final_state_dict(trainer, start, procs.is_main, trained_only=adapters) if adapters or deepspeed else None
    if not procs.is_main:
        if state is None:  # collective under FSDP (gathers the shards); writes nothing here
            trainer.save_model(str(tmp))
        return {"checkpoint": str(final), "process": "worker"}
    shutil.rmtree(tmp, ignore_errors=True)
    if state is None:
        trainer.save_model(str(tmp))
    else:  # LoRA: evaluated merged, the adapter kept too (docs/METHODS.md, "Mitigation strategies")
        save_gathered(trainer.accelerator.unwrap_model(trainer.model), state, tmp, start,
                      store.arm_adapter_dir(arm) if adapters else None, trusts_remote_code(params, arm))
    if not any(tmp.glob("*.safetensors")):  # e.g. an engine config that saves shards only
        raise RuntimeError(f"arm {arm!r}: the final checkpoint {tmp} holds no safetensors weights")
    final_dtype = saved_dtypes(tmp)
    if final_dtype != ["float32"]:  # every engine saves fp32: phase chains and MPD depend on it
        raise RuntimeError(f"arm {arm!r}: the final checkpoint holds {final_dtype} tensors, not float32 only")
    tok.save_pretrained(str(tmp))
    # Our checkpoints hold no pickle: the Trainer's training_args.bin is a torch.save'd object.
    if (tmp / "training_args.bin").exists():
        (tmp / "training_args.bin").unlink()
    (tmp / "training_args.json").write_text(args.to_json_string())
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)

    log = trainer.state.log_history
    write_jsonl(store.arm_file(arm, "train_log.jsonl"), log)
    metrics = {
        "arm": arm, "trained": True, "phase": spec.phase, "datasets": spec.datasets,
        "checkpoint": str(final), "examples": n_rows, "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch, "trained_tokens": int(trainer.state.num_input_tokens_seen),
        "train_loss": result.training_loss, **_loss_summary(log),
        "eval_examples": n_held, "eval_loss_before": before.get("heldout"),
        "eval_loss_after": after.get("heldout"), "train_rows_loss_before": before.get("train"),
        "train_rows_loss_after": after.get("train"),
        "wall_s": wall_s, "resumed_from": resume.name if resume else None, "device": device,
        "bf16": args.bf16, "processes": procs.world_size, "final_dtype": final_dtype[0], **info,
    }
    if getattr(trainer, "is_deepspeed_enabled", False) and args.bf16:  # where DeepSpeed's masters began
        metrics["deepspeed_start_masters"] = (f"fp32 start checkpoint ({masters.restored} tensors)" if masters
                                              else f"DeepSpeed checkpoint {resume.name} (resumed)")
    atomic_write_json(store.arm_file(arm, "metrics.json"), metrics)
    kill_point("train:metrics-written")
    return metrics


def _written_not_marked(stage, store: RunStore, arm: str) -> bool:
    """Whether a run with these inputs wrote the arm's final model and then its metrics.json
    (its last file) but was stopped before marking the stage done. (begin() removes both
    whenever the inputs change or the arm is forced, so they are this run's.)"""
    return (stage.status() in ("running", "failed") and store.arm_file(arm, "metrics.json").exists()
            and store.arm_model_dir(arm).is_dir())


def _stage_outputs(metrics: dict[str, Any]) -> dict[str, Any]:
    """What an arm's manifest records of it: its checkpoint, and where DeepSpeed's masters began."""
    return {"checkpoint": metrics["checkpoint"],
            **{k: metrics[k] for k in ("deepspeed_start_masters",) if k in metrics}}


def _remove_checkpoints(store: RunStore, arm: str) -> None:
    """The resume state of a finished arm (no longer needed once its stage is marked done)."""
    shutil.rmtree(store.arm_checkpoints_dir(arm), ignore_errors=True)


def train_arms(params: Params, arms: Sequence[str], force: bool = False,
               progress: bool = True) -> dict[str, dict[str, Any]]:
    """Train several arms in dependency order; returns metrics per arm.

    With ``runtime.processes`` above 1 (and not already inside a launched process), each arm
    not done yet is trained by ``accelerate launch`` in that many processes (:func:`launch_arm`)."""
    store = params.store
    order = [a for a in params.arm_order() if a in arms]
    if params.runtime.processes > 1 and not launched():
        for a in order:  # before any launch: a batch the processes cannot share fails at once
            if params.arms[a].datasets:
                accumulation_steps(params.arm_training(a), params.runtime.processes)
            if params.arms[a].start in params.models:
                # built or converted here, once: in the launch every process would race to
                # build it (and transformers saves from the main process only)
                model_checkpoint(params, params.arms[a].start)
        out = {}
        for a in order:
            stage = store.stage(f"arms/{a}", arm_input_hash(params, a))
            if force or not stage.is_done():
                launch_arm(params, a, force=force)
            out[a] = store.arm_metrics(a)
        return out
    return {a: train_arm(params, a, force=force, progress=progress) for a in order}


def arms_named(params: Params, names: Sequence[str]) -> list[str]:
    """The arms ``--arm`` names: arms, phases (their arms) and ``all`` (every arm); an unknown
    name is an error that lists the valid ones."""
    phases = {a.phase for a in params.arms.values()}
    out: list[str] = []
    for name in names:
        if name in params.arms:
            picked = [name]
        elif name == "all":
            picked = list(params.arm_order())
        elif name in phases:
            picked = params.arms_in_phase(name)
        elif name in params.disabled_arms:
            ds = params.disabled_arms[name]
            raise SystemExit(f"error: arm {name!r} is left out of {params.name}: it needs dataset {ds!r}, whose "
                             f"path is not set (--set datasets.{ds}.path=ORG/NAME)")
        else:
            raise SystemExit(f"error: --arm {name!r} is no arm, phase or 'all' of {params.name}; arms: "
                             f"{sorted(params.arms)}; phases: {sorted(phases)}")
        out += [a for a in picked if a not in out]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cft_helpers.train``: train arms (or every arm of a phase) of a parameter set."""
    ap = argparse.ArgumentParser(prog="python -m cft_helpers.train",
                                 description="The training core: one arm of the grid, full fine-tuning with "
                                             "TRL's SFTTrainer.")
    ap.add_argument("--params", required=True, help="params YAML file or preset name")
    ap.add_argument("--arm", required=True, action="append",
                    help="arm to train, a phase (phase1, phase2, ...: its arms), or all (every arm, in "
                         "dependency order); repeatable")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="override, e.g. training.learning_rate=1e-4 (repeatable)")
    ap.add_argument("--force", action="store_true", help="retrain even if done")
    ns = ap.parse_args(argv)
    params = load_params(ns.params, overrides=ns.overrides)
    if refuse_if_locked(params.run_path):  # a book running on this store: only its own children pass
        return 1
    arms = arms_named(params, ns.arm)
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
