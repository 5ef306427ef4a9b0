"""Recorder: per-step statistics of every value the simulator rounds.

A `Recorder` is a `simprec.hooks` observer. The autograd calls `observer.on_round(event)` each
time it rounds a value into a format (`Function.finish`, `Function.grad_for`), optimizers send
one `update` event per parameter per step, and `GradScaler.update` sends one `scaler` event
(docs/architecture.md, "Events seen by simprec.hooks observers"). The recorder folds the events
of a step into one row per (kind, module, parameter name, format) with vectorised NumPy counts
on the bits of the arrays, and a histogram of binary exponents; nothing of the arrays is kept.

Kinds: ``activation`` (an op's output), ``activation_grad``, ``weight_grad`` (gradients, named
by parameter), ``weight`` (a parameter's cast into the autocast format, recognised through the
model given to the Recorder, or a parameter stored after an optimizer step, or O2's copy of its
master), ``cast`` (other casts) and ``update`` (one optimizer step of one parameter).

What a row counts (over the elements of every rounding of the step that fell in the row):

- ``count``: elements; ``zeros``: exact zeros after rounding; ``nonzero_wide``: elements that
  were nonzero before rounding (the fp32 value the op computed).
- ``underflow``: nonzero before rounding, zero after; ``underflow_share = underflow /
  nonzero_wide`` is the share of information lost to the bottom of the format.
- ``subnormal``: nonzero after rounding and below the format's smallest normal.
- ``overflow``: finite before rounding, ±inf after (or beyond ±max in a saturating format).
- ``nan``, ``inf``: non-finite values after rounding.
- ``max_abs``: largest finite magnitude after rounding; ``min_abs``: smallest nonzero one.
- histogram (``Recording.histogram``): binary exponents ``e = floor(log2|x|)`` of the values
  *before* rounding, ``E_MIN..E_MAX``, plus bins for below ``E_MIN``, above ``E_MAX``, zero and
  non-finite. It shows where the fp32 values lie against the format's normal, subnormal and lost
  ranges: the figure of Micikevicius et al. (2018).

``update`` rows (one per parameter and step, from the optimizer's event ``old``, ``new``,
``update``) count the update itself (``count``, ``zeros``: zero updates, ``max_abs``...) and
``nonzero_update`` and ``lost``: elements whose nonzero update left the stored value unchanged,
``lost_share = lost / nonzero_update``. Their histogram is of ``|update| / |weight|``: an
update below 2^-11 of its fp16 weight can vanish (zero updates are counted as zeros). A
parameter stored in a format narrower than fp32 also gets a ``weight`` row of its new value
(the histogram of the stored values; "before rounding" is ``old + update``).

Not recorded: roundings that cannot change a value, whose values were recorded where they were
made: exact conversions to a wider format (a `Cast`/`CastBackward` whose backend hands back the
very array it was given), values an op declared exact in a format narrower than fp32
(`Function.finish(..., exact=True)`: the backend hands back the very array) and ops exact by
construction (ReLU and its backward, negation, absolute value, reshapes, permutations, indexing;
`_EXACT_OPS`); and, once steps are used, events between `end_step` and the next `start_step`
(evaluation passes).

Step rows (``Recording.steps()``): ``step``, whatever the trainer passed to ``end_step`` (loss,
scale, skipped, ...), the scaler's facts when it sent an event, and ``first_nonfinite``: the
first rounding of the step whose result was inf or NaN (op, kind, module, parameter name,
whether it overflowed from finite values). On a skipped step it names the layer that broke.
"""

from __future__ import annotations

import json
import math
import os
import struct as _struct
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from .. import hooks

__all__ = ["Recorder", "Recording", "load", "E_MIN", "E_MAX", "BINS", "KINDS", "RECORDING_DIR"]

# Binary exponents kept in the histogram; values outside go to the "below"/"above" bins.
E_MIN, E_MAX = -64, 31
_NE = E_MAX - E_MIN + 1
# Histogram columns: exponents E_MIN..E_MAX, then these four.
BIN_BELOW, BIN_ABOVE, BIN_ZERO, BIN_NONFINITE = _NE, _NE + 1, _NE + 2, _NE + 3
BINS = _NE + 4
EXPONENTS = np.arange(E_MIN, E_MAX + 1)

KINDS = ("activation", "cast", "activation_grad", "weight", "weight_grad", "update")
RECORDING_DIR = "analysis"  # RUN/analysis/ (see simprec.train.rundir)
_VERSION = 1

# fp32 biased exponent (0..255) -> histogram column. 0 is zero or an fp32 subnormal (< 2^-126),
# which is below E_MIN; zeros are moved to BIN_ZERO afterwards. 255 is inf/NaN.
_LUT = np.empty(256, dtype=np.intp)
for _b in range(256):
    _e = _b - 127
    if _b == 255:
        _LUT[_b] = BIN_NONFINITE
    elif _b == 0 or _e < E_MIN:
        _LUT[_b] = BIN_BELOW
    elif _e > E_MAX:
        _LUT[_b] = BIN_ABOVE
    else:
        _LUT[_b] = _e - E_MIN
del _b, _e

# Counters of a row, in this order in the accumulator array.
_COUNTERS = ("count", "nonzero_wide", "zeros", "underflow", "subnormal", "overflow", "nan", "inf",
             "nonzero_update", "lost")
_C = {name: i for i, name in enumerate(_COUNTERS)}
_FP32_MIN_NORMAL = 1  # biased exponent of fp32's smallest normal
# Ops whose "rounding" into a wider format changes nothing (when the backend hands back the very
# array): not recorded, the values were recorded where they were rounded into the narrow format.
_UPCASTS = frozenset({"Cast", "CastBackward"})
# Ops whose result is exact in its format by construction (it is its input, a part of it, or its
# negation): rounding cannot change their values, and the values were recorded where they were
# made. Left out to keep recording cheap.
_EXACT_OPS = frozenset({"Relu", "ReluBackward", "Neg", "NegBackward", "Abs", "Reshape",
                        "ReshapeBackward", "Permute", "PermuteBackward", "GetItem"})


def _host(x, backend=None):
    """A flat host NumPy array of the values of `x` (a backend array, ndarray or scalar)."""
    if type(x) is np.ndarray:
        return x.reshape(-1)
    if backend is not None and not isinstance(x, np.ndarray):
        x = backend.to_numpy(x)
    return np.asarray(x).reshape(-1)


_F32 = np.dtype(np.float32)
_INF_BITS = 0x7F800000
_ABS_MASK = np.uint32(0x7FFFFFFF)
_ONE = np.uint32(1)


def _fp32_view(x: np.ndarray) -> np.ndarray:
    """`x` as a contiguous float32 array when every value is a float32 (float64 containers are
    converted: their formats are wider than fp32 only in range, which the stats clip anyway)."""
    if x.dtype != _F32:
        with np.errstate(over="ignore"):
            x = x.astype(np.float32)
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def _exp256(bits: np.ndarray) -> np.ndarray:
    """Counts of the fp32 biased exponents (0..255) of magnitude bits."""
    return np.bincount(bits >> 23, minlength=256)


def _fold(h256: np.ndarray, zeros: int) -> np.ndarray:
    """256 biased-exponent counts -> BINS columns; `zeros` of bin 0 are exact zeros."""
    out = np.bincount(_LUT, weights=h256, minlength=BINS).astype(np.int64)
    if zeros:
        out[BIN_BELOW] -= zeros
        out[BIN_ZERO] += zeros
    return out


_FOLD = np.zeros((256, BINS), dtype=np.float64)
_FOLD[np.arange(256), _LUT] = 1.0


def _fold_many(h256: np.ndarray, zeros) -> np.ndarray:
    """`_fold` of each row of a (rows × 256) array (one matrix product, exact below 2^53)."""
    out = np.rint(h256.astype(np.float64) @ _FOLD).astype(np.int64)
    z = np.asarray(zeros, dtype=np.int64)
    out[:, BIN_BELOW] -= z
    out[:, BIN_ZERO] += z
    return out


def _exponent_hist(w: np.ndarray, zeros_w: int | None = None) -> np.ndarray:
    """Histogram of floor(log2|w|) in BINS columns (exact zeros in BIN_ZERO)."""
    bits = _fp32_view(w).view(np.uint32) & _ABS_MASK
    if zeros_w is None:
        zeros_w = bits.size - int(np.count_nonzero(bits))
    return _fold(_exp256(bits), zeros_w)


class _Stats:
    """Counts of one rounding (w: before, r: after), from the bits of both arrays.

    Each count is exact: with b the fp32 biased exponent of |x|, b == 0 holds zeros and fp32
    subnormals (told apart by one count_nonzero when there are any), b == 255 holds inf/NaN;
    every zero before rounding is zero after, and every inf before is inf after, so
    underflow = zeros(r) - zeros(w) and overflow = inf(r) - inf(w)."""

    __slots__ = ("n", "h_w", "zeros_w", "zeros_r", "nan", "inf", "overflow", "subnormal",
                 "max_bits", "min_bits", "rb")

    def __init__(self, w: np.ndarray, r: np.ndarray, same: bool, min_normal_biased: int | None):
        r = _fp32_view(r)
        rb = r.view(np.uint32) & _ABS_MASK
        n = self.n = rb.size
        self.rb = rb
        self.nan = self.inf = self.overflow = self.subnormal = 0
        if n == 0:
            self.h_w = np.zeros(256, dtype=np.intp)
            self.zeros_w = self.zeros_r = self.max_bits = self.min_bits = 0
            return
        top = int(rb.max())  # NaN and inf have the largest magnitude bits
        bottom = int(rb.min())
        if bottom:
            zeros_r, low = 0, bottom
        else:  # zeros: the smallest nonzero magnitude is the minimum of bits - 1 (zeros wrap)
            zeros_r = n - int(np.count_nonzero(rb))
            low = (int((rb - _ONE).min()) + 1) & 0xFFFFFFFF if zeros_r < n else 0
        self.min_bits = low
        if same:  # one histogram gives every count
            h_w = _exp256(rb)
            zeros_w = zeros_r
            nonfinite = int(h_w[255])
            if min_normal_biased is not None and low and low < (min_normal_biased << 23):
                self.subnormal = int(h_w[1:min_normal_biased].sum()) + int(h_w[0]) - zeros_r
        else:  # the histogram is of the values before rounding; after it, cheap counts
            w = _fp32_view(w)
            h512 = np.bincount(w.view(np.uint32) >> 23, minlength=512)  # sign and exponent
            h_w = h512[:256] + h512[256:]
            zeros_w = n - int(np.count_nonzero(w)) if (h_w[0] and zeros_r) else 0
            nonfinite = int(np.count_nonzero(rb >= _INF_BITS)) if top >= _INF_BITS else 0
            if min_normal_biased is not None and low and low < (min_normal_biased << 23):
                below = int(np.count_nonzero(rb < np.uint32(min_normal_biased << 23)))
                self.subnormal = below - zeros_r
        self.h_w, self.zeros_w, self.zeros_r = h_w, zeros_w, zeros_r
        if nonfinite:
            self.inf = int(np.count_nonzero(rb == _INF_BITS))
            self.nan = nonfinite - self.inf
            if not same:
                inf_w = int(np.count_nonzero(np.isinf(w))) if h_w[255] else 0
                self.overflow = self.inf - inf_w
            self.max_bits = int(np.max(rb, where=rb < _INF_BITS, initial=0))
        else:
            self.max_bits = top
        if self.min_bits >= _INF_BITS:
            self.min_bits = 0

    @property
    def nonfinite(self) -> int:
        return self.nan + self.inf


def _bits_value(b: int) -> float:
    return _struct.unpack("<f", _struct.pack("<I", b))[0]


def _min_normal_biased(fmt) -> int | None:
    sn = getattr(fmt, "smallest_normal", None)
    if sn is None or sn <= 0:
        return None
    return max(0, min(255, int(math.floor(math.log2(sn))) + 127))


class _Acc:
    """Running aggregate of one row within one step."""

    __slots__ = ("c", "h256", "max_bits", "min_bits", "ops", "events")

    def __init__(self):
        self.c = [0] * len(_COUNTERS)
        self.h256 = np.zeros(256, dtype=np.int64)
        self.max_bits = 0
        self.min_bits = 0
        self.ops = {}
        self.events = 0


# The fields of a tensor row, in storage order (rows are kept as tuples, handed out as dicts).
ROW_FIELDS = ("id", "step", "kind", "module", "name", "fmt", "events", "ops") + _COUNTERS + (
    "underflow_share", "lost_share", "max_abs", "min_abs")
_F = {name: i for i, name in enumerate(ROW_FIELDS)}
_I_KIND, _I_FMT, _I_STEP, _I_MODULE, _I_NAME = (_F["kind"], _F["fmt"], _F["step"], _F["module"],
                                                _F["name"])


class _Hist:
    """A growing (rows × BINS) int64 array: row i is the histogram of tensor row i."""

    def __init__(self, data=None):
        if data is None:
            self.a = np.zeros((64, BINS), dtype=np.int64)
        else:
            self.a = np.array(data, dtype=np.int64)
        self.n = 0 if data is None else len(self.a)

    def append(self, h) -> None:
        if self.n == len(self.a):
            self.a = np.concatenate([self.a, np.zeros_like(self.a)])
        self.a[self.n] = h
        self.n += 1

    def extend(self, rows: np.ndarray) -> None:
        k = len(rows)
        while self.n + k > len(self.a):
            self.a = np.concatenate([self.a, np.zeros_like(self.a)])
        self.a[self.n:self.n + k] = rows
        self.n += k

    def __getitem__(self, i):
        return self.a[:self.n][i]

    def __len__(self):
        return self.n

    def array(self) -> np.ndarray:
        return self.a[:self.n]


class Recording:
    """Rows of a recorded run: tensor rows, step rows, histograms. `Recorder` fills one;
    `load(run_dir)` reads one back.

    Tensor rows are stored as tuples of ROW_FIELDS and histograms in one int64 array, so a long
    run costs about 1 kB per row; `rows()` hands out plain dicts."""

    def __init__(self):
        self._rows: list[tuple] = []
        self._hists = _Hist()
        self._steps: list[dict] = []
        self.meta: dict = {}

    # ---- queries ----
    def _match(self, kind=None, fmt=None, step=None, module=None, name=None):
        """The stored tuples of the matching rows."""
        kinds = (kind,) if isinstance(kind, str) else (None if kind is None else tuple(kind))
        fmt = None if fmt is None else getattr(fmt, "name", fmt)
        for r in self._rows:
            if kinds is not None and r[_I_KIND] not in kinds:
                continue
            if fmt is not None and r[_I_FMT] != fmt:
                continue
            if step is not None and r[_I_STEP] != step:
                continue
            if module is not None and r[_I_MODULE] != module:
                continue
            if name is not None and r[_I_NAME] != name:
                continue
            yield r

    def rows(self, kind=None, *, fmt=None, step=None, module=None, name=None) -> list[dict]:
        """Tensor rows (plain dicts with the keys ROW_FIELDS), optionally filtered; `kind` may be
        a string or a tuple of kinds, `fmt` a Format or its name."""
        return [dict(zip(ROW_FIELDS, r, strict=True))
                for r in self._match(kind, fmt, step, module, name)]

    def steps(self) -> list[dict]:
        """One row per step: the trainer's facts (loss, scale, skipped, ...) and first_nonfinite."""
        return [dict(s) for s in self._steps]

    def histogram(self, kind=None, *, fmt=None, step=None, module=None, name=None) -> np.ndarray:
        """Summed exponent histogram (BINS columns) of the matching rows.

        Columns 0..E_MAX-E_MIN are exponents E_MIN..E_MAX (see EXPONENTS), then below, above,
        zero, non-finite. Of the values before rounding; for update rows, of |update|/|weight|.
        """
        total = np.zeros(BINS, dtype=np.int64)
        ids = [r[0] for r in self._match(kind, fmt, step, module, name)]
        if ids:
            total += self._hists.array()[ids].sum(axis=0)
        return total

    def summary(self, kind=None, *, fmt=None, step=None, module=None, name=None) -> dict:
        """Counters summed over the matching rows, with underflow_share and lost_share."""
        tot = dict.fromkeys(_COUNTERS, 0)
        idx = [(k, _F[k]) for k in _COUNTERS]
        max_abs, min_abs = 0.0, math.inf
        i_max, i_min = _F["max_abs"], _F["min_abs"]
        for r in self._match(kind, fmt, step, module, name):
            for k, i in idx:
                tot[k] += r[i]
            max_abs = max(max_abs, r[i_max] or 0.0)
            if r[i_min] is not None:
                min_abs = min(min_abs, r[i_min])
        tot["max_abs"] = max_abs
        tot["min_abs"] = None if math.isinf(min_abs) else min_abs
        nz = tot["nonzero_wide"]
        tot["underflow_share"] = tot["underflow"] / nz if nz else 0.0
        tot["lost_share"] = tot["lost"] / tot["nonzero_update"] if tot["nonzero_update"] else 0.0
        return tot

    # ---- files ----
    def save(self, run_dir) -> str:
        """Write `run_dir/analysis/`: tensors.jsonl, steps.jsonl, histograms.npz, meta.json.

        Plain JSON lines and an npz of integer arrays (read without pickle). Returns the folder.
        A recording already there (a run that was resumed) keeps its steps before the first step
        recorded here; the later ones are replaced.
        """
        folder = _folder(run_dir)
        os.makedirs(folder, exist_ok=True)
        if os.path.exists(os.path.join(folder, "tensors.jsonl")) and self._steps:
            first = min((s["step"] for s in self._steps if s.get("step") is not None), default=None)
            if first is not None:
                try:
                    old = Recording.load(folder)
                except (OSError, ValueError):
                    old = None
                if old is not None:
                    return old._before(first)._extend(self)._write(folder)
        return self._write(folder)

    def _before(self, step) -> Recording:
        out = Recording()
        out.meta = dict(self.meta)
        for r in self._rows:
            if r[_I_STEP] is not None and r[_I_STEP] < step:
                out._append_row(r, self._hists[r[0]])
        out._steps = [s for s in self._steps if s.get("step") is not None and s["step"] < step]
        return out

    def _extend(self, other: Recording) -> Recording:
        for r in other._rows:
            self._append_row(r, other._hists[r[0]])
        self._steps += other._steps
        self.meta.update(other.meta)
        return self

    def _append_row(self, row: tuple, hist) -> None:
        self._rows.append((len(self._rows),) + tuple(row[1:]))
        self._hists.append(hist)

    def _write(self, folder) -> str:
        with open(os.path.join(folder, "tensors.jsonl"), "w") as f:
            for r in self._rows:
                f.write(json.dumps(dict(zip(ROW_FIELDS, r, strict=True)), allow_nan=False) + "\n")
        with open(os.path.join(folder, "steps.jsonl"), "w") as f:
            for s in self._steps:
                f.write(json.dumps(_jsonable(s), allow_nan=False) + "\n")
        np.savez_compressed(os.path.join(folder, "histograms.npz"), counts=self._hists.array(),
                            exponents=EXPONENTS)
        meta = {"version": _VERSION, "e_min": E_MIN, "e_max": E_MAX,
                "columns": "exponents e_min..e_max, below, above, zero, nonfinite",
                "histogram_of": "binary exponent floor(log2|x|) of the value before rounding; "
                                "update rows: of |update| / |weight|",
                "row_fields": list(ROW_FIELDS), **self.meta}
        with open(os.path.join(folder, "meta.json"), "w") as f:
            json.dump(_jsonable(meta), f, indent=1)
        return folder

    @classmethod
    def load(cls, run_dir) -> Recording:
        """Read what `save` wrote (`run_dir` or its `analysis/` folder)."""
        folder = _folder(run_dir)
        if not os.path.exists(os.path.join(folder, "tensors.jsonl")):
            raise FileNotFoundError(f"no recording in {run_dir} (train with --record to make one)")
        rec = cls.__new__(cls)
        Recording.__init__(rec)
        with open(os.path.join(folder, "meta.json")) as f:
            rec.meta = json.load(f)
        if (rec.meta.get("e_min"), rec.meta.get("e_max")) != (E_MIN, E_MAX):
            raise ValueError(f"{folder}: histogram range "
                             f"{rec.meta.get('e_min')}..{rec.meta.get('e_max')}"
                             f" differs from this simprec's {E_MIN}..{E_MAX}")
        with open(os.path.join(folder, "tensors.jsonl")) as f:
            rec._rows = [tuple(d.get(k) for k in ROW_FIELDS)
                         for d in (json.loads(line) for line in f if line.strip())]
        with open(os.path.join(folder, "steps.jsonl")) as f:
            rec._steps = [json.loads(line) for line in f if line.strip()]
        with np.load(os.path.join(folder, "histograms.npz"), allow_pickle=False) as z:
            rec._hists = _Hist(z["counts"])
        if len(rec._hists) != len(rec._rows):
            raise ValueError(f"{folder}: {len(rec._rows)} rows but {len(rec._hists)} histograms")
        return rec


def _folder(run_dir) -> str:
    """RUN/analysis for a run directory; the folder itself when it is already a recording."""
    folder = os.fspath(run_dir)
    if os.path.basename(os.path.normpath(folder)) == RECORDING_DIR or os.path.exists(
            os.path.join(folder, "tensors.jsonl")):
        return folder
    for name in (RECORDING_DIR, "recording"):  # "recording/": an older name, still read
        if os.path.exists(os.path.join(folder, name, "tensors.jsonl")):
            return os.path.join(folder, name)
    return os.path.join(folder, RECORDING_DIR)


def has_recording(run_dir) -> bool:
    return os.path.exists(os.path.join(_folder(run_dir), "tensors.jsonl"))


def load(run_dir) -> Recording:
    """The recording saved in `run_dir` (see `Recording.save`)."""
    return Recording.load(run_dir)


def _jsonable(obj):
    """Facts as JSON: numpy scalars and arrays to Python, non-finite floats to strings."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else str(v)
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, np.ndarray) and obj.size == 1:
        return _jsonable(obj.reshape(()).item())
    if hasattr(obj, "item") and callable(obj.item):  # a 1-element Tensor
        try:
            return _jsonable(obj.item())
        except Exception:  # noqa: BLE001
            pass
    return getattr(obj, "name", None) or repr(obj)


def _fmt_name(fmt) -> str:
    return getattr(fmt, "name", None) or str(fmt)


class Recorder(Recording):
    """Record, step by step, what rounding does to every tensor of a run.

    ```python
    with Recorder(model) as rec:
        for step, (xb, yb) in enumerate(batches):
            rec.start_step(step)
            ...  # forward, scaler.scale(loss).backward(), scaler.step(opt), scaler.update()
            rec.end_step(loss=float(loss), scale=scaler.get_scale(), skipped=...)
    rec.rows("activation_grad", fmt="fp16")   # plain dicts
    rec.save(run_dir)
    ```

    `model` (optional) names the weights: casts of its parameters are recorded as kind
    ``weight`` under the parameter's dotted name, and parameters without a name get theirs.
    `every`: record tensor rows on every `every`-th step only (step facts are kept for all).
    `kinds`: record only these kinds (default: all).
    Without steps (no `start_step` call) every event is recorded under step ``None``; once steps
    are used, events between `end_step` and the next `start_step` (evaluation passes) are not.
    """

    def __init__(self, model=None, *, every: int = 1, kinds=None):
        super().__init__()
        if every < 1:
            raise ValueError(f"Recorder: every must be >= 1, got {every}")
        self.model = model
        self.every = int(every)
        self.kinds = None if kinds is None else frozenset(kinds)
        self.step = None
        self._active = True
        self._acc: OrderedDict = OrderedDict()
        self._first_nonfinite = None
        self._scaler = None
        self._param_names: dict[int, str] = {}
        self._param_data: dict[int, str] = {}
        self._in_step = False
        self._stepping = False  # True once start_step was called

        self._fmt_cache: dict = {}
        if model is not None and hasattr(model, "named_parameters"):
            for pname, p in model.named_parameters():
                if getattr(p, "name", None) is None:
                    try:
                        p.name = pname
                    except AttributeError:
                        pass
                self._param_names[id(p)] = pname
        self.meta = {"params": list(self._param_names.values())}
        if model is not None and hasattr(model, "named_modules"):
            self.meta["modules"] = {path: type(m).__name__ for path, m in model.named_modules()
                                    if path}

    # ---- context manager ----
    def __enter__(self) -> Recorder:
        if self not in hooks.observers:
            hooks.observers.append(self)
        return self

    def __exit__(self, *exc) -> None:
        if self._in_step:
            self.end_step()
        elif self._acc:
            self._flush()
        while self in hooks.observers:
            hooks.observers.remove(self)

    @contextmanager
    def paused(self):
        """Context manager: events inside are not recorded (evaluation passes, say)."""
        was = self in hooks.observers
        while self in hooks.observers:
            hooks.observers.remove(self)
        try:
            yield self
        finally:
            if was and self not in hooks.observers:
                hooks.observers.append(self)

    # ---- step boundaries (the trainer calls them) ----
    def start_step(self, step: int) -> None:
        if self._in_step:
            self.end_step()
        elif self._acc:
            self._flush()
        self.step = int(step)
        self._in_step = True
        self._stepping = True
        self._active = self.step % self.every == 0
        self._first_nonfinite = None
        self._scaler = None
        self._param_data = {}
        if self.model is not None and hasattr(self.model, "named_parameters"):
            for pname, p in self.model.named_parameters():
                self._param_data[id(p.data)] = pname

    def end_step(self, **facts) -> dict:
        """Close the step: flush its rows and store a step row with `facts` (loss, scale, ...)."""
        row = {"step": self.step}
        if self._scaler is not None:
            row.update({k: self._scaler.get(k) for k in ("scale", "found_inf", "skipped")})
        row.update(_jsonable(facts))
        if "scale" in row:
            row["scale"] = _to_float(row["scale"])
        if self._first_nonfinite is not None:
            row["first_nonfinite"] = dict(self._first_nonfinite)
        else:
            row["first_nonfinite"] = None
        row["recorded"] = self._active
        self._steps.append(row)
        self._flush()
        self._in_step = False
        self._active = True
        self.step = None
        return row

    # ---- the observer ----
    def on_round(self, event: dict) -> None:
        if self._stepping and not self._in_step:
            return  # between end_step and start_step: an evaluation pass, say
        kind = event.get("kind")
        if kind == "scaler":
            self._scaler = {k: _jsonable(v) for k, v in event.items() if k != "kind"}
            return
        if kind == "update":
            if self._active:
                self._on_update(event)
            return
        fmt = event.get("fmt")
        if fmt is None or not getattr(fmt, "is_float", False):
            return
        wide, rounded = event.get("wide"), event.get("rounded")
        if wide is None or rounded is None:
            return
        name = event.get("name")
        if kind == "cast" and self._param_data:
            pname = self._param_data.get(id(wide))
            if pname is not None:
                kind, name = "weight", pname
        recorded = self._active and (self.kinds is None or kind in self.kinds)
        if not recorded and self._first_nonfinite is not None:
            return
        same = wide is rounded
        op = event.get("op")
        if op in _EXACT_OPS or (same and (op in _UPCASTS or getattr(fmt, "bits", 32) < 32)):
            # nothing was rounded: an op exact by construction, an exact upcast, or a value the
            # op declared exact in its (narrow) format (`Function.finish(..., exact=True)`)
            return
        backend = event.get("backend")
        r = _host(rounded, backend)
        w = r if same else _host(wide, backend)
        if not recorded:  # only the first non-finite op is wanted: one pass
            if np.isfinite(r).all():
                return
        st = _Stats(w, r, same, self._min_normal(fmt))
        if st.nonfinite and self._first_nonfinite is None:
            self._first_nonfinite = {"op": event.get("op"), "kind": kind,
                                     "module": event.get("module", ""), "name": name,
                                     "fmt": _fmt_name(fmt), "overflow": st.overflow > 0}
        if not recorded:
            return
        if getattr(fmt, "overflow", "inf") == "saturate" and not same:
            with np.errstate(invalid="ignore"):
                st.overflow += int(np.count_nonzero(np.abs(w) > fmt.max))
        self._add(self._row(kind, event.get("module") or "", name, _fmt_name(fmt)),
                  event.get("op"), st)

    def _min_normal(self, fmt) -> int | None:
        key = id(fmt)
        hit = self._fmt_cache.get(key)
        if hit is None or hit[0] is not fmt:
            hit = self._fmt_cache[key] = (fmt, _min_normal_biased(fmt))
        return hit[1]

    def _row(self, kind, module, name, fmt_name) -> _Acc:
        key = (kind, module, name, fmt_name)
        acc = self._acc.get(key)
        if acc is None:
            acc = self._acc[key] = _Acc()
        return acc

    @staticmethod
    def _add(acc: _Acc, op, st: _Stats) -> None:
        c = acc.c
        acc.events += 1
        if op is not None:
            acc.ops[op] = acc.ops.get(op, 0) + 1
        c[0] += st.n                               # count
        c[1] += st.n - st.zeros_w                  # nonzero_wide
        c[2] += st.zeros_r                         # zeros
        c[3] += st.zeros_r - st.zeros_w            # underflow
        c[4] += st.subnormal
        c[5] += st.overflow
        c[6] += st.nan
        c[7] += st.inf
        acc.h256 += st.h_w
        if st.max_bits > acc.max_bits:
            acc.max_bits = st.max_bits
        if st.min_bits and (not acc.min_bits or st.min_bits < acc.min_bits):
            acc.min_bits = st.min_bits

    def _on_update(self, event: dict) -> None:
        fmt = event.get("fmt")
        name = event.get("name")
        backend = event.get("backend")
        old = _fp32_view(_host(event["old"], backend))
        new = _fp32_view(_host(event["new"], backend))
        upd = _fp32_view(_host(event["update"], backend))
        module = event.get("module") or _module_of(name)
        fmt_name = _fmt_name(fmt)
        acc = self._row("update", module, name, fmt_name)
        acc.events += 1
        op = event.get("op") or "update"
        acc.ops[op] = acc.ops.get(op, 0) + 1
        ub = upd.view(np.uint32) & _ABS_MASK
        n = ub.size
        if n:
            top, bottom = int(ub.max()), int(ub.min())
            zero_updates = 0 if bottom else n - int(np.count_nonzero(ub))
            low = bottom or ((int((ub - _ONE).min()) + 1) & 0xFFFFFFFF if zero_updates < n else 0)
            nonfinite = int(np.count_nonzero(ub >= _INF_BITS)) if top >= _INF_BITS else 0
            c = acc.c
            c[0] += n                                   # count
            c[1] += n - zero_updates                    # nonzero_wide: nonzero updates
            c[2] += zero_updates                        # zeros
            if nonfinite:
                inf = int(np.count_nonzero(ub == _INF_BITS))
                c[6] += nonfinite - inf
                c[7] += inf
                top = int(np.max(ub, where=ub < _INF_BITS, initial=0))
            c[8] += n - zero_updates                    # nonzero_update
            if top > acc.max_bits:
                acc.max_bits = top
            if low and low < _INF_BITS and (not acc.min_bits or low < acc.min_bits):
                acc.min_bits = low
            if n - zero_updates:
                # a zero update leaves its weight as it is: lost = unchanged - zero updates
                unchanged = int(np.count_nonzero(new == old))
                c[9] += max(0, unchanged - zero_updates)
            # histogram of |update| / |weight|; zero updates count as zeros (0/0 included)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
                ratio = upd / old  # its sign is dropped below
            h512 = np.bincount(ratio.view(np.uint32) >> 23, minlength=512)
            h = h512[:256] + h512[256:]
            if zero_updates and h[255]:
                nan = int(np.count_nonzero((ub == 0) & (old == 0)))
                h[255] -= nan
                h[0] += nan
            acc.h256 += h
        # the stored weight after the step (its histogram is that of the stored values); fp32
        # weights (master copies) are left out: what fp16 sees of them is their cast
        if fmt is not None and getattr(fmt, "is_float", False) and fmt.bits < 32:
            stw = _Stats(new, new, True, self._min_normal(fmt))
            if stw.zeros_r or stw.nonfinite:  # before rounding the value was old + update
                with np.errstate(over="ignore", invalid="ignore"):
                    wide = old + upd
                if stw.zeros_r:
                    nonzero_wide = int(np.count_nonzero(wide))
                    stw.zeros_w = min(stw.zeros_r, n - nonzero_wide)
                if stw.inf:
                    stw.overflow = int(np.count_nonzero(np.isinf(new) & np.isfinite(wide)))
            self._add(self._row("weight", module, name, fmt_name), "update", stw)

    def _flush(self) -> None:
        if not self._acc:
            return
        accs = list(self._acc.items())
        h256 = np.stack([acc.h256 for _, acc in accs])
        zeros = [acc.c[0] - acc.c[1] for _, acc in accs]          # count - nonzero_wide
        hists = _fold_many(h256, zeros)
        first = len(self._rows)
        for j, ((kind, module, name, fmt_name), acc) in enumerate(accs):
            c = acc.c
            i = first + j
            under = c[3] / c[1] if c[1] else 0.0
            lost = (c[9] / c[8] if c[8] else 0.0) if kind == "update" else None
            max_abs = _bits_value(acc.max_bits) if acc.max_bits else 0.0
            min_abs = (_bits_value(acc.min_bits) if acc.min_bits and acc.min_bits < _INF_BITS
                       else None)
            self._rows.append((i, self.step, kind, module, name, fmt_name, acc.events,
                               ",".join(sorted(acc.ops)), *c, under, lost, max_abs, min_abs))
        self._hists.extend(hists)
        self._acc = OrderedDict()


def _module_of(name):
    """'layers.0.weight' -> 'layers.0' (the module a parameter belongs to)."""
    if not name:
        return ""
    return name.rsplit(".", 1)[0] if "." in name else ""


def _to_float(x):
    if x is None:
        return None
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return x
    try:
        v = float(x)
    except (TypeError, ValueError):
        return x
    return v if math.isfinite(v) else str(v)
