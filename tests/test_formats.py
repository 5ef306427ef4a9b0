"""simprec.formats: Format facts, and `round` checked bit for bit against numpy / ml_dtypes casts,
the real H200's casts, and an exact reference written with `fractions`."""

import math
import os
from fractions import Fraction

import ml_dtypes as md
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simprec as sp
from simprec.formats import _random_words, round_array

# the tests' own numpy casts of signaling NaNs and huge values warn; sp.round itself does not
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast",
                                        "ignore:overflow encountered in cast")

NP_CAST = {sp.fp16: np.float16, sp.bf16: md.bfloat16, sp.fp8_e4m3: md.float8_e4m3fn,
           sp.fp8_e5m2: md.float8_e5m2}

CUSTOM = [
    sp.Format(3, 2), sp.Format(6, 9), sp.Format(8, 3), sp.Format(2, 1), sp.Format(4, 0),
    sp.Format(5, 10, subnormals=False), sp.Format(8, 7, subnormals=False),
    sp.Format(4, 3, overflow="saturate"), sp.fp8_e4m3.replace(overflow="saturate"),
    sp.Format(5, 2, overflow="nan"), sp.Format(3, 2, inf=False, nan="none"),
    sp.Format(8, 7, overflow="saturate"), sp.Format(7, 20),
    sp.Format(8, 4, inf=False, nan="fn"),      # top binade beyond fp32: float64 container
    sp.Format(10, 30), sp.Format(11, 10),      # float64 containers
]
# SIMPREC_HYPOTHESIS_EXAMPLES=2000 for a deeper search (the default keeps CI fast)
SETTINGS = settings(max_examples=int(os.environ.get("SIMPREC_HYPOTHESIS_EXAMPLES", 60)),
                    deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ exact reference (fractions)

def _encoding_is_odd(fmt, k, q):
    """Is the encoding of k * 2**q (k the count of the grid step 2**q) odd? (ties-to-even rule)"""
    if fmt.man_bits > 0:
        return k % 2 == 1  # k = 2**(m+1) is the next binade's even mantissa 0
    return k != 0 and (q + k.bit_length() - 1 + fmt.bias) % 2 == 1  # m = 0: exponent's parity


def ref_round(v, fmt, mode="nearest", word=0, random_bits=32):
    """The exact rule of docs/formats.md, on one Python float, with rationals."""
    if math.isnan(v):
        return math.nan
    sign = math.copysign(1.0, v)
    if math.isinf(v):
        return {"inf": v, "saturate": sign * fmt.max, "nan": math.nan}[fmt.overflow]
    a = Fraction(abs(v))
    if a == 0:
        return sign * 0.0
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1                                   # now 2**e <= a < 2**(e+1)
    q = max(e, fmt.min_exp) - fmt.man_bits       # the grid step at a
    n = a / Fraction(2) ** q
    k, f = math.floor(n), n - math.floor(n)
    if mode == "nearest":
        if f > Fraction(1, 2) or (f == Fraction(1, 2) and _encoding_is_odd(fmt, k, q)):
            k += 1
    elif mode == "stochastic":
        r = word >> (32 - random_bits)
        if math.floor(f * 2 ** random_bits) + r >= 2 ** random_bits:
            k += 1
    y = k * Fraction(2) ** q
    if y > Fraction(fmt.max):
        if mode == "toward_zero" or fmt.overflow == "saturate":
            y = Fraction(fmt.max)
        else:
            return sign * math.inf if fmt.overflow == "inf" else math.nan
    if not fmt.subnormals and y < Fraction(fmt.smallest_normal):
        y = Fraction(0)
    return sign * float(y)


def ref_array(x, fmt, mode="nearest", seed=0, random_bits=32):
    words = np.random.default_rng(seed).integers(0, 2**32, size=x.size, dtype=np.uint32)
    out = [ref_round(float(v), fmt, mode, int(w), random_bits)
           for v, w in zip(x.ravel(), words, strict=True)]
    return np.array(out, fmt.container).reshape(x.shape)


# ------------------------------------------------------------------ helpers

def assert_same_bits(got, want, what=""):
    """Equal bit patterns (as `want`'s dtype); NaN compared as NaN-ness only."""
    got = np.asarray(got).astype(want.dtype)
    ui = {2: np.uint16, 4: np.uint32, 8: np.uint64}[want.dtype.itemsize]
    nan_g, nan_w = np.isnan(got.astype(np.float64)), np.isnan(want.astype(np.float64))
    bad = (got.view(ui) != want.view(ui)) & ~(nan_g & nan_w)
    if bad.any():
        i = np.flatnonzero(bad.ravel())[:5]
        raise AssertionError(f"{what}: {bad.sum()} of {bad.size} differ, e.g. at {i}: "
                             f"got {got.ravel()[i]}, want {want.ravel()[i]}")


def _f32(bits):
    return np.asarray(bits, np.uint32).view(np.float32)


def f32_cases(n=1_000_000, seed=0):
    """Random float32 bit patterns plus the hard cases: specials, subnormals, the midpoints of
    the fp16/bf16 grids and their float32 neighbours."""
    rng = np.random.default_rng(seed)
    special = _f32([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7F800001, 0x7FC00000, 0x7FFFFFFF,
                    0xFFFFFFFF, 0xFF800001, 0x7FBFFFFF, 0x00000001, 0x807FFFFF, 0x00800000,
                    0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F8000, 0x477FF000, 0x477FEFFF, 0x33000000,
                    0x33000001, 0xB3000000])
    sign = rng.integers(0, 2, 20_000, dtype=np.uint32) << 31
    subn = _f32(rng.integers(0, 0x00800000, 20_000, dtype=np.uint32) | sign)
    h = np.arange(1 << 16, dtype=np.uint16)
    f16 = h.view(np.float16).astype(np.float32)
    b16 = h.view(md.bfloat16).astype(np.float32)
    mids = []
    for v, fmt in ((f16, sp.fp16), (b16, sp.bf16)):
        v = v[np.isfinite(v)].astype(np.float64)
        mid = (v + np.copysign(ulp(v, fmt) / 2, v)).astype(np.float32)  # exact: fits float32
        mids += [mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(-np.inf))]
    rand = _f32(rng.integers(0, 2**32, n, dtype=np.uint32))
    return np.concatenate([special, subn, f16, b16, *mids, rand])


def ulp(v, fmt):
    """The grid step of fmt at the values v (float64 array)."""
    e = np.frexp(np.abs(v))[1] - 1
    return np.exp2(np.maximum(e, fmt.min_exp) - fmt.man_bits)


# ------------------------------------------------------------------ standard formats, bit for bit

@pytest.fixture(scope="module")
def cases():
    return f32_cases()


@pytest.mark.parametrize("fmt", [sp.fp16, sp.bf16, sp.fp8_e4m3, sp.fp8_e5m2], ids=str)
def test_float32_casts_match_numpy_and_ml_dtypes(cases, fmt):
    with np.errstate(all="ignore"):
        want = cases.astype(NP_CAST[fmt]).astype(np.float32)
    got = sp.round(cases, fmt)
    assert got.dtype == np.float32 and got.shape == cases.shape
    assert_same_bits(got, want, f"float32 -> {fmt.name}")


@pytest.mark.parametrize("fmt", [sp.fp16, sp.bf16], ids=str)
def test_every_fp16_and_bf16_pattern(fmt):
    h = np.arange(1 << 16, dtype=np.uint16)
    for src in (h.view(np.float16), h.view(md.bfloat16)):
        x = src.astype(np.float32)
        assert_same_bits(sp.round(x, fmt), src.astype(NP_CAST[fmt]).astype(np.float32),
                         f"{src.dtype} -> {fmt.name}")
    # and the patterns of the format itself are fixed points, in the format's own dtype
    own = h.view(NP_CAST[fmt])
    assert_same_bits(sp.round(own.astype(np.float32), fmt).astype(own.dtype), own, "fixed points")


def f64_cases(n=300_000, seed=1):
    """Random float64 bit patterns, and values near the fp16/bf16/fp8 ranges with 52 random
    mantissa bits (double rounding through float32 would show there)."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 2**64, n, dtype=np.uint64).view(np.float64)
    near = rng.standard_normal(n) * np.exp2(rng.integers(-30, 20, n))
    ties = (np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float64))
    ties = ties[np.isfinite(ties)]
    mid = ties + np.copysign(ulp(ties, sp.fp16) / 2, ties)
    return np.concatenate([raw, near, mid, np.nextafter(mid, np.inf), np.nextafter(mid, -np.inf),
                           [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -1e308]])


def test_float64_to_fp16_is_direct_like_numpy():
    x = f64_cases()
    with np.errstate(all="ignore"):
        want = x.astype(np.float16).astype(np.float32)   # numpy casts float64 -> float16 directly
    got = sp.round(x, sp.fp16)
    assert got.dtype == np.float32
    assert_same_bits(got, want, "float64 -> fp16")


def test_float64_in_range_blocks_round_directly(monkeypatch):
    """float64 blocks with nothing beyond max take the magic-constant path of the float64
    engine: bit for bit numpy's direct float64 -> float16 cast."""
    import simprec.formats as formats
    calls = []
    real = formats._round_magic
    monkeypatch.setattr(formats, "_round_magic", lambda *a: calls.append(1) or real(*a))
    x = f64_cases()
    x = x[np.abs(x) <= 65504]
    got = sp.round(x, sp.fp16)
    assert calls
    assert_same_bits(got, x.astype(np.float16).astype(np.float32), "float64 in range -> fp16")


def test_float64_to_fp32_matches_astype():
    x = f64_cases()
    with np.errstate(all="ignore"):
        assert_same_bits(sp.round(x, sp.fp32), x.astype(np.float32), "float64 -> fp32")


@pytest.mark.parametrize("fmt", [sp.bf16, sp.fp8_e4m3, sp.fp8_e5m2, sp.tf32], ids=str)
def test_float64_inputs_round_once(fmt):
    """ml_dtypes casts float64 through float32 (double rounding), so the reference is exact."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(4000) * np.exp2(rng.integers(fmt.min_exp - fmt.man_bits - 3,
                                                         min(fmt.max_exp + 3, 1000), 4000))
    assert_same_bits(sp.round(x, fmt), ref_array(x, fmt), f"float64 -> {fmt.name}")


@pytest.mark.parametrize("fmt, name", [
    (sp.fp16, "float16"), (sp.bf16, "bfloat16"), (sp.fp8_e5m2, "float8_e5m2"),
    (sp.fp8_e4m3, "float8_e4m3fn")], ids=str)
def test_float32_casts_match_torch(cases, fmt, name):
    """torch's CPU float8_e4m3fn cast changed its overflow rule between releases: 2.11 gives NaN
    (OCP e4m3fn, as ml_dtypes and sp.fp8_e4m3), 2.13 saturates to ±448, which is
    sp.fp8_e4m3.replace(overflow="saturate"). Whichever this torch does, simprec has it exactly."""
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, name)
    if name == "float8_e4m3fn" and torch.tensor(1000.0).to(dtype).float().item() == 448.0:
        fmt = fmt.replace(overflow="saturate")
    want = torch.from_numpy(cases).to(dtype).float().numpy()
    assert_same_bits(sp.round(cases, fmt), want, f"{fmt} vs torch {torch.__version__} {name}")


def test_no_double_rounding_through_float32():
    x = np.array([1 + 2**-8 + 2**-30, -(1 + 2**-11 + 2**-40)])   # just above bf16 / fp16 ties
    assert sp.round(x, sp.bf16)[0] == 1 + 2**-7          # via float32 it would tie to 1.0
    assert sp.round(x, sp.fp16)[1] == -(1 + 2**-10)


# ------------------------------------------------------------------ the real H200

@pytest.mark.parametrize("src, dst", [("f32_bits", "f32_to_fp16"), ("f32_bits", "f32_to_bf16"),
                                      ("x_all", "fp16_to_bf16"), ("xb_all", "bf16_to_fp16")])
def test_casts_match_h200(load_h200, src, dst):
    """The GPU's results are fp16/bf16 bit patterns; compared as exact float32 values (NaN as
    NaN-ness: the GPU's NaN payloads are its own)."""
    d = load_h200("elementwise_dev")
    as32 = {"f32": lambda a: a.view(np.float32), "x_all": lambda a: a.view(np.float16),
            "xb_all": lambda a: a.view(md.bfloat16), "fp16": lambda a: a.view(np.float16),
            "bf16": lambda a: a.view(md.bfloat16)}
    x = as32["f32" if src == "f32_bits" else src](d[src]).astype(np.float32)
    fmt = sp.fp16 if dst.endswith("fp16") else sp.bf16
    want = as32[dst[-4:]](d[dst]).astype(np.float32)
    assert x.size >= 65536 and want.shape == x.shape
    assert_same_bits(sp.round(x, fmt), want, f"H200 {src} -> {dst}")


# ------------------------------------------------------------------ custom formats vs. fractions

def values_near(fmt):
    """Values around fmt's grid: random counts of grid steps in random binades, off by a random
    fraction or exactly at a midpoint, both signs; plus NaN, ±inf, ±0."""
    lo, hi = fmt.min_exp - fmt.man_bits - 3, min(fmt.max_exp + 2, 126)
    binade = st.integers(lo, hi)
    frac = st.one_of(st.just(0.5), st.just(0.0), st.floats(0, 1, exclude_max=True))
    count = st.integers(0, 2 ** (fmt.man_bits + 1))
    grid = st.builds(lambda e, k, f, s: s * (k + f) * 2.0 ** (max(e, fmt.min_exp) - fmt.man_bits),
                     binade, count, frac, st.sampled_from([1, -1]))
    specials = st.sampled_from([math.nan, math.inf, -math.inf, -0.0])
    return st.one_of(grid, st.floats(width=32), specials)


@st.composite
def custom_case(draw, modes=("nearest", "toward_zero", "stochastic")):
    fmt = draw(st.sampled_from(CUSTOM))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    vals = draw(st.lists(values_near(fmt), min_size=1, max_size=40))
    return fmt, np.array(vals, dtype), draw(st.sampled_from(modes)), draw(st.integers(0, 2**32))


@SETTINGS
@given(custom_case(), st.sampled_from([32, 24, 3]))
def test_custom_formats_match_exact_reference(case, random_bits):
    fmt, x, mode, seed = case
    kw = {}
    if mode == "stochastic":
        kw = dict(rng=np.random.default_rng(seed), random_bits=random_bits)
    got = sp.round(x, fmt, mode, **kw)
    assert got.dtype == fmt.container
    want = ref_array(x, fmt, mode, seed, random_bits)
    assert_same_bits(got, want, f"{fmt!r} {mode} {x.dtype}")


@pytest.mark.parametrize("fmt", CUSTOM[:8] + [sp.fp16, sp.bf16, sp.fp8_e4m3], ids=str)
@pytest.mark.parametrize("mode", ["nearest", "toward_zero", "stochastic"])
def test_custom_formats_bulk_vs_reference(fmt, mode):
    """A few thousand values over all binades, across block boundaries of the engine."""
    rng = np.random.default_rng(3)
    n = 2500
    e = rng.integers(fmt.min_exp - fmt.man_bits - 2, min(fmt.max_exp + 2, 127), n)
    x = (rng.standard_normal(n) * np.exp2(e)).astype(np.float32)
    kw = dict(rng=np.random.default_rng(7)) if mode == "stochastic" else {}
    assert_same_bits(sp.round(x, fmt, mode, **kw), ref_array(x, fmt, mode, 7), f"{fmt!r} {mode}")


@pytest.mark.parametrize("fmt", [sp.fp16, sp.fp8_e4m3, sp.fp8_e5m2, sp.Format(3, 2),
                                 sp.Format(6, 9), sp.Format(4, 3, overflow="saturate")], ids=str)
def test_in_range_blocks_take_the_fast_paths_exactly(fmt, cases, monkeypatch):
    """Blocks with no NaN and nothing beyond max take Veltkamp's splitting (few values below the
    smallest normal) or the magic-constant path (many): the hard cases (midpoints, their
    neighbours, subnormals, ±0) and random grid points in range, bit for bit. (The paths of the
    NumPy specification: the compiled fast paths are switched off here.)"""
    import simprec.formats as formats
    from simprec import _fast

    monkeypatch.setattr(_fast, "_state", {"enabled": False})
    taken = {"split": 0, "magic": 0}

    def spy(name, real):
        def wrapped(*args):
            result = real(*args)
            taken[name] += result is not False
            return result
        return wrapped

    monkeypatch.setattr(formats, "_round_split", spy("split", formats._round_split))
    monkeypatch.setattr(formats, "_round_magic", spy("magic", formats._round_magic))
    rng = np.random.default_rng(11)
    with np.errstate(all="ignore"):
        hard = cases[np.abs(cases) <= fmt.max]
    grid = (rng.integers(0, 2 ** (fmt.man_bits + 1), 100_000)
            + rng.choice([0.5, 0.25, 0.75], 100_000)) * np.exp2(
        rng.integers(fmt.min_exp - fmt.man_bits, fmt.max_exp - fmt.man_bits, 100_000))
    grid = (grid * rng.choice([-1, 1], grid.size))[np.abs(grid) <= fmt.max].astype(np.float32)
    normal = grid[np.abs(grid) >= fmt.smallest_normal]
    # values below the smallest normal: half-steps of the subnormal grid (ties), and random ones
    k = rng.integers(0, 2 ** (fmt.man_bits + 1), 2000)
    below = np.concatenate([k * fmt.smallest_subnormal / 2,
                            rng.random(2000) * fmt.smallest_normal, [0.0]])
    below = (below * rng.choice([-1, 1], below.size)).astype(np.float32)
    # mostly normal values with a few below the smallest normal spread among them (split), then
    # everything (magic)
    sprinkled = normal.copy()
    sprinkled[rng.integers(0, normal.size, normal.size // 150)] = rng.choice(
        below, normal.size // 150)
    x = np.concatenate([sprinkled, below, hard, grid])
    got = sp.round(x, fmt)
    assert taken["split"] and taken["magic"], taken
    if fmt in NP_CAST:
        want = x.astype(NP_CAST[fmt]).astype(np.float32)
    else:
        pick = rng.integers(0, x.size, 4000)
        x, got = x[pick], got[pick]
        want = ref_array(x, fmt)
    assert_same_bits(got, want, f"{fmt!r} in range")


def test_veltkamp_split_is_round_to_nearest_even_for_every_width():
    """The split path's rule, every float32 mantissa (the binade [1, 2), both signs, then scaled
    to other binades: the arithmetic is exact scale by scale) for every width m = 1..22 that
    takes it, against integer ties-to-even rounding of the bit pattern."""
    bits = np.arange(0x3F800000, 0x40000000, dtype=np.uint32)
    for m in range(1, 23):
        fmt = sp.Format(5, m)
        d = 23 - m
        odd = (bits >> d) & 1
        want = ((bits + (1 << (d - 1)) - 1 + odd) & ~np.uint32((1 << d) - 1)).view(np.float32)
        x = bits.view(np.float32)
        assert_same_bits(sp.round(x, fmt), want, f"m={m}")
        assert_same_bits(sp.round(-x[::97], fmt), -want[::97], f"m={m}, negative")
        for k in (-13, 14):
            assert_same_bits(sp.round(x[::389] * 2.0**k, fmt),
                             want[::389] * np.float32(2.0**k), f"m={m}, 2**{k}")


def test_large_arrays_cross_blocks_consistently():
    """Results do not depend on where the engine's blocks start (stochastic included)."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(200_003) * np.exp2(rng.integers(-30, 20, 200_003))).astype(np.float32)
    fmt = sp.Format(5, 4)
    whole = sp.round(x, fmt, "stochastic", rng=np.random.default_rng(9))
    words = np.random.default_rng(9).integers(0, 2**32, x.size, dtype=np.uint32)
    idx = rng.integers(0, x.size, 3000)
    want = [ref_round(float(x[i]), fmt, "stochastic", int(words[i])) for i in idx]
    assert_same_bits(whole[idx], np.array(want, np.float32), "blocks")


# ------------------------------------------------------------------ properties

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
ANY_FMT = st.sampled_from([sp.fp16, sp.bf16, sp.fp8_e4m3, sp.fp8_e5m2, sp.tf32] + CUSTOM)


@SETTINGS
@given(ANY_FMT, st.lists(st.floats(width=32), min_size=1, max_size=50),
       st.sampled_from(["nearest", "toward_zero", "stochastic"]))
def test_idempotent(fmt, vals, mode):
    x = np.array(vals, np.float32)
    kw = dict(rng=np.random.default_rng(0)) if mode == "stochastic" else {}
    once = sp.round(x, fmt, mode, **kw)
    kw = dict(rng=np.random.default_rng(1)) if mode == "stochastic" else {}
    assert_same_bits(sp.round(once, fmt, mode, **kw), once, "round twice")


@SETTINGS
@given(ANY_FMT, st.lists(finite32, min_size=2, max_size=50),
       st.sampled_from(["nearest", "toward_zero"]))
def test_monotone(fmt, vals, mode):
    x = np.sort(np.array(vals, np.float32))
    y = sp.round(x, fmt, mode).astype(np.float64)
    y = y[~np.isnan(y)]                          # overflow="nan" formats
    assert np.all(y[1:] >= y[:-1])


@SETTINGS
@given(ANY_FMT, st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=50))
def test_toward_zero_never_increases_magnitude(fmt, vals):
    x = np.array(vals, np.float32)
    y = sp.round(x, fmt, "toward_zero")
    finite = np.isfinite(x)
    assert np.all(np.abs(y[finite]) <= np.abs(x[finite]))
    assert np.all(np.signbit(y[finite]) == np.signbit(x[finite]))


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([sp.fp16, sp.bf16, sp.Format(3, 2), sp.Format(6, 9)]),
       st.floats(0.01, 0.99), st.integers(-3, 3), st.sampled_from([32, 8]))
def test_stochastic_is_unbiased(fmt, frac, binade, random_bits):
    """Mean of many stochastic roundings of one value x: within 6 sigma of x (plus the 2**-R
    truncation of the probability, which biases toward zero by at most an ulp * 2**-R)."""
    x = np.float32((1 + frac) * 2.0 ** min(binade, fmt.max_exp - 1))
    ulp_x = float(ulp(np.float64(x), fmt))
    n = 40_000
    y = sp.round(np.full(n, x), fmt, "stochastic", rng=np.random.default_rng(5),
                 random_bits=random_bits).astype(np.float64)
    assert set(np.unique(y)) <= {ref_round(float(x), fmt, "toward_zero"),
                                 ref_round(float(x), fmt, "toward_zero") + ulp_x}
    bound = 6 * ulp_x * 0.5 / math.sqrt(n) + ulp_x * 2.0 ** -random_bits
    assert abs(y.mean() - float(x)) <= bound, (y.mean(), float(x), ulp_x)


def test_stochastic_probability_uses_top_random_bits():
    """With R random bits the probability of rounding up is floor(f * 2**R) / 2**R."""
    x = np.full(100_000, np.float32(1 + 0.3 * 2**-7))    # f = 0.3 ulp of bf16
    for r, p in ((2, 0.25), (3, 0.25), (4, 0.25), (5, 9 / 32), (32, 0.3)):
        y = sp.round(x, sp.bf16, "stochastic", rng=np.random.default_rng(0), random_bits=r)
        assert abs((y > 1).mean() - p) < 0.006, (r, (y > 1).mean(), p)


def test_stochastic_reproducible_for_a_seed():
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    a = sp.round(x, sp.fp16, "stochastic", rng=np.random.default_rng(42))
    b = sp.round(x, sp.fp16, "stochastic", rng=np.random.default_rng(42))
    c = sp.round(x, sp.fp16, "stochastic", rng=np.random.default_rng(43))
    assert_same_bits(a, b, "same seed")
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("bitgen", [np.random.PCG64, np.random.PCG64DXSM, np.random.Philox,
                                    np.random.SFC64, np.random.MT19937])
def test_random_words_are_the_integers_stream(bitgen):
    """The fast draw equals rng.integers(0, 2**32, dtype=uint32), across odd sizes and calls."""
    a, b = np.random.Generator(bitgen(3)), np.random.Generator(bitgen(3))
    sizes = [5, 1 << 16, 4, 70_001, 2, 8]
    got = np.concatenate([_random_words(a, k) for k in sizes])
    want = b.integers(0, 2**32, size=sum(sizes), dtype=np.uint32)
    assert np.array_equal(got, want)


# ------------------------------------------------------------------ special values and options

def test_specials_and_overflow_options():
    inf, nan = np.inf, np.nan
    x = np.array([inf, -inf, 1e6, -1e6, 465.0, 464.0, -0.0, 1e-30, -1e-30], np.float32)
    tail = [-0.0, 0.0, -0.0]
    cases = [
        (sp.fp16, "nearest", [inf, -inf, inf, -inf, 465, 464]),
        (sp.fp16, "toward_zero", [inf, -inf, 65504, -65504, 465, 464]),
        (sp.fp16.replace(overflow="saturate"), "nearest", [65504, -65504, 65504, -65504, 465, 464]),
        (sp.fp8_e4m3, "nearest", [nan, nan, nan, nan, nan, 448]),
        (sp.fp8_e4m3, "toward_zero", [nan, nan, 448, -448, 448, 448]),
        (sp.fp8_e4m3.replace(overflow="saturate"), "nearest", [448, -448, 448, -448, 448, 448]),
        (sp.fp8_e5m2, "nearest", [inf, -inf, inf, -inf, 448, 448]),
    ]
    for fmt, mode, want in cases:
        assert_same_bits(sp.round(x, fmt, mode), np.array(want + tail, np.float32), f"{fmt} {mode}")
    assert np.isnan(sp.round(np.array([nan]), sp.Format(3, 2, inf=False, nan="none")))[0]


def test_flushed_subnormals_keep_sign_and_round_first():
    f = sp.Format(5, 10, subnormals=False)
    tiny = sp.fp16.smallest_normal
    x = np.array([tiny, tiny * (1 - 2**-12), tiny * 0.75, -tiny * 0.5, -3e-8], np.float32)
    y = sp.round(x, f)
    assert y.tolist() == [tiny, tiny, 0.0, 0.0, 0.0]   # rounds to the smallest normal first
    assert np.signbit(y).tolist() == [False, False, False, True, True]


def test_containers_shapes_and_inputs():
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    assert sp.round(x, sp.fp16).shape == (3, 4)
    assert sp.round(x.T, sp.fp16).tolist() == sp.round(np.ascontiguousarray(x.T), sp.fp16).tolist()
    assert sp.round(x, sp.fp64).dtype == np.float64
    assert sp.round(x.astype(np.float64), sp.bf16).dtype == np.float32
    assert sp.round(x, sp.Format(8, 30)).dtype == np.float64
    assert sp.round(0.1, sp.fp16).shape == () and sp.round(0.1, sp.fp16) == np.float16(0.1)
    assert sp.round([0.1, 1e5], sp.fp16).tolist() == [np.float16(0.1), np.inf]
    assert sp.round(np.float16([0.5, 3]), sp.bf16).tolist() == [0.5, 3.0]
    assert sp.round(np.zeros((0, 3), np.float32), sp.fp16).shape == (0, 3)
    # in place, through out= and the unchecked entry point
    y = x.copy()
    assert sp.round(y, sp.bf16, out=y) is y and np.array_equal(y, sp.round(x, sp.bf16))
    z = np.empty_like(x)
    assert round_array(x, sp.fp16, out=z) is z and np.array_equal(z, sp.round(x, sp.fp16))


def test_fp32_and_fp64_are_identities():
    x = f32_cases(10_000)
    assert_same_bits(sp.round(x, sp.fp32), x, "fp32")
    assert_same_bits(sp.round(x.astype(np.float64), sp.fp64), x.astype(np.float64), "fp64")


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("kw, words", [
    (dict(exp_bits=1, man_bits=3), ["exp_bits", "2..11"]),
    (dict(exp_bits=12, man_bits=3), ["exp_bits", "2..11"]),
    (dict(exp_bits=5, man_bits=-1), ["man_bits", "0..52"]),
    (dict(exp_bits=5, man_bits=53), ["man_bits", "0..52"]),
    (dict(exp_bits=5.0, man_bits=3), ["exp_bits", "integer"]),
    (dict(exp_bits=True, man_bits=3), ["exp_bits"]),
    (dict(exp_bits=5, man_bits=2, overflow="wrap"), ["overflow", "saturate"]),
    (dict(exp_bits=5, man_bits=2, inf=False, overflow="inf"), ["overflow='inf'", "inf=True"]),
    (dict(exp_bits=5, man_bits=2, nan="quiet"), ["nan", "ieee"]),
    (dict(exp_bits=4, man_bits=3, nan="fn"), ["nan='fn'", "inf=False"]),
    (dict(exp_bits=3, man_bits=2, inf=False, nan="none", overflow="nan"), ["overflow='nan'"]),
    (dict(exp_bits=11, man_bits=3, inf=False, nan="fn"), ["float64"]),
])
def test_impossible_formats(kw, words):
    with pytest.raises(ValueError) as e:
        sp.Format(**kw)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("x, words", [
    (np.arange(4), ["x", "float32 or float64", "int64"]),
    (np.array([1, "a"], dtype=object), ["x", "float32 or float64", "object"]),
    (np.ones(3, np.complex64), ["x", "complex64"]),
    (np.ones(3, bool), ["x", "bool"]),
    ([1 + 2j], ["x", "np.float64"]),
    ("abc", ["x", "np.float64"]),
])
def test_non_float_inputs_raise_type_error(x, words):
    with pytest.raises(TypeError) as e:
        sp.round(x, sp.fp16)
    for w in words:
        assert w in str(e.value)


def test_bad_arguments():
    x = np.ones(3, np.float32)
    with pytest.raises(ValueError,
                       match="mode must be one of .*'nearest'.*'toward_zero'.*'stochastic'.*'up'"):
        sp.round(x, sp.fp16, "up")
    with pytest.raises(TypeError, match="fmt must be a simprec Format"):
        sp.round(x, np.float16)
    with pytest.raises(TypeError, match="fmt must be a simprec Format"):
        sp.round(x, sp.int64)
    with pytest.raises(TypeError, match="rng, a numpy.random.Generator"):
        sp.round(x, sp.fp16, "stochastic")
    with pytest.raises(TypeError, match="rng, a numpy.random.Generator"):
        sp.round(x, sp.fp16, "stochastic", rng=np.random.RandomState(0))
    for bits in (0, 33, 2.5):
        with pytest.raises(ValueError, match="random_bits must be an integer in 1..32"):
            sp.round(x, sp.fp16, "stochastic", rng=np.random.default_rng(), random_bits=bits)
    with pytest.raises(ValueError, match="rng and random_bits are for mode='stochastic' only"):
        sp.round(x, sp.fp16, rng=np.random.default_rng())
    with pytest.raises(ValueError, match="out must be .*float32"):
        sp.round(x, sp.fp16, out=np.empty(3, np.float64))


# ------------------------------------------------------------------ facts of the standard formats

@pytest.mark.parametrize("fmt, dtype", [
    (sp.fp16, np.float16), (sp.bf16, md.bfloat16), (sp.fp32, np.float32), (sp.fp64, np.float64),
    (sp.fp8_e4m3, md.float8_e4m3fn), (sp.fp8_e5m2, md.float8_e5m2)], ids=str)
def test_standard_format_facts(fmt, dtype):
    fi = md.finfo(dtype)  # ml_dtypes.finfo also covers numpy's float types
    assert fmt.max == float(fi.max)
    assert fmt.smallest_normal == float(fi.smallest_normal)
    assert fmt.smallest_subnormal == float(fi.smallest_subnormal)
    assert fmt.eps == float(fi.eps)
    assert fmt.bits == fi.bits == 8 * np.dtype(dtype).itemsize
    assert fmt.has_inf == (fmt is not sp.fp8_e4m3) and fmt.has_nan
    assert fmt.container == (np.float64 if fmt is sp.fp64 else np.float32)
    assert repr(fmt) == f"sp.{fmt.name}"


def test_tf32_facts():
    assert sp.tf32.bits == 19 and sp.tf32.eps == 2.0**-10
    assert sp.tf32.max == (2 - 2.0**-10) * 2.0**127
    assert sp.tf32.smallest_normal == 2.0**-126 and sp.tf32.smallest_subnormal == 2.0**-136


def test_format_options_and_names():
    assert sp.fp8_e4m3.overflow == "nan" and not sp.fp8_e4m3.has_inf
    sat = sp.fp8_e4m3.replace(overflow="saturate")
    assert sat.name == "e4m3fn_sat" and sat.max == 448 and sat != sp.fp8_e4m3
    assert sp.Format(5, 10) == sp.fp16 and hash(sp.Format(5, 10)) == hash(sp.fp16)
    assert sp.Format(3, 2, inf=False, nan="none").overflow == "saturate"
    assert sp.Format(5, 10, subnormals=False).smallest_subnormal == 2.0**-14
