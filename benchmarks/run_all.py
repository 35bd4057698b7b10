"""Every CPU benchmark in one command; prints a table and writes runs/benchmarks/results.json.

    OMP_NUM_THREADS=1 python -m benchmarks.run_all

GPU checks are separate scripts (gpu_train_check.py, gpu_mitigation_check.py, gpu_fsdp_check.py).
"""

from __future__ import annotations

import json
import platform

from benchmarks import bench_generation, bench_mpd, bench_spectrum, bench_training
from benchmarks.common import ROOT


def main() -> int:
    import os

    import torch

    results = [bench_training.run(), bench_spectrum.run(), bench_mpd.run(), bench_generation.run()]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, " \
              f"{torch.get_num_threads()} thread(s)"
    for r in results:
        r["machine"] = machine
        print(f"{r['goal']:15s} baseline: {r['baseline']}")
        for k, v in r.items():
            if k not in ("goal", "baseline", "machine"):
                print(f"    {k:22s} {v:.3f}" if isinstance(v, float) else f"    {k:22s} {v}")
    out = ROOT / "runs" / "benchmarks" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
