"""Models of CUDA's arithmetic that is not IEEE basic operations: libdevice's single-precision
math functions (`libdevice`) and the special-function unit's approximate instructions (`mufu`).

They sit beside `formats` at the bottom of the layering: the NumPy reference backend computes its
elementwise kernels with them, and the ops layer uses them for the few constants a CUDA kernel
computes on the device (a reciprocal through the special-function unit, say).
"""

from . import libdevice, mufu

__all__ = ["libdevice", "mufu"]
