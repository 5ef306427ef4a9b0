"""Optimizer: parameter groups, per-parameter state, zero_grad, state_dict (torch's shape).

Subclasses implement `_update(p, group, state)`: read `p.grad`, update the state, and return
`(new, update)`: the parameter's new fp32 value (one torch kernel's result, unrounded) and the
fp32 update the optimizer meant to apply. The base class rounds `new` once into the parameter's
format, stores it and, when `simprec.hooks` has observers, reports the step as an `update`
event `{"kind": "update", "name", "fmt", "old", "new", "update", "backend", "module"}`.
"""

from __future__ import annotations

import numpy as np

from .. import _state, hooks
from ..tensor import Tensor, clear_grads

__all__ = ["Optimizer", "required"]


class _Required:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


class Optimizer:
    """Base class: `Optimizer(params, defaults)`; params are Tensors or dicts with "params"."""

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.state: dict = {}  # parameter Tensor -> {name: Tensor or number}
        self.param_groups: list[dict] = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__}")
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])

    def add_param_group(self, group: dict) -> None:
        """Add a group of parameters (with its own hyper-parameters) to optimise."""
        if not isinstance(group, dict):
            raise TypeError(f"param group must be a dict, got {type(group).__name__}")
        group = dict(group)
        params = group.get("params")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        params = list(params) if params is not None else []
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is "
                                f"{type(p).__name__}")
            if not p.fmt.is_float:
                raise TypeError(f"optimizer can only optimize floating-point tensors, "
                                f"got {p.fmt.name}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        group["params"] = params
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            group.setdefault(name, default)
        self._check_group(group)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        if seen & {id(p) for p in params}:
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def _check_group(self, group: dict) -> None:
        """Validate a group's hyper-parameters (subclasses)."""

    # ---- the step ----
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients (`set_to_none`, torch's default) or set them to zeros."""
        clear_grads((p for group in self.param_groups for p in group["params"]), set_to_none)

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure()'s loss or None."""
        loss = None
        if closure is not None:
            with _state.enable_grad():
                loss = closure()
        with _state.no_grad():
            for group in self.param_groups:
                self._step_group(group)
        return loss

    def _step_group(self, group: dict) -> None:
        """One update of each parameter of `group` that has a gradient (subclasses may update
        the group's tensors together, as torch's foreach kernels do)."""
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state.setdefault(p, {})
            new, update = self._update(p, group, state)
            self._store(p, new, update)

    def _update(self, p, group: dict, state: dict):
        raise NotImplementedError

    def _store(self, p, new, update) -> None:
        """Round the new fp32 value once into p's format, store it, tell the observers."""
        be = p.backend
        old = p.data
        p.data = be.round(new, p.fmt)
        if hooks.observers:
            hooks.notify({"kind": "update", "op": type(self).__name__, "name": p.name, "fmt": p.fmt,
                          "old": old, "new": p.data, "update": update, "backend": be,
                          "module": ""})

    # ---- helper for subclasses: a state tensor in the parameter's format ----
    @staticmethod
    def _state_tensor(p, data) -> Tensor:
        return Tensor._make(p.backend.round(data, p.fmt), p.fmt, p.backend)

    # ---- checkpoints ----
    def state_dict(self) -> dict:
        """{"state": {index: {name: ndarray or number}}, "param_groups": [{.., "params": [i]}]}:
        torch's layout, parameters numbered in group order; arrays are float32 NumPy copies
        (values exact in the parameter's format). No pickle needed."""
        index, groups = {}, []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state and self.state[p]:
                    state[index[id(p)]] = {k: (v.numpy() if isinstance(v, Tensor) else v)
                                           for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore `state_dict()`'s output; arrays are rounded into each parameter's format."""
        groups = self.param_groups
        saved = state_dict["param_groups"]
        if len(groups) != len(saved):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for g, s in zip(groups, saved, strict=False):
            if len(g["params"]) != len(s["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match "
                                 "the size of optimizer's group")
        id_map = {old: p for g, s in zip(groups, saved, strict=True)
                  for old, p in zip(s["params"], g["params"], strict=True)}
        new_state = {}
        for key, values in state_dict["state"].items():
            key = int(key)
            if key not in id_map:
                continue
            p = id_map[key]
            entry = {}
            for name, value in values.items():
                if isinstance(value, (np.ndarray, Tensor)):
                    array = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
                    if tuple(array.shape) != p.shape:
                        raise ValueError(f"load_state_dict: state {name!r} has shape "
                                         f"{array.shape}, the parameter {p.shape}")
                    entry[name] = Tensor._from_data(array.astype(np.float32), p.fmt, p.backend)
                else:
                    entry[name] = value
            new_state[p] = entry
        self.state = new_state
        for g, s in zip(groups, saved, strict=False):
            g.update({k: v for k, v in s.items() if k != "params"})
