"""Observation points of the simulator, for `simprec.analysis`.

Every value the autograd rounds passes through `Function.finish` or `Function.grad_for`, which
call `notify` here when at least one observer is registered; optimizers, `optim.MasterWeights`
and `amp.GradScaler` send their own events (docs/architecture.md lists them all). With none
registered (the default) the cost is one truthiness test per rounding. `module_path` is the
dotted name of the `nn.Module` being run, kept by `Module.__call__`, so observers can name the
layer an event belongs to.
"""

from __future__ import annotations

observers: list = []
_module_stack: list[str] = []


def module_path() -> str:
    """Dotted name of the innermost module being called ('' outside any module)."""
    return _module_stack[-1] if _module_stack else ""


def push_module(name: str) -> None:
    _module_stack.append(name)


def pop_module() -> None:
    _module_stack.pop()


def notify(event: dict) -> None:
    """Send one rounding event to every observer (`observer.on_round(event)`)."""
    for observer in observers:
        observer.on_round(event)
