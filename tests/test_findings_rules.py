"""The findings' rules piece by piece: the seeds-needed count, how a claim is filled from its
estimate, what a missing similarity or representation value becomes, the slot and base checks
on partial stores, and the breakdown and figure intervals' own arguments. Each assertion is a
value that a wrong rule would change (scripts/mutation.py runs these against planted bugs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cft_helpers import findings as F
from cft_helpers.params import load_params
from cft_helpers.files import atomic_write_json

from test_findings import base_scores, same_everywhere, stored_run, write_store


@pytest.fixture
def params(tmp_path):
    return load_params("smoke", overrides={"run_dir": str(tmp_path / "run"), "findings.n_bootstrap": 300})


def _needed(values, margin=0.0, min_se=0.0, cap=1000):
    """seeds_needed written out: the smallest k whose t-interval half-width clears the line."""
    sd, distance = np.std(values, ddof=1) if len(values) > 1 else 0.0, abs(np.mean(values) + margin)
    return next((k for k in range(2, cap + 1)
                 if stats.t.ppf(0.975, k - 1) * max(sd / math.sqrt(k), min_se) < distance), None)


def test_seeds_needed_counts_from_the_line_with_the_spread_and_stops_at_the_cap():
    assert F.seeds_needed([0.2], 0.95) == 2               # one value: no spread, two seeds clear the line
    assert F.seeds_needed([1.0, 1.0], 0.95) == 2          # a mean of 1 is off the line too
    assert F.seeds_needed([0.1, 0.3], 0.95) == _needed([0.1, 0.3]) == 5
    assert F.seeds_needed([0.1, 0.3], 0.95, cap=5) == 5   # exactly the cap: found
    assert F.seeds_needed([0.1, 0.3], 0.95, cap=4) is None
    # the line sits at -margin: mean -0.05 is 0.05 above a line at -0.1
    assert F.seeds_needed([-0.15, 0.05], 0.95, margin=0.1) == _needed([-0.15, 0.05], margin=0.1)
    assert _needed([-0.15, 0.05], margin=0.1) != _needed([-0.15, 0.05], margin=-0.1)
    # a floor under the standard error: more seeds, or none at all
    v = [0.1, -0.2, 0.3]
    assert F.seeds_needed(v, 0.95, 0.05, min_se=0.058) == _needed(v, 0.05, 0.058) > _needed(v, 0.05)
    assert F.seeds_needed([0.1, 0.3], 0.95, min_se=0.5) is None
    assert F.seeds_needed([0.1, -0.1], 0.95) is None      # exactly on the line


def test_a_claim_is_filled_from_its_estimate():
    one = F._new_claim("C3a")
    F._decide(one, F.Estimate([0.5], draws=np.linspace(0.4, 0.6, 101)), 0.95, 777)
    assert "777 replicates" in one.interval and one.seeds_in_direction is None and one.note == ""
    assert one.verdict == "reproduced" and (one.lo, one.hi) == (pytest.approx(0.405), pytest.approx(0.595))

    c = F._new_claim("C2", margin=0.05)
    c.note = "an earlier note"
    v = [0.1, -0.2, 0.3]
    F._decide(c, F.Estimate(v, min_se=0.058), 0.95, 100)
    assert c.verdict == "inconclusive" and c.seeds_in_direction == [2, 3]
    assert c.interval == "t over 3 seed values (2 df); 2 of 3 seeds in the paper's direction"
    assert c.note == f"an earlier note; with this spread, about {_needed(v, 0.05, 0.058)} seeds would decide it"

    line = F._new_claim("C3a")
    F._decide(line, F.Estimate([0.1, -0.1]), 0.95, 100)
    assert line.note == "its seeds average exactly on the line: no number of seeds would decide it"


def test_claims_carry_the_papers_values_and_their_strategy():
    c7b = F._new_claim("C7b")
    assert c7b.paper == {} and c7b.paper_note == ""       # ranked, not a paper difference
    lf = F._new_claim("C7a", "LF_H1")
    assert lf.id == "C7a LF_H1" and lf.claim.startswith("LF_H1 keeps") and lf.quantity == "EA(LF_H1) - EA(vanilla Phase 2)"


def test_missing_similarity_and_representation_values_become_their_reasons(params):
    store = write_store(params, same_everywhere())
    roles = F.claim_roles(params)
    run = F.SeedRun(params)
    out = F._seed_values(run, roles)
    assert isinstance(out["C4"], str) and out["C4"] == out["C5"] and "05_similarity" in out["C4"]
    assert isinstance(out["C6"], str) and "07_representations" in out["C6"]
    # DES of another pair only, no MPD table, one Phase-1 model's MPD
    atomic_write_json(store.root / "similarity" / "summary.json",
                      {"des": {"matrix": {"alpaca": {"other": 0.9}}, "sd": {"alpaca": {"other": 0.0}}}})
    out = F._seed_values(run, roles)
    assert out["C4"].startswith("DES of [('alpaca', 'multialpaca'), ('instruct', 'multialpaca')] is not")
    assert out["C5"] == "the MPD table lacks 'p1_alpaca' or 'p1_instruct'; rerun notebook 05_similarity"
    atomic_write_json(store.root / "similarity" / "summary.json", {"mpd": {"p1_alpaca": {"mpd_normalised": 0.4}}})
    out = F._seed_values(run, roles)
    assert out["C5"].startswith("the MPD table lacks") and out["C4"].startswith("DES of")
    # Figure 2's curves: none, then one pair's only, then both
    atomic_write_json(store.root / "representations" / "summary.json", {})
    lack = "Figure 2's curves lack 'ALPACA -> MULTIALPACA' or 'Instruct -> MULTIALPACA'; rerun notebook 07_representations"
    assert F._seed_values(run, roles)["C6"] == lack
    atomic_write_json(store.root / "representations" / "summary.json",
                      {"phase2_covariance": {"ALPACA -> MULTIALPACA": [1.0, 3.0]}})
    assert F._seed_values(run, roles)["C6"] == lack
    atomic_write_json(store.root / "representations" / "summary.json", {"phase2_covariance": {
        "ALPACA -> MULTIALPACA": [1.0, 3.0], "Instruct -> MULTIALPACA": [4.0, 8.0]}})
    out = F._seed_values(run, roles)
    assert out["C6"] == 4.0 and out["C6_scale"] == (2.0, 6.0)


def _without(scores_by_model, bench=None, models=()):
    return {n: {k: v for k, v in s.items() if k[0] != bench} for n, s in scores_by_model.items() if n not in models}


def test_slot_checks_on_partial_stores(params, tmp_path):
    roles = F.claim_roles(params)
    # no MMLU at all: HellaSwag is still checked
    write_store(params, _without(same_everywhere(), "mmlu"))
    seeds = [F.SeedScores(F.SeedRun(params), F._wanted(roles), 100, np.random.default_rng(0))]
    checks = F.slot_checks(seeds, roles, 0.95, 0.05)
    assert set(checks) == {"hellaswag"} and checks["hellaswag"]["counts"]
    # the similar Phase-1 model missing: it is listed as None, the other one still checked
    p2 = load_params("smoke", overrides={"run_dir": str(tmp_path / "two")})
    write_store(p2, _without(same_everywhere(), models=("p1_alpaca",)))
    seeds = [F.SeedScores(F.SeedRun(p2), F._wanted(roles), 100, np.random.default_rng(0))]
    checks = F.slot_checks(seeds, roles, 0.95, 0.05)
    assert checks["mmlu"]["p1"]["p1_alpaca"] is None and checks["mmlu"]["p1"]["p1_instruct"]["value"] > 0.5
    assert not checks["mmlu"]["counts"]
    # an interval whose lower end lies exactly on the line does not count: above it, strictly
    p3 = load_params("smoke", overrides={"run_dir": str(tmp_path / "three")})
    on_line = same_everywhere()
    for name in ("p1_alpaca", "p1_instruct"):
        on_line[name] = {k: (np.full_like(v, 0.5) if k[0] == "mmlu" else v) for k, v in on_line[name].items()}
    write_store(p3, on_line)
    seeds = [F.SeedScores(F.SeedRun(p3), F._wanted(roles), 100, np.random.default_rng(0))]
    checks = F.slot_checks(seeds, roles, 0.95, 0.25)
    assert checks["mmlu"]["line"] == 0.5 and checks["mmlu"]["p1"]["p1_alpaca"]["lo"] == 0.5
    assert not checks["mmlu"]["counts"]


def test_phase1_against_base_without_the_base_and_with_a_slot_left_out(params):
    roles = F.claim_roles(params)
    models = same_everywhere({"p1_alpaca": 0.1})
    write_store(params, models)  # no base model scored
    seeds = [F.SeedScores(F.SeedRun(params), F._wanted(roles), 100, np.random.default_rng(0))]
    out = F.phase1_against_base(seeds, roles, 0.95, frozenset())
    assert out == {"p1_alpaca": {"base": "base", "above": None}, "p1_instruct": {"base": "base", "above": None}}
    # the base scored as p1_instruct; p1_alpaca 0.1 above it on every English item but MMLU
    models["base"] = models["p1_instruct"]
    models["p1_alpaca"] = {k: (models["base"][k] if k[0] == "mmlu" else v) for k, v in models["p1_alpaca"].items()}
    write_store(params, models)
    seeds = [F.SeedScores(F.SeedRun(params), [*F._wanted(roles), "base"], 100, np.random.default_rng(0))]
    full = F.phase1_against_base(seeds, roles, 0.95, frozenset())
    left = F.phase1_against_base(seeds, roles, 0.95, frozenset({"mmlu"}))
    assert "mmlu" in full["p1_alpaca"] and "mmlu" not in left["p1_alpaca"]
    assert full["p1_alpaca"]["EA"]["value"] == pytest.approx(0.2 / 3)
    assert left["p1_alpaca"]["EA"]["value"] == pytest.approx(0.1) and left["p1_alpaca"]["above"]


def _noisy(params):
    """p2_instruct's English items redrawn (a change with a spread), MMLU only lowered by 0.3."""
    models = same_everywhere()
    rng = np.random.default_rng(5)
    models["p2_instruct"] = {k: ((rng.random(len(v)) < 0.6).astype(float) if k[0] == "ifeval" else
                                 v - 0.3 if k[0] == "mmlu" else v) for k, v in models["p2_instruct"].items()}
    return write_store(params, models)


def test_benchmark_changes_default_draws_and_a_left_out_slot(params):
    _noisy(params)
    runs, pairs = [F.SeedRun(params)], {"similar": ("p1_alpaca", "p2_alpaca"),
                                              "dissimilar": ("p1_instruct", "p2_instruct")}
    default = F.benchmark_changes(runs, pairs)
    same = F.benchmark_changes(runs, pairs, replicates=params.findings.n_bootstrap, seed=params.seed)
    other = F.benchmark_changes(runs, pairs, seed=params.seed + 1)
    assert default.equals(same) and not default["low"].equals(other["low"])
    # drawn as the claims' are: the dissimilar pair's EA change is C3a's quantity, negated
    c3a = next(c for c in F.decide_claims(runs)[0] if c.id == "C3a")
    row = default.loc[("dissimilar", "EA")]
    assert (row["low"], row["high"]) == (pytest.approx(-c3a.hi, abs=1e-12), pytest.approx(-c3a.lo, abs=1e-12))
    assert row["high"] - row["low"] > 0.01
    assert list(default.index.get_level_values(0).unique()) == ["dissimilar", "similar"]
    left = F.benchmark_changes(runs, pairs, exclude=("mmlu",))
    row, full = left.loc[("dissimilar", "EA")], default.loc[("dissimilar", "EA")]
    ifeval, hellaswag = (default.loc[("dissimilar", b)] for b in ("ifeval", "hellaswag"))
    assert row["change"] == pytest.approx((ifeval["change"] + hellaswag["change"]) / 2, abs=1e-12)
    assert row["before"] == pytest.approx((ifeval["before"] + hellaswag["before"]) / 2, abs=1e-12)
    assert full["change"] == pytest.approx((ifeval["change"] + hellaswag["change"] - 0.3) / 3, abs=1e-12)


def test_plotted_intervals_arguments(params, tmp_path):
    empty = load_params("smoke", overrides={"run_dir": str(tmp_path / "empty")})
    assert F.plotted_intervals([F.SeedRun(empty)]) == \
        {"dropped": [], "abilities": {}, "ea_change": {}}
    _noisy(params)
    runs = [F.SeedRun(params)]
    some = F.plotted_intervals(runs, names=["nope", "p2_instruct"])
    assert set(some["abilities"]) == {"p2_instruct"}
    default, other = F.plotted_intervals(runs), F.plotted_intervals(runs, seed=params.seed + 1)
    assert default["ea_change"]["p2_instruct"] != other["ea_change"]["p2_instruct"]
    assert default == F.plotted_intervals(runs, seed=params.seed)


def test_plotted_intervals_leave_out_a_slot_at_chance(params):
    models = same_everywhere()
    rng = np.random.default_rng(3)
    for name in models:   # MMLU at chance for every model; p2_instruct loses 0.2 on it
        models[name] = {k: ((rng.random(len(v)) < 0.25).astype(float) - (0.2 if name == "p2_instruct" else 0.0)
                            if k[0] == "mmlu" else v) for k, v in models[name].items()}
    write_store(params, models)
    out = F.plotted_intervals([F.SeedRun(params)])
    assert out["dropped"] == ["mmlu"]
    assert out["ea_change"]["p2_instruct"][0] == pytest.approx(0.0, abs=1e-12)   # MMLU's loss left out
    ea = out["abilities"]["p1_instruct"]["EA"][0]
    means = [np.mean([base_scores()[k].mean() for k in base_scores() if k[0] == b]) for b in ("ifeval", "hellaswag")]
    assert ea == pytest.approx(np.mean(means), abs=1e-12)


def test_decide_claims_draws_from_the_params_seed_by_default(params):
    _noisy(params)
    runs = [F.SeedRun(params)]
    default = {c.id: (c.lo, c.hi) for c in F.decide_claims(runs)[0]}
    same = {c.id: (c.lo, c.hi) for c in F.decide_claims(runs, seed=params.seed)[0]}
    other = {c.id: (c.lo, c.hi) for c in F.decide_claims(runs, seed=params.seed + 1)[0]}
    assert default == same and default["C3a"] != other["C3a"]


@pytest.mark.parametrize("setting, note", [("nope", "the parameter set has no arm 'nope' (findings.similar)"),
                                           (None, "findings.similar names no arm")])
def test_a_claim_whose_arm_the_params_lack_says_which_setting(tmp_path, setting, note):
    p = load_params("smoke", overrides={"run_dir": str(tmp_path / "run"), "findings.similar": setting,
                                        "findings.n_bootstrap": 100})
    c = {x.id: x for x in F.decide_claims([stored_run(p, same_everywhere())])[0]}
    for cid in ("C1", "C2", "C3b", "C8b"):
        assert c[cid].verdict == F.NOT_RUN and c[cid].note == note, cid
    assert c["C3a"].verdict != F.NOT_RUN


def test_roles_of_a_pair_whose_phase1_is_a_model_not_an_arm(tmp_path):
    """findings.dissimilar naming an arm that starts from a model (the mixture starts from the
    base): its Phase-1 role is that model, and it has no base to be compared with."""
    p = load_params("smoke", overrides={"run_dir": str(tmp_path / "run"), "findings.dissimilar": "mixture"})
    roles = F.claim_roles(p)
    assert roles["dissimilar"] == "mixture" and roles["dissimilar_p1"] == p.arms["mixture"].start == "base"
    assert roles["bases"] == {"p1_alpaca": "base"}


def test_c3b_subtracts_the_similar_pairs_loss(params):
    """C3b = [EA(P1) - EA(P2)] dissimilar - [EA(P1) - EA(P2)] similar: 0.3 - 0.1 = 0.2."""
    write_store(params, same_everywhere({"p2_instruct": -0.3, "p2_alpaca": -0.1}))
    c = {x.id: x for x in F.decide_claims([F.SeedRun(params)])[0]}
    assert c["C3a"].value == pytest.approx(0.3) and c["C3b"].value == pytest.approx(0.2)
    assert c["C2"].interval.startswith(f"paired bootstrap over evaluation items, {params.findings.n_bootstrap} "
                                       "replicates")


def test_benchmark_changes_start_from_the_point_scores(params):
    _noisy(params)
    df = F.benchmark_changes([F.SeedRun(params)], {"dissimilar": ("p1_instruct", "p2_instruct")})
    for bench, task in (("hellaswag", "cft_completion"), ("ifeval", "cft_instructions")):
        assert df.loc[("dissimilar", bench), "before"] == pytest.approx(base_scores()[(bench, task)].mean(), abs=1e-12)


def test_compares_nothing_joins_both_phase1_models_after_an_earlier_note(tmp_path):
    """Two seeds where both Phase-1 models score as their base: C3b's note keeps the seeds-needed
    note and names both models."""
    from test_findings import with_base

    runs = []
    for i, delta in enumerate((0.05, -0.02)):
        p = load_params("smoke", overrides={"run_dir": str(tmp_path / f"s{i}"), "seed": i, "findings.n_bootstrap": 100})
        runs.append(stored_run(p, with_base(same_everywhere({"p2_instruct": -delta}))))
    c = {x.id: x for x in F.decide_claims(runs)[0]}
    assert c["C3b"].verdict == "inconclusive"
    first, _, rest = c["C3b"].note.partition("; compares nothing: ")
    assert first.startswith("with this spread, about") and rest == (
        "p1_alpaca is not above its base 'base' in EA, p1_instruct is not above its base 'base' in EA")


def test_similarity_claims_lacking_an_arm_or_a_seeds_value(tmp_path):
    p = load_params("smoke", overrides={"run_dir": str(tmp_path / "a"), "findings.similar": None,
                                        "findings.n_bootstrap": 100})
    c = {x.id: x for x in F.decide_claims([stored_run(p, same_everywhere())])[0]}
    assert [c[k].note for k in ("C4", "C5", "C6")] == ["findings.similar names no arm"] * 3
    # two seeds, the second without a similarity summary: C4 says what the second one lacks
    runs = []
    for i in range(2):
        q = load_params("smoke", overrides={"run_dir": str(tmp_path / f"s{i}"), "seed": i, "findings.n_bootstrap": 100})
        store = write_store(q, same_everywhere())
        if i == 0:
            atomic_write_json(store.root / "similarity" / "summary.json", {
                "des": {"matrix": {"alpaca": {"multialpaca": 0.9}, "instruct": {"multialpaca": 0.4}},
                        "sd": {"alpaca": {"multialpaca": 0.0}, "instruct": {"multialpaca": 0.0}}},
                "mpd": {"p1_alpaca": {"mpd_normalised": 0.5}, "p1_instruct": {"mpd_normalised": 1.0}}})
        runs.append(F.SeedRun(q))
    c = {x.id: x for x in F.decide_claims(runs)[0]}
    assert c["C4"].verdict == F.MISSING and "05_similarity" in c["C4"].note and c["C4"].value is None


def test_mitigation_claims_without_a_vanilla_arm_say_so(tmp_path):
    p = load_params("smoke", overrides={"run_dir": str(tmp_path / "run"), "arms.p2_instruct.start": "p1_alpaca",
                                        "findings.n_bootstrap": 100})
    c = {x.id: x for x in F.decide_claims([stored_run(p, same_everywhere())])[0]}
    assert c["C7a LF_H1"].verdict == F.NOT_RUN
    assert c["C7a LF_H1"].note == "the parameter set has no vanilla Phase-2 arm beside its mitigation arms"


def test_des_interval_text_and_figure2_scale(params, tmp_path):
    from test_findings import write_similarity

    store = write_store(params, same_everywhere())
    write_similarity(store)
    atomic_write_json(store.root / "representations" / "summary.json", {
        "phase2_covariance": {"ALPACA -> MULTIALPACA": [1.0, 3.0], "Instruct -> MULTIALPACA": [2.0, 6.0]}})
    c = {x.id: x for x in F.decide_claims([F.SeedRun(params)])[0]}
    assert c["C4"].interval == "normal from DES's bootstrap sd (rows resampled; the two DES treated as independent)"
    assert c["C6"].extra["mean_change_similar_dissimilar"] == [(2.0, 4.0)]
    runs = []
    for i in range(3):
        q = load_params("smoke", overrides={"run_dir": str(tmp_path / f"s{i}"), "seed": i, "findings.n_bootstrap": 100})
        s = write_store(q, same_everywhere())
        atomic_write_json(s.root / "similarity" / "summary.json", {
            "des": {"matrix": {"alpaca": {"multialpaca": 0.9 + 0.01 * i}, "instruct": {"multialpaca": 0.4}},
                    "sd": {"alpaca": {"multialpaca": 0.03}, "instruct": {"multialpaca": 0.04}}}})
        runs.append(F.SeedRun(q))
    c4 = next(x for x in F.decide_claims(runs)[0] if x.id == "C4")
    assert c4.interval == ("t over 3 seed values (2 df); 3 of 3 seeds in the paper's direction; "
                           "standard error at least DES's own bootstrap sd")
    # two seeds: t with 1 df over a standard error of at least DES's own sd, hypot(0.03, 0.04) = 0.05
    c4 = next(x for x in F.decide_claims(runs[:2])[0] if x.id == "C4")
    half = stats.t.ppf(0.975, 1) * max(np.std([0.5, 0.51], ddof=1) / math.sqrt(2), 0.05)
    assert (c4.lo, c4.hi) == (pytest.approx(0.505 - half, abs=1e-9), pytest.approx(0.505 + half, abs=1e-9))


def test_c7b_paper_values_notes_share_and_ranking(params):
    write_store(params, same_everywhere({"er_10": +0.2}))
    c = {x.id: x for x in F.decide_claims([F.SeedRun(params)])[0]}["C7b"]
    assert c.paper == {"Mistral-7B": 1.0, "Llama-3-8B": 1.0}          # ER_10 first as printed, in both
    assert c.paper_note == ("first by combined score as printed: Mistral-7B ER_10, Llama-3-8B ER_10; with each "
                            "misprinted EA average replaced by the mean of its four scores: Mistral-7B GR_5, "
                            "Llama-3-8B ER_10")
    assert c.interval == "the rows above: each lead with its own interval"
    assert c.extra["point_ranking"][0] == "ER_10" and len(c.extra["point_ranking"]) == 7
    # a lead about one standard error wide: ER_10 first in some replicates, not all
    models = same_everywhere()
    rng = np.random.default_rng(11)
    models["er_10"] = {k: ((rng.random(len(v)) < 0.83).astype(float) if k[0] == "ifeval" else v)
                       for k, v in models["er_10"].items()}
    c = {x.id: x for x in F.decide_claims([stored_run(params, models)])[0]}["C7b"]
    assert 0.0 < c.share < 1.0 and f"{c.share:.1%} of the bootstrap replicates" in c.note


def test_c7b_contradicted_with_a_lead_missing_takes_the_smallest_lead(params):
    scores = same_everywhere({"gr_5": +0.2})
    del scores["lora"]
    c = {x.id: x for x in F.decide_claims([stored_run(params, scores)])[0]}["C7b"]
    assert c.value == pytest.approx(-0.1) and c.interval == "the rows above: a lead below 0 (others missing)"


def test_c7b_without_er10_or_without_another_strategy(tmp_path):
    p = load_params("smoke", overrides={"run_dir": str(tmp_path / "a"), "arms.er_10.table": "D8",
                                        "findings.n_bootstrap": 100})
    c = {x.id: x for x in F.decide_claims([stored_run(p, same_everywhere())])[0]}["C7b"]
    assert (c.verdict, c.note) == (F.NOT_RUN, "the parameter set has no ER_10 arm among its mitigation arms")
    others = {f"arms.{a}.table": "D8" for a in ("lf_h1", "lf_h2", "spectrum", "gr_5", "gr_10", "lora")}
    p = load_params("smoke", overrides={"run_dir": str(tmp_path / "b"), "findings.n_bootstrap": 100, **others})
    c = {x.id: x for x in F.decide_claims([stored_run(p, same_everywhere())])[0]}["C7b"]
    assert (c.verdict, c.note) == (F.NOT_RUN, "the parameter set has no other strategy to compare ER_10 with")


def test_one_seed_familywise_intervals_are_normal_from_the_replicates(params):
    """At the family-wise level a percentile of 2000 replicates rests on a few per tail: one
    seed's family-wise interval is the normal one, symmetric about the value, wider than the
    percentile interval at 95%."""
    _noisy(params)
    claims, meta = F.decide_claims([F.SeedRun(params)])
    c = next(x for x in claims if x.id == "C3a")
    assert meta["familywise_confidence"] == pytest.approx(1 - 0.05 / meta["claims_tested"])
    assert c.hi_familywise - c.value == pytest.approx(c.value - c.lo_familywise, abs=1e-12)
    assert c.lo_familywise < c.lo and c.hi_familywise > c.hi
    assert c.hi - c.value != pytest.approx(c.value - c.lo, abs=1e-6)   # the percentile one is not symmetric


def test_every_claims_paper_value_from_the_printed_tables():
    """The paper column of findings.md, claim by claim, from Table 2 (EA of ALPACA -> MULTIALPACA:
    Mistral 0.404 -> 0.436, Llama 0.291 -> 0.311; Instruct -> MULTIALPACA 0.529 -> 0.390, 0.437 ->
    0.200), Table 3 (DES), Table 4 (MPD) and Table 5 (EA, MA, combined)."""
    def values(cid, s=None):
        return F._paper_values(cid, s)

    assert values("C2") == ({"Mistral-7B": pytest.approx(0.436 - 0.404), "Llama-3-8B": pytest.approx(0.311 - 0.291)}, "")
    assert values("C3b")[0] == {"Mistral-7B": pytest.approx((0.529 - 0.390) - (0.404 - 0.436)),
                                "Llama-3-8B": pytest.approx((0.437 - 0.200) - (0.291 - 0.311))}
    only = "the paper reports it for Mistral-7B only"
    assert values("C4") == ({"Mistral-7B": pytest.approx(0.924 - 0.746), "Llama-3-8B": None}, only)
    assert values("C5") == ({"Mistral-7B": pytest.approx(1.0 - 0.29), "Llama-3-8B": None}, only)
    assert values("C6") == ({"Mistral-7B": None, "Llama-3-8B": None}, "Figure 2 prints no numbers: larger for "
                            "Instruct -> MULTIALPACA in both models (read from the figure)")
    assert values("C1")[0]["Llama-3-8B"] == pytest.approx(0.0695, abs=1e-4)
    # Table 5: EA(strategy) - EA(vanilla); Llama's vanilla EA average is misprinted
    lf, note = values("C7a", "LF_H1")
    assert lf == {"Mistral-7B": pytest.approx(0.395 - 0.390), "Llama-3-8B": pytest.approx(0.202 - 0.217)}
    assert note == ("Table 5 misprints the EA average of this row or of vanilla; with each row's EA as the mean of "
                    "its four scores: Llama-3-8B +0.002; the paper's two models disagree in sign")
    er, note = values("C7a", "ER_10")
    assert er == {"Mistral-7B": pytest.approx(0.599 - 0.390), "Llama-3-8B": pytest.approx(0.420 - 0.217)}
    assert note.endswith("Mistral-7B +0.082, Llama-3-8B +0.201")
    assert values("C7a", "Spectrum")[1].endswith("Llama-3-8B +0.208")    # both positive: no sign note
    # combined(ER_10) - combined(strategy)
    gr, note = values("C7b", "GR_5")
    assert gr == {"Mistral-7B": pytest.approx(0.409 - 0.357), "Llama-3-8B": pytest.approx(0.375 - 0.314)}
    assert note == ("Table 5 misprints an EA average, and its combined score with it; with the combined score "
                    "from the mean of the four EA scores: Mistral-7B -0.012, Llama-3-8B +0.052")
    assert values("C7b", "LF_H1")[0] == {"Mistral-7B": pytest.approx(0.409 - 0.266), "Llama-3-8B": pytest.approx(0.375 - 0.253)}


def test_similarity_effect_of_claims_not_made():
    assert F.similarity_effect({}) == {"claims": "inconclusive", "familywise": "inconclusive"}


def test_c7b_and_c8a_notes_name_each_recomputed_value():
    _, note = F._paper_values("C7b", "GR_10")   # ER_10 - GR_10 from the means: 0.345 - 0.339, 0.366 - 0.204
    assert note.endswith("from the mean of the four EA scores: Mistral-7B +0.006, Llama-3-8B +0.162")
    _, note = F._paper_values("C8a")
    assert note == ("Table B4 misprints the reverse order's Phase-2 MA average; recomputed from its three scores: "
                    "Llama-3-8B +0.020; the paper's two models disagree in sign")


def test_dissimilar_pair_unset_and_similarity_values_missing_in_every_claim(tmp_path):
    p = load_params("smoke", overrides={"run_dir": str(tmp_path / "a"), "findings.dissimilar": None,
                                        "findings.n_bootstrap": 100})
    c = {x.id: x for x in F.decide_claims([stored_run(p, same_everywhere())])[0]}
    assert (c["C3a"].verdict, c["C3a"].note) == (F.NOT_RUN, "findings.dissimilar names no arm")
    q = load_params("smoke", overrides={"run_dir": str(tmp_path / "b"), "findings.n_bootstrap": 100})
    c = {x.id: x for x in F.decide_claims([stored_run(q, same_everywhere())])[0]}
    assert [c[k].verdict for k in ("C4", "C5", "C6")] == [F.MISSING] * 3
    assert "07_representations" in c["C6"].note


def test_c7b_ranking_familywise_and_what_decide_claims_leaves_behind(params, tmp_path):
    write_store(params, same_everywhere({"er_10": +0.2, "lora": +0.1}))
    claims, meta = F.decide_claims([F.SeedRun(params)])
    c = {x.id: x for x in claims}
    assert c["C7b"].extra["point_ranking"] == ["ER_10", "LoRA", "LF_H1", "LF_H2", "Spectrum", "GR_5", "GR_10"]
    assert not any("estimate" in x.extra for x in claims)
    assert meta["items_per_task"] == {"ifeval": {"cft_instructions": 40}, "mmlu": {"cft_mc": 40},
                                      "hellaswag": {"cft_completion": 40},
                                      "mlqa": {"cft_qa_lookup_ar": 40, "cft_qa_lookup_de": 40},
                                      "xquad": {"cft_qa_facts_th": 40, "cft_qa_facts_vi": 40},
                                      "xlsum": {"cft_summary_ja": 40, "cft_summary_es": 40}}
    assert meta["scorers"] == F.slot_scorers(params) and meta["paper_misprints"] == F.pr.misprints()
    # a lead missing and none below 0: no family-wise verdict for C7b
    scores = same_everywhere()
    del scores["lora"]
    q = load_params("smoke", overrides={"run_dir": str(tmp_path / "no_lora"), "findings.n_bootstrap": 100})
    c = {x.id: x for x in F.decide_claims([stored_run(q, scores)])[0]}
    assert c["C7b"].verdict_familywise is None and c["C7b vs GR_5"].verdict_familywise is not None


def test_items_per_task_follow_the_params_order_with_alpacaeval_last(tmp_path):
    """The footnote's items per task: benchmarks and tasks in the params' order (not the
    bootstrap's sorted order), AlpacaEval (run outside lm-eval's plan) after them."""
    from cft_helpers.files import read_jsonl

    p = load_params("smoke", overrides={
        "run_dir": str(tmp_path / "run"), "findings.n_bootstrap": 100,
        "evaluation.benchmarks.alpacaeval": {"source": "alpaca_eval", "metric": "win_rate",
                                             "reference": {"source": "wheel"},
                                             "judge": {"kind": "openai", "model": "gpt-4"}}})
    store = write_store(p, same_everywhere())
    for path in (store.root / "eval").glob("*.samples.jsonl"):
        rows = read_jsonl(path) + [{"task": "alpacaeval", "doc_id": i, "preference": 1.0 + (i % 2)} for i in range(6)]
        path.write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    _, meta = F.decide_claims([F.SeedRun(p)])
    got = [(b, list(tasks.items())) for b, tasks in meta["items_per_task"].items()]
    assert got == [("ifeval", [("cft_instructions", 40)]), ("mmlu", [("cft_mc", 40)]),
                   ("hellaswag", [("cft_completion", 40)]),
                   ("mlqa", [("cft_qa_lookup_ar", 40), ("cft_qa_lookup_de", 40)]),
                   ("xquad", [("cft_qa_facts_th", 40), ("cft_qa_facts_vi", 40)]),
                   ("xlsum", [("cft_summary_ja", 40), ("cft_summary_es", 40)]), ("alpacaeval", [("alpacaeval", 6)])]
    empty = load_params("smoke", overrides={"run_dir": str(tmp_path / "empty")})
    claims, meta = F.decide_claims([F.SeedRun(empty)])
    assert meta["items_per_task"] == {} and {c.id: c.verdict for c in claims}["C3a"] == F.MISSING
