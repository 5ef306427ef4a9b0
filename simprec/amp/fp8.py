"""fp8 training with per-tensor delayed scaling, as in Transformer Engine's `DelayedScaling`
recipe (transformer_engine/common/recipe.py; the scale update of
transformer_engine/pytorch/fp8.py `_default_sf_compute`), emulated op by op.

    scaling = amp.fp8.DelayedScaling(margin=0, amax_history_len=1024)
    with amp.autocast(sp.bf16, accumulate="sm70"), amp.fp8.fp8_autocast(scaling):
        loss = loss_fn(model, batch)        # every linear layer: fp8 GEMMs (ops.fp8.FP8Linear)
    loss.backward(); opt.step(); scaling.update()

Each linear layer (keyed by its weight) keeps three tensors' scaling state: the input "x" and
the weight "w" (cast to e4m3 in the forward) and the output gradient "dy" (e5m2 in the
backward). A cast multiplies by the tensor's current scale; the amax of the unscaled tensor goes
into a history of `amax_history_len` steps. `update()` (after each optimizer step) sets every
scale from its history, in fp32 on the device:

    amax = max(history); scale' = (fp8_max / amax) / 2**margin if amax > 0 and finite, else scale
    scale_inv = 1 / scale'

so a step quantizes with scales computed from the steps before it ("delayed"); the first step
uses scale 1. Amaxes are recorded only while gradients are enabled (training, not evaluation).
"""

from __future__ import annotations

import numpy as np

from .. import _state
from ..formats import fp32
from ..ops._util import accumulate_model
from ..ops.fp8 import E4M3, E5M2, FP8Linear
from .autocast import get_autocast_format

__all__ = ["DelayedScaling", "fp8_autocast", "E4M3", "E5M2"]

ROLES = ("x", "w", "dy")


class _Meta:
    """The scaling state of one layer: per role a scale, its inverse and an amax history
    (backend arrays), and the largest amax recorded since the last update."""

    def __init__(self, be, history_len: int):
        self.be = be
        one = be.full((), 1.0, fp32)
        self.scale = {r: one for r in ROLES}
        self.scale_inv = {r: one for r in ROLES}
        self.history = {r: be.full((history_len,), 0.0, fp32) for r in ROLES}
        self.pending: dict = {r: None for r in ROLES}

    def record(self, role: str, amax) -> None:
        old = self.pending[role]
        self.pending[role] = amax if old is None else self.be.elementwise("maximum", old, amax)

    def update(self, fmt_max: dict, margin: int) -> None:
        be = self.be
        for r in ROLES:
            amax_now = self.pending[r]
            if amax_now is None:
                continue
            hist = be.concatenate([be.getitem(self.history[r], slice(1, None)),
                                   be.reshape(amax_now, (1,))], 0)
            self.history[r], self.pending[r] = hist, None
            amax = be.max(hist, None, False)
            sf = be.elementwise("rdiv_scalar", amax, scalar=fmt_max[r])       # fp8_max / amax
            sf = be.elementwise("mul_scalar", sf, scalar=2.0 ** -margin)      # / 2**margin, exact
            ok = be.elementwise("isfinite", amax)
            ok = be.elementwise("where", be.elementwise("gt", amax, 0.0), ok, False)
            self.scale[r] = be.elementwise("where", ok, sf, self.scale[r])
            self.scale_inv[r] = be.elementwise("reciprocal", self.scale[r])

    def state(self) -> dict:
        to = self.be.to_numpy
        return {r: {"scale": to(self.scale[r]), "history": to(self.history[r])} for r in ROLES}

    def load(self, state: dict) -> None:
        be = self.be
        for r in ROLES:
            self.scale[r] = be.asarray(np.asarray(state[r]["scale"], np.float32), fp32)
            self.scale_inv[r] = be.elementwise("reciprocal", self.scale[r])
            self.history[r] = be.asarray(np.asarray(state[r]["history"], np.float32), fp32)


class DelayedScaling:
    """The per-tensor scaling state of every fp8 layer (see the module docstring).

    `margin` (int >= 0), `amax_history_len` (>= 1; TE's default 1024), `fwd_format` /
    `bwd_format`: the fp8 formats of the forward casts (e4m3) and of the gradient (e5m2), both
    saturating as TE's casts are.
    """

    def __init__(self, margin: int = 0, amax_history_len: int = 1024, fwd_format=E4M3,
                 bwd_format=E5M2):
        if not isinstance(margin, int) or margin < 0:
            raise ValueError(f"DelayedScaling: margin must be an integer >= 0, got {margin!r}")
        if not isinstance(amax_history_len, int) or amax_history_len < 1:
            raise ValueError(f"DelayedScaling: amax_history_len must be an integer >= 1, "
                             f"got {amax_history_len!r}")
        self.margin, self.amax_history_len = margin, amax_history_len
        self.fwd_format, self.bwd_format = fwd_format, bwd_format
        self._metas: dict[int, tuple] = {}  # id(weight) -> (weight, _Meta)

    def meta_for(self, weight) -> _Meta:
        entry = self._metas.get(id(weight))
        if entry is None or entry[0] is not weight:
            entry = self._metas[id(weight)] = (weight, _Meta(weight.backend,
                                                             self.amax_history_len))
        return entry[1]

    def update(self) -> None:
        """Set every scale from its amax history (call after each optimizer step)."""
        fmt_max = {"x": self.fwd_format.max, "w": self.fwd_format.max, "dy": self.bwd_format.max}
        for _, meta in self._metas.values():
            meta.update(fmt_max, self.margin)

    def state_dict(self, params) -> dict:
        """{index of the weight in `params`: its state}, for checkpoints."""
        index = {id(p): i for i, p in enumerate(params)}
        return {index[k]: meta.state() for k, (w, meta) in self._metas.items() if k in index}

    def load_state_dict(self, state: dict, params) -> None:
        params = list(params)
        for i, s in state.items():
            self.meta_for(params[int(i)]).load(s)


class fp8_autocast:  # noqa: N801  (TE's name)
    """Context manager: linear layers inside run `FP8Linear` with `scaling`'s scales; their
    output is in the autocast format (fp32 outside autocast)."""

    def __init__(self, scaling: DelayedScaling):
        self.scaling = scaling
        self._tokens: list = []

    def __enter__(self):
        self._tokens.append(_state.fp8.set(self))
        return self

    def __exit__(self, *exc) -> bool:
        _state.fp8.reset(self._tokens.pop())
        return False

    def linear(self, x, weight, bias=None):
        """F.linear in fp8 (called by `simprec.ops.linear` inside the region)."""
        if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
            raise ValueError(f"linear: input {x.shape} and weight {weight.shape} do not line up")
        out_fmt = get_autocast_format() or x.fmt
        tensors = (x, weight) + ((bias,) if bias is not None else ())
        return FP8Linear.apply(*tensors, meta=self.scaling.meta_for(weight),
                               accumulate=accumulate_model(), out_fmt=out_fmt,
                               fwd_fmt=self.scaling.fwd_format, bwd_fmt=self.scaling.bwd_format)
