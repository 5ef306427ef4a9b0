#!/usr/bin/env bash
# Issue 14 on the H200: `simprec experiment underflow|stagnation|scaling --backend cupy` on the
# GPT of issue 12 (8 blocks, width 1024, 16 heads, vocabulary 256, context 512), the arms of
# --quick (underflow: fp32 / fp16 unscaled / fp16 dynamic; stagnation: O2 / pure fp16; scaling:
# static 2^0, 2^16, dynamic), fewer steps and a smaller batch than the CPU runs so that all
# three finish in under 6 minutes (they run at once, one process each, on the one GPU).
# As on the CPU, the GEMMs accumulate under the "fp32" model (the recipes name none): fp16
# values multiplied exactly and summed in fp32 by cuBLAS sgemm (no TF32).
# Results in $OUT (default ./gpu_out): experiment-<name>/ (report.md, experiment.json, each
# arm's run directory with its recorded roundings; figures/ where matplotlib is installed; else
# `simprec report $OUT/experiment-<name>` draws them from the recorded data on any machine),
# <name>.txt (the progress log) and status.txt.
#
#   OUT=/some/dir bash scripts/gpu_issue14_experiments.sh
#   STEPS=40 BATCH=8 RECORD_EVERY=4 LIMIT=330 (the defaults)
set -u
OUT=${OUT:-gpu_out}
STEPS=${STEPS:-40}
BATCH=${BATCH:-8}
RECORD_EVERY=${RECORD_EVERY:-4}
LIMIT=${LIMIT:-330}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/backends${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/machine.txt" 2>&1
python -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)" \
  >> "$OUT/machine.txt" 2>&1
python -c "import matplotlib; print('matplotlib', matplotlib.__version__)" \
  >> "$OUT/machine.txt" 2>&1

GPT="--model gpt --model-opt n_layer=8 --model-opt n_embd=1024 --model-opt n_head=16
     --model-opt block_size=512 --model-opt vocab_size=256"
start=$(date +%s)
for name in underflow stagnation scaling; do
  (
    # shellcheck disable=SC2086
    timeout "$LIMIT" python -m simprec experiment "$name" --quick --backend cupy $GPT \
      --steps "$STEPS" --batch-size "$BATCH" --record-every "$RECORD_EVERY" \
      --eval-every "$(( STEPS / 2 ))" --out "$OUT/experiment-$name" > "$OUT/$name.txt" 2>&1
    echo "$name: exit $?" >> "$OUT/status.txt"
  ) &
done
wait
echo "wall: $(( $(date +%s) - start )) s" >> "$OUT/status.txt"
cat "$OUT/status.txt"
for name in underflow stagnation scaling; do
  echo "== $name"
  tail -4 "$OUT/$name.txt"
  ls "$OUT/experiment-$name/figures" 2>/dev/null
done
