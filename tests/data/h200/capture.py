"""Capture H200 ground truth for simprec fidelity checks (run on the GPU machine).
Writes npz files under $OUT (or the current folder): matmul_dev.npz, elementwise_dev.npz,
amp_trace_dev.npz.
Run on a CUDA machine with torch; `pack.py` then turns them into the files of this folder
(README.md). tests/test_gpu.py imports the capture_* functions to redo the captures live."""

import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.environ.get("OUT", ".")
dev = "cuda"
torch.backends.cuda.preferred_blas_library("cublaslt")
torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = (False, False)
torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = (False, False)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def bits(t):
    t = t.detach().cpu()
    if t.dtype == torch.float16:
        return t.view(torch.int16).numpy().view(np.uint16)
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    if t.dtype == torch.float32:
        return t.view(torch.int32).numpy().view(np.uint32)
    raise TypeError(t.dtype)


def rand_inputs(g, shape, dtype, wide):
    x = torch.randn(shape, generator=g, device=dev)
    if wide:
        e = torch.randint(-10, 6, shape, generator=g, device=dev).float()
        x = x * torch.pow(2.0, e)
    return x.to(dtype)


def capture_matmul(seed, shapes):
    g = torch.Generator(device=dev)
    g.manual_seed(seed)
    rec = {}
    meta = []
    for i, (M, K, N, wide) in enumerate(shapes):
        for dname, dt in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
            A = rand_inputs(g, (M, K), dt, wide)
            B = rand_inputs(g, (K, N), dt, wide)
            bias = rand_inputs(g, (N,), dt, False)
            d32 = torch.mm(A, B, out_dtype=torch.float32)
            d16 = A @ B
            lin = F.linear(A, B.t().contiguous(), bias)  # fused bias epilogue
            assert torch.equal(d16, A @ B)
            k = f"{i}_{dname}"
            rec[k + "_A"] = bits(A)
            rec[k + "_B"] = bits(B)
            rec[k + "_bias"] = bits(bias)
            rec[k + "_D32"] = bits(d32)
            rec[k + "_D"] = bits(d16)
            rec[k + "_linear"] = bits(lin)
            meta.append(dict(key=k, M=M, K=K, N=N, wide=wide, dtype=dname))
    rec["meta"] = np.array(json.dumps(meta))
    return rec


def capture_elementwise(seed):
    g = torch.Generator(device=dev)
    g.manual_seed(seed)
    rec = {}
    allbits = torch.arange(0, 65536, dtype=torch.int32).to(torch.int16)
    x = allbits.view(torch.float16).to(dev)  # every fp16 bit pattern
    rec["x_all"] = bits(x)
    with torch.no_grad():
        for name, fn in [
            ("exp", torch.exp),
            ("log", torch.log),
            ("tanh", torch.tanh),
            ("sigmoid", torch.sigmoid),
            ("gelu_erf", lambda t: F.gelu(t)),
            ("gelu_tanh", lambda t: F.gelu(t, approximate="tanh")),
            ("relu", torch.relu),
            ("silu", F.silu),
            ("sqrt", torch.sqrt),
            ("rsqrt", torch.rsqrt),
            ("reciprocal", torch.reciprocal),
            ("mul_0.1", lambda t: t * 0.1),
            ("neg", torch.neg),
            ("square", lambda t: t * t),
            ("to_bf16", lambda t: t.to(torch.bfloat16)),
            ("to_fp32", lambda t: t.float()),
        ]:
            rec["fp16_" + name] = bits(fn(x))
        xb = allbits.view(torch.bfloat16).to(dev)
        rec["xb_all"] = bits(xb)
        for name, fn in [
            ("exp", torch.exp),
            ("tanh", torch.tanh),
            ("gelu_erf", lambda t: F.gelu(t)),
            ("to_fp16", lambda t: t.to(torch.float16)),
        ]:
            rec["bf16_" + name] = bits(fn(xb))
        # binary ops on random pairs
        a = rand_inputs(g, (200000,), torch.float16, True)
        b = rand_inputs(g, (200000,), torch.float16, True)
        rec["pair_a"] = bits(a)
        rec["pair_b"] = bits(b)
        for name, fn in [
            ("add", torch.add),
            ("sub", torch.sub),
            ("mul", torch.mul),
            ("div", torch.div),
            ("add_alpha0.3", lambda p, q: torch.add(p, q, alpha=0.3)),
        ]:
            rec["pair_" + name] = bits(fn(a, b))
        # fp32 -> fp16 / bf16 casts of random fp32 bit patterns
        r = torch.randint(
            -(2**31), 2**31 - 1, (1000000,), generator=g, device=dev, dtype=torch.int64
        ).to(torch.int32)
        f = r.view(torch.float32)
        rec["f32_bits"] = bits(f)
        rec["f32_to_fp16"] = bits(f.half())
        rec["f32_to_bf16"] = bits(f.bfloat16())
        # row reductions / softmax / layer_norm in fp16 (what autocast and plain fp16 do)
        X = rand_inputs(g, (256, 1000), torch.float16, False) * 3
        rec["rows_x"] = bits(X)
        rec["rows_softmax_fp16"] = bits(torch.softmax(X, dim=-1))
        rec["rows_log_softmax_fp32"] = bits(torch.log_softmax(X.float(), dim=-1))
        rec["rows_sum_fp16"] = bits(X.sum(dim=-1))
        rec["rows_sum_fp32"] = bits(X.float().sum(dim=-1))
        w = rand_inputs(g, (1000,), torch.float32, False)
        bb = rand_inputs(g, (1000,), torch.float32, False)
        rec["ln_w"] = bits(w)
        rec["ln_b"] = bits(bb)
        with torch.autocast("cuda", dtype=torch.float16):
            rec["rows_layer_norm_autocast"] = bits(F.layer_norm(X, (1000,), w, bb))
    return rec


class MLP(nn.Module):
    def __init__(s, din, dh, dout):
        super().__init__()
        s.fc1 = nn.Linear(din, dh)
        s.ln = nn.LayerNorm(dh)
        s.fc2 = nn.Linear(dh, dh)
        s.fc3 = nn.Linear(dh, dout)

    def forward(s, x):
        h = F.gelu(s.fc1(x))
        h = s.ln(h)
        h = torch.relu(s.fc2(h))
        return s.fc3(h)


def capture_amp_trace(
    seed, steps=60, init_scale=2.0**24, growth_interval=10, lr=0.05, small_loss=1.0
):
    torch.manual_seed(seed)
    din, dh, dout, B = 64, 256, 10, 128
    model = MLP(din, dh, dout).to(dev)
    init = {n: p.detach().cpu().numpy().copy() for n, p in model.named_parameters()}
    g = torch.Generator(device=dev)
    g.manual_seed(seed + 1)
    X = torch.randn(steps, B, din, generator=g, device=dev)
    Y = torch.randint(0, dout, (steps, B), generator=g, device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", init_scale=init_scale, growth_interval=growth_interval)
    losses, scales, found = [], [], []
    for t in range(steps):
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(X[t])
            loss = F.cross_entropy(out, Y[t]) * small_loss
        scaler.scale(loss).backward()
        scales.append(scaler.get_scale())
        scaler.unscale_(opt)
        found.append(float(sum(v.item() for v in scaler._found_inf_per_device(opt).values())))
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    rec = {"init_" + n: v for n, v in init.items()}
    rec.update({"final_" + n: p.detach().cpu().numpy() for n, p in model.named_parameters()})
    rec["X"] = X.cpu().numpy()
    rec["Y"] = Y.cpu().numpy()
    rec["loss"] = np.array(losses, np.float32)
    rec["scale"] = np.array(scales, np.float64)
    rec["found_inf"] = np.array(found)
    rec["config"] = np.array(
        json.dumps(
            dict(
                seed=seed,
                steps=steps,
                init_scale=init_scale,
                growth_interval=growth_interval,
                lr=lr,
                momentum=0.9,
                small_loss=small_loss,
                arch="Linear(64,256)-GELU-LayerNorm(256)-Linear(256,256)-ReLU-Linear(256,10)",
                batch=B,
                torch=torch.__version__,
                blas="cublaslt, no reduced precision, no split-K",
            )
        )
    )
    return rec


if __name__ == "__main__":
    shapes = [
        (64, 64, 64, False),
        (96, 200, 40, False),
        (128, 1024, 128, True),
        (1, 2048, 64, False),
        (64, 4096, 64, True),
    ]
    np.savez_compressed(os.path.join(OUT, "matmul_dev.npz"), **capture_matmul(1234, shapes))
    np.savez_compressed(os.path.join(OUT, "elementwise_dev.npz"), **capture_elementwise(1234))
    np.savez_compressed(os.path.join(OUT, "amp_trace_dev.npz"), **capture_amp_trace(1234))
