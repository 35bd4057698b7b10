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
# # 01 · Data preparation
#
# **Question.** Which instructions does each phase see, in which languages, and which examples
# are kept aside for evaluation?
#
# The paper (section 4.1, appendix A.2) fine-tunes on English instructions in Phase 1 (ALPACA
# or OPENORCA) and on their multilingual counterparts in Phase 2 (MULTIALPACA: ALPACA's seed
# tasks in 11 languages, in equal proportions; MOPENORCA). The "Instruct" Phase-1 model was tuned
# on instructions of a different kind: the *dissimilar* pair.
#
# With the paper presets this notebook loads those datasets from the hub. Offline (default and
# smoke params) it writes the project's built-in stand-ins with the same structure: an
# ALPACA-like English set, its MULTIALPACA-like counterpart with the same kinds of instruction in
# 11 languages, and an Instruct-like English set of different tasks (system prompt, passage,
# step-by-step answer).
#
# **Reads** the params. **Writes** `<run_dir>/data/`: `<name>.train.jsonl`,
# `<name>.heldout.jsonl` and `report.json`.

# %% tags=["parameters"]
params = "params/default.yaml"
force = False
overrides = ""

# %%
from cft_helpers.data import prepare_datasets
from cft_helpers.data.prepare import (dataset_overview, english_counterpart, first_examples, language_table,
                                      report_totals, task_table)
from cft_helpers.params import load_params

P = load_params(params, overrides=overrides)
store = P.store
print(f"parameter set {P.name!r} from {P.source_path}; run store {P.run_path}")

# %% [markdown]
# ## The datasets of this parameter set

# %%
dataset_overview(P)

# %% [markdown]
# ## Load, normalise to one conversational schema, split off held-out rows
#
# Every source (ALPACA's instruction/input/output, OpenOrca's system_prompt/question/response,
# chat messages) becomes a list of messages ending with the assistant's response, with a
# language tag. Held-out rows of the built-in data are task instances never used for training
# in any language.

# %%
report = prepare_datasets(P, force=force)
language_table(report)

# %% [markdown]
# ## What the examples look like

# %%
print(first_examples(P))

# %% [markdown]
# ## The similar pair encodes the same instructions
#
# A multilingual example of the built-in data can be rendered in English: same task, same
# numbers. This English counterpart is what English replay (ER_10) trains on later.

# %%
counterpart = english_counterpart(P)  # None without a multilingual built-in dataset
if counterpart:
    print(counterpart)

# %% [markdown]
# ## Task mix per dataset
#
# The ALPACA-like and MULTIALPACA-like sets share their task types; the Instruct-like set shares
# none of them. This is the structure behind the paper's similar / dissimilar contrast.

# %%
task_table(store, list(P.datasets))

# %%
print(report_totals(report))
