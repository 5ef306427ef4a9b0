"""Record, on the GPU, every step of the Adam runs simprec does not yet match (docs/fidelity.md,
"Optimizers on CUDA"), to find the first step and element where they depart.

    python3 scripts/capture_optim_steps.py --out $OUT [--device cuda]

torch and numpy only. Inputs come from tests/data/h200_capture/capture_optim.py (same seeds);
writes OUT/h200_optim_steps.npz with `{cfg}__{path}__p{i}__step{s}` (fp32 bits, every step
1..100) and `{cfg}__{path}__{state}__p{i}__step{s}` for exp_avg / exp_avg_sq, for the three
smallest parameters p0..p2 (1, 7, 1000 elements).
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "data", "h200_capture"))
import capture_optim as C  # noqa: E402
from _common import bits, save, setup_torch, to_torch  # noqa: E402

RUNS = [("betas", "single_cap"), ("betas", "foreach_cap"), ("betas", "fused"), ("wd", "fused")]


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    meta = setup_torch(args.device)
    out, errors = {}, {}
    grads = [[to_torch(g, "f32", args.device) for g in C.step_grads(s)]
             for s in range(1, C.STEPS + 1)]
    for cfg, path in RUNS:
        kw = dict(C.CONFIGS["adam"][cfg], **dict(C.PATHS, **C.CAPTURABLE_PATHS)[path])
        try:
            params = [torch.nn.Parameter(to_torch(p, "f32", args.device))
                      for p in C.init_params("f32")]
            opt = torch.optim.Adam(params, **kw)
            for step, gs in enumerate(grads, 1):
                for p, g in zip(params, gs, strict=True):
                    p.grad = g.clone()
                opt.step()
                for i, p in enumerate(params[:3]):  # p0..p2: 1, 7, 1000 elements (size cap)
                    out[f"{cfg}__{path}__p{i}__step{step}"] = bits(p)
                    for name in ("exp_avg", "exp_avg_sq"):
                        out[f"{cfg}__{path}__{name}__p{i}__step{step}"] = bits(opt.state[p][name])
        except Exception as e:  # record and go on
            errors[f"{cfg}__{path}"] = f"{type(e).__name__}: {e}"
    save(args.out, "h200_optim_steps", out, dict(meta, runs=RUNS, errors=errors))


if __name__ == "__main__":
    main()
