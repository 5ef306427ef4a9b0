"""`amp.GradScaler`: torch's dynamic loss scaling, step for step and bit for bit.

Follows torch/amp/grad_scaler.py (the per-optimizer READY/UNSCALED/STEPPED state machine, the
fp64 reciprocal, skipping the step on inf/NaN) and the `_amp_update_scale_` kernel
(aten/src/ATen/native/cuda/AmpKernels.cu, cpu/AmpGradScalerKernels.cpp): the scale is an fp32
number, the growth tracker an int32, and both change only in `update()`. See docs/amp.md.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable

import numpy as np

from .. import hooks
from ..formats import fp16, fp32
from ..ops import mul
from ..tensor import Tensor

__all__ = ["GradScaler", "StaticLossScaler", "OptState", "amp_update_scale"]


class OptState(enum.Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _fresh_state() -> dict:
    return {"stage": OptState.READY, "found_inf": None}


def amp_update_scale(scale: np.float32, tracker: np.int32, found_inf: float, growth_factor: float,
                     backoff_factor: float, growth_interval: int) -> tuple[np.float32, np.int32]:
    """torch._amp_update_scale_ as a pure function: (new scale, new growth tracker).

    The C++ kernel multiplies the float scale by a double factor and stores the product as a
    float; the tracker is reset on overflow and on the step that reaches growth_interval
    (whether or not growth stays finite); there is no floor (the scale can reach 0)."""
    if found_inf:
        return np.float32(float(scale) * backoff_factor), np.int32(0)
    successful = int(tracker) + 1
    if successful == growth_interval:
        with np.errstate(over="ignore"):
            grown = np.float32(float(scale) * growth_factor)
        return (grown if np.isfinite(grown) else np.float32(scale)), np.int32(0)
    return np.float32(scale), np.int32(successful)


def _check_positive(name: str, value, *, above=0.0, below=None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"GradScaler: {name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= above or (below is not None and value >= below):
        bounds = f"> {above:g}" if below is None else f"in ({above:g}, {below:g})"
        raise ValueError(f"GradScaler: {name} must be finite and {bounds}; got {value!r}")
    return value


def _check_interval(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"GradScaler: growth_interval must be a positive integer; got {value!r}")
    return int(value)


class GradScaler:
    """Dynamic loss scaling (torch.amp.GradScaler).

    `GradScaler(init_scale=2.**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
    enabled=True)`. Per iteration: `scaler.scale(loss).backward()`, optionally
    `scaler.unscale_(opt)` (then clip), `scaler.step(opt)`, `scaler.update()`.

    After each `update()`, `last_step` holds the facts of the finished iteration:
    `{"scale": scale used, "found_inf": bool, "skipped": bool, "new_scale": float,
    "growth_tracker": int}`; with observers registered in `simprec.hooks`, the same facts go out
    as a `{"kind": "scaler", ...}` event.
    """

    _allow_fp16 = False       # torch refuses to unscale fp16 gradients
    _skip_nonfinite = True    # torch skips optimizer.step() when a gradient is inf/NaN

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True):
        self._enabled = bool(enabled)
        self._init_scale = _check_positive("init_scale", init_scale)
        self._growth_factor = _check_positive("growth_factor", growth_factor, above=1.0)
        self._backoff_factor = _check_positive("backoff_factor", backoff_factor, below=1.0)
        self._growth_interval = _check_interval(growth_interval)
        self._init_growth_tracker = 0
        self._scale: np.float32 | None = None        # made lazily by scale(), as in torch
        self._growth_tracker: np.int32 | None = None
        self._per_optimizer_states: dict[int, dict] = {}
        self.last_step: dict | None = None

    # ---- facts ----
    def is_enabled(self) -> bool:
        return self._enabled

    def get_scale(self) -> float:
        """The scale as a Python float (init_scale before the first scale(); 1.0 if disabled)."""
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else float(self._scale)

    def get_growth_tracker(self) -> int:
        if not self._enabled:
            return 0
        if self._growth_tracker is None:
            return self._init_growth_tracker
        return int(self._growth_tracker)

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = _check_positive("growth_factor", new_factor, above=1.0)

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = _check_positive("backoff_factor", new_factor, below=1.0)

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = _check_interval(new_interval)

    def _state(self, optimizer) -> dict:
        return self._per_optimizer_states.setdefault(id(optimizer), _fresh_state())

    def _check_started(self, funcname: str) -> None:
        if self._scale is None:
            raise RuntimeError(f"GradScaler: {funcname}() was called before scale(): call "
                               f"scaler.scale(loss).backward() earlier in the iteration "
                               f"(torch: 'Attempted {funcname} but _scale is None')")

    # ---- the iteration ----
    def scale(self, outputs):
        """`outputs` × scale, differentiable (a Tensor, or a list/tuple of them).

        As torch: a 0-dim or fp32 output is multiplied by the fp32 scale tensor and promotes
        (an fp16 loss gives an fp32 scaled loss); a ≥1-dim half tensor stays in its format, the
        product computed in fp32 and rounded once (torch's CPU kernel reads the fp32 scalar)."""
        if not self._enabled:
            return outputs
        if self._scale is None:
            self._scale = np.float32(self._init_scale)
            self._growth_tracker = np.int32(self._init_growth_tracker)
        if isinstance(outputs, Tensor):
            return self._scale_one(outputs)
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        if isinstance(outputs, Iterable) and not isinstance(outputs, (str, bytes, dict)):
            return [self.scale(o) for o in outputs]
        raise ValueError("GradScaler.scale: outputs must be a Tensor or an iterable of Tensors")

    def _scale_one(self, t: Tensor) -> Tensor:
        if not t.fmt.is_float:
            raise TypeError(f"GradScaler.scale: needs a floating-point tensor, got {t.fmt.name}")
        if t.ndim >= 1 and t.fmt.bits < 32:
            return mul(t, float(self._scale))  # one fp32 product, rounded to t's format
        s = Tensor._make(t.backend.full((), float(self._scale), fp32), fp32, t.backend)
        return mul(t, s)

    def _unscale_grads(self, optimizer, inv_scale: np.float32, allow_fp16: bool) -> list | None:
        """torch's _unscale_grads_: each backend's `amp_unscale` kernel (torch's
        _amp_foreach_non_finite_check_and_unscale_) checks its gradients for inf/NaN (on the
        scaled values) and multiplies them by inv_scale in fp32 (skipped when inv_scale is 1),
        whether or not an inf was found. Returns the found-inf flags, arrays that stay on their
        backends (read once, in step()), or None when there was no gradient."""
        if hasattr(optimizer, "prepare_grads"):  # MasterWeights: copy the model grads in first
            optimizer.prepare_grads()
        by_backend: dict[int, tuple] = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if not allow_fp16 and g.fmt == fp16:
                    raise ValueError("Attempting to unscale FP16 gradients.")
                by_backend.setdefault(id(g.backend), (g.backend, []))[1].append(g)
        if not by_backend:
            return None
        flags = []
        for be, grads in by_backend.values():
            new, found = be.amp_unscale([g.data for g in grads], [g.fmt for g in grads],
                                        float(inv_scale))
            for g, data in zip(grads, new, strict=True):
                g.data = data  # in place, as torch's kernel
            flags.append((be, found))
        return flags

    @staticmethod
    def _found(state) -> float:
        """The optimizer's found-inf count as a number: the step's one host synchronisation
        (torch's GradScaler.step reads its found_inf tensors the same way)."""
        found = state["found_inf"]
        if isinstance(found, list):
            found = float(sum(float(be.to_numpy(flag)) for be, flag in found))
            state["found_inf"] = found
        return found

    def unscale_(self, optimizer) -> None:
        """Divide `optimizer`'s gradients by the scale (as g × float32(1/float64(scale)))."""
        if not self._enabled:
            return
        self._check_started("unscale_")
        state = self._state(optimizer)
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the "
                               "last update().")
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        # "FP32 division can be imprecise for certain compile options, so we carry out the
        # reciprocal in FP64." (grad_scaler.py)
        with np.errstate(over="ignore", divide="ignore"):  # a zero scale gives inf, as in torch
            inv_scale = np.float32(1.0 / np.float64(self._scale))
        state["found_inf"] = self._unscale_grads(optimizer, inv_scale, allow_fp16=self._allow_fp16)
        state["stage"] = OptState.UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """Unscale if needed, then `optimizer.step()` unless a gradient was inf/NaN.
        Returns what optimizer.step() returned, or None when the step was skipped."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check_started("step")
        state = self._state(optimizer)
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        if state["found_inf"] is None:
            raise RuntimeError("No inf checks were recorded for this optimizer: none of its "
                               "parameters has a gradient (did backward() reach them?).")
        retval = None
        state["skipped"] = bool(self._found(state)) and self._skip_nonfinite
        if not state["skipped"]:
            retval = optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        return retval

    def update(self, new_scale=None) -> None:
        """Update the scale: back off on inf/NaN, grow after growth_interval clean steps
        (or set it to `new_scale`)."""
        if not self._enabled:
            return
        self._check_started("update")
        used = float(self._scale)
        states = [s for s in self._per_optimizer_states.values() if s["found_inf"] is not None]
        found = float(sum(self._found(s) for s in states))
        if new_scale is not None:
            if isinstance(new_scale, Tensor):
                if new_scale.size != 1:
                    raise ValueError("GradScaler.update: new_scale should be a 1-element tensor")
                if new_scale.requires_grad:
                    raise ValueError("GradScaler.update: new_scale should not require grad")
                new_scale = new_scale.item()
            self._scale = np.float32(_check_positive("new_scale", new_scale))
        else:
            if not states:
                raise RuntimeError("No inf checks were recorded prior to update(): call "
                                   "scaler.step(optimizer) (or unscale_) before update().")
            self._scale, self._growth_tracker = self._next_scale(found)
        skipped = any(s.get("skipped", False) for s in states)
        self.last_step = {"scale": used, "found_inf": bool(found), "skipped": skipped,
                          "new_scale": float(self._scale),
                          "growth_tracker": int(self._growth_tracker)}
        if hooks.observers:
            hooks.notify({"kind": "scaler", **self.last_step})
        self._per_optimizer_states = {}

    def _next_scale(self, found: float):
        return amp_update_scale(self._scale, self._growth_tracker, found, self._growth_factor,
                                self._backoff_factor, self._growth_interval)

    # ---- checkpoints ----
    def state_dict(self) -> dict:
        """torch's keys: scale, growth_factor, backoff_factor, growth_interval, _growth_tracker
        (an empty dict when disabled)."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self.get_growth_tracker()}

    def load_state_dict(self, state_dict: dict) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        keys = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}
        missing = keys - set(state_dict)
        if missing:
            raise KeyError(f"GradScaler.load_state_dict: missing key(s) {sorted(missing)}")
        scale = float(state_dict["scale"])
        if not (math.isfinite(scale) and scale >= 0):  # 0 is reachable (no floor), so loadable
            raise ValueError(f"GradScaler.load_state_dict: scale must be finite and >= 0; "
                             f"got {scale!r}")
        self._init_scale = scale
        if self._scale is not None:
            self._scale = np.float32(self._init_scale)
        self._growth_factor = _check_positive("growth_factor", state_dict["growth_factor"],
                                              above=1.0)
        self._backoff_factor = _check_positive("backoff_factor", state_dict["backoff_factor"],
                                               below=1.0)
        self._growth_interval = int(state_dict["growth_interval"])
        self._init_growth_tracker = int(state_dict["_growth_tracker"])
        if self._growth_tracker is not None:
            self._growth_tracker = np.int32(self._init_growth_tracker)

    def __repr__(self) -> str:
        return (f"GradScaler(scale={self.get_scale()!r}, "
                f"growth_tracker={self.get_growth_tracker()}, "
                f"growth_factor={self._growth_factor}, backoff_factor={self._backoff_factor}, "
                f"growth_interval={self._growth_interval}, enabled={self._enabled})")


class StaticLossScaler(GradScaler):
    """A fixed loss scale: `GradScaler`'s iteration API with a scale that `update()` never changes.

    `StaticLossScaler(scale=2.**10, skip_nonfinite=True, allow_fp16=False)`: steps whose
    gradients hold inf/NaN are skipped unless `skip_nonfinite=False` (Apex's static scaler steps
    anyway); `allow_fp16=True` unscales fp16 gradients in place (pure-fp16 training, where
    there are no fp32 gradients), each rounded back to fp16."""

    def __init__(self, scale: float = 2.0**10, *, skip_nonfinite: bool = True,
                 allow_fp16: bool = False, enabled: bool = True):
        super().__init__(init_scale=scale, enabled=enabled)
        self._skip_nonfinite = bool(skip_nonfinite)
        self._allow_fp16 = bool(allow_fp16)

    def _next_scale(self, found: float):
        return np.float32(self._scale), np.int32(0)

    def __repr__(self) -> str:
        return f"StaticLossScaler(scale={self.get_scale()!r}, enabled={self._enabled})"
