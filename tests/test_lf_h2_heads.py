"""LF_H2 at head granularity (mitigation.layer_freezing.granularity: head): per projection and
attention head, the layers where that head's rows changed most in Phase 1, frozen by gradient
masks. The default stays projection granularity (tests/test_mitigation.py)."""

from __future__ import annotations

import json

import pytest
import torch

from cft_helpers import freezing
from cft_helpers.checkpoints import read_tensor, tensor_files
from cft_helpers.params import LayerFreezing, ParamsError, load_params
from cft_helpers.train import train_arm

from conftest import tiny_llama

HEAD = "mitigation.layer_freezing.granularity=head"


# (projection, head) -> {layer: Frobenius norm of the move of that head's rows}
MOVES = {
    ("q_proj", 0): {1: 3.0, 3: 2.0, 0: 0.5},
    ("q_proj", 1): {0: 1.0, 2: 4.0},
    ("q_proj", 2): {3: 2.0, 2: 1.5, 1: 0.1},
    ("q_proj", 3): {0: 5.0, 1: 4.0},
    ("k_proj", 0): {2: 1.0, 3: 1.1},
    ("k_proj", 1): {0: 2.0, 1: 0.3, 3: 0.2},
    ("v_proj", 0): {1: 0.7, 2: 0.9, 3: 0.1},
    ("v_proj", 1): {0: 3.0, 3: 3.5},
}
# the top 2 of 4 layers of each (projection, head), written out: (projection, head, layer)
EXPECTED = {("q_proj", 0, 1), ("q_proj", 0, 3), ("q_proj", 1, 0), ("q_proj", 1, 2),
            ("q_proj", 2, 2), ("q_proj", 2, 3), ("q_proj", 3, 0), ("q_proj", 3, 1),
            ("k_proj", 0, 2), ("k_proj", 0, 3), ("k_proj", 1, 0), ("k_proj", 1, 1),
            ("v_proj", 0, 1), ("v_proj", 0, 2), ("v_proj", 1, 0), ("v_proj", 1, 3)}


def _triples(plan: freezing.FreezePlan) -> set[tuple[str, int, int]]:
    return {(n.split(".")[-2], h, freezing.layer_of(n)) for n, m in plan.masked.items() for h in m["heads"]}


def test_head_ranking_freezes_exactly_the_heads_that_moved_most(tmp_path):
    base = tiny_llama(tmp_path / "base")
    phase1 = tiny_llama()
    with torch.no_grad():
        for (proj, head), per_layer in MOVES.items():
            for layer, size in per_layer.items():
                w = getattr(phase1.model.layers[layer].self_attn, proj).weight
                rows = w[head * 8:(head + 1) * 8]
                rows += size * torch.ones_like(rows) / rows.numel() ** 0.5   # that head's move: size
        phase1.save_pretrained(tmp_path / "p1")
    layout = freezing.head_layout(base.config)
    assert layout == {"q_proj": (4, 8), "k_proj": (2, 8), "v_proj": (2, 8)}
    changes = freezing.head_changes(tmp_path / "base", tmp_path / "p1", layout)
    assert changes["q_proj"][1][2] == pytest.approx(4.0, rel=1e-5) and changes["q_proj"][1][1] == 0.0
    assert changes["v_proj"][1][3] == pytest.approx(3.5, rel=1e-5) and set(changes["k_proj"]) == {0, 1}
    names = [n for n, _ in base.named_parameters()]
    plan = freezing.lf_h2_heads(names, changes, 2, layout)
    assert _triples(plan) == EXPECTED
    assert plan.frozen == [] and plan.trainable == names   # nothing frozen whole
    assert plan.masked["model.layers.0.self_attn.q_proj.weight"] == {"heads": [1, 3], "head_dim": 8,
                                                                     "rows": [[8, 16], [24, 32]]}
    assert plan.masked["model.layers.2.self_attn.q_proj.weight"]["rows"] == [[8, 24]]   # heads 1, 2 merged
    assert plan.details["layers"]["q_proj"]["3"] == [0, 1] and plan.details["granularity"] == "head"
    # the per-projection ranking would pick other layers: the head reading is a different rule
    assert freezing.lf_h2(names, freezing.projection_changes(tmp_path / "base", tmp_path / "p1"),
                          2).details["layers"]["q_proj"] == [0, 1]
    # frozen values: 16 (projection, head, layer) slices of 8 rows x 32 columns
    shapes = {n: tuple(p.shape) for n, p in base.named_parameters()}
    assert plan.frozen_values(shapes) == 16 * 8 * 32
    record = plan.as_dict()
    assert record["n_masked"] == len(plan.masked) == 12 and record["n_frozen"] == 0
    assert "masked" not in freezing.lf_h2(names, changes={"q_proj": {0: 1.0, 1: 0.0, 2: 0.0, 3: 0.0}},
                                          n_layers=1).as_dict()   # other plans are written as before
    with pytest.raises(ValueError, match="between 1 and 4"):
        freezing.lf_h2_heads(names, changes, 5, layout)
    with pytest.raises(ValueError, match="o_proj.*cannot be split"):
        freezing.head_changes(tmp_path / "base", tmp_path / "p1", layout, ["q_proj", "o_proj"])


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradient_masks_hold_rows_under_adamw_without_weight_decay(checkpointing):
    model = tiny_llama(layers=2)
    if checkpointing:  # gradients computed in the recomputation pass the hooks too
        model.gradient_checkpointing_enable()
        model.train()
    names = [n for n, _ in model.named_parameters()]
    layout = freezing.head_layout(model.config)
    changes = {p: {h: {0: float(h % 2), 1: float(1 - h % 2)} for h in range(layout[p][0])} for p in layout}
    plan = freezing.lf_h2_heads(names, changes, 1, layout)
    total = sum(p.numel() for p in model.parameters())
    assert freezing.apply(model, plan) == total - plan.frozen_values({n: p.shape for n, p in model.named_parameters()})
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(3):
        ids = torch.randint(0, 64, (2, 8))
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    params = dict(model.named_parameters())
    for name, entry in plan.masked.items():
        keep = torch.zeros(params[name].shape[0], dtype=torch.bool)
        for a, b in entry["rows"]:
            keep[a:b] = True
        assert torch.equal(params[name][keep], start[name][keep]), name
        assert not torch.equal(params[name][~keep], start[name][~keep]), name
    # with decoupled weight decay the masked rows move anyway: why head granularity refuses it
    model(input_ids=ids, labels=ids).loss.backward()   # (masked: zero gradient rows)
    torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1).step()
    name, entry = next(iter(plan.masked.items()))
    a, b = entry["rows"][0]
    assert not torch.equal(params[name][a:b], start[name][a:b])


def test_settings_are_validated_with_the_key_and_choices(tmp_path, model_cache):
    from conftest import write_params

    path = write_params(tmp_path, model_cache)
    with pytest.raises(ParamsError, match=r"layer_freezing: .*n_layers \(1\) and fraction \(0.5\) are both given"):
        load_params(path, overrides="mitigation.layer_freezing.fraction=0.5")
    lf = load_params(path, overrides="mitigation.layer_freezing={fraction: 0.5}").mitigation.layer_freezing
    assert lf.n_layers is None and lf.count(2) == 1 and lf.count(32) == 16
    assert LayerFreezing(fraction=0.3).count(5) == 2 and LayerFreezing(fraction=0.01).count(32) == 1
    assert LayerFreezing().count(32) == 10 and LayerFreezing().granularity == "projection"
    with pytest.raises(ParamsError, match=r"granularity: .*'projection' or 'head'.*got 'heads'"):
        load_params(path, overrides="mitigation.layer_freezing.granularity=heads")
    with pytest.raises(ParamsError, match=r"fraction: .*greater than 0"):
        load_params(path, overrides="mitigation.layer_freezing={fraction: 0}")
    with pytest.raises(ParamsError, match=r"granularity 'head'.*scope must be 'projection'.*'layer'"):
        load_params(path, overrides=f"{HEAD}; mitigation.layer_freezing.scope=layer")
    with pytest.raises(ParamsError, match=r"granularity 'head' splits.*\['o_proj'\]"):
        load_params(path, overrides=f"{HEAD}; mitigation.layer_freezing.projections=[q_proj, o_proj]")
    with pytest.raises(ParamsError, match="give n_layers .* or fraction"):
        load_params(path, overrides="mitigation.layer_freezing.n_layers=null")


# The smoke lf_h2 arm's input hash at the default (projection) granularity, as in
# tests/test_mitigation.py's HASHES_KEPT: new settings at their defaults leave it unchanged.
# (Generator version 2 changed the smoke data, so every arm's hash; before: b33ac09e3c1052d1,
# ccb167a1bdbac393, 52f2f2bad9f9a172.)
LF_H2_HASH = "97ef07ece68efb29"
LF_H2_HEAD_HASH = "c19f7abe80fa4b2b"
LF_H1_HASH = "2cc3c9b9d19b25bb"


def test_new_settings_enter_the_hash_only_when_not_default(tmp_path, model_cache):
    from conftest import write_params

    from cft_helpers.data import prepare_datasets
    from cft_helpers.train import arm_input_hash

    path = write_params(tmp_path, model_cache)
    hashes = {}
    for label, overrides in {"default": None, "explicit": "mitigation.layer_freezing.granularity=projection",
                             "head": HEAD, "fraction": "mitigation.layer_freezing={fraction: 0.5}"}.items():
        params = load_params(path, overrides=overrides)
        store = params.store
        if label == "default":
            prepare_datasets(params, progress=False)
            stage = store.stage("arms/p1_instruct", arm_input_hash(params, "p1_instruct"))
            stage.begin()
            stage.finish()  # what the Phase-2 arms' hashes read of their start: done, with its input hash
        hashes[label] = (arm_input_hash(params, "lf_h2"), arm_input_hash(params, "lf_h1"))
    assert hashes["default"] == hashes["explicit"] == (LF_H2_HASH, LF_H1_HASH)
    assert hashes["head"] == (LF_H2_HEAD_HASH, LF_H1_HASH)   # granularity never shapes LF_H1
    assert hashes["fraction"][0] not in (LF_H2_HASH, LF_H2_HEAD_HASH) and hashes["fraction"][1] != LF_H1_HASH


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def head_params(tmp_path_factory, model_cache):
    """Smoke params at head granularity with the Instruct Phase-1 arm trained."""
    from conftest import write_params

    from cft_helpers.data import prepare_datasets

    params = load_params(write_params(tmp_path_factory.mktemp("heads"), model_cache), overrides=HEAD)
    prepare_datasets(params, progress=False)
    train_arm(params, "p1_instruct", progress=False)
    return params


def test_head_granularity_training_keeps_frozen_rows_bit_identical(head_params):
    from cft_helpers.checkpoints import checkpoint_numel
    from cft_helpers.reports import compute_table, freeze_table, frozen_share_table

    store = head_params.store
    m = train_arm(head_params, "lf_h2", progress=False)
    record = json.loads((store.arm_dir("lf_h2") / "freeze.json").read_text())
    assert record["details"]["granularity"] == "head" and record["n_frozen"] == 0
    masked = record["masked"]
    assert record["n_masked"] == len(masked) == m["masked_tensors"] > 0
    for name, entry in masked.items():  # per tensor: its frozen heads and their rows
        assert entry["rows"] == freezing._row_ranges(entry["heads"], entry["head_dim"]), name
    # the smoke model: 4 query heads, 2 key/value heads of 16 rows; 1 of 2 layers per (projection, head)
    triples = {(n.split(".")[-2], h, freezing.layer_of(n)) for n, e in masked.items() for h in e["heads"]}
    assert len(triples) == 4 + 2 + 2
    assert {(p, h) for p, h, _ in triples} == {("q_proj", h) for h in range(4)} | {
        (p, h) for p in ("k_proj", "v_proj") for h in range(2)}
    start, final = tensor_files(store.arm_checkpoint("p1_instruct")), tensor_files(store.arm_checkpoint("lf_h2"))
    partly = 0
    for name, entry in masked.items():
        a, b = read_tensor(start[name], name), read_tensor(final[name], name)
        keep = torch.zeros(a.shape[0], dtype=torch.bool)
        for lo, hi in entry["rows"]:
            keep[lo:hi] = True
        assert torch.equal(a[keep], b[keep]), name                # frozen rows: bit-identical
        if (~keep).any():
            partly += 1
            assert not torch.equal(a[~keep], b[~keep]), name      # the rest of the tensor trained
    assert partly > 0
    for name in set(final) - set(masked):                         # every other tensor trained
        assert not torch.equal(read_tensor(start[name], name), read_tensor(final[name], name)), name
    # counts: only the masked rows are frozen values (64 columns each)
    rows = sum(hi - lo for e in masked.values() for lo, hi in e["rows"])
    total = checkpoint_numel(store.arm_checkpoint("lf_h2"))
    assert m["total_params"] == total and m["masked_params"] == rows * 64
    assert m["trainable_params"] == total - rows * 64 and m["optimizer_params"] == total
    share = frozen_share_table(head_params, ["lf_h2"]).loc["lf_h2", "frozen share"]
    assert share == pytest.approx(rows * 64 / total) and 0 < share < 1
    assert compute_table(head_params, ["lf_h2"]).loc["lf_h2", "partly frozen tensors"] == len(masked)
    ft = freeze_table(head_params, ["lf_h2"]).loc["lf_h2"]
    assert ft["frozen heads"] == 8 and ft["rule"]["granularity"] == "head"


def test_head_granularity_refuses_weight_decay(head_params):
    params = head_params.model_copy(deep=True)
    params.arms["lf_h2"].training.weight_decay = 0.1
    with pytest.raises(ValueError, match=r"granularity 'head'.*weight_decay is 0.1.*set training.weight_decay to 0"):
        train_arm(params, "lf_h2", progress=False)


def test_planner_counts_masked_rows_as_frozen_but_not_their_optimizer_state(tmp_path, model_cache, capsys):
    from conftest import write_params

    from cft_helpers.plan import PlanError, main, plan

    path = write_params(tmp_path, model_cache)
    # the smoke model by hand: tied 512 x 64 embedding; per layer q, o 64x64, k, v 32x64 (2 KV
    # heads of 16 rows), MLP 3 x 64x128, two RMSNorms; a final norm. n_layers 1 of 2.
    V, H, KV, FFN, L = 512, 64, 32, 128, 2
    total = V * H + L * (2 * H * H + 2 * KV * H + 3 * H * FFN + 2 * H) + H
    frozen = 1 * (H * H + 2 * KV * H)            # per (projection, head) one layer: q, k, v rows of one layer's worth
    head = {p.arm: p for p in plan(load_params(path, overrides=HEAD), ["lf_h2"])}["lf_h2"]
    proj = {p.arm: p for p in plan(load_params(path), ["lf_h2"])}["lf_h2"]
    assert head.total_params == total == 106_816
    assert head.trainable_params == proj.trainable_params == total - frozen == 98_624
    assert head.optimizer_params == total and proj.optimizer_params == total - frozen
    assert head.optimizer_gib * 2 ** 30 == 8 * total and head.gradients_gib * 2 ** 30 == 4 * total
    assert "memory does not shrink" in head.notes and not proj.notes
    assert main(["--params", str(path), "--arm", "lf_h2"]) == 0
    assert "memory does not shrink" not in capsys.readouterr().out
    params = load_params(path, overrides=f"{HEAD}; arms.lf_h2.training.weight_decay=0.01")
    with pytest.raises(PlanError, match="weight_decay is 0.01"):
        plan(params, ["lf_h2"])


def test_a_mask_that_does_not_hold_fails_the_arm(head_params, monkeypatch):
    """The check after training: with the masks' hooks made no-ops, the rows move and the arm fails
    instead of reporting them as frozen. (Last in the module: it retrains lf_h2.)"""
    monkeypatch.setattr(freezing, "_zero_rows", lambda rows: (lambda grad: grad))
    with pytest.raises(RuntimeError, match="rows frozen by gradient masks moved"):
        train_arm(head_params, "lf_h2", force=True, progress=False)


def test_masks_hold_under_ddp(tmp_path, model_cache):
    """Two processes (DDP over gloo on this CPU, accelerate launch): the hooks zero each process's
    gradient rows before the all-reduce, so the frozen rows stay bit-identical there too (and the
    arm's own check after training passes)."""
    from conftest import write_params

    from cft_helpers.data import prepare_datasets
    from cft_helpers.train import train_arms

    params = load_params(write_params(tmp_path, model_cache),
                         overrides=f"{HEAD}; training.micro_batch_size=2; training.max_steps=3")
    prepare_datasets(params, progress=False)
    train_arm(params, "p1_instruct", progress=False)
    params = load_params(params.source_path, overrides=f"{HEAD}; training.micro_batch_size=2; "
                                                        "training.max_steps=3; runtime.processes=2")
    train_arms(params, ["lf_h2"], progress=False)
    store = params.store
    assert store.arm_metrics("lf_h2")["processes"] == 2
    masked = json.loads((store.arm_dir("lf_h2") / "freeze.json").read_text())["masked"]
    start, final = tensor_files(store.arm_checkpoint("p1_instruct")), tensor_files(store.arm_checkpoint("lf_h2"))
    for name, entry in masked.items():
        a, b = read_tensor(start[name], name), read_tensor(final[name], name)
        for lo, hi in entry["rows"]:
            assert torch.equal(a[lo:hi], b[lo:hi]), name
        assert not torch.equal(a, b) or len(entry["heads"]) * entry["head_dim"] == a.shape[0], name
