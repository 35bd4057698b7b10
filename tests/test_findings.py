"""The findings' verdict rule and intervals, on run stores built by hand with known per-item scores.

No model runs here: each test writes ``eval/<model>.samples.jsonl`` (and where needed the
similarity and representation summaries) with scores chosen so that the right verdict is known.
"""

import math

import numpy as np
import pytest

from cft_helpers import findings as F

from cft_helpers import intervals as I

from cft_helpers import findings_report as R

from scipy import stats
from cft_helpers.evaluation.harness import task_plan
from cft_helpers.params import load_params
from cft_helpers.files import atomic_write_json, write_jsonl

N_ITEMS = 40  # per task
MODELS = ["p1_alpaca", "p2_alpaca", "p1_instruct", "p2_instruct", "mixture", "rev1", "rev2",
          "lf_h1", "lf_h2", "spectrum", "gr_5", "gr_10", "er_10", "lora"]
ENGLISH = ("ifeval", "mmlu", "hellaswag")


@pytest.fixture
def params(tmp_path):
    return load_params("smoke", overrides={"run_dir": str(tmp_path / "run"), "findings.n_bootstrap": 500})


def base_scores(seed=0):
    """Every model's per-item scores: benchmark -> task -> array; binary for EA (about 0.8: far
    above the multiple-choice slots' chance level, so that every slot counts), in [0, 1] for MA."""
    rng = np.random.default_rng(seed)
    p = load_params("smoke")
    out = {}
    for bench, tasks in task_plan(p).items():
        for task, _ in tasks:
            out[(bench, task)] = (rng.random(N_ITEMS) < 0.8).astype(float) if bench in ENGLISH else rng.random(N_ITEMS)
    return out


def write_store(params, scores_by_model):
    """Write one samples file per model; ``scores_by_model[name][(bench, task)]`` is the array."""
    store = params.store
    for name, scores in scores_by_model.items():
        rows = []
        for (bench, task), arr in scores.items():
            metric = params.evaluation.benchmarks[bench].metric
            rows += [{"task": task, "doc_id": i, metric: float(v)} for i, v in enumerate(arr)]
        write_jsonl(store.root / "eval" / f"{name}.samples.jsonl", rows)
    return store


def stored_run(params, scores_by_model) -> F.SeedRun:
    """``write_store``, then the seed run that reads that store."""
    write_store(params, scores_by_model)
    return F.SeedRun(params)


def same_everywhere(delta=None):
    """All models equal to one base; ``delta[name]`` adds a constant to that model's EA items."""
    base = base_scores()
    out = {}
    for name in MODELS:
        d = (delta or {}).get(name, 0.0)
        out[name] = {k: (v + d if k[0] in ENGLISH else v.copy()) for k, v in base.items()}
    return out


def decide(params, scores_by_model=None, **kw):
    """The claims on ``params``' store, after writing ``scores_by_model`` there when given."""
    if scores_by_model is not None:
        write_store(params, scores_by_model)
    claims, meta = F.decide_claims([F.SeedRun(params)], **kw)
    return {c.id: c for c in claims}, meta


def test_rule_on_intervals():
    assert F.verdict(0.01, 0.2) == "reproduced"
    assert F.verdict(-0.01, 0.2) == "inconclusive"
    assert F.verdict(0.0, 0.0) == "inconclusive"          # an interval touching 0 does not exclude it
    assert F.verdict(-0.3, -0.01) == "contradicted"
    assert F.verdict(-0.015, 0.1, margin=0.02) == "reproduced"   # non-inferior within the margin
    assert F.verdict(-0.05, -0.021, margin=0.02) == "contradicted"
    assert F.verdict(-0.03, 0.1, margin=0.02) == "inconclusive"
    assert F.verdict(None, None) == "inconclusive (no interval)"
    assert I.share_verdict(0.95) == "reproduced" and I.share_verdict(0.05) == "contradicted"
    assert I.share_verdict(0.5) == "inconclusive"
    with pytest.raises(ValueError, match="above its upper end"):
        F.verdict(0.2, 0.1)


def test_dissimilar_worse_on_every_item_similar_unchanged_reproduces_c3(params):
    # p2_instruct scores 0.3 lower than p1_instruct on every English item: EA drops by 0.3 in
    # every replicate, whatever items are drawn; the similar pair is unchanged.
    write_store(params, same_everywhere({"p2_instruct": -0.3}))
    c, meta = decide(params)
    assert c["C3a"].value == pytest.approx(0.3)
    assert (c["C3a"].lo, c["C3a"].hi) == (pytest.approx(0.3), pytest.approx(0.3))
    assert c["C3a"].verdict == "reproduced" and c["C3b"].verdict == "reproduced"
    assert c["C3b"].value == pytest.approx(0.3)
    assert c["C2"].value == pytest.approx(0.0) and c["C2"].verdict == "reproduced"   # 0 > -margin
    # the vanilla arm is p2_instruct: every strategy (equal to the base) keeps 0.3 more EA
    assert c["C7a ER_10"].value == pytest.approx(0.3) and c["C7a ER_10"].verdict == "reproduced"
    assert meta["ea_change_half_width"] == {"similar": pytest.approx(0.0), "dissimilar": pytest.approx(0.0)}


def test_p2_equal_to_p1_is_inconclusive(params):
    write_store(params, same_everywhere())
    c, _ = decide(params)
    assert c["C3a"].value == 0.0 and c["C3a"].verdict == "inconclusive"
    assert c["C3b"].verdict == "inconclusive" and c["C1"].verdict == "inconclusive"


def test_opposite_sign_is_contradicted(params):
    write_store(params, same_everywhere({"p2_instruct": +0.2}))
    c, _ = decide(params)
    assert c["C3a"].value == pytest.approx(-0.2) and c["C3a"].verdict == "contradicted"
    assert c["C3b"].verdict == "contradicted"


def test_c2_drop_within_the_margin_is_reproduced_beyond_it_contradicted(params):
    write_store(params, same_everywhere({"p2_alpaca": -0.01}))
    c, _ = decide(params)
    assert c["C2"].value == pytest.approx(-0.01) and c["C2"].margin == 0.02
    assert c["C2"].verdict == "reproduced"
    write_store(params, same_everywhere({"p2_alpaca": -0.05}))
    c, _ = decide(params)
    assert c["C2"].verdict == "contradicted"


def test_interval_width_matches_the_paired_standard_error(params):
    # Only MMLU differs: p2_instruct flips a random 30% of p1_instruct's items. EA averages three
    # English benchmarks, so the EA change is the MMLU change / 3, and the paired bootstrap's
    # 95% half-width must be about 1.96 x sd(d) / sqrt(n) / 3, d the per-item differences.
    scores = same_everywhere()
    rng = np.random.default_rng(7)
    mmlu = ("mmlu", "cft_mc")
    n = 400
    p1 = (rng.random(n) < 0.6).astype(float)
    flip = rng.random(n) < 0.3
    p2 = np.where(flip, 1 - p1, p1)
    for name in MODELS:
        scores[name][mmlu] = p1.copy()
    scores["p2_instruct"][mmlu] = p2
    write_store(params, scores)
    c, _ = decide(params, replicates=4000)
    d = p1 - p2
    expected_half = 1.96 * d.std(ddof=0) / math.sqrt(n) / 3
    assert c["C3a"].value == pytest.approx(d.mean() / 3)
    assert c["C3a"].half_width == pytest.approx(expected_half, rel=0.12)
    # paired: the same draw for both models, so identical models give a zero-width interval
    assert c["C2"].half_width == pytest.approx(0.0)


def seed_stores(tmp_path, deltas, **overrides):
    """One run store per seed; seed i's p2_instruct is shifted by -deltas[i] on every English
    item (so C3a's value in seed i is deltas[i] / ... exactly: EA averages the English slots)."""
    runs = []
    for i, delta in enumerate(deltas):
        p = load_params("smoke", overrides={"run_dir": str(tmp_path / f"seed{i}"), "seed": i,
                                            "findings.n_bootstrap": 400, **overrides})
        runs.append(stored_run(p, same_everywhere({"p2_instruct": -delta})))
    return runs


def test_several_seeds_give_a_t_interval_over_the_seed_values(tmp_path):
    # Three seeds whose item-constant C3a values are 0.1, 0.2, 0.3: mean 0.2, sd 0.1, and the
    # t-interval is 0.2 +- t(0.975, 2 df) x 0.1 / sqrt(3) = 0.2 +- 4.3027 x 0.05774 = [-0.0484, 0.4484]:
    # inconclusive, though all three seeds lie in the paper's direction. A bootstrap over the
    # seeds would have said [0.1, 0.3], reproduced, at about 75% coverage.
    runs = seed_stores(tmp_path, (0.1, 0.2, 0.3))
    claims, meta = F.decide_claims(runs)
    c = {x.id: x for x in claims}["C3a"]
    assert c.value == pytest.approx(0.2)
    assert c.lo == pytest.approx(0.2 - 4.302653 * 0.1 / math.sqrt(3), abs=1e-6)
    assert c.hi == pytest.approx(0.2 + 4.302653 * 0.1 / math.sqrt(3), abs=1e-6)
    assert c.verdict == "inconclusive" and c.seeds_in_direction == [3, 3]
    assert "t over 3 seed values (2 df)" in c.interval and "3 of 3 seeds" in c.interval
    # with this spread, 4 seeds would do: t(0.975, 3) x 0.1 / 2 = 0.159 < 0.2 (3 give 0.248)
    assert "about 4 seeds would decide it" in c.note
    # family-wise: the same t-interval at 1 - 0.05 / m, wider still
    m = meta["claims_tested"]
    half_fw = stats.t.ppf(1 - 0.05 / m / 2, 2) * 0.1 / math.sqrt(3)
    assert c.hi_familywise == pytest.approx(0.2 + half_fw) and c.verdict_familywise == "inconclusive"
    assert meta["seeds"] == [0, 1, 2]


def test_two_seeds_of_opposite_sign_are_inconclusive_with_one_degree_of_freedom(tmp_path):
    # +0.1 and -0.1: mean 0, sd 0.1414; t(0.975, 1) = 12.706: 0 +- 12.706 x 0.1414 / sqrt(2) = +-1.2706
    runs = seed_stores(tmp_path, (+0.1, -0.1))
    c = {x.id: x for x in F.decide_claims(runs)[0]}["C3a"]
    assert c.value == pytest.approx(0.0, abs=1e-12)
    assert (c.lo, c.hi) == (pytest.approx(-1.270620, abs=1e-5), pytest.approx(1.270620, abs=1e-5))
    assert c.verdict == "inconclusive" and c.seeds_in_direction == [1, 2]
    assert "no number of seeds would decide it" in c.note


def test_c7b_er10_must_lead_every_other_strategy(params):
    # ER_10 0.2 above every strategy in EA: combined = (EA + MA) / 2, so each lead is +0.1, with a
    # zero-width interval (the same items); all six leads above 0: reproduced
    write_store(params, same_everywhere({"er_10": +0.2}))
    c, _ = decide(params)
    leads = [x for x in c if x.startswith("C7b vs ")]
    assert sorted(leads) == sorted(f"C7b vs {s}" for s in ("LF_H1", "LF_H2", "Spectrum", "GR_5", "GR_10", "LoRA"))
    assert all(c[x].value == pytest.approx(0.1) and c[x].verdict == "reproduced" for x in leads)
    assert c["C7b"].verdict == "reproduced" and c["C7b"].value == pytest.approx(0.1)   # the smallest lead
    assert c["C7b"].share == 1.0 and "100.0% of the bootstrap replicates" in c["C7b"].note
    # GR_5 0.2 above the rest: ER_10 trails GR_5 by 0.1 (contradicted) and ties the others
    # (inconclusive): one lead below 0 is enough to contradict C7b
    write_store(params, same_everywhere({"gr_5": +0.2}))
    c, _ = decide(params)
    assert c["C7b vs GR_5"].value == pytest.approx(-0.1) and c["C7b vs GR_5"].verdict == "contradicted"
    assert c["C7b vs LF_H1"].verdict == "inconclusive"
    assert c["C7b"].verdict == "contradicted" and c["C7b"].share == 0.0
    # the paper's value of a lead: Table 5's combined scores (Mistral-7B ER_10 0.409 - GR_5 0.357)
    assert c["C7b vs GR_5"].paper["Mistral-7B"] == pytest.approx(0.052)
    assert "from the mean of the four EA scores" in c["C7b vs GR_5"].paper_note   # ER_10's misprint: 0.345 - 0.357
    assert "Mistral-7B -0.012" in c["C7b vs GR_5"].paper_note
    # ER_10 above four strategies but tied with two: not all leads above 0, none below: inconclusive
    write_store(params, same_everywhere({"er_10": +0.2, "gr_5": +0.2, "lora": +0.2}))
    c, _ = decide(params)
    assert c["C7b"].verdict == "inconclusive"


def test_reverse_order_claims_follow_appendix_c(params):
    # C8a: MA(rev1) - MA(rev2); C8b: MA(similar P2) - MA(rev2); C8c: MA(mixture) - MA(rev2);
    # C8d: combined(mixture) - combined(rev2). rev2 loses 0.2 on every multilingual item.
    scores = same_everywhere()
    for k in scores["rev2"]:
        if k[0] not in ENGLISH:
            scores["rev2"][k] = scores["rev2"][k] - 0.2
    write_store(params, scores)
    c, _ = decide(params)
    for cid, value in (("C8a", 0.2), ("C8b", 0.2), ("C8c", 0.2), ("C8d", 0.1)):
        assert c[cid].value == pytest.approx(value) and c[cid].verdict == "reproduced", cid
    # a parameter set without the reverse order: every C8 row is "not run", naming the arm
    del params.arms["rev2"]
    c, _ = decide(params)
    assert all(c[x].verdict == "not run" and "'rev2'" in c[x].note for x in ("C8a", "C8b", "C8c", "C8d"))
    assert c["C3a"].verdict != "not run"


def test_missing_evaluation_names_the_notebook(params):
    scores = same_everywhere()
    del scores["mixture"]
    write_store(params, scores)
    c, _ = decide(params)
    assert c["C1"].verdict == "missing" and "06_evaluation" in c["C1"].note


def write_similarity(store):
    """Notebook 05's summary: DES 0.93 (similar pair) and 0.44 (dissimilar), sd 0.03 and 0.04;
    normalised MPD 0.4 and 1.0."""
    atomic_write_json(store.root / "similarity" / "summary.json", {
        "des": {"matrix": {"alpaca": {"multialpaca": 0.93}, "instruct": {"multialpaca": 0.44}},
                "sd": {"alpaca": {"multialpaca": 0.03}, "instruct": {"multialpaca": 0.04}}},
        "mpd": {"p1_alpaca": {"mpd_normalised": 0.4}, "p1_instruct": {"mpd_normalised": 1.0}}})


def test_similarity_claims_one_seed(params):
    store = write_store(params, same_everywhere())
    write_similarity(store)
    atomic_write_json(store.root / "representations" / "summary.json", {
        "phase2_covariance": {"ALPACA -> MULTIALPACA": [1.0, 2.0, 3.0], "Instruct -> MULTIALPACA": [2.0, 4.0, 6.0]}})
    c, _ = decide(params)
    # C4: 0.93 - 0.44 = 0.49, sd = hypot(0.03, 0.04) = 0.05: a normal 95% interval 0.49 +- 0.098
    assert c["C4"].value == pytest.approx(0.49)
    assert c["C4"].lo == pytest.approx(0.49 - 1.96 * 0.05, abs=0.01)
    assert c["C4"].hi == pytest.approx(0.49 + 1.96 * 0.05, abs=0.01)
    assert c["C4"].verdict == "reproduced"
    assert c["C5"].value == pytest.approx(0.6) and c["C5"].verdict == "inconclusive (no interval)"
    assert c["C6"].value == pytest.approx(2.0) and c["C6"].verdict == "inconclusive (no interval)"


def test_paper_values_and_the_misprint():
    paper, note = F._paper_values("C3a")
    assert paper == {"Mistral-7B": pytest.approx(0.529 - 0.390), "Llama-3-8B": pytest.approx(0.437 - 0.200)}
    paper, note = F._paper_values("C8a")   # Table B4: Mistral gains MA in phase 2, Llama loses it
    assert paper == {"Mistral-7B": pytest.approx(0.088 - 0.116), "Llama-3-8B": pytest.approx(0.157 - 0.134)}
    assert "disagree" in note
    # ... and Table B4 prints Llama's phase-2 MA 0.134 where its scores average 0.1367
    assert "Table B4 misprints" in note and "Llama-3-8B +0.020" in note
    paper, note = F._paper_values("C1")   # (0.436 + 0.317) / 2 - (0.441 + 0.234) / 2
    assert paper["Mistral-7B"] == pytest.approx(0.039, abs=1e-4)
    best = F.paper_c7b()
    assert best["Mistral-7B"] == {"best_printed": "ER_10", "best_recomputed": "GR_5"}
    assert best["Llama-3-8B"]["best_printed"] == "ER_10"


def test_appendix_c_comparisons_have_the_papers_values():
    # MA(forward P2) - MA(reverse P2): Table 2's ALPACA -> MULTIALPACA P2 MA minus Table B4's
    # MULTIALPACA -> ALPACA P2 MA: Mistral 0.317 - 0.116 = 0.201, Llama 0.456 - 0.134 = 0.322
    paper, note = F._paper_values("C8b")
    assert paper == {"Mistral-7B": pytest.approx(0.201), "Llama-3-8B": pytest.approx(0.322)}
    assert "Llama-3-8B +0.319" in note          # 0.456 - 0.1367
    # MA(mixture) - MA(reverse P2): 0.234 - 0.116 = 0.118, 0.220 - 0.134 = 0.086
    paper, _ = F._paper_values("C8c")
    assert paper == {"Mistral-7B": pytest.approx(0.118), "Llama-3-8B": pytest.approx(0.086)}
    # the combined row of before: (0.441 + 0.234) / 2 - (0.336 + 0.116) / 2 = 0.1115
    paper, _ = F._paper_values("C8d")
    assert paper["Mistral-7B"] == pytest.approx(0.1115)


def test_findings_files(params):
    store = write_store(params, same_everywhere({"p2_instruct": -0.3}))
    claims, meta = F.decide_claims([F.SeedRun(params)])
    paths = R.write_findings(store, claims, meta, title="smoke")
    md = open(paths["md"], encoding="utf-8").read()
    assert "| C3a |" in md and "**reproduced**" in md and "+0.300 [+0.300, +0.300]" in md
    data = R.load_findings(store)
    assert [c["id"] for c in data["claims"]][:4] == ["C1", "C2", "C3a", "C3b"]
    frame = R.claims_frame(claims)
    assert frame.loc["C3a", "verdict"] == "reproduced"


def test_benchmark_changes_break_ea_down(params):
    # p2_instruct drops 0.3 on every English item: each English benchmark changes by -0.3, EA by
    # -0.3, MA by 0; the similar pair does not move.
    write_store(params, same_everywhere({"p2_instruct": -0.3}))
    df = F.benchmark_changes([F.SeedRun(params)], {"similar": ("p1_alpaca", "p2_alpaca"),
                                                          "dissimilar": ("p1_instruct", "p2_instruct")})
    for bench in ("ifeval", "mmlu", "hellaswag", "EA"):
        row = df.loc[("dissimilar", bench)]
        assert row["change"] == pytest.approx(-0.3) and row["after"] == pytest.approx(row["before"] - 0.3)
        assert (row["low"], row["high"]) == (pytest.approx(-0.3), pytest.approx(-0.3))
    assert df.loc[("dissimilar", "MA"), "change"] == pytest.approx(0.0)
    assert df.loc[("similar", "EA"), "change"] == pytest.approx(0.0)
    assert list(df.loc["dissimilar"].index) == ["ifeval", "mmlu", "hellaswag", "EA", "mlqa", "xquad", "xlsum", "MA"]


def with_base(scores_by_model, delta=0.0):
    """The store's models plus the base the Phase-1 arms start from, ``delta`` on its EA items."""
    base = {k: (v + delta if k[0] in ENGLISH else v.copy()) for k, v in base_scores().items()}
    return {**scores_by_model, "base": base}


def test_a_multiple_choice_slot_at_chance_is_left_out_of_ea(params):
    # p1_alpaca sits at chance on mmlu: its 40 items average 0.25 (10 of 40 right), its interval
    # reaches below chance + 0.05 = 0.30. mmlu leaves EA for every claim, and the findings say so.
    scores = same_everywhere()
    mmlu = ("mmlu", "cft_mc")
    at_chance = np.array([1.0] * 10 + [0.0] * 30)
    scores["p1_alpaca"][mmlu] = at_chance
    scores["p2_instruct"][mmlu] = scores["p2_instruct"][mmlu] - 0.5    # would move EA if mmlu counted
    write_store(params, with_base(scores))
    c, meta = decide(params)
    check = meta["slot_checks"]["mmlu"]
    assert check["chance"] == 0.25 and check["line"] == pytest.approx(0.30) and check["counts"] is False
    assert check["p1"]["p1_alpaca"]["value"] == pytest.approx(0.25) and check["p1"]["p1_alpaca"]["lo"] < 0.30
    assert meta["slot_checks"]["hellaswag"]["counts"] is True
    assert meta["dropped"] == ["mmlu"] and not any(x.startswith("mmlu") for x in meta["ea_components"])
    assert c["C3a"].value == pytest.approx(0.0) and c["C7a ER_10"].value == pytest.approx(0.0)
    md = R.findings_markdown(list(c.values()), meta, "t")
    assert "mmlu: chance 0.25, line chance + margin = 0.30" in md and "**left out of EA**" in md
    assert "(left out: mmlu)" in md
    # with p1_alpaca at 0.75 on mmlu (interval well above 0.30) the slot counts again
    scores["p1_alpaca"][mmlu] = np.array([1.0] * 30 + [0.0] * 10)
    _, meta = decide(params, with_base(scores))
    assert meta["dropped"] == [] and meta["slot_checks"]["mmlu"]["counts"] is True


def test_phase1_not_above_its_base_makes_c2_and_c3_compare_nothing(params):
    # p1_alpaca and p1_instruct score as the base on every English item: Phase 1 taught nothing
    # EA can see, and the notes say so
    write_store(params, with_base(same_everywhere()))
    c, meta = decide(params)
    assert meta["phase1_against_base"]["p1_alpaca"]["above"] is False
    assert meta["phase1_against_base"]["p1_alpaca"]["EA"]["value"] == pytest.approx(0.0)
    assert "compares nothing: p1_alpaca is not above its base 'base'" in c["C2"].note
    assert "p1_instruct is not above its base" in c["C3a"].note and "p1_alpaca" in c["C3b"].note
    # a base 0.2 below both Phase-1 models: they are above it, no such note
    write_store(params, with_base(same_everywhere(), delta=-0.2))
    c, meta = decide(params)
    assert meta["phase1_against_base"]["p1_instruct"]["EA"]["lo"] == pytest.approx(0.2)
    assert meta["phase1_against_base"]["p1_instruct"]["above"] is True and "compares nothing" not in c["C2"].note
    md = R.findings_markdown(list(c.values()), meta, "t")
    assert "p1_instruct minus its base 'base'" in md and "above the base in EA." in md


def test_similarity_effect_line_and_familywise_survivors(params):
    # the dissimilar pair drops 0.3, the similar pair nothing: C2 (non-inferior), C3a, C3b all
    # reproduced: the similarity effect is reproduced, and the zero-width intervals survive
    write_store(params, same_everywhere({"p2_instruct": -0.3}))
    c, meta = decide(params)
    assert meta["similarity_effect"] == {"claims": "reproduced", "familywise": "reproduced"}
    md = R.findings_markdown(list(c.values()), meta, "t")
    assert "**The similarity effect** (C2, C3a and C3b together" in md and ": **reproduced**; family-wise" in md
    assert "**Verdicts that survive family-wise:** " in md and "C3a (reproduced)" in md
    # nothing forgets at all: C2 holds alone, which is not the effect
    c, meta = decide(params, same_everywhere())
    assert c["C2"].verdict == "reproduced" and meta["similarity_effect"]["claims"] == "inconclusive"
    # the dissimilar pair gains: C3b contradicted, so is the effect
    c, meta = decide(params, same_everywhere({"p2_instruct": +0.3}))
    assert meta["similarity_effect"]["claims"] == "contradicted"
    # every row with an interval has a family-wise verdict
    assert all(x.verdict_familywise is not None for x in c.values() if x.lo is not None)


def test_seed_only_quantities_get_a_t_interval_from_three_seeds(tmp_path):
    # MPD and the covariance change per seed; C6's dissimilar-minus-similar: 30, 189, 484 (the
    # issue's seeds): mean 234.3, sd 230.3, t(0.975, 2) = 4.3027: [-337.9, +806.5], inconclusive;
    # all three seeds in the paper's direction
    runs = seed_stores(tmp_path, (0.0, 0.0, 0.0))
    for run, (mpd_d, cov) in zip(runs, ((1.0, 30.0), (0.9, 189.0), (0.95, 484.0))):
        atomic_write_json(run.store.root / "similarity" / "summary.json", {
            "des": {"matrix": {"alpaca": {"multialpaca": 0.9}, "instruct": {"multialpaca": 0.4}},
                    "sd": {"alpaca": {"multialpaca": 0.0}, "instruct": {"multialpaca": 0.0}}},
            "mpd": {"p1_alpaca": {"mpd_normalised": 0.5}, "p1_instruct": {"mpd_normalised": mpd_d}}})
        atomic_write_json(run.store.root / "representations" / "summary.json", {
            "phase2_covariance": {"ALPACA -> MULTIALPACA": [10.0, 10.0], "Instruct -> MULTIALPACA": [10.0 + cov] * 2}})
    claims, meta = F.decide_claims(runs)
    c = {x.id: x for x in claims}
    assert c["C6"].value == pytest.approx(234.333, abs=1e-3)
    sd = np.std([30.0, 189.0, 484.0], ddof=1)
    assert c["C6"].lo == pytest.approx(234.333 - 4.302653 * sd / math.sqrt(3), abs=1e-3)
    assert c["C6"].verdict == "inconclusive" and c["C6"].seeds_in_direction == [3, 3]
    assert c["C6"].verdict_familywise == "inconclusive"
    # C5: 0.5, 0.4, 0.45: mean 0.45, sd 0.05: 0.45 +- 4.3027 x 0.05 / sqrt 3 = [0.326, 0.574]
    assert (c["C5"].lo, c["C5"].hi) == (pytest.approx(0.45 - 0.12421, abs=1e-4), pytest.approx(0.45 + 0.12421, abs=1e-4))
    assert c["C5"].verdict == "reproduced" and "3 of 3 seeds" in c["C5"].interval
    # DES with no spread anywhere: a zero-width interval at 0.5
    assert (c["C4"].lo, c["C4"].hi) == (pytest.approx(0.5), pytest.approx(0.5))
    # two seeds: no interval for a seed-only quantity, but the seed count
    claims, _ = F.decide_claims(runs[:2])
    c = {x.id: x for x in claims}
    assert c["C6"].verdict == "inconclusive (no interval)" and c["C6"].seeds_in_direction == [2, 2]
    assert c["C6"].verdict_familywise is None and "a t-interval needs 3" in c["C6"].interval


def test_item_scores_keep_reading_after_a_row_of_another_task(params, tmp_path):
    # a row of a task outside the plan, then more rows: every later row is still read (a `break`
    # would drop them silently); a task that merely starts with "mmlu_" is not pooled when mmlu is
    # not lm-eval's group
    store = params.store
    write_jsonl(store.root / "eval" / "m.samples.jsonl", [
        {"task": "unknown_task", "doc_id": 0, "acc": 1.0},
        {"task": "cft_mc", "doc_id": 0, "acc": 1.0},
        {"task": "mmlu_anatomy", "doc_id": 0, "acc": 1.0},
        {"task": "cft_completion", "doc_id": 3, "acc_norm": 0.0}])
    got = I.item_scores(params, "m")
    assert got == {"mmlu": {"cft_mc": {("cft_mc", 0): 1.0}},
                   "hellaswag": {"cft_completion": {("cft_completion", 3): 0.0}}}


def test_figures_plot_the_findings_intervals(params):
    # per-item noise in p2_alpaca's IFEval slot, so that the intervals have width; the figure's
    # EA change of each Phase-2 arm and each model's EA / MA carry exactly the findings' intervals
    from cft_helpers.evaluation.tables import ea_change, tradeoff_points
    from cft_helpers.plots import ability_tradeoff_figure, similarity_vs_forgetting as forgetting_figure
    from cft_helpers.similarity import similarity_vs_forgetting

    scores = same_everywhere({"p2_instruct": -0.2})
    rng = np.random.default_rng(5)
    ifeval = next(k for k in scores["p2_alpaca"] if k[0] == "ifeval")
    scores["p2_alpaca"][ifeval] = (rng.random(N_ITEMS) < 0.6).astype(float)
    write_store(params, with_base(scores, delta=-0.3))
    run = F.SeedRun(params)
    claims, meta = F.decide_claims([run])
    c = {x.id: x for x in claims}
    plotted = F.plotted_intervals([run])
    assert plotted["dropped"] == meta["dropped"]
    value, lo, hi = plotted["ea_change"]["p2_alpaca"]            # EA(P2) - EA(P1): C2's quantity
    assert (value, lo, hi) == (pytest.approx(c["C2"].value), pytest.approx(c["C2"].lo), pytest.approx(c["C2"].hi))
    assert hi - lo > 0.05
    value, lo, hi = plotted["ea_change"]["p2_instruct"]          # EA(P2) - EA(P1) = -C3a
    assert (value, lo, hi) == (pytest.approx(-c["C3a"].value), pytest.approx(-c["C3a"].hi), pytest.approx(-c["C3a"].lo))
    # the similarity figure draws those ends as its error bars
    change = ea_change(params, {}, plotted)
    des = {"matrix": {"alpaca": {"multialpaca": 0.9}, "instruct": {"multialpaca": 0.5}, "multialpaca": {}}}
    points = similarity_vs_forgetting(params, des, None, change)
    fig = forgetting_figure(points, [], "change in EA")
    ours = fig.data[0]
    at = list(ours.text).index(params.arms["p2_alpaca"].label)
    assert ours.error_y.array[at] == pytest.approx(plotted["ea_change"]["p2_alpaca"][2] - plotted["ea_change"]["p2_alpaca"][0])
    assert ours.error_y.arrayminus[at] == pytest.approx(plotted["ea_change"]["p2_alpaca"][0] - plotted["ea_change"]["p2_alpaca"][1])
    # the EA-vs-MA figure: each model's EA (x) and MA (y) with the findings' ends
    fig = ability_tradeoff_figure(tradeoff_points(params, {}, plotted), [])
    for trace in fig.data:
        for i, label in enumerate(trace.text):
            name = next(n for n in plotted["abilities"] if (params.arms[n].label if n in params.arms else n) == label
                        or (n in params.arms and params.arms[n].strategy == label))
            ea, ea_lo, ea_hi = plotted["abilities"][name]["EA"]
            assert trace.x[i] == pytest.approx(ea) and trace.error_x.array[i] == pytest.approx(ea_hi - ea)
            assert trace.error_x.arrayminus[i] == pytest.approx(ea - ea_lo)
            ma, ma_lo, _ = plotted["abilities"][name]["MA"]
            assert trace.y[i] == pytest.approx(ma) and trace.error_y.arrayminus[i] == pytest.approx(ma - ma_lo)


def test_figure_labels_neither_overlap_nor_leave_their_panel():
    # the paper's crowded Llama-3-8B mitigations and Mistral-7B's ER_10 "printed EA" far right
    from cft_helpers.paper_results import similarity_forgetting_points, tradeoff_points
    from cft_helpers.plots import ability_tradeoff_figure, label_box

    def check(fig):
        assert fig._cft_labels
        for panel, placed in fig._cft_labels.items():
            boxes = [label_box(p["text"], p["point_px"][0] + p["offset"][0], p["point_px"][1] + p["offset"][1])
                     for p in placed]
            for i, (b, p) in enumerate(zip(boxes, placed)):
                w, h = p["panel_px"]
                assert b[0] >= 0 and b[1] >= 0 and b[2] <= w and b[3] <= h, (panel, p["text"])
                for o in p["obstacles"]:   # clear of every error bar
                    assert min(b[2], o[2]) <= max(b[0], o[0]) or min(b[3], o[3]) <= max(b[1], o[1]), (panel, p["text"])
                for j in range(i):
                    assert min(b[2], boxes[j][2]) <= max(b[0], boxes[j][0]) or \
                        min(b[3], boxes[j][3]) <= max(b[1], boxes[j][1]), (panel, p["text"], placed[j]["text"])

    fig = ability_tradeoff_figure([], tradeoff_points())
    check(fig)
    assert {p["text"] for p in fig._cft_labels[(1, 2)]} >= {"ER_10 (printed EA)", "ER_10 (mean EA)"}
    import pandas as pd
    from cft_helpers.plots import similarity_vs_forgetting as forgetting_figure

    ours = pd.DataFrame({"label": ["ALPACA -> MULTIALPACA", "Instruct -> MULTIALPACA"], "des": [0.93, 0.45],
                         "mpd": [0.4, 1.0], "english_change": [0.012, 0.007], "change_low": [-0.01, -0.02],
                         "change_high": [0.03, 0.03]})
    check(forgetting_figure(ours, similarity_forgetting_points(), "change"))


def test_c7b_is_contradicted_by_one_lead_below_zero_even_with_another_missing(params):
    scores = same_everywhere({"gr_5": +0.2})
    del scores["lora"]
    c, _ = decide(params, scores)
    assert c["C7b vs GR_5"].verdict == "contradicted" and c["C7b vs LoRA"].verdict == "missing"
    assert c["C7b"].verdict == "contradicted" and c["C7b"].verdict_familywise == "contradicted"
    # with no lead below 0, a missing one leaves C7b missing
    scores = same_everywhere()
    del scores["lora"]
    c, _ = decide(params, scores)
    assert c["C7b"].verdict == "missing" and "06_evaluation" in c["C7b"].note


def test_rows_without_a_finite_interval_are_not_counted_family_wise(tmp_path):
    # every English slot off: EA is NaN, so C2, C3a, C3b, C7a have no interval and are not among
    # the m rows that set the family-wise level
    off = {f"evaluation.benchmarks.{b}": {"source": "off"} for b in ENGLISH}
    p = load_params("smoke", overrides={"run_dir": str(tmp_path / "run"), "findings.n_bootstrap": 300, **off})
    c, meta = decide(p, same_everywhere())
    assert c["C2"].verdict == "inconclusive (no interval)" and c["C2"].verdict_familywise is None
    counted = [x for x in c.values() if x.verdict_familywise is not None and x.id != "C7b"]
    assert meta["claims_tested"] == len(counted) and "C8a" in [x.id for x in counted]
    assert all(not x.id.startswith(("C2", "C3", "C7a")) for x in counted)


def test_des_over_seeds_keeps_at_least_one_seeds_own_noise(tmp_path):
    # three seeds with the same DES difference (shared rows): the seeds' spread is 0, but the rows'
    # own sd (hypot(0.03, 0.04) = 0.05) does not average out: 0.5 +- t(0.975, 2) x 0.05 = +-0.215
    runs = seed_stores(tmp_path, (0.0, 0.0, 0.0))
    for run in runs:
        atomic_write_json(run.store.root / "similarity" / "summary.json", {
            "des": {"matrix": {"alpaca": {"multialpaca": 0.9}, "instruct": {"multialpaca": 0.4}},
                    "sd": {"alpaca": {"multialpaca": 0.03}, "instruct": {"multialpaca": 0.04}}},
            "mpd": {"p1_alpaca": {"mpd_normalised": 0.5}, "p1_instruct": {"mpd_normalised": 1.0}}})
    c = {x.id: x for x in F.decide_claims(runs)[0]}["C4"]
    assert c.value == pytest.approx(0.5)
    assert (c.lo, c.hi) == (pytest.approx(0.5 - 4.302653 * 0.05, abs=1e-5), pytest.approx(0.5 + 4.302653 * 0.05, abs=1e-5))
    assert "standard error at least DES's own bootstrap sd" in c.interval


def test_footnote_names_each_slot_its_scorer_and_where_it_is_not_the_papers_metric():
    s = F.slot_scorers(load_params("default"))
    assert "lm-eval's IFEval checkers" in s["ifeval"] and "it reports prompt-level strict accuracy" in s["ifeval"]
    assert s["alpacaeval"] == "not run (reported missing)"
    assert "p_correct (not the paper's metric: it reports acc)" in s["mmlu"]
    assert "p_correct (not the paper's metric: it reports acc_norm)" in s["hellaswag"]
    assert s["mlqa"].endswith("f1; scorer script_aware") and "against the span" in s["mlqa"]
    assert "rougeL" in s["xlsum"] and "not the paper's metric" not in s["xlsum"] and "assumption" in s["xlsum"]
    paper = F.slot_scorers(load_params("params/paper/mistral7b.yaml"))
    assert paper["mmlu"] == "lm-eval task mmlu; acc" and "scorer paper" in paper["xquad"]
    assert "rouge_score's default tokenizer: an assumption" in paper["xlsum"]
