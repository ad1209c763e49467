#!/usr/bin/env bash
# Every GPU figure BENCHMARKS.md asks for, in one command, meant to fit in 8 minutes on one
# H100 (each benchmark has its own time limit):
#
#   bash bench/gpu.sh [OUT_DIR]             # JSON per benchmark in OUT_DIR (bench/results/gpu)
#   IE_JAX_DRY_RUN=1 bash bench/gpu.sh OUT  # tiny sizes on the CPU: the test suite's check
#                                           # that the script and its benchmarks still run
#
# 1. the MoCo v3 ResNet-50 step at 224 px, batch 224, float32 and bfloat16, in images/s
#    (bench/train_step.py; PyTorch beside it when a CUDA torch is installed);
# 2. the kNN reward at 25,000 candidates x 8,000 targets (bench/reward.py);
# 3. the policy update at 10,000 observations x 146,347 concepts (bench/policy.py);
# 4. the input pipeline at 224 px, batch 224, over Grain worker counts (bench/input_pipeline.py).
#
# A benchmark that fails or runs out of time is reported and the others still run; the
# exit status is the number that failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/gpu}
PY=${PYTHON:-python}
mkdir -p "$OUT"

if [ -n "${IE_JAX_DRY_RUN:-}" ]; then
  LIMIT=300
  TRAIN=(--depth 18 --image_size 32 --batch 8 --dtypes float32,bfloat16 --impls jax
         --warmup 1 --runs 1 --steps_per_run 1)
  REWARD=(--candidates 512 --targets 64 --dim 32 --runs 1)
  POLICY=(--observations 64 --concepts 2000 --dim 16 --runs 1 --nosklearn --timeout_s 120)
  PIPELINE=(--num_images 32 --image_size 32 --batch 8 --workers 0 --runs 1 --batches_per_run 1)
else
  LIMIT=150
  IMPLS=jax
  if $PY -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    IMPLS=jax,torch
  fi
  TRAIN=(--depth 50 --image_size 224 --batch 224 --dtypes float32,bfloat16 --impls "$IMPLS"
         --runs 5)
  REWARD=(--candidates 25000 --targets 8000 --runs 5)
  POLICY=(--observations 10000 --concepts 146347 --runs 3 --nosklearn --timeout_s 120)
  PIPELINE=(--num_images 2000 --image_size 224 --batch 224 --workers 0,4,8,16 --runs 3)
fi

failed=0
run() {  # NAME ARGS...: one benchmark under the time limit
  local name=$1
  shift
  echo "== $name ($(date -u +%H:%M:%S))"
  if ! timeout "$LIMIT" "$PY" "$@"; then
    echo "!! $name failed or ran past ${LIMIT} s"
    failed=$((failed + 1))
  fi
}

run train_step bench/train_step.py "${TRAIN[@]}" --out "$OUT/train_step.json"
run reward bench/reward.py "${REWARD[@]}" --out "$OUT/reward.json"
run policy bench/policy.py "${POLICY[@]}" --out "$OUT/policy.json"
run input_pipeline bench/input_pipeline.py "${PIPELINE[@]}" --out "$OUT/input_pipeline.json"
echo "== done ($(date -u +%H:%M:%S)): $failed failed; JSON in $OUT"
exit "$failed"
