// The elementwise kernels of the backend contract (simprec/backend/contract.py), one device
// function each, with the arithmetic of the NumPy reference (simprec/backend/numpy_backend.py):
// every IEEE operation written as an intrinsic that the compiler never contracts, an fma
// exactly where the reference has one (torch's kernels, as nvcc contracts them), and CUDA's own
// math functions (expf, logf, tanhf, erff, log1pf, rsqrtf), which the reference models
// instruction for instruction (simprec/cudamath): compiled without fast-math they are those very
// instruction sequences, ending in the special-function unit's ex2.approx / rcp.approx /
// rsqrt.approx.
#pragma once
#include "common.cuh"

#define SP_ONE 1.0f
#define SP_HALF 0.5f
// aten/src/ATen/native/cuda/ActivationGeluKernel.cu constants, rounded to fp32 as the
// reference does (numpy_backend.py)
#define SP_SQRT1_2 0.70710678118654752f
#define SP_GELU_TANH_BETA 0.79788456080286536f
#define SP_GELU_TANH_KAPPA 0.044715f
#define SP_GELU_PDF_BETA 0.39894228040143268f

__device__ __forceinline__ bool sp_isnan(float x) { return x != x; }

// numpy's maximum / minimum: NaN propagates; on equal values (+-0) the second operand
__device__ __forceinline__ float sp_maximum(float a, float b) {
    return sp_isnan(a) ? a : sp_isnan(b) ? b : (a > b ? a : b);
}
__device__ __forceinline__ float sp_minimum(float a, float b) {
    return sp_isnan(a) ? a : sp_isnan(b) ? b : (a < b ? a : b);
}
// numpy's clip: x kept on ties, NaN propagates
__device__ __forceinline__ float sp_clamp(float x, float lo, float hi) {
    if (sp_isnan(x)) return x;
    x = x < lo ? lo : x;
    return x > hi ? hi : x;
}
// numpy's sign: +-1, +0 for +-0, NaN for NaN
__device__ __forceinline__ float sp_sign(float x) {
    return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : x == 0.0f ? 0.0f : x;
}
// CUDA powf modelled as the correctly rounded double pow (numpy_backend._pow_scalar). CUDA's
// double pow is not correctly rounded (2 ulp): for x^2 with x a bf16 it can miss an exact fp32
// tie in the subnormal range (H200: 8 of 65,536 bf16 inputs), so the square is x * x, which
// IEEE fp32 rounds once from the exact product, as numpy's double square rounded to fp32 does.
__device__ __forceinline__ float sp_pow_scalar(float x, float s) {
    if (s == 2.0f) return x * x;
    return __double2float_rn(pow((double)x, (double)s));
}
// rsqrtf: the single instruction rsqrt.approx.f32 (simprec.cudamath.mufu.rsqrt)
__device__ __forceinline__ float sp_rsqrt(float x) {
    float r;
    asm("rsqrt.approx.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}
__device__ __forceinline__ float sp_sigmoid(float x) {
    return SP_DIV(SP_ONE, SP_ADD(SP_ONE, expf(-x)));
}
__device__ __forceinline__ float sp_softplus(float x, float b, float t) {
    float xb = SP_MUL(x, b);
    return xb > t ? x : SP_DIV(log1pf(expf(xb)), b);
}
__device__ __forceinline__ float sp_softplus_backward(float dy, float x, float b, float t) {
    float xb = SP_MUL(x, b);
    float z = expf(xb);
    return xb > t ? dy : SP_DIV(SP_MUL(dy, z), SP_ADD(z, SP_ONE));
}
__device__ __forceinline__ float sp_relu(float x) {
    // clamp_min(x, 0) + 0: NaN stays NaN, -0 becomes +0
    return sp_isnan(x) ? x : SP_ADD(x > 0.0f ? x : 0.0f, 0.0f);
}
__device__ __forceinline__ float sp_gelu(float x) {
    return SP_MUL(SP_MUL(x, SP_HALF), SP_ADD(SP_ONE, erff(SP_MUL(x, SP_SQRT1_2))));
}
__device__ __forceinline__ float sp_gelu_tanh(float x) {
    float inner = SP_MUL(SP_GELU_TANH_BETA,
                         SP_FMA(SP_GELU_TANH_KAPPA, SP_MUL(SP_MUL(x, x), x), x));
    return SP_MUL(SP_MUL(SP_HALF, x), SP_ADD(SP_ONE, tanhf(inner)));
}
__device__ __forceinline__ float sp_gelu_backward(float dy, float x) {
    float cdf = SP_MUL(SP_HALF, SP_ADD(SP_ONE, erff(SP_MUL(x, SP_SQRT1_2))));
    float pdf = SP_MUL(expf(SP_MUL(SP_MUL(-0.5f, x), x)), SP_GELU_PDF_BETA);
    return SP_MUL(dy, SP_ADD(cdf, SP_MUL(x, pdf)));
}
__device__ __forceinline__ float sp_gelu_tanh_backward(float dy, float x) {
    float x_sq = SP_MUL(x, x);
    float inner = SP_MUL(SP_GELU_TANH_BETA, SP_FMA(SP_GELU_TANH_KAPPA, SP_MUL(x_sq, x), x));
    float tanh_inner = tanhf(inner);
    float left = SP_MUL(SP_HALF, x);
    float left_derivative = SP_MUL(SP_HALF, SP_ADD(SP_ONE, tanh_inner));
    float tanh_derivative = SP_FMA(-tanh_inner, tanh_inner, SP_ONE);
    // opmath_t(3) * kKappa folded in fp32
    float inner_derivative = SP_MUL(SP_GELU_TANH_BETA,
                                    SP_FMA(SP_MUL(3.0f, SP_GELU_TANH_KAPPA), x_sq, SP_ONE));
    float right_derivative = SP_MUL(SP_MUL(left, tanh_derivative), inner_derivative);
    return SP_MUL(dy, SP_ADD(left_derivative, right_derivative));
}
__device__ __forceinline__ float sp_silu(float x) {
    return SP_DIV(x, SP_ADD(SP_ONE, expf(-x)));
}
__device__ __forceinline__ float sp_silu_backward(float dy, float x) {
    float s = SP_DIV(SP_ONE, SP_ADD(SP_ONE, expf(-x)));
    return SP_MUL(SP_MUL(dy, s), SP_FMA(x, SP_SUB(SP_ONE, s), SP_ONE));
}
// threshold_backward: x <= thr ? +0 : dy; when every dy is finite the reference multiplies by
// the 0/1 mask and adds +0 (so a -0 dy becomes +0), else it selects (a -0 dy stays -0)
__device__ __forceinline__ float sp_threshold_backward(float dy, float x, float thr, bool finite) {
    if (x <= thr) return 0.0f;
    return finite ? SP_ADD(dy, 0.0f) : dy;
}
