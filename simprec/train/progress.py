"""The progress of a training run: a bar on a terminal, plain lines in a log.

When stdout and stderr are terminals it is a bar (tqdm when installed, else a plain one-line
bar). Otherwise (``nohup``, a pipe, output to a file) it writes plain lines to stderr, one every
tenth of the run and at least every ``interval`` seconds, plus the evaluation lines, so that a
log shows how far a run got. ``enabled=False`` silences it. It shows the step, the loss, the
loss scale and the number of skipped steps.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["Progress"]


def _fmt_scale(scale) -> str:
    if scale is None:
        return "-"
    scale = float(scale)
    if scale != 0 and scale == int(scale) and abs(scale) < 1e15:
        return f"{int(scale)}"
    return f"{scale:.3g}"


def _eta(steps_left: int, rate: float) -> str:
    if rate <= 0:
        return "--:--"
    seconds = int(steps_left / rate)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


class Progress:
    """``update(step, loss=, scale=, skipped=)`` after each step; ``note(text)`` for a line."""

    def __init__(self, total: int, *, initial: int = 0, enabled: bool | None = None,
                 desc: str = "train", stream=None, lines: bool | None = None,
                 interval: float = 30.0):
        self.stream = stream or sys.stderr
        terminal = sys.stdout.isatty() and getattr(self.stream, "isatty", lambda: False)()
        self.enabled = True if enabled is None else bool(enabled)
        self.lines = (not terminal) if lines is None else bool(lines)
        self.interval, self.desc = float(interval), desc
        self._every = max(1, -(-int(total) // 10))  # (the first step's line: "it started")
        self.total, self.step = int(total), int(initial)
        self._bar = None
        self._last_draw = 0.0
        self._t0, self._s0 = time.perf_counter(), int(initial)
        self._text = ""
        if self.enabled and not self.lines:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                try:  # a terminal that reports no width (some ptys) gets 100 columns
                    width = os.get_terminal_size(self.stream.fileno()).columns
                except (OSError, AttributeError, ValueError):
                    width = 0
                sized = dict(dynamic_ncols=True) if width > 0 else dict(ncols=100, nrows=24)
                self._bar = tqdm(total=self.total, initial=self.step, desc=desc, unit="step",
                                 file=self.stream, leave=True, **sized)

    def update(self, step: int, *, loss=None, scale=None, skipped: int = 0) -> None:
        if not self.enabled:
            self.step = step
            return
        fields = {"loss": "nan" if loss is None else f"{float(loss):.4f}",
                  "scale": _fmt_scale(scale), "skipped": str(int(skipped))}
        if self.lines:
            now = time.perf_counter()
            if (step % self._every == 0 or step == self.total
                    or now - self._last_draw >= self.interval):
                self._last_draw = now
                rate = (step - self._s0) / max(now - self._t0, 1e-9)
                self.stream.write(f"{self.desc}: step {step}/{self.total}  loss {fields['loss']}  "
                                  f"scale {fields['scale']}  skipped {fields['skipped']}  "
                                  f"{rate:.1f} steps/s  ETA {_eta(self.total - step, rate)}\n")
                self.stream.flush()
            self.step = step
            return
        if self._bar is not None:
            self._bar.update(step - self.step)
            self.step = step
            now = time.perf_counter()
            if now - self._last_draw > 0.2 or step == self.total:
                self._bar.set_postfix(fields, refresh=False)
                self._last_draw = now
            return
        self.step = step
        now = time.perf_counter()
        if now - self._last_draw < 0.25 and step != self.total:
            return
        self._last_draw = now
        rate = (step - self._s0) / max(now - self._t0, 1e-9)
        eta_s = _eta(self.total - step, rate)
        width = 24
        done = int(width * step / max(self.total, 1))
        bar = "#" * done + "." * (width - done)
        self._text = (f"{step}/{self.total} [{bar}] loss {fields['loss']} scale "
                      f"{fields['scale']} skipped {fields['skipped']} {rate:.1f} step/s "
                      f"ETA {eta_s}")
        self.stream.write("\r" + self._text + "\033[K")
        self.stream.flush()

    def note(self, text: str) -> None:
        """Print a line above the bar (evaluation results)."""
        if not self.enabled:
            return
        if self.lines:
            self.stream.write(f"{self.desc}: {text}\n")
            self.stream.flush()
        elif self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write("\r\033[K" + text + "\n" + self._text)
            self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._text:
            self.stream.write("\n")
            self.stream.flush()
        self.enabled = False
