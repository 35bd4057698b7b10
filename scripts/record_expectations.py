"""Record the smoke book's numbers in tests/expected/smoke_book.json.

    python scripts/record_expectations.py

runs the whole book on params/smoke.yaml (as tests/test_book.py does: run store and model cache in
a temporary folder, one torch thread), then writes, for every evaluated model, its EA, MA, combined
and each benchmark's score (``<run_dir>/eval/summary.json``), for every arm its step count, training
loss, last logged loss and held-out loss before and after training (``<run_dir>/arms/<arm>/
metrics.json``), and each findings claim's value and verdict (``<run_dir>/findings.json``).
tests/test_book.py compares a fresh smoke run against this file.

Run it on purpose, and only when a change is meant to move these numbers (the definition of a
score, the training recipe, the smoke data or model), then review the diff of the JSON file and
commit it with that change. Seeded CPU runs are deterministic, so a difference that nobody meant
is a bug, not a reason to re-record. About 3 minutes on a quiet machine.

Options: ``--out PATH`` writes elsewhere (e.g. to compare two runs); ``--set KEY=VALUE``
(repeatable) overrides a parameter, e.g. ``--set runtime.threads=2`` to see how far another
thread count moves the numbers; ``--keep DIR`` keeps the run store in DIR.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ROOT / "tests" / "expected" / "smoke_book.json"
COMMAND = "python scripts/record_expectations.py"

# Per arm, from arms/<arm>/metrics.json: numbers that pin the training core.
ARM_KEYS = ("steps", "train_loss", "loss_last", "eval_loss_before", "eval_loss_after")
# Per claim, from findings.json.
CLAIM_KEYS = ("value", "verdict", "share")


def collect(run_path: Path) -> dict:
    """The numbers of one smoke run store, in the layout of tests/expected/smoke_book.json."""
    run_path = Path(run_path)
    summary = json.loads((run_path / "eval" / "summary.json").read_text())
    evaluation = {name: {"EA": s["EA"], "MA": s["MA"], "combined": s["combined"],
                         "benchmarks": dict(sorted(s["benchmarks"].items()))}
                  for name, s in summary.items()}
    arms = {}
    for path in sorted((run_path / "arms").glob("*/metrics.json")):
        m = json.loads(path.read_text())
        arms[path.parent.name] = {k: m.get(k) for k in ARM_KEYS}
    findings = json.loads((run_path / "findings.json").read_text())
    claims = {c["id"]: {k: c.get(k) for k in CLAIM_KEYS if k != "share" or c.get("share") is not None}
              for c in findings["claims"]}
    return {"eval": evaluation, "arms": arms, "findings": claims}


def run_smoke_book(folder: Path, overrides: list[str]) -> Path:
    """The smoke book into ``folder`` (run store and model cache); returns the run store's path."""
    from cft_helpers.book import run_book
    from cft_helpers.params import load_params

    raw = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    raw["run_dir"] = str(folder / "run")
    raw["cache_dir"] = str(folder / "cache")
    path = folder / "smoke.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    run_book(str(path), overrides or None, progress=False)
    return load_params(path, overrides="; ".join(overrides) or None).run_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=EXPECTED, help=f"default: {EXPECTED.relative_to(ROOT)}")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE (repeatable)")
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    ns = ap.parse_args(argv)
    t0 = time.perf_counter()
    if ns.keep:
        ns.keep.mkdir(parents=True, exist_ok=True)
        data = collect(run_smoke_book(ns.keep.resolve(), ns.overrides))
    else:
        with tempfile.TemporaryDirectory(prefix="smoke-expectations-") as tmp:
            data = collect(run_smoke_book(Path(tmp), ns.overrides))
    import torch

    out = {"_about": f"Numbers of the smoke book (params/smoke.yaml, one torch thread), compared by "
                     f"tests/test_book.py. Regenerate with `{COMMAND}` only when a change is meant to "
                     f"move them.",
           "_recorded_with": {"torch": torch.__version__, "python": sys.version.split()[0],
                              **({"overrides": ns.overrides} if ns.overrides else {})},
           **data}
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {ns.out} ({len(data['eval'])} models, {len(data['arms'])} arms, {len(data['findings'])} "
          f"claims) in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
