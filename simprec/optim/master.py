"""MasterWeights: fp32 master copies for a half-precision model ("O2", Apex FP16_Optimizer).

The model holds fp16 (or bf16) parameters; this wrapper keeps one fp32 copy of each and gives
them to an ordinary optimizer. Per iteration (what NVIDIA's mixed-precision guide prescribes and
Apex amp O2 does):

1. `prepare_grads()`: each model gradient (fp16) is copied into its master's `.grad` in fp32
   (exact). `GradScaler.unscale_` calls it first, so the scaler unscales and checks the fp32
   master gradients (torch's scaler refuses fp16 gradients).
2. `step()`: the inner optimizer updates the fp32 masters, then every master is rounded once
   into its model parameter's format (one rounding per weight per step).

`param_groups` and `state` are the inner optimizer's, so schedulers and the scaler see the
masters. With `simprec.hooks` observers, the inner optimizer reports `update` events for the
fp32 masters and the copy back reports one `weight` rounding per parameter.
"""

from __future__ import annotations

import numpy as np

from .. import hooks
from ..formats import fp32
from ..tensor import Tensor, clear_grads

__all__ = ["MasterWeights"]


def _master_of(p) -> Tensor:
    be = p.backend
    host = np.array(be.to_numpy(p.data), dtype=np.float32, copy=True)
    m = Tensor._make(be.asarray(host, fp32), fp32, be, requires_grad=True)
    m.name = p.name
    m.is_parameter = True
    return m


class MasterWeights:
    """`MasterWeights(params, optimizer_factory)`: `optimizer_factory(master_params)` builds the
    inner optimizer (e.g. `lambda ps: optim.SGD(ps, lr=0.1)`); params may be parameter groups
    (dicts with "params"), which are mirrored onto the masters."""

    def __init__(self, params, optimizer_factory):
        params = list(params)
        if not params:
            raise ValueError("MasterWeights got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.model_params: list = []
        self.master_params: list = []
        master_groups = []
        for group in groups:
            model = group["params"]
            model = [model] if isinstance(model, Tensor) else list(model)
            masters = [_master_of(p) for p in model]
            self.model_params += model
            self.master_params += masters
            master_groups.append({**group, "params": masters})
        arg = master_groups if isinstance(params[0], dict) else self.master_params
        self.optimizer = optimizer_factory(arg)
        self._copied: list = [None] * len(self.model_params)

    def __repr__(self) -> str:
        return f"MasterWeights({self.optimizer!r})"

    @property
    def param_groups(self) -> list:
        return self.optimizer.param_groups

    @property
    def state(self) -> dict:
        return self.optimizer.state

    @property
    def defaults(self) -> dict:
        return self.optimizer.defaults

    def prepare_grads(self) -> None:
        """Copy each model gradient (unless already copied) into its master's fp32 `.grad`."""
        for i, (p, m) in enumerate(zip(self.model_params, self.master_params, strict=False)):
            g = p.grad
            if g is None:
                m.grad, self._copied[i] = None, None
            elif self._copied[i] is not g:  # a new backward made a new gradient tensor
                be = g.backend
                m.grad = Tensor._make(be.round(g.data, fp32), fp32, be)
                self._copied[i] = g

    def step(self, closure=None):
        """Step the fp32 masters, then round each into its model parameter."""
        self.prepare_grads()
        loss = self.optimizer.step(closure)
        self.copy_to_model()
        return loss

    def copy_to_model(self) -> None:
        for p, m in zip(self.model_params, self.master_params, strict=False):
            be = p.backend
            p.data = be.round(m.data, p.fmt)
            if hooks.observers:
                hooks.notify({"op": "MasterWeights", "kind": "weight", "fmt": p.fmt, "module": "",
                              "wide": m.data, "rounded": p.data, "backend": be, "name": p.name})

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)
        clear_grads(self.model_params, set_to_none)
        self._copied = [None] * len(self.model_params)

    def add_param_group(self, group: dict) -> None:
        raise NotImplementedError("MasterWeights: give every parameter group at construction")

    # ---- checkpoints ----
    def master_arrays(self) -> list:
        """The fp32 masters as host float32 arrays, in parameter order."""
        return [m.numpy() for m in self.master_params]

    def load_master_arrays(self, arrays, who: str = "MasterWeights") -> None:
        """Set the masters to `arrays` (what `master_arrays` returned; all checked before any
        is written) and round each into its model parameter."""
        self._set_masters(self._checked_masters(arrays, who))

    def _checked_masters(self, arrays, who: str) -> list:
        if len(arrays) != len(self.master_params):
            raise ValueError(f"{who}: {len(arrays)} master arrays for "
                             f"{len(self.master_params)} parameters")
        checked = []
        for m, array in zip(self.master_params, arrays, strict=True):
            array = np.array(array, dtype=np.float32, copy=True)
            if tuple(array.shape) != m.shape:
                raise ValueError(f"{who}: shape {array.shape} for a master of shape {m.shape}")
            checked.append(array)
        return checked

    def _set_masters(self, arrays) -> None:
        for m, array in zip(self.master_params, arrays, strict=True):
            m.data = m.backend.asarray(array, fp32)
        self.copy_to_model()

    def state_dict(self) -> dict:
        """{"optimizer": the inner optimizer's state_dict, "master": [fp32 arrays]}."""
        return {"optimizer": self.optimizer.state_dict(), "master": self.master_arrays()}

    def load_state_dict(self, state_dict: dict) -> None:
        masters = self._checked_masters(state_dict["master"], "MasterWeights.load_state_dict")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self._set_masters(masters)
