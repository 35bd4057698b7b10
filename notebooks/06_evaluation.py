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
# # 06 · English Ability and Multilingual Ability
#
# **Question.** What does each arm of the grid score on the paper's benchmarks, and how do
# English Ability (EA) and Multilingual Ability (MA) move from Phase 1 to Phase 2, in the
# mixture, in the reverse order and under each mitigation?
#
# As in the paper (section 4.1, A.3): zero-shot, through lm-evaluation-harness, with each
# model's chat template. EA is the mean of IFEval, AlpacaEval, MMLU and HellaSwag; MA the mean of
# MLQA (F1), XQuAD (F1) and XLSum (ROUGE), each averaged over its languages; combined is the mean
# of the two (Table 5). A benchmark that does not run is reported as missing and left out of the
# mean, never counted as zero. The first table says what runs in place of each benchmark.
#
# AlpacaEval needs an LLM judge: the model answers AlpacaEval's instructions, the judge compares
# each answer with a reference model's (alpaca_eval's prompt and parser, the two answers' order
# swapped at random against position bias), and the score is the win rate, a tie counting half
# (the paper: GPT-4 against text-davinci-003). The judge is a parameter
# (`evaluation.benchmarks.alpacaeval`): any OpenAI-compatible endpoint, a local model of
# `models:`, or `off`. The offline default has no judge worth the name, so it is off there.
#
# **Reads** the params and every finished arm. **Writes** `<run_dir>/eval/<model>.json` (all
# metrics, per task and language, stderr, sample counts, task versions, chat template, time),
# `<model>.samples.jsonl` (every generated answer) and `summary.json`. Models already evaluated
# with the same suite are not evaluated again.

# %% tags=["parameters"]
params = "params/default.yaml"
force = False
overrides = ""
span_benchmark = "mlqa"   # the extractive QA benchmark whose answers are broken down at the end

# %%
from cft_helpers.evaluation.harness import (ability_table, benchmark_table, evaluable_models, evaluate_models,
                                            language_report, save_eval_summary)
from cft_helpers.evaluation.fidelity import fidelity_table
from cft_helpers.evaluation.answers import instruction_kinds, span_report
from cft_helpers.evaluation.tables import phase_table, strategy_tables, throughput_table
from cft_helpers.params import load_params
from cft_helpers.reports import show_tables

P = load_params(params, overrides=overrides)
ready, not_trained = evaluable_models(P)
print(f"parameter set {P.name!r}: evaluating {ready}")
if not_trained:
    print(f"not trained yet, so not evaluated: {not_trained}")

# %% [markdown]
# ## What runs for each benchmark

# %%
benchmark_table(P)

# %% [markdown]
# ## Evaluate
#
# Each model is loaded once and handed to lm-eval, which batches the requests; AlpacaEval, where
# it runs, reuses the loaded model for its answers and then asks the judge.

# %%
results = evaluate_models(P, ready, force=force)
throughput_table(results).round(2)

# %% [markdown]
# ## Every model: benchmarks, EA, MA, combined

# %%
table = ability_table(P, results)
print(table.attrs.get("footnote", ""))
table.round(3)

# %% [markdown]
# ## Tables 1-2: Phase 1 against Phase 2
#
# Each Phase-2 arm (and the reverse order's second phase) beside its starting model. The paper's
# values sit beside ours where the arm's label names one of its pairs; its models, data and
# benchmarks differ from the offline default's, so compare directions, not values.

# %%
phase_table(P, results).round(3)

# %% [markdown]
# ## Table 5: the mitigation strategies
#
# One table per mitigation setup the params define (Table 5 on MULTIALPACA; Table D8 on
# MOPENORCA where its arms exist), never pooled. The paper's values are beside ours as printed; a
# printed average its own benchmark scores contradict is marked (recomputed mean, "paper note").
# The frozen share is of each arm's parameters (for LoRA: of the base model's weights).

# %%
show_tables(strategy_tables(P, results, frozen_share=True), footnotes=True)

# %% [markdown]
# ## Per language (Tables B5-B7)

# %%
print(language_report(results))

# %% [markdown]
# ## Language fidelity
#
# Not in the paper: the share of generated multilingual answers that are in the language asked
# (language identified offline). A model that answers in English scores zero here however good
# its F1 looks. Short answers (numbers, single words) carry no language signal and are not
# assessed; the count assessed is in the last column.

# %%
fidelity = fidelity_table(P, list(results))
print(fidelity.attrs["footnote"])
fidelity.round(2)

# %% [markdown]
# ## Which stated instructions each model follows
#
# The IFEval slot's answers scored again one instruction at a time by lm-eval's checkers: per kind
# of instruction, the share of the prompts stating it whose answer follows it (strict). What a
# Phase-1 model taught, and what Phase 2 kept or lost, kind by kind (docs/METHODS.md, "The
# English slots"; the ALPACA-like data states titles and lengths, the Instruct-like data IFEval's
# format kinds).

# %%
kinds = instruction_kinds(P, list(results))
print(kinds.attrs.get("footnote", ""))
kinds.round(2)

# %% [markdown]
# ## What the MLQA answers are made of
#
# Not in the paper: MLQA scores token F1 against the gold span, so a model whose answers grow
# from the span into a sentence around it loses precision without being wrong, and one that
# misses the span loses everything. Per model, the share of answers that are the span, hold it
# among other words, or miss it (docs/METHODS.md, "The multilingual slots").

# %%
span_report(P, list(results), span_benchmark).round(3)

# %%
print(f"wrote {save_eval_summary(P, results)}")
