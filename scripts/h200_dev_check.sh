#!/usr/bin/env bash
# Device check (lead's batch): GPU tests, cross-backend parity runs, GPU benchmark; logs to $OUT.
export PYTHONPATH=$PWD:$PWD/backends PYTHONUNBUFFERED=1
STEPS=${STEPS:-20}
(timeout 240 python3 -m pytest -m gpu -q -rfs -p no:cacheprovider --tb=short --junitxml=$OUT/gpu_junit.xml > $OUT/gpu_tests.log 2>&1)
tail -2 $OUT/gpu_tests.log; grep -E "^FAILED" $OUT/gpu_tests.log | sed 's/ - .*//' | head -30
P=$OUT/parity.log; : > $P; end=$((SECONDS + 200))
run() { [ $SECONDS -lt $end ] || { echo "== $* (no time)" >> $P; return; }; echo "== $*" >> $P
  timeout 40 python3 -m simprec parity "$@" --steps $STEPS >> $P 2>&1; echo "rc=$?" >> $P; }
for m in mlp gpt cnn; do for r in amp-fp16 amp-bf16 pure-fp16 o2-fp16; do
  run --backends numpy,torch:cuda --model $m --recipe $r; done
  run --backends torch:cuda --against native --model $m --recipe amp-fp16; done
grep -E "^==|rc=" $P | paste -s -d' ' | sed 's/ == /\n== /g'
timeout 150 python3 benchmarks/bench_gpu.py --budget 6 --json $OUT/bench_gpu.json > $OUT/bench_gpu.log 2>&1; echo bench rc=$?; tail -25 $OUT/bench_gpu.log
