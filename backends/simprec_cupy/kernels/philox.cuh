// Philox4x32-10 (Salmon et al., SC 2011; Random123 philox.h), simprec's stream layout:
// word j of stream (seed, stream) is word j % 4 of the block at counter
// (j / 4 mod 2^32, j / 2^34, stream mod 2^32, stream / 2^32), key (seed mod 2^32, seed / 2^32).
// The NumPy reference, simprec/_philox.py, draws the same words.
#pragma once
#include "common.cuh"

SP_HD unsigned int sp_philox_word(sp_u64 seed, sp_u64 stream, sp_u64 j) {
    sp_u64 block = j >> 2;
    unsigned int c0 = (unsigned int)block, c1 = (unsigned int)(block >> 32);
    unsigned int c2 = (unsigned int)stream, c3 = (unsigned int)(stream >> 32);
    unsigned int k0 = (unsigned int)seed, k1 = (unsigned int)(seed >> 32);
    for (int r = 0; r < 10; ++r) {
        if (r) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        sp_u64 p0 = (sp_u64)0xD2511F53u * c0, p1 = (sp_u64)0xCD9E8D57u * c2;
        unsigned int n0 = (unsigned int)(p1 >> 32) ^ c1 ^ k0, n2 = (unsigned int)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0; c1 = (unsigned int)p1; c2 = n2; c3 = (unsigned int)p0;
    }
    unsigned int lane = (unsigned int)(j & 3);
    return lane == 0 ? c0 : lane == 1 ? c1 : lane == 2 ? c2 : c3;
}
