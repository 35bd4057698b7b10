"""Spectrum scan: ours (tensors streamed from safetensors, one at a time) against the upstream
method (the whole model loaded in float32, one svdvals per matrix), on the default model.

    python -m benchmarks.bench_spectrum

Both compute the same score function; the selection (top 50% per module type) must be equal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

from benchmarks.common import default_model, emit, median_child


def _digest(selected: dict) -> str:
    return hashlib.sha256(json.dumps(selected, sort_keys=True).encode()).hexdigest()[:16]


def part(name: str, ckpt: str) -> None:
    from cft_helpers import spectrum

    t0 = time.perf_counter()
    if name == "ours":
        scores = spectrum.scan(ckpt, progress=False)
    else:  # upstream: the model whole in memory, float32
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
        scores = {}
        for n, p in model.named_parameters():
            kind = spectrum.module_type(n)
            if kind and spectrum.type_matches(kind, spectrum.DEFAULT_TYPES):
                scores[n[: -len(".weight")]] = {"snr": spectrum.snr_score(p), "type": kind}
    selected = spectrum.select(scores, 50)
    emit({"matrices": len(scores), "selection": _digest(selected)}, t0)


def run() -> dict:
    ckpt = str(default_model())
    base = median_child("benchmarks.bench_spectrum", "upstream", ckpt)
    ours = median_child("benchmarks.bench_spectrum", "ours", ckpt)
    return {"goal": "Spectrum scan", "baseline": "upstream: whole model fp32 + svdvals per matrix",
            "baseline_s": base["wall_s"], "ours_s": ours["wall_s"], "baseline_runs_s": base["wall_s_runs"],
            "ours_runs_s": ours["wall_s_runs"], "speedup": base["wall_s"] / ours["wall_s"],
            "baseline_rss_mb": base["peak_rss_mb"], "ours_rss_mb": ours["peak_rss_mb"],
            "memory_ratio": ours["peak_rss_mb"] / base["peak_rss_mb"],
            "same_result": base["selection"] == ours["selection"], "target": ">= 3x faster, <= 1/3 memory",
            "met": base["wall_s"] / ours["wall_s"] >= 3 and ours["peak_rss_mb"] <= base["peak_rss_mb"] / 3}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--part")
    ap.add_argument("ckpt", nargs="?")
    ns = ap.parse_args()
    if ns.part:
        part(ns.part, ns.ckpt)
    else:
        print(json.dumps(run(), indent=1))
