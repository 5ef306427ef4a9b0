"""simprec's CuPy backend: the reference's own arithmetic as CUDA kernels (rounding into any
Format in every mode, libdevice and special-function-unit elementwise kernels, the sm70 / sm80 /
sm90 / fp16 accumulation models as GEMM kernels), so that an emulated experiment runs at GPU
speed with the NumPy reference's bits. Registered as "cupy" and "cupy:N" (device N).

Importing this package does not import CuPy; `CupyBackend` does (docs/backend-cupy.md).
"""

from __future__ import annotations

__all__ = ["CupyBackend"]


def __getattr__(name):
    if name == "CupyBackend":
        from .backend import CupyBackend

        return CupyBackend
    raise AttributeError(f"module 'simprec_cupy' has no attribute {name!r}")
