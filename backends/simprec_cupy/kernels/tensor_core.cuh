// The tensor-core accumulation models sm70 / sm80 / sm90 (simprec/_tensor_core.py is the
// specification; Khattak & Mikaitis 2025, Xie et al. "MMA-Sim" 2025), in integers.
// One block of `blk` products: E = the largest exponent among the nonzero terms (products
// unnormalised: e_a + e_b; c: its fp32 exponent, -126 if subnormal), floored at `floor_e`
// (sm90: -133); each term truncated toward zero to a multiple of u = 2^(E - frac); the sum exact;
// then truncated toward zero to fp32 (subnormals at 2^-149), >= 2^128 -> inf, zero -> +0.
#pragma once
#include "common.cuh"
#include "round.cuh"

#define SP_NO_EXP (-4096)  // exponent of a zero (or non-finite) operand: never the maximum

// An fp16/bf16 value held in fp32 as (signed integer significand, tensor-core exponent):
// x = sig * 2^(e - m); e = max(floor(log2|x|), emin). Zeros and non-finite values give
// (0, SP_NO_EXP); `bad` is set for the non-finite ones.
SP_HD void sp_tc_decode(float x, int m, int emin, int &sig, int &e, int &bad) {
    unsigned int b = SP_F2U(x);
    unsigned int mag = b & 0x7FFFFFFFu;
    unsigned int field = mag >> 23;
    bad = field == 255u;
    if (bad || mag == 0u) { sig = 0; e = SP_NO_EXP; return; }
    int e32 = field ? (int)field - 127 : -127;
    e = e32 > emin ? e32 : emin;
    unsigned int m24 = field ? ((mag & 0x7FFFFFu) | 0x800000u) : mag;
    int shift = 150 - (field ? (int)field : 1) + e - m;
    unsigned int M = shift < 32 ? (m24 >> shift) : 0u;
    sig = (b >> 31) ? -(int)M : (int)M;
}

// One product's aligned, truncated term: (a_sig * b_sig) * 2^(lshift - delta), toward zero,
// delta = E - (e_a + e_b) >= 0; lshift = frac - 2m.
SP_HD int sp_tc_term(int sa, int sb, int lshift, int delta) {
    int p = sa * sb;
    unsigned int mag = (unsigned int)(p < 0 ? -p : p) << lshift;
    mag >>= (delta < 31 ? delta : 31);
    return p < 0 ? -(int)mag : (int)mag;
}

// The accumulator c aligned to u = 2^(E - frac), truncated toward zero (c finite).
SP_HD sp_i64 sp_tc_c_term(float c, int E, int frac) {
    unsigned int b = SP_F2U(c);
    unsigned int mag = b & 0x7FFFFFFFu;
    if (mag == 0u) return 0;
    unsigned int field = mag >> 23;
    sp_u64 M = field ? ((mag & 0x7FFFFFu) | 0x800000u) : mag;
    int sh = (field ? (int)field : 1) - 150 + frac - E;
    sp_i64 t = sh >= 0 ? (sp_i64)(M << sh) : (sp_i64)(-sh < 64 ? (M >> -sh) : 0);
    return (b >> 31) ? -t : t;
}

// The fp32 exponent of c as the tensor core counts it (-126 for subnormals), SP_NO_EXP for 0.
SP_HD int sp_tc_c_exp(float c) {
    unsigned int mag = SP_F2U(c) & 0x7FFFFFFFu;
    if (mag == 0u) return SP_NO_EXP;
    int field = (int)(mag >> 23);
    return field ? field - 127 : -126;
}

// S * 2^(E - frac) truncated toward zero to fp32 (S an exact integer sum, |S| < 2^40).
SP_HD float sp_tc_finish(sp_i64 S, int E, int frac) {
    if (S == 0) return 0.0f;
    sp_u64 a = S < 0 ? (sp_u64)(-S) : (sp_u64)S;
    int nbits = 64 - SP_CLZ64(a);
    int s0 = E - frac;
    int top = s0 + nbits - 1;  // floor(log2 |value|)
    unsigned int bits;
    if (top > 127) {
        bits = 0x7F800000u;
    } else if (top >= -126) {
        sp_u64 m24 = nbits > 24 ? (a >> (nbits - 24)) : (a << (24 - nbits));
        bits = ((unsigned int)(top + 127) << 23) | ((unsigned int)m24 & 0x7FFFFFu);
    } else {
        int sh = s0 + 149;  // the value in units of 2^-149, truncated
        sp_u64 q = sh >= 0 ? (a << sh) : (-sh < 64 ? (a >> -sh) : 0);
        bits = (unsigned int)q;
        if (bits == 0u) return 0.0f;  // truncated to zero: +0
    }
    return SP_U2F(bits | (S < 0 ? 0x80000000u : 0u));
}

// Special values of one block: a NaN product (NaN operand, 0 * inf) or NaN c, or infinities of
// both signs -> NaN; else an infinity's sign wins; else `finite` stands. a, b: the raw operands
// (stride sa / sb), c: the block's incoming accumulator.
SP_HD float sp_tc_specials(const float *a, int sa, const float *b, int sb, int n, float c,
                           float finite) {
    bool nan = c != c, pinf = c == SP_U2F(0x7F800000u), ninf = c == -SP_U2F(0x7F800000u);
    for (int k = 0; k < n; ++k) {
        float x = a[k * sa], y = b[k * sb];
        if (x != x || y != y) { nan = true; continue; }
        bool ix = (SP_F2U(x) & 0x7FFFFFFFu) == 0x7F800000u;
        bool iy = (SP_F2U(y) & 0x7FFFFFFFu) == 0x7F800000u;
        if (!ix && !iy) continue;
        if (x == 0.0f || y == 0.0f) { nan = true; continue; }
        bool neg = (x < 0.0f) != (y < 0.0f);
        if (neg) ninf = true; else pinf = true;
    }
    if (nan || (pinf && ninf)) return SP_U2F(SP_NAN_BITS);
    if (pinf) return SP_U2F(0x7F800000u);
    if (ninf) return -SP_U2F(0x7F800000u);
    return finite;
}

// One output of the model, sequentially: c + sum_k a[k*sa] * b[k*sb] over K in blocks of blk.
// The host tests and the simple GPU kernel use it; the tiled kernel computes the same.
SP_HD float sp_tc_dot(const float *a, int sa, const float *b, int sb, int K, float c, int m,
                      int emin, int blk, int frac, int floor_e) {
    int lshift = frac - 2 * m;
    for (int j0 = 0; j0 < K; j0 += blk) {
        int n = K - j0 < blk ? K - j0 : blk;
        bool special = !(SP_F2U(c) << 1 < 0xFF000000u);  // c is inf or NaN
        float cf = special ? 0.0f : c;
        int E = sp_tc_c_exp(cf);
        int sig_a[16], sig_b[16], e_ab[16];
        for (int k = 0; k < n; ++k) {
            int ea, eb, bada, badb;
            sp_tc_decode(a[(j0 + k) * sa], m, emin, sig_a[k], ea, bada);
            sp_tc_decode(b[(j0 + k) * sb], m, emin, sig_b[k], eb, badb);
            special = special || bada || badb;
            e_ab[k] = ea + eb;
            E = e_ab[k] > E ? e_ab[k] : E;
        }
        E = E > floor_e ? E : floor_e;
        int S = 0;  // |term| < 2^27, at most 16 terms
        for (int k = 0; k < n; ++k) S += sp_tc_term(sig_a[k], sig_b[k], lshift, E - e_ab[k]);
        float res = sp_tc_finish((sp_i64)S + sp_tc_c_term(cf, E, frac), E, frac);
        if (special) res = sp_tc_specials(a + j0 * sa, sa, b + j0 * sb, sb, n, c, res);
        c = res;
    }
    return c;
}

// The "fp16" model (simprec/accumulate.py): per block of blk products, s = fp32(acc), then
// s = fl32(s + fl32(a_k * b_k)) in order, then acc = round_nearest_even(s, fmt).
// The format (m, emin, fmax, ovf, subnormals) is fp16's or bf16's.
SP_HD float sp_half_dot(const float *a, int sa, const float *b, int sb, int K, int blk, int m,
                        int emin, float fmax, int ovf, int subnormals) {
    float acc = 0.0f;
    for (int j0 = 0; j0 < K; j0 += blk) {
        int n = K - j0 < blk ? K - j0 : blk;
        float s = acc;
        for (int k = 0; k < n; ++k) s = SP_ADD(s, SP_MUL(a[(j0 + k) * sa], b[(j0 + k) * sb]));
        acc = sp_round(s, m, emin, fmax, ovf, subnormals, SP_RN, 0u);
    }
    return acc;
}
