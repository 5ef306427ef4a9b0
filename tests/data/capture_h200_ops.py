"""Capture tests/data/h200_ops.npz on a CUDA GPU (torch): ground truth for test_parity_h200.py.

Run on the GPU machine from the repository root (reads tests/data/h200/elementwise_dev.npz's rows):
    OUT=. python tests/data/capture_h200_ops.py
Arrays hold bit patterns (uint16 for fp16/bf16, uint32 for fp32):
- grid_bits: 8192 of the 65536 16-bit patterns; g_{h,b}_<op>: torch CUDA results on those fp16
  (h) / bf16 (b) inputs x and upstream gradients g_{h,b}_dy: aten gelu_backward (erf, tanh),
  silu_backward, sigmoid_backward(dy, sigmoid(x)), tanh_backward(dy, tanh(x)), softplus and
  softplus_backward, erf, threshold_backward(dy, x, 0); for fp16 also pow(x, p), x / 3.0,
  x / 0.1, 3.0 / x and torch.add(x, dy, alpha=0.3).
- r_x, r_dy (2048 fp32) and r_<op>: the fp32 kernels (forward and backward) on them.
- w_*: rows of shared rows_x (fp16 (256, 1000)) with w_dY (fp32 upstream gradients):
  softmax / log_softmax backward and layer_norm's input gradient (shared ln_w, ln_b, fp32; first
  8 rows), mean, sum (rows, all, columns), cross_entropy with targets w_tgt (plain, fp16,
  label_smoothing=0.1).
"""

import json
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.environ.get("OUT", ".")
dev = "cuda"
rng = np.random.default_rng(5)
A = torch.ops.aten


def b16(t):
    return t.detach().cpu().view(torch.int16).numpy().view(np.uint16)


def b32(t):
    return t.detach().cpu().view(torch.int32).numpy().view(np.uint32)


out = {}
grid = np.sort(np.random.default_rng(0).choice(65536, 8192, replace=False)).astype(np.uint16)
out["grid_bits"] = grid
with torch.no_grad():
    for pre, dt in (("h", torch.float16), ("b", torch.bfloat16)):
        x = torch.from_numpy(grid.view(np.int16).copy()).view(dt).to(dev)
        dy = rng.standard_normal(grid.size).astype(np.float32) * np.exp2(
            rng.integers(-12, 6, grid.size)
        )
        dy = torch.from_numpy(dy.astype(np.float32)).to(dev).to(dt)
        res = {
            "dy": dy,
            "gelu_bwd": A.gelu_backward(dy, x, approximate="none"),
            "gelu_tanh_bwd": A.gelu_backward(dy, x, approximate="tanh"),
            "silu_bwd": A.silu_backward(dy, x),
            "sigmoid_bwd": A.sigmoid_backward(dy, torch.sigmoid(x)),
            "tanh_bwd": A.tanh_backward(dy, torch.tanh(x)),
            "softplus": F.softplus(x),
            "softplus_bwd": A.softplus_backward(dy, x, 1.0, 20.0),
            "erf": torch.erf(x),
            "threshold_bwd": A.threshold_backward(dy, x, 0),
        }
        if pre == "h":
            for p in (2, 3, -2, 0.1, 1.7, 2.5, -1.5):
                res[f"pow_{p}"] = torch.pow(x, p)
            res.update(
                {
                    "div3": x / 3.0,
                    "div0.1": x / 0.1,
                    "rdiv3": 3.0 / x,
                    "mul_alpha": torch.add(x, dy, alpha=0.3),
                }
            )
        for k, v in res.items():
            out[f"g_{pre}_{k}"] = b16(v)
    n = 2048
    x = torch.from_numpy(
        np.concatenate([rng.uniform(-8, 8, n - 512), rng.uniform(-0.7, 0.7, 512)]).astype(
            np.float32
        )
    ).to(dev)
    dy = torch.from_numpy(rng.standard_normal(n).astype(np.float32)).to(dev)
    out["r_x"], out["r_dy"] = b32(x), b32(dy)
    for k, t in (
        ("gelu", F.gelu(x)),
        ("gelu_tanh", F.gelu(x, approximate="tanh")),
        ("silu", F.silu(x)),
        ("sigmoid", torch.sigmoid(x)),
        ("tanh", torch.tanh(x)),
        ("exp", torch.exp(x)),
        ("softplus", F.softplus(x)),
        ("erf", torch.erf(x)),
        ("gelu_bwd", A.gelu_backward(dy, x, approximate="none")),
        ("gelu_tanh_bwd", A.gelu_backward(dy, x, approximate="tanh")),
        ("silu_bwd", A.silu_backward(dy, x)),
        ("sigmoid_bwd", A.sigmoid_backward(dy, torch.sigmoid(x))),
        ("tanh_bwd", A.tanh_backward(dy, torch.tanh(x))),
        ("softplus_bwd", A.softplus_backward(dy, x, 1.0, 20.0)),
    ):
        out["r_" + k] = b32(t)
    shared_ew = np.load(os.path.join(os.path.dirname(__file__), "h200", "elementwise_dev.npz"))
    rows = shared_ew["rows_x"]
    X = torch.from_numpy(rows.view(np.float16)).to(dev)
    Xf = X.float()
    dY = torch.from_numpy(rng.standard_normal((256, 1000)).astype(np.float32)).to(dev)
    w = {"dY": b32(dY)[:8]}
    ln_w = torch.from_numpy(shared_ew["ln_w"].view(np.float32)).to(dev)
    ln_b = torch.from_numpy(shared_ew["ln_b"].view(np.float32)).to(dev)
    _, mean, rstd = A.native_layer_norm(Xf, [1000], ln_w, ln_b, 1e-5)
    gx = A.native_layer_norm_backward(dY, Xf, [1000], mean, rstd, ln_w, ln_b, [True, False, False])[
        0
    ]
    w["ln_gx"] = b32(gx)[:8]
    w["smx_bwd16"] = b16(
        A._softmax_backward_data(dY.half(), torch.softmax(X, -1), -1, torch.float16)
    )[:8]
    w["smx_bwd32"] = b32(A._softmax_backward_data(dY, torch.softmax(Xf, -1), -1, torch.float32))[:8]
    w["lsm_bwd32"] = b32(
        A._log_softmax_backward_data(dY, torch.log_softmax(Xf, -1), -1, torch.float32)
    )[:8]
    l16 = torch.log_softmax(X, -1)
    w["lsm16"] = b16(l16)[:8]
    w["lsm_bwd16"] = b16(A._log_softmax_backward_data(dY.half(), l16, -1, torch.float16))[:8]
    w.update(
        mean16=b16(X.mean(-1)),
        mean32=b32(Xf.mean(-1)),
        sum16_all=b16(X.sum()),
        sum32_all=b32(Xf.sum()),
        sum32_col=b32(Xf.sum(0)),
        sum16_col=b16(X.sum(0)),
    )
    tgt = torch.from_numpy(rng.integers(0, 1000, 256)).to(dev)
    w.update(
        tgt=tgt.cpu().numpy(),
        ce32=b32(F.cross_entropy(Xf, tgt)),
        ce16=b16(F.cross_entropy(X, tgt)),
        ce32_ls=b32(F.cross_entropy(Xf, tgt, label_smoothing=0.1)),
    )
    out.update({"w_" + k: v for k, v in w.items()})
out["meta"] = np.array(
    json.dumps(
        {
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
        }
    )
)
np.savez_compressed(os.path.join(OUT, "h200_ops.npz"), **out)
