"""Greedy generation of assistant responses, batched, cached and resumable.

Used for generative replay (GR_5 / GR_10: the Phase-1 model answers English instructions) and,
later, generative evaluation. Prompts are chat messages; the model's chat template is applied
with the generation prompt. Batches are left-padded so every row continues from its own last
token; greedy decoding makes the output a function of the model and prompt alone.

With ``vllm_checkpoint`` the pending prompts go to vLLM instead (``runtime.generation``:
``auto`` uses it where it is installed and a CUDA GPU is present). vLLM runs in a child
process (``python -m cft_helpers.vllm_worker``) so that its GPU memory is all returned when it
exits and its own process group never meets an ``accelerate launch`` one. It gets the same
token ids (our chat template, rendered here) and writes cache lines of the same format. vLLM
runs the checkpoint in its own dtype (bf16 for most), HF here in fp32: greedy answers can
differ, so the engine is part of each cache key and of the input hash of a GR arm.

vLLM pins its own torch and transformers, which differ from the project's: it can live in an
environment of its own (``runtime.vllm_python``: that environment's interpreter). The worker
then runs under that interpreter with the project's source on ``PYTHONPATH``; it imports only
the standard library, this module (which imports nothing heavy at module level) and vLLM.

An answer ends at the tokenizer's end-of-sequence token or at the chat template's end-of-turn
token (:func:`stop_token_ids`: Llama-3's ``<|eot_id|>``, which is not its eos), in every engine.

    from cft_helpers.generation import generate_responses
    texts = generate_responses(model, tok, [[{"role": "user", "content": "Hi"}]], max_new_tokens=64)
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Sequence


def prompt_key(messages: Sequence[dict], max_new_tokens: int, engine: str = "hf",
               end_of_turn: Sequence[int] = (), model: str | None = None) -> str:
    """Cache key of one prompt. The engine is part of it (vLLM runs checkpoints in bf16 where HF
    runs them in fp32: their answers may differ), absent for HF so older caches stay valid; so is
    the chat template's end-of-turn token where it is not eos (:func:`end_of_turn_ids`: answers
    stop there since it counts, so those cached before ran on), absent otherwise; and ``model``,
    the identity of the model that answers, where a cache may see several (GR replay's, whose
    folder outlives a retrained start model). (GR replay computes these keys itself for its
    shards: keep them in step.)"""
    spec = {"m": list(messages), "n": max_new_tokens, **({"engine": engine} if engine != "hf" else {}),
            **({"eot": list(end_of_turn)} if end_of_turn else {}), **({"model": model} if model else {})}
    data = json.dumps(spec, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:20]


def model_identity(model=None, checkpoint: Path | str | None = None) -> str:
    """A short identity of the weights that answer, for generation cache keys, when the caller
    has none better (the training core passes the start model's identity hash): a loaded
    ``model``'s every parameter (sum, sum of squares, shape), or a safetensors ``checkpoint``
    folder's files (name, size, first and last MiB: two trainings of one architecture share
    the header but not the tensors)."""
    digest = hashlib.sha256()
    if model is not None:
        import torch

        with torch.no_grad():
            for name, p in model.named_parameters():
                t = p.detach().double()
                digest.update(f"{name}{tuple(p.shape)}{float(t.sum())!r}{float((t * t).sum())!r}".encode())
    elif checkpoint is not None:
        for f in sorted(Path(checkpoint).glob("*.safetensors")):
            size = f.stat().st_size
            with f.open("rb") as fh:
                head = fh.read(1 << 20)
                fh.seek(max(0, size - (1 << 20)))
                digest.update(f.name.encode() + str(size).encode() + head + fh.read())
    else:
        raise ValueError("model_identity needs a model or a checkpoint folder")
    return digest.hexdigest()[:16]


def read_cache(path: Path | None) -> dict[str, str]:
    """Key -> response of a generation cache (JSONL); torn lines are skipped."""
    if path is None or not path.exists():
        return {}
    out = {}
    # split on "\n" only: splitlines() also splits on U+2028 / U+0085, which a response may hold
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill mid-write: that prompt is generated again
        out[entry["key"]] = entry["response"]
    return out


_MARKER = "cft-end-of-turn-probe"


def end_of_turn_ids(tok) -> list[int]:
    """The special token that ends an assistant turn in ``tok``'s chat template, when it is not
    the tokenizer's eos (``[]`` otherwise, or when the template ends turns with plain text).

    Found by rendering a one-turn conversation and reading what follows the assistant's text:
    Llama-3 gives ``<|eot_id|>``, Gemma ``<end_of_turn>``; ChatML templates whose eos is
    ``<|im_end|>`` (SmolLM2, Qwen) and Mistral's ``</s>`` give nothing new."""
    if not getattr(tok, "chat_template", None):
        return []
    try:
        text = tok.apply_chat_template([{"role": "user", "content": "Hi"},
                                        {"role": "assistant", "content": _MARKER}], tokenize=False)
    except Exception:  # a template that refuses this shape (e.g. it needs a system turn): no extra stop
        return []
    if not isinstance(text, str) or _MARKER not in text:
        return []
    after = text[text.rindex(_MARKER) + len(_MARKER):]
    specials = {t: i for t, i in tok.get_added_vocab().items()} if hasattr(tok, "get_added_vocab") else {}
    special_ids = set(getattr(tok, "all_special_ids", []))
    found = None
    for t, i in sorted(specials.items(), key=lambda kv: -len(kv[0])):  # longest match first
        if t and after.lstrip(" ").startswith(t):
            found = i
            break
    if found is None and after.strip():
        ids = tok(after, add_special_tokens=False)["input_ids"]
        if ids and ids[0] in special_ids:
            found = ids[0]
    eos = {i for i in _as_list(getattr(tok, "eos_token_id", None))}
    return [] if found is None or found in eos else [int(found)]


def _as_list(ids) -> list[int]:
    if ids is None:
        return []
    return [int(i) for i in ids] if isinstance(ids, (list, tuple)) else [int(ids)]


def stop_token_ids(tok, model=None) -> list[int]:
    """Token ids that end an answer: the tokenizer's eos, the model's generation-config eos
    (e.g. Llama-3-Instruct lists ``<|eot_id|>`` there) and the chat template's end-of-turn
    token (:func:`end_of_turn_ids`: a base model given Llama-3's template lists none). eos first."""
    config = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    out: list[int] = []
    for i in [*_as_list(getattr(tok, "eos_token_id", None)), *_as_list(config), *end_of_turn_ids(tok)]:
        if i not in out:
            out.append(i)
    return out


def vllm_available(vllm_python: str | None = None) -> bool:
    """Whether vLLM can run: in ``vllm_python`` (an interpreter of its own environment, checked
    to exist and to import vllm: a clear error otherwise) or installed beside this package."""
    if not vllm_python:
        import importlib.util

        return importlib.util.find_spec("vllm") is not None
    return _check_vllm_python(str(vllm_python))


@functools.lru_cache(maxsize=8)
def _check_vllm_python(path: str) -> bool:
    import os
    import subprocess

    exe = Path(path).expanduser()
    if not exe.is_file() or not os.access(exe, os.X_OK):
        raise RuntimeError(f"runtime.vllm_python {path!r} is not an executable file; point it at the python "
                           "of the environment where vLLM is installed (docs/CLUSTER.md, \"vLLM in its own environment\")")
    probe = subprocess.run([str(exe), "-c", "import importlib.util, sys; "
                                            "sys.exit(0 if importlib.util.find_spec('vllm') else 3)"],
                           capture_output=True, text=True, env=_worker_env(os.environ, str(exe)))
    if probe.returncode != 0:
        raise RuntimeError(f"runtime.vllm_python {path!r} cannot import vllm (exit {probe.returncode}"
                           f"{': ' + probe.stderr.strip()[-300:] if probe.stderr.strip() else ''}); install "
                           "vLLM in that environment (docs/CLUSTER.md, \"vLLM in its own environment\")")
    return True


def generation_backend(requested: str, vllm_python: str | None = None) -> str:
    """'hf' or 'vllm' for ``runtime.generation``: ``auto`` is vLLM where it can run (installed
    here, or ``vllm_python`` set) and a CUDA GPU is present, else HF; ``vllm`` asked for where
    it cannot run is an error."""
    if requested == "hf":
        return "hf"
    have = vllm_available(vllm_python)
    if requested == "vllm":
        if not have:
            # never `pip install vllm` into this environment: it replaces the project's torch and
            # transformers with the ones vLLM pins (docs/CLUSTER.md, "vLLM in its own environment")
            raise RuntimeError("runtime.generation is 'vllm' but vllm is not installed; install it in an "
                               "environment of its own and set runtime.vllm_python to that environment's "
                               "python (docs/CLUSTER.md, \"vLLM in its own environment\"); 'auto' falls back to HF")
        return "vllm"
    import torch

    return "vllm" if have and torch.cuda.is_available() else "hf"


def vllm_python_of(params) -> str | None:
    """``runtime.vllm_python`` resolved against the project root (None: unset)."""
    python = getattr(params.runtime, "vllm_python", None)
    return str(params.path(python)) if python else None


def uses_vllm(params) -> bool:
    """Whether these params' free-text generation runs on vLLM (``runtime.generation``, with
    ``runtime.vllm_python``)."""
    return generation_backend(params.runtime.generation, vllm_python_of(params)) == "vllm"


def append_cache(path: Path, entries: Sequence[tuple[str, str]]) -> None:
    """Append (key, response) lines to a generation cache, mending a line torn by a kill."""
    lines = [json.dumps({"key": k, "response": r}, ensure_ascii=False) for k, r in entries]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as f:
        # a line torn by a kill has no newline: end it, or the next entry would be glued to it
        # and lost too (appends go to the end whatever the seek)
        end = f.seek(0, 2)
        torn = end > 0 and f.seek(end - 1) >= 0 and f.read(1) != b"\n"
        f.write((("\n" if torn else "") + "\n".join(lines) + "\n").encode("utf-8"))


def generate_responses(model, tok, prompts: Sequence[Sequence[dict]], *, max_new_tokens: int = 128,
                       batch_size: int = 8, cache_file: Path | str | None = None,
                       progress: bool = True, desc: str = "generating",
                       vllm_checkpoint: Path | str | None = None, seed: int = 0,
                       trust_remote_code: bool = False, vllm_python: str | None = None,
                       model_id: str | None = None) -> list[str]:
    """Greedy responses to chat prompts, in order.

    With ``cache_file`` (JSONL), each finished batch is appended there, and prompts already in
    it are not generated again: an interrupted run resumes where it stopped. With
    ``vllm_checkpoint`` (the folder ``model`` was loaded from; ``model`` may then be None), vLLM
    generates the pending prompts in a child process, under ``vllm_python`` (default: this
    interpreter; callers pass ``vllm_python_of(params)``).

    Every answer stops at :func:`stop_token_ids` (eos and the chat template's end of turn).
    ``model_id`` (:func:`model_identity`) goes into the cache keys: a cache file shared by
    several models then never hands one model's answers to another.
    """
    cache_path = Path(cache_file) if cache_file else None
    cache = read_cache(cache_path)
    stops = stop_token_ids(tok, model)
    eot = end_of_turn_ids(tok)
    keys = [prompt_key(p, max_new_tokens, "vllm" if vllm_checkpoint is not None else "hf", eot, model_id)
            for p in prompts]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    pending = [i for k, i in first.items() if k not in cache]  # each distinct prompt once
    # Longest first: rows of similar length share a batch, less padding.
    texts = {i: tok.apply_chat_template(list(prompts[i]), tokenize=False, add_generation_prompt=True)
             for i in pending}
    pending.sort(key=lambda i: -len(texts[i]))
    if vllm_checkpoint is not None:
        if pending:
            cache.update(_vllm_generate(Path(vllm_checkpoint), tok, [(keys[i], texts[i]) for i in pending],
                                        max_new_tokens, cache_path, seed, trust_remote_code, desc, progress,
                                        stop_ids=stops, vllm_python=vllm_python))
        return [cache[k] for k in keys]
    import torch

    batches = [pending[s:s + batch_size] for s in range(0, len(pending), batch_size)]
    it = batches
    if progress and batches:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc=desc, unit="batch")
    side, tok.padding_side = tok.padding_side, "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    was_training = model.training
    model.eval()
    try:
        for batch in it:
            enc = tok([texts[i] for i in batch], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id, eos_token_id=stops or None)
            new = out[:, enc["input_ids"].shape[1]:]
            entries = []
            for i, ids in zip(batch, new):
                response = tok.decode(ids, skip_special_tokens=True).strip()
                cache[keys[i]] = response
                entries.append((keys[i], response))
            if cache_path is not None:
                append_cache(cache_path, entries)
    finally:
        tok.padding_side = side
        model.train(was_training)
    return [cache[k] for k in keys]


_LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                  "ROLE_RANK", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _worker_env(env, vllm_python: str | None = None) -> dict[str, str]:
    """The vLLM worker's environment: without the launcher's process-group variables (it is one
    process of its own, never a rank of the training job), and under ``accelerate launch`` on
    this process's own GPU only. Under another interpreter (``vllm_python``), the project's
    source comes first on its ``PYTHONPATH`` and this virtual environment is left out of it."""
    out = {k: v for k, v in env.items() if k not in _LAUNCHER_VARS and not k.startswith("TORCHELASTIC_")}
    if vllm_python:
        import os

        source = str(Path(__file__).resolve().parent.parent)  # the folder that holds cft_helpers/
        out["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
        out.pop("VIRTUAL_ENV", None)  # (activation of this venv must not leak into the other one)
        out.pop("PYTHONHOME", None)
    local = env.get("LOCAL_RANK")
    if local is not None:
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        out["CUDA_VISIBLE_DEVICES"] = visible[int(local)] if int(local) < len(visible) else local
    return out


def _vllm_memory_share(default: float = 0.85) -> float:
    """The share of the GPU the vLLM worker may take: vLLM refuses to start when less than that
    is free, and this process may hold memory (a model trained or evaluated before): return
    the cached blocks first, then ask for at most 90% of what is free."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return default
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    return max(0.05, min(default, 0.9 * free / total))


def _vllm_generate(checkpoint: Path, tok, requests: Sequence[tuple[str, str]], max_new_tokens: int,
                   cache_path: Path | None, seed: int, trust_remote_code: bool, desc: str,
                   progress: bool = True, stop_ids: Sequence[int] = (),
                   vllm_python: str | None = None) -> dict[str, str]:
    """Run ``cft_helpers.vllm_worker`` on (key, rendered prompt) pairs; returns key -> response.
    The prompts go as token ids, tokenized here exactly as the HF path does; ``stop_ids`` end
    an answer as they end HF's. ``vllm_python``: the worker's interpreter (default: this one)."""
    import os
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cft-vllm-") as td:
        req = Path(td) / "requests.jsonl"
        out = cache_path or Path(td) / "responses.jsonl"
        with req.open("w", encoding="utf-8") as f:
            for key, text in requests:
                ids = tok(text, add_special_tokens=False)["input_ids"]
                f.write(json.dumps({"key": key, "prompt_token_ids": ids}) + "\n")
        if vllm_python:
            vllm_available(vllm_python)  # a clear error for a wrong path, before the worker starts
        python = str(Path(vllm_python).expanduser()) if vllm_python else sys.executable
        cmd = [python, "-m", "cft_helpers.vllm_worker", "--checkpoint", str(checkpoint),
               "--requests", str(req), "--out", str(out), "--max-new-tokens", str(max_new_tokens),
               "--seed", str(seed), "--desc", desc, "--gpu-memory-utilization", f"{_vllm_memory_share():.3f}"]
        cmd += (["--trust-remote-code"] if trust_remote_code else []) + ([] if progress else ["--no-progress"])
        cmd += ["--stop-token-ids", ",".join(str(i) for i in stop_ids)] if stop_ids else []
        proc = subprocess.run(cmd, env=_worker_env(os.environ, vllm_python))
        if proc.returncode != 0:
            raise RuntimeError(f"vLLM generation ({desc}) failed: `{' '.join(cmd)}` exited with "
                               f"{proc.returncode}; its output is above. runtime.generation: hf avoids vLLM")
        got = read_cache(out)
    missing = [k for k, _ in requests if k not in got]
    if missing:
        raise RuntimeError(f"vLLM generation ({desc}) returned no response for {len(missing)} prompts")
    return {k: got[k] for k, _ in requests}
