"""Evaluation throughput: lm-eval's own ``HFLM`` (baseline) against our shared-prefix engine
(``evaluation.engine: cft``), the same lm-eval tasks, metrics and items, one model load each.

    python -m benchmarks.bench_evaluation                       # both suites, the base model
    python -m benchmarks.bench_evaluation --suite previous --model p2_alpaca --run-dir runs/default

Suites: ``default`` (today's params/default.yaml: 48 mc + 48 completion + 48 response
likelihood items and 112 generation items) and ``previous`` (the suite before the findings
issue, which the performance issue names: 32 mc + 32 completion and the same 112 generation
items). Each side runs in a fresh child process on one thread; the lm-eval task index is built
before the clock starts (it is built once per process in the book). Prints items/s of each side,
the ratio, and how the per-item scores compare: the largest log-likelihood difference, and
whether every per-item metric and every generated answer is identical.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import ROOT, child, emit

PREVIOUS = ("evaluation.benchmarks.ifeval={\"source\": \"off\"}; "
            "evaluation.benchmarks.mmlu={\"source\": \"offline\", \"task\": \"mc\", \"metric\": \"acc\", \"n\": 32}; "
            "evaluation.benchmarks.hellaswag={\"source\": \"offline\", \"task\": \"completion\", "
            "\"metric\": \"acc_norm\", \"n\": 32}")


def _params(run_dir: str, suite: str, engine: str):
    from cft_helpers.params import load_params

    extra = f"; {PREVIOUS}" if suite == "previous" else ""
    return load_params("default", overrides=f"run_dir={json.dumps(run_dir)}; runtime.threads=1; "
                                            f"evaluation.engine={engine}{extra}")


def part(run_dir: str, suite: str, engine: str, model_name: str, out: str) -> None:
    import torch

    from cft_helpers.evaluation import harness
    from cft_helpers.models import load_model, load_tokenizer, resolve_model
    from cft_helpers.files import write_jsonl

    torch.set_num_threads(1)
    p = _params(run_dir, suite, engine)
    ckpt, _, template = resolve_model(p, model_name)
    tok = load_tokenizer(ckpt, chat_template=template)
    model = load_model(ckpt).eval()
    folder = harness.write_suite(p)
    harness._task_manager((str(folder),), False)  # the task index: once per process, off the clock
    samples: list[dict] = []
    t0 = time.perf_counter()
    res = harness._run_lm_eval(p, model, tok, "cpu", harness.task_plan(p), samples)
    wall = time.perf_counter() - t0
    write_jsonl(Path(out), samples)
    emit({"engine": engine, "items": res["items"], "eval_s": wall, "items_per_s": res["items"] / wall,
          "scores": {b: v["score"] for b, v in res["benchmarks"].items()}}, t0)


def compare(a: Path, b: Path) -> dict:
    """Per-item comparison of two samples files (same tasks and items)."""
    rows_a = [json.loads(x) for x in a.read_text().splitlines() if x.strip()]
    rows_b = [json.loads(x) for x in b.read_text().splitlines() if x.strip()]
    key = lambda r: (r["task"], r["doc_id"])  # noqa: E731
    by_b = {key(r): r for r in rows_b}
    worst, differing, answers = 0.0, [], 0
    for r in rows_a:
        s = by_b[key(r)]
        if r.get("response") != s.get("response"):
            answers += 1
        for m, v in r.items():
            if m in ("task", "doc_id", "target", "response"):
                continue
            w = s.get(m)
            if isinstance(v, (int, float)) and isinstance(w, (int, float)):
                d = abs(float(v) - float(w))
                worst = max(worst, d)
                if d > 1e-4:
                    differing.append(f"{key(r)} {m}: {v} vs {w}")
            elif v != w:
                differing.append(f"{key(r)} {m}: {v} vs {w}")
    return {"items": len(rows_a), "max_abs_diff": worst, "metrics_over_1e-4": differing[:10],
            "n_metrics_over_1e-4": len(differing), "answers_differing": answers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--suite", nargs="+", default=["default", "previous"], choices=["default", "previous"])
    ap.add_argument("--model", default="base", help="a model or finished arm of the run store")
    ap.add_argument("--run-dir", default="runs/benchmarks/eval_run")
    ns = ap.parse_args()
    if ns.part:
        part(ns.run_dir, ns.part, ns.engine, ns.model, ns.out)
        return
    out_dir = ROOT / "runs" / "benchmarks" / "evaluation"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for suite in ns.suite:
        sides = {}
        for engine in ("lm_eval", "cft"):
            f = out_dir / f"{suite}.{ns.model}.{engine}.samples.jsonl"
            sides[engine] = child("benchmarks.bench_evaluation", suite, "--engine", engine, "--model", ns.model,
                                  "--run-dir", ns.run_dir, "--out", str(f))
            sides[engine]["samples"] = str(f)
        same = compare(Path(sides["lm_eval"]["samples"]), Path(sides["cft"]["samples"]))
        ratio = sides["cft"]["items_per_s"] / sides["lm_eval"]["items_per_s"]
        results[suite] = {"sides": sides, "ratio": ratio, "same": same}
        print(f"\nsuite {suite}, model {ns.model}, {sides['cft']['items']} items, 1 thread")
        for engine, s in sides.items():
            print(f"  {engine:8s} {s['eval_s']:7.1f} s  {s['items_per_s']:6.2f} items/s  "
                  f"peak {s['peak_rss_mb']:.0f} MB  scores {json.dumps({k: round(v, 4) for k, v in s['scores'].items()})}")
        print(f"  ratio {ratio:.2f}x; per item: largest metric difference {same['max_abs_diff']:.2e}, "
              f"{same['n_metrics_over_1e-4']} metrics differ by more than 1e-4, "
              f"{same['answers_differing']} of {same['items']} answers differ")
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
