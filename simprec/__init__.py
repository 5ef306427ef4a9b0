"""simprec: a bit-exact laboratory for mixed-precision training."""

from .formats import (  # noqa: F401
    Format, IntFormat, bf16, fp8_e4m3, fp8_e5m2, fp16, fp32, fp64, int64, promote, round, tf32,
)

__version__ = "0.1.0"
