"""Containers: Sequential (runs its layers in order) and ModuleList (holds them)."""

from __future__ import annotations

from .module import Module

__all__ = ["ModuleList", "Sequential"]


class _Indexed(Module):
    """Sub-modules named "0", "1", ...; indexing, slicing, len and iteration like torch's."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def _index(self, idx: int) -> int:
        n = len(self._modules)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range for {type(self).__name__} of length {n}")
        return idx % n

    def __getitem__(self, idx):
        values = list(self._modules.values())
        if isinstance(idx, slice):
            part = values[idx]
            return Sequential(*part) if isinstance(self, Sequential) else ModuleList(part)
        return values[self._index(idx)]

    def __setitem__(self, idx: int, module: Module) -> None:
        setattr(self, str(self._index(idx)), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module):
        """Add `module` at the end, named by its position."""
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}: expected a Module, "
                            f"got {type(module).__name__}")
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self


class Sequential(_Indexed):
    """`Sequential(a, b, c)(x) == c(b(a(x)))`; layers named "0", "1", ... as in torch."""

    def __init__(self, *modules: Module):
        super().__init__(modules)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x


class ModuleList(_Indexed):
    """A list of modules whose parameters belong to the owner (no forward of its own)."""
