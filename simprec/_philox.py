"""Philox4x32-10, the counter-based generator that gives stochastic rounding the same random
words on every backend.

A counter-based generator maps (key, counter) to random words with a pure function, so a GPU
thread can draw the word of element i without any state shared with other threads, and the NumPy
reference draws exactly the same word. Algorithm and constants: Salmon, Moraes, Dror, Shaw,
"Parallel random numbers: as easy as 1, 2, 3" (SC 2011), Random123 `philox.h`; checked against
Random123's known-answer vectors (`tests/kat_vectors`, tests/test_philox.py).

simprec's stream layout (the CuPy backend's `philox.cuh` implements the same):
- key = (seed mod 2**32, seed >> 32), the 64-bit `seed`;
- word j of the stream (j = 0, 1, 2, ...) is word j % 4 of the block for counter
  (j // 4 mod 2**32, j // 2**34, stream mod 2**32, stream >> 32);
- `Philox.words(n)` returns the next n words and advances `offset` by n, so consecutive calls
  continue the stream, and rounding an array uses one word per element in C order.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Philox", "philox4x32"]

# Random123 philox.h: PHILOX_M4x32_0/1 (multipliers), PHILOX_W32_0/1 (Weyl key increments)
M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = 0x9E3779B9, 0xBB67AE85
ROUNDS = 10
_LO = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)


def philox4x32(counter, key, rounds: int = ROUNDS) -> np.ndarray:
    """The Philox4x32 block function: counter (..., 4) and key (..., 2) uint32 arrays (they
    broadcast) -> (..., 4) uint32 words."""
    c = np.asarray(counter, dtype=np.uint32).astype(np.uint64)
    k = np.asarray(key, dtype=np.uint32).astype(np.uint64)
    c0, c1, c2, c3 = (c[..., i] for i in range(4))
    k0, k1 = k[..., 0], k[..., 1]
    for r in range(rounds):
        if r:  # the key schedule: bumped before every round but the first
            k0 = (k0 + np.uint64(W0)) & _LO
            k1 = (k1 + np.uint64(W1)) & _LO
        p0 = M0 * c0  # exact 64-bit products: (hi, lo) = mulhilo32
        p1 = M1 * c2
        c0, c1, c2, c3 = ((p1 >> _32) ^ c1 ^ k0, p1 & _LO, (p0 >> _32) ^ c3 ^ k1, p0 & _LO)
    return np.stack(np.broadcast_arrays(c0, c1, c2, c3), axis=-1).astype(np.uint32)


def stream_words(seed: int, stream: int, offset: int, n: int) -> np.ndarray:
    """Words offset .. offset+n-1 of the stream (seed, stream), uint32 (see the module doc)."""
    if n == 0:
        return np.empty(0, np.uint32)
    first, last = offset // 4, (offset + n - 1) // 4
    block = np.arange(first, last + 1, dtype=np.uint64)
    counter = np.empty(block.shape + (4,), np.uint64)
    counter[:, 0] = block & _LO
    counter[:, 1] = block >> _32
    counter[:, 2] = stream & 0xFFFFFFFF
    counter[:, 3] = stream >> 32
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], np.uint64)
    words = philox4x32(counter, key).reshape(-1)
    start = offset - 4 * first
    return words[start:start + n]


class Philox:
    """A Philox4x32-10 stream: a 64-bit `seed` (the key), a 64-bit `stream` id and the position
    `offset` (words already drawn). Pass it as `rng` to `sp.round(..., mode="stochastic")` (or a
    GPU backend's round) for random words that every backend draws alike.

    `words(n)` draws the next n words; `state()` / `Philox(**state)` save and restore it.
    """

    def __init__(self, seed: int = 0, stream: int = 0, offset: int = 0):
        for name, v in (("seed", seed), ("stream", stream), ("offset", offset)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 0 <= v < 2**64:
                raise ValueError(f"Philox: {name} must be an integer in [0, 2**64), got {v!r}")
        self.seed, self.stream, self.offset = int(seed), int(stream), int(offset)

    def words(self, n: int) -> np.ndarray:
        """The next n uint32 words of the stream; advances `offset` by n."""
        out = stream_words(self.seed, self.stream, self.offset, int(n))
        self.offset += int(n)
        return out

    def advance(self, n: int) -> int:
        """Skip n words (what a GPU kernel that drew them does); returns the old offset."""
        old = self.offset
        self.offset += int(n)
        return old

    def state(self) -> dict:
        return {"seed": self.seed, "stream": self.stream, "offset": self.offset}

    def __repr__(self) -> str:
        return f"Philox(seed={self.seed}, stream={self.stream}, offset={self.offset})"
