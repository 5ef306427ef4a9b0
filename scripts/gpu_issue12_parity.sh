#!/usr/bin/env bash
# Issue 12 on the H200: cross-backend parity and the native peer run (part "parity", ~2 min),
# or the GPU step benchmark (part "bench", ~2.5 min). Results go to $OUT (default ./gpu_out):
# each command's table (.txt / .md) and JSON, and the pytest log.
#
#   OUT=/some/dir bash scripts/gpu_issue12_parity.sh parity
#   OUT=/some/dir bash scripts/gpu_issue12_parity.sh bench
set -u
part=${1:-parity}
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/backends${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/machine.txt" 2>&1
python -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__)" \
  >> "$OUT/machine.txt" 2>&1

run() {  # run NAME SECONDS COMMAND...: stdout+stderr to $OUT/NAME.txt, exit status noted
  local name=$1 limit=$2
  shift 2
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name: exit $?" >> "$OUT/status.txt"
}

if [ "$part" = parity ]; then
  run pytest_gpu 70 python -m pytest -q -p no:cacheprovider -m gpu \
    tests/test_parity_backends.py tests/test_interop.py
  run native_mlp_amp-fp16 25 python -m simprec parity --backends numpy --against native \
    --native-device cuda --model mlp --recipe amp-fp16 --steps 10 \
    --json "$OUT/native_mlp_amp-fp16.json"
  run native_gpt_amp-fp16 35 python -m simprec parity --backends numpy --against native \
    --native-device cuda --model gpt --recipe amp-fp16 --steps 5 \
    --json "$OUT/native_gpt_amp-fp16.json"
  run native_cnn_amp-fp16 20 python -m simprec parity --backends numpy --against native \
    --native-device cuda --model cnn --recipe amp-fp16 --steps 5 \
    --json "$OUT/native_cnn_amp-fp16.json"
  run torchcuda_gpt_amp-fp16 30 python -m simprec parity --backends numpy,torch:cuda \
    --model gpt --recipe amp-fp16 --steps 5 --json "$OUT/torchcuda_gpt_amp-fp16.json"
elif [ "$part" = bench ]; then
  run bench_gpu_native 60 python benchmarks/bench_gpu.py --native-only --repeats 10 \
    --json "$OUT/bench_gpu_native.json"
  run bench_gpu 100 python benchmarks/bench_gpu.py --repeats 10 --budget 8 \
    --json "$OUT/bench_gpu.json"
else
  echo "usage: $0 parity|bench" >&2
  exit 2
fi
cat "$OUT/status.txt"
