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
# # 05 · How similar are the two phases' datasets, and does it predict forgetting?
#
# **Question.** The paper (section 4.3) explains why Phase 2 costs English ability after one
# Phase-1 dataset and not after another by how *similar* the two phases' instructions are. Do
# its two measures rank our pairs the same way, and across the arms of this run, do they track
# what Phase 2 did to English?
#
# - **DES** (Definition 1, Table 3): sample N rows of each dataset (paper: 500), embed the
#   instructions with a language-agnostic sentence embedder (paper: LaBSE; offline: the
#   multilingual Universal Sentence Encoder), average, L2-normalise, dot product. Higher is more
#   similar. We add a bootstrap standard deviation over the sampled rows as a noise scale.
# - **MPD** (Definition 2, Table 4): the mean over named tensors of the L2 norm of the
#   difference between two models fine-tuned from one base, divided by the largest value in the
#   comparison. The paper fixes the model fine-tuned on MULTIALPACA and compares the models
#   fine-tuned on the other datasets with it; lower is more similar. Checkpoints are streamed
#   tensor by tensor.
#
# **Reads** the params, `<run_dir>/data/` and the finished arms (training any that is missing).
# **Writes** `<run_dir>/similarity/`: `des.json`, cached embeddings, `mpd.json`, `summary.json`.

# %% tags=["parameters"]
params = "params/default.yaml"
force = False
overrides = ""

# %%
from cft_helpers.data import prepare_datasets
from cft_helpers.heldout import phase1_heldout_change
from cft_helpers.paper_results import similarity_forgetting_points
from cft_helpers.params import load_params
from cft_helpers.plots import (des_heatmap, similarity_vs_forgetting as forgetting_figure,
                               use_notebook_renderer)
from cft_helpers.similarity import (correlation_report, des_matrix, des_table, forgetting_correlations, mpd_arms,
                                    mpd_run_table, paper_forgetting_correlation, phase_pairs_table,
                                    save_similarity_summary, similarity_vs_forgetting)
from cft_helpers.train import train_arms

P = load_params(params, overrides=overrides)
use_notebook_renderer(P.figures.notebook_png)   # figures: interactive, plus a PNG for GitHub/nbviewer
store = P.store
prepare_datasets(P)
cfg = P.similarity
print(f"parameter set {P.name!r}: embedder {cfg.embedder}, n={cfg.n}, "
      f"seed={P.seed if cfg.seed is None else cfg.seed}, embedding the {cfg.text}")

# %% [markdown]
# ## DES for every pair of datasets
#
# Each cell is DES of the row and column datasets; ± is the bootstrap standard deviation. A
# dataset and its translation (same task family, other languages) should score near the top,
# a different task family well below.

# %%
des = des_matrix(P)
print("rows embedded per dataset:", des["rows"])
des_table(des).round(3)

# %%
des_heatmap(des)

# %% [markdown]
# ## Table 3: the two phases of each Phase-2 arm
#
# The paper's value sits beside ours where the arm's label names one of its pairs. The paper's
# datasets and embedder differ from the offline default's, so compare rankings, not values.

# %%
pairs = phase_pairs_table(P, des)
pairs.round(3)

# %% [markdown]
# ## Table 4: MPD against the model fine-tuned on the Phase-2 data
#
# The models compared are the arms trained from the same start model on one dataset each, and
# Phase-1 models used as they are. Arms not trained yet are trained here (skipped when done).

# %%
reference, compared = mpd_arms(P)
train_arms(P, [reference, *compared], force=force)
mpd = mpd_run_table(P)
print(f"reference: {reference} ({P.arms[reference].label or reference}); compared: {compared}")
mpd.round(4)

# %% [markdown]
# ## Does similarity track what Phase 2 costs in English?
#
# Until the evaluation notebook scores English Ability, what Phase 2 costs in English is
# measured by a proxy: the held-out response loss on the arm's *Phase-1* (English) dataset,
# after Phase 2 minus after Phase 1 (positive: it forgot). The paper's own points (change in
# EA: negative means it forgot) are drawn below ours, so the two rows point in opposite
# directions: read the direction of each panel, not the values.

# %%
change = phase1_heldout_change(P, P.arms_in_phase("phase2"))
points = similarity_vs_forgetting(P, des, mpd, change)
points.round(4)

# %%
verdicts = forgetting_correlations(points)
paper = similarity_forgetting_points()
paper_verdict = paper_forgetting_correlation(paper)
print(correlation_report(verdicts, paper_verdict, change="change in Phase-1 held-out loss"))

# %%
forgetting_figure(points, paper, our_change_label="change in Phase-1 held-out loss (higher: forgot)")

# %%
summary = save_similarity_summary(store, des=des, phase_pairs=pairs, mpd=mpd, points=points,
                       correlation=verdicts, paper_correlation=paper_verdict)
print(f"wrote {summary}")
