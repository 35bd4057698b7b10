#!/usr/bin/env bash
# The device check of the paper's path through accelerate launch (benchmarks/launch_path.py), as
# one prepared call of the device tool. Here, once: `bash benchmarks/device_wheels.sh` (35 MB of
# wheels into the ignored .whl/). Then the call:
#     run(command="bash benchmarks/run_launch_check.sh", carry=[".whl"], timeout_s=420)
# It installs the wheels into /tmp/site (ahead of the image's own transformers 5.17), runs the
# check with a 5-minute limit (a rerun fits in a session's 15 minutes of device time), and leaves
# the JSON and the log under $OUT (copy the JSON to benchmarks/results/ and commit it).
set -o pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "run_launch_check: the wheels did not install (run benchmarks/device_wheels.sh here first)"; exit 2; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 300 python3 -m benchmarks.gpu_paper_path --launch --out "$OUT/gpu_launch_path.json" 2>&1 \
  | tee "$OUT/gpu_launch_path.log"
