#!/usr/bin/env bash
# Issue 15's one-GPU acceptance, on an H200 with the torch backend: two ranks sharing the GPU
# over gloo, and one rank over NCCL, each against the reference's simulation of the same number
# of ranks (numpy, sm90), and against the torch backend's own simulation (isolating what data
# parallelism adds from the backend's own parity). Results in $OUT/result.txt.
set -uo pipefail
OUT=${OUT:-/tmp/simprec-dist}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/backends${PYTHONPATH:+:$PYTHONPATH}"
ARGS=(--model mlp --model-opt "hidden=[64,64]" --batch-size 32 --recipe amp-fp16
      --accumulate sm90 --steps 20 --eval-every 0 --checkpoint-every 0 -q)
TR=(python -m torch.distributed.run --standalone)
{
  "${TR[@]}" --nproc_per_node 2 -m simprec train "${ARGS[@]}" --backend torch:cuda \
      --dist-engine gloo --out "$OUT/gloo2"
  "${TR[@]}" --nproc_per_node 1 -m simprec train "${ARGS[@]}" --backend torch:cuda \
      --dist-engine nccl --out "$OUT/nccl1"
  python -m simprec train "${ARGS[@]}" --backend torch:cuda --simulate-ranks 2 --out "$OUT/torch-sim2"
  python -m simprec train "${ARGS[@]}" --backend torch:cuda --simulate-ranks 1 --out "$OUT/torch-sim1"
  python -m simprec train "${ARGS[@]}" --simulate-ranks 2 --out "$OUT/numpy-sim2"
  python -m simprec train "${ARGS[@]}" --simulate-ranks 1 --out "$OUT/numpy-sim1"
  cat "$OUT"/gloo2/ranks/rank-*.jsonl
  python scripts/compare_runs.py "$OUT/gloo2" "$OUT/torch-sim2" "$OUT/nccl1" "$OUT/torch-sim1" \
      "$OUT/gloo2" "$OUT/numpy-sim2" "$OUT/nccl1" "$OUT/numpy-sim1"
} 2>&1 | tee "$OUT/result.txt"
