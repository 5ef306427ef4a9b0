"""PNG figures of a recording (matplotlib, imported lazily, Agg backend).

Every function takes plain data (histograms, lists of per-step values) and a path, draws one
figure with labelled axes, units and a legend, and saves it. `have_matplotlib()` tells whether
figures can be drawn at all; without matplotlib the report is written without them.
"""

from __future__ import annotations

import math

import numpy as np

from .recorder import BIN_ABOVE, BIN_BELOW, BIN_NONFINITE, BIN_ZERO, E_MAX, E_MIN, EXPONENTS

__all__ = ["have_matplotlib", "exponent_histogram", "loss_curves", "scale_trace",
           "underflow_per_layer", "lost_updates", "format_ranges", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'simprec[plot]'  (or: pip install matplotlib)"

# Colours of the format ranges (shaded) and of the data series.
_RANGE_COLOURS = {"lost": "#d62728", "subnormal": "#ff7f0e", "normal": "#2ca02c",
                  "overflow": "#7f7f7f"}
_STYLES = ["-", "--", ":", "-."]
_SERIES = ["#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#ff7f0e", "#2ca02c",
           "#d62728", "#7f7f7f"]


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def format_ranges(fmt) -> dict:
    """Exponent ranges (inclusive, floor(log2|x|)) of a format: what happens to an fp32 value
    with that exponent when it is rounded into `fmt`.

    lost: rounds to zero (below half the smallest subnormal); subnormal: kept with fewer
    significant bits; normal: full precision; overflow: becomes inf (or saturates).
    """
    emin = int(round(math.log2(fmt.smallest_normal)))
    emax = int(math.floor(math.log2(fmt.max)))
    if getattr(fmt, "subnormals", True):
        sub_lo = int(round(math.log2(fmt.smallest_subnormal)))
        # [2^(sub_lo-1), 2^sub_lo) rounds up to the smallest subnormal (except its lower end)
        return {"lost": (None, sub_lo - 2), "subnormal": (sub_lo - 1, emin - 1),
                "normal": (emin, emax), "overflow": (emax + 1, None)}
    return {"lost": (None, emin - 2), "subnormal": None, "normal": (emin - 1, emax),
            "overflow": (emax + 1, None)}


def _shade_ranges(ax, fmt, xlim):
    """Shade the format's ranges and name each at the top of the axes."""
    ranges = format_ranges(fmt)
    names = {"lost": "lost\n(rounds to 0)", "subnormal": "subnormal\n(fewer bits)",
             "normal": "normal", "overflow": "overflow\n(inf)"}
    for key, span in ranges.items():
        if span is None:
            continue
        lo = xlim[0] if span[0] is None else span[0] - 0.5
        hi = xlim[1] if span[1] is None else span[1] + 0.5
        lo, hi = max(lo, xlim[0]), min(hi, xlim[1])
        if hi <= lo:
            continue
        ax.axvspan(lo, hi, color=_RANGE_COLOURS[key], alpha=0.13, lw=0)
        # the format's name on a line of its own: the label fits a range a few binades wide
        ax.text((lo + hi) / 2, 0.98, f"{fmt.name}\n{names[key]}",
                transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=8,
                color=_RANGE_COLOURS[key], fontweight="bold", clip_on=True)


_LABEL_BINADES = 6  # the narrowest shaded range that shows, in binades (its label's width)


def exponent_histogram(path, series: dict, fmt, *, title: str, xlabel=None, note=None,
                       threshold=None, spans=None, xrange=None):
    """Share of values per binary exponent, one step line per series, format ranges shaded.

    `series`: label -> histogram (BINS columns, see simprec.analysis.recorder). Shares are of
    the nonzero values of each series; the share of exact zeros is given in the legend.
    `threshold`: (exponent, label) of a vertical line (e.g. the 2^-11 update/weight ratio).
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5.6), dpi=110)
    nonzero_any = [h for h in series.values() if _nonzero(h) > 0]
    lo, hi = (-50, 22) if xrange is None else xrange
    if nonzero_any and xrange is None:
        occupied = np.flatnonzero(sum(np.asarray(h[:len(EXPONENTS)]) for h in nonzero_any))
        if occupied.size:
            lo = min(lo, int(EXPONENTS[occupied[0]]) - 2)
            hi = max(hi, int(EXPONENTS[occupied[-1]]) + 2)
    if fmt is not None:  # room for the overflow range's label: a few binades of it
        hi = max(hi, format_ranges(fmt)["overflow"][0] + _LABEL_BINADES)
    lo, hi = max(lo, E_MIN), min(hi, E_MAX)
    xlim = (lo - 0.5, hi + 0.5)
    if fmt is not None:
        _shade_ranges(ax, fmt, xlim)
    for lo_e, hi_e, colour, text in spans or ():
        lo_x = xlim[0] if lo_e is None else max(xlim[0], lo_e - 0.5)
        hi_x = xlim[1] if hi_e is None else min(xlim[1], hi_e + 0.5)
        if hi_x > lo_x:
            ax.axvspan(lo_x, hi_x, color=colour, alpha=0.13, lw=0)
            ax.text((lo_x + hi_x) / 2, 0.98, text, transform=ax.get_xaxis_transform(), ha="center",
                    va="top", fontsize=8, color=colour, fontweight="bold")
    for i, (label, h) in enumerate(series.items()):
        h = np.asarray(h, dtype=np.float64)
        nz = _nonzero(h)
        if nz == 0:
            continue
        share = 100.0 * h[:len(EXPONENTS)] / nz
        total = h.sum()
        zero_pct = 100.0 * h[BIN_ZERO] / total if total else 0.0
        extra = []
        if h[BIN_BELOW]:
            extra.append(f"{100.0 * h[BIN_BELOW] / nz:.3g}% < 2^{E_MIN}")
        if h[BIN_ABOVE] or h[BIN_NONFINITE]:
            extra.append(f"{100.0 * (h[BIN_ABOVE] + h[BIN_NONFINITE]) / nz:.3g}% inf or > "
                         f"2^{E_MAX}")
        more = "; " + "; ".join(extra) if extra else ""
        lab = f"{label} (exact zeros: {zero_pct:.1f}% of all{more})"
        ax.step(EXPONENTS, share, where="mid", lw=1.8, color=_SERIES[i % len(_SERIES)], label=lab)
    if threshold is not None:
        ax.axvline(threshold[0], color="k", ls="--", lw=1, label=threshold[1])
    ax.set_xlim(*xlim)
    top = max((100.0 * np.max(np.asarray(h, float)[:len(EXPONENTS)]) / _nonzero(h)
               for h in nonzero_any), default=1.0)
    ax.set_ylim(0, top * 1.25)  # room for the range names (three lines)
    ax.set_xlabel(xlabel or "binary exponent of the fp32 value before rounding, floor(log2 |x|)")
    ax.set_ylabel("share of nonzero values (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)
    return _save(fig, path, note)


def _save(fig, path, note=None):
    """Lay out `fig` (with an optional footnote), write it to `path`, free it; returns `path`."""
    if note:
        fig.text(0.01, 0.01, note, fontsize=7.5, color="#444")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    fig.savefig(path)
    _plt().close(fig)
    return path


def _nonzero(h):
    h = np.asarray(h)
    return float(h.sum() - h[BIN_ZERO])


def loss_curves(path, runs: dict, *, title="Training loss", eval_key="accuracy", log=True,
                unit=None):
    """`runs`: label -> {"steps": [...], "loss": [...], "eval_steps": [...], "eval": [...]}.

    Left panel: training loss per step (log scale); right panel (when any run has evaluations):
    `eval_key` per evaluation, as points joined by a line only when a run has three or more
    (two points make no curve), on the same step axis as the left panel. `unit`: the loss's
    unit for the axis labels ("nats/char" for a language model).
    """
    plt = _plt()
    has_eval = any(r.get("eval") for r in runs.values())
    fig, axes = plt.subplots(1, 2 if has_eval else 1, figsize=(11 if has_eval else 7, 4.2), dpi=110)
    axes = np.atleast_1d(axes)
    ax = axes[0]
    for i, (label, r) in enumerate(runs.items()):
        steps, loss = np.asarray(r.get("steps", []), float), np.asarray(r.get("loss", []), float)
        if steps.size == 0:
            continue
        ok = np.isfinite(loss)
        colour = _SERIES[i % len(_SERIES)]
        ax.plot(steps[ok], loss[ok], lw=1.0, alpha=0.35, color=colour)
        style = _STYLES[i % len(_STYLES)]
        if ok.sum() >= 20:
            k = max(5, int(ok.sum()) // 40)
            smooth = np.convolve(loss[ok], np.ones(k) / k, mode="valid")
            ax.plot(steps[ok][k - 1:], smooth, lw=2, ls=style, color=colour,
                    label=f"{label} (mean of {k} steps)")
        else:
            ax.plot([], [], lw=2, ls=style, color=colour, label=label)
        bad = ~ok
        if bad.any():
            ax.plot(steps[bad], np.full(bad.sum(), np.nanmax(loss[ok]) if ok.any() else 1.0), "x",
                    color=colour, label=f"{label}: non-finite loss")
    finite = np.concatenate([np.asarray(r.get("loss", []), float) for r in runs.values()] or [[]])
    finite = finite[np.isfinite(finite) & (finite > 0)]
    if log and finite.size and finite.max() / finite.min() < 10:
        log = False  # less than a decade: a linear axis reads better
    if log:
        from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("optimizer step")
    per = f"{unit}, per batch" if unit else "per batch"
    ax.set_ylabel(f"training loss ({per}; log scale)" if log else f"training loss ({per})")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if has_eval:
        xlim = ax.get_xlim()
        ax = axes[1]
        for i, (label, r) in enumerate(runs.items()):
            if r.get("eval"):
                vals = np.asarray(r["eval"], float)
                scale = 100.0 if eval_key == "accuracy" and np.nanmax(vals) <= 1.0 else 1.0
                few = len(vals) < 3
                ax.plot(r["eval_steps"], vals * scale, marker="o", ms=6 if few else 3,
                        lw=0 if few else 1.5, ls=_STYLES[i % len(_STYLES)],
                        color=_SERIES[i % len(_SERIES)], label=label)
                if few:  # a point or two: their values, written beside them
                    right = xlim[0] + 0.6 * (xlim[1] - xlim[0])
                    for x, v in zip(r["eval_steps"], vals * scale, strict=True):
                        if np.isfinite(v):
                            ax.annotate(f"{v:.4g}", (x, v), textcoords="offset points",
                                        xytext=(-7, 5) if x > right else (7, 5), fontsize=8,
                                        ha="right" if x > right else "left")
        ax.set_xlim(*xlim)
        ax.margins(y=0.12)
        ax.set_xlabel("optimizer step")
        if eval_key == "accuracy":
            ax.set_ylabel("test accuracy (%)")
        else:
            ax.set_ylabel(f"evaluation {eval_key}" + (f" ({unit})" if unit else ""))
        ax.set_title("Evaluation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def scale_trace(path, runs: dict, *, title="Loss scale"):
    """`runs`: label -> {"steps", "scale", "skipped"}: the scale (log2 axis) per step, skipped
    steps marked with a cross. The axis spans at least one binade either side of the values and
    is labelled at whole powers of two only, so a scale that never changes is a flat line at
    its value between two labelled neighbours."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    finite = []
    for i, (label, r) in enumerate(runs.items()):
        steps = np.asarray(r["steps"], float)
        scale = np.asarray([np.nan if s is None else float(s) for s in r["scale"]], float)
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.log2(scale)
        finite.append(e[np.isfinite(e)])
        colour = _SERIES[i % len(_SERIES)]
        ok = e[np.isfinite(e)]
        note = (f" (2^{ok[0]:g} throughout)" if ok.size and np.all(ok == ok[0]) else "")
        ax.step(steps, e, where="post", lw=1.6, color=colour, label=f"{label}: scale{note}")
        skipped = np.asarray([bool(s) for s in r.get("skipped", [False] * len(steps))])
        if skipped.any():
            ax.plot(steps[skipped], e[skipped], "x", color="#d62728", ms=7, mew=2,
                    label=f"{label}: skipped step ({int(skipped.sum())})")
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    values = np.concatenate(finite) if finite else np.zeros(0)
    if values.size:
        ax.set_ylim(math.floor(values.min()) - 1, math.ceil(values.max()) + 1)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=3))
    ax.yaxis.set_major_formatter(FuncFormatter(
        lambda v, _: f"$2^{{{int(round(v))}}}$" if abs(v - round(v)) < 1e-9 else ""))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss scale (log2 axis)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def underflow_per_layer(path, series: dict, *, title, ylabel="gradient values lost to underflow "
                                                             "(%)",
                        legend_title="layer (dotted name)"):
    """`series`: layer -> (steps, shares in 0..1): one line per layer."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4.4), dpi=110)
    for i, (label, (steps, shares)) in enumerate(series.items()):
        steps, shares = np.asarray(steps, float), 100.0 * np.asarray(shares, float)
        keep = np.isfinite(shares)  # steps where the layer had no nonzero value: no share
        steps, shares = steps[keep], shares[keep]
        colour = _SERIES[i % len(_SERIES)]
        if steps.size > 60:
            ax.plot(steps, shares, lw=0.8, alpha=0.3, color=colour)
            k = max(3, steps.size // 40)
            ax.plot(steps[k - 1:], np.convolve(shares, np.ones(k) / k, mode="valid"), lw=1.8,
                    color=colour, label=f"{label} (mean of {k} steps)")
        else:
            ax.plot(steps, shares, "o-", ms=3, lw=1.6, color=colour, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title=legend_title, title_fontsize=8, loc="center left",
              bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, path)


def lost_updates(path, groups: dict, *, title, threshold_note=None):
    """Grouped bars: `groups` maps a run label to {parameter name: share in 0..1}."""
    plt = _plt()
    params = []
    for shares in groups.values():
        for p in shares:
            if p not in params:
                params.append(p)
    n = max(1, len(groups))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(params) + 3), 4.4), dpi=110)
    x = np.arange(len(params))
    for i, (label, shares) in enumerate(groups.items()):
        vals = [100.0 * shares.get(p, np.nan) for p in params]
        bars = ax.bar(x + (i - (n - 1) / 2) * width, vals, width, color=_SERIES[i % len(_SERIES)],
                      label=label)
        for b, v in zip(bars, vals, strict=True):
            if np.isfinite(v):
                ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.1f}", ha="center", va="bottom",
                        fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(params, rotation=20, ha="right", fontsize=8)
    ax.set_xlabel("parameter")
    ax.set_ylabel("nonzero updates that left the weight unchanged (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path, threshold_note)


def bars(path, labels, values, *, title, ylabel, xlabel, annotate_fmt="{:.1f}", colours=None,
         log=False):
    """A simple labelled bar chart (one value per label)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) + 2), 4.2), dpi=110)
    x = np.arange(len(labels))
    cols = colours or [_SERIES[i % len(_SERIES)] for i in range(len(labels))]
    b = ax.bar(x, values, color=cols)
    for rect, v in zip(b, values, strict=True):
        if v is not None and np.isfinite(v):
            ax.text(rect.get_x() + rect.get_width() / 2, v, annotate_fmt.format(v), ha="center",
                    va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def scale_sweep(path, labels, underflow, accuracy, skipped, *, title):
    """Two panels over loss-scaling settings: underflow share (log axis) and test accuracy,
    with the number of skipped steps written on each accuracy bar."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(10, 1.6 * len(labels) + 3), 4.4), dpi=110)
    x = np.arange(len(labels))
    cols = [_SERIES[i % len(_SERIES)] for i in range(len(labels))]
    positive = [u for u in underflow if u > 0]
    floor = min(positive) / 3 if positive else 1e-3
    shown = [u if u > 0 else np.nan for u in underflow]
    ax1.set_yscale("log")
    for rect, v in zip(ax1.bar(x, shown, color=cols), underflow, strict=True):
        ax1.text(rect.get_x() + rect.get_width() / 2, v if v > 0 else floor, f"{v:.2g}%",
                 ha="center", va="bottom", fontsize=8)
    ax1.set_ylim(bottom=floor)
    ax1.set_ylabel("activation-gradient values lost to underflow (%, log axis)")
    ax1.set_title("Underflow")
    for rect, v, k in zip(ax2.bar(x, accuracy, color=cols), accuracy, skipped, strict=True):
        note = f"{v:.1f}%" + (f"\n{k} skipped" if k else "")
        ax2.text(rect.get_x() + rect.get_width() / 2, v, note, ha="center", va="bottom", fontsize=8)
    ax2.set_ylim(0, 108)
    ax2.set_ylabel("test accuracy (%)")
    ax2.set_title("Test accuracy (and skipped steps)")
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=8, rotation=15)
        ax.set_xlabel("loss scaling")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    return _save(fig, path)
