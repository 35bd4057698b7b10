"""The book on smoke params, end to end: three notebooks, Phase 2 moves the model, loss falls."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cft_helpers.book import BookError, list_notebooks, notebook_dir, run_book
from cft_helpers.checkpoints import weight_change
from cft_helpers.params import load_params
from cft_helpers.runs import RunStore

from conftest import write_params

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ROOT / "tests" / "expected" / "smoke_book.json"
RECORD_COMMAND = "python scripts/record_expectations.py"
# Absolute tolerance of the recorded numbers. Measured: two smoke runs with one torch thread gave
# bit-identical numbers; one with two threads (other float32 reduction order) moved four arm losses
# (~6.0) by at most 4.8e-7 (one float32 ulp) and claim C6 by 4e-10, and no score at all. 1e-4
# leaves ~200x that for another CPU or BLAS kernel, and stays far below what a real change moves:
# a score is a mean over 2-8 items (steps of 1/48 in combined, 1/24 in EA, 1/8 per benchmark).
TOLERANCE = 1e-4


def record_expectations():
    """scripts/record_expectations.py as a module: the same collection of numbers as it records."""
    import importlib.util

    path = ROOT / "scripts" / "record_expectations.py"
    spec = importlib.util.spec_from_file_location("record_expectations", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _differences(expected, actual, where: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{where}/{k}: missing" for k in expected if k not in actual]
        out += [f"{where}/{k}: not recorded" for k in actual if k not in expected]
        for k in expected:
            if k in actual:
                out += _differences(expected[k], actual[k], f"{where}/{k}")
        return out
    numbers = (int, float)
    if (isinstance(expected, numbers) and isinstance(actual, numbers)
            and not isinstance(expected, bool) and not isinstance(actual, bool)):
        ok = abs(actual - expected) <= TOLERANCE
    else:
        ok = expected == actual
    return [] if ok else [f"{where}: recorded {expected!r}, now {actual!r}"]


def _assert_recorded(section: str, actual: dict) -> None:
    expected = json.loads(EXPECTED.read_text())[section]
    diff = _differences(expected, actual, section)
    assert not diff, (
        f"the smoke book's numbers differ from {EXPECTED.relative_to(ROOT)} (abs tolerance {TOLERANCE}):\n  "
        + "\n  ".join(diff[:40]) + (f"\n  ... and {len(diff) - 40} more" if len(diff) > 40 else "")
        + f"\nSeeded CPU runs are deterministic, so this is a bug unless the change was meant to move "
        f"these numbers (a score's definition, the training recipe, the smoke data or model); then "
        f"regenerate the file with `{RECORD_COMMAND}`, review its diff and commit it with the change.")


def test_book_runs_every_notebook_into_the_run_store(book_run):
    params, timing = book_run
    names = [p.stem for p in list_notebooks(notebook_dir())]
    assert list(timing) == names and names[:3] == ["01_data_prep", "02_phase1_training", "03_phase2_training"]
    for name in names:
        nb = json.loads((params.run_path / "notebooks" / f"{name}.ipynb").read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, name
    assert json.loads((params.run_path / "book_timing.json").read_text()) == timing


def test_every_arm_done_with_loss_going_down(book_run):
    params, _ = book_run
    store = params.store
    for arm in params.arms:
        m = store.arm_metrics(arm)
        assert store.arm_manifest(arm)["status"] == "done", arm
        # same rows before and after: held-out rows and the first training rows
        assert m["eval_loss_after"] < m["eval_loss_before"], arm
        assert m["train_rows_loss_after"] < m["train_rows_loss_before"], arm
        log = [json.loads(l) for l in (store.arm_dir(arm) / "train_log.jsonl").read_text().splitlines()]
        assert sum("loss" in e for e in log) == m["steps"]


def test_phase2_checkpoint_differs_from_phase1(book_run):
    params, _ = book_run
    store = params.store
    for arm in params.arms_in_phase("phase2"):
        change = weight_change(store.arm_checkpoint(params.arms[arm].start), store.arm_checkpoint(arm))
        assert change["tensors_changed"] == change["tensors"] > 0
        assert change["relative_l2"] > 1e-3, arm


def test_rerun_skips_done_stages(book_run):
    params, timing = book_run
    store = params.store
    before = {a: store.arm_manifest(a)["finished"] for a in params.arms}
    run_book(params.source_path, only=["02"], progress=False)
    assert {a: store.arm_manifest(a)["finished"] for a in params.arms} == before


def test_papermill_runs_notebook_03_on_its_own(book_run, tmp_path):
    """The issue's command: papermill notebooks/03_phase2_training.ipynb out.ipynb -p params ..."""
    params, _ = book_run
    out = tmp_path / "out.ipynb"
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "03_phase2_training.ipynb"), str(out),
         "-p", "params", params.source_path, "--cwd", str(ROOT / "notebooks")],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "ALPACA -> MULTIALPACA" in text and "held-out loss" in text


def test_failure_names_the_notebook_and_cell(tmp_path, model_cache):
    """Notebook 03 on a run store without Phase 1: the book stops there and says where."""
    path = write_params(tmp_path, model_cache)
    with pytest.raises(BookError) as e:
        run_book(str(path), only=["01", "03"], progress=False)
    msg = str(e.value)
    assert "03_phase2_training.ipynb" in msg and "cell" in msg and "not done" in msg
    assert "run notebooks/02_phase1_training first" in msg  # the notebook to run, not just the arm
    with pytest.raises(BookError, match="valid"):
        run_book(str(path), only=["09_nothing"], progress=False)


def test_similarity_notebook_writes_tables_3_and_4(book_run):
    params, _ = book_run
    summary = json.loads((params.run_path / "similarity" / "summary.json").read_text())
    matrix = summary["des"]["matrix"]
    assert set(matrix) == set(params.datasets)
    for a in matrix:
        assert abs(matrix[a][a] - 1.0) < 1e-6
        for b in matrix:
            assert abs(matrix[a][b] - matrix[b][a]) < 1e-9
    pairs = summary["phase_pairs"]
    # same task family in other languages vs a different family
    assert pairs["p2_alpaca"]["des"] > pairs["p2_instruct"]["des"] + 0.2
    mpd = summary["mpd"]
    assert set(mpd) == {"p1_alpaca", "p1_instruct"} and max(r["mpd_normalised"] for r in mpd.values()) == 1.0
    points = summary["points"]
    assert set(points) == {"p2_alpaca", "p2_instruct"}
    assert all(p["english_change"] == p["english_change"] for p in points.values())  # not NaN
    assert "too few" in summary["correlation"]["des"]["verdict"]


def test_papermill_runs_one_strategy_and_refuses_an_unknown_one(book_run, tmp_path):
    """papermill notebooks/04_mitigation.ipynb out.ipynb -p strategy LF_H2 -p params ..."""
    params, _ = book_run
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "04_mitigation.ipynb"),
           str(tmp_path / "out.ipynb"), "-p", "params", params.source_path, "--cwd", str(ROOT / "notebooks")]
    proc = subprocess.run(cmd + ["-p", "strategy", "LF_H2"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "out.ipynb").read_text()
    assert "arms ['lf_h2']" in text and "q_proj" in text
    assert "paper Mistral-7B EA" in text and "combined" in text   # Table 5: vanilla and LF_H2, scored
    proc = subprocess.run(cmd + ["-p", "strategy", "LF_H3"], capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "unknown strategy 'LF_H3'" in proc.stderr + proc.stdout and "Spectrum" in proc.stderr + proc.stdout


def test_book_with_seeds_fills_one_run_store_per_seed(tmp_path, model_cache):
    path = write_params(tmp_path, model_cache)
    # an override whose value holds ";" reaches every notebook whole (overrides travel as one dict)
    run_book(str(path), ["arms.p1_alpaca.label=ALPACA; seeded"], only=["01", "02"], progress=False, seeds=[0, 1])
    params = load_params(path)
    seed1 = params.run_path / "seeds" / "seed-1"
    for root in (params.run_path, seed1):
        assert "<td>ALPACA; seeded</td>" in (root / "notebooks" / "02_phase1_training.ipynb").read_text()
    for root in (params.run_path, seed1):
        assert json.loads((root / "book_timing.json").read_text()).keys() == {"01_data_prep", "02_phase1_training"}
        assert RunStore(root).finished_arms(["p1_alpaca", "p1_instruct"]) == ["p1_alpaca", "p1_instruct"]
    # another seed: other generated rows, another training order, so other weights
    rows0 = (params.run_path / "data" / "alpaca.train.jsonl").read_text()
    assert rows0 != (seed1 / "data" / "alpaca.train.jsonl").read_text()
    change = weight_change(params.store.arm_checkpoint("p1_alpaca"),
                           RunStore(seed1).arm_checkpoint("p1_alpaca"))
    assert change["tensors_changed"] > 0


def test_headline_strategy_command_from_an_empty_store(tmp_path, model_cache):
    """The README's `papermill notebooks/04_mitigation.ipynb out.ipynb -p strategy LF_H2` on a run
    store that holds nothing yet: it trains what it compares (the Phase-1 start, vanilla Phase 2
    and the strategy) and scores them."""
    path = write_params(tmp_path, model_cache)
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "04_mitigation.ipynb"),
           str(tmp_path / "out.ipynb"), "-p", "params", str(path), "-p", "strategy", "LF_H2",
           "--cwd", str(ROOT / "notebooks")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    params = load_params(path)
    store = params.store
    assert store.finished_arms(list(params.arms)) == ["p1_instruct", "p2_instruct", "lf_h2"]
    assert {p.stem for p in (params.run_path / "eval").glob("*.json")} >= {"p2_instruct", "lf_h2"}
    assert "paper Mistral-7B EA" in (tmp_path / "out.ipynb").read_text()


def test_every_strategy_arm_trained_its_own_way(book_run):
    params, _ = book_run
    store = params.store
    by_strategy = {params.arms[a].strategy: store.arm_metrics(a) for a in params.strategy_arms()}
    assert set(by_strategy) == {"vanilla", "LF_H1", "LF_H2", "Spectrum", "GR_5", "GR_10", "ER_10", "LoRA"}
    full = by_strategy["vanilla"]["trainable_params"]
    for s in ("LF_H1", "LF_H2", "Spectrum", "LoRA"):
        assert by_strategy[s]["trainable_params"] < full, s
    for s, extra in (("GR_5", 1), ("GR_10", 2), ("ER_10", 2)):  # 22 Phase-2 rows: 5% -> 1, 10% -> 2
        assert by_strategy[s]["examples"] == by_strategy["vanilla"]["examples"] + extra, s


def test_evaluation_notebook_scores_every_model(book_run):
    params, _ = book_run
    summary = json.loads((params.run_path / "eval" / "summary.json").read_text())
    assert set(summary) == set(params.evaluated_models())
    for name, s in summary.items():
        assert s["EA_missing"] == ["alpacaeval"] and s["MA_missing"] == []  # smoke runs IFEval offline
    # EA, MA, combined and every benchmark's score: the numbers of the recorded smoke run
    _assert_recorded("eval", record_expectations().collect(params.run_path)["eval"])


def test_recorded_expectations_pin_generated_scores():
    # The smoke base once answered "\n" forever (a random model at initializer_range 0.02 with tied
    # embeddings repeats its last token), so every generated score was 0 and the expectations
    # pinned nothing of the IFEval slot or of MA. At 0.3 some models answer: some score is above 0.
    recorded = json.loads(EXPECTED.read_text())["eval"]
    assert max(m["benchmarks"]["ifeval"] for m in recorded.values()) > 0
    assert max(m["benchmarks"][b] for m in recorded.values() for b in ("mlqa", "xquad", "xlsum")) > 0


def test_training_numbers_are_the_recorded_ones(book_run):
    """Each arm's steps, training loss, last logged loss and held-out loss before / after."""
    params, _ = book_run
    actual = record_expectations().collect(params.run_path)["arms"]
    assert set(actual) == set(params.arms)
    _assert_recorded("arms", actual)


def test_findings_numbers_are_the_recorded_ones(book_run):
    """Each claim's value and verdict (and C7b's share) in findings.json."""
    params, _ = book_run
    _assert_recorded("findings", record_expectations().collect(params.run_path)["findings"])


def test_findings_notebook_decides_every_claim(book_run):
    params, _ = book_run
    data = json.loads((params.run_path / "findings.json").read_text())
    claims = {c["id"]: c for c in data["claims"]}
    strategies = ["LF_H1", "LF_H2", "Spectrum", "GR_5", "GR_10", "ER_10", "LoRA"]
    assert list(claims) == ["C1", "C2", "C3a", "C3b", "C4", "C5", "C6", *[f"C7a {s}" for s in strategies],
                            *[f"C7b vs {s}" for s in strategies if s != "ER_10"], "C7b",
                            "C8a", "C8b", "C8c", "C8d"]
    allowed = {"reproduced", "contradicted", "inconclusive"}
    for cid, c in claims.items():
        if cid in ("C5", "C6"):   # one seed: MPD and the representation change have no interval
            assert c["verdict"] == "inconclusive (no interval)" and c["value"] is not None, cid
        elif cid == "C7b":
            assert 0.0 <= c["share"] <= 1.0 and c["verdict"] in allowed
        else:
            assert c["verdict"] in allowed and c["lo"] <= c["hi"] and c["value"] is not None, cid
    # The bootstrap's point values, rebuilt from per-item scores, are the tables' numbers (which
    # come from lm-eval's aggregate scores): each benchmark of eval/summary.json, EA averaging the
    # English slots the findings keep (a multiple-choice slot at chance is left out).
    summary = json.loads((params.run_path / "eval" / "summary.json").read_text())

    def ea(model):
        kept = [v for b, v in summary[model]["benchmarks"].items()
                if b in ("ifeval", "alpacaeval", "mmlu", "hellaswag") and b not in data["dropped"]]
        return sum(kept) / len(kept)

    assert claims["C3a"]["value"] == pytest.approx(ea("p1_instruct") - ea("p2_instruct"))
    assert claims["C1"]["value"] == pytest.approx((ea("p2_alpaca") + summary["p2_alpaca"]["MA"]) / 2
                                                  - (ea("mixture") + summary["mixture"]["MA"]) / 2)
    assert claims["C8a"]["value"] == pytest.approx(summary["rev1"]["MA"] - summary["rev2"]["MA"])
    assert claims["C8b"]["value"] == pytest.approx(summary["p2_alpaca"]["MA"] - summary["rev2"]["MA"])
    md = (params.figures_path / "findings.md").read_text()
    assert md == (params.run_path / "findings.md").read_text() and "| C3b |" in md


FIGURES = ["fig1_layer_projections", "fig2_covariance_change", "figD3_covariance_change_mitigations",
           "fig4_cross_lingual", "table3_des_heatmap", "similarity_vs_ea_change", "ea_vs_ma_tradeoff"]


def test_representations_and_paper_figures_are_written(book_run):
    from cft_helpers.plots import chrome_available

    params, _ = book_run
    summary = json.loads((params.run_path / "representations" / "summary.json").read_text())
    assert summary["layers"] == 2 and summary["hidden"] == 64 and summary["prompts"]["n"] == 80
    assert set(summary["phase2_covariance"]) == {"ALPACA -> MULTIALPACA", "Instruct -> MULTIALPACA"}
    assert len(summary["mitigation_covariance"]) == 8 and all(
        len(v) == 2 and min(v) > 0 for v in summary["mitigation_covariance"].values())
    for method in ("tsne", "umap"):
        for pair in summary["projections"][method].values():
            assert len(pair["p1_xy"]) == len(pair["p2_xy"]) == 2
    assert set(summary["cross_lingual"]) == {"base"}
    formats = ["html", "png", "svg"] if chrome_available() else ["html"]
    for name in FIGURES:
        for fmt in formats:
            assert (params.figures_path / f"{name}.{fmt}").stat().st_size > 1000, (name, fmt)


def test_paper_figures_notebook_names_what_is_missing(book_run, tmp_path, model_cache):
    import shutil

    params, _ = book_run
    path = write_params(tmp_path, model_cache)
    copy = load_params(path).run_path
    shutil.copytree(params.run_path, copy, ignore=shutil.ignore_patterns("checkpoint-*", "notebooks"))
    (copy / "eval" / "p2_instruct.json").unlink()
    with pytest.raises(BookError) as e:
        run_book(str(path), only=["08"], progress=False)
    assert "arm 'p2_instruct' has no evaluation results" in str(e.value) and "06_evaluation" in str(e.value)
    shutil.copy(params.run_path / "eval" / "p2_instruct.json", copy / "eval")
    summary = json.loads((copy / "representations" / "summary.json").read_text())
    del summary["mitigation_covariance"]["LF_H2"]
    (copy / "representations" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(BookError) as e:
        run_book(str(path), only=["08"], progress=False)
    assert "arm 'lf_h2' is not in the representation analysis" in str(e.value)



def test_executed_figures_carry_a_png_for_viewers_without_a_kernel(book_run):
    """GitHub and nbviewer show no plotly figure: the run store's notebooks carry a PNG of each
    (when Chrome can render one), beside the interactive figure at the container's width."""
    from cft_helpers.plots import chrome_available

    params, _ = book_run
    nb = json.loads((params.run_path / "notebooks" / "08_paper_figures.ipynb").read_text())
    outs = [o["data"] for c in nb["cells"] for o in c.get("outputs", [])
            if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(outs) >= 6 and all(("image/png" in d) == chrome_available() for d in outs)
    assert all("width" not in d["application/vnd.plotly.v1+json"].get("layout", {}) for d in outs)

STAGE_LINE = re.compile(r"^(?P<nb>\d\d) · (?P<stage>(?P<kind>training|evaluating|activations|held-out loss) \S+"
                        r"(?: \(\w+\)| · loglikelihood| · generation)?) · "
                        r"(?:step|requests|batch|dataset) (?P<done>\d+)/\d+(?P<tail> · done| · .+ left)? "
                        r"\[(?:\d+ s|\d+ min \d+ s|\d+ h \d+ min) elapsed")


def test_book_progress_names_every_stage_with_its_time_left(book_run):
    """book.log holds what the terminal shows: a line per notebook, and for each running stage
    (a training's steps, an evaluation's requests, activations, held-out losses) lines naming its
    notebook and stage, with the time left once its rate is known, at most one a second."""
    import datetime as dt

    params, timing = book_run
    # a second book on the store knows how long its notebooks took: it says what is left
    run_book(params.source_path, only=["02"], progress=False)
    stamped = [(dt.datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S"), line[20:])
               for line in (params.run_path / "book.log").read_text().splitlines()]
    books = [text for _, text in stamped if text.startswith("[book")]
    assert all(any(text.startswith(f"[book {i}/") and name in text for text in books)
               for i, name in enumerate(timing, 1))
    assert re.search(r"\[book 1/1\] 02_phase1_training -> .* elapsed, book about \d+ s left \(as last time\)\)",
                     books[-2])
    stages = [(t, text, STAGE_LINE.match(text)) for t, text in stamped if not text.startswith("[book")]
    assert stages and [text for _, text, m in stages if m is None] == []  # every line names a stage
    assert {m["kind"] for _, _, m in stages} == {"training", "evaluating", "activations", "held-out loss"}
    assert {m["nb"] for _, _, m in stages if m["kind"] == "training"} == {"02", "03", "04"}
    first: dict[str, int] = {}
    seen: dict[str, list] = {}
    for t, _, m in stages:
        first.setdefault(m["stage"], int(m["done"]))
        if m["tail"] != " · done":
            seen.setdefault(m["stage"], []).append(t)
            # the time left is shown as soon as the stage has a rate (work done since its first line)
            assert (m["tail"] is not None) == (int(m["done"]) > first[m["stage"]]), m.string
    # at most one line a second per stage: no two in one second of the log's clock
    assert all(len(ts) == len(set(ts)) for ts in seen.values()), seen
