"""English Ability's power per evaluation second: how wide the paired interval of an EA change
(Phase 1 -> Phase 2) is for each candidate EA stand-in, against what it costs to evaluate.

    python -m benchmarks.bench_ea_power --run-dir /work/bookrun/runs/default

reads the four trained checkpoints ``<run-dir>/arms/{p1_alpaca,p2_alpaca,p1_instruct,p2_instruct}
/model`` (the default run's similar and dissimilar pairs), writes each candidate's offline task
(held-out items, ``cft_helpers.evaluation.offline_tasks``) into a temporary folder and runs it
through lm-eval 0.4.13 exactly as the harness does (HFLM on the model in memory, chat template,
zero-shot, one ``simple_evaluate`` call per task and model, timed). Candidates:

- ``mc`` (MMLU slot), lm-eval's ``acc`` (0/1) and, from the same run, the continuous
  ``p_correct``: softmax of the four choices' log-likelihoods at the correct one (lm-eval's
  ``prob_norm``; another metric than MMLU's accuracy);
- ``completion`` (HellaSwag slot), ``acc_norm`` (0/1) and ``p_correct`` likewise;
- ``response_ll``: per-byte probability of held-out reference responses of both task families
  (``byte_prob`` = exp(loglikelihood / bytes), continuous in (0, 1]);
- ``answer_line``: greedy answers to held-out reasoning prompts follow the ``Answer: <x>`` last
  line convention (0/1, an IFEval-like verifiable instruction);
- ``ifeval`` (optional, ``--ifeval N``): the real IFEval prompts offline, prompt_level_strict_acc.

For each candidate and pair: the point change P2 - P1 and the 95% half-width of a paired
bootstrap over items (``--replicates`` draws, percentile; the same item draw for both models, as
``cft_helpers.findings`` does), seconds per model, and half-width x sqrt(seconds) (interval width
per unit of evaluation time: width ~ 1/sqrt(n), so this does not depend on n). Then EA
compositions (EA = mean of its slots; each slot's items drawn independently in each replicate,
as findings' bootstrap does) at given sizes: a measured candidate of n items is resampled at m
items (multinomial(m, 1/n)), which predicts the half-width of m new items of the same kind.
Seconds per model at m items: measured s/item x m. The numbers are printed, then the JSON.
Nothing decides on the direction of a change: only widths and seconds are compared.

    python -m benchmarks.bench_ea_power --run-dir /work/bookrun/runs/default --suite default \
        [--set "evaluation.benchmarks.mmlu={source: offline, task: mc, metric: acc, n: 32}"]

checks a parameter set's EA slots end to end instead: the four arms evaluated by the project's
harness (``evaluate_model``; the multilingual benchmarks off) into a temporary run store whose
arms link to the run dir's (read only), the per-item scores read back from ``samples.jsonl`` and
bootstrapped by ``cft_helpers.findings.ItemBootstrap`` (what notebook 09 decides claims with).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = ("p1_alpaca", "p2_alpaca", "p1_instruct", "p2_instruct")
PAIRS = {"similar": ("p1_alpaca", "p2_alpaca"), "dissimilar": ("p1_instruct", "p2_instruct")}
# EA compositions printed (slot "kind:metric" -> items): today's default (params/default.yaml
# before this benchmark), the paper's metrics at larger n, and the continuous metrics at a few n.
COMPOSITIONS = {
    "today: mc acc 32 + completion acc_norm 32": {"mc:acc": 32, "completion:acc_norm": 32},
    "mc acc 200 + completion acc_norm 200": {"mc:acc": 200, "completion:acc_norm": 200},
    "mc acc 32 + completion acc_norm 32 + response_ll 32": {
        "mc:acc": 32, "completion:acc_norm": 32, "response_ll:byte_prob": 32},
    "mc acc 200 + completion acc_norm 200 + response_ll 200": {
        "mc:acc": 200, "completion:acc_norm": 200, "response_ll:byte_prob": 200},
    "mc acc 400 + completion acc_norm 400 + response_ll 400": {
        "mc:acc": 400, "completion:acc_norm": 400, "response_ll:byte_prob": 400},
    "mc acc 200 + completion acc_norm 200 + answer_line 64": {
        "mc:acc": 200, "completion:acc_norm": 200, "answer_line:follows": 64},
    "mc p 200 + completion p 200": {"mc:p_correct": 200, "completion:p_correct": 200},
    **{f"mc p {m} + completion p {m} + response_ll {m}": {
        "mc:p_correct": m, "completion:p_correct": m, "response_ll:byte_prob": m} for m in (32, 48, 64, 100)},
    "mc p 48 + completion p 48 + response_ll 32": {
        "mc:p_correct": 48, "completion:p_correct": 48, "response_ll:byte_prob": 32},
}


def softmax_at(lls: list[float], gold: int) -> float:
    a = np.asarray(lls, dtype=float)
    e = np.exp(a - a.max())
    return float(e[gold] / e.sum())


def item_scores(kind: str, samples: list[dict]) -> dict[str, dict[int, float]]:
    """metric -> doc_id -> score, from lm-eval's logged samples of one task."""
    out: dict[str, dict[int, float]] = {}

    def put(metric, doc_id, v):
        out.setdefault(metric, {})[doc_id] = float(v[0] if isinstance(v, (list, tuple)) else v)

    for s in samples:
        i = s["doc_id"]
        if kind in ("mc", "completion"):
            put("acc", i, s["acc"])
            if "acc_norm" in s:
                put("acc_norm", i, s["acc_norm"])
            lls = [r[0] for r in s["filtered_resps"]]
            gold = s["doc"]["answer"] if kind == "mc" else s["doc"]["label"]
            p = softmax_at(lls, gold)
            if "p_correct" in s:  # the task's own hook (offline_tasks.choice_scores) logs it
                assert abs(float(s["p_correct"]) - p) < 1e-9, (s["p_correct"], p)
            put("p_correct", i, p)
        elif kind == "response_ll":
            put("byte_prob", i, s["byte_prob"])
        elif kind == "answer_line":
            put("follows", i, s["follows"])
        elif kind == "ifeval":
            put("prompt_level_strict_acc", i, s["prompt_level_strict_acc"])
    return out


def run_models(run_dir: Path, sizes: dict[str, int], max_gen_toks: dict[str, int], batch_size: int,
               cache: Path) -> tuple[dict, dict]:
    """scores[kind][metric][model] -> array over doc_ids; seconds[kind][model]."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from cft_helpers.evaluation.offline_tasks import SUITE_VERSION, task_name, write_task_files
    from cft_helpers.models import load_model, load_tokenizer

    folder = Path(tempfile.mkdtemp(prefix="ea_power_"))
    names = {}
    for kind, n in sizes.items():
        if kind == "ifeval":
            from cft_helpers.evaluation.ifeval_offline import write_ifeval_task

            write_ifeval_task(folder, cache, n, max_gen_toks["ifeval"], SUITE_VERSION)
            names[kind] = "cft_ifeval"
        else:
            write_task_files(folder, kind, None, n, 0, max_gen_toks.get(kind, 32))
            names[kind] = task_name(kind)
    manager = TaskManager(include_path=[str(folder)])
    scores: dict = {}
    seconds: dict = {}
    for model_name in MODELS:
        ckpt = run_dir / "arms" / model_name / "model"
        manifest = json.loads((run_dir / "arms" / model_name / "manifest.json").read_text())
        if manifest.get("status") != "done":
            raise SystemExit(f"{model_name} is not trained ({ckpt})")
        tok, model = load_tokenizer(ckpt), load_model(ckpt).eval()
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, max_length=1024, device="cpu")
        for kind, name in names.items():
            t0 = time.perf_counter()
            out = lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=manager, apply_chat_template=True,
                                          log_samples=True, bootstrap_iters=0, verbosity="ERROR")
            seconds.setdefault(kind, {})[model_name] = time.perf_counter() - t0
            for metric, per_doc in item_scores(kind, out["samples"][name]).items():
                ids = sorted(per_doc)
                scores.setdefault(kind, {}).setdefault(metric, {})[model_name] = np.array([per_doc[i] for i in ids])
            print(f"  {model_name:12s} {kind:12s} {seconds[kind][model_name]:6.1f} s", flush=True)
        del model, lm
    return scores, seconds


def half_width(draws: np.ndarray) -> float:
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(hi - lo) / 2


def composition_draws(scores: dict, composition: dict[str, int], pair: tuple[str, str], replicates: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Bootstrap draws of EA's change (mean over slots) and its point change (expected value),
    each slot "kind:metric" resampled at its m items from its measured n."""
    draws, point = np.zeros(replicates), 0.0
    for key, m in composition.items():
        kind, metric = key.split(":")
        a, b = (scores[kind][metric][x] for x in pair)
        d = b - a
        counts = rng.multinomial(m, np.full(len(d), 1 / len(d)), size=replicates)
        draws += counts @ d / m / len(composition)
        point += float(d.mean()) / len(composition)
    return draws, point


def report(scores: dict, seconds: dict, replicates: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    rows = []
    for kind, by_metric in scores.items():
        s_model = float(np.mean(list(seconds[kind].values())))
        for metric, per_model in by_metric.items():
            n = len(next(iter(per_model.values())))
            row = {"candidate": f"{kind}:{metric}", "n": n, "s_per_model": s_model, "items_per_s": n / s_model}
            for pair_name, pair in PAIRS.items():
                draws, point = composition_draws(scores, {f"{kind}:{metric}": n}, pair, replicates, rng)
                hw = half_width(draws)
                row[pair_name] = {"change": point, "half_width": hw, "p1_mean": float(per_model[pair[0]].mean()),
                                  "p2_mean": float(per_model[pair[1]].mean())}
                row[f"merit_{pair_name}"] = hw * math.sqrt(s_model)
            rows.append(row)
    print(f"\n{'candidate':28s} {'n':>4s} {'s/model':>8s} {'items/s':>8s} | "
          f"{'similar: P1 -> P2 (change +- hw)':>36s} {'hw*sqrt(s)':>10s} | "
          f"{'dissimilar: P1 -> P2 (change +- hw)':>36s} {'hw*sqrt(s)':>10s}")
    for r in rows:
        cells = []
        for p in PAIRS:
            x = r[p]
            cells.append(f"{x['p1_mean']:.3f} -> {x['p2_mean']:.3f} ({x['change']:+.3f} +- {x['half_width']:.3f})"
                         .rjust(36) + f" {r['merit_' + p]:10.3f}")
        print(f"{r['candidate']:28s} {r['n']:4d} {r['s_per_model']:8.1f} {r['items_per_s']:8.1f} | "
              + " | ".join(cells))
    per_item_s = {kind: float(np.mean(list(seconds[kind].values()))) / len(next(iter(next(iter(
        scores[kind].values())).values()))) for kind in scores}
    comps = []
    print(f"\n{'EA composition (items per slot)':62s} {'s/model':>8s} | {'similar hw':>10s} {'change':>7s} | "
          f"{'dissimilar hw':>13s} {'change':>7s}")
    for label, comp in COMPOSITIONS.items():
        if any(k.split(":")[0] not in scores for k in comp):
            continue
        kinds: dict[str, int] = {}  # one run of a kind gives all its metrics
        for k, m in comp.items():
            kinds[k.split(":")[0]] = max(m, kinds.get(k.split(":")[0], 0))
        sec = sum(per_item_s[k] * m for k, m in kinds.items())
        entry = {"composition": label, "slots": comp, "s_per_model": sec}
        for pair_name, pair in PAIRS.items():
            draws, point = composition_draws(scores, comp, pair, replicates, rng)
            entry[pair_name] = {"change": point, "half_width": half_width(draws)}
        comps.append(entry)
        print(f"{label:62s} {sec:8.1f} | {entry['similar']['half_width']:10.3f} {entry['similar']['change']:+7.3f} | "
              f"{entry['dissimilar']['half_width']:13.3f} {entry['dissimilar']['change']:+7.3f}")
    return {"candidates": rows, "compositions": comps, "seconds": seconds, "replicates": replicates}


def suite_check(run_dir: Path, preset: str, overrides: str | None, replicates: int) -> dict:
    """EA's P1 -> P2 change and its paired 95% half-width per pair, through the harness and
    findings' bootstrap, with lm-eval's seconds per model (the params' EA slots only)."""
    from cft_helpers.evaluation.harness import abilities, evaluate_model
    from cft_helpers.findings import ItemBootstrap, item_scores
    from cft_helpers.params import ENGLISH_BENCHMARKS, load_params
    from cft_helpers.runs import RunStore

    tmp = Path(tempfile.mkdtemp(prefix="ea_suite_"))
    (tmp / "run" / "arms").mkdir(parents=True)
    for m in MODELS:  # the trained arms, read in place
        (tmp / "run" / "arms" / m).symlink_to((run_dir / "arms" / m).resolve())
    multilingual = "; ".join(f"evaluation.benchmarks.{b}={{source: off}}" for b in ("mlqa", "xquad", "xlsum"))
    params = load_params(preset, overrides="; ".join(x for x in (f"run_dir={tmp / 'run'}",
                                                                 f"cache_dir={tmp / 'cache'}", multilingual,
                                                                 overrides) if x))
    store = RunStore(params.run_path)
    slots = {b: f"{s.task}:{s.metric}:{s.n}" for b, s in params.evaluation.benchmarks.items()
             if b in ENGLISH_BENCHMARKS and s.source != "off"}
    records, seconds = {}, {}
    for m in MODELS:
        records[m] = evaluate_model(params, m, store, progress=False)
        seconds[m] = records[m]["wall_s"]
        print(f"  {m:12s} EA {abilities(params, records[m])['EA']:.4f}  lm-eval {seconds[m]:.1f} s", flush=True)
    boot = ItemBootstrap(params, {m: item_scores(params, store, m) for m in MODELS}, replicates,
                         np.random.default_rng(0))
    out = {"suite": preset, "overrides": overrides, "slots": slots,
           "s_per_model": float(np.mean(list(seconds.values()))), "seconds": seconds, "replicates": replicates}
    for pair_name, (a, b) in PAIRS.items():
        d = boot.ability(b)["EA"] - boot.ability(a)["EA"]
        point = boot.ability(b, point=True)["EA"] - boot.ability(a, point=True)["EA"]
        out[pair_name] = {"change": point, "half_width": half_width(d)}
    print(f"\nEA slots {slots}: {out['s_per_model']:.1f} s per model (lm-eval); "
          + "; ".join(f"{p} {out[p]['change']:+.4f} +- {out[p]['half_width']:.4f}" for p in PAIRS))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", type=Path, default=Path("/work/bookrun/runs/default"))
    ap.add_argument("--n", type=int, default=200, help="items of mc, completion and response_ll")
    ap.add_argument("--n-answer-line", type=int, default=64)
    ap.add_argument("--answer-line-toks", type=int, default=48)
    ap.add_argument("--ifeval", type=int, default=0, help="real IFEval prompts (0: not run)")
    ap.add_argument("--ifeval-toks", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--replicates", type=int, default=2000)
    ap.add_argument("--cache", type=Path, default=Path("runs/cache"), help="asset cache (IFEval's wheels)")
    ap.add_argument("--save", type=Path, help="write the per-item scores and seconds (JSON) here")
    ap.add_argument("--load", type=Path, help="report from saved per-item scores instead of running")
    ap.add_argument("--suite", help="check this parameter set's EA slots through the harness instead")
    ap.add_argument("--set", help="overrides of --suite's params (load_params syntax)")
    ns = ap.parse_args()
    if ns.suite:
        print(json.dumps(suite_check(ns.run_dir, ns.suite, ns.set, ns.replicates), indent=1))
        return
    if ns.load:
        saved = json.loads(ns.load.read_text())
        scores = {k: {m: {x: np.array(v) for x, v in pm.items()} for m, pm in bm.items()}
                  for k, bm in saved["scores"].items()}
        seconds = saved["seconds"]
    else:
        import torch

        print(f"torch threads: {torch.get_num_threads()}", flush=True)
        sizes = {"mc": ns.n, "completion": ns.n, "response_ll": ns.n, "answer_line": ns.n_answer_line}
        if ns.ifeval:
            sizes["ifeval"] = ns.ifeval
        toks = {"answer_line": ns.answer_line_toks, "ifeval": ns.ifeval_toks}
        scores, seconds = run_models(ns.run_dir, sizes, toks, ns.batch_size, ns.cache)
        if ns.save:
            ns.save.write_text(json.dumps({"scores": {k: {m: {x: v.tolist() for x, v in pm.items()}
                                                          for m, pm in bm.items()} for k, bm in scores.items()},
                                           "seconds": seconds}))
    out = report(scores, seconds, ns.replicates)
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
