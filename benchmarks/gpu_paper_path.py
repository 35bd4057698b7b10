"""GPU check of the paper's path end to end: Phase 1, three Phase-2 mitigations, evaluation.

    python -m benchmarks.gpu_paper_path [--out PATH] [--run-dir DIR] [--steps N]   # one CUDA GPU
    python -m benchmarks.gpu_paper_path --tiny --out x.json                        # CPU, < 60 s

On one GPU, a ~1.1B-parameter random-init Llama (gpu_train_check's "1b" size, 4096-token BPE
trained on the built-in data) goes through the notebooks' own calls, in bf16 (``training.
precision: auto``):

1. ``setup``: data preparation and the random-init base model;
2. ``p1``: Phase 1 on the built-in English set (``train_arm``);
3. ``gr_5``, ``lora``, ``spectrum``: Phase-2 mitigation arms from the Phase-1 model on the
   built-in multilingual set; GR_5 generates its replay with vLLM where ``runtime.generation:
   auto`` finds it (installed, with a GPU), else with HF ``generate``: the JSON says which;
4. ``eval_p1``, ``eval_lora``: ``evaluate_model`` of the Phase-1 model and the merged LoRA
   model on a small offline suite (the default suite's stand-ins, a few items each).

Per stage: wall seconds and peak GPU memory (``torch.cuda.max_memory_allocated``, reset at the
start of each stage; vLLM runs in a child process and is not counted). Checks, each a bool with
the numbers behind it: held-out loss down per arm; Spectrum's frozen tensors bit-identical to
the Phase-1 checkpoint (and its trainable ones changed); the merged LoRA checkpoint differing
from the Phase-1 one in exactly the adapted modules' weights; GR_5's replay rows as many as
5% of the Phase-2 rows (rounded half up, at least 1), with no empty response; evaluation scores
finite, and the evaluated model's dtype (seen on the model lm-eval ran, and the record's own
field where it has one) bf16 on a GPU, fp32 on a CPU. Prints a summary and exits 1 when a check
fails, 2 when it cannot run (no CUDA without ``--tiny``, a package missing).

``--tiny``: params/smoke.yaml's 2-layer model, a few steps, fp32, one CPU thread; the same
stages and checks (tests/test_gpu_paper_path.py). Everything runs in a temporary run dir
(removed at the end) or ``--run-dir`` (kept); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.paper_path_setup import ARMS, ROOT, adapted_weights, build_params, saved_dtype, tensor_shapes, unchanged

EVALUATED = ("p1", "lora")
STAGES = ("setup", "p1", *ARMS, *(f"eval_{m}" for m in EVALUATED))
# What the stages import, some only deep inside a stage (lm-eval's request classes, the ROUGE
# scorer): imported before anything runs, so that a package missing on a GPU machine's image
# costs seconds, not the minutes of the stages before it.
PREFLIGHT = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "safetensors", "tokenizers",
             "lm_eval", "lm_eval.tasks", "lm_eval.models.huggingface", "rouge_score.rouge_scorer",
             "cft_helpers.train", "cft_helpers.data", "cft_helpers.evaluation.harness",
             "cft_helpers.evaluation.shared_prefix", "cft_helpers.evaluation.scoring")


def gpu_slug(name: str) -> str:
    """'NVIDIA H200' -> 'h200' (benchmarks/results/ names, as gpu_train_check_h100.json)."""
    for known in ("H200", "H100", "A100", "L40S", "L4", "A10G", "B200"):
        if known in name:
            return known.lower()
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


class Stages:
    """Wall time and peak GPU memory of each stage, printed as it ends."""

    def __init__(self, cuda: bool):
        self.cuda, self.record = cuda, {}

    def run(self, name: str, fn):
        import gc

        import torch

        held = None
        if self.cuda:
            gc.collect()  # a finished stage's trainer (reference cycles) must not count in the next
            torch.cuda.empty_cache()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            held = round(torch.cuda.memory_allocated() / 2**30, 3)
        print(f"[{name}] ...", flush=True)
        t0 = time.perf_counter()
        try:
            out = fn()
        except BaseException:
            self.record[name] = {"wall_s": round(time.perf_counter() - t0, 2), "failed": True}
            raise
        if self.cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        peak = round(torch.cuda.max_memory_allocated() / 2**30, 3) if self.cuda else None
        self.record[name] = {"wall_s": round(wall, 2), "peak_gpu_mem_gib": peak, "gpu_mem_at_start_gib": held}
        print(f"[{name}] done in {wall:.1f} s" + (f", peak GPU memory {peak:.2f} GiB" if self.cuda else ""),
              flush=True)
        return out


def preflight() -> list[str]:
    """'module: error' for each module of PREFLIGHT that does not import."""
    failed = []
    for name in PREFLIGHT:
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or a version clash raised while importing
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    return failed


def recorder(ns, out: dict):
    """(save, check): ``save()`` writes ``out`` to ``ns.out`` (after every stage: a run stopped
    half-way still leaves its numbers); ``check(name, ok, **numbers)`` records one check."""
    checks = out.setdefault("checks", {})

    def save():
        out["ok"] = bool(checks) and all(c["ok"] for c in checks.values())
        Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.out).write_text(json.dumps(out, indent=2, default=str))

    def check(name: str, ok: bool, **numbers):
        checks[name] = {"ok": bool(ok), **numbers}
        print(f"  {'PASS' if ok else 'FAIL'} {name}", flush=True)

    return save, check


def run_check(ns, out: dict) -> None:
    """The stages and their checks, filling ``out`` (written to ``ns.out`` after each stage)."""
    import torch
    import transformers

    from cft_helpers.data import prepare_datasets
    from cft_helpers.data.prepare import load_prepared
    from cft_helpers.evaluation import harness
    from cft_helpers.generation import generation_backend
    from cft_helpers.models import model_checkpoint
    from cft_helpers.params import Evaluation, load_params
    from cft_helpers.replay import replay_count
    from cft_helpers.files import read_json
    from cft_helpers.train import train_arm

    cuda = not ns.tiny
    root = Path(ns.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    has_eval_dtype = "dtype" in Evaluation.model_fields
    p = load_params(build_params(root, ns.tiny, ns.steps, ns.p1_steps, has_eval_dtype))
    store = p.store
    stages = Stages(cuda)
    want_precision, want_eval = ("fp32", "float32") if ns.tiny else ("bf16", "bfloat16")
    out.update({
        "mode": "tiny-cpu" if ns.tiny else "gpu", "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": torch.version.cuda if cuda else None, "run_dir": str(root),
        "disk_free_gib_at_start": round(shutil.disk_usage(root).free / 2**30, 1),
        "steps": ns.steps, "p1_steps": ns.p1_steps, "expected_precision": want_precision,
        "evaluation_dtype_setting": p.evaluation.dtype if has_eval_dtype
        else "absent: Evaluation (params.py) has no dtype field",
        "stages": stages.record, "arms": {}, "evaluation": {}, "checks": {}})
    save, check = recorder(ns, out)

    def setup():
        prepare_datasets(p, progress=False)
        base = model_checkpoint(p, "base", progress=False)
        out["model_params"] = sum(math.prod(shape) for shape in tensor_shapes(base).values())
    stages.run("setup", setup)
    print(f"  model: {out['model_params'] / 1e6:.1f}M parameters", flush=True)
    save()

    engine = generation_backend(p.runtime.generation)
    out["generation_engine"] = engine  # what runtime.generation 'auto' chose for GR_5
    for arm in ("p1", *ARMS):
        m = stages.run(arm, lambda arm=arm: train_arm(p, arm, progress=False))
        ckpt = store.arm_checkpoint(arm)
        a = out["arms"][arm] = {
            "strategy": p.arms[arm].strategy, "precision": "bf16" if m["bf16"] else "fp32",
            "saved_dtype": saved_dtype(ckpt), "steps": m["steps"], "rows": m["examples"],
            "trainable_params": m["trainable_params"], "total_params": m["total_params"],
            "trained_tokens": m["trained_tokens"], "train_wall_s": round(m["wall_s"], 2),
            "eval_loss_before": m["eval_loss_before"], "eval_loss_after": m["eval_loss_after"],
            "train_rows_loss_before": m.get("train_rows_loss_before"),
            "train_rows_loss_after": m.get("train_rows_loss_after"),
            "attn_implementation": m.get("attn_implementation")}
        t0 = time.perf_counter()
        check(f"loss_down_{arm}", a["eval_loss_after"] < a["eval_loss_before"],
              heldout_before=a["eval_loss_before"], heldout_after=a["eval_loss_after"])
        # bf16 autocast over fp32 master weights: the checkpoint is fp32 either way
        check(f"precision_{arm}", a["precision"] == want_precision and a["saved_dtype"] == "float32",
              precision=a["precision"], expected=want_precision, saved_dtype=a["saved_dtype"])
        start = store.arm_checkpoint("p1")
        if arm == "gr_5":
            summary = a["replay"] = m["replay"]
            n_phase2 = len(load_prepared(store, "multialpaca", "train"))
            expected = replay_count(n_phase2, 0.05)
            rows = [json.loads(line) for line in store.replay_file(arm).read_text(encoding="utf-8").split("\n")
                    if line.strip()]
            empty = sum(not r["messages"][-1]["content"].strip() for r in rows)
            check("gr_replay_rows", len(rows) == expected == summary["replay_rows"] and empty == 0
                  and summary["empty_responses"] == 0 and a["rows"] == n_phase2 + expected
                  and summary["engine"] == engine,
                  phase2_rows=n_phase2, expected=expected, replay_rows=len(rows), empty_responses=empty,
                  training_rows=a["rows"], engine=summary["engine"],
                  generation_s=round(summary["generation_s"], 2),
                  example=rows[0]["messages"][-1]["content"][:80] if rows else None)
        elif arm == "lora":
            same = unchanged(start, ckpt)
            adapted = adapted_weights(store.arm_adapter_dir(arm))
            changed = {n for n, s in same.items() if not s}
            check("lora_changes_only_adapted", changed == adapted, adapted_weights=len(adapted),
                  changed_tensors=len(changed), tensors=len(same),
                  changed_not_adapted=sorted(changed - adapted)[:10], adapted_unchanged=sorted(adapted - changed)[:10])
        elif arm == "spectrum":
            same = unchanged(start, ckpt)
            plan = read_json(store.arm_file(arm, "freeze.json"))
            frozen_changed = [n for n in plan["frozen"] if not same[n]]
            trainable_same = [n for n in plan["trainable"] if same[n]]
            check("spectrum_frozen_identical", bool(plan["frozen"]) and not frozen_changed and not trainable_same,
                  frozen_tensors=len(plan["frozen"]), trainable_tensors=len(plan["trainable"]),
                  frozen_changed=frozen_changed[:10], trainable_unchanged=trainable_same[:10])
        a["checks_s"] = round(time.perf_counter() - t0, 2)
        save()

    # Evaluation. The dtype the weights really ran in is read off the model lm-eval is handed.
    seen: list[str] = []
    run_lm_eval = harness._run_lm_eval

    def observed(params, model, *args, **kw):
        seen.append(str(next(model.parameters()).dtype).removeprefix("torch."))
        return run_lm_eval(params, model, *args, **kw)

    harness._run_lm_eval = observed
    try:
        for model in EVALUATED:
            seen.clear()
            rec = stages.run(f"eval_{model}", lambda model=model: harness.evaluate_model(p, model,
                                                                                          progress=False))
            scores = {b: v["score"] for b, v in rec["benchmarks"].items()}
            e = out["evaluation"][model] = {
                "scores": scores,
                "abilities": {k: v for k, v in harness.abilities(p, rec).items() if k in ("EA", "MA", "combined")},
                "items": rec.get("items"), "lm_eval_wall_s": rec.get("wall_s"),
                "record_dtype": rec.get("dtype"), "observed_dtype": seen[-1] if seen else None}
            check(f"eval_scores_finite_{model}", len(scores) == len(harness.task_plan(p)) and all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in scores.values()), scores=scores)
            # the record must say its dtype where the params have the setting (evaluation.dtype)
            check(f"eval_dtype_{model}", e["observed_dtype"] == want_eval
                  and (e["record_dtype"] == want_eval or (not has_eval_dtype and e["record_dtype"] is None)),
                  expected=want_eval, observed=e["observed_dtype"], record=e["record_dtype"])
            save()
    finally:
        harness._run_lm_eval = run_lm_eval
    save()


def print_summary(out: dict) -> None:
    print(f"\ndevice {out.get('device')}  torch {out.get('torch')}  transformers {out.get('transformers')}  "
          f"model {out.get('model_params', 0) / 1e6:.1f}M  GR_5 generation: {out.get('generation_engine')}")
    print(f"{'stage':10} {'wall s':>8} {'peak GiB':>9}")
    for name, s in out.get("stages", {}).items():
        peak = "-" if s.get("peak_gpu_mem_gib") is None else f"{s['peak_gpu_mem_gib']:.2f}"
        print(f"{name:10} {s['wall_s']:8.1f} {peak:>9}" + ("  FAILED" if s.get("failed") else ""))
    print(f"{'arm':10} {'precision':>9} {'saved':>9} {'loss before':>11} {'after':>7} {'trainable':>12}")
    for arm, a in out.get("arms", {}).items():
        print(f"{arm:10} {a['precision']:>9} {a['saved_dtype']:>9} {a['eval_loss_before']:11.3f} "
              f"{a['eval_loss_after']:7.3f} {a['trainable_params']:12,}")
    for model, e in out.get("evaluation", {}).items():
        print(f"eval {model}: dtype {e['observed_dtype']} (record: {e['record_dtype']}), "
              + ", ".join(f"{b} {v:.3f}" for b, v in e["scores"].items()))
    for name, c in out.get("checks", {}).items():
        print(f"{'PASS' if c['ok'] else 'FAIL'} {name}: "
              + json.dumps({k: v for k, v in c.items() if k != 'ok'}, default=str)[:300])
    if out.get("error"):
        print(f"ERROR {out['error']}")
    print("all checks passed" if out.get("ok") else "SOME CHECKS FAILED")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="CPU mode: the smoke model, a few steps, fp32")
    ap.add_argument("--out", help="result JSON (default benchmarks/results/gpu_paper_path_<gpu>.json)")
    ap.add_argument("--run-dir", help="run here and keep it (default: a temporary folder, removed)")
    ap.add_argument("--steps", type=int, help="optimizer steps per Phase-2 arm (default 12 on a GPU, 8 tiny)")
    ap.add_argument("--p1-steps", type=int, help="optimizer steps of Phase 1 (default 40 on a GPU, 16 tiny)")
    ap.add_argument("--launch", action="store_true",
                    help="through accelerate launch: FSDP (GPU) or DDP over gloo (tiny), p1 -> p2 -> lf_h1 -> lora "
                         "-> gr_5, and ZeRO-3 where DeepSpeed imports (benchmarks/launch_path.py)")
    ns = ap.parse_args(argv)
    if ns.launch:
        ns.steps = ns.steps or (3 if ns.tiny else 10)
    ns.steps = ns.steps or (8 if ns.tiny else 12)
    ns.p1_steps = ns.p1_steps or (16 if ns.tiny else 40)
    if min(ns.steps, ns.p1_steps) < 2:
        ap.error("--steps and --p1-steps must be at least 2 (the loss must have a chance to go down)")

    if ns.tiny:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    elif os.environ.get("OMP_NUM_THREADS") == "1":
        print("gpu_paper_path: OMP_NUM_THREADS=1: Spectrum's scan of the 1B model (numpy, CPU) then runs on "
              "one core, ~2 min instead of well under one; unset it for this check", flush=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import torch
    except ImportError as exc:
        print(f"gpu_paper_path: cannot run, torch does not import: {exc}", file=sys.stderr)
        return 2
    if not ns.tiny and not torch.cuda.is_available():
        print("gpu_paper_path: the GPU check needs a CUDA device and torch sees none; "
              "use --tiny for the CPU dry run", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    failed = preflight()
    if failed:
        print("gpu_paper_path: cannot run, these imports fail (carry the packages as wheels):\n  "
              + "\n  ".join(failed), file=sys.stderr)
        return 2
    imports_s = round(time.perf_counter() - t0, 1)
    print(f"imports: {imports_s} s", flush=True)
    if ns.out is None:
        slug = "cpu-tiny" if ns.tiny else gpu_slug(torch.cuda.get_device_name())
        ns.out = str(ROOT / "benchmarks" / "results" / f"gpu_{'launch' if ns.launch else 'paper'}_path_{slug}.json")
    temporary = ns.run_dir is None
    if temporary:
        ns.run_dir = tempfile.mkdtemp(prefix="gpu-paper-path-")
    t0 = time.perf_counter()
    out: dict = {"imports_s": imports_s}
    try:
        if ns.launch:
            from benchmarks.launch_path import run_launch_check

            stages = Stages(not ns.tiny)
            out["stages"] = stages.record
            run_launch_check(ns, out, *recorder(ns, out), stages)
        else:
            run_check(ns, out)
    except Exception as exc:  # one broken stage: the JSON still says which, with what ran before it
        import traceback

        traceback.print_exc()
        out["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        out["ok"] = False
    finally:
        if temporary:
            shutil.rmtree(ns.run_dir, ignore_errors=True)
    out["total_wall_s"] = round(time.perf_counter() - t0 + imports_s, 1)
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.out).write_text(json.dumps(out, indent=2, default=str))
    print_summary(out)
    print(f"total {out['total_wall_s']} s; results in {ns.out}")
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
