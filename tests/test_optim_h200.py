"""SGD, Adam and AdamW against H200 captures of torch 2.11's CUDA paths (single-tensor,
foreach, fused, capturable), fp32 and fp16 parameters: every captured parameter after steps 1,
2 and 100 and every captured state after steps 1 and 100 must be bit-identical.

The inputs are regenerated from the seeds in tests/data/h200_capture/capture_optim.py (their
bits checked against the captures' digests); the expected outputs are SHA-256 digests of the
captured bit patterns (h200_optim_digests.npz, made by pack_optim.py). When a digest fails the
test names the first array that departs in step order and, for the small parameters p0/p1
whose step-1/2 bits are stored, the differing values.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np
import pytest

import simprec as sp
from simprec import optim

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "h200_capture")
sys.path.insert(0, HERE)
import capture_optim as C  # noqa: E402

DATA = np.load(os.path.join(HERE, "h200_optim_digests.npz"))
CLASSES = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW}

# Runs that do not match the H200, with the cause (checked to still fail: strict xfail).
KNOWN = {
    # betas (0.8, 0.99), eps 1e-6, fp32, on the three paths whose bias corrections are made on
    # the device (powf(float(beta), step), modelled as the correctly rounded power): identical
    # through step 2, 1-37 elements per parameter differ at step 100. Cause not found: the
    # default betas match all 100 steps on the same paths (their powers include near-ties
    # too), and fp16 parameters with these betas match.
    "adam_f32/betas/single_cap/const": "betas (0.8, 0.99) on a device bias-correction path",
    "adam_f32/betas/foreach_cap/const": "betas (0.8, 0.99) on a device bias-correction path",
    "adam_f32/betas/fused/const": "betas (0.8, 0.99) on a device bias-correction path",
    # fused Adam (not AdamW) with weight_decay: `grad += param * weight_decay` in the fused
    # kernel; neither one fp32 fma, nor a rounded product then an add, nor double arithmetic
    # reproduces every element (27 of 1000 of p2's exp_avg differ after step 1 with the fma)
    "adam_f32/wd/fused/const": "fused Adam's L2 weight decay term not reproduced",
}


def _runs():
    out = []
    for opt in CLASSES:
        for dt in ("f32", "f16"):
            keys = [str(k) for k in DATA[f"{opt}_{dt}::keys"]]
            for run in sorted({tuple(k.split("__")[:3]) for k in keys if k.count("__") >= 3}):
                ident = f"{opt}_{dt}/" + "/".join(run)
                marks = ([pytest.mark.xfail(strict=True, reason=KNOWN[ident])]
                         if ident in KNOWN else [])
                out.append(pytest.param(opt, dt, *run, id=ident, marks=marks))
    return out


_GRADS: dict = {}


def _grads(dt):
    """The 100 steps' gradients as fp32 host arrays holding values of the parameter format,
    checked against the captured digest of their bits."""
    if dt not in _GRADS:
        hd = np.float16 if dt == "f16" else np.float32
        steps = [[g.astype(hd) for g in C.step_grads(s)] for s in range(1, C.STEPS + 1)]
        digest = hashlib.sha256()
        for gs in steps:
            for g in gs:
                digest.update(np.ascontiguousarray(g).tobytes())
        for opt in CLASSES:
            assert digest.digest() == DATA[f"{opt}_{dt}::grads_sha"].tobytes(), \
                "regenerated gradients differ from the captured ones"
        _GRADS[dt] = [[g.astype(np.float32) for g in gs] for gs in steps]
    return _GRADS[dt]


def _bits(a, dt):
    """Bit patterns; a NaN is CUDA's canonical one (fp16 0x7FFF, fp32 0x7FFFFFFF): simprec keeps
    values, not NaN payloads (fp16 Adam makes 0/0 where a zero gradient meets an eps that
    underflows in fp16)."""
    if dt == "f16":
        return np.where(np.isnan(a), np.uint16(0x7FFF), a.astype(np.float16).view(np.uint16))
    return np.where(np.isnan(a), np.uint32(0x7FFFFFFF), a.view(np.uint32))


def _replay(opt, dt, cfg, path, sched):
    """Run simprec's optimizer as the capture ran torch's; {capture key: our bits}.

    Every path's arithmetic is elementwise with the same scalars for every parameter (one
    step count for all), so the five captured parameters are run as one flat parameter (five
    times faster) and split afterwards."""
    meta = json.loads(str(DATA[f"{opt}_{dt}::meta"]))
    kw = dict(meta["configs"][cfg], **meta["paths"][path])
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    fmt = sp.fp16 if dt == "f16" else sp.fp32
    hd = np.float16 if dt == "f16" else np.float32
    init = C.init_params(dt)
    sizes = np.cumsum([a.size for a in init])[:-1]
    flat = np.concatenate([a.ravel() for a in init]).astype(hd).astype(np.float32)
    param = sp.tensor(flat, fmt=fmt, requires_grad=True)
    base = kw["lr"]
    if sched == "tensor":
        kw["lr"] = sp.tensor(np.float32(base))
    opt_obj = CLASSES[opt]([param], **kw)
    group = opt_obj.param_groups[0]
    out = {}
    prefix = f"{cfg}__{path}__{sched}"

    def record(name, values, step):
        for i, part in enumerate(np.split(values, sizes)):
            key = f"{prefix}__p{i}__{name}step{step}"
            out[key] = _bits(part.reshape(init[i].shape), dt)

    for step, grads in enumerate(_grads(dt), 1):
        if sched == "sched":
            group["lr"] = C.lr_at(base, step)
        elif sched == "tensor":
            group["lr"] = sp.tensor(np.float32(C.lr_at(base, step)))  # lr_tensor.fill_(float)
        param.grad = sp.tensor(np.concatenate([g.ravel() for g in grads]), fmt=fmt)
        opt_obj.step()
        if step in C.SAVE_PARAMS_AT:
            record("", param.numpy(), step)
        if step in C.SAVE_STATE_AT:
            for name in C.STATE_NAMES:
                if name in opt_obj.state[param]:
                    record(name + "__", opt_obj.state[param][name].numpy(), step)
    return out


def _step_of(key):
    return int(key.rsplit("__step", 1)[1])


@pytest.mark.slow
@pytest.mark.parametrize("opt, dt, cfg, path, sched", _runs())
def test_optimizer_bit_identical_to_h200(opt, dt, cfg, path, sched):
    name = f"{opt}_{dt}"
    prefix = f"{cfg}__{path}__{sched}__"
    expected = {str(k): str(s) for k, s in zip(DATA[f"{name}::keys"], DATA[f"{name}::sha"],
                                               strict=True) if str(k).startswith(prefix)}
    ours = _replay(opt, dt, cfg, path, sched)
    assert set(expected) <= set(ours), f"missing: {sorted(set(expected) - set(ours))[:5]}"
    bad = [k for k in expected
           if hashlib.sha256(np.ascontiguousarray(ours[k]).tobytes()).hexdigest() != expected[k]]
    if bad:
        bad.sort(key=lambda k: (_step_of(k), k))
        detail = []
        for k in bad:
            ref = f"{name}::{k}"
            if ref in DATA.files:
                diff = np.nonzero(DATA[ref].ravel() != ours[k].ravel())[0]
                detail.append(f"{k}: elements {diff.tolist()} ours {ours[k].ravel()[diff]} "
                              f"H200 {DATA[ref].ravel()[diff]}")
        pytest.fail(f"{len(bad)} of {len(expected)} arrays differ; first (in step order): "
                    f"{bad[:6]}" + ("\n" + "\n".join(detail[:4]) if detail else ""))


def test_initial_parameters_regenerate():
    """The seeds in capture_optim.py give the captured initial parameters (fp32 and fp16)."""
    for dt in ("f32", "f16"):
        keys = [str(k) for k in DATA[f"sgd_{dt}::keys"]]
        shas = dict(zip(keys, (str(s) for s in DATA[f"sgd_{dt}::sha"]), strict=True))
        hd = np.float16 if dt == "f16" else np.float32
        for i, p in enumerate(C.init_params(dt)):
            b = p.astype(hd).view(np.uint16 if dt == "f16" else np.uint32)
            assert hashlib.sha256(b.tobytes()).hexdigest() == shas[f"init__p{i}"]
        _grads(dt)


def test_default_path_is_foreach_as_torch_on_cuda():
    from simprec.optim import _kernels as K

    assert K.resolve_path({"foreach": None, "fused": None}) == "foreach"
    assert K.resolve_path({"foreach": False}) == "single"
    assert K.resolve_path({"fused": True}) == "fused"
    with pytest.raises(RuntimeError):
        K.resolve_path({"fused": True, "foreach": True})
