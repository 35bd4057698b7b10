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
# - C7b asks whether ER_10 is the best strategy: it is reproduced when ER_10 ranks first in at
#   least 95% of the bootstrap replicates, contradicted when in at most 5%.
# - A claim with no interval (MPD and the representation change vary only across seeds, so one
#   seed gives none) is **inconclusive (no interval)**; a claim whose arms the parameter set
#   lacks is **not run**, naming the arm.
#
# **Intervals.** Every change in EA, MA or combined ability comes from a paired bootstrap over
# evaluation items: each replicate draws the items of every task with replacement once and
# scores every model on that same draw, so what two models share cancels. 2000 replicates,
# percentile interval. With several seeds, each replicate first draws seeds with replacement,
# then items within each drawn seed. DES carries its own bootstrap standard deviation (rows
# resampled).
#
# **Many claims at once.** About fifteen rows are decided here. If none of the claims held, each
# 95% interval would still exclude 0 by chance about one time in twenty, so one `reproduced` on
# its own is weak evidence; a pattern across claims, or a verdict that survives the family-wise
# column (every interval widened to 1 - 0.05 / m, Bonferroni), is stronger.
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
from cft_helpers.findings import (benchmark_changes, claims_frame, decide_claims, phase2_pairs, precision_report,
                                  seed_runs, verdict_lines, write_findings)
from cft_helpers.params import load_params
from cft_helpers.runs import RunStore

P = load_params(params, overrides=overrides)
store = RunStore(P.run_path)
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
# ## How precise is the English Ability change?
#
# The half-width of each Phase-2 pair's 95% interval of EA change (P1 -> P2): the smallest effect
# this run can tell from zero, roughly. The components EA averages here, and how many items each
# task has, are what that precision rests on.
#
# **Why these components.** EA must be able to see what Phase 2 takes away. On the offline
# default, a 135M model answers the multiple-choice stand-ins near chance, and 0/1 scores of 32
# items give intervals of about +-0.1, far wider than the effects the paper reports. The default's
# English stand-ins were therefore chosen by one criterion: the width of this interval per second
# of evaluation, measured on the default run's Phase-1 and Phase-2 checkpoints for every
# candidate (`python -m benchmarks.bench_ea_power`, results in
# `benchmarks/results/ea_power_default.txt`), never by the direction of any change. Continuous
# per-item scores won: the probability of the true choice (MMLU and HellaSwag slots) and the
# per-byte probability of held-out reference responses of both task families (IFEval slot). The
# `evaluation:` block of `params/default.yaml` gives the measured widths and seconds.

# %% [markdown]
# What each pair's EA and MA change is made of: every benchmark's change P1 -> P2 with its
# paired interval (the same items, the same rule).

# %%
pairs = phase2_pairs(meta)
benchmark_changes(runs, pairs).round(3) if pairs else "the parameter set has neither Phase-2 pair"

# %%
print(precision_report(meta))

# %% [markdown]
# ## Verdicts, for the record
#
# The table above is written to `findings.json` (every number) and `findings.md` (the table as
# the README links it). Verdicts are reported as they come: none of the default's settings was
# chosen by looking at them.

# %%
paths = write_findings(store, claims, meta, title=f"parameter set {P.name!r}", copy_to=P.figures_path)
print(verdict_lines(claims))
print(f"wrote {paths['md']}, {paths['json']} and {paths['copy']}")
