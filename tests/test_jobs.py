"""The job graph (cft_helpers/jobs.py): job names, and which notebook each job belongs to."""

from __future__ import annotations

import pytest

from cft_helpers.jobs import (MITIGATION_NOTEBOOK, book_jobs, mitigation_selection, notebook_of, parse_job,
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
