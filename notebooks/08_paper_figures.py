# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · The paper's tables and figures, from the run store alone
#
# **Question.** What does this run say, in the shape the paper says it, and where does it sit
# beside the paper's published numbers?
#
# This notebook trains nothing and evaluates nothing: it reads what notebooks 05 (similarity),
# 06 (evaluation) and 07 (representations) wrote and rebuilds every table (1-5, B5-B7) and
# figure (1, 2, 4, D3), plus one figure the paper's peers do not draw: English against
# multilingual ability for every arm, the paper's points beside ours, so the trade-off each
# phase, mixture and mitigation makes is visible at a glance. When something is missing it
# stops and names the arm and the notebook that writes it.
#
# **Reads** `<run_dir>/eval/`, `<run_dir>/similarity/summary.json`,
# `<run_dir>/representations/summary.json`. **Writes** the figures folder of the params.

# %% tags=["parameters"]
params = "params/default.yaml"
force = False   # nothing here is computed; the book passes it to every notebook
overrides = ""

# %%
import pandas as pd

from cft_helpers import paper_results
from cft_helpers.evaluation.harness import ability_table, language_report, load_results
from cft_helpers.evaluation.tables import ea_change, phase_table, strategy_table, tradeoff_points
from cft_helpers.findings import plotted_intervals, seed_runs
from cft_helpers.params import load_params
from cft_helpers.plots import (ability_tradeoff_figure, des_heatmap, representation_figures, save_figures,
                               similarity_vs_forgetting as forgetting_figure, use_notebook_renderer,
                               written_table)
from cft_helpers.representations import check_summary, load_representation_summary
from cft_helpers.similarity import load_similarity_summary, similarity_vs_forgetting

P = load_params(params, overrides=overrides)
use_notebook_renderer(P.figures.notebook_png)   # figures: interactive, plus a PNG for GitHub/nbviewer
store = P.store
results = load_results(P)  # fails naming the first model without results
similarity = load_similarity_summary(store)
representations = load_representation_summary(store)
check_summary(P, representations)        # fails naming an arm the analysis lacks
print(f"parameter set {P.name!r}: {len(results)} evaluated models, figures -> {P.figures_path}")

# %% [markdown]
# ## Every model: EA, MA and combined

# %%
table = ability_table(P, results)
print(table.attrs.get("footnote", ""))
table.round(3)

# %% [markdown]
# ## Tables 1 and 2: English and multilingual ability after Phase 1 and Phase 2

# %%
phase_table(P, results).round(3)

# %% [markdown]
# ## Table 3: DES of each Phase-2 arm's two datasets, and Table 4: MPD

# %%
pd.DataFrame(similarity["phase_pairs"]).T

# %%
pd.DataFrame(similarity["mpd"]).T

# %% [markdown]
# ## Table 5: the mitigation strategies

# %%
strategy_table(P, results).round(3)

# %% [markdown]
# ## Tables B5-B7: per language

# %%
print(language_report(results))

# %% [markdown]
# ## Does similarity predict what Phase 2 costs in English ability?
#
# Notebook 05 could only use a loss proxy; here the change is the measured EA, P2 - P1
# (negative: forgot), as in the paper's own points below ours. Every value of this run that a
# figure plots (EA, MA, a change) is the findings' (notebook 09): over the study's seeds, EA
# without the slots the findings leave out, with the same 95% interval.

# %%
intervals = plotted_intervals(seed_runs(P))
print(f"EA leaves out: {intervals['dropped'] or 'nothing'}")
change = ea_change(P, results, intervals)
mpd = pd.DataFrame(similarity["mpd"]).T
points = similarity_vs_forgetting(P, similarity["des"], mpd, change)
points.round(4)

# %% [markdown]
# ## The figures

# %%
figures = representation_figures(representations)
figures["table3_des_heatmap"] = des_heatmap(similarity["des"])
figures["similarity_vs_ea_change"] = forgetting_figure(
    points, paper_results.similarity_forgetting_points(), our_change_label="change in EA, P2 - P1 (lower: forgot)")
figures["ea_vs_ma_tradeoff"] = ability_tradeoff_figure(tradeoff_points(P, results, intervals),
                                                       paper_results.tradeoff_points())
written = save_figures(figures, P.figures_path, P.figures.formats, P.figures.plotlyjs, P.figures.scale)
written_table(written)

# %%
figures["ea_vs_ma_tradeoff"]

# %%
figures["similarity_vs_ea_change"]

# %%
figures["fig1_layer_projections"]

# %%
figures["fig2_covariance_change"]

# %%
figures.get("figD3_covariance_change_mitigations")

# %%
figures["fig4_cross_lingual"]

# %%
figures["table3_des_heatmap"]
