"""The progress bar of a training run: tqdm when installed, a plain one-line bar otherwise.

It is shown only when stdout is a terminal (a run whose output goes to a file or a pipe stays
quiet); ``enabled=False`` silences it too. It shows the step, the loss, the loss scale and the
number of skipped steps.
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


class Progress:
    """``update(step, loss=, scale=, skipped=)`` after each step; ``note(text)`` for a line."""

    def __init__(self, total: int, *, initial: int = 0, enabled: bool | None = None,
                 desc: str = "train", stream=None):
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = sys.stdout.isatty() and getattr(self.stream, "isatty", lambda: False)()
        self.enabled = bool(enabled)
        self.total, self.step = int(total), int(initial)
        self._bar = None
        self._last_draw = 0.0
        self._t0, self._s0 = time.perf_counter(), int(initial)
        self._text = ""
        if self.enabled:
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

    def update(self, step: int, *, loss=None, scale=None, skipped: int = 0,
               throughput: str | None = None) -> None:
        if not self.enabled:
            self.step = step
            return
        fields = {"loss": "nan" if loss is None else f"{float(loss):.4f}",
                  "scale": _fmt_scale(scale), "skipped": str(int(skipped))}
        if throughput:
            fields["speed"] = throughput
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
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        eta_s = f"{int(eta) // 60:02d}:{int(eta) % 60:02d}" if eta != float("inf") else "--:--"
        width = 24
        done = int(width * step / max(self.total, 1))
        bar = "#" * done + "." * (width - done)
        self._text = (f"{step}/{self.total} [{bar}] loss {fields['loss']} scale "
                      f"{fields['scale']} skipped {fields['skipped']} {rate:.1f} step/s "
                      + (f"{throughput} " if throughput else "") + f"ETA {eta_s}")
        self.stream.write("\r" + self._text + "\033[K")
        self.stream.flush()

    def note(self, text: str) -> None:
        """Print a line above the bar (evaluation results)."""
        if not self.enabled:
            return
        if self._bar is not None:
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
