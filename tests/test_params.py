"""Parameter sets: every preset loads; every kind of mistake fails at load, saying what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cft_helpers.mitigation import PAPER_STRATEGIES
from cft_helpers.params import ParamsError, for_seed, load_params, parse_overrides

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p for p in (ROOT / "params").rglob("*.yaml") if "accelerate" not in p.parts)  # accelerate/: launch configs


def _write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


def _smoke_raw() -> dict:
    return yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())


def _error(tmp_path: Path, edit) -> str:
    """The ParamsError message for the smoke preset changed by ``edit(raw)``."""
    raw = _smoke_raw()
    edit(raw)
    with pytest.raises(ParamsError) as e:
        load_params(_write(tmp_path, raw))
    return str(e.value)


@pytest.mark.parametrize("preset", PRESETS, ids=[str(p.relative_to(ROOT)) for p in PRESETS])
def test_every_preset_loads_and_validates(preset):
    p = load_params(preset)
    assert p.arms and p.models and p.datasets
    assert p.arm_order()  # every start chain ends at a model


def test_paper_presets_cover_the_grid():
    """Each paper preset has Phase 1, Phase 2 (from the Phase-1 and the Instruct model), mixture and reverse."""
    paper = sorted((ROOT / "params" / "paper").glob("*.yaml"))
    assert len(paper) >= 2
    for preset in paper:
        # MOPENORCA's arms (Table D8 among them) run once its path is set (it is not public)
        p = load_params(preset, overrides={"datasets.mopenorca.path": "me/mopenorca"})
        phases = {a.phase for a in p.arms.values()}
        assert {"phase1", "phase2", "mixture", "reverse1", "reverse2"} <= phases, preset.name
        t = p.training
        assert (t.learning_rate, t.epochs, t.global_batch_size, t.scheduler, t.warmup_steps,
                t.weight_decay) == (1e-6, 4, 16, "cosine", 10, 0.0), preset.name
        used_as_is = [a for a in p.arms.values() if a.phase == "phase1" and not a.datasets]
        assert used_as_is, f"{preset.name}: no off-the-shelf Instruct arm"
        # Table 5: every strategy, from the Instruct model, on the Phase-2 data
        table5 = p.strategy_arms()
        assert {p.arms[a].strategy for a in table5} == set(PAPER_STRATEGIES), preset.name
        assert {(p.arms[a].start, tuple(p.arms[a].datasets)) for a in table5} == {("p1_instruct", ("multialpaca",))}
        assert p.mitigation.layer_freezing.n_layers == 10 and p.mitigation.lora.r == 64
        assert p.mitigation.layer_freezing.base_model == "base"  # the Instruct model is used as is
        # Table D8: the same strategies on MOPENORCA, their own table, never in Table 5
        d8 = p.strategy_arms(table="D8")
        assert {p.arms[a].strategy for a in d8} == set(PAPER_STRATEGIES), preset.name
        assert {(p.arms[a].start, tuple(p.arms[a].datasets)) for a in d8} == {("p1_instruct", ("mopenorca",))}
        assert not set(d8) & set(table5) and p.mitigation_tables() == ["T5", "D8"]
        replay = p.mitigation.replay  # each table replays its Phase-2 data's English counterpart
        assert (replay.english_for(["multialpaca"]), replay.english_for(["mopenorca"])) == ("alpaca", "openorca_replay")


def test_mitigation_tables_are_never_pooled(tmp_path):
    arm = {"phase": "mitigation", "start": "p1_alpaca", "datasets": ["multialpaca"], "strategy": "LF_H1"}
    msg = _error(tmp_path, lambda r: r["arms"].update(lf_other=arm))  # a second setup in Table 5
    assert "mitigation table T5" in msg and "lf_other from p1_alpaca" in msg and "arms.<arm>.table" in msg
    assert "'T5'" in _error(tmp_path, lambda r: r["arms"].update(lf_other={**arm, "table": "D9"}))
    raw = _smoke_raw()
    raw["arms"]["lf_other"] = {**arm, "table": "D8"}
    p = load_params(_write(tmp_path, raw))
    assert p.strategy_arms(table="D8") == ["p2_alpaca", "lf_other"]  # its vanilla: Phase 2 of the same setup
    assert "lf_other" not in p.strategy_arms() and "p2_alpaca" not in p.strategy_arms()
    with pytest.raises(ParamsError, match="unknown mitigation table 'D9'.*D8"):
        p.strategy_arms(table="D9")


def test_replay_english_dataset_per_phase2_dataset(tmp_path):
    msg = _error(tmp_path, lambda r: r["mitigation"]["replay"].update(english_dataset={"multialpaca": "alpacca"}))
    assert "'alpacca'" in msg and "instruct" in msg
    both = {"multialpaca": "alpaca", "minstruct": "instruct"}
    msg = _error(tmp_path, lambda r: r["arms"]["gr_5"].update(datasets=["multialpaca", "minstruct"])
                 or r["mitigation"]["replay"].update(english_dataset=both))
    assert "several English datasets" in msg
    raw = _smoke_raw()
    raw["mitigation"]["replay"]["english_dataset"] = {"minstruct": "instruct"}
    replay = load_params(_write(tmp_path, raw)).mitigation.replay
    assert replay.english_for(["minstruct"]) == "instruct" and replay.english_for(["multialpaca"]) is None


def test_preset_by_name_and_relative_paths_resolve_to_project_root():
    p = load_params("smoke")
    assert Path(p.source_path) == ROOT / "params" / "smoke.yaml"
    assert p.run_path == ROOT / "runs" / "smoke"


def test_unknown_top_level_key_names_it_and_lists_valid_keys(tmp_path):
    msg = _error(tmp_path, lambda r: r.update(trainng={}))
    assert "'trainng'" in msg and "training" in msg and "datasets" in msg


def test_unknown_nested_key_lists_the_fields_of_that_section(tmp_path):
    msg = _error(tmp_path, lambda r: r["training"].update(learnig_rate=1e-3))
    assert "training.learnig_rate" in msg and "'learning_rate'" in msg and "'warmup_steps'" in msg


def test_unknown_key_inside_a_model_entry_lists_that_sources_fields(tmp_path):
    msg = _error(tmp_path, lambda r: r["models"]["base"].update(layers=3))
    assert "'layers'" in msg and "tokenizer_vocab_size" in msg


def test_wrong_type_names_key_and_value(tmp_path):
    msg = _error(tmp_path, lambda r: r["training"].update(learning_rate="fast"))
    assert "training.learning_rate" in msg and "'fast'" in msg


def test_unknown_model_source_lists_valid_sources(tmp_path):
    msg = _error(tmp_path, lambda r: r["models"].update(base={"source": "ollama", "name": "x"}))
    for s in ("'hub'", "'local'", "'gguf_package'", "'random_init'"):
        assert s in msg


def test_unknown_arm_start_and_dataset_list_valid_names(tmp_path):
    msg = _error(tmp_path, lambda r: r["arms"]["p2_alpaca"].update(start="p1_alpacca"))
    assert "p1_alpacca" in msg and "p1_alpaca" in msg and "base" in msg
    msg = _error(tmp_path, lambda r: r["arms"]["mixture"].update(datasets=["alpaca", "multi_alpaca"]))
    assert "multi_alpaca" in msg and "multialpaca" in msg


def test_cycle_in_start_chain_is_rejected(tmp_path):
    assert "cycle" in _error(tmp_path, lambda r: r["arms"]["rev1"].update(start="rev2"))


def test_unknown_builtin_language_lists_languages(tmp_path):
    msg = _error(tmp_path, lambda r: r["datasets"]["multialpaca"].update(langs=["fr", "xx"]))
    assert "'xx'" in msg and "'th'" in msg


def test_batch_sizes_must_divide(tmp_path):
    assert "multiple" in _error(tmp_path, lambda r: r["training"].update(global_batch_size=6))


def test_missing_params_file_lists_presets():
    with pytest.raises(ParamsError) as e:
        load_params("params/does_not_exist.yaml")
    assert "params/smoke.yaml" in str(e.value) and "params/default.yaml" in str(e.value)


def test_missing_local_files_fail_at_load(tmp_path):
    raw = _smoke_raw()
    raw["datasets"]["mine"] = {"source": "local", "path": str(tmp_path / "nope.jsonl"),
                               "schema": "alpaca", "lang": "en"}
    with pytest.raises(ParamsError, match="datasets.mine.path"):
        load_params(_write(tmp_path, raw))
    raw = _smoke_raw()
    raw["models"]["base"] = {"source": "local", "path": str(tmp_path / "no_model")}
    with pytest.raises(ParamsError, match="models.base.path"):
        load_params(_write(tmp_path, raw))


def test_external_dataset_needs_a_language(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("{}\n")
    raw = _smoke_raw()
    raw["datasets"]["mine"] = {"source": "local", "path": str(f), "schema": "alpaca"}
    with pytest.raises(ParamsError, match="lang"):
        load_params(_write(tmp_path, raw))


def test_overrides_apply_with_yaml_values_and_reject_unknown_keys():
    assert parse_overrides("a.b=1; c=[x, y]; d=1e-4") == {"a.b": 1, "c": ["x", "y"], "d": 1e-4}
    p = load_params("smoke", overrides="training.learning_rate=1e-4; arms.mixture.datasets=[alpaca]")
    assert p.training.learning_rate == 1e-4
    assert p.arms["mixture"].datasets == ["alpaca"]
    with pytest.raises(ParamsError, match="trainig"):
        load_params("smoke", overrides="trainig.learning_rate=1")
    with pytest.raises(ParamsError, match="training.warmup_steps"):
        load_params("smoke", overrides="training.warmup_steps=-3")


def test_arm_training_merges_overrides_over_global_values(tmp_path):
    raw = _smoke_raw()
    raw["arms"]["p2_alpaca"]["training"] = {"learning_rate": 5e-4}
    p = load_params(_write(tmp_path, raw))
    assert p.arm_training("p2_alpaca").learning_rate == 5e-4
    assert p.arm_training("p2_alpaca").epochs == raw["training"]["epochs"]
    assert p.arm_training("p1_alpaca").learning_rate == raw["training"]["learning_rate"]


def test_arm_order_puts_start_arms_first():
    p = load_params("smoke")
    order = p.arm_order()
    for arm, spec in p.arms.items():
        if spec.start in p.arms:
            assert order.index(spec.start) < order.index(arm)
    assert p.arms_in_phase("reverse1", "reverse2") == ["rev1", "rev2"]


def test_unknown_strategy_benchmark_and_missing_launch_files_name_key_value_and_choices():
    from cft_helpers.params import ParamsError

    cases = [({"arms.lora.strategy": "LoRB"}, ["arms.lora.strategy", "LoRB", "'LF_H2'", "'LoRA'"]),
             ({"evaluation.benchmarks.mmlux": {"source": "off"}}, ["mmlux", "'mmlu'", "'xlsum'"]),
             ({"runtime.launch_config": "nope.yaml"}, ["runtime.launch_config", "nope.yaml", "does not exist"]),
             ({"plan.dataset_rows": {"alpacca": 3}}, ["plan.dataset_rows", "alpacca", "valid"])]
    for override, needles in cases:
        with pytest.raises(ParamsError) as e:
            load_params("smoke", overrides=override)
        assert all(n in str(e.value) for n in needles), (override, str(e.value))


def test_seed_replicates_get_their_own_run_store(tmp_path):
    p = load_params("smoke", overrides={"run_dir": str(tmp_path / "run"), "seeds": [0, 2, 1]})
    assert p.seed_list() == [0, 2, 1] and for_seed(p, 0) is p
    s2 = for_seed(p, 2)
    assert (s2.seed, s2.training.seed) == (2, p.training.seed + 2)
    assert s2.run_path == tmp_path / "run" / "seeds" / "seed-2"
    assert s2.figures_path == tmp_path / "run" / "seeds" / "seed-2" / "figures"
    assert s2.seeds is None and s2.arms.keys() == p.arms.keys()
    assert load_params("smoke").seed_list() == [0]
    with pytest.raises(ParamsError, match="repeats a seed"):
        load_params("smoke", overrides={"seeds": [0, 1, 1]})


MOPENORCA_ARMS = {"p2_openorca", "p2_instruct_mopenorca", "mixture_openorca", "rev1_mopenorca", "rev2_mopenorca",
                  "d8_lf_h1", "d8_lf_h2", "d8_spectrum", "d8_gr_5", "d8_gr_10", "d8_er_10", "d8_lora"}


@pytest.mark.parametrize("preset", ["params/paper/mistral7b.yaml", "params/paper/llama3_8b.yaml"])
def test_paper_presets_leave_mopenorca_out_until_its_path_is_set(preset, capsys, tmp_path):
    """MOPENORCA is not public: the presets leave its path unset, so no placeholder repository
    reaches a loader and its arms are left out, with a note naming the key to set."""
    import cft_helpers.params.loading as params_module

    params_module._NOTES_PRINTED.clear()
    p = load_params(preset)
    assert "mopenorca" not in p.datasets and p.unset_datasets == ["mopenorca"]
    assert set(p.disabled_arms) == MOPENORCA_ARMS and not MOPENORCA_ARMS & set(p.arms)
    assert all("mopenorca" not in a.datasets for a in p.arms.values())
    assert not any("your-org" in (getattr(d, "path", None) or "") for d in p.datasets.values())
    assert p.strategy_arms(table="D8") == [] and p.mitigation_tables() == ["T5"]
    assert p.mitigation.replay.english_dataset == {"multialpaca": "alpaca"}
    assert "mopenorca" not in p.plan.dataset_rows and "p2_openorca" not in p.plan.reported_hours
    err = capsys.readouterr().err
    assert "datasets.mopenorca.path is not set" in err and "--set datasets.mopenorca.path=" in err
    assert "12 arm(s)" in err and "d8_lora" in err
    load_params(preset)
    assert capsys.readouterr().err == ""  # said once per process
    full = load_params(preset, overrides={"datasets.mopenorca.path": "me/mopenorca"})
    assert MOPENORCA_ARMS <= set(full.arms) and full.disabled_arms == {} and full.unset_note() is None
    assert full.datasets["mopenorca"].path == "me/mopenorca"
    # a hub entry whose path is missing altogether is unset too
    raw = yaml.safe_load((ROOT / preset).read_text())
    del raw["datasets"]["mopenorca"]["path"]
    assert set(load_params(_write(tmp_path, raw)).disabled_arms) == MOPENORCA_ARMS


def test_an_unset_dataset_leaves_out_its_arms_and_every_reference_to_them(tmp_path):
    raw = _smoke_raw()
    raw["datasets"]["secret"] = {"source": "hub", "path": None, "schema": "orca", "lang_column": "lang"}
    raw["arms"].update({
        "p2_secret": {"phase": "phase2", "start": "p1_alpaca", "datasets": ["secret"]},
        "after_secret": {"phase": "reverse2", "start": "p2_secret", "datasets": ["alpaca"]},   # starts from it
        "gr_secret": {"phase": "mitigation", "start": "p1_instruct", "datasets": ["minstruct"],  # replays it
                      "strategy": "GR_5", "table": "D8"}})
    raw["mitigation"]["replay"]["english_dataset"] = {"minstruct": "secret", "multialpaca": "alpaca"}
    raw.setdefault("plan", {})["reported_hours"] = {"p2_secret": 3, "p2_alpaca": 1}
    raw["plan"]["dataset_rows"] = {"secret": 10, "alpaca": 5}
    raw.setdefault("similarity", {})["stand_ins"] = {"p2_secret": "alpaca", "p1_alpaca": "alpaca"}
    raw.setdefault("evaluation", {})["models"] = ["p1_alpaca", "after_secret"]
    p = load_params(_write(tmp_path, raw))
    assert p.disabled_arms == {"p2_secret": "secret", "after_secret": "secret", "gr_secret": "secret"}
    assert not {"p2_secret", "after_secret", "gr_secret"} & set(p.arms) and "secret" not in p.datasets
    assert p.mitigation.replay.english_dataset == {"multialpaca": "alpaca"}
    assert p.plan.reported_hours == {"p2_alpaca": 1} and p.plan.dataset_rows == {"alpaca": 5}
    assert p.similarity.stand_ins == {"p1_alpaca": "alpaca"} and p.evaluation.models == ["p1_alpaca"]
    assert "p1_alpaca" in p.arms and p.arm_order()
    raw["similarity"]["mpd_reference"] = "p2_secret"   # what cannot be dropped is an error naming the key
    with pytest.raises(ParamsError, match=r"mpd_reference.*'p2_secret'.*datasets\.secret\.path"):
        load_params(_write(tmp_path, raw))


def test_a_placeholder_never_reaches_the_loader(tmp_path):
    """Data preparation iterates the params' datasets: an unset one is not among them; and the hub
    loader refuses an entry without a path rather than asking the hub for it."""
    from cft_helpers.data.loaders import load_hub
    from cft_helpers.data.schema import DataError
    from cft_helpers.params import HubDataset

    raw = _smoke_raw()
    raw["datasets"]["secret"] = {"source": "hub", "schema": "orca", "lang_column": "lang"}
    p = load_params(_write(tmp_path, raw))
    assert "secret" not in p.datasets
    with pytest.raises(DataError, match="datasets.secret.path is not set"):
        load_hub("secret", HubDataset(source="hub", schema="orca", lang_column="lang"), p)
