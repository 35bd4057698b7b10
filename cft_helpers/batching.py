"""Batching shared by the engines that run many short texts through a model on a CPU (the
evaluation engine, ``evaluation/shared_prefix.py``, and the activations, ``representations.py``):
a prefix the texts share runs once, and the rest runs in batches of similar length."""

from __future__ import annotations

from typing import Sequence

# A forward pass costs about this many tokens' worth of compute before its first token: it reads
# every weight (~0.05 s for SmolLM2-135M on one CPU thread, where a token costs ~1/550 s).
PASS_COST = 32


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the prefix every sequence shares, capped one short of the shortest so that
    every sequence keeps at least one token of its own."""
    if not seqs:
        return 0
    cap, first = min(len(s) for s in seqs) - 1, seqs[0]
    n = 0
    while n < cap and all(s[n] == first[n] for s in seqs[1:]):
        n += 1
    return n


def plan_batches(lengths: Sequence[int], max_tokens: int, overhead: int | None = None) -> list[list[int]]:
    """Indices of ``lengths`` in batches: sorted by length, cut where the padded tokens
    (rows x the longest row) plus ``overhead`` per batch are fewest overall, no batch above
    ``max_tokens`` padded tokens (a longer row than that runs alone). Exact dynamic programme
    over the sorted order (contiguous runs of it are the only batches worth considering)."""
    overhead = PASS_COST if overhead is None else overhead
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    srt = [lengths[i] for i in order]
    n = len(srt)
    best = [0.0] + [float("inf")] * n       # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        width = srt[j - 1]                   # the longest row of any batch ending at j
        rows_max = max(1, max_tokens // max(width, 1))
        for i in range(max(0, j - rows_max), j):
            c = best[i] + (j - i) * width + overhead
            if c < best[j]:
                best[j], cut[j] = c, i
    batches, j = [], n
    while j > 0:
        batches.append(order[cut[j]:j])
        j = cut[j]
    return batches[::-1]


