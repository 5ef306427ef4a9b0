#!/usr/bin/env bash
# Issue 13: simprec_capture.py on the H200 (six runs of the demo networks, some unlike the shipped
# captures: other optimizers, paths, schedules of the scale, clip), then `simprec replay` of each
# on the machine's CPUs, in parallel. Captures, JSON verdicts and logs under $OUT/tool.
#   bash scripts/h200_capture_tool_check.sh                      # on the H200 (~3 min)
#   DEVICE=cpu SMALL=--small STEPS=3 bash scripts/h200_capture_tool_check.sh   # a CPU dry run
export PYTHONPATH=$PWD:$PWD/backends PYTHONUNBUFFERED=1
T=simprec/tools/simprec_capture.py; W=${OUT:-/tmp}/tool; mkdir -p $W
DEV="--device ${DEVICE:-cuda} ${SMALL:-}"; S=${STEPS:-}
cap() { local name=$1 steps=$2; shift 2
  python3 $T --out $W/$name.npz $DEV --steps ${S:-$steps} "$@" > $W/$name.capture.txt 2>&1 \
    || echo "capture failed: $name (see $name.capture.txt)"; }
cap gpt_fp16_adamw 40 --demo gpt --record-weights 0
cap gpt_bf16_adamw_fused 40 --demo gpt --autocast bf16 --path fused
cap mlp_fp16_adam_clip 50 --demo mlp --optimizer adam --clip 0.5 --init-scale 4096 --growth-interval 10
cap gpt_fp16_adamw_single_wd 30 --demo gpt --path single --lr 1e-3 --weight-decay 0.1 --clip 1.0
cap mlp_fp16_sgd 50 --demo mlp --optimizer sgd --lr 0.05 --init-scale 65536 --growth-interval 3
cap mlp_bf16_adamw_fused_clip 50 --demo mlp --optimizer adamw --autocast bf16 --path fused --clip 1.0
for f in $W/*.npz; do
  (OMP_NUM_THREADS=2 timeout ${LIMIT:-420} python3 -m simprec replay $f -q --json ${f%.npz}.json \
     > ${f%.npz}.replay.txt 2>&1; echo "rc=$?" >> ${f%.npz}.replay.txt) &
done
wait
for f in $W/*.replay.txt; do echo "$(basename $f .replay.txt): $(grep -v '^rc=' $f | head -2 | tr '\n' ' ') $(tail -1 $f)"; done
