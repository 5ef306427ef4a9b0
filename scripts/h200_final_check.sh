#!/usr/bin/env bash
# The lead's final H200 batch: 100-step parity numpy(sm90) vs torch:cuda for three models and four
# recipes, torch:cuda against native torch AMP, the CuPy backend's checks (scripts/gpu_issue14_cupy.sh)
# and the one-GPU data-parallel checks (scripts/dist_h200.sh), all at once; results.tgz in $OUT.
export PYTHONPATH=$PWD:$PWD/backends PYTHONUNBUFFERED=1
W=/tmp/final; mkdir -p $W/par; STEPS=${STEPS:-100}
par() { local name=$1; shift
  (OMP_NUM_THREADS=2 timeout ${LIMIT:-420} python3 -m simprec parity "$@" --steps $STEPS --no-trace \
     > $W/par/$name.txt 2>&1; echo "rc=$?" >> $W/par/$name.txt) & }
for m in mlp cnn gpt; do for r in amp-fp16 amp-bf16 pure-fp16 o2-fp16; do
  par $m-$r --backends numpy,torch:cuda --model $m --recipe $r; done
  par native-$m --backends torch:cuda --against native --model $m --recipe amp-fp16; done
(OUT=$W/cupy timeout 400 bash scripts/gpu_issue14_cupy.sh > $W/cupy.log 2>&1) &
(OUT=$W/dist timeout 400 bash scripts/dist_h200.sh > $W/dist.log 2>&1) &
wait
tar czf $OUT/results.tgz -C $W .
for f in $W/par/*.txt; do echo "$(basename $f .txt): $(grep -E 'identical steps|final parameters' $f | tr '\n' ' ') $(tail -1 $f)"; done
cat $W/cupy/status.txt; tail -5 $W/cupy/pytest_cupy.txt; tail -12 $W/dist/result.txt
