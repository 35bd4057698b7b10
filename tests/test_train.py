"""The training core on the smoke model: response-only loss, skip-if-done, force, resume."""

from __future__ import annotations

import json

import pytest
import torch

from cft_helpers.train import build_trainer, train_arm


def test_only_response_tokens_carry_loss(prepared, tmp_path):
    """Labels are -100 on system/user/template tokens and equal the ids on the response."""
    store = prepared.store
    trainer, n_rows, _, _ = build_trainer(prepared, "p1_instruct", tmp_path / "out", "cpu",
                                          progress=False)
    tok = trainer.processing_class
    from cft_helpers.data import training_examples

    rows = training_examples(store, ["instruct"], seed=prepared.training.seed)
    assert n_rows == len(rows)
    # the smoke tokenizer (512 tokens) makes some stated-instruction prompts fill max_length: TRL drops
    # those (no response token left), and the arm counts them
    from cft_helpers.train import rows_without_response

    prompt_lengths = [len(tok(tok.apply_chat_template(r["messages"][:-1], tokenize=False, add_generation_prompt=True),
                              add_special_tokens=False)["input_ids"]) for r in rows]
    kept = [r for r, n in zip(rows, prompt_lengths) if n < prepared.training.max_length]
    assert rows_without_response(tok, rows, prepared.training.max_length) == len(rows) - len(kept) > 0
    assert len(trainer.train_dataset) == len(kept)
    for example, row in zip(trainer.train_dataset, kept):
        ids, labels = example["input_ids"], example["labels"]
        trained = [t for t, lab in zip(ids, labels) if lab != -100]
        assert all(lab in (-100, t) for t, lab in zip(ids, labels))
        response = row["messages"][-1]["content"]
        if len(ids) < prepared.training.max_length:
            assert tok.decode(trained) == response + "<|im_end|>\n"
        else:   # truncated at max_length: the response's beginning is learned
            assert (response + "<|im_end|>\n").startswith(tok.decode(trained)) and trained
        first = labels.index(next(lab for lab in labels if lab != -100))
        prompt_text = tok.decode(ids[:first])
        assert prompt_text.endswith("<|im_start|>assistant\n")
        assert row["messages"][0]["content"] in prompt_text  # the system prompt is masked
        assert all(lab == -100 for lab in labels[:first])
    # smoke params batch padding-free: no example's first token is a target (it would be predicted
    # from the end of the previous example in the flattened row)
    assert prepared.training.padding_free
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert (batch["labels"][batch["position_ids"] == 0] == -100).all()


def test_done_arm_is_skipped_force_retrains_changed_inputs_retrain(prepared):
    store = prepared.store
    m1 = train_arm(prepared, "p1_alpaca", progress=False)
    finished = store.arm_manifest("p1_alpaca")["finished"]
    assert m1["trained"] and m1["steps"] == 4
    m2 = train_arm(prepared, "p1_alpaca", progress=False)
    assert m2 == m1 and store.arm_manifest("p1_alpaca")["finished"] == finished
    m3 = train_arm(prepared, "p1_alpaca", force=True, progress=False)
    assert store.arm_manifest("p1_alpaca")["status"] == "done"
    assert m3["wall_s"] != m1["wall_s"]
    # a different learning rate is a different arm result: not skipped
    from cft_helpers.params import load_params

    changed = load_params(prepared.source_path, overrides="training.learning_rate=1e-3")
    old_hash = store.arm_manifest("p1_alpaca")["input_hash"]
    train_arm(changed, "p1_alpaca", progress=False)
    assert store.arm_manifest("p1_alpaca")["input_hash"] != old_hash


def test_phase2_needs_its_phase1_arm(prepared):
    with pytest.raises(RuntimeError, match="p1_alpaca"):
        train_arm(prepared, "p2_alpaca", progress=False)


class _Crash(Exception):
    pass


def _crash_after_save(step: int):
    from transformers import TrainerCallback

    class CrashAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise _Crash(f"simulated crash after checkpoint {step}")

    return CrashAfterSave()


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_interrupted_run_resumes_from_its_last_checkpoint(prepared, tmp_path_factory):
    """Crash after the step-2 checkpoint of the mixture arm (10 steps), rerun: it resumes and
    ends with the weights of an uninterrupted run."""
    store = prepared.store
    with pytest.raises(_Crash):
        train_arm(prepared, "mixture", callbacks=[_crash_after_save(2)], progress=False)
    m = store.arm_manifest("mixture")
    assert m["status"] == "failed" and "simulated crash" in m["error"]
    assert (store.arm_dir("mixture") / "checkpoints" / "checkpoint-2").is_dir()
    with pytest.raises(RuntimeError, match="not done"):
        store.arm_checkpoint("mixture")

    resumed = train_arm(prepared, "mixture", progress=False)
    assert resumed["resumed_from"] == "checkpoint-2"
    assert resumed["steps"] == 10 and store.arm_manifest("mixture")["status"] == "done"
    assert not (store.arm_dir("mixture") / "checkpoints").exists()

    # the same arm without interruption, in another run store
    from cft_helpers.data import prepare_datasets
    from cft_helpers.params import load_params

    other = load_params(prepared.source_path, overrides=f"run_dir={tmp_path_factory.mktemp('clean')}")
    prepare_datasets(other, progress=False)
    clean = train_arm(other, "mixture", progress=False)
    assert clean["resumed_from"] is None
    a, b = _weights(store.arm_checkpoint("mixture")), _weights(other.store.arm_checkpoint("mixture"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5)
    assert resumed["trained_tokens"] == clean["trained_tokens"]


def test_heldout_response_loss_matches_the_trainers_loss(prepared, tmp_path):
    """cft_helpers.heldout masks prompts exactly as the trainer does: same rows, same loss."""
    from cft_helpers.data import load_prepared
    from cft_helpers.heldout import response_loss

    store = prepared.store
    trainer = build_trainer(prepared, "p1_instruct", tmp_path / "out", "cpu", progress=False).trainer
    rows = load_prepared(store, "instruct", "heldout")[:4]  # one eval batch: token-weighted mean
    from cft_helpers.train import _to_dataset

    trainer_loss = trainer.evaluate(eval_dataset=_to_dataset(rows))["eval_loss"]
    ours = response_loss(trainer.model, trainer.processing_class, rows, batch_size=3)
    assert ours == pytest.approx(trainer_loss, rel=1e-4)


def test_training_refuses_data_prepared_for_other_parameters(prepared):
    from cft_helpers.params import load_params

    changed = load_params(prepared.source_path, overrides="datasets.alpaca.n=12")
    with pytest.raises(RuntimeError, match="01_data_prep"):
        train_arm(changed, "p1_alpaca", progress=False)


def test_training_refuses_to_start_without_disk_space_for_its_checkpoints(prepared, monkeypatch):
    import shutil as _shutil
    from collections import namedtuple

    from cft_helpers.files import DiskSpaceError
    from cft_helpers.train import checkpoint_bytes, train_arm

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(_shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskSpaceError, match=r"training arm 'p1_alpaca' needs about .* GB under .* only 0.00 GB"):
        train_arm(prepared, "p1_alpaca", progress=False)
    assert prepared.store.arm_manifest("p1_alpaca")["status"] == "failed"
    assert checkpoint_bytes(100, 10) == pytest.approx(1.1 * (2 * (400 + 80) + 400))


def test_examples_longer_than_max_length_are_counted_not_truncated_silently(tmp_path, model_cache):
    from conftest import write_params

    from cft_helpers.data import prepare_datasets
    from cft_helpers.data.prepare import training_examples
    from cft_helpers.models import load_tokenizer
    from cft_helpers.params import load_params
    from cft_helpers.train import start_checkpoint, train_arm

    params = load_params(write_params(tmp_path, model_cache), overrides={"training.max_length": 48})
    prepare_datasets(params, progress=False)
    with pytest.warns(UserWarning, match=r"longer than training.max_length=48 tokens and will be truncated"):
        metrics = train_arm(params, "p1_alpaca", progress=False)
    store = params.store
    tok = load_tokenizer(start_checkpoint(params, "p1_alpaca"))
    lengths = [len(tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)["input_ids"])
               for r in training_examples(store, ["alpaca"], seed=params.training.seed)]
    assert metrics["rows_over_max_length"] == sum(n > 48 for n in lengths) > 0


def test_checkpoints_hold_no_pickle_and_remote_code_stays_off(prepared, monkeypatch):
    """Safety: the final model folder has safetensors weights and JSON, nothing torch.load would
    unpickle; the model is loaded with trust_remote_code=False unless its params entry says true."""
    import transformers

    from cft_helpers.train import train_arm

    seen = []
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    train_arm(prepared, "p1_alpaca", progress=False)
    assert seen and not any(seen)
    model_dir = prepared.store.arm_checkpoint("p1_alpaca")
    suffixes = {f.suffix for f in model_dir.iterdir()}
    assert ".safetensors" in suffixes and (model_dir / "training_args.json").exists()
    assert not suffixes & {".bin", ".pt", ".pth", ".pkl", ".pickle"}, suffixes


def test_a_final_save_without_weights_fails_the_arm_instead_of_leaving_an_empty_model(prepared, monkeypatch):
    """An engine config whose save_model writes no weights (FSDP with a sharded state dict, before
    the training core switched it to a full one) must not become a 'done' arm."""
    from trl import SFTTrainer

    from cft_helpers.train import train_arm

    original = SFTTrainer.save_model

    def no_final_weights(self, output_dir=None, _internal_call=False):
        if not str(output_dir).endswith(".model.tmp"):  # resumable checkpoints are saved as usual
            original(self, output_dir, _internal_call)

    monkeypatch.setattr(SFTTrainer, "save_model", no_final_weights)
    with pytest.raises(RuntimeError, match=r"arm 'p1_alpaca': the final checkpoint .* holds no safetensors"):
        train_arm(prepared, "p1_alpaca", force=True, progress=False)
    store = prepared.store
    assert store.arm_manifest("p1_alpaca")["status"] == "failed"
    assert not (store.arm_dir("p1_alpaca") / "model").exists()


def test_padding_free_batches_give_the_padded_losses_and_compute_no_padding(prepared, tmp_path):
    """training.padding_free flattens a micro-batch with restarting position ids: the loss and its
    gradient equal the padded batch's (examples do not attend to each other), with no pad tokens."""
    from cft_helpers.params import load_params

    flat = load_params(prepared.source_path, overrides={"training.padding_free": True})
    padded_p = load_params(prepared.source_path, overrides={"training.padding_free": False})
    padded_tr = build_trainer(padded_p, "p1_instruct", tmp_path / "a", "cpu", progress=False).trainer
    flat_tr = build_trainer(flat, "p1_instruct", tmp_path / "b", "cpu", progress=False).trainer
    examples = [padded_tr.train_dataset[i] for i in range(4)]
    lengths = [len(e["input_ids"]) for e in examples]
    assert len(set(lengths)) > 1  # the padded batch does carry padding
    padded, flat_batch = padded_tr.data_collator(examples), flat_tr.data_collator(examples)
    assert padded["input_ids"].shape == (4, max(lengths))
    assert flat_batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in flat_batch
    assert flat_batch["position_ids"][0].tolist() == [i for n in lengths for i in range(n)]

    def loss_and_grad(trainer, batch):
        model = trainer.model
        model.zero_grad()
        n = (batch["labels"][:, 1:] != -100).sum()
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n)
        loss.backward()
        return loss.item(), model.model.layers[0].self_attn.q_proj.weight.grad.clone()

    loss_a, grad_a = loss_and_grad(padded_tr, padded)
    loss_b, grad_b = loss_and_grad(flat_tr, flat_batch)
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    rel = ((grad_b - grad_a).norm() / grad_a.norm()).item()
    # a wrong flattening (one position run over the whole row: examples attend to each other)
    mixed = dict(flat_batch, position_ids=torch.arange(sum(lengths))[None])
    mixed = {k: v for k, v in mixed.items() if not k.startswith(("cu_seq", "max_length"))}
    wrong = ((loss_and_grad(flat_tr, mixed)[1] - grad_a).norm() / grad_a.norm()).item()
    assert rel < 1e-4 and wrong > 100 * rel, (rel, wrong)


def test_arms_from_the_same_model_share_the_loss_before_training(prepared, monkeypatch):
    """The held-out loss before training depends on the start model and the rows only: the second
    arm from the Phase-1 model reads it from the run store's cache instead of evaluating again,
    and gets the value a fresh evaluation gives."""
    import cft_helpers.train as train

    store = prepared.store
    train_arm(prepared, "p1_instruct", progress=False)
    evaluated = []
    original = train._eval_losses

    def spy(trainer, names=None):
        out = original(trainer, names)
        evaluated.append(sorted(out))
        return out

    monkeypatch.setattr(train, "_eval_losses", spy)
    vanilla = train_arm(prepared, "p2_instruct", progress=False)
    assert evaluated == [["heldout", "train"], ["heldout", "train"]]  # before and after, nothing cached
    evaluated.clear()
    frozen = train_arm(prepared, "lf_h1", progress=False)
    assert evaluated == [["heldout", "train"]]  # after training only: both sets came from the cache
    assert frozen["eval_loss_before"] == vanilla["eval_loss_before"]
    assert frozen["train_rows_loss_before"] == vanilla["train_rows_loss_before"]
    assert frozen["eval_loss_after"] != vanilla["eval_loss_after"]  # the arms themselves differ
    # the cached value is what evaluating the start model gives
    monkeypatch.setattr(train, "_eval_losses", original)
    (store.root / "losses_before_training.json").unlink()
    fresh = train_arm(prepared, "lf_h1", force=True, progress=False)
    assert fresh["eval_loss_before"] == pytest.approx(vanilla["eval_loss_before"], rel=1e-6)


def test_bf16_on_cpu_only_where_the_cpu_has_native_bf16(monkeypatch):
    """`auto` is fp32 on every CPU (same numbers on any machine); `bf16` is refused on a CPU
    without native bf16 (2.6x slower there) and used on one with it."""
    import cft_helpers.runtime as runtime
    from cft_helpers.params import Training

    for native in (False, True):
        monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
        assert runtime.use_bf16(Training(precision="auto"), "cpu") is False
        assert runtime.use_bf16(Training(precision="fp32"), "cpu") is False
        if native:
            assert runtime.use_bf16(Training(precision="bf16"), "cpu") is True
        else:
            with pytest.raises(ValueError, match="native bf16"):
                runtime.use_bf16(Training(precision="bf16"), "cpu")


def test_a_kill_before_the_stage_is_marked_done_resumes_instead_of_retraining(prepared):
    """Killed (CFT_KILL_AT, deterministic) after the final model and metrics are written but
    before the stage is marked done: the rerun marks it done and trains nothing (not again from
    its start, and not one step more from its last checkpoint). Killed after the stage is done
    but before the checkpoints are removed: the rerun removes them, trains nothing."""
    import os
    import subprocess
    import sys

    store = prepared.store
    env = {**os.environ, "CFT_KILL_AT": "train:before-finish", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "cft_helpers.train", "--params", str(prepared.source_path),
                           "--arm", "p1_alpaca"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert store.arm_manifest("p1_alpaca")["status"] == "running"
    killed = _weights(store.arm_dir("p1_alpaca") / "model")
    written = store.arm_file("p1_alpaca", "metrics.json").read_text()
    steps = json.loads(written)["steps"]
    assert (store.arm_checkpoints_dir("p1_alpaca") / f"checkpoint-{steps}").is_dir()

    rerun = train_arm(prepared, "p1_alpaca", progress=False)
    assert rerun == json.loads(written) and store.arm_file("p1_alpaca", "metrics.json").read_text() == written
    m = store.arm_manifest("p1_alpaca")
    assert m["status"] == "done" and m["outputs"]["checkpoint"] == rerun["checkpoint"]
    assert not store.arm_checkpoints_dir("p1_alpaca").exists()
    again = _weights(store.arm_checkpoint("p1_alpaca"))
    assert again.keys() == killed.keys() and all(torch.equal(again[k], killed[k]) for k in killed)

    # the other window: done, checkpoints left behind by the kill; a rerun trains nothing
    left = store.arm_checkpoints_dir("p1_alpaca") / f"checkpoint-{steps}"
    left.mkdir(parents=True)
    assert train_arm(prepared, "p1_alpaca", progress=False) == store.arm_metrics("p1_alpaca")
    assert not store.arm_checkpoints_dir("p1_alpaca").exists()
