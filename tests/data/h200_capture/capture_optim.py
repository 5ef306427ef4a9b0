"""SGD, Adam and AdamW as torch runs them on the GPU: each path (single-tensor, foreach, fused,
and capturable for Adam/AdamW), fp32 and fp16 parameters, 100 steps.

    python tests/data/h200_capture/capture_optim.py --out DIR [--device cuda]

Writes h200_optim_{sgd,adam,adamw}_{f32,f16}.npz. Parameters: tensors of shapes SHAPES, initial
values `init_params(dtype)`; step s (1-based) gets gradients `step_grads(s, dtype)`, both drawn
from seeds on the host (fp32, then rounded to fp16 for fp16 parameters). Keys:
- `init__p{i}`, `grad__p{i}__step{1,2}`: inputs (bits); `grads_sha`: SHA-256 of all 100 steps'
  gradient bits (p0..p4 of step 1, then step 2, ...).
- `{cfg}__{path}__{sched}__p{i}__step{1,2,100}`: parameter bits after that step.
- `{cfg}__{path}__{sched}__p{i}__{state}__step{1,100}`: optimizer state bits (momentum_buffer,
  exp_avg, exp_avg_sq, max_exp_avg_sq).
cfg: a key of the optimizer's CONFIGS (kwargs in meta["configs"]); path: a key of PATHS (kwargs
in meta["paths"]); sched: "const" (lr fixed), "sched" (lr set to `lr_at(base, s)` as a Python
float before step s), "tensor" (same values in a 0-dim fp32 tensor on the device, filled before
each step). Combinations torch refuses are listed in meta["errors"] with torch's message.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bits, cli, save, setup_torch, to_torch  # noqa: E402

SHAPES = [(1,), (7,), (1000,), (1027,), (33, 65)]
SMALL_SHAPES = [(1,), (7,), (100,), (3, 5)]
STEPS = 100
SAVE_PARAMS_AT = (1, 2, 100)
SAVE_STATE_AT = (1, 100)

CONFIGS = {
    "sgd": {
        "plain": dict(lr=0.05),
        "mom": dict(lr=0.05, momentum=0.9),
        "nest": dict(lr=0.05, momentum=0.9, nesterov=True),
        "damp": dict(lr=0.05, momentum=0.9, dampening=0.3),
        "mom_wd": dict(lr=0.05, momentum=0.9, weight_decay=1e-2),
        "nest_wd_max": dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2,
                            maximize=True),
        "wd_max": dict(lr=0.05, weight_decay=1e-2, maximize=True),
    },
    "adam": {
        "default": dict(lr=3e-3),
        "ams": dict(lr=3e-3, amsgrad=True),
        "wd": dict(lr=3e-3, weight_decay=1e-2),
        "max": dict(lr=3e-3, maximize=True),
        "ams_wd_max": dict(lr=3e-3, amsgrad=True, weight_decay=1e-2, maximize=True),
        "betas": dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6),
    },
    "adamw": {
        "default": dict(lr=3e-3),
        "ams": dict(lr=3e-3, amsgrad=True),
        "wd_max": dict(lr=3e-3, weight_decay=0.1, maximize=True),
        "ams_wd_max": dict(lr=3e-3, amsgrad=True, weight_decay=0.1, maximize=True),
        "nowd": dict(lr=3e-3, weight_decay=0.0),
    },
}
# the configs also run with a changing lr ("sched", "tensor")
SCHEDULED = {"sgd": ("mom",), "adam": ("default", "ams"), "adamw": ("default",)}
PATHS = {
    "single": dict(foreach=False),
    "foreach": dict(foreach=True),
    "fused": dict(fused=True),
}
CAPTURABLE_PATHS = {
    "single_cap": dict(foreach=False, capturable=True),
    "foreach_cap": dict(foreach=True, capturable=True),
}
STATE_NAMES = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def init_params(dtype: str, shapes=SHAPES) -> list[np.ndarray]:
    """fp32 initial values (N(0, 0.25)); fp16 parameters are these rounded."""
    g = np.random.default_rng(1300)
    return [(g.standard_normal(s, dtype=np.float32) * 0.5).astype(np.float32) for s in shapes]


def step_grads(step: int, shapes=SHAPES) -> list[np.ndarray]:
    """fp32 gradients of step `step` (1-based): N(0,1) times 10**U(-3, 0) per element, 1% zeros.
    fp16 parameters get these rounded to fp16."""
    g = np.random.default_rng(13_000 + step)
    out = []
    for s in shapes:
        v = g.standard_normal(s, dtype=np.float32)
        v = v * (10.0 ** g.uniform(-3.0, 0.0, s)).astype(np.float32)
        v[g.random(s) < 0.01] = 0.0
        out.append(v.astype(np.float32))
    return out


def lr_at(base: float, step: int) -> float:
    """The "sched" learning rate before step `step` (1-based): cosine from base to base/10 over
    STEPS, computed in float64."""
    return base * (0.1 + 0.45 * (1.0 + math.cos(math.pi * (step - 1) / STEPS)))


def run_one(torch, opt_cls, kwargs, path_kw, sched, dtype, device, shapes, grads_dev, out, key):
    params = [torch.nn.Parameter(to_torch(p, dtype, device)) for p in init_params(dtype, shapes)]
    base = kwargs["lr"]
    kw = dict(kwargs, **path_kw)
    lr_tensor = None
    if sched == "tensor":
        lr_tensor = torch.tensor(base, dtype=torch.float32, device=device)
        kw["lr"] = lr_tensor
    opt = opt_cls(params, **kw)
    for step in range(1, len(grads_dev) + 1):
        if sched == "sched":
            opt.param_groups[0]["lr"] = lr_at(base, step)
        elif sched == "tensor":
            lr_tensor.fill_(lr_at(base, step))
        for p, g in zip(params, grads_dev[step - 1], strict=True):
            p.grad = g.clone()
        opt.step()
        if step in SAVE_PARAMS_AT:
            for i, p in enumerate(params):
                out[f"{key}__p{i}__step{step}"] = bits(p)
        if step in SAVE_STATE_AT:
            for i, p in enumerate(params):
                for name in STATE_NAMES:
                    s = opt.state[p].get(name)
                    if s is not None:
                        out[f"{key}__p{i}__{name}__step{step}"] = bits(s)


def capture(out_dir: str, device: str = "cuda", small: bool = False) -> None:
    import torch

    meta0 = setup_torch(device)
    shapes = SMALL_SHAPES if small else SHAPES
    classes = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    host_grads = [step_grads(s, shapes) for s in range(1, STEPS + 1)]
    for opt_name, configs in CONFIGS.items():
        paths = dict(PATHS, **(CAPTURABLE_PATHS if opt_name != "sgd" else {}))
        for dtype in ("f32", "f16"):
            t0 = time.time()
            out, errors = {}, {}
            host_dtype = np.float16 if dtype == "f16" else np.float32
            for i, p in enumerate(init_params(dtype, shapes)):
                out[f"init__p{i}"] = p.astype(host_dtype).view(
                    np.uint16 if dtype == "f16" else np.uint32)
            digest = hashlib.sha256()
            for step, gs in enumerate(host_grads, 1):
                for i, g in enumerate(gs):
                    gb = np.ascontiguousarray(g.astype(host_dtype))
                    digest.update(gb.tobytes())
                    if step in (1, 2):
                        out[f"grad__p{i}__step{step}"] = gb.view(gb.dtype.str.replace("f", "u"))
            out["grads_sha"] = np.frombuffer(digest.digest(), np.uint8)
            grads_dev = [[to_torch(g, dtype, device) for g in gs] for gs in host_grads]
            for cfg, kwargs in configs.items():
                scheds = ("const", "sched", "tensor") if cfg in SCHEDULED[opt_name] else ("const",)
                for path, path_kw in paths.items():
                    for sched in scheds:
                        key = f"{cfg}__{path}__{sched}"
                        try:
                            run_one(torch, classes[opt_name], kwargs, path_kw, sched, dtype,
                                    device, shapes, grads_dev, out, key)
                        except Exception as e:  # torch refuses some combinations: record them
                            for k in [k for k in out if k.startswith(key + "__")]:
                                del out[k]
                            errors[key] = f"{type(e).__name__}: {e}"
            meta = dict(meta0, optimizer=opt_name, dtype=dtype, shapes=shapes, steps=STEPS,
                        configs=configs, paths=paths, scheduled=SCHEDULED[opt_name],
                        errors=errors, seconds=round(time.time() - t0, 2))
            save(out_dir, f"h200_optim_{opt_name}_{dtype}", out, meta)


if __name__ == "__main__":
    cli(capture, __doc__)
