"""The job graph (cft_helpers/jobs.py): job names, and which notebook each job belongs to."""

from __future__ import annotations

import pytest

from cft_helpers.jobs import (MITIGATION_NOTEBOOK, book_jobs, grid_jobs, mitigation_selection, notebook_of, parse_job,
                              training_notebook)
from cft_helpers.params import load_params


def test_job_names_parse_and_bad_ones_say_what_is_valid():
    assert parse_job("train:p1_alpaca") == ("train", "p1_alpaca")
    assert parse_job("heldout:a:b") == ("heldout", "a:b")  # a target may hold a colon
    for bad in ("train", "train:", "fit:p1", ""):
        with pytest.raises(ValueError, match=r"train:<arm>, eval:<model>, act:<model> or heldout:<model>"):
            parse_job(bad)


def test_each_job_names_the_notebook_that_shows_it():
    p = load_params("smoke")
    assert training_notebook(p, "p1_alpaca") == "notebooks/02_phase1_training"
    assert training_notebook(p, "p2_alpaca") == training_notebook(p, "rev2") == "notebooks/03_phase2_training"
    assert training_notebook(p, "lf_h2") == f"notebooks/{MITIGATION_NOTEBOOK}"
    assert [notebook_of(p, j) for j in ("train:mixture", "eval:base", "act:p1_alpaca", "heldout:base")] == \
        ["03_phase2_training", "06_evaluation", "07_representations", "03_phase2_training"]
    assert notebook_of(p, "train:base") == ""  # a model entry is trained by no notebook


def test_notebook_04_trains_what_its_tables_compare_with_their_upstream():
    p = load_params("smoke")
    compared = mitigation_selection(p).compared
    jobs = book_jobs(p, [MITIGATION_NOTEBOOK])
    trains = [j.target for j in jobs.values() if j.kind == "train"]
    assert trains == p.with_upstream(compared) and "p1_instruct" in trains  # the start of every strategy
    assert [j.target for j in jobs.values() if j.kind == "eval"] == compared
    assert compared[0] == "p2_instruct"  # vanilla first: the row every strategy is compared with
    assert book_jobs(p, ["01_data_prep", "08_paper_figures", "09_findings"]) == {}


def test_the_grid_is_every_job_the_whole_book_would_run():
    """What ``schedule`` plans and submits: every arm and evaluated model, and the activations and
    held-out losses of every model the notebooks read, so that the book then computes none."""
    from cft_helpers.book import list_notebooks, notebook_dir

    p = load_params("smoke")
    grid = grid_jobs(p)
    stems = [nb.stem for nb in list_notebooks(notebook_dir())]
    assert set(book_jobs(p, stems)) <= set(grid)
    kinds = {k: [j.target for j in grid.values() if j.kind == k] for k in ("train", "eval", "act", "heldout")}
    assert kinds["train"] == p.arm_order() and kinds["eval"] == p.evaluated_models()
    assert "base" in kinds["act"] and "lora" in kinds["act"] and "mixture" not in kinds["act"]  # Fig. 1, 4, D3
    assert "mixture" in kinds["heldout"] and "base" in kinds["heldout"]   # notebook 03's table, from the base
    assert grid["act:lf_h1"].needs == ("train:lf_h1",) and grid["heldout:base"].needs == ()
