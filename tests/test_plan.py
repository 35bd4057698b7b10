"""The dry-run planner: exact parameter counts on the meta device, memory arithmetic by hand,
refusal of plans that cannot fit."""

from __future__ import annotations

import pytest

from cft_helpers.params import load_params
from cft_helpers.plan import GIB, PlanError, main, plan, refusals

PRESETS = ["params/paper/mistral7b.yaml", "params/paper/llama3_8b.yaml"]

# Mistral-7B-v0.1 by hand: untied embeddings and LM head (32000 x 4096 each); per layer q, o
# 4096x4096, k, v 1024x4096 (8 KV heads), MLP 3 x 4096x14336, two RMSNorms; a final norm.
H, FFN, KV, V, L = 4096, 14336, 1024, 32000, 32
PER_LAYER = 2 * H * H + 2 * KV * H + 3 * H * FFN + 2 * H
MISTRAL = 2 * V * H + L * PER_LAYER + H


@pytest.mark.parametrize("preset", PRESETS)
def test_every_paper_arm_is_planned_and_fits_the_papers_hardware(preset, capsys):
    assert main(["--params", preset]) == 0
    out = capsys.readouterr().out
    params = load_params(preset)
    trained = [a for a in params.arms if params.arms[a].datasets]
    assert all(a in out for a in trained) and "fsdp on 4 x 80 GiB" in out


def test_memory_and_steps_match_a_hand_computation():
    params = load_params(PRESETS[0])
    p = {x.arm: x for x in plan(params)}["p2_alpaca"]
    assert MISTRAL == 7_241_732_096 and p.total_params == p.trainable_params == MISTRAL
    shards = 4                                                     # FSDP full shard over 4 GPUs
    assert p.weights_gib == pytest.approx(4 * MISTRAL / shards / GIB)
    assert p.gradients_gib == pytest.approx(4 * MISTRAL / shards / GIB)
    assert p.optimizer_gib == pytest.approx(8 * MISTRAL / shards / GIB)
    tokens = 4 * 2048                                              # micro batch 4 x max_length 2048
    acts = 2 * H * tokens * L + 2 * (10 * H + 3 * FFN) * tokens + 8 * V * tokens   # checkpointing on
    assert p.activations_gib == pytest.approx(acts / GIB)
    assert p.total_gib == pytest.approx((16 * MISTRAL / shards + acts) / GIB + 2.0)
    assert p.rows == 132_701 and p.optimizer_steps == 4 * -(-132_701 // 16)
    assert p.tokens_total == pytest.approx(132_701 * 200 * 4)
    flops = 8 * MISTRAL * 132_701 * 200 * 4                        # fwd 2N + bwd 4N + recompute 2N
    assert p.flops == pytest.approx(flops)
    assert p.gpu_hours == pytest.approx(flops / (312e12 * 0.35) / 3600)
    assert p.implied_mfu == pytest.approx(flops / (4 * 3600 * 4 * 312e12))   # the paper's 4 h on 4 GPUs


def test_mitigation_arms_train_what_their_strategy_leaves_trainable():
    params = load_params(PRESETS[0])
    by_arm = {x.arm: x for x in plan(params)}
    assert by_arm["lf_h1"].trainable_params == MISTRAL - 10 * PER_LAYER       # 10 whole layers frozen
    assert by_arm["lf_h2"].trainable_params == MISTRAL - 10 * (H * H + 2 * KV * H)  # q, k, v in 10 layers each
    half = 16 * (2 * H * H + 2 * KV * H + 3 * H * FFN)                         # half of each type's 32 matrices
    assert by_arm["spectrum"].trainable_params == MISTRAL - half
    r = 64
    lora = L * r * ((H + H) * 2 + (H + KV) * 2 + (H + FFN) * 3)               # all linear layers but lm_head
    assert by_arm["lora"].trainable_params == lora and by_arm["lora"].total_params == MISTRAL + lora
    assert by_arm["gr_10"].rows == 132_701 + round(0.1 * 132_701)


@pytest.mark.parametrize("preset", PRESETS)
def test_table_d8_arms_are_planned_and_kept_out_of_table_5(preset, capsys):
    params = load_params(preset)
    d8 = [a for a in params.strategy_arms(table="D8") if params.arms[a].phase == "mitigation"]
    assert len(d8) == 7 and not set(d8) & set(params.strategy_arms())
    assert main(["--params", preset] + [f"--arm={a}" for a in d8]) == 0
    out = capsys.readouterr().out
    assert all(a in out for a in d8)
    by_arm = {x.arm: x for x in plan(params, d8)}
    assert by_arm["d8_er_10"].rows == 550_000 + 55_000 and by_arm["d8_gr_5"].rows == 550_000 + 27_500


def test_an_impossible_plan_is_refused_with_the_numbers(capsys):
    assert main(["--params", PRESETS[1], "--engine", "single", "--gpu-memory", "24", "--arm", "p2_alpaca"]) == 1
    err = capsys.readouterr().err
    assert "arm 'p2_alpaca' (vanilla) needs" in err and "GiB per GPU but a GPU has 24 GiB: over by" in err
    params = load_params(PRESETS[1], overrides={"plan.engine": "single", "plan.gpu_memory_gib": 24})
    [p] = plan(params, ["p2_alpaca"])
    assert p.weights_gib + p.gradients_gib + p.optimizer_gib == pytest.approx(16 * 8_030_261_248 / GIB)
    assert not p.fits and refusals([p])


def test_planner_reads_a_local_architecture_and_says_what_is_missing(smoke_params):
    plans = plan(smoke_params)
    assert {p.arm for p in plans} == set(smoke_params.arms)
    assert all(p.fits and p.total_params < 1e6 for p in plans)
    assert {p.arm: p.rows for p in plans}["mixture"] == 16 + 22
    params = load_params(PRESETS[0], overrides={"plan.architecture": None})
    with pytest.raises(PlanError, match="plan.architecture"):
        plan(params)
    params = load_params(PRESETS[0], overrides={"plan.dataset_rows": {}})
    with pytest.raises(PlanError, match="plan.dataset_rows.alpaca"):
        plan(params)


def test_max_steps_bounds_the_planned_tokens():
    """The Trainer runs exactly max_steps optimizer steps whatever `epochs` says: the plan's token
    total is max_steps x global batch examples at the mean example length."""
    p = load_params("params/paper/mistral7b.yaml")
    full, = plan(p, ["p2_alpaca"])
    capped, = plan(load_params("params/paper/mistral7b.yaml", overrides={"training.max_steps": 100}), ["p2_alpaca"])
    per_row = full.tokens_per_epoch / full.rows
    assert capped.optimizer_steps == 100
    assert capped.tokens_total == pytest.approx(100 * p.training.global_batch_size * per_row)
    assert capped.tokens_total < full.tokens_total / 100
