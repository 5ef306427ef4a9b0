"""Compiled fast paths (numba) of the NumPy specification, bit for bit the same results.

The pure-NumPy code in `simprec.formats`, `simprec._tensor_core` and `simprec.cudamath` is the
specification: written so that a reader can check it against torch's and CUDA's sources, tested
against the GPU. The kernels here compute the same bits in one compiled pass over memory (the
op's fp32 arithmetic and its rounding fused, as a GPU kernel does), multithreaded over the
machine's cores; tests/test_fast.py holds every one of them to the specification, and CI runs the
whole suite both ways.

They are used when numba imports (the optional extra ``simprec[fast]``) unless the environment
variable ``SIMPREC_FAST=0`` forces the specification. `enabled()` says which; `kernels(name)`
imports a kernel module lazily (numba's import and its first compilation cost seconds; compiled
code is cached on disk) or returns None when the fast paths are off.
"""

from __future__ import annotations

import importlib
import os

__all__ = ["enabled", "kernels", "set_enabled"]

_state = {"enabled": None}


def _numba_available() -> bool:
    # numba's OpenMP threads wait for work sleeping, not spinning: on a shared machine (more
    # runnable threads than cores) spinning threads took the cores from the working ones and one
    # small parallel kernel call took 100x longer. Read once, when the OpenMP runtime starts.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import numba  # noqa: F401
    except Exception:  # ImportError, or a numba that fails against this NumPy
        return False
    return True


def enabled() -> bool:
    """Whether the compiled fast paths run: numba importable and SIMPREC_FAST not "0"."""
    on = _state["enabled"]
    if on is None:
        flag = os.environ.get("SIMPREC_FAST", "").strip().lower()
        on = flag not in ("0", "false", "no", "off") and _numba_available()
        _state["enabled"] = on
    return on


def set_enabled(on: bool | None) -> None:
    """Switch the fast paths on or off for this process (None: back to the environment's
    choice). The tests use it to hold each fast path against the specification."""
    _state["enabled"] = None if on is None else bool(on and _numba_available())


def kernels(name: str):
    """The module `simprec._fast.<name>` when the fast paths are on, else None."""
    if not enabled():
        return None
    module = _modules.get(name)
    if module is None:
        module = _modules[name] = importlib.import_module(f"{__name__}.{name}")
    return module


_modules: dict = {}
