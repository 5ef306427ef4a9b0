"""Process-wide switches of the simulator: gradient mode, autocast policy, matmul accumulation.

They live at the bottom of the layering so that the ops can read what `amp.autocast` and
`no_grad` set, without importing them. Each is a `ContextVar`, so threads and asyncio tasks see
their own values.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

grad_enabled: ContextVar[bool] = ContextVar("simprec_grad_enabled", default=True)
# The active autocast region (an `amp.autocast` object) or None.
autocast: ContextVar[object | None] = ContextVar("simprec_autocast", default=None)
# The matmul accumulation model used by matmul, linear and conv outside an explicit choice.
accumulate: ContextVar[str] = ContextVar("simprec_accumulate", default="fp32")
# The active fp8 region (an `amp.fp8.fp8_autocast` object: linear layers run its fp8 GEMMs) or None.
fp8: ContextVar[object | None] = ContextVar("simprec_fp8", default=None)


@contextmanager
def _setting(var: ContextVar, value):
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def no_grad():
    """Context manager: ops inside record no graph (like `torch.no_grad`)."""
    return _setting(grad_enabled, False)


def enable_grad():
    """Context manager: turn graph recording back on inside a `no_grad` region."""
    return _setting(grad_enabled, True)


def accumulation(model: str):
    """Context manager: the matmul accumulation model for matmuls inside (see
    `simprec.accumulate`)."""
    from .accumulate import check_model  # formats-level module, no cycle

    return _setting(accumulate, check_model(model))
