"""Representations (notebook 07, issue 17): every model's activations on the default params' text
sets, today's implementation (the baseline, kept verbatim below) against ours.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_representations [--models base p2_alpaca] [--repeats 3]

The workload is what notebook 07 computes on the default params: each of the 12 models and arms
(``needed_models``) on the 80 MT-Bench prompts with its chat template, and the start model also
on the parallel sentences (9 languages x 24, no template). The arms are read from the default run
store (``runs/default``, trained by notebooks 02-04); nothing there is written.

- ``baseline``: ``hidden_state_means`` as it was before issue 17 (verbatim copy below: the whole
  causal LM with its vocabulary projection, batches of ``representations.batch_size`` = 8
  length-sorted texts), driven as the notebook drove it: one model load per model and text set.
- ``ours``: ``representations.model_activations``, the notebook's call now (one load per model,
  the decoder stack only, the chat template's shared prefix run once, batches planned over the
  sorted lengths), writing its cache files into a scratch run store under runs/benchmarks/.

Each side runs in a fresh child process, ``--repeats`` times (median); wall time and the child's
CPU time are both reported (the CPU time is steadier on a shared machine). The two sides'
activations are compared layer by layer: the largest |difference| as a share of the layer's
largest |activation| (tolerance 1e-5, tests/test_representations.py). Results:
runs/benchmarks/representations.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks.common import ROOT, child, emit

OUT = ROOT / "runs" / "benchmarks" / "representations"
SOURCE_RUN = ROOT / "runs" / "default"
TOL = 1e-5


def old_hidden_state_means(model, tok, texts: Sequence[str], *, chat: bool, batch_size: int = 8,
                           max_length: int = 512, progress: bool = True, desc: str = "activations") -> np.ndarray:
    """``cft_helpers.representations.hidden_state_means`` before issue 17, verbatim (the baseline)."""
    import torch

    if chat:
        texts = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                         add_generation_prompt=True) for t in texts]
    enc = [tok(t, add_special_tokens=not chat, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))  # similar lengths: little padding
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: list[np.ndarray | None] = [None] * len(enc)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=desc, unit="batch")
    model.eval()
    with torch.no_grad():
        for idx in batches:
            width = max(len(enc[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, :len(enc[i])] = torch.tensor(enc[i])
                mask[row, :len(enc[i])] = 1
            hs = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                       output_hidden_states=True).hidden_states[1:]
            m = mask.to(device).unsqueeze(-1).float()
            # (layers, batch, hidden): masked mean over tokens, in float32 whatever the model's dtype
            means = torch.stack([(h.float() * m).sum(1) / m.sum(1) for h in hs])
            for row, i in enumerate(idx):
                out[i] = means[:, row].cpu().numpy()
    return np.stack(out).astype(np.float32)


def workload(models: Sequence[str] | None):
    """(default params, models, start models among them, prompts, parallel sentences)."""
    from cft_helpers.params import load_params
    from cft_helpers.representations import base_models, needed_models, parallel_sentences, prompt_texts

    params = load_params("default")
    names = list(models) if models else needed_models(params)
    starts = [m for m in base_models(params) if m in names]
    return params, names, starts, prompt_texts(params), parallel_sentences(params)


def scratch_store(params):
    """A run store under runs/benchmarks/ whose arms are the default run's (a link): ``ours``
    writes its caches there, never into runs/default."""
    import shutil

    from cft_helpers.params import load_params
    from cft_helpers.runs import RunStore

    root = OUT / "run"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / "arms").symlink_to((SOURCE_RUN / "arms").resolve(), target_is_directory=True)
    scratch = load_params("default", overrides={"run_dir": str(root)})
    return scratch, RunStore(root)


def part(side: str, models: Sequence[str]) -> None:
    import torch

    import cft_helpers.models as cm

    t0, c0 = time.perf_counter(), time.process_time()
    params, names, starts, prompts, sentences = workload(models)
    loads = {"n": 0, "s": 0.0}
    real_load = cm.load_model

    def timed_load(*a, **k):
        t = time.perf_counter()
        model = real_load(*a, **k)
        loads["n"] += 1
        loads["s"] += time.perf_counter() - t
        return model

    cm.load_model = timed_load
    torch.set_num_threads(1)
    result: dict = {"side": side}
    if side == "baseline":
        from cft_helpers.models import load_tokenizer, resolve_model
        from cft_helpers.runs import RunStore

        store = RunStore(SOURCE_RUN)
        parallel = [t for v in sentences.values() for t in v]
        on_prompts, on_parallel, sets_s = {}, {}, {"prompts": 0.0, "parallel": 0.0}
        jobs = [(n, "prompts", prompts, True) for n in names] + [(n, "parallel", parallel, False) for n in starts]
        for name, set_name, texts, chat in jobs:   # the notebook before issue 17: a load per model and set
            ckpt, _, template = resolve_model(params, name)
            tok = load_tokenizer(ckpt, chat_template=template)
            model = cm.load_model(ckpt, dtype="float32")
            t = time.perf_counter()
            acts = old_hidden_state_means(model, tok, texts, chat=chat, batch_size=params.representations.batch_size,
                                          max_length=params.representations.max_length, progress=False)
            sets_s[set_name] += time.perf_counter() - t
            (on_prompts if set_name == "prompts" else on_parallel)[name] = acts
            del model
        result["compute_s"] = sets_s
    else:
        from cft_helpers.representations import model_activations

        scratch, store = scratch_store(params)
        on_prompts, on_parallel = model_activations(scratch, names, prompts, sentences, starts, force=True,
                                                    progress=False)
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(OUT / f"{side}.npz", **{f"prompts/{k}": v for k, v in on_prompts.items()},
             **{f"parallel/{k}": v for k, v in on_parallel.items()})
    result.update(loads=loads["n"], load_s=loads["s"], cpu_s=time.process_time() - c0,
                  models=names, texts={"prompts": len(prompts), "parallel": sum(map(len, sentences.values()))})
    emit(result, t0)


def compare() -> dict:
    """Worst |ours - baseline| over every model and set, as a share of the layer's largest |value|."""
    with np.load(OUT / "baseline.npz") as a, np.load(OUT / "ours.npz") as b:
        assert sorted(a.files) == sorted(b.files), (a.files, b.files)
        worst, where = 0.0, None
        for k in a.files:
            x, y = a[k], b[k]
            assert x.shape == y.shape and y.dtype == np.float32
            scale = np.abs(x).max(axis=(0, 2), keepdims=True)
            w = float((np.abs(x - y) / scale).max())
            if w > worst:
                worst, where = w, k
        return {"arrays": len(a.files), "worst_share_of_layer_scale": worst, "worst_in": where}


def repeated(side: str, models: Sequence[str], repeats: int) -> dict:
    runs = [child("benchmarks.bench_representations", side, *models) for _ in range(repeats)]
    out = dict(runs[-1])
    for k in ("wall_s", "cpu_s", "peak_rss_mb", "load_s"):
        out[k] = statistics.median(r[k] for r in runs)
    out["wall_s_runs"] = [round(r["wall_s"], 2) for r in runs]
    out["cpu_s_runs"] = [round(r["cpu_s"], 2) for r in runs]
    return out


def run(models: Sequence[str] = (), repeats: int = 3) -> dict:
    import os
    import platform

    import torch

    import shutil

    base = repeated("baseline", models, repeats)
    ours = repeated("ours", models, repeats)
    same = compare()
    shutil.rmtree(OUT)   # the two sides' arrays and the scratch run store (~250 MB on the default)
    result = {"goal": "representations (07)",
              "baseline": "hidden_state_means before issue 17, a load per model and set",
              "models": base["models"], "texts": base["texts"], "repeats": repeats,
              "baseline_s": base["wall_s"], "ours_s": ours["wall_s"], "speedup": base["wall_s"] / ours["wall_s"],
              "baseline_cpu_s": base["cpu_s"], "ours_cpu_s": ours["cpu_s"],
              "speedup_cpu": base["cpu_s"] / ours["cpu_s"],
              "runs_s": {"baseline": base["wall_s_runs"], "ours": ours["wall_s_runs"]},
              "runs_cpu_s": {"baseline": base["cpu_s_runs"], "ours": ours["cpu_s_runs"]},
              "baseline_loads": base["loads"], "ours_loads": ours["loads"],
              "baseline_load_s": base["load_s"], "ours_load_s": ours["load_s"],
              "baseline_compute_s": base["compute_s"],
              "baseline_rss_mb": base["peak_rss_mb"], "ours_rss_mb": ours["peak_rss_mb"],
              **same, "same_result": same["worst_share_of_layer_scale"] <= TOL,
              "target": ">= 2x, activations equal to 1e-5 of each layer's scale",
              "met": base["wall_s"] / ours["wall_s"] >= 2 and same["worst_share_of_layer_scale"] <= TOL,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, 1 thread"}
    rows = [("side", "wall s (median)", "cpu s (median)", "loads", "load s", "runs wall s"),
            ("baseline", f"{base['wall_s']:.1f}", f"{base['cpu_s']:.1f}", base["loads"], f"{base['load_s']:.1f}",
             base["wall_s_runs"]),
            ("ours", f"{ours['wall_s']:.1f}", f"{ours['cpu_s']:.1f}", ours["loads"], f"{ours['load_s']:.1f}",
             ours["wall_s_runs"])]
    for r in rows:
        print(f"{r[0]:10s} {r[1]:>16s} {r[2]:>15s} {str(r[3]):>6s} {r[4]:>7s}  {r[5]}")
    print(f"speedup: {result['speedup']:.2f}x wall, {result['speedup_cpu']:.2f}x CPU; baseline compute per set "
          f"{ {k: round(v, 1) for k, v in base['compute_s'].items()} }; worst difference "
          f"{same['worst_share_of_layer_scale']:.1e} of the layer's scale ({same['worst_in']}); same result: "
          f"{result['same_result']}")
    out = ROOT / "runs" / "benchmarks" / "representations.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--part")
    ap.add_argument("--models", nargs="*", default=[])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("names", nargs="*")
    ns = ap.parse_args()
    if ns.part:
        part(ns.part, ns.names)
    else:
        run(ns.models, ns.repeats)
