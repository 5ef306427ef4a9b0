"""Where the torch backend's AMP step spends its GPU time: torch.profiler over a few steps of
simprec's step and of the hand-written native step (the cases of bench_gpu.py).

    python benchmarks/profile_gpu_step.py --out DIR [--only gpt,mlp] [--steps 3] [--quick]

Writes DIR/<case>-<side>.txt: the operator and kernel tables (sorted by GPU time and by count),
the kernels launched per step and the wall time per step; DIR/summary.json the totals. The
profile is the evidence behind the speed work of issue 12 (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_gpu  # noqa: E402
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402


def profile_step(step, device: str, steps: int, out: Path, label: str) -> dict:
    for _ in range(2):  # warm-up: allocator, cuBLASLt heuristics, lazy state
        step()
    bench_gpu._sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=activities, record_shapes=False) as prof:
        for _ in range(steps):
            step()
        bench_gpu._sync(device)
    wall = (time.perf_counter() - t0) / steps
    events = prof.key_averages()
    gpu_key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    kernels = [e for e in events if getattr(e, "device_type", None) is not None
               and str(e.device_type).endswith("CUDA")]
    launches = sum(e.count for e in kernels) / steps
    gpu_time = sum(getattr(e, "self_device_time_total", 0) for e in kernels) / steps / 1e6
    text = [f"{label}: wall {wall * 1e3:.1f} ms/step, {launches:.0f} kernels/step, "
            f"GPU busy {gpu_time * 1e3:.1f} ms/step", ""]
    text.append(events.table(sort_by=gpu_key, row_limit=70, max_name_column_width=90))
    text.append(events.table(sort_by="count", row_limit=40, max_name_column_width=90))
    (out / f"{label}.txt").write_text("\n".join(text))
    print(text[0], flush=True)
    return {"wall_ms": wall * 1e3, "kernels_per_step": launches, "gpu_busy_ms": gpu_time * 1e3}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--only", default="gpt,mlp")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny sizes on the CPU (a dry run)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = bench_gpu.QUICK if args.quick else bench_gpu.FULL
    device = "cpu" if args.quick else "cuda"
    backend = bench_gpu._quick_backend() if args.quick else "torch:cuda"
    if not args.quick:
        bench_gpu.pin_cuda_gemm_settings()
    summary = {}
    for name in args.only.split(","):
        lm = name == "gpt"
        for recipe in ("amp-fp16", "fp32"):
            model, batch = bench_gpu.build(name, sizes[name])
            step = bench_gpu.native_step(model, batch, recipe, device, "explicit", lm)
            summary[f"{name}-{recipe}-native"] = profile_step(
                step, device, args.steps, out, f"{name}-{recipe}-native")
            del step
            step = bench_gpu.simprec_step(model, batch, recipe, backend, lm)
            summary[f"{name}-{recipe}-simprec"] = profile_step(
                step, device, args.steps, out, f"{name}-{recipe}-simprec")
            del step, model
            if device == "cuda":
                torch.cuda.empty_cache()
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
