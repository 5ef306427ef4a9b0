"""`simprec report RUN`: report.md and PNG figures for a run directory.

Reads what the trainer leaves in RUN (config.json, metrics.jsonl, summary.json; see
simprec.train.rundir) and, when the run was recorded (``--record``), RUN/analysis/ (see
simprec.analysis.recorder). Writes RUN/report.md and RUN/figures/*.png:

- ``gradient_exponents.png``: exponent histogram of the activation gradients against the half
  format's normal, subnormal and lost ranges (the figure of Micikevicius et al., 2018);
- ``loss.png``: training loss (and test accuracy when the run evaluated);
- ``loss_scale.png``: the loss scale per step, skipped steps marked;
- ``underflow_per_layer.png``: share of each layer's activation-gradient values lost to
  underflow, per step;
- ``lost_updates.png``: share of nonzero updates that left the stored weight unchanged, per
  parameter.

Without matplotlib the markdown is still written, with a note on how to get the figures.
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict

import numpy as np

from .. import formats
from . import figures
from .recorder import BIN_ZERO, EXPONENTS, Recording, has_recording

__all__ = ["write_report", "read_run", "RunData", "gradient_histogram", "underflow_by_layer",
           "lost_by_param", "half_format", "pct"]

FIGURES = "figures"
OUTSIDE = "outside the model (loss)"  # the row of events with no module (module "")


class RunData:
    """What a run directory holds: config, metrics, summary, recording (or None)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.config = _read_json(os.path.join(self.path, "config.json"))
        self.summary = _read_json(os.path.join(self.path, "summary.json"))
        self.metrics, self.bad_lines = _read_jsonl(os.path.join(self.path, "metrics.jsonl"))
        self.recording = Recording.load(self.path) if has_recording(self.path) else None

    def metrics_problems(self) -> list[str]:
        """What is wrong with metrics.jsonl (empty when nothing): unreadable lines, and train
        steps missing against the run's own count (a file cut by a crash, a disk or an edit)."""
        problems = []
        if self.bad_lines:
            shown = ", ".join(str(n) for n in self.bad_lines[:5])
            problems.append(f"{len(self.bad_lines)} unreadable line(s) (line {shown}"
                            + (", ..." if len(self.bad_lines) > 5 else "") + ")")
        steps = {m["step"] for m in self.train_records() if isinstance(m["step"], int)}
        summary, config = self.summary or {}, self.config or {}
        arm = "experiment_arm" in config  # experiment arms count steps from 0
        first = 0 if arm else 1
        last = (summary.get("steps", 0) - 1 if arm else summary.get("steps_done"))
        if not isinstance(last, int):
            last = max(steps, default=first - 1)
        missing = [s for s in range(first, last + 1) if s not in steps]
        if missing:
            problems.append(f"no line for {len(missing)} of the {last - first + 1} steps "
                            f"(steps {_ranges(missing)})")
        return problems

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    def train_records(self):
        return [m for m in self.metrics if m.get("kind", "train") == "train" and "step" in m]

    def eval_records(self):
        return [m for m in self.metrics if m.get("kind") == "eval" and "step" in m]

    def loss_series(self) -> dict:
        tr = self.train_records()
        ev = self.eval_records()
        key = _eval_key(ev)
        out = {"steps": [m["step"] for m in tr], "loss": [_num(m.get("loss")) for m in tr]}
        if not tr and self.recording is not None:  # a recording without a metrics file
            st = [s for s in self.recording.steps() if "loss" in s]
            out = {"steps": [s["step"] for s in st], "loss": [_num(s["loss"]) for s in st]}
        if key:
            out["eval_steps"] = [m["step"] for m in ev if key in m]
            out["eval"] = [_num(m[key]) for m in ev if key in m]
            out["eval_key"] = key
        return out

    def scale_series(self) -> dict | None:
        """steps, scale, skipped: from the recording's step rows, else from metrics.jsonl."""
        rows = self.recording.steps() if self.recording is not None else []
        rows = [r for r in rows if r.get("scale") is not None] or [
            m for m in self.train_records() if m.get("scale", m.get("loss_scale")) is not None]
        if not rows:
            return None
        if all(_num(r.get("scale", r.get("loss_scale"))) == 1.0 and not r.get("skipped")
               for r in rows):
            return None  # no loss scaling (the trainer logs scale 1.0)
        return {"steps": [r["step"] for r in rows],
                "scale": [_num(r.get("scale", r.get("loss_scale"))) for r in rows],
                "skipped": [bool(r.get("skipped", False)) for r in rows]}


def read_run(path) -> RunData:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such run directory")
    return RunData(path)


# ---------------------------------------------------------------------------- derived series

def half_format(rec: Recording):
    """The narrowest float format the recording's gradients were rounded into (fp16 if none)."""
    names = {r["fmt"] for r in rec.rows(("activation_grad", "weight_grad", "activation"))}
    for name in ("fp8_e5m2", "fp8_e4m3", "fp16", "bf16"):
        if name in names:
            return getattr(formats, name)
    return formats.fp16


def gradient_histogram(rec: Recording, fmt=None, *, kind="activation_grad",
                       steps=None) -> np.ndarray:
    """Summed histogram of `kind` values rounded into `fmt` (the values before rounding)."""
    fmt_name = None if fmt is None else getattr(fmt, "name", fmt)
    if steps is None:
        return rec.histogram(kind, fmt=fmt_name)
    lo, hi = steps
    total = np.zeros(len(EXPONENTS) + 4, dtype=np.int64)
    for s in {r["step"] for r in rec.rows(kind, fmt=fmt_name)}:
        if s is not None and lo <= s <= hi:
            total += rec.histogram(kind, fmt=fmt_name, step=s)
    return total


def underflow_by_layer(rec: Recording, fmt=None, *, kind="activation_grad",
                       labelled=True) -> OrderedDict:
    """layer -> (steps, underflow share per step) for `kind` rows in `fmt` (share of the values
    that were nonzero before rounding and zero after). `labelled`: keys "2 (Linear)" when the
    recording knows the module types, else the dotted names."""
    fmt_name = None if fmt is None else getattr(fmt, "name", fmt)
    acc: dict = {}
    for r in rec.rows(kind, fmt=fmt_name):
        if r["step"] is None:
            continue
        key = r["module"] or OUTSIDE
        per = acc.setdefault(key, {})
        u, n = per.get(r["step"], (0, 0))
        per[r["step"]] = (u + r["underflow"], n + r["nonzero_wide"])
    out = OrderedDict()
    types = rec.meta.get("modules", {}) if labelled else {}
    for key in sorted(acc, key=_layer_order):
        steps = sorted(acc[key])
        shares = [acc[key][s][0] / acc[key][s][1] if acc[key][s][1] else math.nan for s in steps]
        out[f"{key} ({types[key]})" if key in types else key] = (steps, shares)
    return out


def lost_by_param(rec: Recording, *, steps=None) -> OrderedDict:
    """parameter -> share of nonzero updates that left the stored value unchanged (whole run)."""
    acc: dict = {}
    for r in rec.rows("update"):
        if steps is not None and (r["step"] is None or not steps[0] <= r["step"] <= steps[1]):
            continue
        lost, nz = acc.get(r["name"], (0, 0))
        acc[r["name"]] = (lost + r["lost"], nz + r["nonzero_update"])
    return OrderedDict((k, acc[k][0] / acc[k][1] if acc[k][1] else 0.0)
                       for k in sorted(acc, key=lambda n: _layer_order(n or "")))


def lost_by_param_over_time(rec: Recording) -> OrderedDict:
    acc: dict = {}
    for r in rec.rows("update"):
        acc.setdefault(r["name"], []).append((r["step"], r["lost_share"]))
    return OrderedDict((k, ([s for s, _ in v], [x for _, x in v])) for k, v in acc.items())


def _layer_order(name: str):
    parts = []
    for p in name.split("."):
        parts.append((0, int(p), "") if p.isdigit() else (1, 0, p))
    return parts


def pct(x, digits=2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    v = 100.0 * x
    if v == 0:
        return "0%"
    if v < 10 ** -digits:
        return f"{v:.1e}%"
    if v < 1:
        return f"{v:.3g}%"
    return f"{v:.{digits}f}%"


# ---------------------------------------------------------------------------- the report

def write_report(run_dir, *, figures_on: bool | None = None, title: str | None = None) -> str:
    """Write RUN/report.md (and RUN/figures/*.png when matplotlib is available). Returns the
    path of report.md."""
    run = read_run(run_dir)
    plots = figures.have_matplotlib() if figures_on is None else figures_on
    fig_dir = os.path.join(run.path, FIGURES)
    made: dict[str, str] = {}

    def figure(name, fn, *args, **kwargs):
        if not plots:
            return None
        os.makedirs(fig_dir, exist_ok=True)
        path = os.path.join(fig_dir, name)
        fn(path, *args, **kwargs)
        made[name] = f"{FIGURES}/{name}"
        return made[name]

    cfg = run.config or {}
    lines = [f"# Precision report: {title or run.name}", ""]
    if cfg:
        keys = [k for k in ("model", "data", "recipe", "backend", "accumulate", "optimizer", "lr",
                            "batch_size", "steps", "seed") if k in cfg]
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {k} | `{cfg[k]}` |" for k in keys]
        for k in ("recipe_options", "model_options"):
            if cfg.get(k):
                lines.append(f"| {k} | `{json.dumps(cfg[k])}` |")
        lines.append("")
    if run.summary:
        shown = [(k, v) for k, v in run.summary.items()
                 if k not in cfg and k != "run"
                 and (isinstance(v, (int, float, str, bool)) or v is None)]
        if shown:
            lines += ["## Results", "", "| metric | value |", "|---|---|"]
            for k, v in shown:
                value = (f"{100 * v:.2f}%" if "accuracy" in k and isinstance(v, float) and v <= 1
                         else _cell(v))
                lines.append(f"| {k} | {value} |")
            lines.append("")
    problems = run.metrics_problems()
    if problems:
        lines += [f"> **metrics.jsonl is incomplete**: {'; '.join(problems)}. The curves and "
                  "the loss figures below miss those steps; the results table comes from "
                  "summary.json.", ""]
    if not plots:
        lines += ["> **Figures were not drawn**: matplotlib is not installed. Install it with "
                  f"`{figures.INSTALL_HINT}` and run `simprec report {run.path}` again.", ""]

    # loss curves
    series = run.loss_series()
    if series["steps"]:
        ref = figure("loss.png", figures.loss_curves, {run.name: series},
                     title=f"Training loss: "
                           f"{run.name}", eval_key=series.get("eval_key", "accuracy"),
                     unit=loss_unit(cfg))
        lines += ["## Loss", ""]
        if ref:
            lines += [f"![training loss]({ref})", ""]
        finite = [x for x in series["loss"] if x is not None and math.isfinite(x)]
        if finite:
            k = max(1, len(finite) // 10)
            lines.append(f"Training loss: first {_g(np.mean(finite[:k]))}, last "
                         f"{_g(np.mean(finite[-k:]))} (means of {k} steps).")
        if series.get("eval"):
            last = series["eval"][-1]
            value = (f"{100 * last:.2f}%" if "acc" in series["eval_key"] and last is not None
                     and last <= 1 else _cell(last))
            lines.append(f"Last evaluation ({series['eval_key']}) at step "
                         f"{series['eval_steps'][-1]}: {value}.")
        lines.append("")

    # loss scale
    scale = run.scale_series()
    if scale is not None:
        ref = figure("loss_scale.png", figures.scale_trace, {run.name: scale},
                     title=f"Loss scale and skipped steps: {run.name}")
        skipped = [s for s, k in zip(scale["steps"], scale["skipped"], strict=True) if k]
        lines += ["## Loss scale", ""]
        if ref:
            lines += [f"![loss scale]({ref})", ""]
        finite_scales = [s for s in scale["scale"] if s is not None and math.isfinite(s) and s > 0]
        if finite_scales:
            lines.append(f"Scale: first 2^{math.log2(finite_scales[0]):g}, last "
                         f"2^{math.log2(finite_scales[-1]):g}, min "
                         f"2^{math.log2(min(finite_scales)):g}, "
                         f"max 2^{math.log2(max(finite_scales)):g}. Skipped steps: "
                         f"{len(skipped)} of "
                         f"{len(scale['steps'])}.")
        lines.append("")

    rec = run.recording
    if rec is None:
        lines += ["## Precision", "",
                  "This run was not recorded. Train with `simprec train --record` to see, "
                  "tensor by "
                  "tensor and step by step, what rounding does (underflow, overflow, lost "
                  "updates).", ""]
    else:
        lines += _recording_sections(rec, figure)

    lines += ["---", f"Written by `simprec report {run.path}`."
              + (f" Figures: {', '.join(sorted(made))}." if made else ""), ""]
    out = os.path.join(run.path, "report.md")
    with open(out, "w") as f:
        f.write("\n".join(lines))
    return out


def _recording_sections(rec: Recording, figure) -> list[str]:
    fmt = half_format(rec)
    recorded = [s for s in rec.steps() if s.get("recorded", True)]
    lines = ["## Precision, tensor by tensor", "",
             f"Recorded steps: {len(recorded)}. Half format: {fmt.name} (normal from "
             f"2^{int(math.log2(fmt.smallest_normal))}, smallest subnormal "
             f"2^{int(math.log2(fmt.smallest_subnormal))}, max {fmt.max:g}). "
             "Underflow: nonzero before rounding, zero after; share of the values that were "
             "nonzero before rounding.", "",
             "| kind | format | elements | underflow | subnormal | overflow | NaN/inf | max abs | "
             "smallest nonzero |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    combos = []
    for r in rec.rows():
        key = (r["kind"], r["fmt"])
        if key not in combos:
            combos.append(key)
    order = {k: i for i, k in enumerate(("activation", "cast", "activation_grad", "weight",
                                         "weight_grad", "update"))}
    combos.sort(key=lambda k: (order.get(k[0], 99), k[1]))
    for kind, f in combos:
        s = rec.summary(kind, fmt=f)
        n = s["count"] or 1
        lines.append(f"| {kind} | {f} | {s['count']:,} | {pct(s['underflow_share'])} "
                     f"({s['underflow']:,}) | {pct(s['subnormal'] / n)} | {s['overflow']:,} | "
                     f"{s['nan'] + s['inf']:,} | {_g(s['max_abs'])} | {_g(s['min_abs'])} |")
    lines.append("")

    # the paper's figure
    hist = gradient_histogram(rec, fmt)
    if hist.sum() == 0:
        hist = gradient_histogram(rec, None)
        fmt_note = f"(values of every format; {fmt.name} ranges shown for reference)"
    else:
        fmt_note = f"(rounded into {fmt.name})"
    if hist.sum():
        ref = figure("gradient_exponents.png", figures.exponent_histogram,
                     {"activation gradients": hist}, fmt,
                     title=f"Activation gradients, all recorded steps {fmt_note}")
        nz = hist.sum() - hist[BIN_ZERO]
        ranges = figures.format_ranges(fmt)
        lost_hi = ranges["lost"][1]
        lost = hist[:len(EXPONENTS)][EXPONENTS <= lost_hi].sum() + hist[len(EXPONENTS)]
        lines += ["### Activation-gradient exponents", ""]
        if ref:
            lines += [f"![activation gradient exponents]({ref})", ""]
        lines += [f"Of {int(nz):,} nonzero activation-gradient values, "
                  f"{pct(lost / nz if nz else 0)} "
                  f"had exponents in {fmt.name}'s lost range (below 2^{lost_hi + 1}) before "
                  "rounding.",
                  ""]

    layers = underflow_by_layer(rec, fmt, labelled=False)
    if layers:
        ref = figure("underflow_per_layer.png", figures.underflow_per_layer,
                     underflow_by_layer(rec, fmt),
                     title=f"Activation-gradient underflow per layer ({fmt.name})")
        lines += ["### Underflow per layer", ""]
        if ref:
            lines += [f"![underflow per layer]({ref})", ""]
        types = rec.meta.get("modules", {})
        lines += ["| layer | type | underflow, whole run | first step | last step |",
                  "|---|---|---:|---:|---:|"]
        for layer, (_, shares) in layers.items():
            s = rec.summary("activation_grad", fmt=fmt.name,
                            module="" if layer == OUTSIDE else layer)
            finite = [x for x in shares if math.isfinite(x)] or [math.nan]
            lines.append(f"| {layer} | {types.get(layer, '-')} | {pct(s['underflow_share'])} | "
                         f"{pct(finite[0])} | {pct(finite[-1])} |")
        lines += ["", "(first and last step: the first and last recorded steps in which the layer "
                  "had nonzero gradient values before rounding)", ""]
        lines.append("")

    lost = lost_by_param(rec)
    if lost:
        fmts = sorted({r["fmt"] for r in rec.rows("update")})
        ref = figure("lost_updates.png", figures.lost_updates, {"this run": lost},
                     title=f"Lost updates per parameter (stored in {', '.join(fmts)})",
                     threshold_note="An update smaller than half a unit in the last place of its "
                                    "weight (2^-11 of it in fp16) leaves the weight unchanged.")
        lines += ["### Lost updates", "",
                  "Share of elements whose nonzero update left the stored weight unchanged "
                  f"(weights stored in {', '.join(fmts)}).", ""]
        if ref:
            lines += [f"![lost updates]({ref})", ""]
        lines += ["| parameter | lost updates |", "|---|---:|"]
        lines += [f"| {k} | {pct(v)} |" for k, v in lost.items()]
        lines.append("")

    skipped = [s for s in rec.steps() if s.get("skipped")]
    nonfinite = [s for s in rec.steps() if s.get("first_nonfinite")]
    if skipped or nonfinite:
        lines += ["### Non-finite values", "",
                  f"Skipped steps: {len(skipped)}. The first op of a step whose output became "
                  "inf or NaN:", "", "| step | skipped | scale | layer | op | kind | from a "
                                     "finite value |",
                  "|---:|---|---:|---|---|---|---|"]
        shown = (skipped or nonfinite)[:30]
        for s in shown:
            f = s.get("first_nonfinite") or {}
            scale = s.get("scale")
            lines.append(f"| {s['step']} | {bool(s.get('skipped'))} | {_g(scale)} | "
                         f"{f.get('module') or '-'} | {f.get('op') or '-'} | "
                         f"{f.get('kind') or '-'} | "
                         f"{f.get('overflow', '-')} |")
        if len(skipped or nonfinite) > len(shown):
            lines.append(f"| … | ({len(skipped or nonfinite) - len(shown)} more) | | | | | |")
        lines.append("")
    return lines


# ---------------------------------------------------------------------------- small helpers

def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _read_jsonl(path):
    """(records, numbers of the lines that are not JSON objects) of a JSON-lines file."""
    out, bad = [], []
    try:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = None
                if isinstance(rec, dict):
                    out.append(rec)
                elif line.strip():
                    bad.append(number)
    except OSError:
        pass
    return out, bad


def _ranges(steps) -> str:
    """[1, 2, 3, 7] -> "1-3, 7"."""
    parts, start = [], None
    for i, s in enumerate(steps):
        start = s if start is None else start
        if i + 1 == len(steps) or steps[i + 1] != s + 1:
            parts.append(f"{start}" if start == s else f"{start}-{s}")
            start = None
    return ", ".join(parts)


def loss_unit(config: dict) -> str:
    """The unit of a run's cross-entropy: nats per character (text) or per example."""
    return "nats/char" if config.get("data") == "text" else "nats"


def _eval_key(records):
    for key in ("accuracy", "test_accuracy", "eval_accuracy", "acc", "loss", "eval_loss"):
        if any(key in r for r in records):
            return key
    return None


def _num(x):
    if x is None:
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _g(x):
    if x is None:
        return "-"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if v == 0:
        return "0"
    if not math.isfinite(v):
        return str(v)
    if v == 2.0 ** round(math.log2(abs(v))) and abs(math.log2(abs(v))) >= 8:
        return f"2^{int(round(math.log2(v)))}"
    return f"{v:.4g}"


def _cell(v):
    if isinstance(v, float):
        return _g(v)
    return f"`{v}`" if isinstance(v, str) else str(v)
