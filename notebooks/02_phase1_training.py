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
# # 02 · Phase 1: English instruction fine-tuning
#
# **Question.** Starting from the base model, what does full fine-tuning on English
# instructions do, and how long does it take?
#
# The paper's two-phase CFT (section 3) first fine-tunes a pre-trained LLM on an English
# instruction dataset (ALPACA or OPENORCA): all weights, bf16, the Table A1 hyperparameters
# (lr 1e-6, 4 epochs, global batch 16, cosine schedule with 10 linear warmup steps, AdamW,
# weight decay 0), loss on the response tokens only. Its "Instruct" Phase-1 models are
# off-the-shelf instruct checkpoints used as they are; an arm without datasets does that here.
#
# **Reads** the params and `<run_dir>/data/`. **Writes** `<run_dir>/arms/<arm>/` for every
# Phase-1 arm: manifest, resolved parameters, training log, metrics and the final checkpoint.
# An arm already done for the same inputs is skipped; an interrupted one resumes from its last
# checkpoint.

# %% tags=["parameters"]
params = "params/default.yaml"
force = False
overrides = ""

# %%
from cft_helpers.params import load_params
from cft_helpers.reports import arm_plan, arm_table, heldout_loss_summary, loss_curves
from cft_helpers.train import train_arms

P = load_params(params, overrides=overrides)
phase1 = P.arms_in_phase("phase1")
print(f"parameter set {P.name!r}: Phase-1 arms {phase1}")

# %% [markdown]
# ## The plan

# %%
arm_plan(P, phase1)

# %% [markdown]
# ## Train

# %%
metrics = train_arms(P, phase1, force=force)

# %% [markdown]
# ## Result
#
# Training loss per step, and the loss on the arm's own held-out rows before and after
# training (same masking as in training: response tokens only).

# %%
loss_curves(P, phase1, title="Phase 1: training loss")

# %%
table = arm_table(P, phase1)
table

# %%
print(heldout_loss_summary(table))
