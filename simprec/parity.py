"""simprec against real H200 results: the cases behind ``simprec parity`` and the parity tests.

The ground truth is what an NVIDIA H200 (torch 2.11 + CUDA 13.0) computed on fixed inputs, stored
as bit patterns in the repository's ``tests/data/h200`` (its README.md says how each was made):

- ``matmul_dev.npz``: fp16/bf16 GEMMs, raw fp32 accumulator, half output and fused bias;
- ``elementwise_dev.npz``: every fp16/bf16 input through the elementwise ops, random pairs, casts,
  and 256 rows of 1,000 through softmax, sums and layer_norm;
- ``amp_trace_dev.npz``: a 60-step fp16 AMP training run, replayed here from the same weights;
- ``tests/data/h200_ops.npz``: backward kernels, ``pow`` and
  division rules, fp32 kernels, row backward passes and losses;
- the reduction captures in ``tests/data`` (the ``reductions`` group), each beside the
  script that made it and regenerates its inputs: ``h200_colsums.npz`` (sums over leading
  dims), ``h200_middlesums.npz`` (over middle dims), ``h200_longsums.npz`` (long rows, whole
  tensors), ``h200_var.npz`` (torch.var's Welford reduction) and ``h200_softmax.npz``
  (softmax, log_softmax and cross_entropy over long rows, kept as digests).

Each case computes simprec's result with the library (``simprec.ops``, ``tensor_core_matmul``,
``amp``, ``optim``) and counts the elements whose bits differ from the GPU's; NaNs compare by
NaN-ness only (payloads differ). The tables of ops below are shared with
``tests/test_parity_h200.py`` so that the command and the tests check the same things.
``docs/fidelity.md`` explains the models behind each result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

import simprec as sp
import simprec.ops as ops

__all__ = [
    "BACKWARD", "COUNTED_UNARY", "EXACT_BINARY", "EXACT_UNARY", "FP32_FORWARD", "GROUPS",
    "KNOWN_MISMATCHES", "CaseResult", "DataPaths", "MissingData", "compare", "floats",
    "load_capture", "locate_data", "mismatches", "replay_amp_trace", "run_cases",
]

# ------------------------------------------------------------------------------ the op tables

# op -> differing elements today (0 everywhere: every case listed here is bit-exact now).
KNOWN_MISMATCHES = {
    "sigmoid": 0,
    "gelu_erf": 0,
    "gelu_tanh": 0,
    "silu": 0,
    "bf16_exp": 0,
    "bf16_tanh": 0,
    "bf16_gelu_erf": 0,
    "rows_softmax_fp16": 0,
    "rows_log_softmax_fp32": 0,
    "rows_sum_fp16": 0,
    "rows_sum_fp32": 0,
    "rows_layer_norm_autocast": 0,
    "sum32_col": 0,  # column sums: was 31 before Reduce.cuh's leading-dim order was modelled
}

# fp16 unary ops, bit-exact on all 65,536 inputs (elementwise_dev: x_all -> fp16_<name>)
EXACT_UNARY = {
    "exp": ops.exp,
    "log": ops.log,
    "tanh": ops.tanh,
    "relu": ops.relu,
    "sqrt": ops.sqrt,
    "rsqrt": ops.rsqrt,
    "reciprocal": ops.reciprocal,
    "neg": ops.neg,
    "mul_0.1": lambda x: x * 0.1,
    "square": lambda x: x * x,
}

# fp16 binary ops on 200,000 random pairs (pair_a, pair_b -> pair_<name>)
EXACT_BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "add_alpha0.3": lambda a, b: ops.add(a, b, alpha=0.3),
}

# ops once off by a few elements, counted against KNOWN_MISMATCHES: name -> (format, op)
COUNTED_UNARY = {
    "sigmoid": ("fp16", ops.sigmoid),
    "silu": ("fp16", ops.silu),
    "gelu_erf": ("fp16", ops.gelu),
    "gelu_tanh": ("fp16", lambda x: ops.gelu(x, approximate="tanh")),
    "bf16_exp": ("bf16", ops.exp),
    "bf16_tanh": ("bf16", ops.tanh),
    "bf16_gelu_erf": ("bf16", ops.gelu),
}

# backward kernels on h200_ops' 8,192-input grid, fp16 and bf16 (g_<h|b>_<name>)
BACKWARD = {
    "gelu_bwd": lambda x: ops.gelu(x),
    "gelu_tanh_bwd": lambda x: ops.gelu(x, approximate="tanh"),
    "silu_bwd": ops.silu,
    "sigmoid_bwd": ops.sigmoid,
    "tanh_bwd": ops.tanh,
    "softplus_bwd": ops.softplus,
    "threshold_bwd": ops.relu,
}

# fp32 kernels on 2,048 random fp32 inputs (r_<name>, and r_<name>_bwd where captured)
FP32_FORWARD = {
    "gelu": ops.gelu,
    "gelu_tanh": lambda x: ops.gelu(x, approximate="tanh"),
    "silu": ops.silu,
    "sigmoid": ops.sigmoid,
    "tanh": ops.tanh,
    "exp": ops.exp,
    "softplus": ops.softplus,
    "erf": ops.erf,
}

POWERS = (2, 3, -2, 0.1, 1.7, 2.5, -1.5)

# ------------------------------------------------------------------------------ comparison


def floats(bits: np.ndarray, kind: str) -> np.ndarray:
    """The float32 values of stored bit patterns of ``kind`` ("fp16", "bf16" or "fp32")."""
    if kind == "fp16":
        return bits.view(np.float16).astype(np.float32)
    if kind == "bf16":
        return bits.view(ml_dtypes.bfloat16).astype(np.float32)
    return bits.view(np.float32)


def mismatches(got: sp.Tensor | np.ndarray, expected_bits: np.ndarray, kind: str) -> int:
    """Elements whose bits differ, NaN payloads aside (NaN-ness compared separately)."""
    got = got.numpy() if isinstance(got, sp.Tensor) else np.asarray(got, np.float32)
    want = floats(expected_bits, kind)
    got = got.reshape(want.shape)
    with np.errstate(invalid="ignore"):
        if kind == "fp16":
            got_bits = got.astype(np.float16).view(np.uint16)
        elif kind == "bf16":
            got_bits = got.astype(ml_dtypes.bfloat16).view(np.uint16)
        else:
            got_bits = got.view(np.uint32)
        want_bits = expected_bits.view(got_bits.dtype)
        nan_g, nan_w = np.isnan(got), np.isnan(want)
        return int(np.sum(nan_g != nan_w) + np.sum((got_bits != want_bits) & ~nan_g & ~nan_w))


def compare(got, expected_bits: np.ndarray, kind: str) -> tuple[int, int]:
    """(elements compared, elements that differ) of simprec's result against the GPU's bits."""
    return int(np.asarray(expected_bits).size), mismatches(got, expected_bits, kind)


# ------------------------------------------------------------------------------ results


@dataclass
class CaseResult:
    """One compared case: ``differing`` of ``compared`` elements differ from the GPU's.

    ``known`` is the documented number of differences allowed for the case (KNOWN_MISMATCHES,
    docs/fidelity.md "What is not modelled"); more than that is a regression.
    """

    group: str
    name: str
    source: str
    compared: int
    differing: int
    known: int = 0

    @property
    def status(self) -> str:
        """"ok" (bit-identical), "known" (within the documented count) or "differs"."""
        if self.differing == 0:
            return "ok"
        return "known" if self.differing <= self.known else "differs"

    def as_dict(self) -> dict:
        return {**asdict(self), "status": self.status}


# ------------------------------------------------------------------------------ the data

GROUPS = ("matmul", "elementwise", "rows", "reductions", "trace")
SHARED_FILES = {  # group -> the main capture it needs (tests/data/h200, or --data DIR)
    "matmul": "matmul_dev.npz",
    "elementwise": "elementwise_dev.npz",
    "rows": "elementwise_dev.npz",
    "trace": "amp_trace_dev.npz",
}
EXTRA_FILE = "h200_ops.npz"  # the project's own capture of more kernels (tests/data)
OWN_CAPTURES = ("colsums", "middlesums", "longsums", "var", "softmax")  # tests/data/h200_*


class MissingData(Exception):
    """The H200 ground truth is not where it was looked for (the message says where)."""


@dataclass
class DataPaths:
    """Where the ground truth is: the folder of the three main captures (``h200``), h200_ops.npz
    (``extra``) and the folder of the reduction captures and their scripts (``own``); the last
    two are None only when no group asked for needs them."""

    h200: Path
    extra: Path | None
    how: str  # how h200 was found: "--data" or "the checkout's tests/data/h200"
    own: Path | None = None


def checkout_root() -> Path | None:
    """The source checkout simprec is imported from (pyproject.toml beside the package)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def locate_data(data: str | os.PathLike | None = None,
                groups: Iterable[str] = GROUPS) -> DataPaths:
    """Find the ground truth for ``groups``: the folder ``data`` if given, else the checkout's
    ``tests/data/h200`` (shipped with the repository). h200_ops.npz and the reduction captures are
    taken from ``data`` when it holds them, else from the checkout's ``tests/data``. Raises
    MissingData naming what is missing; every file a requested group needs is required."""
    groups = set(groups)
    root = checkout_root()
    tests_data = root / "tests" / "data" if root is not None else None
    if data is not None:
        h200, how = Path(data), "--data"
    elif tests_data is not None:
        h200, how = tests_data / "h200", "the checkout's tests/data/h200"
    else:
        raise MissingData("no H200 data: simprec is not run from a source checkout (whose "
                          "tests/data/h200 holds the captures); pass --data DIR")
    hint = "pass --data DIR (the folder of the .npz captures, tests/data/h200 in a checkout)"
    if not h200.is_dir():
        raise MissingData(f"no H200 data: {h200} ({how}) is not a directory; {hint}")
    needed = {SHARED_FILES[g] for g in groups if g in SHARED_FILES}
    missing = sorted(needed - {p.name for p in h200.glob("*.npz")})
    if missing:
        raise MissingData(f"no H200 data: {', '.join(missing)} not found in {h200} ({how}); "
                          f"{hint}")
    places = [h200] + ([tests_data] if tests_data is not None else [])
    extra = next((d / EXTRA_FILE for d in places if (d / EXTRA_FILE).is_file()), None)
    if extra is None and groups & {"elementwise", "rows"}:
        raise MissingData(f"no H200 data: {EXTRA_FILE} not found in "
                          f"{' or '.join(map(str, places))}; {hint}")
    own = next((d for d in places if all((d / f"h200_{name}.npz").is_file()
                                         and (d / f"capture_h200_{name}.py").is_file()
                                         for name in OWN_CAPTURES)), None)
    if own is None and "reductions" in groups:
        raise MissingData("no H200 data: the reduction captures (h200_<name>.npz with "
                          f"capture_h200_<name>.py, <name> of {', '.join(OWN_CAPTURES)}) not "
                          f"found in {' or '.join(map(str, places))}; {hint}")
    return DataPaths(h200, extra, how, own)


def load_capture(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an H200 capture, as the GPU wrote them.

    A capture packed for the repository (``tests/data/h200/pack.py``) carries a ``packing`` entry
    (JSON) naming the arrays it left out or stored as a residual; they are rebuilt here and
    checked against the SHA-256 of the original array, so that a packed file reads back bit for
    bit as the raw one. A raw capture (``capture.py``'s output) is read as it is.
    """
    path = Path(path)
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as err:
        reason = str(err).split(".")[0] or type(err).__name__
        raise MissingData(f"{path} is not a readable H200 capture ({reason})") from err
    if "packing" in arrays:
        arrays = _unpack(path, arrays)
    return arrays


def _unpack(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rebuild the arrays of a packed capture (rules: ``arange``, every 16-bit pattern in order;
    ``residual_hi16``, ``(source >> 16) + residual`` modulo 2**16, the form that makes an fp32 ->
    16-bit cast compress) and check each against its recorded SHA-256."""
    import hashlib

    packing = json.loads(str(arrays.pop("packing")))
    for name, rule in packing.items():
        if rule["rule"] == "arange":
            value = np.arange(rule["size"], dtype=rule["dtype"])
        elif rule["rule"] == "residual_hi16":
            residual = arrays.pop(name + "_residual")
            value = ((arrays[rule["source"]] >> 16).astype(np.uint16) + residual).astype(np.uint16)
        else:
            raise MissingData(f"{path}: unknown packing rule {rule['rule']!r} for {name!r}")
        if hashlib.sha256(value.tobytes()).hexdigest() != rule["sha256"]:
            raise MissingData(f"{path}: {name!r} does not rebuild to the captured array "
                              "(SHA-256 differs)")
        arrays[name] = value
    return arrays


# ------------------------------------------------------------------------------ the cases


def _matmul_cases(mm: dict) -> Iterator[CaseResult]:
    """Every fp16/bf16 case of matmul_dev: D32 (raw fp32 accumulator), D (A @ B in the input
    format) and linear (fused bias), with the sm90 tensor-core model."""
    from .accumulate import tensor_core_matmul

    src = "matmul_dev"
    for case in json.loads(str(mm["meta"])):
        if case["dtype"] not in ("fp16", "bf16"):
            continue
        key, kind = case["key"], case["dtype"]
        fmt, dt = (sp.fp16, np.float16) if kind == "fp16" else (sp.bf16, ml_dtypes.bfloat16)
        a, b = mm[key + "_A"].view(dt), mm[key + "_B"].view(dt)
        shape = f"{case['M']}x{case['K']}x{case['N']}" + (", wide" if case.get("wide") else "")
        bias = mm[key + "_bias"].view(dt)
        outputs = (("D32", "fp32", {}), ("D", kind, {"out": fmt}),
                   ("linear", kind, {"out": fmt, "bias": bias}))
        for out_name, out_kind, kwargs in outputs:
            got = np.asarray(tensor_core_matmul(a, b, arch="sm90", **kwargs)).astype(np.float32)
            yield CaseResult("matmul", f"{key} {out_name} ({shape})", src,
                             *compare(got, mm[f"{key}_{out_name}"], out_kind))


def _bf16_all(ew: dict) -> sp.Tensor:
    return sp.tensor(ew["xb_all"].view(ml_dtypes.bfloat16).astype(np.float32), sp.bf16)


def _elementwise_shared(ew: dict) -> Iterator[CaseResult]:
    """elementwise_dev: every fp16 (and bf16) input through each op, random pairs, casts."""
    src = "elementwise_dev"
    x16 = sp.tensor(ew["x_all"].view(np.float16))
    for name, fn in EXACT_UNARY.items():
        yield CaseResult("elementwise", f"fp16 {name}", src,
                         *compare(fn(x16), ew["fp16_" + name], "fp16"))
    a, b = sp.tensor(ew["pair_a"].view(np.float16)), sp.tensor(ew["pair_b"].view(np.float16))
    for name, fn in EXACT_BINARY.items():
        yield CaseResult("elementwise", f"fp16 {name} (pairs)", src,
                         *compare(fn(a, b), ew["pair_" + name], "fp16"))
    xb = _bf16_all(ew)
    for name, (kind, fn) in COUNTED_UNARY.items():
        x, key = (x16, "fp16_" + name) if kind == "fp16" else (xb, name)
        label = name if kind == "bf16" else f"fp16 {name}"
        yield CaseResult("elementwise", label.replace("bf16_", "bf16 "), src,
                         *compare(fn(x), ew[key], kind), known=KNOWN_MISMATCHES[name])
    f32 = sp.tensor(ew["f32_bits"].view(np.float32))
    for label, x, fmt, key, kind in (
        ("cast fp16 -> bf16", x16, sp.bf16, "fp16_to_bf16", "bf16"),
        ("cast fp16 -> fp32", x16, sp.fp32, "fp16_to_fp32", "fp32"),
        ("cast bf16 -> fp16", xb, sp.fp16, "bf16_to_fp16", "fp16"),
        ("cast fp32 -> fp16", f32, sp.fp16, "f32_to_fp16", "fp16"),
        ("cast fp32 -> bf16", f32, sp.bf16, "f32_to_bf16", "bf16"),
    ):
        yield CaseResult("elementwise", label, src, *compare(x.to(fmt), ew[key], kind))


def _grid(extra: dict, kind: str) -> sp.Tensor:
    fmt = sp.fp16 if kind == "fp16" else sp.bf16
    return sp.tensor(floats(extra["grid_bits"], kind), fmt, requires_grad=True)


def _elementwise_extra(extra: dict) -> Iterator[CaseResult]:
    """h200_ops: backward kernels, softplus/erf, pow and division rules, fp32 kernels."""
    src = "h200_ops"
    for kind in ("fp16", "bf16"):
        pre, fmt = ("h", sp.fp16) if kind == "fp16" else ("b", sp.bf16)
        for name, fn in BACKWARD.items():
            x = _grid(extra, kind)
            want = extra[f"g_{pre}_{name}"]
            if name == "threshold_bwd":  # torch thresholds on the result: compare where x > 0
                keep = floats(extra["grid_bits"], kind) > 0
                x = sp.tensor(np.where(keep, x.numpy(), 0), fmt, requires_grad=True)
                want = np.where(keep, want, np.uint16(0))
            fn(x).backward(sp.tensor(floats(extra[f"g_{pre}_dy"], kind), fmt))
            yield CaseResult("elementwise", f"{kind} {name}", src, *compare(x.grad, want, kind))
        x = _grid(extra, kind)
        for name, fn in (("softplus", ops.softplus), ("erf", ops.erf)):
            yield CaseResult("elementwise", f"{kind} {name}", src,
                             *compare(fn(x), extra[f"g_{pre}_{name}"], kind))
    x = _grid(extra, "fp16")
    for p in POWERS:
        yield CaseResult("elementwise", f"fp16 x ** {p}", src,
                         *compare(x**p, extra[f"g_h_pow_{p}"], "fp16"))
    dy = sp.tensor(extra["g_h_dy"].view(np.float16))
    for label, fn, key in (("fp16 x / 3", lambda: x / 3.0, "g_h_div3"),
                           ("fp16 x / 0.1", lambda: x / 0.1, "g_h_div0.1"),
                           ("fp16 3 / x", lambda: 3.0 / x, "g_h_rdiv3"),
                           ("fp16 add(x, dy, alpha=0.3)", lambda: ops.add(x, dy, alpha=0.3),
                            "g_h_mul_alpha")):
        yield CaseResult("elementwise", label, src, *compare(fn(), extra[key], "fp16"))
    for name, fn in FP32_FORWARD.items():
        x = sp.tensor(extra["r_x"].view(np.float32), requires_grad=True)
        out = fn(x)
        yield CaseResult("elementwise", f"fp32 {name}", src,
                         *compare(out, extra["r_" + name], "fp32"))
        if f"r_{name}_bwd" in extra:
            out.backward(sp.tensor(extra["r_dy"].view(np.float32)))
            yield CaseResult("elementwise", f"fp32 {name} backward", src,
                             *compare(x.grad, extra[f"r_{name}_bwd"], "fp32"))


def _rows_shared(ew: dict) -> Iterator[CaseResult]:
    """elementwise_dev: 256 rows of 1,000 through softmax, log_softmax, sums, layer_norm."""
    from . import amp

    src = "elementwise_dev"
    rows = sp.tensor(ew["rows_x"].view(np.float16))
    for key, fn, kind in (
        ("rows_softmax_fp16", lambda: ops.softmax(rows, -1), "fp16"),
        ("rows_log_softmax_fp32", lambda: ops.log_softmax(rows.float(), -1), "fp32"),
        ("rows_sum_fp16", lambda: rows.sum(-1), "fp16"),
        ("rows_sum_fp32", lambda: rows.float().sum(-1), "fp32"),
    ):
        yield CaseResult("rows", key.removeprefix("rows_"), src, *compare(fn(), ew[key], kind),
                         known=KNOWN_MISMATCHES[key])
    w, b = sp.tensor(ew["ln_w"].view(np.float32)), sp.tensor(ew["ln_b"].view(np.float32))
    with amp.autocast(sp.fp16):
        out = ops.layer_norm(rows, (1000,), w, b)
    key = "rows_layer_norm_autocast"
    yield CaseResult("rows", "layer_norm under fp16 autocast", src,
                     *compare(out, ew[key], "fp32"), known=KNOWN_MISMATCHES[key])


def _rows_extra(ew: dict, extra: dict) -> Iterator[CaseResult]:
    """h200_ops: softmax family and layer_norm backward, means, sums, cross_entropy."""
    src = "h200_ops"
    x16 = ew["rows_x"].view(np.float16)
    dy = extra["w_dY"].view(np.float32)
    for kind, fn, key, label in (
        ("fp16", ops.softmax, "smx_bwd16", "softmax backward fp16"),
        ("fp32", ops.softmax, "smx_bwd32", "softmax backward fp32"),
        ("fp32", ops.log_softmax, "lsm_bwd32", "log_softmax backward fp32"),
        ("fp16", ops.log_softmax, "lsm_bwd16", "log_softmax backward fp16"),
    ):
        fmt = sp.fp16 if kind == "fp16" else sp.fp32
        x = sp.tensor(x16[:8], fmt, requires_grad=True)
        out = fn(x, -1)
        if key == "lsm_bwd16":
            yield CaseResult("rows", "log_softmax fp16", src,
                             *compare(out, extra["w_lsm16"], "fp16"))
        out.backward(sp.tensor(dy, fmt))
        yield CaseResult("rows", label, src, *compare(x.grad, extra["w_" + key], kind))
    w, b = sp.tensor(ew["ln_w"].view(np.float32)), sp.tensor(ew["ln_b"].view(np.float32))
    x = sp.tensor(x16[:8], sp.fp32, requires_grad=True)
    ops.layer_norm(x, (1000,), w, b).backward(sp.tensor(dy))
    yield CaseResult("rows", "layer_norm backward fp32 (dx)", src,
                     *compare(x.grad, extra["w_ln_gx"], "fp32"))
    rows = sp.tensor(x16)
    target = sp.tensor(extra["w_tgt"])
    for label, fn, key, kind, known in (
        ("mean fp16", lambda: rows.mean(-1), "w_mean16", "fp16", 0),
        ("mean fp32", lambda: rows.float().mean(-1), "w_mean32", "fp32", 0),
        ("sum of all fp16", lambda: rows.sum(), "w_sum16_all", "fp16", 0),
        ("sum of all fp32", lambda: rows.float().sum(), "w_sum32_all", "fp32", 0),
        ("column sums fp16", lambda: rows.sum(0), "w_sum16_col", "fp16", 0),
        ("column sums fp32", lambda: rows.float().sum(0), "w_sum32_col", "fp32",
         KNOWN_MISMATCHES["sum32_col"]),
        ("cross_entropy fp32", lambda: ops.cross_entropy(rows.float(), target), "w_ce32",
         "fp32", 0),
        ("cross_entropy fp16", lambda: ops.cross_entropy(rows, target), "w_ce16", "fp16", 0),
        ("cross_entropy fp32, label smoothing 0.1",
         lambda: ops.cross_entropy(rows.float(), target, label_smoothing=0.1), "w_ce32_ls",
         "fp32", 0),
    ):
        yield CaseResult("rows", label, src, *compare(fn(), extra[key], kind), known=known)


def replay_amp_trace(trace: dict) -> dict:
    """Replay amp_trace_dev's 60-step fp16 AMP run on the CPU from the GPU's initial weights and
    batches (autocast(fp16) with the sm90 model, GradScaler, SGD with momentum).

    Returns ``{"loss", "scale", "found_inf"}`` (one value per step) and ``"final"`` (parameter
    name -> fp32 array after the last step), to hold against the trace's own arrays.
    """
    from . import amp, optim
    from .models import AmpTraceMLP
    from .nn import functional as F

    config = json.loads(str(trace["config"]))
    model = AmpTraceMLP.from_trace(trace, "init")
    opt = optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    scaler = amp.GradScaler(init_scale=config["init_scale"],
                            growth_interval=config["growth_interval"])
    losses, scales, found = [], [], []
    for t in range(config["steps"]):
        with amp.autocast(sp.fp16, accumulate="sm90"):
            loss = F.cross_entropy(model(sp.tensor(trace["X"][t])), sp.tensor(trace["Y"][t]))
        scaler.scale(loss).backward()
        scales.append(scaler.get_scale())
        scaler.unscale_(opt)  # as the capture did, before step
        scaler.step(opt)
        scaler.update()
        found.append(float(scaler.last_step["found_inf"]))
        opt.zero_grad(set_to_none=True)
        losses.append(np.float32(loss.item()))
    return {"loss": np.array(losses, np.float32), "scale": np.array(scales),
            "found_inf": np.array(found),
            "final": {name: p.numpy() for name, p in model.named_parameters()}}


def _trace_cases(trace: dict) -> Iterator[CaseResult]:
    """The replayed run against the GPU's: skipped steps and scales equal, losses and final
    weights bit-identical."""
    src = "amp_trace_dev"
    got = replay_amp_trace(trace)
    n = len(trace["loss"])
    yield CaseResult("trace", f"skipped steps ({int(trace['found_inf'].sum())} of {n})", src,
                     n, int(np.sum(got["found_inf"] != trace["found_inf"])))
    yield CaseResult("trace", "loss scale at each step", src,
                     n, int(np.sum(got["scale"] != trace["scale"])))
    yield CaseResult("trace", "losses", src, *compare(got["loss"], trace["loss"], "fp32"))
    for name, value in got["final"].items():
        yield CaseResult("trace", f"final weights {name}", src,
                         *compare(value, trace["final_" + name], "fp32"))


def load_capture_script(folder: Path, name: str):
    """tests/data/capture_h200_<name>.py as a module: its CASES, and `inputs` regenerating
    their inputs from their seeds (the script imports torch only when run on a GPU)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"capture_h200_{name}",
                                                  folder / f"capture_h200_{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_own_capture(folder: Path, name: str):
    """(the capture script as a module, its data h200_<name>.npz)."""
    return load_capture_script(folder, name), load_capture(folder / f"h200_{name}.npz")


def _summed(results: list[tuple[int, int]]) -> tuple[int, int]:
    """(compared, differing) of several comparisons together."""
    return sum(r[0] for r in results), sum(r[1] for r in results)


def _check_inputs(data: dict, key: str, *arrays) -> None:
    import hashlib

    digest = hashlib.sha256(b"".join(a.tobytes() for a in arrays)).digest()
    if digest != data[key].tobytes():
        raise MissingData(f"the inputs regenerated for {key[:-4]!r} are not the captured ones "
                          "(another numpy random stream?)")


def _regenerated(capture, data: dict, name: str, shape, seed: int, dtype: str):
    """(kind, format, tensor) of a case's input, regenerated and checked against the capture."""
    x = capture.inputs(shape, seed, dtype)
    _check_inputs(data, name + "_sha", x)
    kind, fmt = ("fp16", sp.fp16) if dtype == "f16" else ("fp32", sp.fp32)
    return kind, fmt, sp.tensor(x.astype(np.float32), fmt)


def colsum_case(capture, data: dict, seed: int, case) -> CaseResult:
    """h200_colsums: sum over leading dims, mean(0), a linear bias gradient, a broadcast's."""
    name, shape, lead, dtype = case
    kind, fmt, xt = _regenerated(capture, data, name, shape, seed, dtype)
    results = [compare(xt.sum(tuple(range(lead))), data[name + "_sum"], kind)]
    if name + "_mean" in data:
        results.append(compare(xt.mean(0), data[name + "_mean"], kind))
    if name + "_linear_db" in data:
        rows, cols = shape
        w = sp.zeros((cols, 7), fmt=fmt, requires_grad=True)
        b = sp.zeros((cols,), fmt=fmt, requires_grad=True)
        ops.linear(sp.zeros((rows, 7), fmt=fmt), w, b).backward(xt)
        c = sp.zeros((cols,), fmt=fmt, requires_grad=True)
        (sp.zeros((rows, cols), fmt=fmt) + c).backward(xt)
        results += [compare(b.grad, data[name + "_linear_db"], kind),
                    compare(c.grad, data[name + "_bcast_dc"], kind)]
    label = f"sum over leading dims {'x'.join(map(str, shape))} {kind}"
    return CaseResult("reductions", label, "h200_colsums", *_summed(results))


def middlesum_case(capture, data: dict, seed: int, case) -> CaseResult:
    """h200_middlesums: sum over middle dims, and a broadcast's gradient over them."""
    name, shape, dims, dtype = case
    kind, fmt, xt = _regenerated(capture, data, name, shape, seed, dtype)
    kept = tuple(1 if i in dims else s for i, s in enumerate(shape))
    c = sp.zeros(kept, fmt=fmt, requires_grad=True)
    (sp.zeros(shape, fmt=fmt) + c).backward(xt)
    results = [compare(xt.sum(dims), data[name + "_sum"], kind),
               compare(c.grad, data[name + "_bcast"], kind)]
    label = f"sum over middle dims {'x'.join(map(str, shape))} {kind}"
    return CaseResult("reductions", label, "h200_middlesums", *_summed(results))


def longsum_case(capture, data: dict, seed: int, case) -> CaseResult:
    """h200_longsums: sum(-1), sum(), mean() and (fp32) mse_loss of long rows."""
    name, shape, dtype = case
    kind, fmt, xt = _regenerated(capture, data, name, shape, seed, dtype)
    results = [compare(xt.sum(-1), data[name + "_rows"], kind),
               compare(xt.sum(), data[name + "_all"], kind),
               compare(xt.mean(), data[name + "_mean"], kind)]
    if dtype == "f32":
        y = sp.tensor(capture.inputs(shape, seed + 500, dtype))
        results.append(compare(ops.mse_loss(xt, y), data[name + "_mse"], kind))
    label = f"long rows {'x'.join(map(str, shape))} {kind}"
    return CaseResult("reductions", label, "h200_longsums", *_summed(results))


def var_case(capture, data: dict, seed: int, case) -> CaseResult:
    """h200_var: torch.var over the last dim, unbiased and with correction 0 (and, for fp32,
    torch.std as sqrt of the variance: fp32's sqrt is correctly rounded)."""
    name, shape, dtype = case
    kind, fmt, xt = _regenerated(capture, data, name, shape, seed, dtype)
    results = [compare(xt.var(-1), data[name + "_var1"], kind),
               compare(ops.var(xt, -1, correction=0), data[name + "_var0"], kind)]
    if dtype == "f32":
        results.append(compare(ops.sqrt(xt.var(-1)), data[name + "_std1"], kind))
    label = f"var {'x'.join(map(str, shape))} {kind}"
    return CaseResult("reductions", label, "h200_var", *_summed(results))


def _digest_compare(got, data: dict, key: str, kind: str) -> tuple[int, int]:
    """(compared, differing) against a capture kept as a SHA-256 digest and the first 64
    values: 0 differing when the digests agree, else the differences among the first 64 (at
    least 1)."""
    import hashlib

    got = np.asarray(got.numpy() if isinstance(got, sp.Tensor) else got)
    dtype = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16, "fp32": np.float32}[kind]
    bits = np.ascontiguousarray(got.astype(dtype).view(np.uint32 if kind == "fp32"
                                                        else np.uint16))
    if hashlib.sha256(bits.tobytes()).digest() == data[key + "_sha"].tobytes():
        return bits.size, 0
    head = data[key + "_head"]
    return bits.size, max(1, int(np.sum(bits.ravel()[: head.size] != head)))


def softmax_case(capture, data: dict, seed: int, case) -> CaseResult:
    """h200_softmax: softmax and log_softmax with their backward, cross_entropy and its
    gradient, over long rows; fp32, fp16, and fp16 or bf16 in with fp32 out (`dtype=`)."""
    name, n, dtype = case
    x, g, t = capture.inputs(n, seed, dtype)
    _check_inputs(data, name + "_in_sha", x, g, t)
    kind, fmt = {"f32": ("fp32", sp.fp32), "f16": ("fp16", sp.fp16), "h2f": ("fp16", sp.fp16),
                 "b2f": ("bf16", sp.bf16)}[dtype]
    out_kind, out_fmt = ("fp32", sp.fp32) if dtype in ("h2f", "b2f") else (kind, fmt)
    results = []
    for op, fn in (("sm", ops.softmax), ("lsm", ops.log_softmax)):
        xt = sp.tensor(x.astype(np.float32), fmt, requires_grad=True)
        y = fn(xt, -1, dtype=out_fmt if out_fmt is not fmt else None)
        y.backward(sp.tensor(g.astype(np.float32), out_fmt))
        results += [_digest_compare(y, data, f"{name}_{op}", out_kind),
                    _digest_compare(xt.grad, data, f"{name}_{op}_dx", kind)]
    xt = sp.tensor(x.astype(np.float32), fmt, requires_grad=True)
    loss = ops.cross_entropy(xt, sp.tensor(t))
    loss.backward()
    results += [_digest_compare(loss, data, name + "_ce", kind),
                _digest_compare(xt.grad, data, name + "_ce_dx", kind)]
    label = f"softmax family, {capture.ROWS} rows of {n} {dtype}"
    return CaseResult("reductions", label, "h200_softmax", *_summed(results))


_OWN_CASES = {"colsums": colsum_case, "middlesums": middlesum_case,
              "longsums": longsum_case, "var": var_case, "softmax": softmax_case}


def _reduction_cases(folder: Path) -> Iterator[CaseResult]:
    for name, case_fn in _OWN_CASES.items():
        capture, data = load_own_capture(folder, name)
        for seed, case in enumerate(capture.CASES):
            yield case_fn(capture, data, seed, case)


def run_cases(paths: DataPaths, groups: Iterable[str] = GROUPS) -> Iterator[CaseResult]:
    """Compute every case of ``groups`` (in GROUPS order), one result at a time.

    The cases of h200_ops.npz are included when ``paths.extra`` is set, the reductions group
    when ``paths.own`` is (``locate_data`` sets both where a group needs them). Loads each
    capture once.
    """
    groups = [g for g in GROUPS if g in set(groups)]
    cache: dict[str, dict] = {}

    def load(name: str) -> dict:
        if name not in cache:
            cache[name] = load_capture(paths.extra if name == EXTRA_FILE else paths.h200 / name)
        return cache[name]

    producers: dict[str, Callable[[], Iterable[CaseResult]]] = {
        "matmul": lambda: _matmul_cases(load("matmul_dev.npz")),
        "elementwise": lambda: _chain(_elementwise_shared(load("elementwise_dev.npz")),
                                      _elementwise_extra(load(EXTRA_FILE)) if paths.extra
                                      else ()),
        "rows": lambda: _chain(_rows_shared(load("elementwise_dev.npz")),
                               _rows_extra(load("elementwise_dev.npz"), load(EXTRA_FILE))
                               if paths.extra else ()),
        "reductions": lambda: _reduction_cases(paths.own) if paths.own else (),
        "trace": lambda: _trace_cases(load("amp_trace_dev.npz")),
    }
    for group in groups:
        try:
            with np.errstate(all="ignore"):
                yield from producers[group]()
        except KeyError as err:
            raise MissingData(f"the H200 data for {group!r} lacks the array {err}: not the "
                              "capture described in tests/data/h200/README.md") from err


def _chain(*iterables: Iterable[CaseResult]) -> Iterator[CaseResult]:
    for it in iterables:
        yield from it
