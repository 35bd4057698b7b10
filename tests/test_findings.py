"""The findings' verdict rule and intervals, on run stores built by hand with known per-item scores.

No model runs here: each test writes ``eval/<model>.samples.jsonl`` (and where needed the
similarity and representation summaries) with scores chosen so that the right verdict is known.
"""

import math

import numpy as np
import pytest

from cft_helpers import findings as F
from cft_helpers.evaluation.harness import task_plan
from cft_helpers.params import load_params
from cft_helpers.runs import RunStore, atomic_write_json, write_jsonl

N_ITEMS = 40  # per task
MODELS = ["p1_alpaca", "p2_alpaca", "p1_instruct", "p2_instruct", "mixture", "rev1", "rev2",
          "lf_h1", "lf_h2", "spectrum", "gr_5", "gr_10", "er_10", "lora"]
ENGLISH = ("ifeval", "mmlu", "hellaswag")


@pytest.fixture
def params(tmp_path):
    return load_params("smoke", overrides={"run_dir": str(tmp_path / "run"), "findings.n_bootstrap": 500})


def base_scores(seed=0):
    """Every model's per-item scores: benchmark -> task -> array; binary for EA, in [0, 1] for MA."""
    rng = np.random.default_rng(seed)
    p = load_params("smoke")
    out = {}
    for bench, tasks in task_plan(p).items():
        for task, _ in tasks:
            out[(bench, task)] = (rng.random(N_ITEMS) < 0.5).astype(float) if bench in ENGLISH else rng.random(N_ITEMS)
    return out


def write_store(params, scores_by_model):
    """Write one samples file per model; ``scores_by_model[name][(bench, task)]`` is the array."""
    store = RunStore(params.run_path)
    for name, scores in scores_by_model.items():
        rows = []
        for (bench, task), arr in scores.items():
            metric = params.evaluation.benchmarks[bench].metric
            rows += [{"task": task, "doc_id": i, metric: float(v)} for i, v in enumerate(arr)]
        write_jsonl(store.root / "eval" / f"{name}.samples.jsonl", rows)
    return store


def same_everywhere(delta=None):
    """All models equal to one base; ``delta[name]`` adds a constant to that model's EA items."""
    base = base_scores()
    out = {}
    for name in MODELS:
        d = (delta or {}).get(name, 0.0)
        out[name] = {k: (v + d if k[0] in ENGLISH else v.copy()) for k, v in base.items()}
    return out


def decide(params, store, **kw):
    claims, meta = F.decide_claims([F.SeedRun(params, store)], **kw)
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
    assert F.share_verdict(0.95) == "reproduced" and F.share_verdict(0.05) == "contradicted"
    assert F.share_verdict(0.5) == "inconclusive"
    with pytest.raises(ValueError, match="above its upper end"):
        F.verdict(0.2, 0.1)


def test_dissimilar_worse_on_every_item_similar_unchanged_reproduces_c3(params):
    # p2_instruct scores 0.3 lower than p1_instruct on every English item: EA drops by 0.3 in
    # every replicate, whatever items are drawn; the similar pair is unchanged.
    store = write_store(params, same_everywhere({"p2_instruct": -0.3}))
    c, meta = decide(params, store)
    assert c["C3a"].value == pytest.approx(0.3)
    assert (c["C3a"].lo, c["C3a"].hi) == (pytest.approx(0.3), pytest.approx(0.3))
    assert c["C3a"].verdict == "reproduced" and c["C3b"].verdict == "reproduced"
    assert c["C3b"].value == pytest.approx(0.3)
    assert c["C2"].value == pytest.approx(0.0) and c["C2"].verdict == "reproduced"   # 0 > -margin
    # the vanilla arm is p2_instruct: every strategy (equal to the base) keeps 0.3 more EA
    assert c["C7a ER_10"].value == pytest.approx(0.3) and c["C7a ER_10"].verdict == "reproduced"
    assert meta["ea_change_half_width"] == {"similar": pytest.approx(0.0), "dissimilar": pytest.approx(0.0)}


def test_p2_equal_to_p1_is_inconclusive(params):
    store = write_store(params, same_everywhere())
    c, _ = decide(params, store)
    assert c["C3a"].value == 0.0 and c["C3a"].verdict == "inconclusive"
    assert c["C3b"].verdict == "inconclusive" and c["C1"].verdict == "inconclusive"


def test_opposite_sign_is_contradicted(params):
    store = write_store(params, same_everywhere({"p2_instruct": +0.2}))
    c, _ = decide(params, store)
    assert c["C3a"].value == pytest.approx(-0.2) and c["C3a"].verdict == "contradicted"
    assert c["C3b"].verdict == "contradicted"


def test_c2_drop_within_the_margin_is_reproduced_beyond_it_contradicted(params):
    store = write_store(params, same_everywhere({"p2_alpaca": -0.01}))
    c, _ = decide(params, store)
    assert c["C2"].value == pytest.approx(-0.01) and c["C2"].margin == 0.02
    assert c["C2"].verdict == "reproduced"
    store = write_store(params, same_everywhere({"p2_alpaca": -0.05}))
    c, _ = decide(params, store)
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
    store = write_store(params, scores)
    c, _ = decide(params, store, replicates=4000)
    d = p1 - p2
    expected_half = 1.96 * d.std(ddof=0) / math.sqrt(n) / 3
    assert c["C3a"].value == pytest.approx(d.mean() / 3)
    assert c["C3a"].half_width == pytest.approx(expected_half, rel=0.12)
    # paired: the same draw for both models, so identical models give a zero-width interval
    assert c["C2"].half_width == pytest.approx(0.0)


def test_seeds_are_resampled_before_items(params, tmp_path):
    # Two seeds with opposite, item-constant effects: the seed-level draw alone makes the interval
    # span both signs ([-0.1, +0.1]: means of two draws from {-0.1, +0.1}); point = 0.
    runs = []
    for i, delta in enumerate((+0.1, -0.1)):
        p = load_params("smoke", overrides={"run_dir": str(tmp_path / f"seed{i}"), "seed": i,
                                            "findings.n_bootstrap": 400})
        runs.append(F.SeedRun(p, write_store(p, same_everywhere({"p2_instruct": -delta}))))
    claims, meta = F.decide_claims(runs)
    c = {x.id: x for x in claims}["C3a"]
    assert c.value == pytest.approx(0.0)
    assert c.lo == pytest.approx(-0.1) and c.hi == pytest.approx(0.1)
    assert c.verdict == "inconclusive" and meta["seeds"] == [0, 1]


def test_c7b_share_and_not_run_arms(params):
    scores = same_everywhere({"er_10": +0.2})
    store = write_store(params, scores)
    c, _ = decide(params, store)
    assert c["C7b"].share == 1.0 and c["C7b"].verdict == "reproduced"
    assert c["C7b"].value == pytest.approx(0.1)   # combined = (EA + MA) / 2: +0.2 EA -> +0.1
    store = write_store(params, same_everywhere({"gr_5": +0.2}))
    c, _ = decide(params, store)
    assert c["C7b"].share == 0.0 and c["C7b"].verdict == "contradicted"
    # a parameter set without the reverse order: C8 is "not run", naming the arm
    del params.arms["rev2"]
    c, _ = decide(params, store)
    assert c["C8a"].verdict == "not run" and "'rev2'" in c["C8a"].note
    assert c["C3a"].verdict != "not run"


def test_missing_evaluation_names_the_notebook(params):
    scores = same_everywhere()
    del scores["mixture"]
    store = write_store(params, scores)
    c, _ = decide(params, store)
    assert c["C1"].verdict == "missing" and "06_evaluation" in c["C1"].note


def test_similarity_claims_one_seed(params):
    store = write_store(params, same_everywhere())
    atomic_write_json(store.root / "similarity" / "summary.json", {
        "des": {"matrix": {"alpaca": {"multialpaca": 0.93}, "instruct": {"multialpaca": 0.44}},
                "sd": {"alpaca": {"multialpaca": 0.03}, "instruct": {"multialpaca": 0.04}}},
        "mpd": {"p1_alpaca": {"mpd_normalised": 0.4}, "p1_instruct": {"mpd_normalised": 1.0}}})
    atomic_write_json(store.root / "representations" / "summary.json", {
        "phase2_covariance": {"ALPACA -> MULTIALPACA": [1.0, 2.0, 3.0], "Instruct -> MULTIALPACA": [2.0, 4.0, 6.0]}})
    c, _ = decide(params, store)
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
    paper, note = F._paper_values("C1")   # (0.436 + 0.317) / 2 - (0.441 + 0.234) / 2
    assert paper["Mistral-7B"] == pytest.approx(0.039, abs=1e-4)
    best = F.paper_c7b()
    assert best["Mistral-7B"] == {"best_printed": "ER_10", "best_recomputed": "GR_5"}
    assert best["Llama-3-8B"]["best_printed"] == "ER_10"


def test_findings_files(params):
    store = write_store(params, same_everywhere({"p2_instruct": -0.3}))
    claims, meta = F.decide_claims([F.SeedRun(params, store)])
    paths = F.write_findings(store, claims, meta, title="smoke")
    md = open(paths["md"], encoding="utf-8").read()
    assert "| C3a |" in md and "**reproduced**" in md and "+0.300 [+0.300, +0.300]" in md
    data = F.load_findings(store)
    assert [c["id"] for c in data["claims"]][:4] == ["C1", "C2", "C3a", "C3b"]
    frame = F.claims_frame(claims)
    assert frame.loc["C3a", "verdict"] == "reproduced"


def test_benchmark_changes_break_ea_down(params):
    # p2_instruct drops 0.3 on every English item: each English benchmark changes by -0.3, EA by
    # -0.3, MA by 0; the similar pair does not move.
    store = write_store(params, same_everywhere({"p2_instruct": -0.3}))
    df = F.benchmark_changes([F.SeedRun(params, store)], {"similar": ("p1_alpaca", "p2_alpaca"),
                                                          "dissimilar": ("p1_instruct", "p2_instruct")})
    for bench in ("ifeval", "mmlu", "hellaswag", "EA"):
        row = df.loc[("dissimilar", bench)]
        assert row["change"] == pytest.approx(-0.3) and row["after"] == pytest.approx(row["before"] - 0.3)
        assert (row["low"], row["high"]) == (pytest.approx(-0.3), pytest.approx(-0.3))
    assert df.loc[("dissimilar", "MA"), "change"] == pytest.approx(0.0)
    assert df.loc[("similar", "EA"), "change"] == pytest.approx(0.0)
    assert list(df.loc["dissimilar"].index) == ["ifeval", "mmlu", "hellaswag", "EA", "mlqa", "xquad", "xlsum", "MA"]
