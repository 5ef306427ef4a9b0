"""Which cuBLAS/cuBLASLt kernel torch runs for each GEMM case simprec's kernel-choice map does
not yet reproduce (h200_gemm_digests.json "unexplained"), with capture_gemm.py's settings.
torch only (no simprec):

    python3 tests/data/h200_capture/profile_gemm_kernels.py --out $OUT [--all]

Writes OUT/h200_gemm_kernels.json: case -> list of CUDA kernel names (torch.profiler); --all
profiles every case of the grid (about a minute)."""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import setup_torch  # noqa: E402
from capture_gemm import one  # noqa: E402


def main() -> None:
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--all", action="store_true")
    args = parser.parse_args()
    meta = setup_torch("cuda")
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "h200_gemm_digests.json")) as f:
        data = json.load(f)
    cases = sorted(data["cases"] if args.all else data["unexplained"])
    result = {"meta": meta}
    for case in cases:
        op, dtype, dims = case.split("__")
        dims = tuple(map(int, dims.split("_")))
        one(torch, F, op, dtype, dims, "cuda")            # warm-up: heuristics cached
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            one(torch, F, op, dtype, dims, "cuda")
            torch.cuda.synchronize()
        result[case] = [e.name for e in prof.events()
                        if e.device_type == torch.autograd.DeviceType.CUDA
                        and "memcpy" not in e.name.lower() and "Memcpy" not in e.name]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "h200_gemm_kernels.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"{len(cases)} cases profiled")


if __name__ == "__main__":
    main()
