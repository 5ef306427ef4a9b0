"""Kernel arguments for formats, rounding modes and accumulation models (no CuPy import, so the
host tests of the kernels use the same mapping)."""

from __future__ import annotations

import pathlib

import numpy as np

from simprec import formats
from simprec._tensor_core import ARCHS

KERNEL_DIR = pathlib.Path(__file__).with_name("kernels")
MODES = {"nearest": 0, "toward_zero": 1, "stochastic": 2}
_OVF = {"inf": 0, "saturate": 1, "nan": 2}
NO_EXP = -4096  # tensor_core.cuh's SP_NO_EXP: "no floor"


def fits_kernels(fmt) -> bool:
    """Whether round.cuh handles `fmt` (its values fit fp32: the float32-container formats)."""
    return isinstance(fmt, formats.Format) and fmt.container == np.float32


def format_args(fmt) -> tuple:
    """(m, emin, fmax, ovf, subnormals) of round.cuh's sp_round for `fmt`, as kernel scalars."""
    return (np.int32(fmt.man_bits), np.int32(fmt.min_exp), np.float32(fmt.max),
            np.int32(_OVF[fmt.overflow]), np.int32(fmt.subnormals))


def keep_mask(random_bits: int) -> np.uint32:
    """The mask that keeps the top `random_bits` bits of a random word."""
    return np.uint32((1 << 32) - (1 << (32 - random_bits)))


def tc_args(arch: str) -> tuple:
    """(blk, frac, floor_e) of tensor_core.cuh's model for `arch` ("sm70", "sm80", "sm90")."""
    blk, frac, floor = ARCHS[arch]
    return np.int32(blk), np.int32(frac), np.int32(NO_EXP if floor is None else floor)


def source(*names: str) -> str:
    """The text of kernels/<name> files, the shared headers first, `#include`s resolved."""
    seen: list[str] = []

    def load(name: str) -> str:
        if name in seen:
            return ""
        seen.append(name)
        out = []
        for line in (KERNEL_DIR / name).read_text().splitlines():
            if line.startswith("#include \"") and line.endswith("\""):
                out.append(load(line.split("\"")[1]))
            elif line.strip() != "#pragma once":
                out.append(line)
        return "\n".join(out)

    return "\n".join(load(n) for n in names)
