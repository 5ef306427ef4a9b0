"""Backends: the small contract of kernels the autograd runs on, and the registry that finds them.

Built-in backends are found by importing their module (`numpy` here; `cupy` and `torch:<device>`
from the top-level `backends/` plugins, importable from a plain checkout); third-party ones
through the entry-point group `simprec.backends`. Nothing here imports a GPU library until a
backend of that library is asked for.
"""

from __future__ import annotations

import importlib

from .contract import Backend

__all__ = ["Backend", "get_backend", "register_backend", "available_backends"]

_instances: dict[str, Backend] = {}
_factories: dict[str, object] = {}

# name prefix -> "module:attribute" of a factory taking the device suffix ("" if none).
_BUILTIN = {
    "numpy": "simprec.backend.numpy_backend:NumpyBackend",
    "cupy": "simprec_cupy:CupyBackend",
    "torch": "simprec_torch:TorchBackend",
}


def register_backend(prefix: str, factory) -> None:
    """Make `factory(device_suffix)` the backend for names `prefix` and `prefix:<device>`."""
    _factories[prefix] = factory


def _import_factory(target: str):
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        # A checkout without `pip install`: the plugins live in <repo>/backends/.
        import pathlib
        import sys

        plugins = pathlib.Path(__file__).resolve().parents[2] / "backends"
        if plugins.is_dir() and str(plugins) not in sys.path:
            sys.path.append(str(plugins))
        module = importlib.import_module(module_name)
    return getattr(module, attr)


def _entry_point_factories() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="simprec.backends")}


def available_backends() -> list[str]:
    """Names of the backends this installation knows about (not all may work on this machine)."""
    return sorted(set(_BUILTIN) | set(_factories) | set(_entry_point_factories()))


def get_backend(name: str | Backend = "numpy") -> Backend:
    """The backend called `name` ("numpy", "cupy", "torch:cuda", ...), created once per name."""
    if isinstance(name, Backend):
        return name
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name such as 'numpy' or a Backend, "
                        f"got {type(name).__name__}")
    if name in _instances:
        return _instances[name]
    prefix, _, device = name.partition(":")
    factory = _factories.get(prefix)
    if factory is None and prefix in _BUILTIN:
        try:
            factory = _import_factory(_BUILTIN[prefix])
        except ImportError as err:
            raise ValueError(f"backend {name!r} is not usable here: {err}") from err
    if factory is None:
        eps = _entry_point_factories()
        if prefix not in eps:
            raise ValueError(
                f"unknown backend {name!r}; known backends: {', '.join(available_backends())}")
        factory = eps[prefix].load()
    backend = factory(device)
    _instances[name] = backend
    return backend
