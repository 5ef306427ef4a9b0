"""Number formats and exact rounding into them.

A `Format` describes a binary floating-point format (sign, `exp_bits` exponent bits, `man_bits`
stored mantissa bits) and how it treats subnormals, overflow, infinities and NaN. simprec keeps
the values of every format narrower than fp32 in float32 arrays: `round` maps float32/float64
values to the nearest value of the format (or by the chosen mode), so that every element is
exactly representable in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Format", "IntFormat", "fp64", "fp32", "tf32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2",
    "int64", "promote", "round", "ROUNDING_MODES",
]

ROUNDING_MODES = ("nearest", "toward_zero", "stochastic")


@dataclass(frozen=True)
class Format:
    """A binary floating-point format: 1 sign bit, `exp_bits` exponent bits, `man_bits` mantissa bits.

    `subnormals`: keep gradual underflow (True) or flush results below the smallest normal to ±0.
    `overflow`: "inf" (IEEE: overflow to ±inf) or "saturate" (clamp to ±max).
    `inf`: whether the format encodes infinities (IEEE formats do; OCP fp8 e4m3fn does not).
    `nan`: "ieee" (all-ones exponent with nonzero mantissa) or "fn" (only S.1..1.1..1 is NaN: the
    all-ones exponent holds finite values, as in OCP fp8 e4m3fn), or "none".
    """

    exp_bits: int
    man_bits: int
    subnormals: bool = True
    overflow: str = "inf"
    inf: bool = True
    nan: str = "ieee"
    name: str = field(default="", compare=False)

    def __post_init__(self):
        if not isinstance(self.exp_bits, (int, np.integer)) or self.exp_bits < 2:
            raise ValueError(f"Format: exp_bits must be an integer >= 2, got {self.exp_bits!r}")
        if not isinstance(self.man_bits, (int, np.integer)) or self.man_bits < 0:
            raise ValueError(f"Format: man_bits must be an integer >= 0, got {self.man_bits!r}")
        if self.exp_bits > 11 or self.man_bits > 52:
            raise ValueError(
                f"Format: exp_bits <= 11 and man_bits <= 52 (the float64 container), "
                f"got exp_bits={self.exp_bits}, man_bits={self.man_bits}")
        if self.overflow not in ("inf", "saturate"):
            raise ValueError(f"Format: overflow must be 'inf' or 'saturate', got {self.overflow!r}")
        if self.nan not in ("ieee", "fn", "none"):
            raise ValueError(f"Format: nan must be 'ieee', 'fn' or 'none', got {self.nan!r}")
        if self.overflow == "inf" and not self.inf:
            raise ValueError("Format: overflow='inf' needs a format with infinities (inf=True)")
        if not self.name:
            object.__setattr__(self, "name", f"e{self.exp_bits}m{self.man_bits}")

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
        if self.nan == "fn" and not self.inf:
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
        """The NumPy dtype simprec's reference backend stores this format's values in."""
        fits32 = self.exp_bits <= 8 and self.man_bits <= 23
        return np.dtype(np.float32 if fits32 else np.float64)

    def __repr__(self) -> str:
        return f"sp.{self.name}" if self.name in _STANDARD_NAMES else (
            f"Format(exp_bits={self.exp_bits}, man_bits={self.man_bits}, "
            f"subnormals={self.subnormals}, overflow={self.overflow!r})")


@dataclass(frozen=True)
class IntFormat:
    """The format of integer tensors (class labels, token ids): exact, never rounded, no gradient."""

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
fp8_e4m3 = Format(4, 3, overflow="saturate", inf=False, nan="fn", name="fp8_e4m3")
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


def round(x, fmt, mode="nearest", *, rng=None, random_bits=None):  # noqa: A001
    """Round a float32/float64 array to `fmt`; see the rounding helper's implementation."""
    raise NotImplementedError("being written")
