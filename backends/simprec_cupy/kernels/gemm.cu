// GEMM kernels of the accumulation models (tensor_core.cuh): a (B, M, K), b (B, K, N) float32
// containers of fp16/bf16 values, C-contiguous; out (B, M, N) = round_out(acc + bias), where
// acc is the model's fp32 accumulator, bias (N,) is optional (nullptr: none), and round_out is
// sp_round to nearest-even into the output format when out_round != 0.
// grid (ceil(N/64), ceil(M/64), B), 256 threads; each thread owns a 4x4 set of outputs
// (rows ty + 16 i, columns tx + 16 j of the block's 64x64 tile).
#include "tensor_core.cuh"

#define TBM 64
#define TBN 64
#define TBK 16  // a multiple of every model's block (4, 8, 16): blocks never straddle tiles

__device__ __forceinline__ float sp_epilogue(float v, const float *bias, int gn, int out_round,
                                             int om, int oemin, float ofmax, int oovf, int osub) {
    if (bias) v = __fadd_rn(v, bias[gn]);
    if (out_round) v = sp_round(v, om, oemin, ofmax, oovf, osub, SP_RN, 0u);
    return v;
}

extern "C" __global__ void __launch_bounds__(256)
sp_tc_gemm(const float *__restrict__ A, const float *__restrict__ Bm, const float *bias,
           float *__restrict__ Out, int M, int N, int K, int m, int emin, int blk, int frac,
           int floor_e, int out_round, int om, int oemin, float ofmax, int oovf, int osub) {
    __shared__ int as_sig[TBK][TBM], as_e[TBK][TBM], bs_sig[TBK][TBN], bs_e[TBK][TBN];
    __shared__ int rowbad[TBM], colbad[TBN];  // a non-finite operand in this K tile
    const int z = blockIdx.z;
    const float *a = A + (size_t)z * M * K;
    const float *b = Bm + (size_t)z * K * N;
    float *out = Out + (size_t)z * M * N;
    const int m0 = blockIdx.y * TBM, n0 = blockIdx.x * TBN;
    const int t = threadIdx.x, tx = t & 15, ty = t >> 4;
    const int lshift = frac - 2 * m;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += TBK) {
        if (t < TBM) rowbad[t] = 0;
        else if (t < TBM + TBN) colbad[t - TBM] = 0;
        __syncthreads();
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            int idx = t + 256 * r;
            int row = idx >> 4, kk = idx & 15, gm = m0 + row, gk = k0 + kk;
            float v = (gm < M && gk < K) ? a[(size_t)gm * K + gk] : 0.0f;
            int s, e, bad;
            sp_tc_decode(v, m, emin, s, e, bad);
            as_sig[kk][row] = s;
            as_e[kk][row] = e;
            if (bad) rowbad[row] = 1;
            int kb = idx >> 6, col = idx & 63, gn = n0 + col;
            gk = k0 + kb;
            v = (gk < K && gn < N) ? b[(size_t)gk * N + gn] : 0.0f;
            sp_tc_decode(v, m, emin, s, e, bad);
            bs_sig[kb][col] = s;
            bs_e[kb][col] = e;
            if (bad) colbad[col] = 1;
        }
        __syncthreads();
        const int kend = min(TBK, K - k0);
        for (int kb = 0; kb < kend; kb += blk) {
            const int n = min(blk, kend - kb);
            int E[4][4], S[4][4];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    float c = acc[i][j];
                    E[i][j] = (__float_as_uint(c) << 1) < 0xFF000000u ? sp_tc_c_exp(c) : SP_NO_EXP;
                    S[i][j] = 0;
                }
            for (int k = 0; k < n; ++k) {
                int ae[4], be[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) { ae[i] = as_e[kb + k][ty + 16 * i]; be[i] = bs_e[kb + k][tx + 16 * i]; }
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < 4; ++j) E[i][j] = max(E[i][j], ae[i] + be[j]);
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) E[i][j] = max(E[i][j], floor_e);
            for (int k = 0; k < n; ++k) {
                int ae[4], be[4], as[4], bsg[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    ae[i] = as_e[kb + k][ty + 16 * i]; as[i] = as_sig[kb + k][ty + 16 * i];
                    be[i] = bs_e[kb + k][tx + 16 * i]; bsg[i] = bs_sig[kb + k][tx + 16 * i];
                }
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < 4; ++j)
                        S[i][j] += sp_tc_term(as[i], bsg[j], lshift, E[i][j] - (ae[i] + be[j]));
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    float c = acc[i][j];
                    bool cs = !((__float_as_uint(c) << 1) < 0xFF000000u);
                    float cf = cs ? 0.0f : c;
                    float res = sp_tc_finish((sp_i64)S[i][j] + sp_tc_c_term(cf, E[i][j], frac),
                                             E[i][j], frac);
                    int row = ty + 16 * i, col = tx + 16 * j, gm = m0 + row, gn = n0 + col;
                    if ((cs || rowbad[row] || colbad[col]) && gm < M && gn < N)
                        res = sp_tc_specials(a + (size_t)gm * K + k0 + kb, 1,
                                             b + (size_t)(k0 + kb) * N + gn, N, n, c, res);
                    acc[i][j] = res;
                }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            int gm = m0 + ty + 16 * i, gn = n0 + tx + 16 * j;
            if (gm < M && gn < N)
                out[(size_t)gm * N + gn] = sp_epilogue(acc[i][j], bias, gn, out_round, om, oemin,
                                                       ofmax, oovf, osub);
        }
}

// The "fp16" model: per block of blk (dividing 16) products, s = acc, s = fl32(s + fl32(a*b))
// in order, acc = RN(s) in the input format (m, emin, fmax, ovf, sub).
extern "C" __global__ void __launch_bounds__(256)
sp_half_gemm(const float *__restrict__ A, const float *__restrict__ Bm, const float *bias,
             float *__restrict__ Out, int M, int N, int K, int blk, int m, int emin, float fmax,
             int ovf, int sub, int out_round, int om, int oemin, float ofmax, int oovf, int osub) {
    __shared__ float as[TBK][TBM], bs[TBK][TBN];
    const int z = blockIdx.z;
    const float *a = A + (size_t)z * M * K;
    const float *b = Bm + (size_t)z * K * N;
    float *out = Out + (size_t)z * M * N;
    const int m0 = blockIdx.y * TBM, n0 = blockIdx.x * TBN;
    const int t = threadIdx.x, tx = t & 15, ty = t >> 4;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TBK) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            int idx = t + 256 * r;
            int row = idx >> 4, kk = idx & 15, gm = m0 + row, gk = k0 + kk;
            as[kk][row] = (gm < M && gk < K) ? a[(size_t)gm * K + gk] : 0.0f;
            int kb = idx >> 6, col = idx & 63, gn = n0 + col;
            gk = k0 + kb;
            bs[kb][col] = (gk < K && gn < N) ? b[(size_t)gk * N + gn] : 0.0f;
        }
        __syncthreads();
        const int kend = min(TBK, K - k0);
        for (int kb = 0; kb < kend; kb += blk) {
            const int n = min(blk, kend - kb);
            for (int k = 0; k < n; ++k) {  // each output's sum still runs k = 0, 1, ... in order
                float av[4], bv[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) { av[i] = as[kb + k][ty + 16 * i]; bv[i] = bs[kb + k][tx + 16 * i]; }
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < 4; ++j) acc[i][j] = __fadd_rn(acc[i][j], __fmul_rn(av[i], bv[j]));
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = sp_round(acc[i][j], m, emin, fmax, ovf, sub, SP_RN, 0u);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            int gm = m0 + ty + 16 * i, gn = n0 + tx + 16 * j;
            if (gm < M && gn < N)
                out[(size_t)gm * N + gn] = sp_epilogue(acc[i][j], bias, gn, out_round, om, oemin,
                                                       ofmax, oovf, osub);
        }
}

// One thread per output, sequential (sp_tc_dot / sp_half_dot): the cross-check of the tiled
// kernels, selectable with SIMPREC_CUPY_GEMM=simple. model 0: tensor core, 1: "fp16".
// grid (ceil(M*N/128), 1, B), 128 threads.
extern "C" __global__ void
sp_simple_gemm(const float *__restrict__ A, const float *__restrict__ Bm, const float *bias,
               float *__restrict__ Out, int M, int N, int K, int model, int m, int emin, int blk,
               int frac, int floor_e, float fmax, int ovf, int sub, int out_round, int om,
               int oemin, float ofmax, int oovf, int osub) {
    const int z = blockIdx.z;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)M * N) return;
    const int gm = (int)(idx / N), gn = (int)(idx % N);
    const float *a = A + (size_t)z * M * K + (size_t)gm * K;
    const float *b = Bm + (size_t)z * K * N + gn;
    float v = model == 0 ? sp_tc_dot(a, 1, b, N, K, 0.0f, m, emin, blk, frac, floor_e)
                         : sp_half_dot(a, 1, b, N, K, blk, m, emin, fmax, ovf, sub);
    Out[(size_t)z * M * N + (size_t)gm * N + gn] =
        sp_epilogue(v, bias, gn, out_round, om, oemin, ofmax, oovf, osub);
}
