// Rounding an fp32 value into a simprec Format whose values fit fp32 (simprec/formats.py and
// docs/formats.md are the specification). One routine for every kernel:
//   m: stored mantissa bits (0..23); emin: smallest normal exponent (-126..);
//   fmax: the largest finite value; ovf: SP_OVF_*; subnormals: 0 flushes results below 2^emin
//   (after rounding as if subnormals existed); mode: SP_RN, SP_RZ, SP_SR; word: the element's
//   random word for SP_SR, already masked to its top `random_bits` bits.
// NaN inputs and NaN results are the canonical NaN (payloads are not part of the contract).
#pragma once
#include "common.cuh"

#define SP_RN 0
#define SP_RZ 1
#define SP_SR 2
#define SP_OVF_INF 0
#define SP_OVF_SAT 1
#define SP_OVF_NAN 2

SP_HD float sp_round(float x, int m, int emin, float fmax, int ovf, int subnormals, int mode,
                     unsigned int word) {
    unsigned int xb = SP_F2U(x);
    unsigned int sign = xb & 0x80000000u;
    unsigned int wb = xb ^ sign;
    if (wb > 0x7F800000u) return SP_U2F(SP_NAN_BITS);
    unsigned int rb;
    if (wb == 0x7F800000u) {  // +-inf: kept, saturated, or NaN, whatever the mode
        if (ovf == SP_OVF_NAN) return SP_U2F(SP_NAN_BITS);
        rb = ovf == SP_OVF_SAT ? SP_F2U(fmax) : wb;
        return SP_U2F(rb | sign);
    }
    int d = 23 - m;
    unsigned int tb = (unsigned int)(emin + 127) << 23;  // 2^emin (emin >= -126)
    if (emin > -126 && wb < tb) {
        // Below 2^emin the grid is uniform, sigma = 2^(emin - m): round w / sigma to an integer.
        // w = M * 2^ew exactly; w / sigma = M / 2^s with s >= 1.
        unsigned int field = wb >> 23;
        unsigned int M = field ? ((wb & 0x7FFFFFu) | 0x800000u) : wb;
        int ew = field ? (int)field - 150 : -149;
        int s = emin - m - ew;
        sp_u64 q = s < 64 ? ((sp_u64)M >> s) : 0;
        sp_u64 r = s < 64 ? ((sp_u64)M & (((sp_u64)1 << s) - 1)) : (sp_u64)M;  // the fraction * 2^s
        if (mode == SP_RN) {
            if (s < 40) {  // else r < 2^24 <= half: rounds down
                sp_u64 half = (sp_u64)1 << (s - 1);
                q += (r > half || (r == half && (q & 1))) ? 1 : 0;
            }
        } else if (mode == SP_SR) {
            // up iff floor(f * 2^32) + W >= 2^32 (f = r / 2^s), the reference's rule
            sp_u64 g = s <= 32 ? (r << (32 - s)) : (s - 32 < 64 ? (r >> (s - 32)) : 0);
            q += ((sp_u64)word + g >= ((sp_u64)1 << 32)) ? 1 : 0;
        }
        // q * sigma, exact: q <= 2^m < 2^24 and sigma >= 2^-149... a normal power of two here
        float v = (float)q * SP_U2F((unsigned int)(127 + emin - m) << 23);
        rb = SP_F2U(v);
        if (!subnormals && rb < tb) rb = 0;
    } else {
        // In the normal range (and over fp32's own subnormals when emin == -126) the last kept
        // bit is bit d of the pattern; a carry into the exponent is the step to the next binade.
        rb = wb;
        if (d > 0) {
            unsigned int keep = ~((1u << d) - 1u);
            if (mode == SP_RN) rb = (wb + ((wb >> d) & 1u) + ((1u << (d - 1)) - 1u)) & keep;
            else if (mode == SP_RZ) rb = wb & keep;
            else rb = (wb + (word >> (32 - d))) & keep;
        }
        if (!subnormals && rb < tb) rb = 0;
    }
    if (SP_U2F(rb) > fmax) {  // beyond the largest finite value (or carried into fp32's inf)
        if (mode == SP_RZ || ovf == SP_OVF_SAT) rb = SP_F2U(fmax);  // toward_zero never overflows
        else if (ovf == SP_OVF_NAN) return SP_U2F(SP_NAN_BITS);
        else rb = 0x7F800000u;
    }
    return SP_U2F(rb | sign);
}
