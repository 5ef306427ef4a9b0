#!/usr/bin/env bash
# Issue 14's acceptance runs on the H200: `simprec parity --backends numpy,cupy`, 100 steps, for
# the MLP, the CNN and the GPT under amp-fp16 and pure-fp16 (sm90) and the fp8 recipe with
# accumulate sm70: every loss and final weight of cupy against the NumPy reference.
#
# The numpy side dominates (no numba on the H200; the GPT's fp8/sm70 step ~2 s of one core),
# so the nine runs go in parallel, one BLAS thread each (the reference's pinned default), after
# one process has compiled the CUDA kernels into CuPy's cache. Under 8 minutes with 16 cores.
# Results in $OUT (default ./gpu_out): runs/<model>_<recipe>_<accumulate>.{txt,json},
# status.txt (each run's exit status: 0 bit-identical, 1 differs), summary.md (a table).
#
#   OUT=/some/dir bash scripts/gpu_issue14_runs.sh            # STEPS=100 LIMIT=450 by default
set -u
OUT=${OUT:-gpu_out}
STEPS=${STEPS:-100}
LIMIT=${LIMIT:-450}  # seconds per run
PAIR=${PAIR:-numpy,cupy}  # PAIR=numpy,numpy STEPS=2: a dry run of the script on a CPU
mkdir -p "$OUT/runs"
export PYTHONPATH="$PWD:$PWD/backends${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/machine.txt" 2>&1
python -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)" \
  >> "$OUT/machine.txt" 2>&1
nproc >> "$OUT/machine.txt"

start=$(date +%s)
timeout 240 python -c "
import time; t = time.perf_counter()
from simprec_cupy import _kernels, backend
backend.CupyBackend('')  # checks that fp32 subnormals survive (CuPy's -ftz=true undone)
_kernels.precompile()
print(f'kernels compiled and checked in {time.perf_counter() - t:.1f} s')" \
  > "$OUT/precompile.txt" 2>&1
echo "precompile: exit $?" >> "$OUT/status.txt"

for model in mlp cnn gpt; do
  for recipe in amp-fp16 pure-fp16 fp8; do
    acc=sm90
    [ "$recipe" = fp8 ] && acc=sm70
    name=${model}_${recipe}_${acc}
    (
      timeout "$LIMIT" python -m simprec parity --backends "$PAIR" --model "$model" \
        --recipe "$recipe" --accumulate "$acc" --steps "$STEPS" \
        --json "$OUT/runs/$name.json" > "$OUT/runs/$name.txt" 2>&1
      echo "$name: exit $?" >> "$OUT/status.txt"
    ) &
  done
done
wait
echo "wall: $(( $(date +%s) - start )) s" >> "$OUT/status.txt"

python - "$OUT" > "$OUT/summary.md" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("| model | recipe | accumulate | steps identical | losses identical | max loss ulp "
      "| final params identical | first difference | s |")
print("|---|---|---|---|---|---|---|---|---|")
for path in sorted((out / "runs").glob("*.json")):
    r = json.loads(path.read_text())
    s, c = r["summary"], r["config"]
    p = s["final_params"] or {"compared": 0, "differing": 0}
    first = s["first_difference"]
    where = ("-" if first is None else
             f"step {first['step']}: {first['op']} {first['module'] or ''} {first['name'] or ''}"
             f" {first['note'] or ''}")
    print(f"| {c['model']} | {c['recipe']} | {c['accumulate']} | {s['identical_steps']}/"
          f"{s['steps']} | {s['identical_losses']}/{s['steps']} | {s['max_loss_ulp']} | "
          f"{p['compared'] - p['differing']:,}/{p['compared']:,} | {str(where)[:80]} | "
          f"{r['seconds']:.0f} |")
missing = sorted(p.stem for p in (out / "runs").glob("*.txt")
                 if not p.with_suffix(".json").exists())
if missing:
    print(f"\nno result (timed out or failed; see runs/*.txt): {', '.join(missing)}")
EOF
cat "$OUT/status.txt" "$OUT/summary.md"
