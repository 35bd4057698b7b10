"""English Ability's power: how wide the interval of each Phase-2 pair's EA change is on one
seed, for the English slots at several sizes, against what they cost to evaluate. Widths only.

    python -m benchmarks.bench_ea_power --params default --seed 100 --run-dir runs/power

The slots themselves are chosen by construct first (docs/METHODS.md, "The English slots": each
measures what the paper's benchmark measures, argued before any checkpoint is scored); this
script then sizes them, on a seed that the findings never use (``--seed``; it refuses the
findings' seeds, ``--findings-seeds``, default 0 1 2). It needs that seed's run store with the
four Phase-1 and Phase-2 arms trained (``python -m cft_helpers.train --params default --arm
phase1 --arm phase2 --set seed=100 --set run_dir=runs/power``, after data preparation).

It evaluates the base model and the four arms through the project's harness (``evaluate_model``:
lm-eval, the chat template, the default engine), with the multilingual benchmarks off and each
English slot at its largest candidate size (``--n-instructions``, ``--n-choice``), reads the
per-item scores back and bootstraps them as the findings do (``findings.ItemBootstrap``, the same
item draw for both models of a pair). A slot measured on n items is resampled at m items
(multinomial(m, 1/n)), which predicts the half-width of m new items of the same kind; seconds per
model at m items are the measured seconds per item times m.

Printed: per EA composition and size, the 95% half-width of the similar and the dissimilar
pair's EA change and the seconds per model. No change, level or direction is printed: a size is
chosen by width and time alone (the target: at most 0.05 for both pairs on one seed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MODELS = ("base", "p1_alpaca", "p2_alpaca", "p1_instruct", "p2_instruct")
PAIRS = {"similar": ("p1_alpaca", "p2_alpaca"), "dissimilar": ("p1_instruct", "p2_instruct")}
TARGET = 0.05


def half_width(draws: np.ndarray) -> float:
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(hi - lo) / 2


def slot_differences(scores: dict, bench: str, pair: tuple[str, str]) -> np.ndarray:
    """Per-item differences (after - before) of one slot, its tasks' items concatenated in order."""
    a, b = (scores[m][bench] for m in pair)
    out = []
    for task in sorted(a):
        ids = sorted(a[task], key=str)
        out += [b[task][i] - a[task][i] for i in ids]
    return np.asarray(out, dtype=float)


def composition_half_width(scores: dict, sizes: dict[str, int], pair: tuple[str, str], replicates: int,
                           rng: np.random.Generator) -> float:
    """Half-width of EA's change (the mean over the slots in ``sizes``), each slot's n measured
    items resampled at its m items."""
    draws = np.zeros(replicates)
    for bench, m in sizes.items():
        d = slot_differences(scores, bench, pair)
        counts = rng.multinomial(m, np.full(len(d), 1 / len(d)), size=replicates)
        draws += counts @ d / m / len(sizes)
    return half_width(draws)


SLOT_GROUPS = {  # evaluated apart, so that each group's seconds are its own
    "instructions": ("ifeval",),
    "choice": ("mmlu", "hellaswag"),
}


def evaluate(params_name: str, seed: int, run_dir: Path, n_instructions: int, n_choice: int, max_gen_toks: int,
             cache_dir: str | None) -> tuple[dict, dict]:
    """Per-item scores (model -> benchmark -> task -> item -> score) and lm-eval seconds per
    model of each slot group, each group in its own run store beside ``run_dir`` whose arms are
    the run dir's (linked, read only)."""
    from cft_helpers.evaluation.harness import evaluate_model
    from cft_helpers.intervals import item_scores
    from cft_helpers.params import load_params

    slots = {"ifeval": {"source": "offline", "task": "instructions", "metric": "instructions_followed",
                        "n": n_instructions, "max_gen_toks": max_gen_toks},
             "mmlu": {"source": "offline", "task": "mc", "metric": "p_correct", "n": n_choice},
             "hellaswag": {"source": "offline", "task": "completion", "metric": "p_correct", "n": n_choice}}
    scores: dict = {m: {} for m in MODELS}
    seconds: dict = {}
    for group, benches in SLOT_GROUPS.items():
        root = run_dir.parent / f"{run_dir.name}.power_{group}"
        (root / "arms").mkdir(parents=True, exist_ok=True)
        for arm in MODELS[1:]:
            link = root / "arms" / arm
            if not link.exists():
                link.symlink_to((run_dir / "arms" / arm).resolve())
        overrides = {"seed": seed, "run_dir": str(root), **{f"evaluation.benchmarks.{b}": (
            slots[b] if b in benches else {"source": "off"}) for b in ("ifeval", "alpacaeval", "mmlu", "hellaswag",
                                                                       "mlqa", "xquad", "xlsum")}}
        if cache_dir:
            overrides["cache_dir"] = cache_dir
        params = load_params(params_name, overrides=overrides)
        seconds[group] = {}
        for m in MODELS:
            record = evaluate_model(params, m, progress=False)
            seconds[group][m] = record["wall_s"]
            print(f"  {group:12s} {m:12s} lm-eval {record['wall_s']:7.1f} s  items "
                  f"{ {t: v['n'] for t, v in record['tasks'].items()} }", flush=True)
            scores[m].update(item_scores(params, m))
    return scores, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="default")
    ap.add_argument("--seed", type=int, required=True, help="the power seed (never one of the findings' seeds)")
    ap.add_argument("--findings-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--run-dir", type=Path, required=True, help="that seed's run store, Phase 1 and 2 trained")
    ap.add_argument("--cache-dir", help="asset cache (default: the params')")
    ap.add_argument("--n-instructions", type=int, default=256)
    ap.add_argument("--n-choice", type=int, default=96, help="items of the mc and completion slots")
    ap.add_argument("--max-gen-toks", type=int, default=64)
    ap.add_argument("--replicates", type=int, default=4000)
    ap.add_argument("--save", type=Path, help="also write the widths (JSON) here")
    ns = ap.parse_args()
    if ns.seed in ns.findings_seeds:
        raise SystemExit(f"seed {ns.seed} is one of the findings' seeds {ns.findings_seeds}: size the slots on another")
    import torch

    print(f"torch threads: {torch.get_num_threads()}; power seed {ns.seed}", flush=True)
    scores, seconds = evaluate(ns.params, ns.seed, ns.run_dir, ns.n_instructions, ns.n_choice, ns.max_gen_toks,
                               ns.cache_dir)
    measured = {b: sum(len(t) for t in scores[MODELS[0]][b].values()) for b in scores[MODELS[0]]}
    per_item = {}  # lm-eval seconds per item and model, of each slot
    for group, benches in SLOT_GROUPS.items():
        items = sum(measured[b] for b in benches)
        for b in benches:
            per_item[b] = float(np.mean(list(seconds[group].values()))) / items
    rng = np.random.default_rng(0)
    grid = {
        "ifeval (instructions) alone": [{"ifeval": m} for m in (48, 64, 80, 96, 112, 128, 160, 192, 256)],
        "ifeval + mmlu + hellaswag": [{"ifeval": m, "mmlu": c, "hellaswag": c}
                                      for m in (64, 80, 96, 128, 160, 192) for c in (32, 48, 96)],
    }
    out = {"seed": ns.seed, "measured_items": measured, "seconds": seconds, "seconds_per_item": per_item, "rows": []}
    print(f"\nmeasured items {measured}; lm-eval seconds per item and model: "
          + ", ".join(f"{b} {v:.3f}" for b, v in per_item.items()))
    print(f"{'composition':30s} {'sizes':44s} {'s/model':>8s} | {'similar hw':>10s} {'dissimilar hw':>13s} | "
          f"within {TARGET}")
    for label, options in grid.items():
        for sizes in options:
            if any(b not in measured or m > measured[b] for b, m in sizes.items()):
                continue
            hw = {p: composition_half_width(scores, sizes, pair, ns.replicates, rng) for p, pair in PAIRS.items()}
            sec = sum(per_item[b] * m for b, m in sizes.items())
            ok = all(v <= TARGET for v in hw.values())
            out["rows"].append({"composition": label, "sizes": sizes, "s_per_model": sec, "half_width": hw,
                                "within_target": ok})
            print(f"{label:30s} {json.dumps(sizes):44s} {sec:8.1f} | {hw['similar']:10.3f} {hw['dissimilar']:13.3f} | "
                  f"{'yes' if ok else 'no'}")
    if ns.save:
        ns.save.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
