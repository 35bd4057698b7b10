"""Batched greedy generation (replay, generative evaluation): resumes from its cache after a kill."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cft_helpers.generation import append_cache, generate_responses, generation_backend, prompt_key, read_cache
from cft_helpers.models import load_model, load_tokenizer, model_checkpoint


def test_generation_resumes_from_what_it_wrote_and_regenerates_a_torn_line(smoke_params, tmp_path):
    ckpt = model_checkpoint(smoke_params, "base", progress=False)
    tok, model = load_tokenizer(ckpt), load_model(ckpt)
    prompts = [[{"role": "user", "content": f"Add {i} and {i + 1}."}] for i in range(5)]
    calls = []
    original = model.generate

    def counting(**kwargs):
        calls.append(int(kwargs["input_ids"].shape[0]))
        return original(**kwargs)

    model.generate = counting
    cache = tmp_path / "gen.jsonl"
    first = generate_responses(model, tok, prompts[:3], max_new_tokens=6, batch_size=2, cache_file=cache,
                               progress=False)
    assert sum(calls) == 3
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # a kill mid-write
    calls.clear()
    again = generate_responses(model, tok, prompts, max_new_tokens=6, batch_size=2, cache_file=cache,
                               progress=False)
    assert sum(calls) == 3            # the torn prompt and the two new ones; the other two are read back
    assert again[:3] == first         # greedy: the regenerated answer is the same
    calls.clear()
    assert generate_responses(model, tok, prompts, max_new_tokens=6, batch_size=2, cache_file=cache,
                              progress=False) == again and sum(calls) == 0
    assert "" not in cache.read_text().splitlines()   # a newline only where a torn line needed one


FAKE_VLLM = str(Path(__file__).parent / "fake_vllm")


def _use_fake_vllm(monkeypatch, tmp_path) -> Path:
    """vLLM's test double on the path of this process and of the worker it starts."""
    log = tmp_path / "vllm_calls.jsonl"
    monkeypatch.syspath_prepend(FAKE_VLLM)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [FAKE_VLLM, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("FAKE_VLLM_LOG", str(log))
    return log


def test_generation_engine_is_chosen_from_the_params(monkeypatch, tmp_path):
    assert generation_backend("hf") == "hf"
    assert generation_backend("auto") == "hf"       # no vLLM here
    with pytest.raises(RuntimeError, match="vllm is not installed"):
        generation_backend("vllm")
    _use_fake_vllm(monkeypatch, tmp_path)
    assert generation_backend("vllm") == "vllm"
    assert generation_backend("auto") == "hf"       # vLLM installed, but no CUDA GPU


def test_the_vllm_path_writes_what_the_hf_path_writes_and_resumes(smoke_params, monkeypatch, tmp_path):
    """The vLLM path (a child process fed the token ids we render) gives the HF path's answers
    in the same cache lines; a rerun asks the worker only for what the cache lacks."""
    import torch

    base = model_checkpoint(smoke_params, "base", progress=False)
    tok, model = load_tokenizer(base), load_model(base)
    with torch.no_grad():  # the random-init model answers every prompt with newlines: perturb it
        gen = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    ckpt = tmp_path / "noisy"
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    prompts = [[{"role": "user", "content": f"Name {i} colours."}] for i in range(5)] + \
              [[{"role": "user", "content": "Name 0 colours."}]]             # a repeat: generated once
    hf_cache, vllm_cache = tmp_path / "hf.jsonl", tmp_path / "vllm.jsonl"
    hf = generate_responses(model, tok, prompts, max_new_tokens=6, batch_size=1, cache_file=hf_cache, progress=False)
    assert all(hf) and len(set(hf)) > 1  # answers worth comparing
    log = _use_fake_vllm(monkeypatch, tmp_path)
    got = generate_responses(None, tok, prompts, max_new_tokens=6, cache_file=vllm_cache, progress=False,
                             vllm_checkpoint=ckpt, seed=3)
    assert got == hf
    lines = [json.loads(line) for line in vllm_cache.read_text().splitlines()]
    assert {e["key"] for e in lines} == {prompt_key(p, 6, "vllm") for p in prompts}   # never mixed with HF's
    distinct = {prompt_key(p, 6, "vllm"): h for p, h in zip(prompts, hf)}
    assert {e["key"]: e["response"] for e in lines} == distinct
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["prompts"] for c in calls] == [5] and calls[0]["init"]["seed"] == 3
    assert calls[0]["init"]["model"] == str(ckpt)
    lines = vllm_cache.read_text().splitlines()
    vllm_cache.write_text("\n".join(lines[:3]) + "\n")                     # as if killed after 3
    assert generate_responses(None, tok, prompts, max_new_tokens=6, cache_file=vllm_cache, progress=False,
                              vllm_checkpoint=ckpt) == hf
    assert [json.loads(line)["prompts"] for line in log.read_text().splitlines()] == [5, 2]
    assert generate_responses(None, tok, prompts, max_new_tokens=6, cache_file=vllm_cache, progress=False,
                              vllm_checkpoint=ckpt) == hf
    assert len(log.read_text().splitlines()) == 2                           # all cached: no worker


def test_a_failing_vllm_worker_is_an_error_naming_the_way_out(smoke_params, monkeypatch, tmp_path):
    ckpt = model_checkpoint(smoke_params, "base", progress=False)
    tok = load_tokenizer(ckpt)
    monkeypatch.setenv("PYTHONPATH", "")  # the worker cannot import vllm
    with pytest.raises(RuntimeError, match="runtime.generation: hf"):
        generate_responses(None, tok, [[{"role": "user", "content": "Hi"}]], max_new_tokens=2,
                           progress=False, vllm_checkpoint=ckpt)


def test_the_vllm_worker_leaves_the_launchers_process_group_and_keeps_its_gpu():
    from cft_helpers.generation import _worker_env

    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "x",
           "CUDA_VISIBLE_DEVICES": "4,5", "PATH": "/bin"}
    assert _worker_env(env) == {"CUDA_VISIBLE_DEVICES": "5", "PATH": "/bin"}
    assert _worker_env({"PATH": "/bin"}) == {"PATH": "/bin"}          # a plain process: unchanged
    assert _worker_env({"LOCAL_RANK": "1"})["CUDA_VISIBLE_DEVICES"] == "1"


def test_a_response_with_a_unicode_line_separator_survives_the_cache(tmp_path):
    cache = tmp_path / "c.jsonl"
    append_cache(cache, [("a", "first\u2028second\u0085third"), ("b", "plain")])
    assert read_cache(cache) == {"a": "first\u2028second\u0085third", "b": "plain"}


def test_the_vllm_worker_caps_its_context_at_the_models_window(smoke_params, monkeypatch, tmp_path):
    """A prompt of 500 tokens plus 20 new ones would ask vLLM for 520 positions of a 512-token
    model, which vLLM refuses at start: the worker asks for the window (the double refuses too)."""
    from cft_helpers import vllm_worker

    log = _use_fake_vllm(monkeypatch, tmp_path)
    ckpt = model_checkpoint(smoke_params, "base", progress=False)
    req = tmp_path / "req.jsonl"
    req.write_text(json.dumps({"key": "k", "prompt_token_ids": [5] * 500}) + "\n")
    out = tmp_path / "out.jsonl"
    assert vllm_worker.main(["--checkpoint", str(ckpt), "--requests", str(req), "--out", str(out),
                             "--max-new-tokens", "20", "--no-progress"]) == 0
    assert json.loads(log.read_text())["init"]["max_model_len"] == 512 and "k" in read_cache(out)
