"""Replay a captured native torch AMP run on the NumPy reference and find where the two depart.

A capture is one npz file written by `simprec_capture.py` (simprec/tools/, handed out by
`simprec capture --write-tool`), with no pickled objects: a JSON string under the key `meta`
(`CAPTURE_FORMAT`, versions, the recipe, optimizer, scaler, clip, the network's structure, what
was recorded) and exact bit patterns (fp32 as uint32, fp16/bf16 as uint16):

    init__{param} final__{param}     parameters before step 0 and after the last step
    batch_x batch_y                  every step's inputs and targets, stacked
    lr                               (steps, groups) float64: each group's learning rate
    loss scale scale_after           (steps,) fp32 bits: the loss, the loss scale used, after update
    grad_norm                        (steps,) fp32 bits: clip_grad_norm_'s return (with clipping)
    grad_raw__{s}__{param}           step s's .grad right after backward (times the loss scale)
    grad__{s}__{param}               step s's .grad as the optimizer used it (unscaled, clipped)
    weight__{s}__{param}             the parameters after step s
    out__{s}__{module}               step s's forward output of each module (first `output_rows`
                                     batch rows where the output is batched)

`replay(capture, model)` rebuilds the recipe (autocast format, sm90 tensor-core GEMMs), the
optimizer on the same CUDA path (single-tensor, foreach or fused, as torch picked it), the
GradScaler and clip_grad_norm_, steps the model over the same batches and learning rates, and
compares every recorded value bit for bit. The `ReplayReport` says whether the whole run is
bit-identical, or the first step and tensor where it departs, and (where the capture recorded
module outputs for that step) the first module whose forward output differs.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field

import numpy as np

from . import amp, optim
from .formats import bf16, fp16, fp32, int64
from .nn import functional as F
from .tensor import Tensor

__all__ = ["CAPTURE_FORMAT", "CAPTURE_VERSION", "Capture", "CaptureError", "Departure",
           "ReplayReport", "build_model", "capture_summary", "format_report", "load_capture",
           "replay"]

CAPTURE_FORMAT = "simprec-capture"
CAPTURE_VERSION = 1
_FORMATS = {"fp32": fp32, "fp16": fp16, "bf16": bf16, "float32": fp32, "float16": fp16,
            "bfloat16": bf16}


class CaptureError(ValueError):
    """A capture simprec cannot replay (bad file, unknown version, missing network): the
    message is one line for the user."""


def _values(bits: np.ndarray, fmt: str = "fp32") -> np.ndarray:
    """fp32 values of stored bit patterns (uint32: fp32; uint16: fp16 or bf16 per `fmt`)."""
    bits = np.asarray(bits)
    if bits.dtype == np.uint32:
        return bits.view(np.float32)
    if bits.dtype == np.uint16:
        if fmt == "bf16":
            return (bits.astype(np.uint32) << 16).view(np.float32)
        return bits.view(np.float16).astype(np.float32)
    return np.asarray(bits, np.float32)


@dataclass
class Capture:
    """A loaded capture: `meta` (the JSON dict) and `arrays` (name -> ndarray)."""

    path: str
    meta: dict
    arrays: dict

    @property
    def steps(self) -> int:
        return int(self.meta["steps"])

    def params(self, prefix: str) -> dict:
        """{param name: fp32 values} of the keys `prefix + name` (e.g. "init__")."""
        out = {}
        for key, value in self.arrays.items():
            if key.startswith(prefix) and "__" not in key[len(prefix):]:
                out[key[len(prefix):]] = _values(value)
        return out

    def recorded(self, kind: str, step: int) -> dict:
        """{name: bits} of `kind` ("grad_raw", "grad", "weight", "out") at `step`."""
        prefix = f"{kind}__{step}__"
        return {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}


def load_capture(path) -> Capture:
    """Read a capture; CaptureError (one line) when the file is not one simprec can replay."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CaptureError(f"{path}: no such file")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise CaptureError(f"{path}: not an npz file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's bad input
        raise CaptureError(f"{path}: not an npz capture ({type(err).__name__}: {err})") from None
    if "meta" not in arrays:
        raise CaptureError(f"{path}: no 'meta' entry; not written by simprec_capture.py")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as err:
        raise CaptureError(f"{path}: its 'meta' entry is not JSON ({err})") from None
    if meta.get("format") != CAPTURE_FORMAT:
        raise CaptureError(f"{path}: not a simprec capture (format {meta.get('format')!r})")
    version = meta.get("version")
    if not isinstance(version, int) or version > CAPTURE_VERSION:
        raise CaptureError(f"{path}: capture format version {version!r}; this simprec reads "
                           f"versions up to {CAPTURE_VERSION} (update simprec)")
    missing = [k for k in ("loss", "batch_x", "batch_y") if k not in arrays]
    if missing:
        raise CaptureError(f"{path}: missing arrays {', '.join(missing)}")
    return Capture(path, meta, arrays)


# ------------------------------------------------------------------------------ the network


def _builtin(spec: dict):
    from . import models

    name, kwargs = spec.get("name"), dict(spec.get("kwargs") or {})
    if name == "mlp":
        return models.MLP(kwargs["in_features"], tuple(kwargs["hidden"]), kwargs["classes"],
                          kwargs.get("activation", "relu"))
    if name == "gpt":
        return models.TinyGPT(kwargs["vocab_size"], kwargs["block_size"], kwargs["n_layer"],
                              kwargs["n_head"], kwargs["n_embd"], tied_head=kwargs["tied_head"],
                              attention=kwargs.get("attention", "manual"))
    raise CaptureError(f"the capture's network is {name!r}; give it with --model mlp|gpt or "
                       f"--torch-module FILE.py:FACTORY")


def build_model(capture: Capture, model=None):
    """The simprec network to replay, with the capture's initial weights: `model` (a simprec
    Module, e.g. from `from_torch`), or `"mlp"`/`"gpt"` built from the capture's structure, or
    (None) the built-in network the capture names. CaptureError when the parameter names or
    shapes differ from the capture's."""
    spec = dict(capture.meta.get("model") or {})
    if model is None or isinstance(model, str):
        if isinstance(model, str):
            if spec.get("name") not in (None, model):
                raise CaptureError(f"--model {model}: the capture's network is "
                                   f"{spec.get('name')!r}")
            spec["name"] = model
        if not spec.get("kwargs"):
            raise CaptureError("the capture does not describe a built-in network; give "
                               "--torch-module FILE.py:FACTORY")
        model = _builtin(spec)
    init = capture.params("init__")
    ours = {n: tuple(p.shape) for n, p in model.named_parameters()}
    theirs = {n: tuple(v.shape) for n, v in init.items()}
    if ours != theirs:
        only_ours = sorted(set(ours) - set(theirs))
        only_theirs = sorted(set(theirs) - set(ours))
        shapes = [n for n in ours if n in theirs and ours[n] != theirs[n]]
        raise CaptureError("the network does not match the capture: "
                           f"only in the network {only_ours[:3]}, only in the capture "
                           f"{only_theirs[:3]}, other shapes {shapes[:3]}")
    model.load_state_dict(init)
    return model


# ------------------------------------------------------------------------------ the run


def _optimizer(meta: dict, model):
    spec = meta["optimizer"]
    named = dict(model.named_parameters())
    path = spec.get("path", "foreach")
    flags = {"single": {"foreach": False}, "foreach": {"foreach": True},
             "fused": {"fused": True}}.get(path)
    if flags is None:
        raise CaptureError(f"optimizer path {path!r}: simprec models single, foreach, fused")
    kind = spec["class"]
    keys = {"SGD": ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"),
            "Adam": ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "capturable"),
            "AdamW": ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
                      "capturable")}
    if kind not in keys:
        raise CaptureError(f"optimizer {kind}: simprec replays SGD, Adam and AdamW")
    if kind == "Adam" and any(g.get("decoupled_weight_decay") for g in spec["groups"]):
        kind = "AdamW"
    groups = []
    for g in spec["groups"]:
        group = {k: (tuple(g[k]) if k == "betas" else g[k]) for k in keys[kind] if k in g}
        group["params"] = [named[n] for n in g["params"]]
        if g.get("lr_tensor"):  # torch's tensor lr: a 0-dim fp32 tensor, its own arithmetic
            group["lr"] = _lr_tensor(g["lr"])
        groups.append(group)
    return getattr(optim, kind)(groups, **flags)


def _lr_tensor(value) -> Tensor:
    return Tensor._from_data(np.asarray(value, np.float32).reshape(()), fp32)


def _scaler(meta: dict):
    spec = meta.get("scaler")
    if not spec:
        return None
    return amp.GradScaler(init_scale=spec["init_scale"], growth_factor=spec["growth_factor"],
                          backoff_factor=spec["backoff_factor"],
                          growth_interval=spec["growth_interval"])


def _loss(meta: dict, out, y):
    kind = meta.get("loss", "cross_entropy")
    if kind == "cross_entropy":
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    if kind == "mse":
        return F.mse_loss(out, y)
    raise CaptureError(f"loss {kind!r}: simprec replays cross_entropy and mse")


def _batch(array: np.ndarray) -> Tensor:
    if np.issubdtype(array.dtype, np.integer):
        return Tensor._from_data(array.astype(np.int64), int64)
    return Tensor._from_data(np.asarray(array, np.float32), fp32)


@dataclass
class Departure:
    """Where the replay first differs from the capture: the step, what ("loss", "scale",
    "scale_after", "grad_norm", "grad_raw", "grad", "weight", "final", "output"), the tensor's
    name, differing of compared elements, the largest ulp distance, and the first module whose
    recorded output differs in that step (None when not recorded or all equal)."""

    step: int
    what: str
    name: str
    differing: int
    compared: int
    max_ulp: int
    ours: float | None = None
    theirs: float | None = None
    module: str | None = None

    def describe(self) -> str:
        where = f"step {self.step}: {self.what}" + (f" {self.name}" if self.name else "")
        if self.compared == 1 and self.ours is not None:
            text = f"{where}: simprec {self.ours!r}, capture {self.theirs!r} ({self.max_ulp} ulp)"
        else:
            text = (f"{where}: {self.differing} of {self.compared} values differ "
                    f"(max {self.max_ulp} ulp)")
        if self.module:
            text += f"; first differing forward output: {self.module}"
        return text


@dataclass
class ReplayReport:
    """The replay's verdict: per-step bit-identity of losses (and scales, norms), every
    departure found in order (the first is `first`), and counts of what was compared."""

    steps: int
    losses_same: int = 0
    checks: dict = field(default_factory=dict)        # what -> [compared tensors, identical]
    departures: list = field(default_factory=list)
    step_rows: list = field(default_factory=list)     # (step, loss ours, loss theirs, same)

    @property
    def identical(self) -> bool:
        return not self.departures

    @property
    def first(self) -> Departure | None:
        return self.departures[0] if self.departures else None

    def as_dict(self) -> dict:
        return {"identical": self.identical, "steps": self.steps,
                "losses_identical": self.losses_same,
                "checks": {k: {"compared": v[0], "identical": v[1]}
                           for k, v in self.checks.items()},
                "first_departure": None if self.first is None else vars(self.first),
                "departures": [vars(d) for d in self.departures[:50]]}


def _compare(report: ReplayReport, step: int, what: str, name: str, ours, bits, fmt="fp32"):
    """Compare our fp32 values with the capture's bits; record a Departure when they differ."""
    from .parity_backends import compare_arrays

    theirs = _values(bits, fmt).reshape(-1)
    ours = np.asarray(ours, np.float32).reshape(-1)
    diff = compare_arrays(ours, theirs, fmt)
    entry = report.checks.setdefault(what, [0, 0])
    entry[0] += 1
    entry[1] += diff.identical
    if not diff.identical:
        scalar = theirs.size == 1
        report.departures.append(Departure(
            step, what, name, diff.differing, diff.compared, diff.max_ulp,
            float(ours.reshape(-1)[0]) if scalar else None,
            float(theirs.reshape(-1)[0]) if scalar else None))
    return diff.identical


def _format_name(fmt_name: str, bits) -> str:
    return "fp32" if np.asarray(bits).dtype == np.uint32 else fmt_name


def _slice_rows(x: np.ndarray, batch: int, rows: int) -> np.ndarray:
    return x[:rows] if x.ndim and x.shape[0] == batch else x


def replay(capture: Capture, model, *, steps: int | None = None, on_step=None) -> ReplayReport:
    """Replay `capture` on `model` (built by `build_model`, with the initial weights) on the
    NumPy reference; `steps` limits the replay to the first steps (final weights are compared
    only when every step ran); `on_step(step, report)` is called after each step."""
    from .parity_backends import ModuleOutputs

    meta, arrays = capture.meta, capture.arrays
    total = capture.steps if steps is None else min(int(steps), capture.steps)
    recipe = meta.get("recipe") or {}
    if recipe.get("param_dtype", "float32") != "float32":
        raise CaptureError(f"the capture's parameters are {recipe['param_dtype']}; simprec "
                           "replays runs with float32 parameters (autocast recipes)")
    autocast_fmt = _FORMATS.get(recipe.get("autocast") or "", None)
    accumulate = recipe.get("accumulate", "sm90")
    opt = _optimizer(meta, model)
    scaler = _scaler(meta)
    clip = meta.get("clip")
    params = [p for g in opt.param_groups for p in g["params"]]
    named = dict(model.named_parameters())
    rows = int((meta.get("record") or {}).get("output_rows", 1))
    half = autocast_fmt.name if autocast_fmt is not None else "fp32"
    lrs = arrays.get("lr")
    report = ReplayReport(total)
    for s in range(total):
        x, y = arrays["batch_x"][s], arrays["batch_y"][s]
        opt.zero_grad(set_to_none=True)
        if lrs is not None:
            for group, lr in zip(opt.param_groups, np.asarray(lrs[s], np.float64), strict=True):
                group["lr"] = _lr_tensor(lr) if hasattr(group["lr"], "numpy") else float(lr)
        outputs = capture.recorded("out", s)
        recorder = ModuleOutputs(model) if outputs else contextlib.nullcontext()
        ctx = (amp.autocast(autocast_fmt, accumulate=accumulate) if autocast_fmt is not None
               else contextlib.nullcontext())
        with recorder, ctx:
            out = model(_batch(x))
            loss = _loss(meta, out, _batch(y))
        loss_value = np.float32(loss.item())
        scale = np.float32(scaler.get_scale()) if scaler is not None else np.float32(1.0)
        first = len(report.departures)
        same = _compare(report, s, "loss", "", loss_value, arrays["loss"][s])
        report.losses_same += same
        report.step_rows.append((s, float(loss_value), float(_values(arrays["loss"][s])), same))
        if "scale" in arrays:
            _compare(report, s, "scale", "", scale, arrays["scale"][s])
        (scaler.scale(loss) if scaler is not None else loss).backward()
        for name, bits in _backward_order(capture.recorded("grad_raw", s), named):
            g = named[name].grad
            _compare(report, s, "grad_raw", name, g.numpy() if g is not None else np.nan, bits,
                     _format_name(half, bits))
        grad_norm = None
        if scaler is not None and clip:
            scaler.unscale_(opt)
        if clip:
            grad_norm = optim.clip_grad_norm_(params, clip["max_norm"],
                                              clip.get("norm_type", 2.0))
            if "grad_norm" in arrays:
                _compare(report, s, "grad_norm", "", np.float32(grad_norm), arrays["grad_norm"][s])
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
            if "scale_after" in arrays:
                _compare(report, s, "scale_after", "", np.float32(scaler.get_scale()),
                         arrays["scale_after"][s])
        else:
            opt.step()
        for name, bits in _backward_order(capture.recorded("grad", s), named):
            g = named[name].grad
            _compare(report, s, "grad", name, g.numpy() if g is not None else np.nan, bits)
        for name, bits in capture.recorded("weight", s).items():
            _compare(report, s, "weight", name, named[name].numpy(), bits)
        if outputs and len(report.departures) > first:
            report.departures[first].module = _first_module(
                recorder.outputs, outputs, meta, x.shape[0], rows, half)
        if on_step is not None:
            on_step(s, report)
    if total == capture.steps:
        for name, p in named.items():
            key = f"final__{name}"
            if key in arrays:
                _compare(report, total - 1, "final", name, p.numpy(), arrays[key])
    return report


def _backward_order(recorded: dict, named: dict) -> list:
    """Recorded gradients, last parameter first: the order backward computes them in (roughly),
    so that the first differing gradient named is the one nearest the loss."""
    order = {name: i for i, name in enumerate(named)}
    return sorted(recorded.items(), key=lambda item: -order.get(item[0], -1))


def _first_module(ours: list, theirs: dict, meta: dict, batch: int, rows: int, half: str):
    """The first module (in the capture's recorded order) whose output differs; a note when
    every recorded output is identical (the forward matched; the departure is later)."""
    from .parity_backends import compare_arrays

    mine = {}
    for path, _kind, fmt_name, array in ours:
        mine.setdefault(path, (fmt_name, array))
    order = (meta.get("record") or {}).get("output_order") or list(theirs)
    for path in order:
        if path not in theirs or path not in mine:
            continue
        fmt_name, array = mine[path]
        bits = theirs[path]
        values = _values(bits, fmt_name if bits.dtype == np.uint16 else "fp32")
        array = _slice_rows(array, batch, rows)
        if array.shape != values.shape:
            return f"{path} (shape {array.shape} against {values.shape})"
        diff = compare_arrays(array, values, fmt_name)
        if not diff.identical:
            return f"{path} ({diff.differing} of {diff.compared} values differ)"
    return "none (every recorded module output of the step is identical)"


def format_report(capture: Capture, report: ReplayReport) -> str:
    """The human-readable summary printed by `simprec replay`."""
    lines = []
    n = report.steps
    if report.identical:
        checked = ", ".join(f"{v[0]} {k}" for k, v in report.checks.items())
        lines.append(f"bit-identical: all {n} steps ({checked})")
    else:
        lines.append(f"departs at {report.first.describe()}")
        lines.append(f"losses bit-identical: {report.losses_same} of {n}")
        for what, (compared, same) in report.checks.items():
            lines.append(f"  {what:<12} {same} of {compared} identical")
    return "\n".join(lines)


def capture_summary(capture: Capture) -> str:
    """One line naming what was captured (versions, recipe, optimizer)."""
    m = capture.meta
    env = m.get("env") or {}
    opt = m.get("optimizer") or {}
    rec = (m.get("recipe") or {}).get("autocast") or "fp32"
    scaler = "GradScaler" if m.get("scaler") else "no scaler"
    clip = f", clip {m['clip']['max_norm']}" if m.get("clip") else ""
    return (f"{os.path.basename(capture.path)}: {m.get('steps')} steps, "
            f"{(m.get('model') or {}).get('name') or 'custom network'}, autocast {rec}, "
            f"{opt.get('class')} ({opt.get('path')}), {scaler}{clip}; torch "
            f"{env.get('torch')}, CUDA {env.get('cuda')}, {env.get('gpu', env.get('device'))}")
