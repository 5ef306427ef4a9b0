"""`amp.autocast`: torch's CUDA autocast for simprec's ops, with the weight-cast cache.

Inside `with amp.autocast(sp.fp16):` every op asks the active region how to cast its inputs
(`simprec.ops._util.autocast` -> `region.cast_inputs(op_name, tensors)`) and the region applies
the op's policy from `amp.policy.TABLE`. The casts are the differentiable `simprec.ops.cast`, so
the backward casts each gradient back to the format of the tensor it belongs to (torch's
ToCopyBackward). Semantics from aten/src/ATen/autocast_mode.{h,cpp} and
torch/amp/autocast_mode.py; see docs/amp.md.
"""

from __future__ import annotations

import functools
from contextvars import ContextVar

from .. import _state
from ..accumulate import check_model
from ..formats import Format, bf16, fp16, fp32, fp64
from ..ops import cast
from ..tensor import Tensor
from .policy import (
    BANNED,
    BANNED_MESSAGE,
    FP32,
    FP32_OUT,
    LOWER,
    NATIVE_PROMOTE,
    PROMOTE,
    policy_of,
)

__all__ = ["autocast", "is_autocast_enabled", "get_autocast_format"]

HALF_FORMATS = {"fp16": fp16, "float16": fp16, "half": fp16, "bf16": bf16, "bfloat16": bf16}

# Nesting depth of autocast regions (enabled or not) and the cast cache of the outermost one:
# torch's thread-local `nesting` and `get_cached_casts()` (autocast_mode.cpp).
_nesting: ContextVar[int] = ContextVar("simprec_autocast_nesting", default=0)
_cache: ContextVar[dict | None] = ContextVar("simprec_autocast_cache", default=None)


def _half_format(fmt) -> Format:
    if isinstance(fmt, str) and fmt in HALF_FORMATS:
        return HALF_FORMATS[fmt]
    if isinstance(fmt, Format) and fmt in (fp16, bf16):
        return fp16 if fmt == fp16 else bf16
    shown = getattr(fmt, "name", None) or repr(fmt)
    raise ValueError(f"autocast: the format must be a half format, sp.fp16 or sp.bf16; got {shown} "
                     f"(autocast lowers matmuls to a 16-bit format; for fp32 use enabled=False)")


def _eligible(t) -> bool:
    """torch's is_eligible: a defined floating tensor that is not fp64."""
    return isinstance(t, Tensor) and t.fmt.is_float and t.fmt != fp64


class autocast:  # noqa: N801  (torch's name)
    """Context manager (and decorator): run ops under torch's CUDA autocast policy.

    `autocast(fmt=sp.fp16, enabled=True, accumulate=None, cache_enabled=True)`:
    - `fmt`: the lower-precision format, `sp.fp16` or `sp.bf16` (anything else: ValueError).
    - `enabled=False` turns casting off inside (e.g. inside an enabled region).
    - `accumulate`: the matmul accumulation model inside ("fp32", "sm90", ...); None keeps the
      current one (`sp.accumulation`), which is "fp32" unless set.
    - `cache_enabled`: cache the half copies of fp32 parameters for the outermost region.
    """

    def __init__(self, fmt=fp16, enabled: bool = True, accumulate: str | None = None,
                 cache_enabled: bool = True, *, dtype=None):
        if dtype is not None:  # torch spells it dtype=
            fmt = dtype
        self.fmt = _half_format(fmt)
        if not isinstance(enabled, bool):
            raise TypeError(f"autocast: enabled must be True or False, got {enabled!r}")
        if accumulate is not None:
            check_model(accumulate, "autocast")
        self.enabled = enabled
        self.accumulate = accumulate
        self.cache_enabled = bool(cache_enabled)
        self._tokens: list = []

    def __repr__(self) -> str:
        return (f"autocast({self.fmt.name}, enabled={self.enabled}, "
                f"accumulate={self.accumulate!r}, cache_enabled={self.cache_enabled})")

    # ---- the region ----
    def __enter__(self):
        depth = _nesting.get()
        tokens = [_nesting.set(depth + 1)]
        if depth == 0:  # the outermost region owns the cache
            tokens.append(_cache.set({}))
        tokens.append(_state.autocast.set(self if self.enabled else None))
        if self.accumulate is not None:
            tokens.append(_state.accumulate.set(self.accumulate))
        self._tokens.append(tokens)
        return self

    def __exit__(self, *exc) -> bool:
        tokens = self._tokens.pop()
        for token in reversed(tokens):  # restoring the cache variable drops the outermost cache
            token.var.reset(token)
        return False

    def __call__(self, fn):
        """Use as a decorator: `fn` runs inside a region with these settings."""
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with autocast(self.fmt, self.enabled, self.accumulate, self.cache_enabled):
                return fn(*args, **kwargs)
        return wrapper

    # ---- the hook the ops call ----
    def cast_inputs(self, op: str, tensors: tuple) -> tuple:
        """`tensors` cast for op `op` by its policy (autocast_mode.h's WrapFunction_ variants)."""
        if not self.enabled:
            return tensors
        policy = policy_of(op)
        if policy is None:
            return tensors
        if policy == LOWER:
            return tuple(self._cast(t, self.fmt) for t in tensors)
        if policy == FP32:
            return tuple(self._cast(t, fp32) for t in tensors)
        if policy == FP32_OUT:  # only when the first argument is eligible (firstarg_is_eligible)
            if not tensors or not _eligible(tensors[0]):
                return tensors
            return tuple(self._cast(t, fp32) for t in tensors)
        if policy == PROMOTE:
            target = self._widest(op, tensors)
            return tuple(self._cast(t, target) for t in tensors)
        if policy == BANNED:
            raise RuntimeError(BANNED_MESSAGE)
        raise AssertionError(f"unknown autocast policy {policy!r}")  # pragma: no cover

    def _widest(self, op: str, tensors) -> Format:
        """autocast_mode.h `promote_type`/`prioritize`: fp32 if any eligible input is fp32, else
        the autocast format; any other floating format is an error, as in torch (the ops CUDA
        promotes natively, cat/stack/where/index_copy, promote it to fp32 instead)."""
        current = self.fmt
        for t in tensors:
            if not _eligible(t) or t.fmt == current:
                continue
            if t.fmt == fp32 or current == fp32 or op in NATIVE_PROMOTE:
                current = fp32
            else:
                raise TypeError(f"autocast: {op} got an unexpected floating format {t.fmt.name} "
                                f"under {self.fmt.name} autocast "
                                f"(torch: 'Unexpected floating ScalarType')")
        return current

    def _cast(self, t, fmt: Format):
        """torch's cached_cast: eligible tensors not already in `fmt` are cast; the half copy of
        an fp32 leaf that requires grad (a parameter) is made once per outermost region."""
        if not _eligible(t) or t.fmt == fmt:
            return t
        cache = _cache.get()
        can_cache = (fmt == self.fmt and t.fmt == fp32 and t.requires_grad and t.is_leaf
                     and self.cache_enabled and cache is not None)
        if not can_cache:
            return cast(t, fmt)
        # torch keys by TensorImpl only; keying the format too keeps nested bf16/fp16 regions apart
        key = (id(t), fmt)
        hit = cache.get(key)
        if hit is not None and hit[0] is t:
            return hit[1]
        # the cached copy keeps its graph even when made under no_grad (pytorch#165068)
        with _state.enable_grad():
            out = cast(t, fmt)
        out.is_parameter_copy = True
        out.name = t.name
        cache[key] = (t, out)  # holding `t` keeps its id from being reused within the region
        return out


def is_autocast_enabled() -> bool:
    """True inside an enabled autocast region."""
    region = _state.autocast.get()
    return region is not None and getattr(region, "enabled", False)


def get_autocast_format():
    """The active region's half format, or None outside autocast."""
    region = _state.autocast.get()
    return region.fmt if is_autocast_enabled() else None
