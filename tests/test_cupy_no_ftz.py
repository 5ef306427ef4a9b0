"""The CuPy backend's kernels compute IEEE fp32, subnormals included, as the reference does.

CuPy adds -ftz=true to every kernel it compiles; on the H200 that made 39 elementwise tests fail
(bf16 inputs below 2^-126 read as 0, exp(-87.5) written as 0). backends/simprec_cupy/_ftz.py
turns it off for the backend's kernels. These tests need no GPU: they hold every kernel's compile
options, CuPy's own compile path (where CuPy is installed), the kernel sources, and the PTX that
nvcc makes of them (no `.ftz` instruction), so that fast-math or flush-to-zero cannot come back
unnoticed. tests/test_cupy_backend.py checks the arithmetic itself on a GPU.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "backends"))
from simprec_cupy import _ftz, _params  # noqa: E402

KERNEL_SOURCES = sorted(p for p in _params.KERNEL_DIR.iterdir()
                        if p.suffix in (".cu", ".cuh"))


def _compile_seams(log):
    """A stand-in for cupy.cuda.compiler whose seams record the options they are given."""
    compiler = types.SimpleNamespace(__name__="fake_compiler")
    compiler._compile_using_nvrtc_no_warning = (
        lambda source, options=(), *rest: log.append(("compile", options)))
    compiler._preprocess = lambda source, options, arch, backend: log.append(("pre", options))
    return compiler


def test_ieee_options_turn_cupys_ftz_off_for_marked_kernels_only():
    cupy_adds = ("-ftz=true",)
    marked = ("--std=c++17", _ftz.IEEE_MARKER) + cupy_adds
    assert _ftz.ieee_options(marked) == ("--std=c++17", _ftz.IEEE_MARKER, "-ftz=false")
    assert _ftz.ieee_options(("--std=c++17",) + cupy_adds) == ("--std=c++17", "-ftz=true")


def test_install_wraps_both_seams_once():
    log = []
    compiler = _compile_seams(log)
    _ftz.install(compiler)
    _ftz.install(compiler)  # idempotent: wrapped once
    compiler._preprocess("", ("-a", _ftz.IEEE_MARKER, "-ftz=true"), "90", "nvrtc")
    compiler._compile_using_nvrtc_no_warning("src", (_ftz.IEEE_MARKER, "-ftz=true"), "90")
    compiler._compile_using_nvrtc_no_warning("src", ("-ftz=true",), "90")  # CuPy's own kernel
    assert log == [("pre", ("-a", _ftz.IEEE_MARKER, "-ftz=false")),
                   ("compile", (_ftz.IEEE_MARKER, "-ftz=false")),
                   ("compile", ("-ftz=true",))]


def test_install_refuses_a_cupy_without_the_seams():
    compiler = types.SimpleNamespace(__name__="cupy.cuda.compiler",
                                     _preprocess=lambda *a: None)
    with pytest.raises(RuntimeError, match="_compile_using_nvrtc_no_warning"):
        _ftz.install(compiler)


class _Recorded:
    """A CuPy kernel class that records how it was built instead of compiling."""

    built: list = []

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        _Recorded.built.append(self)


@pytest.fixture
def kernels():
    """simprec_cupy._kernels imported over a CuPy whose kernel classes record their options and
    whose compiler has the seams (the module's own CuPy is restored afterwards)."""
    fake = types.ModuleType("cupy")
    fake.ElementwiseKernel = fake.ReductionKernel = fake.RawModule = _Recorded
    fake.ndarray = np.ndarray
    log = []
    fake.cuda = types.SimpleNamespace(compiler=_compile_seams(log))
    saved = {k: v for k, v in sys.modules.items() if k == "cupy" or k.startswith("simprec_cupy")}
    for name in saved:
        del sys.modules[name]
    sys.modules["cupy"] = fake
    try:
        module = importlib.import_module("simprec_cupy._kernels")
        module.compiler_log = log
        yield module
    finally:
        for name in [m for m in sys.modules if m == "cupy" or m.startswith("simprec_cupy")]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_every_kernel_is_built_with_the_ieee_options(kernels):
    _Recorded.built.clear()
    for op in kernels.OPS:
        kernels.op_kernel(op)
    for source in ("none", "philox", "words"):
        kernels.round_kernel(source)
    kernels._gemm_module_for(0)
    kernels._cast_kernel("float32", "float64")
    kernels._cast_kernel("float64", "float32")
    kernels._max_kernel()
    for op in kernels.COMPARISONS:
        kernels._compare_kernel(op)
    assert len(_Recorded.built) == len(kernels.OPS) + 3 + 1 + 3 + len(kernels.COMPARISONS)
    for kernel in _Recorded.built:
        options = kernel.kwargs.get("options")
        assert options is not None and _ftz.IEEE_MARKER in options, kernel.args[:1]
        assert not set(options) & set(_ftz.NON_IEEE_OPTIONS), options
    # and building them put the seams in place
    assert hasattr(sys.modules["cupy"].cuda.compiler._preprocess, "__simprec_unwrapped__")


def _no_fast_math(text: str, where: str):
    for name in _ftz.FAST_INTRINSICS:
        assert not re.search(rf"\b{name}\b", text), f"{where} calls {name} (fast math)"
    assert ".ftz" not in text, f"{where} has an inline .ftz instruction"


@pytest.mark.parametrize("path", KERNEL_SOURCES, ids=lambda p: p.name)
def test_kernel_sources_ask_for_no_fast_math(path):
    _no_fast_math(path.read_text(), path.name)


def test_kernel_expressions_ask_for_no_fast_math(kernels):
    for op, (_, _, expr) in kernels.OPS.items():
        _no_fast_math(expr, op)


def test_fast_math_is_detected():  # the two checks above can fail
    with pytest.raises(AssertionError, match="__expf"):
        _no_fast_math("return __expf(x);", "x")
    with pytest.raises(AssertionError, match="ftz"):
        _no_fast_math('asm("ex2.approx.ftz.f32 %0, %1;")', "x")


def test_cupys_compile_path_hands_nvrtc_ftz_false(monkeypatch):
    """Through CuPy's real _compile_with_cache_cuda (NVRTC and the device stubbed out): the
    marked options reach NVRTC with -ftz=false, CuPy's own with its -ftz=true."""
    cupy = pytest.importorskip("cupy")
    compiler = cupy.cuda.compiler

    class Reached(Exception):
        pass

    log = []

    def nvrtc(source, options=(), *rest):
        log.append(("compile", tuple(options)))
        raise Reached

    monkeypatch.setattr(compiler, "_compile_using_nvrtc_no_warning", nvrtc)
    monkeypatch.setattr(compiler, "_preprocess",
                        lambda s, options, arch, backend: log.append(("pre", options)) or "//")
    monkeypatch.setattr(compiler, "_get_nvrtc_version", lambda: (13, 0))
    monkeypatch.setattr(compiler, "_get_arch_for_options_for_nvrtc",
                        lambda arch=None: (f"-arch=sm_{arch}", "cubin"))
    monkeypatch.setattr(compiler, "_empty_file_preprocess_cache", {})
    _ftz.install(compiler)
    for options in (("--std=c++17", _ftz.IEEE_MARKER), ("--std=c++17",)):
        with pytest.raises(Reached):
            compiler._compile_with_cache_cuda("extern \"C\" __global__ void k() {}", options,
                                              "90", cache_in_memory=True)
    pre_ieee, nvrtc_ieee, pre_cupy, nvrtc_cupy = log
    for kind, options in (pre_ieee, nvrtc_ieee):
        assert "-ftz=false" in options and "-ftz=true" not in options, (kind, options)
    for kind, options in (pre_cupy, nvrtc_cupy):
        assert "-ftz=true" in options, (kind, options)  # CuPy's own kernels: as before


def _nvcc():
    found = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(found).is_file():
        pytest.fail("nvcc (CUDA 13, part of this machine's image) is needed to check the PTX")
    return found


def _ptx(tmp_path, kernels, ftz: str, ops, gemm: bool) -> str:
    """PTX of the elementwise kernels of `ops` with the rounding (and the GEMMs), as nvcc
    compiles them for sm_90 with the backend's options and -ftz=`ftz`."""
    params = "float alpha = p[0], scalar = p[0], beta = p[0], lo = p[0];\n" \
             "float threshold = p[1], hi = p[1];\n"
    body = [_params.source("elementwise.cuh", "round.cuh", "philox.cuh")]
    for op in ops:
        body.append(
            f'extern "C" __global__ void k_{op}(const float *A, const float *B, const float *C,'
            f" const float *p, const bool *finite, float *out, int rnd, int m, int emin,"
            f" float fmax, int ovf, int sub) {{\n  int i = threadIdx.x;\n"
            f"  float a = A[i], b = B[i], c = C[i];\n  {params}"
            f"  float r = {kernels.OPS[op][2]};\n"
            f"  out[i] = rnd ? {kernels._ROUND_CALL} : r;\n}}")
    sources = [tmp_path / f"ops_{ftz}.cu"]
    sources[0].write_text("\n".join(body))
    if gemm:
        sources.append(tmp_path / "gemm.cu")
        sources[1].write_text(_params.source("gemm.cu"))
    out = []
    for src in sources:
        ptx = src.with_suffix(f".{ftz}.ptx")
        opts = [o for o in kernels.OPTIONS if o != _ftz.IEEE_MARKER]
        # the GEMMs' unrolled loops take NVVM half a minute at -O3; at -O0 their fp32
        # instructions are the same kinds, .ftz or not
        fast = ["-Xcicc", "-O0"] if src.name == "gemm.cu" else []
        subprocess.run([_nvcc(), "-ptx", "-arch=sm_90", *opts, f"-ftz={ftz}", "-w", *fast,
                        "-o", str(ptx), str(src)], check=True)
        out.append(ptx.read_text())
    return "\n".join(out)


def _ftz_instructions(ptx: str) -> set[str]:
    return set(re.findall(r"^\s*([\w.]*\.ftz[\w.]*)", ptx, re.MULTILINE))


def test_the_kernels_ptx_has_no_flush_to_zero(tmp_path, kernels):
    """Only the special-function unit's own steps inside libdevice's expf/tanhf/pow keep their
    `.ftz` (ex2.approx.ftz, rcp.approx.ftz: libdevice's sequences with or without -ftz, and
    what simprec/cudamath models); no add, mul, fma, setp, cvt, abs, max... has one."""
    ieee = _ftz_instructions(_ptx(tmp_path, kernels, "false", kernels.OPS, gemm=True))
    assert ieee <= {"ex2.approx.ftz.f32", "rcp.approx.ftz.f32", "rcp.approx.ftz.f64"}, ieee
    # CuPy's -ftz=true, for contrast: what the H200 ran (bf16 subnormals read as 0 by add)
    flushing = _ftz_instructions(_ptx(tmp_path, kernels, "true", ["add"], gemm=False))
    assert "add.rn.ftz.f32" in flushing, flushing
