"""Batched greedy generation (replay, generative evaluation): resumes from its cache after a kill."""

from __future__ import annotations

from cft_helpers.generation import generate_responses
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
