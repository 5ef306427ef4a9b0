"""Number formats and exact rounding into them.

A `Format` describes a binary floating-point format (sign, `exp_bits` exponent bits, `man_bits`
stored mantissa bits) and how it treats subnormals, overflow, infinities and NaN. simprec keeps
the values of every format that fits in fp32 in float32 arrays (wider ones in float64 arrays):
`round` maps float32/float64 values to the format, by the chosen rounding mode, so that every
element is exactly representable in it. docs/formats.md gives the exact rules.

`round` is the hot path of the simulator (every op output passes through it), so it is written
as a handful of whole-array integer and float passes over L2-sized blocks, with no masked
(`where=`) ufuncs and no float operation that produces a subnormal (both are ~10x slower on x86).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from . import _fast
from ._philox import Philox

__all__ = [
    "Format", "IntFormat", "fp64", "fp32", "tf32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2",
    "int64", "promote", "round", "round_array", "ROUNDING_MODES", "DEFAULT_RANDOM_BITS",
]

ROUNDING_MODES = ("nearest", "toward_zero", "stochastic")
DEFAULT_RANDOM_BITS = 32
_OVERFLOWS = ("inf", "saturate", "nan")
_NANS = ("ieee", "fn", "none")


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _default_overflow(inf: bool, nan: str) -> str:
    """Overflow to inf if the format has it, else to NaN if it has one, else saturate."""
    return "inf" if inf else ("nan" if nan != "none" else "saturate")


@dataclass(frozen=True)
class Format:
    """A binary floating-point format: sign, `exp_bits` exponent bits, `man_bits` mantissa bits.

    `subnormals`: keep gradual underflow (True), or flush results below the smallest normal to ±0
    (False; the value is rounded as if subnormals existed, then flushed).
    `overflow`: what a finite value beyond ±max becomes: "inf" (IEEE 754), "saturate" (±max; ±inf
    inputs too, like PTX `cvt.satfinite` and the OCP fp8 saturating mode) or "nan" (OCP fp8 e4m3fn
    non-saturating mode, ml_dtypes `float8_e4m3fn`; ±inf inputs too). Default: "inf" if the format
    has infinities, else "nan" if it has a NaN, else "saturate". `toward_zero` never overflows: it
    gives ±max for finite inputs (IEEE 754-2019 §7.4).
    `inf`: whether the format encodes infinities (IEEE formats do; OCP fp8 e4m3fn does not).
    `nan`: "ieee" (all-ones exponent with nonzero mantissa), "fn" (only S.1..1.1..1 is NaN; the
    all-ones exponent holds finite values, as in OCP fp8 e4m3fn) or "none".
    """

    exp_bits: int
    man_bits: int
    subnormals: bool = True
    overflow: str | None = None
    inf: bool = True
    nan: str = "ieee"
    name: str = field(default="", compare=False)

    def __post_init__(self):
        e, m = self.exp_bits, self.man_bits
        if not _is_int(e) or not 2 <= e <= 11:
            raise ValueError(f"Format: exp_bits must be an integer in 2..11 (11 = the float64 "
                             f"container), got {e!r}")
        if not _is_int(m) or not 0 <= m <= 52:
            raise ValueError(f"Format: man_bits must be an integer in 0..52 (52 = the float64 "
                             f"container), got {m!r}")
        for flag in ("subnormals", "inf"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise ValueError(f"Format: {flag} must be True or False, "
                                 f"got {getattr(self, flag)!r}")
        if self.nan not in _NANS:
            raise ValueError(f"Format: nan must be one of {_NANS}, got {self.nan!r}")
        if self.overflow is None:
            object.__setattr__(self, "overflow", _default_overflow(self.inf, self.nan))
        if self.overflow not in _OVERFLOWS:
            raise ValueError(f"Format: overflow must be one of {_OVERFLOWS}, got {self.overflow!r}")
        if self.overflow == "inf" and not self.inf:
            raise ValueError("Format: overflow='inf' needs a format with infinities (inf=True)")
        if self.overflow == "nan" and self.nan == "none":
            raise ValueError("Format: overflow='nan' needs a format with a NaN (nan != 'none')")
        if self.nan == "fn" and (self.inf or m == 0):
            raise ValueError("Format: nan='fn' (NaN only at S.1..1.1..1) needs inf=False and "
                             "man_bits >= 1")
        if self.max_exp > 1023:
            raise ValueError("Format: the largest binade exceeds float64's (exp_bits=11 needs "
                             "an IEEE top binade: inf=True or nan='ieee')")
        object.__setattr__(self, "exp_bits", int(e))
        object.__setattr__(self, "man_bits", int(m))
        object.__setattr__(self, "subnormals", bool(self.subnormals))
        object.__setattr__(self, "inf", bool(self.inf))
        if not self.name:
            object.__setattr__(self, "name", self._auto_name())
        fits32 = self.exp_bits <= 8 and self.man_bits <= 23 and self.max_exp <= 127
        object.__setattr__(self, "_container", np.dtype(np.float32 if fits32 else np.float64))
        object.__setattr__(self, "_plans", {})  # round_array's constants, by (wide, mode)

    def _auto_name(self) -> str:
        name = f"e{self.exp_bits}m{self.man_bits}"
        if self.nan == "fn":
            name += "fn"
        elif not self.inf:
            name += "_noinf"
        if self.nan == "none":
            name += "_nonan"
        if not self.subnormals:
            name += "_ftz"
        if self.overflow != _default_overflow(self.inf, self.nan):
            name += {"inf": "_ovfinf", "saturate": "_sat", "nan": "_ovfnan"}[self.overflow]
        return name

    def replace(self, **changes) -> Format:
        """A copy with some options changed, e.g. `sp.fp8_e4m3.replace(overflow="saturate")`.

        The name is derived again from the options unless `name=` is given.
        """
        changes.setdefault("name", "")
        return dataclasses.replace(self, **changes)

    is_float = True

    @property
    def bits(self) -> int:
        """Total storage bits: sign + exponent + mantissa."""
        return 1 + self.exp_bits + self.man_bits

    @property
    def bias(self) -> int:
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def max_exp(self) -> int:
        """Unbiased exponent of the largest finite binade."""
        top = (1 << self.exp_bits) - 1  # the all-ones exponent field
        return top - self.bias - (1 if self.nan == "ieee" or self.inf else 0)

    @property
    def min_exp(self) -> int:
        """Unbiased exponent of the smallest normal binade."""
        return 1 - self.bias

    @property
    def max(self) -> float:
        """Largest finite value."""
        frac = 2.0 - 2.0 ** -self.man_bits
        if self.nan == "fn":
            frac -= 2.0 ** -self.man_bits  # S.1..1.1..1 is NaN, so the top mantissa is lost
        return float(np.ldexp(frac, self.max_exp))

    @property
    def smallest_normal(self) -> float:
        return float(np.ldexp(1.0, self.min_exp))

    @property
    def smallest_subnormal(self) -> float:
        """Smallest positive value (the smallest normal when subnormals are flushed)."""
        if not self.subnormals:
            return self.smallest_normal
        return float(np.ldexp(1.0, self.min_exp - self.man_bits))

    @property
    def eps(self) -> float:
        """Distance from 1 to the next larger value."""
        return float(np.ldexp(1.0, -self.man_bits))

    @property
    def has_inf(self) -> bool:
        return self.inf

    @property
    def has_nan(self) -> bool:
        return self.nan != "none"

    @property
    def container(self) -> np.dtype:
        """The NumPy dtype simprec's reference backend stores this format's values in.

        float32 when every value of the format is a float32 (exp_bits <= 8, man_bits <= 23 and
        no finite top binade beyond float32's), else float64.
        """
        return self._container

    def __repr__(self) -> str:
        if self.name in _STANDARD_NAMES:
            return f"sp.{self.name}"
        defaults = (("subnormals", True), ("inf", True), ("nan", "ieee"))
        opts = "".join(f", {k}={getattr(self, k)!r}" for k, v in defaults if getattr(self, k) != v)
        return (f"Format(exp_bits={self.exp_bits}, man_bits={self.man_bits}{opts}, "
                f"overflow={self.overflow!r})")


@dataclass(frozen=True)
class IntFormat:
    """The format of integer tensors (class labels, token ids): exact, never rounded, no grad."""

    bits: int = 64
    name: str = "int64"
    is_float = False

    @property
    def container(self) -> np.dtype:
        return np.dtype(np.int64)

    def __repr__(self) -> str:
        return f"sp.{self.name}"


fp64 = Format(11, 52, name="fp64")
fp32 = Format(8, 23, name="fp32")
tf32 = Format(8, 10, name="tf32")
fp16 = Format(5, 10, name="fp16")
bf16 = Format(8, 7, name="bf16")
# OCP 8-bit FP spec e4m3fn, bit for bit ml_dtypes.float8_e4m3fn: no inf; NaN = S.1111.111; finite
# overflow and ±inf become NaN. Saturating variant: fp8_e4m3.replace(overflow="saturate").
fp8_e4m3 = Format(4, 3, inf=False, nan="fn", name="fp8_e4m3")
fp8_e5m2 = Format(5, 2, name="fp8_e5m2")
int64 = IntFormat()

_STANDARD_NAMES = {"fp64", "fp32", "tf32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2"}


def promote(a, b):
    """The format of a binary op's result, by torch's promotion rule.

    Equal formats stay; if one format holds every value of the other, it wins; otherwise (fp16
    with bf16, say) the result is fp32, as in torch (`torch.promote_types(half, bfloat16)`).
    """
    if a == b:
        return a
    if not a.is_float:
        return b
    if not b.is_float:
        return a
    if a.exp_bits >= b.exp_bits and a.man_bits >= b.man_bits:
        return a
    if b.exp_bits >= a.exp_bits and b.man_bits >= a.man_bits:
        return b
    return fp32 if max(a.bits, b.bits) <= 32 else fp64


# ------------------------------------------------------------------------------------ rounding
#
# The engine works in a float "container" (float32 or float64) and its unsigned-integer view.
# For a value w >= 0 the bit pattern is a monotone integer, and in the normal range of the format
# the last kept bit sits at the fixed position d = P - man_bits, so rounding there is integer
# arithmetic on the pattern (a carry into the exponent field is exactly the step to the next
# binade). Below the format's smallest normal T the grid is uniform (spacing sigma), handled on
# min(w, T) with float arithmetic that stays in the normal range; the two halves are combined as
# R_norm(max(w, T)) + (R_sub(min(w, T)) - T), exact in both cases.


@dataclass(frozen=True)
class _Engine:
    f: np.dtype   # float container
    u: np.dtype   # unsigned view
    p: int        # stored mantissa bits
    emin: int     # smallest normal exponent
    emax: int     # largest finite exponent
    block: int    # elements per block (the block's ~6 temporaries stay in L2 cache)
    key: str      # its name in the per-thread scratch store


_E32 = _Engine(np.dtype(np.float32), np.dtype(np.uint32), 23, -126, 127, 1 << 16, "e32")
_E64 = _Engine(np.dtype(np.float64), np.dtype(np.uint64), 52, -1022, 1023, 1 << 15, "e64")


@dataclass(frozen=True)
class _Plan:
    """Constants of one (format, engine, mode): computed once, cached."""

    eng: _Engine
    mode: str
    d: int          # container mantissa bits below the format's last bit, normal range
    signed: bool    # round the signed bit patterns directly (same exponent range as container)
    sub: bool       # the subnormal branch is needed (format's min normal above container's)
    flush: bool
    overflow: str   # "carry" (into the container's inf), "inf", "saturate", "nan"
    nanfix: bool    # NaN inputs must be restored after integer rounding mangled them
    notmask: object
    half_m1: object
    T: object = None
    C: object = None
    CT: object = None
    sigma: object = None
    inv_sigma: object = None
    two_m: object = None
    tbits: object = None
    max: object = None
    up: object = None
    down: object = None
    nan_c: object = None
    fmax: object = None
    sign: object = None      # the container's sign bit
    expmask: object = None   # its exponent field
    magic_lo: object = None  # bits of 2**min_exp (None: no magic-constant path, see _round_magic)
    magic_hi: object = None  # bits of 2**max_exp
    magic_d: object = None   # d in the exponent field: 2**e -> 2**(e + d)
    split: object = None     # 2**d + 1, Veltkamp's constant (None: no _round_split)
    C15: object = None       # 1.5 * C: RN on the subnormal grid of signed values below T


@functools.lru_cache(maxsize=512)
def _plan(fmt: Format, wide: bool, mode: str) -> _Plan:
    eng = _E64 if wide else _E32
    F, U = eng.f.type, eng.u.type
    m, d = fmt.man_bits, eng.p - fmt.man_bits
    sub = fmt.min_exp > eng.emin
    rz = mode == "toward_zero"
    ovf = fmt.overflow
    if ovf == "inf" and fmt.max_exp == eng.emax:
        ovf = "carry"  # the format's top binade is the container's: the carry makes inf
    signed = not sub and fmt.subnormals and ovf == "carry"
    # Integer rounding turns some NaN patterns into inf or numbers; the subnormal branch and the
    # toward_zero overflow handling propagate the NaN themselves.
    nanfix = d > 0 and not (sub or (rz and ovf in ("inf", "nan")))
    ones = (1 << (8 * eng.u.itemsize)) - 1
    T = 2.0 ** fmt.min_exp
    sigma = 2.0 ** (fmt.min_exp - m)
    kw = dict(
        eng=eng, mode=mode, d=d, signed=signed, sub=sub, flush=not fmt.subnormals, overflow=ovf,
        nanfix=nanfix, notmask=U(ones ^ ((1 << d) - 1)), half_m1=U(max((1 << d >> 1) - 1, 0)),
        T=F(T), tbits=U(int(np.array(T, F).view(U))), max=F(fmt.max), fmax=F(np.finfo(F).max),
        sign=U(1 << (8 * eng.u.itemsize - 1)), expmask=U(((1 << (8 * eng.u.itemsize - 1)) - 1)
                                                          ^ ((1 << eng.p) - 1)))
    if mode == "nearest" and sub and fmt.subnormals and d >= 1 and fmt.max_exp + d <= eng.emax:
        bits = lambda v: U(int(np.array(v, F).view(U)))  # noqa: E731
        kw.update(magic_lo=bits(T), magic_hi=bits(2.0 ** fmt.max_exp), magic_d=U(d << eng.p))
        if not wide and fmt.max_exp + d + 1 <= eng.emax:  # x * (2**d + 1) stays finite
            kw.update(split=F(2.0 ** d + 1), C15=F(1.5 * sigma * 2.0 ** eng.p))
    if sub:
        # RN(t) on the sigma grid for 0 <= t <= T: t + C lies in [C, 2C) where the container's
        # spacing is sigma (C = sigma * 2**P), so the float addition rounds there, once.
        C = sigma * 2.0 ** eng.p
        kw.update(C=F(C), CT=F(C + T), sigma=F(sigma), inv_sigma=F(1 / sigma), two_m=F(2.0 ** m))
    if ovf == "inf" and not rz:
        # y * 2**(EMAX - emax) is inf exactly when y >= 2**(emax + 1), the first value past max.
        kw.update(up=F(2.0 ** (eng.emax - fmt.max_exp)), down=F(2.0 ** (fmt.max_exp - eng.emax)))
    if ovf == "nan" and not rz:
        # w * c overflows to inf exactly for grid values beyond max (checked here), so
        # w + (w*c - w*c) is NaN there and w elsewhere.
        nxt = (np.ldexp(2.0 - 2.0 ** -m, fmt.max_exp) if fmt.nan == "fn"
               else np.inf if fmt.max_exp == eng.emax else 2.0 ** (fmt.max_exp + 1))
        c = np.nextafter(F(np.finfo(F).max / F(fmt.max)), F(np.inf))
        with np.errstate(over="ignore"):
            for _ in range(64):
                if np.isfinite(F(fmt.max) * c):
                    break
                c = np.nextafter(c, F(0))
            if np.isinf(F(nxt) * c):  # else (max one container ulp from nxt) compare instead
                kw.update(nan_c=F(c))
    return _Plan(**kw)


_RAW64 = (np.random.PCG64, np.random.PCG64DXSM, np.random.Philox, np.random.SFC64)


def _random_words(rng: np.random.Generator, n: int) -> np.ndarray:
    """n uniform 32-bit words, the stream of `rng.integers(0, 2**32, size=n, dtype=np.uint32)`.

    For the 64-bit bit generators that stream is each raw 64-bit output split low half first
    (numpy's `next_uint32`), which `random_raw` gives without the per-element loop (1.6x faster);
    successive calls continue the same stream. A `Philox` gives its next n words (the stream every
    backend draws alike).
    """
    if isinstance(rng, Philox):
        return rng.words(n)
    bg = rng.bit_generator
    if (n % 2 == 0 and type(bg) in _RAW64 and sys.byteorder == "little"
            and not bg.state.get("has_uint32", 1)):
        return bg.random_raw(n // 2).view(np.uint32)
    return rng.integers(0, 1 << 32, size=n, dtype=np.uint32)


class _Scratch:
    """Temporaries of one block, allocated on first use and kept (per thread, see `_scratch`):
    fresh block-sized arrays would cost page faults on every call."""

    def __init__(self, n: int):
        self.n, self._a = n, {}

    def __call__(self, key: str, dtype) -> np.ndarray:
        a = self._a.get(key)
        if a is None:
            a = self._a[key] = np.empty(self.n, dtype)
        return a


_SCRATCH = threading.local()


def _scratch(eng: _Engine) -> _Scratch:
    """This thread's block temporaries for `eng` (round_array does not re-enter itself)."""
    s = getattr(_SCRATCH, eng.key, None)
    if s is None:
        s = _Scratch(eng.block)
        setattr(_SCRATCH, eng.key, s)
    return s


def _align_words(p: _Plan, words: np.ndarray, out: np.ndarray) -> None:
    """out = the random word placed with its top bit just below the format's last kept bit.

    Adding it to a pattern and truncating rounds up iff floor(f * 2**32) + W >= 2**32, where f is
    the discarded fraction (in ulps): the stochastic rule of docs/formats.md.
    """
    if p.d <= 32:
        np.right_shift(words, 32 - p.d, out=out)
    else:
        np.copyto(out, words)
        np.left_shift(out, p.d - 32, out=out)


def _round_bits(p: _Plan, wi: np.ndarray, words, s: _Scratch, src=None) -> None:
    """Round the patterns `src` (default: wi, in place) at bit d into wi, per the mode."""
    src = wi if src is None else src
    if p.d == 0:
        if src is not wi:
            np.copyto(wi, src)
        return
    if p.mode == "toward_zero":
        np.bitwise_and(src, p.notmask, out=wi)
        return
    ti = s("ti", p.eng.u)[: wi.size]
    if p.mode == "nearest":  # ties to even: add half-1, plus 1 when the last kept bit is odd
        np.right_shift(src, p.d, out=ti)
        np.bitwise_and(ti, 1, out=ti)
        np.add(ti, p.half_m1, out=ti)
    else:
        _align_words(p, words, ti)
    np.add(src, ti, out=wi)
    np.bitwise_and(wi, p.notmask, out=wi)


def _round_sub(p: _Plan, t: np.ndarray, words, s: _Scratch) -> None:
    """t (in [0, T] or NaN) := its rounding on the subnormal grid, minus T (so in [-T, 0]).

    Float arithmetic throughout (NaN propagates): t/sigma <= 2**m is exact (a power of two),
    as are its integer part and fraction.
    """
    if p.mode == "nearest":
        np.add(t, p.C, out=t)
        np.subtract(t, p.CT, out=t)
        return
    np.multiply(t, p.inv_sigma, out=t)       # t / sigma: the count of sigmas, with fraction
    if p.mode == "toward_zero":
        np.trunc(t, out=t)
    else:
        # Stochastic: up iff floor(f * 2**32) + W >= 2**32, i.e. W > ~floor(f * 2**32) in uint32.
        fl = s("fl", p.eng.f)[: t.size]
        g = s("g", np.uint32)[: t.size]
        up = s("up", np.bool_)[: t.size]
        np.trunc(t, out=fl)
        np.subtract(t, fl, out=t)
        np.multiply(t, 2.0 ** 32, out=t)     # f * 2**32 < 2**32, exact
        np.copyto(g, t, casting="unsafe")    # its floor (conversion truncates)
        np.invert(g, out=g)
        np.greater(words, g, out=up)
        np.add(fl, up, out=t)
    np.subtract(t, p.two_m, out=t)           # (count - 2**m) * sigma = value - T, exact
    np.multiply(t, p.sigma, out=t)


def _flush(p: _Plan, wi: np.ndarray, s: _Scratch) -> None:
    """Magnitude patterns below T's become +0 (the sign is applied later)."""
    ti = s("ti", p.eng.u)[: wi.size]
    si = ti.view(np.int32 if p.eng.u.itemsize == 4 else np.int64)
    np.subtract(p.tbits - p.eng.u.type(1), wi, out=ti)   # negative (as signed) iff wi >= T
    np.right_shift(si, 8 * p.eng.u.itemsize - 1, out=si)  # arithmetic: all ones iff wi >= T
    np.bitwise_and(wi, ti, out=wi)


def _round_block(p: _Plan, x: np.ndarray, res: np.ndarray, words, s: _Scratch) -> None:
    """res = x rounded by plan p; x, res: engine-dtype blocks of one size (res may be x)."""
    n = x.size
    F, U = p.eng.f, p.eng.u
    if p.signed:
        # The format's exponent range is the container's: round the signed patterns in place
        # (sign-magnitude, so this is symmetric); overflow carries into the container's inf.
        nanfix = p.nanfix and np.isnan(x.max())  # one cheap reduction spares two passes
        if nanfix:
            z = s("z", F)[:n]
            np.minimum(x, -np.inf, out=z)     # -inf, or NaN where x is NaN
        _round_bits(p, res.view(U), words, s, src=x.view(U))
        if nanfix:
            np.maximum(res, z, out=res)
        return
    w = s("w", F)[:n]
    wi = w.view(U)
    np.abs(x, out=w)
    # In the common block (no NaN, nothing beyond max) nothing can overflow: rounding is monotone
    # and max is on the grid. Then the overflow and NaN passes are skipped.
    special = not np.maximum.reduce(w) <= p.max
    if not special and p.magic_lo is not None:
        if p.split is None or not _round_split(p, x, w, res, s):
            _round_magic(p, w, s)
            _apply_sign(p, w, x, res, s)
        return
    if p.sub:
        t = s("t", F)[:n]
        np.minimum(w, p.T, out=t)
        np.maximum(w, p.T, out=w)
    _round_bits(p, wi, words, s)
    if p.sub:
        _round_sub(p, t, words, s)
        np.add(w, t, out=w)
    if p.flush:
        _flush(p, wi, s)
    if not special:
        _apply_sign(p, w, x, res, s)
        return
    z = s("z", F)[:n]
    rz = p.mode == "toward_zero"
    if p.overflow == "saturate" or (rz and p.overflow != "carry"):
        np.minimum(w, p.max, out=w)           # toward_zero never rounds past max
    if p.overflow == "inf":
        if rz:                                # but ±inf inputs stay ±inf
            np.abs(x, out=z)
            np.subtract(z, p.fmax, out=z)     # inf where x is ±inf, NaN where NaN, else <= 0
            np.maximum(w, z, out=w)
        else:
            np.multiply(w, p.up, out=w)
            np.multiply(w, p.down, out=w)
    elif p.overflow == "nan":
        if rz:                                # ±inf inputs become NaN
            np.abs(x, out=z)
        elif p.nan_c is not None:             # rounded beyond max (or ±inf) becomes NaN:
            np.multiply(w, p.nan_c, out=z)    # inf exactly there (checked in _plan)
        else:                                 # (max is one container ulp from the next value)
            np.copyto(w, np.nan, where=np.greater(w, p.max))
        if rz or p.nan_c is not None:
            np.subtract(z, z, out=z)          # NaN there, 0 elsewhere
            np.add(w, z, out=w)
    if p.nanfix:
        np.minimum(x, -np.inf, out=z)
        np.maximum(w, z, out=w)
    _apply_sign(p, w, x, res, s)


def _round_split(p: _Plan, x: np.ndarray, w: np.ndarray, res: np.ndarray, s: _Scratch) -> bool:
    """res := RN(x) for a block with |x| = w <= max, unless many |x| lie below 2**min_exp
    (then False: the caller takes `_round_magic`).

    Veltkamp's splitting: with c = x * (2**d + 1), c - (c - x) is x rounded to nearest, ties to
    even, on 24 - d significant bits (Dekker 1971; Boldo, "Pitfalls of a full floating-point
    proof", IJCAR 2006). It is exact scale by scale, so the test suite checks every float32
    mantissa for every d. Three passes and no sign handling, right for |x| >= 2**min_exp; the
    few smaller values (±0 included), which belong on the subnormal grid, are redone afterwards.
    """
    n = x.size
    if np.count_nonzero(w[::64] < p.T) > (n >> 12) + 1:  # a sample says: many (gradients)
        return False
    tiny = s("tiny", np.bool_)[:n]
    np.less(w, p.T, out=tiny)
    where = np.flatnonzero(tiny)
    if where.size > n >> 6:
        return False
    small = x[where]
    c = s("c", p.eng.f)[:n]
    np.multiply(x, p.split, out=c)
    np.subtract(c, x, out=res)
    np.subtract(c, res, out=res)
    if where.size:
        # |small| < T: small + C15 stays in C15's binade, whose spacing is the subnormal one, and
        # C15 = 1.5 * 2**k is even there; np.copysign gives rounded-away zeros their sign.
        res[where] = np.copysign((small + p.C15) - p.C15, small)
    return True


def _round_magic(p: _Plan, w: np.ndarray, s: _Scratch) -> None:
    """w (finite, 0 <= w <= max) := RN(w), ties to even, in five passes.

    With E = max(exponent of w, min_exp) and b = 2**(E + d), w + b lies in [b, 2b], where the
    container's spacing 2**(E + d - P) is exactly the format's spacing at w (its subnormal
    spacing when E = min_exp); the float addition rounds there once, ties to even because b's
    own bit there is even, and subtracting b is exact (Sterbenz). The same trick as
    `(x + 0x1.8p52) - 0x1.8p52` for rounding to an integer, with the constant following w's
    binade.
    """
    bi = s("b", p.eng.u)[: w.size]
    np.bitwise_and(w.view(p.eng.u), p.expmask, out=bi)
    np.clip(bi, p.magic_lo, p.magic_hi, out=bi)
    np.add(bi, p.magic_d, out=bi)
    b = bi.view(p.eng.f)
    np.add(w, b, out=w)
    np.subtract(w, b, out=w)


def _apply_sign(p: _Plan, w: np.ndarray, x: np.ndarray, res: np.ndarray, s: _Scratch) -> None:
    """res := w with x's sign bit (w's own sign bit is clear, or w is NaN).

    Two integer passes: np.copysign is a scalar loop, ~10x slower.
    """
    si = s("sg", p.eng.u)[: w.size]
    np.bitwise_and(x.view(p.eng.u), p.sign, out=si)
    np.bitwise_or(w.view(p.eng.u), si, out=res.view(p.eng.u))


def round_array(x: np.ndarray, fmt: Format, mode: str = "nearest", *, rng=None,
                random_bits: int = DEFAULT_RANDOM_BITS, out: np.ndarray | None = None):
    """`round` without argument checks: the fast entry point for the autograd.

    `x`: a C-contiguous float32 or float64 ndarray. `out`: None, or a C-contiguous array of dtype
    `fmt.container` and x's shape; it may be `x` itself (in-place rounding) when the dtypes agree.
    Returns `out` (a new array if None). Other arguments as in `round`.
    """
    if out is None:
        out = np.empty(x.shape, fmt.container)
    n = x.size
    if n == 0:
        return out
    if mode == "nearest" and x.dtype == np.float32 and out.dtype == np.float32:
        fast = _fast.kernels("rounding")
        if fast is not None and fast.round_nearest(x, fmt, out):
            return out                         # the same bits in one compiled pass (fp16, bf16)
    key = (x.dtype == np.float64 or out.dtype == np.float64, mode)
    p = fmt._plans.get(key)
    if p is None:
        p = fmt._plans[key] = _plan(fmt, *key)
    eng = p.eng
    xf, of = x.reshape(-1), out.reshape(-1)
    s = _scratch(eng)
    keep_bits = (1 << 32) - (1 << (32 - random_bits)) if mode == "stochastic" else 0
    with np.errstate(all="ignore"):
        for lo in range(0, n, eng.block):
            hi = min(lo + eng.block, n)
            xb, ob = xf[lo:hi], of[lo:hi]
            if xb.dtype != eng.f:
                xe = s("xin", eng.f)[: hi - lo]
                np.copyto(xe, xb)
                xb = xe
            rb = ob if ob.dtype == eng.f else s("res", eng.f)[: hi - lo]
            words = None
            if mode == "stochastic":
                words = _random_words(rng, hi - lo)
                if random_bits < 32:
                    np.bitwise_and(words, keep_bits, out=words)
            _round_block(p, xb, rb, words, s)
            if rb is not ob:
                np.copyto(ob, rb, casting="same_kind")
    return out


def _as_float_array(x) -> np.ndarray:
    """x as a float32/float64 ndarray, or TypeError (see `round`)."""
    if isinstance(x, (np.ndarray, np.generic)):
        a = np.asarray(x)
        if a.dtype in (np.float32, np.float64):
            return a
        if a.dtype == np.float16 or a.dtype.name in _NARROW_FLOATS:
            return a.astype(np.float32)  # exact
        raise TypeError(f"round: x must be a float32 or float64 array (float16 and the "
                        f"ml_dtypes 8/16-bit floats are widened exactly), got dtype {a.dtype}")
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"round: x must be a float32 or float64 array, or Python floats / "
                        f"nested lists of them (converted with np.asarray(x, np.float64)), "
                        f"got {type(x).__name__}: {exc}") from None


_NARROW_FLOATS = {"bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3", "float8_e3m4",
                  "float8_e4m3b11fnuz", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
                  "float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn"}


def round(x, fmt: Format, mode: str = "nearest", *, rng=None,  # noqa: A001
          random_bits: int = DEFAULT_RANDOM_BITS, out: np.ndarray | None = None) -> np.ndarray:
    """Round the values of `x` to the format `fmt`: an array of `fmt.container` dtype, same shape.

    Every element of the result is exactly representable in `fmt` (float32 container for formats
    that fit in fp32, float64 otherwise); NaN stays NaN (sign and payload not kept), ±0 keep
    their sign. A float64 input is rounded directly (no double rounding through float32).

    `x`: a float32 or float64 ndarray (float16 / ml_dtypes floats are widened exactly; Python
    floats and lists are converted with `np.asarray(x, np.float64)`; anything else is a
    TypeError). `mode`: "nearest" (ties to even), "toward_zero", or "stochastic" (then `rng`, a
    `numpy.random.Generator` or an `sp.Philox`, is required): one word W_i of `rng.integers(0,
    2**32, size=x.size, dtype=np.uint32)` (of a Philox: its next x.size words, the same on every
    backend) per element in C order, of which the top `random_bits` (1..32, default 32)
    are used; x rounds away from zero iff floor(f * 2**random_bits) + (W_i >> (32 -
    random_bits)) >= 2**random_bits, f being |x|'s distance past the lower neighbour in ulps.
    Overflow, infinities and subnormals follow the format's options (see `Format`).
    `out`: optional destination (see `round_array`). Exact rules: docs/formats.md.
    """
    if not isinstance(fmt, Format):
        raise TypeError(f"round: fmt must be a simprec Format such as sp.fp16, sp.bf16 or "
                        f"sp.Format(exp_bits=5, man_bits=10), got {fmt!r}")
    if mode not in ROUNDING_MODES:
        raise ValueError(f"round: mode must be one of {ROUNDING_MODES}, got {mode!r}")
    if mode == "stochastic":
        if not isinstance(rng, (np.random.Generator, Philox)):
            raise TypeError(f"round: mode='stochastic' needs rng, a numpy.random.Generator "
                            f"(e.g. np.random.default_rng(0)) or an sp.Philox(seed), got {rng!r}")
        if not _is_int(random_bits) or not 1 <= random_bits <= 32:
            raise ValueError(f"round: random_bits must be an integer in 1..32, got {random_bits!r}")
    elif rng is not None or random_bits != DEFAULT_RANDOM_BITS:
        raise ValueError(f"round: rng and random_bits are for mode='stochastic' only "
                         f"(mode={mode!r})")
    x = _as_float_array(x)
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    if out is not None:
        if (not isinstance(out, np.ndarray) or out.dtype != fmt.container
                or out.shape != x.shape or not out.flags.c_contiguous or not out.flags.writeable):
            raise ValueError(f"round: out must be a writeable C-contiguous array of dtype "
                             f"{fmt.container} and shape {x.shape}")
        if out is not x and np.shares_memory(out, x):
            x = x.copy()
    return round_array(x, fmt, mode, rng=rng, random_bits=random_bits, out=out)
