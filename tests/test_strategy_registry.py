"""The strategy registry (cft_helpers.mitigation): adding a strategy is one register() call."""

from __future__ import annotations

import json

import pytest
import torch

from cft_helpers import mitigation
from cft_helpers.checkpoints import read_tensor, tensor_files
from cft_helpers.freezing import FreezePlan, n_layers_of
from cft_helpers.params import ParamsError, load_params

from conftest import write_params

TOY = "toy_last_mlp"


def _train_only_the_last_mlp(x: mitigation.FreezeInputs) -> FreezePlan:
    """Freeze every parameter but the last decoder layer's MLP (reads the names only, so it is
    its own estimate for the planner too)."""
    last = n_layers_of(x.names) - 1
    trains = [n for n in x.names if f"layers.{last}.mlp." in n]
    return FreezePlan(TOY, [n for n in x.names if n not in trains], trains, {"layer": last})


@pytest.fixture
def toy_strategy():
    mitigation.register(mitigation.Strategy(TOY, freeze=_train_only_the_last_mlp))
    try:
        yield TOY
    finally:
        mitigation.unregister(TOY)


def test_the_papers_strategies_in_table5_order():
    assert mitigation.PAPER_STRATEGIES == ("vanilla", "LF_H1", "LF_H2", "Spectrum", "GR_5", "GR_10", "ER_10", "LoRA")
    entries = {n: mitigation.get(n) for n in mitigation.PAPER_STRATEGIES}
    assert [n for n, e in entries.items() if e.baseline] == ["vanilla"]
    assert [n for n, e in entries.items() if e.freeze] == ["LF_H1", "LF_H2", "Spectrum"]
    assert {n: (e.replay.fraction, e.replay.generated) for n, e in entries.items() if e.replay} == {
        "GR_5": (0.05, True), "GR_10": (0.10, True), "ER_10": (0.10, False)}
    assert [n for n, e in entries.items() if e.lora] == ["LoRA"]
    with pytest.raises(ValueError, match="already registered"):
        mitigation.register(mitigation.Strategy("LF_H1"))
    with pytest.raises(ValueError, match=r"unknown strategy 'LF_H3'; valid: \['vanilla', 'LF_H1'"):
        mitigation.get("LF_H3")


def test_a_registered_strategy_trains_on_the_smoke_params(toy_strategy, tmp_path, model_cache):
    """One register() entry, and an arm of the smoke params trains with it: its frozen tensors end
    bit-identical to the start, its trainable ones moved, the planner counts what it trained, and
    its name enters the arm's input hash (a vanilla arm's does not)."""
    from cft_helpers.data import prepare_datasets
    from cft_helpers.plan import architecture, meta_shapes, parameter_counts
    from cft_helpers.train import arm_input_hash, train_arm

    arm = {"phase": "mitigation", "start": "p1_instruct", "datasets": ["multialpaca"], "strategy": toy_strategy}
    params = load_params(write_params(tmp_path, model_cache), overrides={"arms.toy": arm, "training.max_steps": 2})
    assert params.strategy_arms(toy_strategy) == ["toy"]
    prepare_datasets(params, progress=False)
    store = params.store
    train_arm(params, "p1_instruct", progress=False)
    m = train_arm(params, "toy", progress=False)

    plan = json.loads((store.arm_dir("toy") / "freeze.json").read_text())
    assert plan["strategy"] == TOY and m["strategy"] == TOY and m["steps"] == 2
    assert plan["trainable"] == ["model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight",
                                 "model.layers.1.mlp.down_proj.weight"]
    assert m["frozen_tensors"] == len(plan["frozen"]) > 0
    start, final = tensor_files(store.arm_checkpoint("p1_instruct")), tensor_files(store.arm_checkpoint("toy"))
    for name in final:
        same = torch.equal(read_tensor(start[name], name), read_tensor(final[name], name))
        assert same == (name in plan["frozen"]), name  # frozen: unchanged; trained: moved

    config = architecture(params, "base")
    total, trainable, with_grad, note = parameter_counts(params, "toy", meta_shapes(config), config)
    assert (total, trainable, with_grad, note) == (m["total_params"], m["trainable_params"], trainable, "")
    assert trainable == 3 * 64 * 128

    toy_hash = arm_input_hash(params, "toy")
    params.arms["toy"].strategy = "vanilla"  # the same arm trained plainly is another arm
    assert arm_input_hash(params, "toy") != toy_hash


def test_an_unregistered_strategy_is_refused(tmp_path, model_cache):
    arm = {"phase": "mitigation", "start": "p1_instruct", "datasets": ["multialpaca"], "strategy": TOY}
    with pytest.raises(ParamsError, match=f"unknown strategy '{TOY}'"):
        load_params(write_params(tmp_path, model_cache), overrides={"arms.toy": arm})
