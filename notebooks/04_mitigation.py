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
# # 04 · Mitigating forgetting in Phase 2
#
# **Question.** Phase 2 after a *dissimilar* Phase-1 dataset costs English ability (Table 1,
# Instruct -> MULTIALPACA). Which of the paper's strategies (section 5, Table 5) keeps more of
# the English while still learning the new languages, and at what compute cost?
#
# Every strategy runs Phase 2 from the Instruct Phase-1 model on the multilingual data, with the
# Phase-2 hyperparameters, through the same training core (docs/METHODS.md, "Mitigation strategies"):
#
# - **LF_H1**: freeze a seeded random set of N decoder layers;
# - **LF_H2**: for q, k and v separately, freeze the projection in the N layers where it changed
#   most from the base to the Phase-1 model;
# - **Spectrum**: freeze, per module type, the top half of the matrices by upstream Spectrum's
#   signal-to-noise score of the Phase-1 model (upstream would train them);
# - **GR_5 / GR_10**: add English counterparts of 5% / 10% of the Phase-2 instructions, answered
#   by the Phase-1 model itself; **ER_10**: the same with their original English responses;
# - **LoRA**: rank-64 adapters instead of full fine-tuning, evaluated merged.
#
# The vanilla row is plain Phase 2 from the same start on the same data. Where the params also
# define the paper's Table D8 (the same strategies on MOPENORCA, arms with `table: D8`), its arms
# train here too and every comparison below is drawn per table, never pooled.
#
# **Reads** the params, `<run_dir>/data/` and the Phase-1 arm. **Writes** one
# `<run_dir>/arms/<arm>/` per strategy, with `freeze.json` (layer freezing: the exact tensors
# frozen and trainable), `spectrum_snr.json` + `unfrozen.yaml` (Spectrum, Axolotl's format),
# `replay/` (the replay set and the cached generations), `adapter/` (LoRA).

# %% tags=["parameters"]
params = "params/default.yaml"
strategy = "all"
table = "all"        # "T5" (Table 5), "D8" (Table D8) or every table the params define
force = False
overrides = ""

# %%
from cft_helpers.data import prepare_datasets
from cft_helpers.evaluation.harness import evaluate_models
from cft_helpers.evaluation.tables import strategy_tables
from cft_helpers.jobs import mitigation_selection
from cft_helpers.params import load_params
from cft_helpers.reports import (arm_plan, compute_tables, freeze_table, loss_curves, mitigation_loss_tables,
                                 replay_overview, show_tables)
from cft_helpers.train import train_arms

P = load_params(params, overrides=overrides)
# The strategy's arms in each table, and what they are compared against: each table's vanilla
# Phase-2 arm. An unknown strategy or table fails here.
selection = mitigation_selection(P, strategy, table)
arms, compared = selection.arms, selection.compared
prepare_datasets(P)
print(f"parameter set {P.name!r}, strategy {strategy!r}, tables {selection.tables}: arms {arms}")

# %% [markdown]
# ## The plan
#
# Replay arms train on more rows than vanilla (the replay is added, not swapped in).

# %%
arm_plan(P, arms)

# %% [markdown]
# ## Train
#
# Arms already done for the same inputs are skipped. What they need and is missing is trained
# first: the Phase-1 arm they start from, and the vanilla Phase-2 arm they are compared with, so
# this notebook runs on its own from an empty run store.

# %%
metrics = train_arms(P, P.with_upstream(compared), force=force)
loss_curves(P, arms, title="Phase 2 with each strategy: training loss")

# %% [markdown]
# ## What each strategy froze
#
# The decoder layers holding frozen tensors and the rule that chose them (LF_H1: the seeded
# draw; LF_H2: per projection, the layers that moved most in Phase 1; Spectrum: the top percent
# per module type). The complete lists are in each arm's `freeze.json`.

# %%
freeze_table(P, arms)

# %% [markdown]
# ## The replay sets
#
# English counterparts of Phase-2 instructions; for GR the response is the Phase-1 model's own.

# %%
print(replay_overview(P, arms))

# %% [markdown]
# ## Compute cost (paper D.5)
#
# Trainable parameters, rows and tokens trained, replay generation time and training time,
# relative to vanilla Phase 2 of the same table.

# %%
show_tables(compute_tables(P, selection.by_table))

# %% [markdown]
# ## A quick look before the benchmarks: held-out losses
#
# Notebook 06 scores English and Multilingual Ability and renders Table 5. Here, without any
# benchmark, each arm is read through the held-out response loss (lower is better) on the
# Phase-1 (English) data, what Phase 2 may make the model forget, and on the Phase-2
# (multilingual) data, with the change from the Phase-1 model. The paper's EA / MA / combined
# (higher is better) for the same strategy are beside them. On the offline default a few
# optimizer steps separate the arms: read differences against the seed-to-seed spread.

# %%
show_tables(mitigation_loss_tables(P, selection.by_table))

# %% [markdown]
# ## Table 5 (and D8): English and Multilingual Ability per strategy
#
# Each strategy arm and the vanilla Phase-2 arm are scored with the evaluation suite of notebook
# 06 (models already scored with the same suite are read back, and notebook 06 reuses these). A
# benchmark that does not run (e.g. AlpacaEval without a judge) is left out of EA, never counted
# as zero; the footnote of notebook 06 says which. The paper's values sit beside ours as printed;
# where its own benchmark scores contradict a printed average (Mistral-7B ER_10 in Table 5), the
# recomputed mean and a "paper note" mark it. Beside each arm, the share of its parameters that
# stayed frozen (for LoRA: of the base model's weights; its trainable parameters are the adapters).

# %%
results = evaluate_models(P, compared, force=False)
show_tables(strategy_tables(P, results, selection.tables, frozen_share=True), footnotes=True)
