"""Hand-worked values of the functions that compute the paper's numbers: each assertion names a
number that a wrong formula would change (written to kill the mutants ``scripts/mutation.py``
found alive)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

# --------------------------------------------------------------------------- scorers


def test_language_codes_with_a_region_keep_their_language_rules():
    from cft_helpers.evaluation.scoring import f1, normalize, tokens

    # "en_US" is English: its articles go; no language (None or "") counts as English too
    assert normalize("The cat", "en_US") == "cat"
    assert normalize("The cat", None) == "cat" and normalize("The cat", "") == "cat"
    assert normalize("", "en") == "" and normalize(None, "en") == ""
    # "ja_JP" is Japanese: one token per character, also when the region is upper case
    assert tokens("東京です", "ja_JP") == ["東", "京", "で", "す"]
    assert tokens("東京", "JA") == ["東", "京"]
    # French keeps "a" (a verb there, an article only in English): {a, la, maison} vs {la, maison}
    # P 2/3, R 1 -> F1 0.8; dropping it as an English article would give 1.0
    assert tokens("Il a la maison", "fr") == ["il", "a", "la", "maison"]
    assert f1("a la maison", "la maison", "fr") == pytest.approx(0.8)


def test_qa_scores_return_both_numbers_of_the_chosen_scorer():
    from cft_helpers.evaluation.scoring import qa_scores, squad_tokens, summary_scores

    # script_aware, Japanese by character: "東 京" and "東京" are the same two tokens
    assert qa_scores("東 京", ["東京"], "ja") == {"f1": 1.0, "exact_match": 1.0}
    # 東京です vs 東京: 4 predicted, 2 gold, 2 shared: P 1/2, R 1 -> F1 2/3, not an exact match
    assert qa_scores("東京です", ["大阪", "東京"], "ja") == {"f1": pytest.approx(2 / 3), "exact_match": 0.0}
    # paper / mlqa: MLQA removes German articles ("der"), so both are 1
    assert qa_scores("der Hund", ["Hund"], "de", "paper", "mlqa") == {"f1": 1.0, "exact_match": 1.0}
    # paper / xquad: SQuAD removes only English articles: "der Hund" vs "Hund" P 1/2, R 1 -> 2/3
    assert qa_scores("der Hund", ["Hund"], "de", "paper", "xquad") == {"f1": pytest.approx(2 / 3),
                                                                       "exact_match": 0.0}
    assert qa_scores("the cat", ["cat"], "th", "paper", "xquad") == {"f1": 1.0, "exact_match": 1.0}
    assert squad_tokens(None) == [] and squad_tokens("") == []
    # ROUGE-L of Japanese by character: 今日は晴れです (7) vs 今日は晴れ (5), LCS 5: P 5/7, R 1 -> 5/6
    assert summary_scores("今日は晴れです", "今日は晴れ", "ja")["rougeL"] == pytest.approx(5 / 6)
    assert summary_scores("今日は晴れです", "今日は晴れ", "ja", "paper", "xlsum")["rougeL"] == 0.0


@pytest.mark.parametrize("call, message", [
    (lambda s: s.f1("x", [], "en"), "f1 needs at least one reference"),
    (lambda s: s.exact_match("x", [], "en"), "exact_match needs at least one reference"),
    (lambda s: s.mlqa_f1("x", [], "en"), "mlqa_f1 needs at least one reference"),
    (lambda s: s.mlqa_exact_match("x", [], "en"), "mlqa_exact_match needs at least one reference"),
    (lambda s: s.squad_f1("x", []), "squad_f1 needs at least one reference"),
    (lambda s: s.squad_exact_match("x", []), "squad_exact_match needs at least one reference"),
    (lambda s: s.qa_scores("a", ["a"], "en", "paper", "mmlu"), r"exists for \['mlqa', 'xquad'\], not 'mmlu'"),
    (lambda s: s.summary_scores("a", "a", "en", "paper", "mlqa"), r"exists for \['xlsum'\], not 'mlqa'"),
])
def test_scorer_errors_name_the_scorer_and_the_choices(call, message):
    from cft_helpers.evaluation import scoring

    with pytest.raises(ValueError, match=message):
        call(scoring)


# --------------------------------------------------------------------------- EA / MA


def test_ability_table_rows_hold_each_benchmark_and_the_averages(smoke_params):
    from cft_helpers.evaluation.harness import abilities, ability_table

    record = {"benchmarks": {"mmlu": {"score": 0.5}, "hellaswag": {"score": 0.3}, "ifeval": {"score": 0.1},
                             "mlqa": {"score": 0.2}, "xquad": {"score": 0.4}, "xlsum": {"score": 0.0}}}
    table = ability_table(smoke_params, {"p2_alpaca": record, "outside": {"benchmarks": {"mmlu": {"score": 1.0}}},
                                         "never": {}})
    assert table.loc["never"].drop("label").isna().all()                   # no benchmarks: all NaN
    row = table.loc["p2_alpaca"]
    assert row["label"] == "ALPACA -> MULTIALPACA" and table.loc["outside", "label"] == "outside"
    assert (row["mmlu"], row["hellaswag"], row["ifeval"], row["xlsum"]) == (0.5, 0.3, 0.1, 0.0)
    # EA = (0.1 + 0.5 + 0.3) / 3 = 0.3, MA = (0.2 + 0.4 + 0.0) / 3 = 0.2, combined 0.25
    assert (row["EA"], row["MA"], row["combined"]) == (pytest.approx(0.3), pytest.approx(0.2), pytest.approx(0.25))
    assert table.loc["outside", "EA"] == 1.0 and math.isnan(table.loc["outside", "MA"])
    assert math.isnan(table.loc["outside", "mlqa"]) and math.isnan(table.loc["outside", "combined"])
    assert "not run: alpacaeval; EA and MA average the benchmarks that ran" in table.attrs["footnote"]
    full = {"benchmarks": {b: {"score": 0.5} for b in ("ifeval", "alpacaeval", "mmlu", "hellaswag",
                                                           "mlqa", "xquad", "xlsum")}}
    assert "not run" not in ability_table(smoke_params, {"m": full}).attrs["footnote"]
    # a record without benchmarks: nothing ran, nothing is counted as 0
    empty = abilities(smoke_params, {})
    assert math.isnan(empty["EA"]) and math.isnan(empty["MA"]) and math.isnan(empty["combined"])
    assert set(empty["MA_missing"]) == {"mlqa", "xlsum", "xquad"} and "mmlu" in empty["EA_missing"]


# --------------------------------------------------------------------------- replay


def test_replay_rows_are_the_first_of_one_seeded_order_of_the_source(prepared, monkeypatch):
    import random

    from cft_helpers.data.generator import FAMILY_SCHEMA, render_in_language
    from cft_helpers.data.loaders import normalise_rows
    from cft_helpers.data.prepare import load_prepared
    from cft_helpers.replay import english_counterparts

    store = prepared.store
    rows = load_prepared(store, "multialpaca", "train")
    seed = prepared.arm_training("gr_10").seed

    def order(key):   # the documented rule: one shuffle per seed and source, never per arm
        idx = list(range(len(rows if key == "multialpaca" else load_prepared(store, key, "train"))))
        random.Random(f"{seed}|replay|{key}").shuffle(idx)
        return idx

    got = english_counterparts(prepared, "gr_10", 3)
    picked = [rows[i] for i in order("multialpaca")[:3]]
    assert [r["id"] for r in got] == [f"replay-{r['id']}" for r in picked]
    for r, src in zip(got, picked):
        en = normalise_rows([render_in_language(src["meta"], "en")], name="x", schema=FAMILY_SCHEMA[src["meta"]["family"]],
                            lang="en")[0]
        assert r["messages"] == en["messages"] and r["lang"] == "en"
        assert r["source"] == f"replay:counterpart:{src['id']}"
    # every row may be replayed; one more is refused
    assert len(english_counterparts(prepared, "gr_10", len(rows))) == len(rows)
    with pytest.raises(ValueError, match=f"replay needs {len(rows) + 1} rows but 'multialpaca' has {len(rows)}"):
        english_counterparts(prepared, "gr_10", len(rows) + 1)
    # from an English dataset named per Phase-2 dataset: its rows, tagged with it
    prepared.mitigation.replay.english_dataset = {"multialpaca": "alpaca"}
    try:
        got = english_counterparts(prepared, "gr_10", 2)
    finally:
        prepared.mitigation.replay.english_dataset = None
    alpaca = load_prepared(store, "alpaca", "train")
    assert [r["id"] for r in got] == [f"replay-{alpaca[i]['id']}" for i in order("alpaca")[:2]]
    assert {r["source"] for r in got} == {"replay:alpaca"}
    assert [r["messages"] for r in got] == [alpaca[i]["messages"] for i in order("alpaca")[:2]]
    # an arm trained on two datasets: one order over both, keyed by both names
    both = rows + load_prepared(store, "alpaca", "train")
    prepared.arms["gr_10"].datasets = ["multialpaca", "alpaca"]
    try:
        got = english_counterparts(prepared, "gr_10", 4)
    finally:
        prepared.arms["gr_10"].datasets = ["multialpaca"]
    idx = list(range(len(both)))
    random.Random(f"{seed}|replay|multialpaca+alpaca").shuffle(idx)
    assert [r["id"] for r in got] == [f"replay-{both[i]['id']}" for i in idx[:4]]
    # a row without the built-in task metadata has no known English counterpart
    broken = [{**rows[0], "meta": {"task": rows[0]["meta"]["task"]}}]
    monkeypatch.setattr("cft_helpers.replay.load_prepared", lambda *a, **k: broken)
    with pytest.raises(ValueError, match="no built-in task metadata"):
        english_counterparts(prepared, "gr_10", 1)


# --------------------------------------------------------------------------- layer freezing


def test_lf_h1_accepts_one_to_all_but_one_layer_and_records_what_it_chose():
    from cft_helpers import freezing

    names = [f"model.layers.{i}.mlp.weight" for i in range(4)] + ["model.norm.weight"]
    plan = freezing.lf_h1(names, 1, seed=0)
    assert plan.strategy == "LF_H1" and len(plan.details["layers"]) == 1
    assert plan.details == {"layers": plan.details["layers"], "seed": 0, "n_layers_model": 4}
    assert plan.frozen == [f"model.layers.{plan.details['layers'][0]}.mlp.weight"]
    assert len(freezing.lf_h1(names, 3, seed=0).frozen) == 3
    for bad in (0, 4):
        with pytest.raises(ValueError, match="between 1 and 3"):
            freezing.lf_h1(names, bad, seed=0)


def test_frozen_values_counts_whole_tensors_and_masked_rows():
    from cft_helpers.freezing import FreezePlan

    plan = FreezePlan("LF_H2", ["a"], ["b", "c"], masked={"b": {"heads": [0, 2], "head_dim": 2,
                                                                "rows": [[0, 2], [4, 6]]}})
    # a: 3 x 4 = 12 values; b: rows 0-1 and 4-5 of a 8 x 5 tensor = 4 rows x 5 = 20
    assert plan.frozen_values({"a": (3, 4), "b": (8, 5), "c": (7, 7)}) == 32


def test_head_layout_from_dicts_objects_and_nested_text_configs():
    from types import SimpleNamespace

    from cft_helpers.freezing import head_layout

    cfg = {"num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 32}
    layout = head_layout(cfg)
    assert layout == {"q_proj": (4, 8), "k_proj": (2, 8), "v_proj": (2, 8)}
    assert all(isinstance(d, int) for _, d in layout.values())          # 32 // 4, not 8.0
    assert head_layout({**cfg, "head_dim": 16})["q_proj"] == (4, 16)     # an explicit head_dim wins
    assert head_layout({"num_attention_heads": 4, "hidden_size": 32})["k_proj"] == (4, 8)  # no GQA: all heads
    assert head_layout(SimpleNamespace(to_dict=lambda: cfg)) == layout
    # a multimodal config: the text model's; but a top-level text config is used as it is
    assert head_layout({"text_config": cfg, "vision_config": {"num_attention_heads": 16}}) == layout
    assert head_layout({**cfg, "text_config": {"num_attention_heads": 2, "hidden_size": 64}}) == layout


def _write_ckpt(folder, tensors):
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in tensors.items()},
              folder / "model.safetensors")
    return folder


def test_head_changes_are_per_head_frobenius_norms(tmp_path):
    from cft_helpers import freezing

    q = "model.layers.{}.self_attn.q_proj.weight"
    zero = [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]   # 2 heads x 2 rows, 2 columns
    base = _write_ckpt(tmp_path / "base", {q.format(0): zero, q.format(1): zero})
    # layer 0: head 0 moves by (3, 4) in one row -> 5; head 1 unchanged. layer 1: head 1 by 1 in 4 cells -> 2
    p1 = _write_ckpt(tmp_path / "p1", {q.format(0): [[3, 4], [0, 0], [0, 0], [0, 0]],
                                        q.format(1): [[0, 0], [0, 0], [1, 1], [1, 1]]})
    changes = freezing.head_changes(base, p1, {"q_proj": (2, 2)}, ["q_proj"])
    assert changes == {"q_proj": {0: {0: 5.0, 1: 0.0}, 1: {0: 0.0, 1: 2.0}}}
    assert freezing.projection_changes(base, p1, ["q_proj"]) == {"q_proj": {0: 5.0, 1: 2.0}}
    with pytest.raises(ValueError, match="not 4 heads x 2 rows"):
        freezing.head_changes(base, p1, {"q_proj": (4, 2)}, ["q_proj"])


def test_lf_h2_heads_masks_rows_of_each_projections_own_head_size():
    from cft_helpers import freezing

    names = [f"model.layers.{i}.self_attn.{p}.weight" for i in range(3) for p in ("q_proj", "k_proj")]
    # q: 2 heads of 4 rows; k: 1 head of 8 rows (sizes differ, so each tensor must use its own)
    changes = {"q_proj": {0: {0: 1.0, 1: 3.0, 2: 2.0}, 1: {0: 5.0, 1: 0.0, 2: 1.0}},
               "k_proj": {0: {0: 0.0, 1: 1.0, 2: 2.0}}}
    layout = {"q_proj": (2, 4), "k_proj": (1, 8)}
    plan = freezing.lf_h2_heads(names, changes, 1, layout)
    assert plan.strategy == "LF_H2" and plan.frozen == [] and plan.trainable == names
    assert plan.masked == {
        "model.layers.0.self_attn.q_proj.weight": {"heads": [1], "head_dim": 4, "rows": [[4, 8]]},
        "model.layers.1.self_attn.q_proj.weight": {"heads": [0], "head_dim": 4, "rows": [[0, 4]]},
        "model.layers.2.self_attn.k_proj.weight": {"heads": [0], "head_dim": 8, "rows": [[0, 8]]}}
    assert plan.details == {
        "granularity": "head", "scope": "projection", "n_layers": 1, "heads": {"q_proj": 2, "k_proj": 1},
        "head_dim": {"q_proj": 4, "k_proj": 8},
        "layers": {"q_proj": {"0": [1], "1": [0]}, "k_proj": {"0": [2]}},
        "changes": {"q_proj": {"0": {"0": 1.0, "1": 3.0, "2": 2.0}, "1": {"0": 5.0, "1": 0.0, "2": 1.0}},
                    "k_proj": {"0": {"0": 0.0, "1": 1.0, "2": 2.0}}}}
    with pytest.raises(ValueError, match=r"between 1 and 3 \(layers with q_proj head 0\)"):
        freezing.lf_h2_heads(names, changes, 4, layout)


def test_spectrum_plan_freezes_the_selected_by_default_and_records_it():
    from cft_helpers import freezing

    names = ["model.embed_tokens.weight", *[f"model.layers.{i}.self_attn.q_proj.weight" for i in range(4)],
             "lm_head.weight"]
    scores = {f"model.layers.{i}.self_attn.q_proj": {"snr": s, "type": "self_attn.q_proj"}
              for i, s in enumerate((0.1, 0.4, 0.3, 0.2))}
    plan = freezing.spectrum_plan(names, scores, 50)
    assert plan.strategy == "Spectrum"
    assert plan.frozen == ["model.layers.1.self_attn.q_proj.weight", "model.layers.2.self_attn.q_proj.weight"]
    assert plan.details == {"percent": 50, "direction": "freeze_selected",
                            "selected": {"self_attn.q_proj": ["model.layers.1.self_attn.q_proj",
                                                              "model.layers.2.self_attn.q_proj"]}}
    # upstream's direction: train only the selected modules, the embeddings and the LM head
    upstream = freezing.spectrum_plan(names, scores, 50, "train_selected")
    assert upstream.frozen == ["model.layers.0.self_attn.q_proj.weight", "model.layers.3.self_attn.q_proj.weight"]
    assert upstream.details["direction"] == "train_selected"
    with pytest.raises(ValueError, match="another architecture"):
        freezing.spectrum_plan([n.replace("model.", "other.") for n in names], scores, 50)
    with pytest.raises(ValueError, match="direction"):
        freezing.spectrum_plan(names, scores, 50, "sideways")


# --------------------------------------------------------------------------- representations


def test_covariance_change_by_hand_on_two_prompts():
    from cft_helpers.representations import covariance_change, layer_means

    # 2 prompts, 1 layer, 1 dimension: A = (0, 2) has sample variance 2, B = (0, 4) has 8 -> |2 - 8| = 6
    a = np.array([[[0.0]], [[2.0]]])
    b = np.array([[[0.0]], [[4.0]]])
    assert covariance_change(a, b).tolist() == [pytest.approx(6.0)]
    with pytest.raises(ValueError, match="at least 2 prompts"):
        covariance_change(a[:1], b[:1])
    # layer means: the mean over prompts, one row per layer
    acts = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [[3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]])
    assert layer_means(acts).tolist() == [[2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]
    # literal: covariance over the 3 layer means (centred over layers); B doubles A's spread:
    # Σ_A = [[4, 4], [4, 4]] (rows 2,4,6 and 3,5,7: variance 4), Σ_B = 4 Σ_A -> ||Σ_A - Σ_B|| = 3 * 8 = 24
    assert covariance_change(acts, 2 * acts, "literal").tolist() == [pytest.approx(24.0)]


def test_translation_retrieval_centres_each_language_and_compares_by_cosine():
    from cft_helpers.representations import translation_retrieval

    # French = English plus a language offset along the first axis: only centring finds each translation
    en = np.diag([1.0, 3.0, 0.2])
    got = translation_retrieval({"en": en[:, None], "fr": (en + [6.0, 0.0, 0.0])[:, None]}, layer=0)
    assert got == {"fr": 1.0}
    # English sentence 1 is long and leans towards sentence 0: by cosine French 0 still finds
    # English 0; by a plain dot product it would pick the long one (3 of 4 right, 0.75)
    en = np.array([[1.0, 0.0, 0.0], [6.0, 8.0, 0.0], [0.0, 0.0, 1.0], [-7.0, -8.0, -1.0]])
    fr = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0], [-1.6, -0.8, -1.0]])
    assert translation_retrieval({"en": en[:, None], "fr": fr[:, None], "de": fr[::-1, None]}, 0) == {
        "fr": 1.0, "de": 0.0}
    # the same at a hundredth of the scale (norms below 1): cosine does not depend on it
    assert translation_retrieval({"en": en[:, None] / 100, "fr": fr[:, None] / 100}, 0) == {"fr": 1.0}


# --------------------------------------------------------------------------- Spectrum


def test_spectrum_keeps_the_checkpoints_natural_order(tmp_path):
    from cft_helpers import spectrum

    rng = np.random.default_rng(0)
    names = [f"model.layers.{i}.self_attn.q_proj.weight" for i in (10, 2, 1)]
    tensors = {n: rng.normal(size=(4, 6)) for n in names}
    others = {"model.layers.1.mlp.down_proj.weight": rng.normal(size=(4, 6)), "model.norm.weight": np.ones(6)}
    ckpt = _write_ckpt(tmp_path / "m", tensors | others)
    scores = spectrum.scan(ckpt, ["q_proj"], progress=False)
    # natural order (1, 2, 10), not string order (1, 10, 2): ties in select keep this order; only q_proj
    assert list(scores) == [f"model.layers.{i}.self_attn.q_proj" for i in (1, 2, 10)]
    for n, w in tensors.items():
        assert scores[n.removesuffix(".weight")] == {
            "snr": pytest.approx(spectrum.snr_score(w.astype(np.float32))), "type": "self_attn.q_proj"}
    assert spectrum.scan(ckpt, ["q_proj"], progress=True) == scores          # with a progress bar: the same
    assert set(spectrum.scan(ckpt, ["q_proj", "down_proj"], progress=False)) == {*scores, "model.layers.1.mlp.down_proj"}
    assert spectrum.unfrozen_yaml({"self_attn.q_proj": list(scores)[::-1]}) == (
        "unfrozen_parameters:\n- ^lm_head.weight$\n- ^model.embed_tokens.weight$\n# self_attn.q_proj layers\n"
        "- model.layers.1.self_attn.q_proj\n- model.layers.2.self_attn.q_proj\n- model.layers.10.self_attn.q_proj\n")
    tied = {n: {"snr": 1.0, "type": "self_attn.q_proj"} for n in scores}
    assert spectrum.select(tied, 34) == {"self_attn.q_proj": ["model.layers.1.self_attn.q_proj"]}


def test_unfrozen_patterns_are_literal_prefixes_and_must_be_strings():
    from cft_helpers import spectrum

    assert spectrum.matches_unfrozen("model.layers.1.q_proj.weight", ["model.layers.1.q_proj"])
    assert not spectrum.matches_unfrozen("model.layers.1Xq_proj.weight", ["model.layers.1.q_proj"])  # "." literal
    assert not spectrum.matches_unfrozen("x.model.layers.1.q_proj", ["model.layers.1.q_proj"])      # from the start
    text = spectrum.unfrozen_yaml({"self_attn.q_proj": ["model.layers.1.self_attn.q_proj"]})
    assert spectrum.unfrozen_patterns(text) == ["^lm_head.weight$", "^model.embed_tokens.weight$",
                                                "model.layers.1.self_attn.q_proj"]
    with pytest.raises(spectrum.SpectrumError, match="unfrozen_parameters"):
        spectrum.unfrozen_patterns("unfrozen_parameters: [1, 2]")
    with pytest.raises(spectrum.SpectrumError, match="unfrozen_parameters"):
        spectrum.unfrozen_patterns("unfrozen_parameters: lm_head")


# --------------------------------------------------------------------------- similarity


def test_correlation_guards_and_its_verdict_text():
    from cft_helpers.similarity import correlation

    few = correlation([1, 2], [3, 4])
    assert few == {"n": 2, "pearson": None, "spearman": None, "verdict": few["verdict"]}
    for xs, ys in (([1, 1, 1, 1], [1, 2, 3, 4]), ([1, 2, 3, 4], [5, 5, 5, 5])):
        flat = correlation(xs, ys)
        assert flat["pearson"] is None and flat["spearman"] is None and "constant" in flat["verdict"]
    # a range of exactly 1 is not constant; y = 2x + 1 -> r = rho = 1
    ok = correlation([0, 0.25, 0.5, 1.0], [1, 1.5, 2, 3])
    assert ok["pearson"] == pytest.approx(1.0) and ok["spearman"] == pytest.approx(1.0)
    assert ok["verdict"] == "4 points: Pearson r = +1.00, Spearman rho = +1.00"
    # hand-worked: x = 1..4, y = (1, 3, 2, 4): Pearson 0.8, Spearman 0.8
    assert correlation([1, 2, 3, 4], [1, 3, 2, 4])["pearson"] == pytest.approx(0.8)


def test_mpd_table_normalises_by_the_largest_value(monkeypatch):
    from cft_helpers import similarity

    seen = []

    def fake_mpd(a, b, progress=False):
        assert a == "ref"
        seen.append(progress)
        return {"mpd": {"near": 0.2, "far": 0.8, "same": 0.0}[b], "tensors": 7}

    monkeypatch.setattr(similarity, "mpd", fake_mpd)
    df = similarity.mpd_table("ref", {"near": "near", "far": "far"})
    assert list(df.columns) == ["mpd", "mpd_normalised", "tensors", "checkpoint"]
    assert df["mpd_normalised"].to_dict() == {"near": pytest.approx(0.25), "far": 1.0}
    assert df.loc["near", "tensors"] == 7 and df.loc["far", "checkpoint"] == "far"
    assert seen == [True, True]                        # the progress bar shows by default
    # largest value 0.2 (< 1) still normalises; all equal to the reference: nothing to divide by
    assert similarity.mpd_table("ref", {"near": "near"}, progress=False).loc["near", "mpd_normalised"] == 1.0
    assert math.isnan(similarity.mpd_table("ref", {"same": "same"}).loc["same", "mpd_normalised"])


# --------------------------------------------------------------------------- findings: the rule


def test_verdict_boundaries_are_strict_and_shift_with_the_margin():
    from cft_helpers import intervals as I

    assert I.verdict(-0.02, 0.1, margin=0.02) == "inconclusive"      # lo == -margin: not above it
    assert I.verdict(-0.0199, 0.1, margin=0.02) == "reproduced"
    assert I.verdict(-0.1, -0.02, margin=0.02) == "inconclusive"     # hi == -margin: not below it
    assert I.verdict(-0.1, -0.0201, margin=0.02) == "contradicted"
    assert I.verdict(0.0, 0.1) == "inconclusive" and I.verdict(-0.1, 0.0) == "inconclusive"
    assert I.verdict(1e-9, 0.1) == "reproduced" and I.verdict(-0.1, -1e-9) == "contradicted"
    for lo, hi in ((None, 0.1), (0.1, None), (float("nan"), 0.1), (0.1, float("inf")), (-float("inf"), 0.1)):
        assert I.verdict(lo, hi) == "inconclusive (no interval)"
    assert I.verdict(0.1, 0.1) == "reproduced"                        # a zero-width interval is one


def test_share_verdict_thresholds_are_inclusive():
    from cft_helpers import intervals as I

    assert I.share_verdict(0.95) == "reproduced" and I.share_verdict(0.9499) == "inconclusive"
    assert I.share_verdict(0.05) == "contradicted" and I.share_verdict(0.0501) == "inconclusive"
    assert I.share_verdict(0.9, threshold=0.9) == "reproduced" and I.share_verdict(0.09, threshold=0.9) == "contradicted"
    assert I.share_verdict(0.85, threshold=0.9) == "inconclusive"
    assert I.share_verdict(0.25, threshold=0.75) == "contradicted"    # exactly 1 - threshold (0.25 is exact)
    assert I.share_verdict(None) == I.share_verdict(float("nan")) == "inconclusive (no interval)"


def test_percentile_interval_is_the_central_share_of_the_draws():
    from cft_helpers.intervals import percentile_interval

    draws = np.arange(101.0)[::-1]                      # 0..100 in any order: quantile q is 100 q
    assert percentile_interval(draws, 0.9) == (pytest.approx(5.0), pytest.approx(95.0))
    assert percentile_interval(draws, 0.95) == (pytest.approx(2.5), pytest.approx(97.5))
    lo, hi = percentile_interval(list(range(11)), 0.5)
    assert (lo, hi) == (2.5, 7.5) and type(lo) is float and type(hi) is float


def test_item_values_of_each_metric():
    from cft_helpers.intervals import _item_value

    # AlpacaEval preference: 1 reference wins, 2 the model wins, 1.5 a tie
    assert [_item_value("alpacaeval", "discrete_win_rate", {"preference": p}) for p in (1.0, 1.5, 2.0, 1.7)] == [
        0.0, 0.5, 1.0, 1.0]
    assert [_item_value("alpacaeval", "win_rate", {"preference": p}) for p in (1.0, 1.5, 2.0)] == [0.0, 0.5, 1.0]
    assert _item_value("alpacaeval", "win_rate", {"preference": 1.75}) == pytest.approx(0.75)
    assert _item_value("alpacaeval", "win_rate", {"preference": None}) is None
    assert _item_value("alpacaeval", "win_rate", {"preference": float("nan")}) is None
    assert _item_value("alpacaeval", "win_rate", {}) is None
    assert _item_value("mmlu", "acc", {"acc": 1}) == 1.0 and _item_value("mmlu", "acc", {"acc": [0.0, 9]}) == 0.0
    assert _item_value("ifeval", "prompt_level_strict_acc", {"prompt_level_strict_acc": True}) == 1.0
    assert _item_value("mlqa", "f1", {"f1": None}) is None and _item_value("mlqa", "f1", {}) is None
    assert _item_value("mlqa", "f1", {"f1": 0.25, "exact_match": 0.0}) == 0.25


# --------------------------------------------------------------------------- findings: the bootstrap


def _boot(smoke_params, scores, replicates=2000, seed=0):
    from cft_helpers.intervals import ItemBootstrap

    return ItemBootstrap(smoke_params, scores, replicates, np.random.default_rng(seed))


def test_bootstrap_point_estimates_average_as_the_tables_do(smoke_params):
    # mmlu: two tasks, means 0.75 and 0 -> benchmark 0.375 (mean of its tasks, not of the 6 items: 0.5)
    scores = {"m": {"mmlu": {"a": {0: 1.0, 1: 0.0, 2: 1.0, 3: 1.0}, "b": {0: 0.0, 1: 0.0}},
                    "hellaswag": {"c": {0: 0.25, 1: 0.75}},
                    "mlqa": {"d": {"x": 0.2, "y": 0.4}}}}
    p = _boot(smoke_params, scores).ability("m", point=True)
    assert p["mmlu"] == pytest.approx(0.375) and p["hellaswag"] == pytest.approx(0.5) and p["mlqa"] == pytest.approx(0.3)
    assert p["EA"] == pytest.approx((0.375 + 0.5) / 2) and p["MA"] == pytest.approx(0.3)
    assert p["combined"] == pytest.approx(((0.375 + 0.5) / 2 + 0.3) / 2)
    only_english = _boot(smoke_params, {"m": {"mmlu": scores["m"]["mmlu"]}})
    assert math.isnan(only_english.ability("m", point=True)["MA"])
    draws = only_english.ability("m")["MA"]
    assert draws.shape == (2000,) and np.isnan(draws).all()
    assert only_english.items == {("mmlu", "a"): 4, ("mmlu", "b"): 2}


def test_bootstrap_draws_are_paired_and_centred_on_the_point(smoke_params):
    rng = np.random.default_rng(1)
    n = 200
    s = (rng.random(n) < 0.6).astype(float)
    a = {"mmlu": {"t": dict(enumerate(s))}, "mlqa": {"u": dict(enumerate(rng.random(50)))}}
    b = {"mmlu": {"t": dict(enumerate(s + 0.1))}, "mlqa": {"u": dict(a["mlqa"]["u"])}}
    const = {"mmlu": {"t": dict.fromkeys(range(n), 0.3)}, "mlqa": {"u": dict.fromkeys(range(50), 0.7)}}
    boot = _boot(smoke_params, {"a": a, "b": b, "const": const})
    da, db, dc = boot.ability("a"), boot.ability("b"), boot.ability("const")
    # the same items are drawn for every model: b - a is exactly 0.1 in every replicate
    assert np.allclose(db["mmlu"] - da["mmlu"], 0.1) and np.allclose(db["MA"], da["MA"])
    assert np.allclose(dc["EA"], 0.3) and np.allclose(dc["combined"], 0.5)
    # a mean of n resampled items: centred on the point, spread sd(s) / sqrt(n)
    assert da["mmlu"].mean() == pytest.approx(s.mean(), abs=3 * s.std() / math.sqrt(n) / math.sqrt(2000) + 1e-3)
    assert da["mmlu"].std() == pytest.approx(s.std() / math.sqrt(n), rel=0.1)
    assert da["combined"] == pytest.approx((da["EA"] + da["MA"]) / 2)


def test_bootstrap_refuses_unpaired_models(smoke_params):
    a = {"mmlu": {"t": {0: 1.0, 1: 0.0}}}
    with pytest.raises(ValueError, match="different benchmarks"):
        _boot(smoke_params, {"a": a, "b": {"mlqa": {"t": {0: 1.0}}}})
    with pytest.raises(ValueError, match="different items"):
        _boot(smoke_params, {"a": a, "b": {"mmlu": {"t": {0: 1.0, 2: 0.0}}}})
    with pytest.raises(ValueError, match="at least one model"):
        _boot(smoke_params, {})
    two = {"mmlu": {"t": {0: 1.0, 1: 0.0}, "u": {0: 1.0}}}
    with pytest.raises(ValueError, match="task u: .* different items"):
        _boot(smoke_params, {"a": two, "b": {"mmlu": {"t": {0: 1.0, 1: 0.0}}}})
    # item ids of mixed types (lm-eval doc ids and our string ids) are ordered as text
    mixed = {"mmlu": {"t": {0: 1.0, "x": 0.0}}}
    assert _boot(smoke_params, {"a": mixed}).ability("a", point=True)["mmlu"] == 0.5


def test_t_interval_and_seeds_needed_worked_by_hand():
    from cft_helpers.intervals import normal_interval, seeds_needed, t_interval

    # 0.1, 0.2, 0.3: mean 0.2, s 0.1; t(0.975, 2 df) = 4.302653: half-width 4.302653 x 0.1 / sqrt(3) = 0.248414
    lo, hi = t_interval([0.1, 0.2, 0.3], 0.95)
    assert (lo, hi) == (pytest.approx(0.2 - 0.248414, abs=1e-6), pytest.approx(0.2 + 0.248414, abs=1e-6))
    assert type(lo) is float and type(hi) is float
    # at 90%: t(0.95, 2 df) = 2.919986
    assert t_interval([0.1, 0.2, 0.3], 0.90)[1] == pytest.approx(0.2 + 2.919986 * 0.1 / math.sqrt(3), abs=1e-6)
    # four values: t(0.975, 3 df) = 3.182446, s of (0, 1, 2, 3) = 1.290994
    assert t_interval([0.0, 1.0, 2.0, 3.0], 0.95)[0] == pytest.approx(1.5 - 3.182446 * 1.290994 / 2, abs=1e-6)
    # a floor on the standard error widens only when above the seeds' own (0.1 / sqrt 3 = 0.0577)
    assert t_interval([0.1, 0.2, 0.3], 0.95, min_se=0.1)[1] == pytest.approx(0.2 + 4.302653 * 0.1, abs=1e-6)
    assert t_interval([0.1, 0.2, 0.3], 0.95, min_se=0.05) == (lo, hi)
    with pytest.raises(ValueError, match="at least 2 values, got 1"):
        t_interval([0.1], 0.95)
    # normal: 1 +- 1.959964 x 0.5
    assert normal_interval(1.0, 0.5, 0.95) == (pytest.approx(1 - 0.979982, abs=1e-6), pytest.approx(1 + 0.979982, abs=1e-6))
    assert normal_interval(0.0, 1.0, 0.90)[1] == pytest.approx(1.644854, abs=1e-6)
    # seeds needed to exclude 0 with this spread: 3 give 0.248 > 0.2, 4 give 3.182 x 0.1 / 2 = 0.159 < 0.2
    assert seeds_needed([0.1, 0.2, 0.3], 0.95) == 4
    # against C2's line at -0.02: the distance is 0.22, and 4 still the first
    assert seeds_needed([0.1, 0.2, 0.3], 0.95, margin=0.02) == 4
    # mean 0.05, s 0.1: t(k-1) 0.1 / sqrt(k) < 0.05 first at k = 18 (2.109816 x 0.1 / sqrt(18) = 0.04973)
    assert seeds_needed([-0.05, 0.05, 0.15], 0.95) == 18
    assert seeds_needed([0.1, -0.1], 0.95) is None             # the mean sits on the line
    assert seeds_needed([0.2, 0.2, 0.2], 0.95) == 2            # no spread: two seeds show it
    assert seeds_needed([0.001, -0.0009, 0.0], 0.95, cap=50) is None
    # a floor on the standard error that does not average out: with se at least 0.02 no number of
    # seeds excludes 0 from 0.03 (t x 0.02 never falls below 1.96 x 0.02 = 0.039); from 0.05 it
    # takes 7 (t(0.975, 6 df) x 0.02 = 0.0489; 6 seeds give 0.0514)
    assert seeds_needed([0.030, 0.031, 0.029], 0.95, min_se=0.02) is None
    assert seeds_needed([0.05, 0.05, 0.05], 0.95, min_se=0.02) == 7


def test_estimate_draws_its_interval_by_the_number_of_seeds():
    from cft_helpers.intervals import Estimate

    draws = np.arange(101.0)   # 0..100: percentile q is 100 q; sd 29.155
    one = Estimate([50.0], draws=draws)
    assert one.value == 50.0 and one.k == 1
    assert one.interval(0.95) == (pytest.approx(2.5), pytest.approx(97.5))
    lo, hi = one.interval(0.95, familywise=True)      # normal from the draws' sd instead of percentiles
    assert (hi - lo) / 2 == pytest.approx(1.959964 * float(np.std(draws)), rel=1e-6) and (lo + hi) / 2 == 50.0
    assert "percentile" in one.method(2000) and "2000 replicates" in one.method(2000)
    des = Estimate([0.4], sd=0.05)
    assert des.interval(0.95) == (pytest.approx(0.4 - 0.097998, abs=1e-6), pytest.approx(0.4 + 0.097998, abs=1e-6))
    assert Estimate([0.4]).interval(0.95) == (None, None)
    assert Estimate([0.4], sd=float("nan")).interval(0.95) == (None, None)
    three = Estimate([0.1, 0.2, 0.3])
    assert three.interval(0.95)[0] == pytest.approx(0.2 - 0.248414, abs=1e-6) and three.k == 3
    assert three.method(2000) == "t over 3 seed values (2 df)"
    two = Estimate([0.1, 0.3], min_seeds=3)
    assert two.interval(0.95) == (None, None) and "a t-interval needs 3" in two.method(2000)
    assert Estimate([0.1, 0.3]).interval(0.95)[1] == pytest.approx(0.2 + 12.706205 * math.sqrt(0.02) / math.sqrt(2))
    # seeds on the paper's side of the line: above -margin
    assert Estimate([0.1, -0.01, -0.03]).in_direction() == 1
    assert Estimate([0.1, -0.01, -0.03]).in_direction(margin=0.02) == 2
    assert Estimate([0.0, -0.02]).in_direction(margin=0.02) == 1   # exactly on the line: not above it


# --------------------------------------------------------------------------- DES and MPD by hand


class FakeEmbedder:
    """Each text's vector written out: DES is then a number worked by hand."""

    name = "fake"

    def __init__(self, vectors):
        self.vectors, self.calls = vectors, []

    def encode(self, texts, batch_size, progress):
        self.calls.append((list(texts), batch_size, progress))
        return np.array([self.vectors[t] for t in texts], dtype=np.float64)


def _row(user, answer):
    return {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}]}


def test_des_by_hand_with_written_out_embeddings():
    from cft_helpers.similarity import des, row_text, sample_rows

    a = [_row("a1", "x"), _row("a2", "y")]
    b = [_row("b1", "z")]
    emb = FakeEmbedder({"a1": [1.0, 0.0], "a2": [0.0, 1.0], "b1": [1.0, 0.0], "x": [0.0, 1.0], "y": [0.0, 1.0],
                        "z": [0.0, 1.0], "a1\n\nx": [1.0, 0.0], "a2\n\ny": [1.0, 0.0], "b1\n\nz": [0.0, 1.0]})
    # instructions: mean of A = (1, 1) / sqrt 2; B = (1, 0): DES = 1 / sqrt 2
    got = des(a, b, emb, n=5, seed=3, n_bootstrap=0, batch_size=7, progress=False)
    assert got["des"] == pytest.approx(1 / math.sqrt(2)) and math.isnan(got["sd"])
    assert {k: got[k] for k in ("n_a", "n_b", "n", "seed", "text", "embedder")} == {
        "n_a": 2, "n_b": 1, "n": 5, "seed": 3, "text": "instruction", "embedder": "fake"}
    assert emb.calls[0] == (["a1", "a2"], 7, False)       # all rows (n >= rows), in order, as asked
    # responses: A's are both (0, 1), B's (0, 1): DES 1; both: A (1, 0), B (0, 1): DES 0
    assert des(a, b, emb, text="response", n_bootstrap=0, progress=False)["des"] == pytest.approx(1.0)
    assert des(a, b, emb, text="both", n_bootstrap=0, progress=False)["des"] == pytest.approx(0.0)
    assert row_text(_row("q", "r"), "both") == "q\n\nr"
    two_turns = {"messages": [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "r1"},
                              {"role": "user", "content": "u2"}, {"role": "assistant", "content": "r2"}]}
    assert row_text(two_turns) == "u1\n\nu2" and row_text(two_turns, "response") == "r1\n\nr2"
    rows = [{"i": i} for i in range(5)]
    assert sample_rows(rows, 5, 0) == rows and len(sample_rows(rows, 4, 0)) == 4


def test_des_samples_both_datasets_with_its_seed_and_passes_its_settings():
    import inspect

    from cft_helpers.similarity import des, des_from_embeddings, des_spread, embed_rows, row_text, sample_rows

    rng = np.random.default_rng(0)
    a = [_row(f"a{i}", f"ra{i}") for i in range(9)]
    b = [_row(f"b{i}", f"rb{i}") for i in range(7)]
    vectors = {row_text(r, t): rng.normal(size=3) + 2 for r in a + b for t in ("instruction", "response", "both")}
    emb = FakeEmbedder(vectors)
    got = des(a, b, emb, n=4, seed=11, n_bootstrap=25, batch_size=3, progress=False)
    texts_a = [row_text(r) for r in sample_rows(a, 4, 11)]
    texts_b = [row_text(r) for r in sample_rows(b, 4, 11)]
    assert emb.calls == [(texts_a, 3, False), (texts_b, 3, False)]
    ea, eb = np.array([vectors[t] for t in texts_a]), np.array([vectors[t] for t in texts_b])
    assert got["des"] == pytest.approx(des_from_embeddings(ea, eb))
    assert got["sd"] == pytest.approx(des_spread(ea, eb, 25, 11)) and got["sd"] != des_spread(ea, eb, 25, 0)
    # the paper's N = 500 rows per dataset; embed_rows embeds instructions unless told otherwise
    defaults = {k: v.default for k, v in inspect.signature(des).parameters.items() if v.default is not v.empty}
    assert {k: defaults[k] for k in ("n", "seed", "text", "n_bootstrap")} == {
        "n": 500, "seed": 0, "text": "instruction", "n_bootstrap": 200}
    spread = {k: v.default for k, v in inspect.signature(des_spread).parameters.items() if v.default is not v.empty}
    assert spread == {"n_boot": 200, "seed": 0}
    emb.calls.clear()
    embed_rows(a, emb, n=2, seed=1)
    assert emb.calls == [([row_text(r) for r in sample_rows(a, 2, 1)], 64, True)]


def test_des_spread_is_the_sd_of_des_over_row_resamples():
    from cft_helpers.similarity import des_from_embeddings, des_spread

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 4)) + 1, rng.normal(size=(20, 4)) + 1
    # the definition, written out: resample each dataset's rows with replacement, DES, sd (n - 1)
    r = np.random.default_rng(5)
    values = [des_from_embeddings(a[r.integers(0, 30, 30)], b[r.integers(0, 20, 20)]) for _ in range(40)]
    assert des_spread(a, b, 40, seed=5) == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)       # numpy: the sd of one value
        assert math.isnan(des_spread(a, b, 1)) and math.isnan(des_spread(a, b, -1))   # one value: no sd
    # identical rows: every resample has the same mean, no spread
    assert des_spread(np.ones((5, 3)), np.tile([1.0, 0.0, 0.0], (4, 1)), 20) == pytest.approx(0.0, abs=1e-12)


def test_mean_direction_refuses_zero_and_nan():
    from cft_helpers.similarity import SimilarityError, mean_direction

    assert mean_direction(np.array([[3.0, 4.0]])).tolist() == [0.6, 0.8]
    # float32 embeddings are averaged in float64: 1 + 1e-7 is 1.00000012 in float32 arithmetic
    from cft_helpers.similarity import des_from_embeddings

    a32 = np.array([[1.0, 1.0], [1e-7, 0.0]], dtype=np.float32)
    m = np.array([(1.0 + float(np.float32(1e-7))) / 2, 0.5])
    assert des_from_embeddings(a32, np.array([[1.0, 0.0]], dtype=np.float32)) == pytest.approx(
        m[0] / np.linalg.norm(m), rel=1e-12)
    for bad in ([[1.0, -1.0], [-1.0, 1.0]], [[float("nan"), 1.0]], [[float("inf"), 1.0]]):
        with pytest.raises(SimilarityError, match="zero or not finite"):
            mean_direction(np.array(bad))


def test_mpd_by_hand(tmp_path):
    import json as _json

    from cft_helpers.similarity import SimilarityError, mpd

    a = _write_ckpt(tmp_path / "a", {"w": [[0.0, 0.0]], "v": [0.0, 0.0, 0.0, 0.0], "u": [1.0]})
    b = _write_ckpt(tmp_path / "b", {"w": [[3.0, 4.0]], "v": [1.0, 1.0, 1.0, 1.0], "u": [1.0]})
    # ||w_a - w_b|| = 5, ||v_a - v_b|| = 2, ||u_a - u_b|| = 0: MPD = 7 / 3
    got = mpd(a, b)
    assert got["mpd"] == pytest.approx(7 / 3) and got["tensors"] == 3 and got["elements"] == 7
    assert got["largest"] == ["w", 5.0] and got["skipped_tied"] == []
    assert got["definition"].startswith("MPD = mean over named tensors")
    assert mpd(a, b, progress=True)["mpd"] == got["mpd"]                  # the progress bar changes nothing
    assert mpd(a, a)["largest"] == ["u", 0.0]                             # ties: the first name
    tie_a = _write_ckpt(tmp_path / "tie_a", {"w": [[0.0, 0.0]], "w2": [[0.0, 0.0]]})
    tie_b = _write_ckpt(tmp_path / "tie_b", {"w": [[3.0, 4.0]], "w2": [[4.0, 3.0]]})
    assert mpd(tie_a, tie_b)["largest"] == ["w", 5.0]
    # float32 weights are subtracted in float64: 1 - 1e-8 is 1.0 in float32 arithmetic
    p_a, p_b = _write_ckpt(tmp_path / "pa", {"p": [1.0]}), _write_ckpt(tmp_path / "pb", {"p": [1e-8]})
    assert mpd(p_a, p_b)["mpd"] == pytest.approx(1.0 - float(np.float32(1e-8)), rel=1e-12)
    # tied weights count once: lm_head.weight is the embedding's copy
    tied = {"model.embed_tokens.weight": [[0.0, 0.0]], "lm_head.weight": [[0.0, 0.0]]}
    ta = _write_ckpt(tmp_path / "ta", tied)
    tb = _write_ckpt(tmp_path / "tb", {"model.embed_tokens.weight": [[3.0, 4.0]], "lm_head.weight": [[3.0, 4.0]]})
    for f in (ta, tb):
        (f / "config.json").write_text(_json.dumps({"tie_word_embeddings": True, "hidden_size": 2}))
    got = mpd(ta, tb)
    assert got["mpd"] == 5.0 and got["tensors"] == 1 and got["skipped_tied"] == ["lm_head.weight"]
    (tb / "config.json").write_text(_json.dumps({"tie_word_embeddings": False, "hidden_size": 2}))
    assert mpd(ta, tb)["mpd"] == 5.0 and mpd(tb, ta)["tensors"] == 1     # either side tied: once
    (ta / "config.json").write_text(_json.dumps({"tie_word_embeddings": False}))
    assert mpd(ta, tb)["tensors"] == 2                                      # untied: both count
    # a long tensor read in pieces of 2^18 values: 300 000 twos minus zeros -> 2 sqrt(300 000)
    big_a = _write_ckpt(tmp_path / "big_a", {"x": np.zeros(300_000)})
    big_b = _write_ckpt(tmp_path / "big_b", {"x": np.full(300_000, 2.0)})
    assert mpd(big_a, big_b)["mpd"] == pytest.approx(2 * math.sqrt(300_000), rel=1e-12)
    # one architecture: every listed key is compared, a key only one side has is not
    for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "architectures"):
        (a / "config.json").write_text(_json.dumps({key: 1}))
        (b / "config.json").write_text(_json.dumps({key: 2}))
        with pytest.raises(SimilarityError, match=key):
            mpd(a, b)
    (b / "config.json").write_text(_json.dumps({"hidden_size": 2}))
    assert mpd(a, b)["mpd"] == pytest.approx(7 / 3)
    c = _write_ckpt(tmp_path / "c", {"w": [[0.0, 0.0, 0.0]], "v": [0.0] * 4, "u": [1.0]})
    with pytest.raises(SimilarityError, match="shape"):
        mpd(a, c)
    d = _write_ckpt(tmp_path / "d", {"w": [[0.0, 0.0]], "v": [0.0] * 4})
    with pytest.raises(SimilarityError, match=r"same parameter names.*\['u'\]"):
        mpd(a, d)
    e = _write_ckpt(tmp_path / "e", {"w": [[0.0, float("nan")]], "v": [0.0] * 4, "u": [1.0]})
    with pytest.raises(SimilarityError, match="not finite"):
        mpd(a, e)


def test_standardise_and_parallel_vectors_by_hand():
    from cft_helpers.representations import parallel_vectors, standardise

    x = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 9.0]])
    z = standardise(x)
    # column 0: mean 3, population sd sqrt(8/3); column 1 is constant: centred, divided by 1
    assert z[:, 0].tolist() == pytest.approx([-2 / math.sqrt(8 / 3), 0.0, 2 / math.sqrt(8 / 3)])
    assert z[:, 1].tolist() == [0.0, 0.0, 0.0]
    assert z.mean(axis=0) == pytest.approx([0, 0, 0]) and z[:, 2].std() == pytest.approx(1.0)
    small = standardise(np.array([[0.0], [0.1], [0.2]]))       # sd 0.08 < 1: still scaled to 1
    assert small[:, 0].tolist() == pytest.approx([-math.sqrt(1.5), 0.0, math.sqrt(1.5)])
    acts = {"en": np.arange(2 * 5 * 1, dtype=float).reshape(2, 5, 1), "fr": -np.arange(10.0).reshape(2, 5, 1)}
    vecs, langs, layer = parallel_vectors(acts)
    assert layer == 2 and langs == ["en", "en", "fr", "fr"]                       # the middle of 5 layers
    assert vecs[:, 0].tolist() == [2.0, 7.0, -2.0, -7.0]
    assert parallel_vectors(acts, 0)[0][:, 0].tolist() == [0.0, 5.0, -0.0, -5.0]
    assert parallel_vectors(acts, 4)[2] == 4
    for bad in (-1, 5):
        with pytest.raises(ValueError, match="out of range; the model has 5 layers"):
            parallel_vectors(acts, bad)


def test_head_masking_needs_weight_decay_zero():
    from cft_helpers.freezing import check_masking

    check_masking(0.0)
    check_masking(0, arm="lf_h2")
    for decay in (0.01, -0.1):
        with pytest.raises(ValueError, match="weight_decay"):
            check_masking(decay)


def test_item_scores_pick_each_benchmarks_metric_and_pool_mmlu_subtasks(tmp_path):
    from cft_helpers.intervals import item_scores
    from cft_helpers.params import load_params
    from cft_helpers.runs import MissingArtifact
    from cft_helpers.files import write_jsonl

    p = load_params("smoke", overrides={"run_dir": str(tmp_path / "run")})
    store = p.store
    write_jsonl(store.root / "eval" / "m.samples.jsonl", [
        {"task": "cft_mc", "doc_id": 0, "acc": 1.0, "p_correct": 0.9},
        {"task": "cft_mc", "doc_id": 1, "acc": [0.0]},
        {"task": "cft_completion", "doc_id": 0, "acc": 0.0, "acc_norm": 1.0},
        {"task": "cft_qa_lookup_ar", "doc_id": 0, "f1": 0.5, "exact_match": 0.0},
        {"task": "cft_qa_lookup_ar", "doc_id": 1, "f1": None},              # unreadable: left out
        {"task": "cft_qa_lookup_ar_extra", "doc_id": 0, "f1": 1.0},         # another task: not pooled
        {"task": "mmlu_anatomy", "doc_id": 0, "acc": 1.0},                  # mmlu is offline here
        {"task": "alpacaeval", "doc_id": 0, "preference": 2.0},             # AlpacaEval is off here
    ])
    assert item_scores(p, "m") == {
        "mmlu": {"cft_mc": {("cft_mc", 0): 1.0, ("cft_mc", 1): 0.0}},
        "hellaswag": {"cft_completion": {("cft_completion", 0): 1.0}},
        "mlqa": {"cft_qa_lookup_ar": {("cft_qa_lookup_ar", 0): 0.5}}}
    # lm-eval's mmlu group: its subtasks' items pooled (as lm-eval's size-weighted group mean)
    q = load_params("smoke", overrides={"run_dir": str(tmp_path / "run"),
                                        "evaluation.benchmarks.mmlu": {"source": "lm_eval", "task": "mmlu",
                                                                       "metric": "acc"}})
    write_jsonl(store.root / "eval" / "g.samples.jsonl", [
        {"task": "mmlu_anatomy", "doc_id": 0, "acc": 1.0}, {"task": "mmlu_law", "doc_id": 0, "acc": 0.0},
        {"task": "mmluX", "doc_id": 0, "acc": 1.0}])
    assert item_scores(q, "g") == {"mmlu": {"mmlu": {("mmlu_anatomy", 0): 1.0, ("mmlu_law", 0): 0.0}}}
    with pytest.raises(MissingArtifact, match="06_evaluation"):
        item_scores(p, "nobody")


def test_spectrum_score_worked_by_hand():
    import torch

    from cft_helpers import spectrum

    # singular values 4, 3, 2, 1 (square: beta = 1). Quartiles of (1, 2, 3, 4), linear: 1.75 and 3.25;
    # sigma = 1.5 / 1.349; tau = 2 sigma = 2.2239: signal 4 + 3 = 7, noise 2 + 1 = 3 -> (7 / 3) / 4
    w = np.diag([4.0, 3.0, 2.0, 1.0])
    assert spectrum.snr_score(w) == pytest.approx(7 / 12, rel=1e-6)
    assert spectrum.snr_score(torch.tensor(w, dtype=torch.float64)) == pytest.approx(7 / 12, rel=1e-6)
    # 2 x 8 with singular values 2, 1: beta = 1/4, tau = (0.5 / 1.349) * 1.5 = 0.556: both are signal,
    # no noise -> noise counts 1: 3 / 1 / 2 = 1.5; the transpose scores the same
    wide = np.zeros((2, 8))
    wide[0, 3], wide[1, 6] = 2.0, 1.0
    assert spectrum.snr_score(wide) == pytest.approx(1.5) and spectrum.snr_score(wide.T) == pytest.approx(1.5)
    # a 1-D weight is one row: one singular value, all signal
    assert spectrum.snr_score(np.array([3.0, 4.0])) == pytest.approx(5.0 / 1.0 / 5.0)
    with pytest.raises(spectrum.SpectrumError, match="1-D or 2-D"):
        spectrum.snr_score(np.ones((2, 2, 2)))
    with pytest.raises(spectrum.SpectrumError, match="all zeros"):
        spectrum.snr_score(np.zeros((3, 3)))
    # 1, 1, 0, 0: quartiles 0 and 1, tau = 2 / 1.349 = 1.48 above every value: no signal -> 0
    assert spectrum.snr_score(np.diag([1.0, 1.0, 0.0, 0.0])) == 0.0
    # 1, 0, 0, 0, 0: quartiles 0, tau = 0: the zeros are noise (<= tau) and sum to 0 -> infinite
    assert spectrum.snr_score(np.diag([1.0, 0.0, 0.0, 0.0, 0.0])) == math.inf
    # bf16 weights are scored in float32 (numpy has no bf16); nested lists are arrays too
    w4 = np.diag([4.0, 3.0, 2.0, 1.0])
    assert spectrum.snr_score(torch.tensor(w4, dtype=torch.bfloat16)) == pytest.approx(7 / 12, rel=1e-6)
    assert spectrum.snr_score(w4.tolist()) == pytest.approx(7 / 12, rel=1e-6)
    rng = np.random.default_rng(0)
    for shape in ((5, 7), (7, 5), (6, 6)):
        x = rng.normal(size=shape)
        assert spectrum.singular_values(x) == pytest.approx(np.linalg.svd(x, compute_uv=False), rel=1e-9)
    # float32 input: the Gram matrix is still formed in float64
    x32 = rng.normal(size=(6, 9)).astype(np.float32)
    assert spectrum.singular_values(x32) == pytest.approx(np.linalg.svd(x32.astype(np.float64), compute_uv=False),
                                                          rel=1e-9)
    # rank 1: the Gram matrix's zero eigenvalues come out slightly negative; clipped, never NaN
    r1 = np.random.default_rng(0).normal(size=(4, 1)) @ np.random.default_rng(0).normal(size=(1, 6))
    sv = spectrum.singular_values(r1)
    assert np.isfinite(sv).all() and (sv >= 0).all() and sv[0] == pytest.approx(np.linalg.norm(r1))


def test_spectrum_selects_the_top_percent_of_each_type():
    from cft_helpers import spectrum

    scores = {f"l{i}.q": {"snr": s, "type": "q"} for i, s in enumerate((0.1, 0.5, 0.3, 0.9, 0.7))}
    scores |= {f"l{i}.v": {"snr": s, "type": "v"} for i, s in enumerate((2.0, 1.0))}
    # floor(5 * 40 / 100) = 2 of q (0.9, 0.7); floor(2 * 40 / 100) = 0 of v
    assert spectrum.select(scores, 40) == {"q": ["l3.q", "l4.q"], "v": []}
    assert spectrum.select(scores, 100) == {"q": ["l3.q", "l4.q", "l1.q", "l2.q", "l0.q"], "v": ["l0.v", "l1.v"]}
    assert spectrum.select(scores, 0) == {"q": [], "v": []}
    assert spectrum.select(scores, 60) == {"q": ["l3.q", "l4.q", "l1.q"], "v": ["l0.v"]}
    for bad in (-1, 100.5):
        with pytest.raises(spectrum.SpectrumError, match=r"within \[0, 100\]"):
            spectrum.select(scores, bad)
    assert spectrum.module_type("model.layers.3.self_attn.q_proj.weight") == "self_attn.q_proj"
    assert spectrum.module_type("model.layers.3.self_attn.q_proj.bias") is None
    assert spectrum.module_type("model.embed_tokens.weight") is None
    assert spectrum.type_matches("self_attn.q_proj", ["k_proj", "q_proj"]) == "q_proj"
    assert spectrum.type_matches("self_attn.q_proj", ["self_attn.q_proj"]) == "self_attn.q_proj"
    assert spectrum.type_matches("self_attn.xq_proj", ["q_proj"]) is None


def test_mpd_reference_and_compared_arms(tmp_path):
    from cft_helpers.params import load_params
    from cft_helpers.similarity import mpd_arms, mpd_reference_arm

    p = load_params("smoke", overrides={"run_dir": str(tmp_path / "run")})
    assert mpd_arms(p) == ("rev1", ["p1_alpaca", "p1_instruct"])
    # a Phase-2 arm that starts from a model entry: the base is that model
    p.arms["p2_alpaca"].start = "base"
    assert mpd_reference_arm(p) == "p2_alpaca"          # itself: from the base on the Phase-2 data
    p.arms["p2_alpaca"].start = "p1_alpaca"
    # a Phase-1 arm trained on data from another start is not Table 4's (only as-is Phase-1 models are)
    p.similarity.mpd_reference = "rev1"
    p.arms["p1_alpaca"].start = "p1_instruct"
    assert mpd_arms(p) == ("rev1", ["p1_instruct"])


def test_des_defaults_are_the_papers_500_rows_and_seed_0():
    from cft_helpers.similarity import des, des_spread, row_text, sample_rows

    rng = np.random.default_rng(3)
    a = [_row(f"a{i}", "r") for i in range(600)]
    b = [_row(f"b{i}", "r") for i in range(520)]
    vectors = {row_text(r): rng.normal(size=3) + 1 for r in a + b}
    emb = FakeEmbedder(vectors)
    got = des(a, b, emb, progress=False)
    texts_a = [row_text(r) for r in sample_rows(a, 500, 0)]
    texts_b = [row_text(r) for r in sample_rows(b, 500, 0)]
    assert emb.calls == [(texts_a, 64, False), (texts_b, 64, False)]
    ea, eb = np.array([vectors[t] for t in texts_a]), np.array([vectors[t] for t in texts_b])
    assert got["sd"] == des_spread(ea, eb, 200, 0) and des_spread(ea, eb) == got["sd"]
    assert got["n_a"] == got["n_b"] == 500


def test_lf_h2_freezes_each_projection_where_it_moved_most_and_records_it():
    from cft_helpers import freezing

    names = [f"model.layers.{i}.self_attn.{p}.weight" for i in range(3) for p in ("q_proj", "k_proj")]
    names += ["model.layers.1.self_attn.q_proj.bias", "model.norm.weight"]
    changes = {"q_proj": {0: 1.0, 1: 3.0, 2: 2.0}, "k_proj": {0: 0.5, 1: 0.5, 2: 0.1}}
    plan = freezing.lf_h2(names, changes, 1)
    # q: layer 1 (3.0), with its bias; k: a tie of layers 0 and 1 -> the lower, 0
    assert plan.strategy == "LF_H2"
    assert plan.frozen == ["model.layers.0.self_attn.k_proj.weight", "model.layers.1.self_attn.q_proj.weight",
                           "model.layers.1.self_attn.q_proj.bias"]
    assert plan.details == {"layers": {"q_proj": [1], "k_proj": [0]}, "scope": "projection",
                            "changes": {"q_proj": {"0": 1.0, "1": 3.0, "2": 2.0},
                                        "k_proj": {"0": 0.5, "1": 0.5, "2": 0.1}}}
    whole = freezing.lf_h2(names, changes, 1, scope="layer")     # blocks 0 and 1 whole
    assert whole.details["scope"] == "layer"
    assert whole.frozen == [n for n in names if ".layers.0." in n or ".layers.1." in n]
    for bad in (0, 4):
        with pytest.raises(ValueError, match=f"between 1 and 3, got {bad}"):
            freezing.lf_h2(names, changes, bad)
    assert len(freezing.lf_h2(names, changes, 3).frozen) == 7        # all three layers: every q and k


def test_alpacaeval_preferences_enter_the_item_scores(tmp_path):
    from cft_helpers.intervals import item_scores
    from cft_helpers.params import load_params
    from cft_helpers.files import write_jsonl

    p = load_params("smoke", overrides={"run_dir": str(tmp_path / "run")})
    p.evaluation.benchmarks["alpacaeval"].source = "alpaca_eval"     # as a judged run has it
    p.evaluation.benchmarks["alpacaeval"].metric = "discrete_win_rate"
    store = p.store
    write_jsonl(store.root / "eval" / "m.samples.jsonl", [
        {"task": "alpacaeval", "doc_id": 0, "preference": 2.0}, {"task": "alpacaeval", "doc_id": 1, "preference": 1.5},
        {"task": "alpacaeval", "doc_id": 2, "preference": None}, {"task": "cft_mc", "doc_id": 0, "acc": 1.0}])
    assert item_scores(p, "m") == {"alpacaeval": {"alpacaeval": {("alpacaeval", 0): 1.0, ("alpacaeval", 1): 0.5}},
                                          "mmlu": {"cft_mc": {("cft_mc", 0): 1.0}}}


def test_a_plan_refuses_names_the_model_does_not_have():
    from cft_helpers import freezing

    with pytest.raises(ValueError, match="not among the model's parameters"):
        freezing._plan("LF_H1", ["a", "b"], {"c"}, {})
    with pytest.raises(ValueError, match="nothing left to train"):
        freezing._plan("LF_H1", ["a", "b"], {"a", "b"}, {})
    assert freezing._plan("LF_H1", ["a", "b", "c"], {"c", "a"}, {}).frozen == ["a", "c"]
