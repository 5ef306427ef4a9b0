// Host build of the device functions, for tests/test_cupy_kernels_host.py (ctypes).
#include "philox.cuh"
#include "round.cuh"
#include "tensor_core.cuh"

extern "C" {
void sp_host_round(const float *x, float *out, long n, int m, int emin, float fmax, int ovf,
                   int subnormals, int mode, unsigned long long seed, unsigned long long stream,
                   unsigned long long offset, unsigned int keep) {
    for (long i = 0; i < n; ++i) {
        unsigned int w = mode == SP_SR ? (sp_philox_word(seed, stream, offset + i) & keep) : 0u;
        out[i] = sp_round(x[i], m, emin, fmax, ovf, subnormals, mode, w);
    }
}

void sp_host_philox(unsigned int *out, long n, unsigned long long seed, unsigned long long stream,
                    unsigned long long offset) {
    for (long i = 0; i < n; ++i) out[i] = sp_philox_word(seed, stream, offset + i);
}

// a (B, M, K), b (B, K, N), c (B, M, N) -> out (B, M, N); model 0: tensor core, 1: "fp16"
void sp_host_gemm(const float *a, const float *b, const float *c, float *out, int B, int M,
                  int N, int K, int model, int m, int emin, int blk, int frac, int floor_e,
                  float fmax, int ovf, int subnormals) {
    for (int z = 0; z < B; ++z)
        for (int i = 0; i < M; ++i)
            for (int j = 0; j < N; ++j) {
                const float *ap = a + ((long)z * M + i) * K, *bp = b + (long)z * K * N + j;
                long o = ((long)z * M + i) * N + j;
                out[o] = model == 0
                    ? sp_tc_dot(ap, 1, bp, N, K, c[o], m, emin, blk, frac, floor_e)
                    : sp_half_dot(ap, 1, bp, N, K, blk, m, emin, fmax, ovf, subnormals);
            }
}
}
