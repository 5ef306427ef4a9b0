"""H200 check for issue 13's GEMM map: the CNN's im2col GEMMs and transposed-operand layouts.

    PYTHONPATH=. python3 scripts/h200_gemm13_check.py --out $OUT      # about a minute

Two open questions (docs/fidelity.md, "GEMM kernel choice"):

1. The CNN under amp-fp16 departs from the torch backend by 1 fp16 ulp in one conv weight-
   gradient element at sporadic steps. The torch backend runs each GEMM as
   `torch.mm(a, b, out_dtype=torch.float32)` with K zero-padded to a multiple of 16; the conv1
   weight gradient is (16, 4096) @ (4096, 9): small M*N, large K, where cuBLASLt may pick
   split-K or another kernel. The backend sets `allow_fp16_reduced_precision_reduction =
   False`, which in torch >= 2.10 means (no reduced precision, split-K *allowed*); the
   captures set (False, False). Cases `cnn_*`: each GEMM of SmallCNN (batch 64, 8x8 digits,
   channels 16/32) as native torch runs it (`half`), as the torch backend calls it with the
   captures' settings (`f32pad`) and with the backend's own setting (`f32pad_splitk`), with
   kernel names, whether 5 repeats give the same bits, and the number of values that differ
   from simprec's models.
2. The map was measured on row-major A @ B (`mm`) and A @ Wᵀ (`linear`) only. A weight
   gradient is Gᵀ @ X (A transposed). Is the bf16 8-term-block kernel picked by the shape
   (K or N not a multiple of 8, the map's rule) or by operand strides (a leading dimension
   not a multiple of 8 half values: TMA needs 16-byte strides)? Cases `tn_*`: Aᵀ @ B with
   the two rules disagreeing.

Writes OUT/gemm13_check.json (per case: kernels, repeat_identical, and per model the number
of differing values: "plain" sm90, "map" = simprec._gemm_choice by shape, "ld" = the same
map keyed on operand strides, all compared after rounding to the half format, and for the
fp32-output modes "plain_fp32", the plain model's fp32 accumulator against the GPU's) and
OUT/gemm13_bits.npz (the outputs, uint16/uint32; inputs are regenerated from the seeds: numpy
PCG64 seed crc32("{case}-{dtype}-{seed}")).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import zlib

import numpy as np

# (name, M, N, K, a_transposed, b_transposed): C (M, N) = A (M, K) @ B (K, N); a transposed
# operand is the transpose view of a contiguous (K, M) array (Gᵀ in a weight gradient), b
# transposed the view of a contiguous (N, K) array (Wᵀ in a forward).
CNN = [("cnn_c1_fwd", 4096, 16, 9, False, True), ("cnn_c1_wgrad", 16, 9, 4096, True, False),
       ("cnn_c2_fwd", 1024, 32, 144, False, True), ("cnn_c2_dgrad", 1024, 144, 32, False, False),
       ("cnn_c2_wgrad", 32, 144, 1024, True, False), ("cnn_fc_wgrad", 10, 512, 64, True, False)]
TN = [("tn_m10", 10, 256, 128, True, False), ("tn_m20", 20, 256, 256, True, False),
      ("tn_k65", 64, 64, 65, True, False), ("tn_k130", 64, 128, 130, True, False),
      ("nn_k65", 64, 64, 65, False, False), ("nn_m10", 10, 256, 128, False, False)]
SEEDS = range(4)


def operands(name, dtype, seed, m, n, k, at, bt):
    g = np.random.default_rng(zlib.crc32(f"{name}-{dtype}-{seed}".encode()))
    a = g.standard_normal((k, m) if at else (m, k), dtype=np.float32)
    b = g.standard_normal((n, k) if bt else (k, n), dtype=np.float32)
    return a, b


def torch_case(torch, a, b, at, bt, dtype, mode, device="cuda"):
    """The GEMM on the GPU: 'half' as torch.mm (native), 'f32pad*' as the torch backend."""
    ta = torch.from_numpy(a).to(device).to(dtype)
    tb = torch.from_numpy(b).to(device).to(dtype)
    ta = ta.t() if at else ta
    tb = tb.t() if bt else tb
    if mode == "half":
        return torch.mm(ta, tb)
    pad = -ta.shape[1] % 16
    if pad:
        ta = torch.nn.functional.pad(ta, (0, pad))
        tb = torch.nn.functional.pad(tb, (0, 0, 0, pad))
    if device == "cpu":           # dry run: CPU torch has no half GEMM with an fp32 output
        return torch.mm(ta.float(), tb.float())
    return torch.mm(ta, tb, out_dtype=torch.float32)


def bits_of(t):
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.float32:
        return t.view(torch.int32).numpy().view(np.uint32)
    return t.view(torch.int16).numpy().view(np.uint16)


def models(a, b, at, bt, dt):
    """simprec's outputs (half bits) for this GEMM: plain, map by shape, map by strides."""
    from simprec import _gemm_choice
    from simprec.accumulate import _EMIN, _to_native
    from simprec.formats import bf16, fp16
    from simprec.formats import round as fround

    fmt = {"f16": fp16, "bf16": bf16}[dt]
    a32 = np.asarray(fround(a, fmt), np.float32)
    b32 = np.asarray(fround(b, fmt), np.float32)
    A = np.ascontiguousarray(a32.T if at else a32)[None]
    B = np.ascontiguousarray(b32.T if bt else b32)[None]
    m, k, n = A.shape[1], A.shape[2], B.shape[2]
    lda = m if at else k
    ldb = k if bt else n
    misaligned = lda % 8 or ldb % 8 or n % 8
    shape_choice = _gemm_choice.choose(m, n, k, dt)
    if dt == "bf16":
        ld_choice = _gemm_choice.GemmChoice(8, 32) if misaligned else _gemm_choice.DEFAULT
    else:
        ld_choice = shape_choice
    out = {}
    for name, choice in (("plain", _gemm_choice.DEFAULT), ("map", shape_choice),
                         ("ld", ld_choice)):
        acc = _gemm_choice.accumulate(A, B, _EMIN[fmt], choice)[0]
        out[name] = np.ascontiguousarray(_to_native(acc, fmt)).view(np.uint16)
        if name == "plain":                  # the fp32 accumulator: far more sensitive
            out["plain_fp32"] = np.ascontiguousarray(acc).view(np.uint32)
    out["choices"] = {"map": repr(shape_choice), "ld": repr(ld_choice)}
    return out


def main() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself")
    args = ap.parse_args()
    dev = args.device
    os.makedirs(args.out, exist_ok=True)
    # capture_gemm.py's settings: cuBLASLt, reduced-precision reductions and split-K off
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                    "data", "h200_capture"))
    from _common import setup_torch

    settings = setup_torch(dev)
    matmul = torch.backends.cuda.matmul

    def split_k(allowed):
        """(False, False) as the captures, or False as the torch backend (split-K allowed)."""
        for half in ("fp16", "bf16"):
            setattr(matmul, f"allow_{half}_reduced_precision_reduction",
                    False if allowed else (False, False))
    try:
        import simprec  # noqa: F401
        have_simprec = True
    except Exception:
        have_simprec = False
    dtypes = {"f16": torch.float16, "bf16": torch.bfloat16}
    result = {"meta": dict(settings, simprec=have_simprec)}
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    activity = ProfilerActivity.CUDA if dev == "cuda" else ProfilerActivity.CPU
    kind = torch.autograd.DeviceType.CUDA if dev == "cuda" else torch.autograd.DeviceType.CPU
    saved, model_cache = {}, {}
    t0 = time.time()
    for name, m, n, k, at, bt in CNN + TN:
        for dt, tdt in dtypes.items():
            for mode in ("half", "f32pad", "f32pad_splitk"):
                key = f"{name}__{dt}__{mode}"
                split_k(mode == "f32pad_splitk")
                entry = {"shape": [m, n, k], "a_transposed": at, "b_transposed": bt,
                         "kernels": None, "repeat_identical": True, "diff": {}}
                for seed in SEEDS:
                    a, b = operands(name, dt, seed, m, n, k, at, bt)
                    out = torch_case(torch, a, b, at, bt, tdt, mode, dev)
                    sync()
                    first = bits_of(out)
                    for _ in range(5):
                        again = bits_of(torch_case(torch, a, b, at, bt, tdt, mode, dev))
                        entry["repeat_identical"] &= bool(np.array_equal(first, again))
                    if seed == 0:
                        with profile(activities=[activity]) as prof:
                            torch_case(torch, a, b, at, bt, tdt, mode, dev)
                            sync()
                        entry["kernels"] = sorted({e.name for e in prof.events()
                                                   if e.device_type == kind
                                                   and "emcpy" not in e.name
                                                   and "elementwise" not in e.name.lower()})
                    saved[f"{key}__{seed}"] = first
                    if have_simprec:
                        half = first if mode == "half" else bits_of(
                            torch.from_numpy(first.view(np.float32)).to(tdt))
                        if (name, dt, seed) not in model_cache:
                            model_cache[name, dt, seed] = models(a, b, at, bt, dt)
                        got = dict(model_cache[name, dt, seed])
                        entry["choices"] = got.pop("choices")
                        for model, want in got.items():
                            if model == "plain_fp32":
                                if mode == "half":
                                    continue
                                mine = first
                            else:
                                mine = half
                            entry["diff"].setdefault(model, []).append(
                                int((want.reshape(-1) != mine.reshape(-1)).sum()))
                result[key] = entry
                print(key, entry["kernels"], entry["repeat_identical"], entry["diff"],
                      flush=True)
    result["meta"]["seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(args.out, "gemm13_check.json"), "w") as f:
        json.dump(result, f, indent=1)
    np.savez_compressed(os.path.join(args.out, "gemm13_bits.npz"), **saved)
    print(f"wrote {args.out}/gemm13_check.json ({result['meta']['seconds']} s)")


if __name__ == "__main__":
    main()
