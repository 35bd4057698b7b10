"""Evaluating models from a shell, and in several processes under ``accelerate launch``.

    python -m cft_helpers.evaluate --params params/paper/llama3_8b.yaml --model p2_alpaca
    python -m cft_helpers.evaluate --params smoke --model base --set runtime.processes=2

With ``runtime.processes`` above 1 the command (and :func:`cft_helpers.evaluation.harness.evaluate_model`
called from a notebook) relaunches itself by ``accelerate launch`` in that many processes
(:mod:`cft_helpers.relaunch`): data
parallel, each process holds the whole model on its own GPU (in ``evaluation.dtype``) and scores
its shard of lm-eval's items; the main process gathers them and alone writes the run store
(docs/CLUSTER.md, "Evaluation on every GPU").

Imports the evaluation harness only when it runs: importing this module stays free of torch.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

from cft_helpers.lock import refuse_if_locked
from cft_helpers.params import load_params
from cft_helpers.relaunch import launch_evaluation, launched


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cft_helpers.evaluate",
                                 description="Run the evaluation suite (lm-eval, AlpacaEval) on models or arms.")
    ap.add_argument("--params", required=True, help="params YAML file or preset name")
    ap.add_argument("--model", required=True, action="append", help="model or arm to evaluate; repeatable")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="override, e.g. evaluation.dtype=bfloat16 (repeatable)")
    ap.add_argument("--force", action="store_true", help="evaluate again even if cached")
    ap.add_argument("--no-progress", action="store_true")
    ns = ap.parse_args(argv)
    params = load_params(ns.params, overrides=ns.overrides)
    if refuse_if_locked(params.run_path):  # a book running on this store: only its own children pass
        return 1
    from cft_helpers.evaluation.harness import abilities, evaluate_model

    force = ns.force
    if params.runtime.processes > 1 and not launched():
        launch_evaluation(params, ns.model, force=force)  # all models in one launch
        force = False  # the launch evaluated them: below, each record is read back
    records = {n: evaluate_model(params, n, force=force, progress=not ns.no_progress) for n in ns.model}
    if os.environ.get("CFT_EVALUATE_QUIET") != "1" and int(os.environ.get("RANK", "0")) == 0:
        for name, record in records.items():
            ab = abilities(params, record)
            print(json.dumps({"model": name, "EA": ab["EA"], "MA": ab["MA"], "dtype": record.get("dtype"),
                              "processes": record.get("processes"),
                              "benchmarks": {b: v["score"] for b, v in record.get("benchmarks", {}).items()}}))
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # launched: leave the process group cleanly
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
