"""MPD: ours (both checkpoints streamed piece by piece) against loading both models whole, and
against just reading both checkpoints from disk once (the floor).

    python -m benchmarks.bench_mpd

The two checkpoints are the default model and a perturbed copy of it (written once into
runs/benchmarks/), so that the benchmark needs no training.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import ROOT, default_model, emit, median_child


def perturbed_copy(ckpt: Path) -> Path:
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    out = ROOT / "runs" / "benchmarks" / "perturbed"
    if (out / "model.safetensors").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for f in ckpt.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, out / f.name)
    g = torch.Generator().manual_seed(0)
    tensors = {k: v + 1e-3 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in
               load_file(str(ckpt / "model.safetensors")).items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def part(name: str, a: str, b: str) -> None:
    t0 = time.perf_counter()
    if name == "ours":
        from cft_helpers.similarity import mpd

        value = mpd(a, b)["mpd"]
    elif name == "whole":  # both state dicts in memory, then the same mean of L2 norms
        import torch
        from safetensors.torch import load_file

        sa, sb = load_file(f"{a}/model.safetensors"), load_file(f"{b}/model.safetensors")
        names = sorted(sa)
        value = float(sum(torch.linalg.vector_norm(sa[n].double() - sb[n].double()) for n in names) / len(names))
    else:  # read both files once, no arithmetic: the floor any MPD must pay
        for f in (f"{a}/model.safetensors", f"{b}/model.safetensors"):
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass
        value = None
    emit({"mpd": value}, t0)


def run() -> dict:
    a = default_model()
    b = perturbed_copy(a)
    whole = median_child("benchmarks.bench_mpd", "whole", str(a), str(b))
    read = median_child("benchmarks.bench_mpd", "read", str(a), str(b))
    ours = median_child("benchmarks.bench_mpd", "ours", str(a), str(b))
    size_mb = sum(f.stat().st_size for f in (a / "model.safetensors", b / "model.safetensors")) / 2**20
    return {"goal": "MPD", "baseline": "both models loaded whole", "baseline_s": whole["wall_s"],
            "ours_s": ours["wall_s"], "read_only_s": read["wall_s"], "runs_s": {
                "baseline": whole["wall_s_runs"], "ours": ours["wall_s_runs"], "read": read["wall_s_runs"]}, "time_vs_read": ours["wall_s"] / read["wall_s"],
            "baseline_rss_mb": whole["peak_rss_mb"], "ours_rss_mb": ours["peak_rss_mb"],
            "read_only_rss_mb": read["peak_rss_mb"], "checkpoints_mb": size_mb,
            "same_result": abs(whole["mpd"] - ours["mpd"]) <= 1e-6 * abs(whole["mpd"]),
            "target": "peak memory bounded by a few tensors; time <= 1.5x reading both files",
            "met": ours["wall_s"] <= 1.5 * read["wall_s"] and ours["peak_rss_mb"] < whole["peak_rss_mb"] / 2}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--part")
    ap.add_argument("paths", nargs="*")
    ns = ap.parse_args()
    if ns.part:
        part(ns.part, *ns.paths)
    else:
        print(json.dumps(run(), indent=1))
