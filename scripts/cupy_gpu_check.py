"""One fast GPU check of the CuPy backend (the lead runs it on the H200; < 2 minutes):
GEMM speed of every emulated model on 2048^3 (the kernels' rate per multiply-add is the same at
4096^3; fp8 inputs run the fp16 kernel: every fp8 value is an fp16 value), the opt-in cuBLAS
sm90 path against the emulated sm90 kernel on the issue's shapes, and an amp-fp16 step of a
small GPT, numpy vs cupy.
Writes <out>/cupy_check.json and prints one line per measurement.

    PYTHONPATH=$PWD:$PWD/backends python scripts/cupy_gpu_check.py $OUT
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import cupy
import numpy as np

import simprec as sp


def _operands(fmt, m, k, n, seed=0):
    rng = np.random.default_rng(seed)
    a = sp.round(rng.standard_normal((m, k)).astype(np.float32), fmt)
    b = sp.round(rng.standard_normal((k, n)).astype(np.float32), fmt)
    return cupy.asarray(a), cupy.asarray(b)


def _time(fn, reps=3):
    fn()
    cupy.cuda.Device().synchronize()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(reps):
        fn()
    stop.record()
    stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop) / 1e3 / reps


def main(out_dir: str) -> None:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    be = sp.get_backend("cupy")
    results = {"device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(),
               "cupy": cupy.__version__}
    t0 = time.perf_counter()
    from simprec_cupy import _kernels

    _kernels.precompile()
    results["compile_s"] = round(time.perf_counter() - t0, 2)
    print("compile", results["compile_s"], "s", flush=True)

    # emulated GEMM speed, 2048^3
    n = 2048
    speed = {}
    for fmt in (sp.fp16, sp.bf16):
        a, b = _operands(fmt, n, n, n)
        for model in ("sm70", "sm80", "sm90", "fp16"):
            for kernel in ("tiled",):
                be.gemm = kernel
                s = _time(lambda a=a, b=b, f=fmt, m=model: be.matmul(
                    a, b, fmt=f, accumulate=m, out_fmt=f), 2)
                key = f"{fmt.name}/{model}/{kernel}"
                speed[key] = n**3 / s
                print(f"gemm {key}: {s * 1e3:.1f} ms, {n**3 / s:.3g} MAC/s", flush=True)
    be.gemm = "tiled"
    results["gemm_mac_per_s_2048"] = speed

    # the native paths (cuBLASLt split-K off: "1"; cuBLAS GemmEx: "gemmex") vs emulated sm90
    native = {}
    shapes = ((256, 1024, 256), (33, 65, 48), (33, 64, 48), (512, 512, 512), (128, 4096, 128))
    for fmt in (sp.fp16, sp.bf16):
        for m, k, nn in shapes:
            a, b = _operands(fmt, m, k, nn, seed=m + k)
            be.native_sm90 = False
            emu = be.matmul(a, b, fmt=fmt, accumulate="sm90", out_fmt=sp.fp32)
            for path in (True, "gemmex"):
                if path == "gemmex" and fmt != sp.fp16:
                    continue
                be.native_sm90 = path
                try:
                    nat = be.matmul(a, b, fmt=fmt, accumulate="sm90", out_fmt=sp.fp32)
                    diff = int((emu.view(cupy.uint32) != nat.view(cupy.uint32)).sum())
                    if path is True:  # and the sm80 model (8-term blocks), for the record
                        be.native_sm90 = False
                        emu80 = be.matmul(a, b, fmt=fmt, accumulate="sm80", out_fmt=sp.fp32)
                        diff80 = int((emu80.view(cupy.uint32) != nat.view(cupy.uint32)).sum())
                        diff = {"vs_sm90": diff, "vs_sm80": diff80}
                except Exception as exc:  # report, do not stop
                    diff = f"error: {exc!r}"[:300]
                be.native_sm90 = False
                name = "cublaslt" if path is True else "gemmex"
                native[f"{fmt.name}/{m}x{k}x{nn}/{name}"] = diff
                print(f"native {name} {fmt.name} {m}x{k}x{nn}: {diff} of {m * nn} differ",
                      flush=True)
    results["native_vs_emulated_sm90_mismatches"] = native
    try:  # speed of the native path on the speed test's shape
        a, b = _operands(sp.fp16, n, n, n)
        be.native_sm90 = True
        s = _time(lambda: be.matmul(a, b, fmt=sp.fp16, accumulate="sm90", out_fmt=sp.fp16), 3)
        results["cublaslt_mac_per_s_2048"] = n**3 / s
        print(f"cublaslt fp16 {n}^3: {s * 1e3:.2f} ms, {n**3 / s:.3g} MAC/s", flush=True)
    except Exception as exc:
        results["cublaslt_mac_per_s_2048"] = f"error: {exc!r}"[:300]
    be.native_sm90 = False

    # one amp-fp16 GPT step on both backends (the test suite runs whole short trainings)
    from simprec import amp, optim
    from simprec.models import TinyGPT
    from simprec.nn import functional as F

    def run(backend):
        model = TinyGPT(65, 64, n_layer=2, n_head=4, n_embd=128, generator=np.random.default_rng(0))
        if backend != "numpy":
            model.to(backend)
        recipe = amp.get_recipe("amp-fp16", accumulate="sm90")
        model, opt, _ = recipe.prepare(model, lambda p: optim.SGD(p, lr=0.05))
        ids = np.random.default_rng(1).integers(0, 65, (8, 65))
        batch = (sp.tensor(ids[:, :-1], backend=backend), sp.tensor(ids[:, 1:], backend=backend))

        def loss_fn(mdl, bt):
            logits = mdl(bt[0])
            return F.cross_entropy(logits.reshape(-1, 65), bt[1].reshape(-1))

        t = time.perf_counter()
        losses = [recipe.step(model, opt, loss_fn, batch)[1]["loss"] for _ in range(3)]
        return losses, time.perf_counter() - t

    try:
        ref, t_ref = run("numpy")
        got, t_got = run("cupy")
        results["gpt_step"] = {"numpy_losses": ref, "cupy_losses": got, "identical": ref == got,
                               "numpy_s": t_ref, "cupy_s": t_got}
        print(f"gpt 3 steps: identical={ref == got} numpy {t_ref:.2f}s cupy {t_got:.2f}s",
              flush=True)
    except Exception as exc:
        results["gpt_step"] = f"error: {exc!r}"[:1000]
        print("gpt step error", repr(exc)[:1000], flush=True)

    (out / "cupy_check.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out")
