"""Mixed-precision training recipes: one name each, one training-step API for the trainer.

    recipe = amp.get_recipe("amp-fp16", init_scale=2**16, accumulate="sm90")
    model, optimizer, scaler = recipe.prepare(model, lambda params: optim.SGD(params, lr=0.1))
    loss, facts = recipe.step(model, optimizer, loss_fn, batch)   # loss_fn(model, batch) -> loss
    # facts: {"loss", "scale", "skipped", "found_inf", "grad_norm"}

| name               | parameters      | forward         | loss scale       | update             |
|--------------------|-----------------|-----------------|------------------|--------------------|
| `fp32`             | fp32            | fp32            | none             | fp32               |
| `amp-fp16`         | fp32 (masters)  | autocast fp16   | dynamic          | fp32               |
| `amp-fp16-noscale` | fp32 (masters)  | autocast fp16   | none             | fp32               |
| `amp-fp16-static`  | fp32 (masters)  | autocast fp16   | fixed (2^10)     | fp32               |
| `amp-bf16`         | fp32 (masters)  | autocast bf16   | none             | fp32               |
| `pure-fp16`        | fp16            | fp16            | none (or fixed)  | fp16, no master    |
| `o2-fp16`          | fp16 + masters  | fp16            | dynamic          | fp32, then rounded |
| `fp8`              | fp32 (masters)  | fp8 GEMMs, bf16 | per-tensor fp8   | fp32               |

The step follows torch's AMP recipe (docs/source/notes/amp_examples.md): forward and loss under
the recipe's autocast, `scaler.scale(loss).backward()`, `scaler.unscale_(opt)`, optional
`clip_grad_norm_`, `scaler.step(opt)`, `scaler.update()`, `opt.zero_grad()`.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .. import _state
from ..accumulate import check_model
from ..formats import bf16, fp16, fp32
from ..optim import MasterWeights, clip_grad_norm_
from ..tensor import Tensor
from .autocast import autocast
from .grad_scaler import GradScaler, StaticLossScaler

__all__ = ["Recipe", "RECIPES", "get_recipe", "recipe_names"]

_COMMON = {"accumulate": None, "clip_grad_norm": None}
_DYNAMIC = {"init_scale": 2.0**16, "growth_factor": 2.0, "backoff_factor": 0.5,
            "growth_interval": 2000}


class Recipe:
    """A precision recipe: how parameters are stored, how the forward runs, how the loss is
    scaled and how the update is applied. Subclasses set the class attributes below."""

    name = ""
    summary = ""
    model_fmt = fp32        # the format of the model's parameters after prepare()
    autocast_fmt = None     # the forward's autocast format (None: no autocast)
    master_weights = False  # fp32 master copies in the optimizer (MasterWeights)
    OPTIONS: dict = dict(_COMMON)

    def __init__(self, **options):
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            valid = ", ".join(sorted(self.OPTIONS)) or "none"
            raise ValueError(f"recipe {self.name!r}: unknown option(s) {', '.join(unknown)}; "
                             f"valid options: {valid}")
        self.options = {**self.OPTIONS, **options}
        if self.options["accumulate"] is not None:
            check_model(self.options["accumulate"], f"recipe {self.name!r}")
        clip = self.options["clip_grad_norm"]
        if clip is not None and (not isinstance(clip, (int, float)) or clip < 0):
            raise ValueError(f"recipe {self.name!r}: clip_grad_norm must be a number >= 0 "
                             f"(0 or None: off); got {clip!r}")
        self.scaler = self.make_scaler()  # validates the scaler options early
        self.optimizer = None

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items() if v != self.OPTIONS.get(k))
        return f"get_recipe({self.name!r}{', ' + opts if opts else ''})"

    # ---- building ----
    def make_scaler(self):
        """The loss scaler (None: the loss is not scaled)."""
        return None

    def prepare(self, model, optimizer_factory):
        """Put `model` into the recipe's formats (in place) and build the optimizer with
        `optimizer_factory(params)`; returns (model, optimizer, scaler or None)."""
        if self.model_fmt != fp32:
            model.to(self.model_fmt)
        params = list(model.parameters())
        if self.master_weights:
            optimizer = MasterWeights(params, optimizer_factory)
        else:
            optimizer = optimizer_factory(params)
        self.optimizer = optimizer
        self.scaler = self.make_scaler()
        return model, optimizer, self.scaler

    # ---- running ----
    def forward_context(self):
        """The context the forward pass (and loss) runs in: autocast, or the matmul
        accumulation model, or nothing."""
        acc = self.options["accumulate"]
        if self.autocast_fmt is not None:
            return autocast(self.autocast_fmt, accumulate=acc)
        if acc is not None:
            return _state.accumulation(acc)
        return contextlib.nullcontext()

    def cast_batch(self, batch):
        """For a half-precision model, float inputs become half (as Apex O2/O3 cast the
        model's inputs); integer targets and everything else pass unchanged."""
        if self.model_fmt == fp32:
            return batch
        fmt = self.model_fmt

        def cast(x):
            if isinstance(x, Tensor):
                if x.fmt.is_float and x.fmt != fmt:
                    return Tensor._make(x.backend.round(x.data, fmt), fmt, x.backend)
                return x
            if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating):
                return Tensor._from_data(x, fmt)
            if isinstance(x, (list, tuple)):
                return type(x)(cast(v) for v in x)
            if isinstance(x, dict):
                return {k: cast(v) for k, v in x.items()}
            return x

        return cast(batch)

    def step(self, model, optimizer, loss_fn, batch):
        """One training step; returns (loss Tensor, facts). facts: loss (float, unscaled),
        scale (the scale used, 1.0 without scaling), skipped, found_inf, grad_norm (None
        without clipping)."""
        loss, scale = self.forward_backward(model, loss_fn, batch)
        # Read before the update: on a GPU backend this waits for the backward only, and the
        # scaler's found-inf read in update() then costs no second wait for the device.
        value = float(loss.item())
        facts = self.update(optimizer)
        return loss, {"loss": value, "scale": scale, **facts}

    def forward_backward(self, model, loss_fn, batch):
        """The first half of `step`: forward and loss under the recipe's context, then the
        backward of the scaled loss. Returns (loss Tensor, the scale used). Data parallelism
        runs this once per rank's shard and combines the gradients before `update`."""
        scaler = self.scaler
        with self.forward_context():
            loss = loss_fn(model, self.cast_batch(batch))
        if not isinstance(loss, Tensor):
            raise TypeError(f"recipe {self.name!r}: loss_fn must return a Tensor, "
                            f"got {type(loss).__name__}")
        scale = scaler.get_scale() if scaler is not None else 1.0
        (scaler.scale(loss) if scaler is not None else loss).backward()
        return loss, scale

    def update(self, optimizer) -> dict:
        """The second half of `step`, on the gradients in place: unscale, clip, the optimizer's
        step (or its skip), the scaler's update, zero_grad. Returns {"skipped", "found_inf",
        "grad_norm"}."""
        scaler = self.scaler
        if scaler is not None:
            scaler.unscale_(optimizer)
        elif hasattr(optimizer, "prepare_grads"):
            optimizer.prepare_grads()
        grad_norm = None
        clip = self.options["clip_grad_norm"]
        if clip:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            grad_norm = clip_grad_norm_(params, clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
            found_inf, skipped = scaler.last_step["found_inf"], scaler.last_step["skipped"]
        else:
            found_inf, skipped = not _grads_finite(optimizer), False
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"skipped": skipped, "found_inf": found_inf, "grad_norm": grad_norm}

    def eval_loss(self, model, loss_fn, batch) -> float:
        """The loss of `batch` without gradients, in the recipe's forward precision."""
        with _state.no_grad(), self.forward_context():
            return float(loss_fn(model, self.cast_batch(batch)).item())

    # ---- checkpoints ----
    def state_dict(self) -> dict:
        """{"name", "scaler": the scaler's state_dict or None, "master": fp32 arrays or None}."""
        master = None
        if self.master_weights and self.optimizer is not None:
            master = self.optimizer.master_arrays()
        return {"name": self.name,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "master": master}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") not in (None, self.name):
            raise ValueError(f"recipe {self.name!r}: the checkpoint is of recipe {state['name']!r}")
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.master_weights and state.get("master") is not None:
            if self.optimizer is None:
                raise RuntimeError(f"recipe {self.name!r}: call prepare() before load_state_dict()")
            self.optimizer.load_master_arrays(state["master"], f"recipe {self.name!r}")


def _grads_finite(optimizer) -> bool:
    """No gradient holds an inf or NaN: one `all_finite` (one host synchronisation) per
    backend."""
    by_backend: dict[int, tuple] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                by_backend.setdefault(id(p.grad.backend), (p.grad.backend, []))[1].append(
                    p.grad.data)
    return all(be.all_finite(arrays) for be, arrays in by_backend.values())


class FP32(Recipe):
    name = "fp32"
    summary = "fp32 everywhere (the baseline)"


class AmpFP16(Recipe):
    name = "amp-fp16"
    summary = "autocast fp16, fp32 master weights, dynamic loss scaling (torch AMP)"
    autocast_fmt = fp16
    OPTIONS = {**_COMMON, **_DYNAMIC}

    def make_scaler(self):
        o = self.options
        return GradScaler(init_scale=o["init_scale"], growth_factor=o["growth_factor"],
                          backoff_factor=o["backoff_factor"], growth_interval=o["growth_interval"])


class AmpFP16NoScale(Recipe):
    name = "amp-fp16-noscale"
    summary = "autocast fp16, fp32 master weights, no loss scaling (gradients underflow)"
    autocast_fmt = fp16


class AmpFP16Static(Recipe):
    name = "amp-fp16-static"
    summary = "autocast fp16, fp32 master weights, a fixed loss scale (default 2^10)"
    autocast_fmt = fp16
    OPTIONS = {**_COMMON, "scale": 2.0**10}

    def make_scaler(self):
        return StaticLossScaler(self.options["scale"])


class AmpBF16(Recipe):
    name = "amp-bf16"
    summary = "autocast bf16, fp32 master weights, no loss scaling (bf16 has fp32's range)"
    autocast_fmt = bf16


class PureFP16(Recipe):
    name = "pure-fp16"
    summary = "fp16 parameters and fp16 updates, no master weights (small updates vanish)"
    model_fmt = fp16
    OPTIONS = {**_COMMON, "loss_scale": None}

    def make_scaler(self):
        scale = self.options["loss_scale"]
        return None if scale is None else StaticLossScaler(scale, allow_fp16=True)


class O2FP16(Recipe):
    name = "o2-fp16"
    summary = "fp16 model, fp32 master weights in the optimizer, dynamic loss scaling (Apex O2)"
    model_fmt = fp16
    master_weights = True
    OPTIONS = {**_COMMON, **_DYNAMIC}

    make_scaler = AmpFP16.make_scaler


class FP8(Recipe):
    """Transformer Engine's fp8 recipe (HYBRID format, delayed scaling), emulated: every linear
    layer's GEMMs take e4m3 inputs and weights and e5m2 output gradients, each scaled per tensor
    (`amp.fp8`), under the named accumulation model (default "sm90"); the other ops run under
    bf16 autocast; fp32 master weights; no loss scaling (the gradient casts are scaled)."""

    name = "fp8"
    summary = ("fp8 GEMMs (e4m3 forward, e5m2 gradients, per-tensor delayed scaling as in "
               "Transformer Engine), bf16 autocast elsewhere, fp32 master weights")
    autocast_fmt = bf16
    OPTIONS = {**_COMMON, "accumulate": "sm90", "margin": 0, "amax_history_len": 1024}

    def __init__(self, **options):
        super().__init__(**options)
        self.scaling = self._make_scaling()

    def _make_scaling(self):
        from .fp8 import DelayedScaling

        return DelayedScaling(margin=self.options["margin"],
                              amax_history_len=self.options["amax_history_len"])

    def prepare(self, model, optimizer_factory):
        self.scaling = self._make_scaling()
        return super().prepare(model, optimizer_factory)

    def forward_context(self):
        from .fp8 import fp8_autocast

        stack = contextlib.ExitStack()
        stack.enter_context(super().forward_context())
        stack.enter_context(fp8_autocast(self.scaling))
        return stack

    def step(self, model, optimizer, loss_fn, batch):
        loss, facts = super().step(model, optimizer, loss_fn, batch)
        self.scaling.update()
        return loss, facts

    def _params(self):
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["fp8"] = (self.scaling.state_dict(self._params()) if self.optimizer is not None
                        else {})
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state.get("fp8"):
            if self.optimizer is None:
                raise RuntimeError(f"recipe {self.name!r}: call prepare() before load_state_dict()")
            self.scaling.load_state_dict(state["fp8"], self._params())


_REGISTRY = {cls.name: cls for cls in (FP32, AmpFP16, AmpFP16NoScale, AmpFP16Static, AmpBF16,
                                       PureFP16, O2FP16, FP8)}
RECIPES = tuple(_REGISTRY)


def recipe_names() -> list[str]:
    return list(RECIPES)


def get_recipe(name: str, **options) -> Recipe:
    """A fresh recipe by name, with its options (see each recipe's OPTIONS)."""
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    return cls(**options)
