#!/usr/bin/env bash
# Issue 14 on the H200: the CuPy backend against the NumPy reference (~5 min). Results go to
# $OUT (default ./gpu_out): the pytest log, scripts/cupy_gpu_check.py's measurements (GEMM
# speed, cuBLASLt vs the emulated sm90 model, a GPT step), two cross-backend parity runs, and
# status.txt with every command's exit status.
#
#   OUT=/some/dir bash scripts/gpu_issue14_cupy.sh
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/backends${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/machine.txt" 2>&1
python -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)" \
  >> "$OUT/machine.txt" 2>&1

run() {  # run NAME SECONDS COMMAND...: stdout+stderr to $OUT/NAME.txt, exit status noted
  local name=$1 limit=$2
  shift 2
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name: exit $?" >> "$OUT/status.txt"
}

run pytest_cupy 300 python -m pytest -q -p no:cacheprovider -rfE --durations=10 \
  tests/test_cupy_backend.py tests/test_cupy_no_ftz.py -k "not ptx"
run cupy_gpu_check 100 python scripts/cupy_gpu_check.py "$OUT"
run parity_mlp_fp8_sm70 40 python -m simprec parity --backends numpy,cupy --model mlp \
  --recipe fp8 --accumulate sm70 --steps 20 --json "$OUT/parity_mlp_fp8_sm70.json"
run parity_gpt_amp-fp16 60 python -m simprec parity --backends numpy,cupy --model gpt \
  --recipe amp-fp16 --steps 5 --json "$OUT/parity_gpt_amp-fp16.json"
cat "$OUT/status.txt"
tail -25 "$OUT/pytest_cupy.txt"
cat "$OUT/cupy_gpu_check.txt"
