"""IEEE fp32 arithmetic, subnormals included, for the backend's own kernels.

CuPy compiles every kernel with `-ftz=true`, whatever the caller's options
(cupy/cuda/compiler.py, `_compile_with_cache_cuda`: `options += ('-ftz=true',)`). Under it
NVVM emits the `.ftz` form of every fp32 instruction (add, mul, fma, setp, cvt, abs, max...)
and libdevice takes its flush-to-zero paths (`__nvvm_reflect("__CUDA_FTZ")`), so an fp32
subnormal operand reads as +-0 and an fp32 subnormal result is written as +-0. bf16 shares
fp32's exponent range: every bf16 subnormal is an fp32 subnormal, and exp(-87.4) is one too.
torch's CUDA kernels, which the NumPy reference models, are compiled without it (nvcc's default
`-ftz=false`).

A kernel opts out by carrying IEEE_MARKER among its options (kernels are compiled with
`_kernels.OPTIONS`). `install` wraps the two functions through which CuPy hands options to NVRTC
(the compile and the version preprocess) so that, for a marked kernel only, CuPy's `-ftz=true`
becomes `-ftz=false`; every other kernel (CuPy's own) compiles as before. The marker is part of
the options, hence of CuPy's on-disk cache key: a flushing binary built before this fix is never
served for a marked kernel. `_kernels.check_subnormals` checks the result on the device.

No CuPy import here, so that the host tests hold the same functions.
"""

from __future__ import annotations

import functools

IEEE_MARKER = "-DSIMPREC_IEEE_SUBNORMALS=1"
# options that would make fp32 arithmetic differ from IEEE (flush to zero, approximate
# division, square root and math functions); none may reach NVRTC for a marked kernel
NON_IEEE_OPTIONS = ("-ftz=true", "--ftz=true", "-use_fast_math", "--use_fast_math",
                    "-prec-div=false", "--prec-div=false", "-prec-sqrt=false",
                    "--prec-sqrt=false")
# CUDA's approximate intrinsics: fast-math in the source itself (the reference models the
# precise functions, expf, logf, tanhf..., and IEEE division)
FAST_INTRINSICS = ("__expf", "__exp10f", "__logf", "__log2f", "__log10f", "__powf", "__sinf",
                   "__cosf", "__sincosf", "__tanf", "__fdividef", "__saturatef")
# the functions of cupy.cuda.compiler that receive the final option tuple
SEAMS = ("_compile_using_nvrtc_no_warning", "_preprocess")


def ieee_options(options) -> tuple:
    """`options` as NVRTC should get them: for a marked kernel, `-ftz=true` -> `-ftz=false`."""
    options = tuple(options)
    if IEEE_MARKER not in options:
        return options
    return tuple("-ftz=false" if o in ("-ftz=true", "--ftz=true") else o for o in options)


def _wrap(compile_fn):
    @functools.wraps(compile_fn)
    def compile_ieee(source, options=(), *args, **kwargs):
        return compile_fn(source, ieee_options(options), *args, **kwargs)

    compile_ieee.__simprec_unwrapped__ = compile_fn
    return compile_ieee


def install(compiler) -> None:
    """Wrap cupy.cuda.compiler's seams (idempotent). Raises if this CuPy has no such seam,
    rather than let the kernels flush subnormals silently."""
    missing = [name for name in SEAMS if not callable(getattr(compiler, name, None))]
    if missing:
        raise RuntimeError(
            f"simprec_cupy: this CuPy ({getattr(compiler, '__name__', compiler)!r}) has no "
            f"{', '.join(missing)}; the backend cannot turn off its -ftz=true, and its kernels "
            f"would flush fp32 subnormals to zero (backends/simprec_cupy/_ftz.py)")
    for name in SEAMS:
        fn = getattr(compiler, name)
        if not hasattr(fn, "__simprec_unwrapped__"):
            setattr(compiler, name, _wrap(fn))
