"""Cross-backend parity: one training run on two backends (or a backend and native torch), held
against each other step by step.

`run_parity(config, backends=("numpy", "torch:cuda"), steps=N)` builds the run of `config` (a
`simprec.train.TrainConfig`: model, recipe, optimizer, schedule, seed) once per backend, from the
same initial weights (the model is built on NumPy from the seed, then moved), the same batches and
the same learning rates, and runs the steps in lockstep. After each step it compares:

- the loss (fp32 bits) and the loss scale, skipped steps;
- every parameter's gradient, just before `zero_grad` (unscaled and clipped, as the optimizer saw
  it), and every parameter after the step: bit-identical element counts and the largest distance
  in units in the last place of the tensor's format (fp16, bf16, fp32);
- the first op and tensor that differ. Between two simprec backends every rounding the autograd
  makes (`simprec.hooks` events: op, kind, module, parameter name, format) is recorded on both
  sides, in order, until the first step that differs; the first event whose bits differ is that
  op's output. Against native torch (`against="native"`, the network through
  `simprec_torch.interop.to_torch` under hand-written torch AMP, `simprec_torch.native`) the
  ops are torch's own, so the comparison is per layer: every module's forward output (simprec:
  each module's `forward` is wrapped; torch: forward hooks), in the order torch ran them.

Exact arithmetic makes every count bit-identical between two correct backends of the same model;
against native torch on a CPU, differences are expected (torch's CPU kernels are not the GPU
kernels simprec models) and the report says where they start. `format_report` prints the table;
`ParityReport.as_dict` is the JSON. The core never imports torch: the native runner is found in
the `simprec_torch` plugin (backends/), like the torch backend itself.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import ml_dtypes
import numpy as np

from . import hooks

__all__ = ["ArrayDiff", "ParityReport", "StepResult", "compare_arrays", "format_report",
           "run_parity", "ulp_distance"]

_VIEWS = {"fp16": (np.float16, np.int16, 0x7FFF), "bf16": (ml_dtypes.bfloat16, np.int16, 0x7FFF),
          "fp32": (np.float32, np.int32, 0x7FFFFFFF)}


# ------------------------------------------------------------------------------ comparing arrays


def _ordered(x: np.ndarray, fmt: str) -> np.ndarray:
    """Integers that count representable values of `fmt`: consecutive values differ by one (the
    sign-magnitude bit pattern folded onto a line; +0 and -0 both map to 0)."""
    dtype, itype, mask = _VIEWS.get(fmt, _VIEWS["fp32"])
    bits = np.asarray(x, np.float32).astype(dtype).view(itype).astype(np.int64)
    return np.where(bits < 0, -(bits & mask), bits)


def ulp_distance(a, b, fmt: str = "fp32") -> np.ndarray:
    """|a - b| in units in the last place of `fmt` ("fp16", "bf16"; any other name: fp32), per
    element, for values exact in `fmt`; a NaN against a number is a distance of 2**62."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    dist = np.abs(_ordered(a, fmt) - _ordered(b, fmt))
    na, nb = np.isnan(a), np.isnan(b)
    dist[na & nb] = 0
    dist[na ^ nb] = 2**62
    return dist


@dataclass
class ArrayDiff:
    """Two arrays compared: `differing` of `compared` elements have other bits (NaN compared by
    NaN-ness), the largest distance is `max_ulp` units in the last place of `fmt`, and
    `max_rel` = max |a - b| / max |a| over the finite elements (a normwise relative difference:
    ulps near zero count many values a small difference crosses)."""

    compared: int
    differing: int
    max_ulp: int
    fmt: str = "fp32"
    max_rel: float = 0.0

    @property
    def identical(self) -> bool:
        return self.differing == 0


def compare_arrays(a, b, fmt: str = "fp32") -> ArrayDiff:
    """Bit-for-bit comparison of two arrays of values exact in `fmt` (shapes must agree)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.shape != b.shape:
        raise ValueError(f"compare_arrays: shapes {a.shape} and {b.shape} differ")
    if fmt not in _VIEWS:
        fmt = "fp32"
    same = a.view(np.uint32) == b.view(np.uint32)
    same |= np.isnan(a) & np.isnan(b)
    differing = int(a.size - np.count_nonzero(same))
    if not differing:
        return ArrayDiff(int(a.size), 0, 0, fmt)
    max_ulp = int(ulp_distance(a, b, fmt).max())
    finite = np.isfinite(a) & np.isfinite(b)
    scale = float(np.abs(a[finite]).max()) if finite.any() else 0.0
    delta = float(np.abs(a[finite] - b[finite]).max()) if finite.any() else 0.0
    max_rel = delta / scale if scale > 0 else (0.0 if delta == 0 else float("inf"))
    return ArrayDiff(int(a.size), differing, max_ulp, fmt, max_rel)


def _total(diffs) -> ArrayDiff:
    diffs = list(diffs)
    return ArrayDiff(sum(d.compared for d in diffs), sum(d.differing for d in diffs),
                     max((d.max_ulp for d in diffs), default=0), "fp32",
                     max((d.max_rel for d in diffs), default=0.0))


# ------------------------------------------------------------------------------ what a run records


class OpTrace:
    """A `simprec.hooks` observer keeping a host copy of every rounded value of a step, in order:
    (op, kind, module, parameter name, format name, array)."""

    def __init__(self):
        self.events: list[tuple] = []

    def on_round(self, event: dict) -> None:
        rounded = event.get("rounded")
        fmt = event.get("fmt")
        if rounded is None or fmt is None or not getattr(fmt, "is_float", False):
            return
        backend = event.get("backend")
        host = backend.to_numpy(rounded) if backend is not None else rounded
        self.events.append((event.get("op"), event.get("kind"), event.get("module") or "",
                            event.get("name"), fmt.name, np.array(host, np.float32, copy=True)))

    def __enter__(self):
        hooks.observers.append(self)
        return self

    def __exit__(self, *exc):
        hooks.observers.remove(self)


class ModuleOutputs:
    """Every simprec module's forward output of a step, in the order the forwards returned
    (the counterpart of torch's forward hooks): (module path, class name, format name, array)."""

    def __init__(self, model):
        self.model = model
        self.outputs: list[tuple] = []

    def __enter__(self):
        for path, module in self.model.named_modules():
            object.__setattr__(module, "forward", self._wrapped(path, module.forward))
        return self

    def __exit__(self, *exc):
        for _, module in self.model.named_modules():
            module.__dict__.pop("forward", None)

    def _wrapped(self, path, forward):
        from .tensor import Tensor

        kind = type(forward.__self__).__name__
        def run(*args, **kwargs):
            out = forward(*args, **kwargs)
            if isinstance(out, Tensor) and out.fmt.is_float:
                self.outputs.append((path, kind, out.fmt.name, out.numpy().astype(np.float32)))
            return out
        return run


@dataclass
class _Record:
    """What one side of the comparison produced in one step."""

    loss: float
    scale: float
    skipped: bool
    grads: dict          # name -> (format name, host float32 array) or None
    params: dict         # name -> (format name, host float32 array)
    trace: list | None   # OpTrace events, or module outputs (native comparisons)


class _SimprecSide:
    """A simprec training run (simprec.train.Trainer's model, recipe, optimizer, schedule and
    batches) stepped one step at a time on a backend."""

    def __init__(self, config, backend: str):
        from .train import Trainer

        self.name = backend
        self._tmp = tempfile.TemporaryDirectory(prefix="simprec-parity-")
        self.trainer = Trainer(config.replace(backend=backend),
                               out=Path(self._tmp.name) / "run", quiet=True)
        self.loss_fn = self.trainer._loss_fn()
        self.model = self.trainer.model
        self.names = [n for n, _ in self.model.named_parameters()]

    def step(self, trace: str | None) -> _Record:
        tr = self.trainer
        batch = tr._next_batch()
        grads: dict = {}
        optimizer = tr.optimizer
        zero_grad = optimizer.zero_grad

        def snapshot(*args, **kwargs):
            for name, p in self.model.named_parameters():
                grads[name] = None if p.grad is None else (p.grad.fmt.name, p.grad.numpy())
            return zero_grad(*args, **kwargs)

        optimizer.zero_grad = snapshot
        recorder = (OpTrace() if trace == "ops" else
                    ModuleOutputs(self.model) if trace == "modules" else None)
        try:
            if recorder is not None:
                with recorder:
                    _, facts = tr.recipe.step(self.model, optimizer, self.loss_fn, batch)
            else:
                _, facts = tr.recipe.step(self.model, optimizer, self.loss_fn, batch)
        finally:
            del optimizer.zero_grad
        if tr.scheduler is not None:
            tr.scheduler.step()
        params = {n: (p.fmt.name, p.numpy()) for n, p in self.model.named_parameters()}
        events = None
        if isinstance(recorder, OpTrace):
            events = recorder.events
        elif isinstance(recorder, ModuleOutputs):
            events = recorder.outputs
        return _Record(float(np.float32(facts["loss"])), float(facts["scale"]),
                       bool(facts["skipped"]), grads, params, events)

    def close(self):
        self._tmp.cleanup()


def _plugin(module: str):
    """A module of the simprec_torch plugin, installed or in the checkout's backends/ folder
    (found as the backend registry finds the backends)."""
    import sys

    from .backend import _import_factory

    return sys.modules[_import_factory(f"{module}:__name__")]


class _NativeSide:
    """The same run in hand-written torch: the NumPy run's initial weights through `to_torch`,
    its batches and learning rates, `simprec_torch.native.NativeRecipe`."""

    def __init__(self, config, device: str, attention: str = "explicit"):
        from .train import Trainer

        native, interop = _plugin("simprec_torch.native"), _plugin("simprec_torch.interop")
        self.name = f"native torch ({device}, {attention} attention)"
        self._tmp = tempfile.TemporaryDirectory(prefix="simprec-parity-")
        # The reference's own run supplies weights, batches and learning rates, and is not
        # stepped: its scheduler only counts.
        self.trainer = tr = Trainer(config.replace(backend="numpy"),
                                    out=Path(self._tmp.name) / "run", quiet=True)
        cfg = tr.config
        if device.startswith("cuda"):
            native.pin_cuda_gemm_settings()  # the GEMM settings the reference models
        module = interop.to_torch(tr.model, attention=attention, device=device)
        self.names = [n for n, _ in module.named_parameters()]

        def make_optimizer(params):
            return native.native_optimizer(params, cfg.optimizer, lr=cfg.lr,
                                           momentum=cfg.momentum or 0.0,
                                           weight_decay=cfg.weight_decay or 0.0)

        options = dict(cfg.recipe_options)
        if cfg.clip_grad_norm:
            options["clip_grad_norm"] = cfg.clip_grad_norm
        self.recipe = native.NativeRecipe(cfg.recipe, module, make_optimizer,
                                          lm=tr.is_text, **options)

    def step(self, trace: str | None) -> _Record:
        tr = self.trainer
        x, y = tr.stream.next_batch()
        self.recipe.set_lr(float(tr.optimizer.param_groups[0]["lr"]))
        self.recipe.trace(trace is not None)
        grads: dict = {}

        def observe(named):
            for name, g in named.items():
                grads[name] = None if g is None else (_dtype_name(g), _host(g))

        facts = self.recipe.step(x, y, observe=observe)
        if tr.scheduler is not None:
            tr.scheduler.step()
        params = {n: (_dtype_name(p), _host(p)) for n, p in
                  self.recipe.module.named_parameters()}
        outputs = None
        if trace is not None:
            outputs = [(path, kind, _dtype_name(t), _host(t))
                       for path, kind, t in self.recipe.outputs]
        return _Record(float(np.float32(facts["loss"])), float(facts["scale"]),
                       bool(facts["skipped"]), grads, params, outputs)

    def close(self):
        self._tmp.cleanup()


def _dtype_name(t) -> str:
    return {"torch.float16": "fp16", "torch.bfloat16": "bf16"}.get(str(t.dtype), "fp32")


def _host(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()


# ------------------------------------------------------------------------------ comparing steps


@dataclass
class FirstDifference:
    """The first recorded value that differs: an op's output (simprec against simprec) or a
    layer's forward output (against native torch)."""

    step: int
    index: int
    op: str
    kind: str
    module: str
    name: str | None
    fmt: str
    diff: ArrayDiff | None   # None when the two runs ran different ops here
    note: str = ""

    def describe(self) -> str:
        where = f"module {self.module!r}" if self.module else "outside any module"
        what = f"{self.op} ({self.kind}, {where}" + (f", {self.name}" if self.name else "") + ")"
        if self.diff is None:
            return f"step {self.step}, event {self.index}: {self.note}"
        return (f"step {self.step}, {'op' if self.kind != 'output' else 'layer'} #{self.index}: "
                f"{what} in {self.fmt}: {self.diff.differing:,} of {self.diff.compared:,} "
                f"elements differ, max {self.diff.max_ulp} ulp")

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("step", "index", "op", "kind", "module", "name",
                                            "fmt", "note")}
        d["differing"] = self.diff.differing if self.diff else None
        d["compared"] = self.diff.compared if self.diff else None
        d["max_ulp"] = self.diff.max_ulp if self.diff else None
        d["max_rel"] = self.diff.max_rel if self.diff else None
        return d


def _first_op_difference(step: int, a: list, b: list) -> FirstDifference | None:
    for i, (ea, eb) in enumerate(zip(a, b, strict=False)):
        if ea[:5] != eb[:5] or ea[5].shape != eb[5].shape:
            return FirstDifference(step, i, ea[0], ea[1], ea[2], ea[3], ea[4], None,
                                   f"the runs part: {ea[0]} ({ea[1]}, {ea[2]!r}) against "
                                   f"{eb[0]} ({eb[1]}, {eb[2]!r})")
        diff = compare_arrays(ea[5], eb[5], ea[4])
        if not diff.identical:
            return FirstDifference(step, i, ea[0], ea[1], ea[2], ea[3], ea[4], diff)
    if len(a) != len(b):
        return FirstDifference(step, min(len(a), len(b)), "", "", "", None, "", None,
                               f"one run rounded {len(a)} values, the other {len(b)}")
    return None


def _first_module_difference(step: int, ours: list, theirs: list) -> FirstDifference | None:
    """Module outputs: for each layer in the order torch ran them, the simprec output of the
    same module path (the n-th call of that path)."""
    seen: dict[str, int] = {}
    by_path: dict[str, list] = {}
    for path, kind, fmt, array in ours:
        by_path.setdefault(path, []).append((kind, fmt, array))
    for i, (path, _, fmt, array) in enumerate(theirs):
        n = seen.get(path, 0)
        seen[path] = n + 1
        mine = by_path.get(path, [])
        if n >= len(mine):
            continue  # a layer simprec runs without a Module call of its own
        my_kind, my_fmt, my_array = mine[n]
        if my_array.shape != array.shape:
            return FirstDifference(step, i, my_kind, "output", path, None, my_fmt,
                                   None, f"layer {path!r}: shapes {my_array.shape} and "
                                         f"{array.shape}")
        diff = compare_arrays(my_array, array, my_fmt)
        note = "" if my_fmt == fmt else f"dtypes {my_fmt} and {fmt}"
        if not diff.identical or note:
            return FirstDifference(step, i, my_kind, "output", path, None, my_fmt, diff, note)
    return None


def _compare_named(a: dict, b: dict) -> tuple[ArrayDiff, dict]:
    per = {}
    for name, ga in a.items():
        gb = b.get(name)
        if ga is None and gb is None:
            continue
        if ga is None or gb is None:
            size = (ga or gb)[1].size
            per[name] = ArrayDiff(size, size, 2**62, (ga or gb)[0])
            continue
        per[name] = compare_arrays(ga[1], gb[1], ga[0])
    return _total(per.values()), per


@dataclass
class StepResult:
    step: int
    loss: tuple[float, float]
    scale: tuple[float, float]
    skipped: tuple[bool, bool]
    grads: ArrayDiff
    params: ArrayDiff
    grad_tensors: dict
    param_tensors: dict
    first: FirstDifference | None = None

    @property
    def loss_ulp(self) -> int:
        return int(ulp_distance([self.loss[0]], [self.loss[1]], "fp32")[0])

    @property
    def same_loss(self) -> bool:
        """The two losses have the same bits, or are both NaN (NaN is compared by NaN-ness, as
        in the gradients and parameters: a diverged run on both sides is the same run)."""
        a, b = np.float32(self.loss[0]), np.float32(self.loss[1])
        return a.tobytes() == b.tobytes() or bool(np.isnan(a) and np.isnan(b))

    @property
    def identical(self) -> bool:
        return (self.same_loss
                and self.scale[0] == self.scale[1] and self.skipped[0] == self.skipped[1]
                and self.grads.identical and self.params.identical)

    def as_dict(self) -> dict:
        def d(x: ArrayDiff):
            return {"compared": x.compared, "differing": x.differing, "max_ulp": x.max_ulp,
                    "max_rel": x.max_rel}
        return {"step": self.step, "loss": list(self.loss), "loss_ulp": self.loss_ulp,
                "scale": list(self.scale), "skipped": list(self.skipped),
                "grads": d(self.grads), "params": d(self.params),
                "differing_grads": {k: d(v) for k, v in self.grad_tensors.items()
                                    if not v.identical},
                "differing_params": {k: d(v) for k, v in self.param_tensors.items()
                                     if not v.identical},
                "first_difference": self.first.as_dict() if self.first else None,
                "identical": self.identical}


@dataclass
class ParityReport:
    sides: tuple[str, str]
    config: dict
    trace: str
    steps: list[StepResult] = field(default_factory=list)
    first: FirstDifference | None = None
    seconds: float = 0.0

    @property
    def identical(self) -> bool:
        return all(s.identical for s in self.steps)

    def as_dict(self) -> dict:
        final = self.steps[-1] if self.steps else None
        return {"sides": list(self.sides), "config": self.config, "trace": self.trace,
                "steps": [s.as_dict() for s in self.steps],
                "summary": {
                    "steps": len(self.steps),
                    "identical_steps": sum(s.identical for s in self.steps),
                    "identical_losses": sum(s.same_loss for s in self.steps),
                    "identical_scales": sum(s.scale[0] == s.scale[1] for s in self.steps),
                    "max_loss_ulp": max((s.loss_ulp for s in self.steps), default=0),
                    "final_params": (None if final is None else
                                     {"compared": final.params.compared,
                                      "differing": final.params.differing,
                                      "max_ulp": final.params.max_ulp,
                                      "max_rel": final.params.max_rel}),
                    "first_difference": self.first.as_dict() if self.first else None,
                    "identical": self.identical},
                "seconds": round(self.seconds, 3)}


# ------------------------------------------------------------------------------ the run


def native_device(backend: str) -> str:
    """The device of the native run next to `backend`: a torch backend's own device, else CUDA
    where torch sees one, else the CPU (the CPU too where torch is not installed)."""
    try:
        native = _plugin("simprec_torch.native")
    except ImportError:
        return "cpu"
    return native.default_device(backend)


def run_parity(config, backends=("numpy", "numpy"), *, steps: int | None = None,
               against: str | None = None, native_device_name: str | None = None,
               attention: str = "explicit", trace: bool = True, on_step=None) -> ParityReport:
    """Run `config` (a TrainConfig) on two backends, or on `backends[0]` and native torch
    (`against="native"`), in lockstep for `steps` steps (default: the config's), comparing after
    each step; `on_step(StepResult)` sees each step as it completes. `trace=False` skips the op /
    layer recording (faster; no first difference is named)."""
    import time

    from .train.loop import blas_threads

    config = config.replace(steps=steps) if steps is not None else config
    start = time.perf_counter()
    if against not in (None, "native"):
        raise ValueError(f"against must be None or 'native', got {against!r}")
    if against == "native":
        if len(backends) != 1:
            raise ValueError("--against native compares one backend with native torch: "
                             "give one backend")
        device = native_device_name or native_device(backends[0])
        side_a = _SimprecSide(config, backends[0])
        side_b = _NativeSide(config, device, attention)
        kind = "modules"
    else:
        if len(backends) != 2:
            raise ValueError(f"parity compares two backends, got {len(backends)}")
        side_a, side_b = _SimprecSide(config, backends[0]), _SimprecSide(config, backends[1])
        kind = "ops"
    cfg = side_a.trainer.config
    report = ParityReport((side_a.name, side_b.name),
                          {"model": cfg.model, "recipe": cfg.recipe, "steps": cfg.steps,
                           "seed": cfg.seed, "accumulate": cfg.accumulate,
                           "optimizer": cfg.optimizer, "batch_size": cfg.batch_size,
                           "attention": attention if against == "native" else None},
                          kind if trace else "off")
    try:
        errstate = np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")
        with blas_threads(cfg.threads), errstate:
            for step in range(1, cfg.steps + 1):
                tracing = trace and report.first is None
                ra = side_a.step(kind if tracing else None)
                rb = side_b.step(kind if tracing else None)
                grads, grad_tensors = _compare_named(ra.grads, rb.grads)
                params, param_tensors = _compare_named(ra.params, rb.params)
                result = StepResult(step, (ra.loss, rb.loss), (ra.scale, rb.scale),
                                    (ra.skipped, rb.skipped), grads, params, grad_tensors,
                                    param_tensors)
                if tracing:
                    find = _first_op_difference if kind == "ops" else _first_module_difference
                    result.first = find(step, ra.trace, rb.trace)
                    if result.first is None and not result.identical:
                        result.first = _first_tensor_difference(result)
                    report.first = result.first
                report.steps.append(result)
                if on_step is not None:
                    on_step(result)
    finally:
        side_a.close()
        side_b.close()
    report.seconds = time.perf_counter() - start
    return report


def _first_tensor_difference(result: StepResult) -> FirstDifference:
    """No recorded op differs but the step does: name the first gradient, parameter or fact."""
    for kind, tensors in (("gradient", result.grad_tensors), ("parameter", result.param_tensors)):
        for name, diff in tensors.items():
            if not diff.identical:
                return FirstDifference(result.step, -1, kind, kind, "", name, diff.fmt, diff,
                                       "no recorded op differs")
    return FirstDifference(result.step, -1, "step", "facts", "", None, "fp32", None,
                           f"loss {result.loss[0]!r} / {result.loss[1]!r}, scale "
                           f"{result.scale[0]!r} / {result.scale[1]!r}, skipped "
                           f"{result.skipped[0]} / {result.skipped[1]}")


# ------------------------------------------------------------------------------ the table

COLUMNS = (("step", 5, ">"), ("loss A", 12, ">"), ("loss B", 12, ">"), ("ulp", 6, ">"),
           ("scale A/B", 11, ">"), ("grads same", 19, ">"), ("ulp", 10, ">"),
           ("params same", 19, ">"), ("ulp", 10, ">"))


def _cell(value, width, align) -> str:
    return f"{value:{align}{width}}"


def format_header() -> list[str]:
    head = "  ".join(_cell(n, w, a) for n, w, a in COLUMNS) + "  first difference"
    rule = "  ".join("-" * w for _, w, _ in COLUMNS) + "  " + "-" * 16
    return [head, rule]


def _ulp_text(n: int) -> str:
    return "nan" if n >= 2**62 else str(n)


def format_step(s: StepResult) -> str:
    same_loss = s.same_loss
    scale = (f"{s.scale[0]:g}" if s.scale[0] == s.scale[1]
             else f"{s.scale[0]:g}/{s.scale[1]:g}")
    if s.skipped[0] or s.skipped[1]:
        scale += " skip" if s.skipped[0] == s.skipped[1] else " SKIP?"
    cells = (s.step, f"{s.loss[0]:.7g}", "=" if same_loss else f"{s.loss[1]:.7g}",
             _ulp_text(s.loss_ulp), scale,
             f"{s.grads.compared - s.grads.differing:,}/{s.grads.compared:,}",
             _ulp_text(s.grads.max_ulp),
             f"{s.params.compared - s.params.differing:,}/{s.params.compared:,}",
             _ulp_text(s.params.max_ulp))
    line = "  ".join(_cell(c, w, a) for c, (_, w, a) in zip(cells, COLUMNS, strict=True))
    if s.first is not None:
        line += "  " + s.first.describe().split(", ", 1)[1]
    return line.rstrip()


def format_summary(report: ParityReport) -> list[str]:
    d = report.as_dict()["summary"]
    a, b = report.sides
    n = d["steps"]
    lines = [f"A = {a}, B = {b}",
             f"identical steps: {d['identical_steps']} of {n}; losses {d['identical_losses']} "
             f"of {n} (max {_ulp_text(d['max_loss_ulp'])} ulp); scales "
             f"{d['identical_scales']} of {n}"]
    if d["final_params"]:
        fp = d["final_params"]
        lines.append(f"final parameters: {fp['compared'] - fp['differing']:,} of "
                     f"{fp['compared']:,} bit-identical (max {_ulp_text(fp['max_ulp'])} ulp, "
                     f"max relative difference {fp['max_rel']:.2g})")
    if report.first is not None:
        lines.append(f"first difference: {report.first.describe()}")
        step = report.steps[report.first.step - 1]
        worst = sorted(((k, v) for k, v in step.grad_tensors.items() if not v.identical),
                       key=lambda kv: -kv[1].differing)[:5]
        if worst:
            lines.append("  its step's differing gradients: " + ", ".join(
                f"{k} {v.differing:,}/{v.compared:,} (rel {v.max_rel:.2g})"
                for k, v in worst))
    elif report.trace == "off" and not report.identical:
        lines.append("first difference: not traced (--no-trace)")
    lines.append("verdict: " + ("bit-identical" if report.identical else "DIFFERS"))
    return lines


def format_report(report: ParityReport) -> str:
    """The whole table: header, a row per step, the summary lines."""
    return "\n".join([*format_header(), *map(format_step, report.steps), "",
                      *format_summary(report)])
