"""Generation: our batched greedy generation against one prompt at a time with HF generate, on
the default model and English instructions of the built-in data (replay's workload).

    python -m benchmarks.bench_generation [--n 48] [--batch-size 48] [--max-new-tokens 48]

Outputs must be identical (greedy decoding; left padding keeps each row's continuation).
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.common import default_model


def prompts(n: int) -> list[list[dict]]:
    from cft_helpers.data.generator import generate
    from cft_helpers.data.schema import to_messages

    rows = generate("general", ["en"], n, split="heldout", seed=0)
    return [to_messages(r, "alpaca")[:-1] for r in rows]


def run(n: int = 48, batch_size: int = 48, max_new_tokens: int = 48) -> dict:
    import torch

    from cft_helpers.generation import generate_responses
    from cft_helpers.models import load_model, load_tokenizer

    ckpt = default_model()
    tok, model = load_tokenizer(ckpt), load_model(ckpt)
    ps = prompts(n)
    t0 = time.perf_counter()
    single = []
    for p in ps:  # the baseline: one prompt per generate call, no padding at all
        enc = tok(tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True), return_tensors="pt",
                  add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        single.append(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    single_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = generate_responses(model, tok, ps, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False)
    batched_s = time.perf_counter() - t0
    same = sum(a == b for a, b in zip(single, batched))
    return {"goal": "generation", "baseline": "HF generate, one prompt at a time", "items": n, "batch_size": batch_size,
            "baseline_items_per_s": n / single_s, "ours_items_per_s": n / batched_s, "speedup": single_s / batched_s,
            "identical_outputs": f"{same}/{n}", "same_result": same == n, "target": ">= 5x items/s, identical outputs",
            "met": single_s / batched_s >= 5 and same == n}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ns = ap.parse_args()
    print(json.dumps(run(ns.n, ns.batch_size, ns.max_new_tokens), indent=1))
