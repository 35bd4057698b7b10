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
# # 09 · Findings: which of the paper's claims hold on this run
#
# **Question.** The paper makes eight claims (sections 4-5, appendices B-D). For this model, these
# data and these seeds, which held, which were contradicted, and which can this run not decide?
#
# Each claim becomes one number, oriented so that a positive value is the paper's direction, with
# a 95% interval and a verdict by one rule, stated before any number is seen
# (docs/METHODS.md, "Deciding a claim"):
#
# - **reproduced** when the interval lies above 0; **contradicted** when it lies below 0;
#   **inconclusive** otherwise. C2 is a non-inferiority claim ("keeps or improves"): its line is
#   at minus the margin (`findings.margin`, 0.02 EA points) instead of 0.
# - C7b asks whether ER_10 is the best strategy: ER_10's combined score minus each other
#   strategy's, each with its interval; reproduced when every lead is above 0, contradicted when
#   any is below 0.
# - C8a-C8d are Appendix C's reverse order: it loses Multilingual Ability in its English phase and
#   ends below the two-phase order and the mixture.
# - A claim whose arms the parameter set lacks is **not run**, naming the arm.
#
# **Intervals that hold their level.** With one seed, every change in EA, MA or combined ability
# comes from a paired bootstrap over evaluation items: each replicate draws the items of every
# task with replacement once and scores every model on that same draw, so what two models share
# cancels (2000 replicates, percentile). With several seeds, the interval is a t-interval over the
# seeds' values with k - 1 degrees of freedom: a bootstrap over 3 seeds gives [min, max] of them,
# which covers the truth about 75% of the time, not 95%. MPD and the representation change vary
# only between seeds: they need 3 seeds for an interval, and each row says how many of its seeds
# point the paper's way.
#
# **What EA averages.** A multiple-choice English slot (the MMLU and HellaSwag stand-ins) counts
# only when every Phase-1 model scores clearly above chance on it (the interval's lower end above
# 1/4 + 0.05): a slot at chance measures nothing and can lose nothing. The findings say which
# slots were left out, and set each Phase-1 model against the model it started from: a Phase-1
# model no better than its base in EA taught nothing that Phase 2 could keep or lose.
#
# **Many claims at once.** About thirty rows are decided here. If none of the claims held, each
# 95% interval would still exclude 0 by chance about one time in twenty, so one `reproduced` on
# its own is weak evidence; a pattern across claims (the similarity effect: C2, C3a and C3b
# together), or a verdict that survives the family-wise column (every interval widened to
# 1 - 0.05 / m, Bonferroni, from t or normal intervals), is stronger.
#
# **Reads** `<run_dir>/eval/<model>.samples.jsonl` (per-item scores, notebook 06),
# `similarity/summary.json` (05) and `representations/summary.json` (07). Trains and evaluates
# nothing. **Writes** `<run_dir>/findings.json` and `<run_dir>/findings.md`, and a copy of the
# Markdown in the figures folder of the params (the default run's is committed as
# `figures/findings.md`).

# %% tags=["parameters"]
params = "params/default.yaml"
force = False   # nothing here is computed from models; the book passes it to every notebook
overrides = ""

# %%
from cft_helpers.findings import benchmark_changes, decide_claims, seed_runs
from cft_helpers.findings_report import (claims_frame, construct_report, phase2_pairs, precision_report, verdict_lines,
                                         write_findings)
from cft_helpers.params import load_params

P = load_params(params, overrides=overrides)
store = P.store
runs = seed_runs(P)   # the params' seeds (`seeds:`, or the book's --seeds), each with its run store
print(f"parameter set {P.name!r}: seeds {P.seed_list()}, "
      f"{P.findings.n_bootstrap} bootstrap replicates, {P.findings.confidence:.0%} intervals")

# %% [markdown]
# ## The claims table
#
# One row per claim: the paper's value of the same oriented quantity for Mistral-7B and
# Llama-3-8B (computed from its tables; a note where the two models disagree, or where the paper
# misprints), ours with its interval, and the verdict.

# %%
claims, meta = decide_claims(runs)
table = claims_frame(claims)
table.round(3)

# %% [markdown]
# ## What the English slots rest on
#
# Each multiple-choice slot's Phase-1 scores against chance (a slot at chance is left out of EA),
# and each Phase-1 model minus the model it started from, slot by slot and in EA, with intervals.

# %%
print(construct_report(meta))

# %% [markdown]
# ## How precise is the English Ability change?
#
# The half-width of each Phase-2 pair's 95% interval of EA change (P1 -> P2): the smallest effect
# this run can tell from zero, roughly. The components EA averages here, and how many items each
# task has, are what that precision rests on.
#
# **How the slots were chosen.** Construct first: each English slot measures what the paper's
# benchmark measures, argued in docs/METHODS.md ("The English slots") before any checkpoint was
# scored with it. The IFEval slot generates answers to held-out prompts that state verifiable
# instructions of IFEval's kinds and scores them with lm-eval's own IFEval checkers; AlpacaEval
# needs a judge and is off offline; the MMLU and HellaSwag stand-ins count only above chance.
# Power second: the number of items was then set by the width of each pair's EA-change interval
# and the seconds it costs, measured on a seed that the findings never use
# (`python -m benchmarks.bench_ea_power --seed 100`, which prints widths only). No change, and no
# direction, was looked at to choose any of it.

# %% [markdown]
# What each pair's EA and MA change is made of: every benchmark's change P1 -> P2 with its
# interval (the same items, the same rule, the same slots left out of EA).

# %%
pairs = phase2_pairs(meta)
benchmark_changes(runs, pairs, exclude=meta["dropped"]).round(3) if pairs else "the parameter set has neither Phase-2 pair"

# %%
print(precision_report(meta))

# %% [markdown]
# ## Verdicts, for the record
#
# The table above is written to `findings.json` (every number) and `findings.md` (the table as
# the README links it), with the similarity effect, the family-wise survivors and the paper's own
# misprinted averages under it. Verdicts are reported as they come: the slots were chosen by
# construct, sized by width on another seed, and no setting was chosen by looking at a verdict.

# %%
paths = write_findings(store, claims, meta, title=f"parameter set {P.name!r}", copy_to=P.figures_path)
print(verdict_lines(claims))
print(f"wrote {paths['md']}, {paths['json']} and {paths['copy']}")
