#!/usr/bin/env bash
# Wheels the GPU machine's image lacks, for benchmarks/run_launch_check.sh (run it here, in the
# repository root; the device tool's README, "Notes"). The image has torch, accelerate 1.15,
# numpy, pandas, pyarrow, scipy, scikit-learn, sacrebleu, absl-py; it lacks the rest of this
# project's stack or holds other versions (transformers 5.17). Versions are this project's pins
# (pyproject.toml) and what they resolved to here. Pure-Python packages published only as source
# (sqlitedict, word2number, rouge-score, langdetect) are built into wheels here.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
PKGS=(transformers==5.24.0 trl==1.16.0 peft==0.21.2 datasets==5.2.0 evaluate==0.4.6 lm_eval==0.4.13
      dill==0.4.1 multiprocess==0.70.19 more_itertools==11.2.1 pytablewriter==1.2.1 DataProperty==1.1.1
      mbstrdecoder==1.1.5 pathvalidate==3.3.1 tabledata==1.3.5 tcolorpy==0.1.7 typepy==1.3.5
      chardet==6.0.0.post1 sqlitedict==2.1.0 word2number==1.1 rouge_score==0.1.2 nltk==3.10.4
      langdetect==1.0.9 immutabledict==4.3.1 pydantic==2.13.4 pydantic_core==2.46.4 annotated_types==0.8.0
      typing_inspection==0.4.5 huggingface_hub==2.4.0 tokenizers==0.23.3)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for pkg in "${PKGS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${PLATFORMS[@]}" -d .whl "$pkg" 2>/dev/null \
    || python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl "$pkg"   # source only: pure Python
done
du -sh .whl
