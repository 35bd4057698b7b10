"""Greedy generation of assistant responses, batched, cached and resumable.

Used for generative replay (GR_5 / GR_10: the Phase-1 model answers English instructions) and,
later, generative evaluation. Prompts are chat messages; the model's chat template is applied
with the generation prompt. Batches are left-padded so every row continues from its own last
token; greedy decoding makes the output a function of the model and prompt alone.

    from cft_helpers.generation import generate_responses
    texts = generate_responses(model, tok, [[{"role": "user", "content": "Hi"}]], max_new_tokens=64)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence


def prompt_key(messages: Sequence[dict], max_new_tokens: int) -> str:
    data = json.dumps({"m": list(messages), "n": max_new_tokens}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:20]


def _read_cache(path: Path | None) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill mid-write: that prompt is generated again
        out[entry["key"]] = entry["response"]
    return out


def generate_responses(model, tok, prompts: Sequence[Sequence[dict]], *, max_new_tokens: int = 128,
                       batch_size: int = 8, cache_file: Path | str | None = None,
                       progress: bool = True, desc: str = "generating") -> list[str]:
    """Greedy responses to chat prompts, in order.

    With ``cache_file`` (JSONL), each finished batch is appended there, and prompts already in
    it are not generated again: an interrupted run resumes where it stopped.
    """
    import torch

    cache_path = Path(cache_file) if cache_file else None
    cache = _read_cache(cache_path)
    keys = [prompt_key(p, max_new_tokens) for p in prompts]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    pending = [i for k, i in first.items() if k not in cache]  # each distinct prompt once
    # Longest first: rows of similar length share a batch, less padding.
    texts = {i: tok.apply_chat_template(list(prompts[i]), tokenize=False, add_generation_prompt=True)
             for i in pending}
    pending.sort(key=lambda i: -len(texts[i]))
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
                                     pad_token_id=tok.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            lines = []
            for i, ids in zip(batch, new):
                response = tok.decode(ids, skip_special_tokens=True).strip()
                cache[keys[i]] = response
                lines.append(json.dumps({"key": keys[i], "response": response}, ensure_ascii=False))
            if cache_path is not None:
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                with cache_path.open("a+b") as f:
                    # a line torn by a kill has no newline: end it, or the next entry would be
                    # glued to it and lost too (appends go to the end whatever the seek)
                    end = f.seek(0, 2)
                    torn = end > 0 and f.seek(end - 1) >= 0 and f.read(1) != b"\n"
                    f.write((("\n" if torn else "") + "\n".join(lines) + "\n").encode("utf-8"))
    finally:
        tok.padding_side = side
        model.train(was_training)
    return [cache[k] for k in keys]
