"""Philox4x32-10 (simprec._philox): Random123's known answers, the stream layout, and stochastic
rounding with a Philox rng (the words every backend draws alike)."""

from __future__ import annotations

import numpy as np
import pytest

import simprec as sp
from simprec._philox import philox4x32, stream_words

# Random123 tests/kat_vectors (DEShawResearch/random123), the three "philox4x32 10" lines:
# counter (4 words), key (2 words) -> output (4 words)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_known_answers(counter, key, expected):
    out = philox4x32(np.array(counter, np.uint32), np.array(key, np.uint32))
    assert out.dtype == np.uint32
    assert [int(v) for v in out] == list(expected)


def test_block_function_broadcasts_over_counters():
    counters = np.array([k[0] for k in KAT], np.uint32)
    keys = np.array([k[1] for k in KAT], np.uint32)
    assert philox4x32(counters, keys).tolist() == [list(k[2]) for k in KAT]


def test_stream_layout():
    # word j is word j % 4 of the block at counter (j // 4, 0, stream lo, stream hi)
    seed, stream = 0x1234_5678_9ABC_DEF0, 7
    words = stream_words(seed, stream, 0, 12)
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], np.uint32)
    for j in range(12):
        block = philox4x32(np.array([j // 4, 0, stream, 0], np.uint32), key)
        assert words[j] == block[j % 4]
    # a block index beyond 2**32 spills into counter word 1
    far = stream_words(seed, stream, 4 * (2**32 + 3) + 1, 1)
    assert far[0] == philox4x32(np.array([3, 1, stream, 0], np.uint32), key)[1]


def test_words_continue_the_stream():
    rng = sp.Philox(seed=5, stream=2)
    parts = [rng.words(n) for n in (3, 1, 6, 0, 5)]
    assert rng.offset == 15
    np.testing.assert_array_equal(np.concatenate(parts), stream_words(5, 2, 0, 15))
    assert sp.Philox(**sp.Philox(5, 2, 9).state()).words(2).tolist() == \
        stream_words(5, 2, 9, 2).tolist()


def test_words_look_uniform():
    w = sp.Philox(seed=1).words(1 << 16)
    bits = np.unpackbits(w.view(np.uint8)).mean()
    assert abs(bits - 0.5) < 0.005
    assert len(np.unique(w)) > 65000


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, True])
def test_bad_arguments(bad):
    with pytest.raises(ValueError, match="Philox"):
        sp.Philox(seed=bad)


def test_stochastic_rounding_with_philox_uses_one_word_per_element():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    rng = sp.Philox(seed=3)
    a = sp.round(x, sp.bf16, "stochastic", rng=rng)
    assert rng.offset == x.size
    b = sp.round(x[:400], sp.bf16, "stochastic", rng=sp.Philox(seed=3))
    c = sp.round(x[400:], sp.bf16, "stochastic", rng=sp.Philox(seed=3, offset=400))
    np.testing.assert_array_equal(a.view(np.uint32), np.concatenate([b, c]).view(np.uint32))
    # the documented rule: up iff floor(f * 2**32) + W >= 2**32, f the fraction in ulps
    words = stream_words(3, 0, 0, x.size).astype(np.float64)
    lo = sp.round(x, sp.bf16, "toward_zero").astype(np.float64)
    ulp = np.abs(sp.round(x, sp.bf16, "nearest").astype(np.float64) - lo)
    ulp = np.where(ulp == 0, 2.0 ** (np.floor(np.log2(np.abs(lo))) - 7), ulp)
    f = np.abs(x.astype(np.float64) - lo) / ulp
    up = np.floor(f * 2**32) + words >= 2**32
    expected = np.where(up, lo + np.sign(x) * ulp, lo)
    np.testing.assert_array_equal(a, expected.astype(np.float32))


def test_stochastic_rounding_is_unbiased_with_philox():
    x = np.full(1 << 16, 1 + 2**-9, np.float32)  # a quarter of the way to the next bf16
    r = sp.round(x, sp.bf16, "stochastic", rng=sp.Philox(seed=11))
    up = np.mean(r > 1)
    assert abs(up - 0.25) < 0.01


def test_stochastic_needs_an_rng():
    with pytest.raises(TypeError, match="Philox"):
        sp.round(np.ones(3, np.float32), sp.fp16, "stochastic", rng=3)
