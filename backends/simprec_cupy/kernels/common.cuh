// simprec CuPy backend: definitions shared by every kernel source.
// The device functions are written so that a host C++ compiler can build them too
// (tests/test_cupy_kernels_host.py holds them against the NumPy reference on the CPU).
#pragma once

#ifdef __CUDACC__
#define SP_HD __host__ __device__ __forceinline__
#define SP_F2U(x) __float_as_uint(x)
#define SP_U2F(x) __uint_as_float(x)
// IEEE operations, rounded to nearest, never contracted into an fma by the compiler
#define SP_ADD(a, b) __fadd_rn(a, b)
#define SP_SUB(a, b) __fsub_rn(a, b)
#define SP_MUL(a, b) __fmul_rn(a, b)
#define SP_DIV(a, b) __fdiv_rn(a, b)
#define SP_FMA(a, b, c) __fmaf_rn(a, b, c)
#define SP_SQRT(a) __fsqrt_rn(a)
#define SP_CLZ64(x) __clzll(x)
typedef unsigned long long sp_u64;
typedef long long sp_i64;
#else
#include <cmath>
#include <cstdint>
#include <cstring>
#define SP_HD static inline
static inline unsigned int SP_F2U(float x) { unsigned int u; std::memcpy(&u, &x, 4); return u; }
static inline float SP_U2F(unsigned int u) { float x; std::memcpy(&x, &u, 4); return x; }
#define SP_ADD(a, b) ((float)(a) + (float)(b))
#define SP_SUB(a, b) ((float)(a) - (float)(b))
#define SP_MUL(a, b) ((float)(a) * (float)(b))
#define SP_DIV(a, b) ((float)(a) / (float)(b))
#define SP_FMA(a, b, c) std::fmaf(a, b, c)
#define SP_SQRT(a) std::sqrt((float)(a))
#define SP_CLZ64(x) __builtin_clzll(x)
typedef unsigned long long sp_u64;
typedef long long sp_i64;
#endif

#define SP_NAN_BITS 0x7FFFFFFFu  // the canonical NaN an NVIDIA GPU writes
