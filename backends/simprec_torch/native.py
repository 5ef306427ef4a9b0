"""The native peer run: a simprec recipe written by hand in plain torch.

`NativeRecipe(name, module, optimizer_factory)` trains a `torch.nn.Module` (usually
`to_torch(model)`) the way a torch user writes each simprec recipe (torch's
docs/source/notes/amp_examples.md; Apex O2 for `o2-fp16`):

| recipe             | torch                                                              |
|--------------------|--------------------------------------------------------------------|
| `fp32`             | forward, backward, (clip), step                                    |
| `amp-fp16`         | autocast(fp16) + GradScaler: scale, unscale_, clip, step, update   |
| `amp-fp16-noscale` | autocast(fp16), no scaler                                          |
| `amp-fp16-static`  | autocast(fp16) + GradScaler, `update(new_scale=scale)` each step   |
| `amp-bf16`         | autocast(bf16), no scaler                                          |
| `pure-fp16`        | `module.half()`, half inputs; a fixed loss scale unscaled by hand  |
| `o2-fp16`          | `module.half()`, fp32 masters own the optimizer, GradScaler on the |
|                    | masters, masters copied (rounded) into the model after each step   |

The step returns the same facts as `simprec.amp.Recipe.step` (loss, scale, skipped, found_inf,
grad_norm). `observe(grads)` sees every parameter's gradient just before `zero_grad`;
`trace=True` records every module's forward output (forward hooks), for finding the first layer
whose output differs from the simulator's. Nothing here runs a simprec kernel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .backend import _pin_gemm_settings

__all__ = ["RECIPES", "NativeRecipe", "native_optimizer", "pin_cuda_gemm_settings"]

RECIPES = ("fp32", "amp-fp16", "amp-fp16-noscale", "amp-fp16-static", "amp-bf16", "pure-fp16",
           "o2-fp16")
_AUTOCAST = {"amp-fp16": torch.float16, "amp-fp16-noscale": torch.float16,
             "amp-fp16-static": torch.float16, "amp-bf16": torch.bfloat16}
_DYNAMIC = {"init_scale": 2.0**16, "growth_factor": 2.0, "backoff_factor": 0.5,
            "growth_interval": 2000}


def pin_cuda_gemm_settings() -> dict:
    """Turn off what the reference's tensor-core model does not describe: fp16/bf16 reduced-
    precision (split-K) reductions and TF32 for fp32 GEMMs (torch's defaults allow the first).
    Process-wide, as the torch backend sets them; returns the previous settings."""
    matmul = torch.backends.cuda.matmul
    before = {"allow_fp16_reduced_precision_reduction":
              matmul.allow_fp16_reduced_precision_reduction,
              "allow_bf16_reduced_precision_reduction":
              matmul.allow_bf16_reduced_precision_reduction,
              "allow_tf32": matmul.allow_tf32}
    _pin_gemm_settings()
    return before


def native_optimizer(params, name: str, *, lr: float, momentum: float = 0.0,
                     weight_decay: float = 0.0, foreach: bool | None = True):
    """torch's SGD / Adam / AdamW with simprec's trainer settings. `foreach=True` (the default)
    runs torch's multi-tensor path, the one simprec's optimizers take by default (torch's default
    for CUDA parameters; simprec.optim._kernels.resolve_path): with `foreach=False` the native
    run took the single-tensor path, whose AdamW arithmetic differs (a multiply by the host
    reciprocal of sqrt(bc2) where foreach divides), so `simprec parity --against native` departed
    in the first AdamW update. None lets torch pick (foreach on CUDA, single-tensor on the CPU)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               foreach=foreach)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=foreach)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=foreach)
    raise ValueError(f"native_optimizer: unknown optimizer {name!r} (sgd, adam, adamw)")


class NativeRecipe:
    """One simprec recipe in hand-written torch; see the module docstring.

    `optimizer_factory(params)` builds the torch optimizer (over the masters for `o2-fp16`).
    `options` are the simprec recipe's: init_scale, growth_factor, backoff_factor,
    growth_interval (dynamic scaling), scale (`amp-fp16-static`), loss_scale (`pure-fp16`),
    clip_grad_norm; `accumulate` is accepted and ignored (the hardware accumulates as it does).
    `lm=True`: the loss is cross_entropy over (B*T, V) logits of token ids.
    """

    def __init__(self, name: str, module: torch.nn.Module, optimizer_factory: Callable, *,
                 lm: bool = False, **options):
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; native recipes: {', '.join(RECIPES)}")
        self.name, self.module, self.lm = name, module, lm
        self.options = {**_DYNAMIC, "scale": 2.0**10, "loss_scale": None,
                        "clip_grad_norm": None, **options}
        self.options.pop("accumulate", None)
        self.device = next(module.parameters()).device
        self.autocast_dtype = _AUTOCAST.get(name)
        self.half_model = name in ("pure-fp16", "o2-fp16")
        if self.half_model:
            module.half()
        self.params = list(module.parameters())
        self.masters = None
        if name == "o2-fp16":
            self.masters = [p.detach().float().clone().requires_grad_(True) for p in self.params]
            self.optimizer = optimizer_factory(self.masters)
        else:
            self.optimizer = optimizer_factory(self.params)
        self.scaler = self._make_scaler()
        self.outputs: list[tuple[str, str, torch.Tensor]] = []
        self._hooks = []

    def _make_scaler(self):
        o, dev = self.options, self.device.type
        if self.name in ("amp-fp16", "o2-fp16"):
            return torch.amp.GradScaler(dev, init_scale=o["init_scale"],
                                        growth_factor=o["growth_factor"],
                                        backoff_factor=o["backoff_factor"],
                                        growth_interval=o["growth_interval"])
        if self.name == "amp-fp16-static":
            return torch.amp.GradScaler(dev, init_scale=o["scale"])
        return None

    # ---- the forward trace (module outputs, for the first layer that differs) ----
    def trace(self, on: bool = True) -> None:
        """Record every module's forward output in `self.outputs` (path, class name, tensor)
        from now on."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        if not on:
            return
        for path, m in self.module.named_modules():
            self._hooks.append(m.register_forward_hook(self._recorder(path)))

    def _recorder(self, path):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor) and output.is_floating_point():
                self.outputs.append((path, type(module).__name__, output.detach().clone()))
        return hook

    # ---- one step ----
    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def loss(self, x, y):
        out = self.module(x)
        if self.lm:
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        return F.cross_entropy(out, y)

    def _inputs(self, x, y):
        x = torch.as_tensor(x).to(self.device)
        y = torch.as_tensor(y).to(self.device)
        if self.half_model and x.is_floating_point():
            x = x.half()  # as simprec's Recipe.cast_batch (Apex O2/O3 cast the inputs)
        return x, y

    def step(self, x, y, observe: Callable | None = None) -> dict:
        """One training step on the batch (x, y) (host arrays or tensors); the facts of
        `simprec.amp.Recipe.step`. `observe(named_grads)` is called before `zero_grad`."""
        self.outputs = []
        x, y = self._inputs(x, y)
        dev = self.device.type
        if self.autocast_dtype is not None:
            ctx = torch.autocast(dev, dtype=self.autocast_dtype)
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            loss = self.loss(x, y)
        scaler = self.scaler
        static = self.options["loss_scale"] if self.name == "pure-fp16" else None
        scale = 1.0
        if scaler is not None:
            scale = float(scaler.get_scale())
            scaler.scale(loss).backward()
        elif static is not None:
            scale = float(static)
            (loss * scale).backward()
        else:
            loss.backward()
        if self.masters is not None:  # O2: fp16 gradients copied (exactly) into the masters
            for p, m in zip(self.params, self.masters, strict=True):
                m.grad = None if p.grad is None else p.grad.float()
        stepped = self.masters if self.masters is not None else self.params
        found_inf = skipped = False
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        elif static is not None:  # a fixed scale on fp16 gradients: torch's scaler refuses them
            found_inf = not _all_finite(stepped)
            inv = 1.0 / scale  # float32(1 / float64(scale)) inside the kernel, as unscale_
            for p in stepped:
                if p.grad is not None:
                    p.grad.mul_(inv)
        grad_norm = None
        clip = self.options["clip_grad_norm"]
        if clip:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(stepped, clip))
        if scaler is not None:
            found_inf = bool(sum(float(v.item()) for v in
                                 scaler._found_inf_per_device(self.optimizer).values()))
            scaler.step(self.optimizer)
            skipped = found_inf
            if self.name == "amp-fp16-static":
                scaler.update(new_scale=float(self.options["scale"]))
            else:
                scaler.update()
        elif static is not None:
            skipped = found_inf
            if not skipped:
                self.optimizer.step()
        else:
            found_inf = not _all_finite(stepped)
            self.optimizer.step()
        if self.masters is not None:  # the masters rounded once into the fp16 model
            with torch.no_grad():
                for p, m in zip(self.params, self.masters, strict=True):
                    p.copy_(m)
        if observe is not None:
            names = [n for n, _ in self.module.named_parameters()]
            observe({n: p.grad for n, p in zip(names, self.params, strict=True)})
        self.optimizer.zero_grad(set_to_none=True)
        self.module.zero_grad(set_to_none=True)
        return {"loss": float(loss.item()), "scale": scale, "skipped": bool(skipped),
                "found_inf": bool(found_inf), "grad_norm": grad_norm}


def _all_finite(params) -> bool:
    return all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)


def default_device(backend: str) -> str:
    """The device of the native run next to simprec backend `backend`: a torch backend's own
    device, else CUDA where torch sees one, else the CPU."""
    prefix, _, device = backend.partition(":")
    if prefix == "torch" and device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_problem(device: str) -> str | None:
    """Why the native run cannot use `device` (None when it can)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        return f"--native-device {device}: torch {torch.__version__} sees no CUDA GPU"
    if not (device == "cpu" or device.startswith("cuda")):
        return f"--native-device {device!r}: give cpu, cuda or cuda:N"
    return None

