"""Batched greedy generation (replay, generative evaluation): resumes from its cache after a kill."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cft_helpers.generation import (append_cache, end_of_turn_ids, generate_responses, generation_backend, prompt_key,
                                    read_cache)
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


# ---------------------------------------------------------------------------- end-of-turn stops

TURN_TEMPLATE = ("{% for m in messages %}<|start|>{{ m['role'] }}\n{{ m['content'] }}<|eot|>{% endfor %}"
                 "{% if add_generation_prompt %}<|start|>assistant\n{% endif %}")


def eot_model(folder: Path | None = None, template: str = TURN_TEMPLATE):
    """A tokenizer whose chat template ends a turn with ``<|eot|>``, a special token that is not
    its eos ``</s>`` (as Llama-3's template with ``<|eot_id|>``), and a one-layer Llama whose
    greedy next token depends on the last token only: after the generation prompt it says
    ``a``, then ``<|eot|>``, then ``b`` for ever. An engine that stops at eos alone answers
    "a b b ..."; one that stops at the end of turn answers "a". Saved to ``folder`` if given."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<|eot|>", "<|start|>", "<unk>", "user", "assistant", "hi", "there", "a", "b",
             "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    vocab = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>", chat_template=template)
    tok.add_special_tokens({"additional_special_tokens": [w for w in words if w.startswith("<|")]})
    n = len(words)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=n, hidden_size=n, intermediate_size=n, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    nxt = {vocab["assistant"]: vocab["a"], vocab["a"]: vocab["<|eot|>"]}
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(n))   # the residual stream is the last token, one-hot
        layer = model.model.layers[0]
        layer.self_attn.o_proj.weight.zero_()                 # the layer adds nothing to it
        layer.mlp.down_proj.weight.zero_()
        head = torch.zeros(n, n)
        for i in range(n):
            head[nxt.get(i, vocab["b"]), i] = 1.0
        model.lm_head.weight.copy_(head)
    model.generation_config.eos_token_id = 2
    if folder is not None:
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    return tok, model.eval()


def test_the_end_of_turn_token_comes_from_the_chat_template():
    """Llama-3's template (params/paper/llama3_8b.yaml) ends a turn with <|eot_id|>, not its eos;
    a ChatML template whose eos is <|im_end|> (the smoke model, SmolLM2) adds no stop token."""
    import yaml

    from cft_helpers.generation import end_of_turn_ids, stop_token_ids

    tok, model = eot_model()
    eot = tok.convert_tokens_to_ids("<|eot|>")
    assert end_of_turn_ids(tok) == [eot] and stop_token_ids(tok, model) == [tok.eos_token_id, eot]
    llama3 = yaml.safe_load((Path(__file__).parents[1] / "params/paper/llama3_8b.yaml").read_text())
    tok.chat_template = llama3["models"]["base"]["chat_template"]
    assert end_of_turn_ids(tok) == [tok.convert_tokens_to_ids("<|eot_id|>")]
    tok.chat_template = TURN_TEMPLATE.replace("<|eot|>", "</s>")      # ends turns with eos: nothing new
    assert end_of_turn_ids(tok) == [] and stop_token_ids(tok, model) == [tok.eos_token_id]
    tok.chat_template = TURN_TEMPLATE.replace("<|eot|>", "\n\n")      # plain text: no special token
    assert end_of_turn_ids(tok) == []
    model.generation_config.eos_token_id = [2, 7]                      # a config's own extra eos is kept
    tok.chat_template = TURN_TEMPLATE
    assert stop_token_ids(tok, model) == [2, 7, eot]


def test_smoke_chatml_model_has_no_extra_stop(smoke_params):
    from cft_helpers.generation import end_of_turn_ids

    tok = load_tokenizer(model_checkpoint(smoke_params, "base", progress=False))
    assert tok.eos_token == "<|im_end|>" and end_of_turn_ids(tok) == []


def test_hf_generation_stops_at_the_templates_end_of_turn(tmp_path):
    """Without the end-of-turn stop, the answer runs on past <|eot|> to the token limit."""
    import torch

    tok, model = eot_model()
    prompt = [[{"role": "user", "content": "hi there"}]]
    ids = tok.apply_chat_template(prompt[0], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():  # eos alone (what generate did before): runs on
        runaway = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert tok.decode(runaway[0, ids["input_ids"].shape[1]:], skip_special_tokens=True) == "a b b"
    assert generate_responses(model, tok, prompt, max_new_tokens=4, progress=False) == ["a"]
    # the end-of-turn stop is part of the cache key: an answer cached before it (run on) is not reused
    eot = end_of_turn_ids(tok)
    cache = tmp_path / "c.jsonl"
    cache.write_text(json.dumps({"key": prompt_key(prompt[0], 4), "response": "a b b"}) + "\n")
    assert generate_responses(model, tok, prompt, max_new_tokens=4, cache_file=cache, progress=False) == ["a"]
    assert read_cache(cache) == {prompt_key(prompt[0], 4): "a b b", prompt_key(prompt[0], 4, "hf", eot): "a"}


def test_the_vllm_worker_stops_at_the_templates_end_of_turn(monkeypatch, tmp_path):
    tok, _ = eot_model(tmp_path / "eot")
    log = _use_fake_vllm(monkeypatch, tmp_path)
    prompt = [[{"role": "user", "content": "hi there"}]]
    assert generate_responses(None, tok, prompt, max_new_tokens=4, progress=False,
                              vllm_checkpoint=tmp_path / "eot") == ["a"]
    assert json.loads(log.read_text())["stop_token_ids"] == [2, 3]


def _wrapper(tmp_path: Path, name: str, pythonpath: str) -> Path:
    """An interpreter of "another environment": a script that execs this venv's python with
    ``pythonpath`` first (fake_vllm there: vLLM's own environment) and marks its runs."""
    import sys

    path = tmp_path / name
    path.write_text(f'#!/bin/sh\nexport PYTHONPATH="{pythonpath}${{PYTHONPATH:+:$PYTHONPATH}}"\n'
                    f'export FAKE_VLLM_WRAPPER="{name}"\nexec "{sys.executable}" "$@"\n')
    path.chmod(0o755)
    return path


def test_vllm_runs_under_the_interpreter_of_its_own_environment(smoke_params, monkeypatch, tmp_path):
    """``runtime.vllm_python``: vLLM is available through that interpreter alone (this process
    cannot import it), the worker runs under it, and a wrong path is a clear error."""
    import importlib.util
    import sys

    from cft_helpers import generation
    from cft_helpers.generation import uses_vllm

    monkeypatch.delitem(sys.modules, "vllm", raising=False)   # (an earlier test's in-process fake)
    log = tmp_path / "vllm_calls.jsonl"
    monkeypatch.setenv("FAKE_VLLM_LOG", str(log))
    assert importlib.util.find_spec("vllm") is None
    python = _wrapper(tmp_path, "vllm-env-python", FAKE_VLLM)
    assert generation_backend("vllm", str(python)) == "vllm"
    assert generation_backend("auto", str(python)) == "hf"          # no CUDA GPU here
    with pytest.raises(RuntimeError, match="is not an executable file"):
        generation_backend("vllm", str(tmp_path / "missing" / "python"))
    with pytest.raises(RuntimeError, match="cannot import vllm"):
        generation_backend("vllm", str(_wrapper(tmp_path, "no-vllm-python", str(tmp_path))))
    params = smoke_params.model_copy(update={"runtime": smoke_params.runtime.model_copy(
        update={"generation": "vllm", "vllm_python": str(python)})})
    assert uses_vllm(params)
    ckpt = model_checkpoint(smoke_params, "base", progress=False)
    tok, model = load_tokenizer(ckpt), load_model(ckpt)
    prompts = [[{"role": "user", "content": f"Say {i}."}] for i in range(3)]
    hf = generate_responses(model, tok, prompts, max_new_tokens=5, progress=False)
    assert generate_responses(None, tok, prompts, max_new_tokens=5, progress=False, vllm_checkpoint=ckpt,
                              vllm_python=generation.vllm_python_of(params)) == hf
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["wrapped"] for c in calls] == ["vllm-env-python"] and calls[0]["prompts"] == 3


def test_the_vllm_worker_imports_nothing_that_needs_the_projects_pins():
    """Under vLLM's own interpreter only the standard library and vLLM exist: the worker module
    (and what it imports of the project) must load without torch, transformers, numpy, yaml..."""
    import subprocess
    import sys

    code = ("import sys; import cft_helpers.vllm_worker; "
            "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) - {'__main__'}))")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1], env={"PYTHONPATH": str(Path(__file__).parents[1])})
    assert out.stdout.strip() == "['cft_helpers']", out.stdout


def test_the_way_out_never_says_pip_install_vllm_here(monkeypatch):
    """`pip install vllm` in the project's environment swaps its torch and transformers."""
    import sys

    monkeypatch.delitem(sys.modules, "vllm", raising=False)   # (an earlier test's in-process fake)
    with pytest.raises(RuntimeError) as err:
        generation_backend("vllm")
    assert "pip install vllm" not in str(err.value) and "runtime.vllm_python" in str(err.value)


# ---------------------------------------------------------------------------- scripts/check_vllm_env.py

def _check_vllm_env():
    import importlib.util

    path = Path(__file__).parents[1] / "scripts" / "check_vllm_env.py"
    spec = importlib.util.spec_from_file_location("check_vllm_env", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# requires_dist as PyPI lists it (shortened): torch pinned exactly, transformers capped, platform
# markers and extras that must not count
_VLLM_METADATA = {
    "0.33.0": ["torch==2.14.0", "transformers<5.21,>=5.10", "numpy", "tensorizer>=2.9; extra == 'tensorizer'"],
    "0.32.0": ["torch==2.13.0", "transformers>=5.10,<5.20", "xformers==0.0.40; platform_system == 'Linux'"],
    "0.31.0": ["torch==2.13.0; platform_machine == 'x86_64'", "torch==2.12.1; platform_machine == 'aarch64'",
               "transformers<5.18,>=5.0", "transformers>=5.2; python_version >= '3.11'"],
    "0.30.1": ["torch==2.13.0", "transformers>=5.0", "transformers<5.30; sys_platform == 'linux'",
               "transformers<5.1; extra == 'legacy'"],
}


def test_check_vllm_env_matches_pins_against_each_releases_requirements(tmp_path):
    from packaging.version import Version

    mod = _check_vllm_env()
    pins = mod.project_pins(Path(__file__).parents[1] / "pyproject.toml")
    assert set(pins) == {"torch", "transformers"} and pins["torch"] == Version("2.13.0")
    pins = {"torch": Version("2.13.0"), "transformers": Version("5.24.0")}
    linux = {"platform_machine": "x86_64", "platform_system": "Linux", "sys_platform": "linux",
             "python_version": "3.11"}
    verdict = {v: mod.fits(req, pins, linux)[0] for v, req in _VLLM_METADATA.items()}
    assert verdict == {"0.33.0": False,   # torch 2.14
                       "0.32.0": False,   # transformers < 5.20
                       "0.31.0": False,   # transformers < 5.18 (both lines hold on Python 3.11)
                       "0.30.1": True}    # < 5.30 on linux; the 'legacy' extra's cap does not count
    assert str(mod.requirement_of(_VLLM_METADATA["0.31.0"], "torch", {**linux, "platform_machine": "aarch64"})) \
        == "==2.12.1"
    assert mod.requirement_of(_VLLM_METADATA["0.33.0"], "peft") is None
    assert mod.fits(None, pins) == (True, {"torch": "(any)", "transformers": "(any)"})
    loose = tmp_path / "pyproject.toml"
    loose.write_text('[project]\ndependencies = ["torch>=2.13", "transformers==5.24.0"]\n')
    with pytest.raises(ValueError, match="not an exact pin"):
        mod.project_pins(loose)


def test_check_vllm_env_says_clearly_when_the_index_is_unreachable(capsys):
    mod = _check_vllm_env()
    assert mod.main(["--index", "http://127.0.0.1:9/pypi", "--timeout", "2"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the package index" in err and "network access" in err


def test_check_vllm_env_reads_the_index_and_says_whether_any_release_fits(tmp_path, capsys):
    """The whole command on a canned index (file:// URLs, laid out as PyPI's JSON API)."""
    mod = _check_vllm_env()
    index = tmp_path / "pypi"
    (index / "vllm").mkdir(parents=True)
    releases = {v: [{"filename": f"vllm-{v}.whl", "yanked": False}] for v in _VLLM_METADATA}
    releases["0.34.0rc1"] = [{"filename": "vllm-0.34.0rc1.whl", "yanked": False}]   # pre-release: skipped
    releases["0.29.0"] = [{"filename": "vllm-0.29.0.whl", "yanked": True}]           # yanked: skipped
    (index / "vllm" / "json").write_text(json.dumps({"info": {"version": "0.33.0",
                                                              "requires_dist": _VLLM_METADATA["0.33.0"]},
                                                     "releases": releases}))
    for v, reqs in _VLLM_METADATA.items():
        (index / "vllm" / v).mkdir()
        (index / "vllm" / v / "json").write_text(json.dumps({"info": {"version": v, "requires_dist": reqs}}))
    url = index.as_uri()
    assert mod.main(["--index", url, "--latest", "3"]) == 1            # 0.33.0, 0.32.0, 0.31.0: none fits
    out = capsys.readouterr().out
    assert "vllm 0.32.0" in out and "transformers <5.20,>=5.10" in out and "runtime.vllm_python" in out
    assert "rc1" not in out and "0.29.0" not in out
    assert mod.main(["--index", url, "--latest", "10"]) == 0           # 0.30.1 fits
    assert "pip install 'vllm==0.30.1' 'torch==2.13.0'" in capsys.readouterr().out
