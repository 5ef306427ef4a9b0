// gemm.cu's kernels run on the host: each block's 256 threads as std::threads meeting at a
// std::barrier for __syncthreads, the blocks one after another (tests/test_cupy_kernels_host.py
// holds the tiled kernels' tiling, indexing and special-value flags against the reference).
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#define __CUDACC__ 1
#define __host__
#define __device__
#define __forceinline__ inline
#define __global__
#define __launch_bounds__(n)
#define __shared__ static
struct sp_dim3 { unsigned x = 0, y = 0, z = 0; };
thread_local sp_dim3 threadIdx, blockIdx;
sp_dim3 blockDim, gridDim;
static std::barrier<> *sp_bar;
#define __syncthreads() sp_bar->arrive_and_wait()
static inline unsigned int __float_as_uint(float x) { unsigned int u; std::memcpy(&u, &x, 4); return u; }
static inline float __uint_as_float(unsigned int u) { float x; std::memcpy(&x, &u, 4); return x; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
static inline float __fsqrt_rn(float a) { return std::sqrt(a); }
static inline int __clzll(long long x) { return __builtin_clzll((unsigned long long)x); }
using std::max;
using std::min;

#include "gemm.cu"

template <class F>
static void launch(unsigned gx, unsigned gy, unsigned gz, unsigned threads, F kernel) {
    gridDim = {gx, gy, gz};
    blockDim = {threads, 1, 1};
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x) {
                std::barrier<> bar(threads);
                sp_bar = &bar;
                std::vector<std::thread> pool;
                for (unsigned t = 0; t < threads; ++t)
                    pool.emplace_back([=] {
                        threadIdx = {t, 0, 0};
                        blockIdx = {x, y, z};
                        kernel();
                    });
                for (auto &th : pool) th.join();
            }
}

extern "C" {
// kind 0: sp_tc_gemm, 1: sp_half_gemm, 2: sp_simple_gemm (model: 0 tensor core, 1 fp16)
void sp_emu_gemm(int kind, const float *a, const float *b, const float *bias, float *out, int B,
                 int M, int N, int K, int model, int m, int emin, int blk, int frac, int floor_e,
                 float fmax, int ovf, int sub, int out_round, int om, int oemin, float ofmax,
                 int oovf, int osub) {
    if (kind == 0)
        launch((N + 63) / 64, (M + 63) / 64, B, 256, [=] {
            sp_tc_gemm(a, b, bias, out, M, N, K, m, emin, blk, frac, floor_e, out_round, om,
                       oemin, ofmax, oovf, osub);
        });
    else if (kind == 1)
        launch((N + 63) / 64, (M + 63) / 64, B, 256, [=] {
            sp_half_gemm(a, b, bias, out, M, N, K, blk, m, emin, fmax, ovf, sub, out_round, om,
                         oemin, ofmax, oovf, osub);
        });
    else
        launch((unsigned)(((long long)M * N + 127) / 128), 1, B, 128, [=] {
            sp_simple_gemm(a, b, bias, out, M, N, K, model, m, emin, blk, frac, floor_e, fmax,
                           ovf, sub, out_round, om, oemin, ofmax, oovf, osub);
        });
}
}
