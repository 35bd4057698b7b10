"""What the notebooks call instead of computing in their cells (the notebook rules of
tests/test_notebooks.py): each function gives what the notebook's cell gave before it moved."""

from __future__ import annotations

import pandas as pd
import pytest

from cft_helpers.data.prepare import english_counterpart, first_examples, format_example, load_prepared, report_totals
from cft_helpers.evaluation.harness import abilities, language_report
from cft_helpers.evaluation.tables import ea_change, strategy_tables
from cft_helpers.findings import Claim
from cft_helpers.findings_report import phase2_pairs, precision_report, verdict_lines
from cft_helpers.params import MULTILINGUAL_BENCHMARKS, ParamsError, load_params
from cft_helpers.plots import written_files, written_table
from cft_helpers.jobs import mitigation_selection
from cft_helpers.reports import heldout_loss_summary, replay_overview, show_tables
from cft_helpers.representations import (covariance_report, needed_arms, needed_models, representation_summary,
                                         shift_report)
from cft_helpers.files import write_jsonl
from cft_helpers.similarity import correlation_report, forgetting_correlations, paper_forgetting_correlation
from conftest import on_run_dir


@pytest.fixture(scope="module")
def smoke():
    return load_params("params/smoke.yaml")


def _record(**scores):
    return {"benchmarks": {b: {"score": s} for b, s in scores.items()}}


def test_mitigation_selection_is_the_strategy_arms_per_table_plus_vanilla(smoke):
    every = mitigation_selection(smoke)
    assert every.tables == smoke.mitigation_tables() == ["T5"]
    assert every.arms == smoke.strategy_arms("all", "T5") and every.compared == every.arms
    one = mitigation_selection(smoke, "LF_H2", "T5")
    assert one.by_table == {"T5": ["lf_h2"]} and one.arms == ["lf_h2"]
    assert one.compared == ["p2_instruct", "lf_h2"]   # the vanilla Phase-2 arm it is compared with, first
    with pytest.raises(ParamsError, match="unknown strategy 'LF_H3'"):
        mitigation_selection(smoke, "LF_H3")


def test_ea_change_is_the_arm_minus_its_start(smoke):
    results = {"p1_alpaca": _record(ifeval=0.5, mmlu=0.7), "p2_alpaca": _record(ifeval=0.25, mmlu=0.75),
               "p2_instruct": _record(ifeval=0.9)}   # its start p1_instruct was not evaluated
    change = ea_change(smoke, results)
    assert list(change.index) == ["p2_alpaca"] and list(change.columns) == ["change"]
    assert change.loc["p2_alpaca", "change"] == pytest.approx(
        abilities(smoke, results["p2_alpaca"])["EA"] - abilities(smoke, results["p1_alpaca"])["EA"])
    assert change.loc["p2_alpaca", "change"] == pytest.approx(0.5 - 0.6)


def test_language_report_covers_every_multilingual_benchmark_in_order():
    results = {m: {"benchmarks": {b: {"by_language": {"de": 0.1234, "es": 0.5}} for b in MULTILINGUAL_BENCHMARKS}}
               for m in ("a", "b")}
    text = language_report(results)
    starts = [text.index(f"{b}:\n") for b in MULTILINGUAL_BENCHMARKS]
    assert starts == sorted(starts) and "0.123" in text and "0.1234" not in text
    assert language_report({"a": _record(mlqa=0.2)}) == "no per-language scores"


def test_strategy_tables_and_show_tables(smoke, capsys):
    results = {a: _record(ifeval=0.5, mlqa=0.25) for a in smoke.strategy_arms("all", "T5")}
    frames = strategy_tables(smoke, results)
    assert list(frames) == ["T5"] and set(frames["T5"].index) == set(results)
    show_tables(frames, footnotes=True)
    out = capsys.readouterr().out
    assert out.startswith(f"table T5:\n{frames['T5'].attrs['footnote']}\n")


def test_heldout_loss_summary_lists_only_arms_with_a_loss():
    table = pd.DataFrame([{"label": "P1", "eval_loss_before": 2.0, "eval_loss_after": 1.5, "steps": 3, "wall_s": 4.2},
                          {"label": "Instruct", "eval_loss_before": None, "eval_loss_after": None, "steps": 0,
                           "wall_s": 0.0}], index=["p1_alpaca", "p1_instruct"], dtype=object)
    assert heldout_loss_summary(table) == "P1: held-out response loss 2.000 -> 1.500 after 3 steps (4 s)"


def test_data_overviews(prepared):
    store = prepared.store
    assert first_examples(prepared) == "\n".join(
        format_example(load_prepared(store, name)[0]) for name in prepared.datasets)
    counterpart = english_counterpart(prepared)
    assert "English counterpart: " in counterpart and " -> " in counterpart
    report = {"datasets": {"a": {"train": {"rows": 3, "by_lang": {"en": 3}}, "heldout": {"rows": 1}},
                           "b": {"train": {"rows": 4, "by_lang": {"de": 2, "en": 2}}, "heldout": {"rows": 2}}}}
    assert report_totals(report) == "2 datasets: 7 training rows and 3 held-out rows in 2 languages."


def test_replay_overview(smoke, tmp_path):
    smoke = on_run_dir(smoke, tmp_path)
    store = smoke.store
    row = {"id": "r1", "lang": "en", "messages": [{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": "hello"}]}
    write_jsonl(store.replay_file("gr_5"), [row, row])
    first = f"gr_5: 2 replay rows; the first:\n{format_example(row)}\n"
    assert replay_overview(smoke, ["lf_h2", "gr_5"]) == first
    assert replay_overview(smoke, ["lf_h2"]) == "no replay set among ['lf_h2']"


def test_findings_text(smoke):
    meta = {"roles": {"similar": "p2_alpaca", "similar_p1": "p1_alpaca", "dissimilar": None, "dissimilar_p1": None},
            "ea_change_half_width": {"similar": 0.012345, "dissimilar": None},
            "ea_components": ["mmlu"], "ma_components": ["mlqa"], "items_per_task": {"mmlu": 8}}
    assert phase2_pairs(meta) == {"similar": ("p1_alpaca", "p2_alpaca")}
    assert precision_report(meta).splitlines()[0] == ("EA change, half-width of the 95% interval: "
                                                     "{'similar': 0.0123, 'dissimilar': None}")
    claims = [Claim("C1", "", "", {}, "", value=0.1, lo=0.05, hi=0.2, verdict="reproduced",
                    verdict_familywise="inconclusive"),
              Claim("C7b", "", "", {}, "", value=-0.02, verdict="inconclusive"),
              Claim("C6", "", "", {}, "", value=0.3, verdict="inconclusive (no interval)"),
              Claim("C8a", "", "", {}, "")]
    lines = verdict_lines(claims).splitlines()
    assert lines[0] == f"{'C1':>16}  {'reproduced':<27} {'inconclusive':<13} +0.100 [+0.050, +0.200]"
    assert lines[1].endswith(" -0.020") and lines[2].endswith(" +0.300") and lines[3].endswith(" —")
    assert lines[2].startswith(f"{'C6':>16}  {'inconclusive (no interval)':<27} {'—':<13}")


def test_similarity_correlations():
    points = pd.DataFrame({"des": [0.1, 0.2, 0.3, 0.4, 0.5], "mpd": [1.0, 0.8, 0.6, 0.4, 0.2],
                           "english_change": [0.5, 0.4, 0.3, 0.2, 0.1]})
    ours = forgetting_correlations(points)
    assert ours["des"]["pearson"] == pytest.approx(-1) and ours["mpd"]["pearson"] == pytest.approx(1)
    paper = paper_forgetting_correlation([{"des": None, "ea_change": 9.0}, {"des": 0.9, "ea_change": -0.1}])
    assert paper["n"] == 1
    text = correlation_report(ours, paper, change="change in X")
    assert text.splitlines()[0].startswith("DES vs change in X: 5 points")
    assert text.splitlines()[-1] == f"paper, DES vs change in EA: {paper['verdict']}"


def test_representation_summary_schema_and_reports(smoke):
    import numpy as np

    acts = {"p1_alpaca": np.zeros((6, 3, 8)), "p2_alpaca": np.ones((6, 3, 8))}
    projections = {"tsne": {"ALPACA -> MULTIALPACA": {"relative_shift": [0.5, 1.0, 1.5]}}}
    summary = representation_summary(smoke, acts, projections, {"a": [1.0, 3.0]}, {}, {})
    assert summary["prompts"] == {"source": smoke.representations.prompts.source, "n": 6}
    assert (summary["layers"], summary["hidden"]) == (3, 8)
    assert summary["covariance_mode"] == smoke.representations.covariance
    assert set(summary) == {"prompts", "layers", "hidden", "covariance_mode", "projections", "phase2_covariance",
                            "mitigation_covariance", "cross_lingual", "mitigation_baseline"}
    # Figure D3's dashed curve: the label of the registry's baseline arm (plain Phase 2)
    baseline = next(a for a in smoke.strategy_arms() if smoke.arms[a].strategy == "vanilla")
    assert summary["mitigation_baseline"] == f"vanilla ({smoke.arms[baseline].label or baseline})"
    assert shift_report(projections) == "ALPACA -> MULTIALPACA: mean relative shift of a layer's mean activation 1.0000"
    assert covariance_report({"a": [1.0, 3.0]}, {}).splitlines()[1] == f"  {'a':40s} 2"
    # what notebook 07 trains: the models it reads less the start models, in training order
    arms = needed_arms(smoke)
    assert arms and set(arms) <= set(smoke.arms) and not set(arms) & set(smoke.models)
    assert arms == [m for m in needed_models(smoke) if m not in smoke.models]


def test_written_figures(tmp_path):
    written = {"fig1": [tmp_path / "fig1.html", tmp_path / "fig1.svg"]}
    assert written_files(written) == {"fig1": ["fig1.html", "fig1.svg"]}
    assert written_table(written).loc["fig1", "written"] == "html, svg"
