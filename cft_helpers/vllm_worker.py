"""Greedy generation with vLLM in a process of its own (started by ``generation.generate_responses``).

    python -m cft_helpers.vllm_worker --checkpoint CKPT --requests REQ.jsonl --out CACHE.jsonl \\
        --max-new-tokens 256 --seed 0

``REQ.jsonl`` holds ``{"key", "prompt_token_ids"}`` per line (prompts already rendered with the
model's chat template by the caller); the responses are appended to ``CACHE.jsonl`` in the
generation cache's format, in chunks, so a killed run keeps what it finished. Requests whose key
is already in the cache are skipped. ``--stop-token-ids`` (comma-separated) end an answer
besides the checkpoint's eos: the chat template's end-of-turn token.

It may run under another interpreter than the project's (``runtime.vllm_python``: vLLM's own
environment, with its own torch and transformers): it imports only the standard library,
``cft_helpers.generation`` (standard library only at module level) and vLLM (and tqdm, a
dependency of vLLM). ``tests/test_generation.py`` checks that.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from cft_helpers.generation import append_cache, read_cache

CHUNK = 256  # prompts per vLLM call between two cache appends


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--requests", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-new-tokens", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    ap.add_argument("--trust-remote-code", action="store_true")
    ap.add_argument("--desc", default="generating")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--stop-token-ids", default="", help="comma-separated token ids that end an answer")
    ns = ap.parse_args(argv)

    from vllm import LLM, SamplingParams

    out = Path(ns.out)
    done = read_cache(out)
    requests = [json.loads(line) for line in Path(ns.requests).read_text().splitlines() if line.strip()]
    requests = [r for r in requests if r["key"] not in done]
    if not requests:
        return 0
    longest = max(len(r["prompt_token_ids"]) for r in requests) + ns.max_new_tokens
    # never above the model's own window (vLLM refuses to start then); a prompt too long for it
    # fails in vLLM with the prompt's length
    window = json.loads((Path(ns.checkpoint) / "config.json").read_text()).get("max_position_embeddings")
    if window:
        longest = min(longest, int(window))
    llm = LLM(model=ns.checkpoint, tokenizer=ns.checkpoint, dtype=ns.dtype, seed=ns.seed,
              trust_remote_code=ns.trust_remote_code, gpu_memory_utilization=ns.gpu_memory_utilization,
              max_model_len=longest)
    stops = [int(x) for x in ns.stop_token_ids.split(",") if x.strip()]
    greedy = SamplingParams(temperature=0.0, max_tokens=ns.max_new_tokens, skip_special_tokens=True,
                            **({"stop_token_ids": stops} if stops else {}))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(requests), desc=f"{ns.desc} (vLLM)", unit="prompt", disable=ns.no_progress)
    for s in range(0, len(requests), CHUNK):
        chunk = requests[s:s + CHUNK]
        outputs = llm.generate([{"prompt_token_ids": r["prompt_token_ids"]} for r in chunk], greedy,
                               use_tqdm=False)
        append_cache(out, [(r["key"], o.outputs[0].text.strip()) for r, o in zip(chunk, outputs)])
        bar.update(len(chunk))
    bar.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
