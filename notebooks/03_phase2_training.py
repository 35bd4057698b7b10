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
# # 03 · Phase 2, the mixture and the reverse order
#
# **Question.** What does multilingual fine-tuning in Phase 2 do to a model that already
# follows English instructions, and how does that compare with training on both datasets at
# once or in the opposite order?
#
# The arms of the paper's grid (docs/METHODS.md, "The two phases and the arms"), all with the Phase-1 hyperparameters:
#
# - **Phase 2** from each Phase-1 model on the multilingual dataset: after the *similar*
#   English set (ALPACA -> MULTIALPACA, Tables 1-2) and after the *dissimilar* one
#   (Instruct -> MULTIALPACA);
# - **Mixture**: the base model on both datasets concatenated and shuffled, one phase, the
#   same data as the two phases together (Tables 1-2, "Dataset Mixture");
# - **Reverse order**: multilingual first, then English (appendix C, Tables B3-B4).
#
# **Reads** the params, `<run_dir>/data/` and the Phase-1 arms. **Writes** one
# `<run_dir>/arms/<arm>/` per arm and `<run_dir>/heldout_loss.json`.

# %% tags=["parameters"]
params = "params/default.yaml"
force = False
overrides = ""

# %%
from cft_helpers.heldout import phase2_changes, training_heldout_table
from cft_helpers.params import load_params
from cft_helpers.reports import arm_plan, arm_table, loss_curves, weight_change_table
from cft_helpers.train import train_arms

P = load_params(params, overrides=overrides)
arms = P.arms_in_phase("phase2", "mixture", "reverse1", "reverse2")
print(f"parameter set {P.name!r}: arms {arms}")

# %% [markdown]
# ## The plan

# %%
arm_plan(P, arms)

# %% [markdown]
# ## Train
#
# Arms run in dependency order (a reverse-order second phase after its first phase).

# %%
metrics = train_arms(P, arms, force=force)
loss_curves(P, arms, title="Phase 2, mixture and reverse order: training loss")

# %%
arm_table(P, arms)

# %% [markdown]
# ## Did Phase 2 move the model?
#
# Relative L2 distance between each arm's final weights and its starting point, read tensor
# by tensor from the safetensors checkpoints.

# %%
moved = weight_change_table(P, arms)
moved

# %% [markdown]
# ## Held-out response loss of every model on every dataset
#
# A quick proxy, not the paper's metric (English and Multilingual Ability come from the
# benchmarks of the evaluation notebook): the per-token loss of the reference responses of the
# held-out rows of every dataset an arm trains on, lower is better. Rows are models: the
# starting model(s) and the Phase-1, Phase-2, mixture and reverse-order arms trained so far.
# Read a Phase-2 row against its Phase-1 row: the multilingual column should fall; the English
# columns show what Phase 2 cost. (With the book's scheduler these losses were computed before
# the notebook ran, as `heldout:<model>` jobs; the notebook reads them.)

# %%
losses = training_heldout_table(P)
losses.round(3)

# %% [markdown]
# Per Phase-2 arm and dataset: the loss at its start model and after Phase 2 (`change` > 0:
# worse), beside how far its weights moved.

# %%
phase2_changes(P, losses, moved).round(4)
