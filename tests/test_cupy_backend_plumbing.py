"""The CuPy backend's Python side on the CPU: `CupyBackend` run with a NumPy stand-in for CuPy
whose kernels are the host build of kernels/*.cuh (rounding, GEMMs) and the reference's
elementwise arithmetic. This checks the plumbing (argument order, shapes, broadcasting, bias and
rounding paths, Philox offsets, whole training steps) where no GPU is; the CUDA arithmetic itself
is checked by tests/test_cupy_kernels_host.py and, on a GPU, tests/test_cupy_backend.py."""

from __future__ import annotations

import ctypes
import importlib
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import REPO

import simprec as sp
from simprec import amp, optim
from simprec.backend.numpy_backend import NumpyBackend

REF = NumpyBackend()
c_int, c_float, c_u64 = ctypes.c_int, ctypes.c_float, ctypes.c_ulonglong


def _fake_cupy():
    fake = types.ModuleType("cupy")
    fake.__getattr__ = lambda name: getattr(np, name)
    fake.ndarray = np.ndarray
    fake.asnumpy = np.asarray
    fake.array = lambda data, dtype=None, copy=True: np.array(data, dtype=dtype, copy=copy)
    fake.ascontiguousarray = lambda x, dtype=None: np.ascontiguousarray(x, dtype=dtype)

    class Device:
        def __init__(self, index=0):
            self.id, self.compute_capability = index, "90"

        def use(self):
            pass

    fake.cuda = types.SimpleNamespace(Device=Device,
                                      runtime=types.SimpleNamespace(getDevice=lambda: 0))
    fake.ElementwiseKernel = fake.RawModule = None
    fakex = types.ModuleType("cupyx")
    fakex.scatter_add = lambda a, index, values: np.add.at(a, index, values)
    return fake, fakex


@pytest.fixture(scope="module")
def be(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the kernels for the host")
    fake, fakex = _fake_cupy()
    saved = {k: sys.modules.get(k) for k in ("cupy", "cupyx")}
    sys.modules["cupy"], sys.modules["cupyx"] = fake, fakex
    sys.path.insert(0, str(REPO / "backends"))
    try:
        for name in [m for m in sys.modules if m.startswith("simprec_cupy")]:
            del sys.modules[name]
        kernels = importlib.import_module("simprec_cupy._kernels")
        params = importlib.import_module("simprec_cupy._params")
        backend = importlib.import_module("simprec_cupy.backend")
        so = tmp_path_factory.mktemp("sp_plumbing") / "sp_host.so"
        subprocess.run([cxx, "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-o", str(so),
                        str(params.KERNEL_DIR / "host_test.cpp")], check=True)
        _install_host_kernels(kernels, ctypes.CDLL(str(so)))
        yield backend.CupyBackend("")
    finally:
        for name in [m for m in sys.modules if m.startswith("simprec_cupy")]:
            del sys.modules[name]
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        sys.path.remove(str(REPO / "backends"))


def _install_host_kernels(kernels, lib):
    ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731

    def host_round(x, out, m, emin, fmax, ovf, sub, mode, seed=0, stream=0, offset=0,
                   keep=0xFFFFFFFF):
        x = np.ascontiguousarray(x, np.float32)
        res = np.empty_like(x)
        lib.sp_host_round(ptr(x), ptr(res), ctypes.c_long(x.size), c_int(m), c_int(emin),
                          c_float(fmax), c_int(ovf), c_int(sub), c_int(mode), c_u64(int(seed)),
                          c_u64(int(stream)), c_u64(int(offset)), ctypes.c_uint(int(keep)))
        out[...] = res
        return out

    def round_kernel(source):
        assert source in ("none", "philox"), source
        return lambda x, m, emin, fmax, ovf, sub, mode, *rest: host_round(
            x, rest[-1], m, emin, fmax, ovf, sub, mode, *rest[:-1])

    def op_kernel(op):
        arity, names, _ = kernels.OPS[op]

        def run(*args):
            arrays, values = args[:arity], dict(zip(names, args[arity:], strict=False))
            rest = args[arity + len(names) + (op in kernels.NEEDS_FINITE_FLAG):]
            if op == "div_scalar":  # the backend passes the reciprocal; the reference takes s
                values["scalar"] = 1 / np.float64(values["scalar"])
            wide = np.array(REF.elementwise(op, *arrays, **values), np.float32)
            return host_round(wide, wide.copy(), *rest[1:], 0) if rest[0] else wide

        return run

    def gemm_function(name):
        def run(grid, block, args):
            if name == "sp_tc_gemm":
                a, b, bias, out, M, N, K, m, emin, blk, frac, floor, *out_args = args
                model, fmax, ovf, sub = 0, 0.0, 0, 1
            elif name == "sp_half_gemm":
                a, b, bias, out, M, N, K, blk, m, emin, fmax, ovf, sub, *out_args = args
                model, frac, floor = 1, 0, 0
            else:
                (a, b, bias, out, M, N, K, model, m, emin, blk, frac, floor, fmax, ovf, sub,
                 *out_args) = args
            res = np.empty_like(out)
            zeros = np.zeros(out.shape, np.float32)
            lib.sp_host_gemm(ptr(a), ptr(b), ptr(zeros), ptr(res), a.shape[0], int(M), int(N),
                             int(K), int(model), int(m), int(emin), int(blk), int(frac),
                             int(floor), c_float(fmax), int(ovf), int(sub))
            if not isinstance(bias, np.integer):
                res = res + bias
            if out_args[0]:
                host_round(res.copy(), res, *out_args[1:], 0)
            out[...] = res

        return run

    kernels.round_kernel, kernels.op_kernel = round_kernel, op_kernel
    kernels.gemm_function = gemm_function
    # CuPy's astype, sum and max stand in for the backend's IEEE ones (on the host, numpy's
    # keep subnormals too); check_subnormals needs a device
    kernels.cast = lambda x, dtype: x.astype(dtype, copy=False)
    kernels.sum_f64 = lambda x, axis=None, keepdims=False: REF.sum(x, axis, keepdims)
    kernels.max_ = lambda x, axis=None, keepdims=False: REF.max(x, axis, keepdims)
    kernels.check_subnormals = lambda: None
    kernels.compare = lambda op, a, b: REF.elementwise(op, a, b)


def _same(got, ref):
    got, ref = np.asarray(got, np.float32), np.asarray(ref, np.float32)
    assert got.shape == ref.shape
    assert ((got.view(np.uint32) == ref.view(np.uint32)) | (np.isnan(got) & np.isnan(ref))).all()


@pytest.mark.parametrize("mode", ["nearest", "toward_zero", "stochastic"])
def test_round(be, mode):
    x = np.random.default_rng(0).standard_normal((30, 7)).astype(np.float32)[:, ::2]
    kw = lambda: {"rng": sp.Philox(3, 1, 5)} if mode == "stochastic" else {}  # noqa: E731
    rng = kw()
    _same(be.round(x, sp.fp8_e4m3, mode=mode, **rng), sp.round(x, sp.fp8_e4m3, mode, **kw()))
    if rng:
        assert rng["rng"].offset == 5 + x.size


# The reference's sm90 matmul runs the kernel cuBLASLt picks on the H200 (simprec._gemm_choice:
# here bf16 with K = 19 is the 8-term-block kernel); the backend lays K out for it
# (simprec.backend.gemm_layout) and runs its plain sm90 kernel.
@pytest.mark.parametrize("model", ["sm70", "sm80", "sm90", "fp16"])
@pytest.mark.parametrize("kernel", ["tiled", "simple"])
def test_matmul_paths(be, monkeypatch, model, kernel):
    monkeypatch.setattr(be, "gemm", kernel)
    rng = np.random.default_rng(1)
    a = sp.round(rng.standard_normal((2, 5, 19)).astype(np.float32), sp.bf16)
    b = sp.round(rng.standard_normal((19, 7)).astype(np.float32), sp.bf16)
    v = sp.round(rng.standard_normal(19).astype(np.float32), sp.bf16)
    bias = rng.standard_normal(7).astype(np.float32)
    for x, y in ((a, b), (v, b), (a, v)):
        for out in (sp.bf16, sp.fp32):
            for bb in (None, bias, bias.reshape(1, 7)):
                if (y is v and bb is not None) or (x is v and bb is not None and bb.ndim == 2):
                    continue  # a bias that does not fit the result (the reference refuses it)
                _same(be.matmul(x, y, fmt=sp.bf16, accumulate=model, out_fmt=out, bias=bb),
                      REF.matmul(x, y, fmt=sp.bf16, accumulate=model, out_fmt=out, bias=bb))


@pytest.mark.parametrize("native", [False, True], ids=["emulated", "cublaslt"])
@pytest.mark.parametrize("fmt", [sp.bf16, sp.fp16], ids=lambda f: f.name)
def test_sm90_matmul_runs_the_maps_kernel(be, monkeypatch, fmt, native):
    """The map's odd shapes (tests/test_backend_gemm_layout.py) on the emulated sm90 kernel and
    on the cuBLASLt path (`_cublaslt.gemm_fp32_out`, which pads K to 16 itself), whose plain
    sm_90 kernel is stood in for by the reference's plain model on operands that kernel can
    load (N % 8 == 0, M > 16)."""
    from test_backend_gemm_layout import CASES, _operands

    from simprec.accumulate import tensor_core_matmul

    def plain_kernel(a3, b3, is_bf16):
        assert b3.shape[-1] % 8 == 0 and a3.shape[-2] > 16, (a3.shape, b3.shape)
        assert is_bf16 == (fmt == sp.bf16)
        return tensor_core_matmul(a3, b3, arch="sm90", out=sp.fp32, fmt=fmt)

    backend = sys.modules[type(be).__module__]
    monkeypatch.setattr(backend._cublaslt, "gemm_fp32_out", plain_kernel)
    monkeypatch.setattr(be, "native_sm90", native)
    for case in (0, 1, 2, 3, 5, 6, 7, 10):
        sa, sb, with_bias = CASES[case]
        a, b, bias = _operands(fmt, sa, sb, with_bias, case)
        for out in (fmt, sp.fp32):
            for bb in (None, bias) if bias is not None else (None,):
                _same(be.matmul(a, b, fmt=fmt, accumulate="sm90", out_fmt=out, bias=bb),
                      REF.matmul(a, b, fmt=fmt, accumulate="sm90", out_fmt=out, bias=bb))


def test_elementwise_dispatch(be):
    x = np.random.default_rng(2).standard_normal(50).astype(np.float32)
    y = x[::-1].copy()
    _same(be.elementwise("add", x, y, fmt=sp.fp16), REF.elementwise("add", x, y, fmt=sp.fp16))
    _same(be.elementwise("div_scalar", x, scalar=3.0), REF.elementwise("div_scalar", x, scalar=3.0))
    _same(be.elementwise("clamp", x, lo=-0.5), REF.elementwise("clamp", x, lo=-0.5))
    _same(be.elementwise("relu_backward", x, y), REF.elementwise("relu_backward", x, y))
    ints = np.arange(5)
    assert be.elementwise("add", ints, ints).dtype == np.int64
    assert (be.elementwise("gt", x, 0.0) == (x > 0)).all()
    _same(be.elementwise("where", x > 0, x, 0.0), REF.elementwise("where", x > 0, x, 0.0))
    _same(be.elementwise("where", x > 0, x, 0.0, fmt=sp.fp8_e4m3),
          REF.elementwise("where", x > 0, x, 0.0, fmt=sp.fp8_e4m3))


def _train(model_name, recipe_name, backend, steps, **options):
    from simprec.models import MLP, TinyGPT
    from simprec.nn import functional as F

    gen = np.random.default_rng(0)
    model = (MLP(16, (32,), 4, generator=gen) if model_name == "mlp"
             else TinyGPT(17, 8, n_layer=1, n_head=2, n_embd=16, generator=gen))
    if backend is not None:
        model.to(backend)
    recipe = amp.get_recipe(recipe_name, **options)
    model, opt, _ = recipe.prepare(model, lambda p: optim.SGD(p, lr=0.1, momentum=0.9))
    rng = np.random.default_rng(1)
    where = backend if backend is not None else "numpy"
    losses = []
    for _ in range(steps):
        if model_name == "mlp":
            batch = (sp.tensor(rng.standard_normal((8, 16)).astype(np.float32), backend=where),
                     sp.tensor(rng.integers(0, 4, 8), backend=where))
            loss_fn = lambda m, b: F.cross_entropy(m(b[0]), b[1])  # noqa: E731
        else:
            ids = rng.integers(0, 17, (2, 9))
            batch = (sp.tensor(ids[:, :-1], backend=where), sp.tensor(ids[:, 1:], backend=where))
            loss_fn = lambda m, b: F.cross_entropy(  # noqa: E731
                m(b[0]).reshape(-1, 17), b[1].reshape(-1))
        losses.append(recipe.step(model, opt, loss_fn, batch)[1]["loss"])
    return losses, [p.numpy() for p in model.parameters()]


@pytest.mark.parametrize("recipe,options", [("amp-fp16", {"accumulate": "sm90"}),
                                            ("pure-fp16", {"accumulate": "sm70"}),
                                            ("fp8", {"accumulate": "sm70", "amax_history_len": 4})])
@pytest.mark.parametrize("model", ["mlp", "gpt"])
def test_training_steps_match_the_reference(be, model, recipe, options):
    ref_losses, ref_params = _train(model, recipe, None, 3, **options)
    losses, params = _train(model, recipe, be, 3, **options)
    assert losses == ref_losses
    for got, ref in zip(params, ref_params, strict=True):
        _same(got, ref)
