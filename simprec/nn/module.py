"""Module: the container of parameters, buffers and sub-modules, with torch's API.

What simprec adds to torch's design:
- Names. Every parameter knows its dotted name (`param.name == "blocks.0.attn.in_proj_weight"`)
  and every module its dotted path (`module._path`), relative to the root module. They are
  (re)assigned whenever a sub-module or parameter is attached to a root module and whenever
  `named_parameters()` is called on a root, so the analysis can name every event.
- Hooks. `__call__` pushes the module's path onto `simprec.hooks` while its forward runs, but
  only when an observer is registered: with recording off a call is one list test.
- Formats. `to(sp.fp16)` rounds parameters (and float buffers) in place into a format;
  `to("backend")` moves them to another backend. Parameters stay the same leaf objects, so an
  optimizer built before the call still holds them.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from .. import hooks
from ..backend import Backend, get_backend
from ..formats import Format, bf16, fp16, fp32
from ..tensor import Tensor, clear_grads
from .parameter import Parameter

__all__ = ["IncompatibleKeys", "Module"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])
_depth = 0  # nesting of Module calls made while hooks observers are registered


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class Module:
    """Base class of layers and models: subclasses set attributes in `__init__` and define
    `forward`. Call the instance (`model(x)`), not `forward`, so hooks see the module path."""

    def __init__(self):
        setter = object.__setattr__
        setter(self, "_parameters", {})
        setter(self, "_buffers", {})
        setter(self, "_non_persistent", set())
        setter(self, "_modules", {})
        setter(self, "training", True)
        setter(self, "_path", "")
        setter(self, "_attached", False)  # True once it is a sub-module of another module

    # ------------------------------------------------------------------ attribute routing
    def __setattr__(self, name: str, value) -> None:
        params = self.__dict__.get("_parameters")
        if isinstance(value, (Parameter, Module)) and params is None:
            raise AttributeError(f"cannot assign {type(value).__name__} '{name}' before "
                                 f"Module.__init__() is called (call super().__init__() first)")
        if isinstance(value, Parameter):
            self._forget(name, keep=params)
            params[name] = value
            self._names_changed()
        elif isinstance(value, Module):
            self._forget(name, keep=self._modules)
            self._modules[name] = value
            object.__setattr__(value, "_attached", True)
            self._names_changed()
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter '{name}' "
                                f"(wrap it in nn.Parameter, or assign None)")
            params[name] = None
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as sub-module '{name}' "
                                f"(assign a Module or None)")
            self._modules[name] = None
        elif params is not None and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer '{name}' "
                                f"(assign a Tensor or None)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str):
        # Called only when normal lookup fails: parameters, buffers and sub-modules.
        state = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in state and name in state[store]:
                return state[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def _forget(self, name: str, keep: dict | None = None) -> None:
        """Remove `name` from every store but `keep` (where it is about to be re-registered:
        replacing an entry keeps its position, as in torch)."""
        for store in (self._parameters, self._buffers, self._modules):
            if store is not keep:
                store.pop(name, None)
        self._non_persistent.discard(name)
        self.__dict__.pop(name, None)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register `param` (or None: a declared but absent parameter, like a missing bias)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: '{name}' must be an nn.Parameter or None, "
                            f"got {type(param).__name__}")
        self._check_name(name)
        self._forget(name, keep=self._parameters)
        self._parameters[name] = param
        self._names_changed()

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """A non-trainable tensor of the module (in `state_dict` unless persistent=False;
        `to()` converts and moves it)."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: '{name}' must be a Tensor or None, "
                            f"got {type(tensor).__name__}")
        self._check_name(name)
        self._forget(name, keep=self._buffers)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)
        self._names_changed()

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: '{name}' must be a Module or None, "
                            f"got {type(module).__name__}")
        self._check_name(name)
        if module is None:
            self._forget(name, keep=self._modules)
            self._modules[name] = None
        else:
            setattr(self, name, module)

    register_module = add_module

    def _check_name(self, name: str) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError("call Module.__init__() before registering anything")
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"invalid name {name!r}: a non-empty string without '.'")

    # ------------------------------------------------------------------ names
    def _names_changed(self) -> None:
        if not self._attached:  # a root: its paths are final (a parent re-names on attach)
            self._assign_names()

    def _assign_names(self) -> None:
        """Give every sub-module its dotted path and every parameter/buffer its dotted name,
        relative to this module; a tensor shared by two modules keeps its first name (torch's
        order)."""
        seen = set()
        for path, module in self.named_modules():
            object.__setattr__(module, "_path", path)
            for store in (module._parameters, module._buffers):
                for name, tensor in store.items():
                    if tensor is not None and id(tensor) not in seen:
                        seen.add(id(tensor))
                        tensor.name = _join(path, name)

    # ------------------------------------------------------------------ traversal
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        """(dotted path, module) for this module ("" or `prefix`) and every descendant."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, _join(prefix, name), remove_duplicate)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def _named_tensors(self, store: str, prefix: str, recurse: bool, remove_duplicate: bool):
        modules = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
                   if recurse else [(prefix, self)])
        seen = set()
        for path, module in modules:
            for name, tensor in getattr(module, store).items():
                if tensor is None or (remove_duplicate and id(tensor) in seen):
                    continue
                seen.add(id(tensor))
                yield _join(path, name), tensor

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True):
        """(dotted name, Parameter) pairs, in registration order, each shared parameter once.
        Called on a root module it also (re)sets every `param.name`."""
        if not self._attached and not prefix:
            self._assign_names()
        yield from self._named_tensors("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_tensors("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True):
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def get_submodule(self, target: str) -> Module:
        """The sub-module at dotted path `target` ("" is this module)."""
        module = self
        for part in target.split(".") if target else []:
            child = module._modules.get(part)
            if child is None:
                raise AttributeError(f"{type(module).__name__} has no sub-module '{part}' "
                                     f"(looking up '{target}')")
            module = child
        return module

    def apply(self, fn) -> Module:
        """Call `fn(module)` on every sub-module (children first), then on this one."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes and gradients
    def train(self, mode: bool = True) -> Module:
        """Set training mode (`.training`) here and in every sub-module (Dropout reads it)."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(): mode must be a bool, got {type(mode).__name__}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's gradient (None, or zeros with set_to_none=False)."""
        clear_grads(self.parameters(), set_to_none)

    # ------------------------------------------------------------------ calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    def __call__(self, *args, **kwargs):
        if not hooks.observers:
            return self.forward(*args, **kwargs)
        global _depth
        if _depth == 0 and not self._attached:  # a recorded root call: paths relative to it
            self._assign_names()
        hooks.push_module(self._path)
        _depth += 1
        try:
            return self.forward(*args, **kwargs)
        finally:
            _depth -= 1
            hooks.pop_module()

    # ------------------------------------------------------------------ formats and backends
    def to(self, *targets) -> Module:
        """In place: `to(fmt)` rounds parameters, their gradients and float buffers into `fmt`
        (e.g. `model.to(sp.fp16)` for pure-fp16 training); `to("torch:cuda")` (a backend name or
        object) moves them. Both may be given. Parameters stay the same leaf objects."""
        fmt, backend = None, None
        for target in targets:
            if isinstance(target, Format):
                fmt = target
            elif isinstance(target, (str, Backend)):
                backend = get_backend(target)
            else:
                raise TypeError(f"to(): expected a float Format (sp.fp16, ...) or a backend name, "
                                f"got {target!r}")
        seen = set()
        for module in self.modules():
            for tensor in list(module._parameters.values()) + list(module._buffers.values()):
                if tensor is None or id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                _convert(tensor, fmt, backend)
                if tensor.grad is not None:
                    _convert(tensor.grad, fmt, backend)
        return self

    def half(self) -> Module:
        return self.to(fp16)

    def bfloat16(self) -> Module:
        return self.to(bf16)

    def float(self) -> Module:
        return self.to(fp32)

    # ------------------------------------------------------------------ state dict
    def _state_entries(self, prefix: str = ""):
        """(key, owning module, attribute, tensor) for parameters and persistent buffers, every
        path of a shared module included (torch's state_dict does not de-duplicate)."""
        for name, param in self._parameters.items():
            if param is not None:
                yield _join(prefix, name), self, name, param
        for name, buffer in self._buffers.items():
            if buffer is not None and name not in self._non_persistent:
                yield _join(prefix, name), self, name, buffer
        for name, module in self._modules.items():
            if module is not None:
                yield from module._state_entries(_join(prefix, name))

    def state_dict(self) -> dict:
        """{dotted name: host NumPy copy} of parameters and persistent buffers. Float values are
        float32 arrays holding values exact in the tensor's format (fp16/bf16 included)."""
        return {key: tensor.numpy() for key, _, _, tensor in self._state_entries()}

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays (or Tensors) into the parameters and buffers, in place, each rounded into
        the format of the tensor it replaces. Missing or unexpected keys are an error when
        `strict`; a shape mismatch always is. On any error nothing is changed."""
        entries = {key: tensor for key, _, _, tensor in self._state_entries()}
        missing = [key for key in entries if key not in state_dict]
        unexpected = [key for key in state_dict if key not in entries]
        errors = []
        if strict and missing:
            errors.append("missing key(s): " + ", ".join(repr(k) for k in missing))
        if strict and unexpected:
            errors.append("unexpected key(s): " + ", ".join(repr(k) for k in unexpected))
        staged = []
        for key, tensor in entries.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            array = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
            if tuple(array.shape) != tensor.shape:
                errors.append(f"size mismatch for {key!r}: the checkpoint has shape "
                              f"{tuple(array.shape)}, the model {tensor.shape}")
                continue
            try:
                fresh = Tensor._from_data(array, tensor.fmt, tensor.backend)
            except (TypeError, ValueError) as exc:
                errors.append(f"cannot load {key!r}: {exc}")
                continue
            staged.append((tensor, fresh.data))
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n    "
                               + "\n    ".join(errors))
        for tensor, data in staged:
            tensor.data = data
        return IncompatibleKeys(missing, unexpected)

    def rng_state_dict(self) -> dict:
        """{module path: random state} of every module with its own Generator (Dropout, ...):
        JSON-able data for checkpoints (see `Dropout.get_rng_state`)."""
        return {path: module.get_rng_state() for path, module in self.named_modules()
                if hasattr(module, "get_rng_state")}

    def load_rng_state_dict(self, states: dict) -> None:
        """Restore what `rng_state_dict` returned (every path must exist and hold a Generator)."""
        modules = dict(self.named_modules())
        for path in states:
            if path not in modules or not hasattr(modules[path], "set_rng_state"):
                raise KeyError(f"load_rng_state_dict: no module with a Generator at {path!r}")
        for path, state in states.items():
            modules[path].set_rng_state(state)

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, module in self._modules.items():
            body = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {body}")
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        head = f"{type(self).__name__}(" + (f"{extra}" if extra else "")
        return head + "\n  " + "\n  ".join(lines) + "\n)"


def _convert(tensor: Tensor, fmt, backend) -> None:
    """Round `tensor` into `fmt` and/or move it to `backend`, in place (integer tensors keep
    their format)."""
    if fmt is not None and tensor.fmt.is_float and tensor.fmt != fmt:
        if not fmt.is_float:
            raise TypeError(f"to(): parameters need a float format, got {fmt.name}")
        tensor.data = tensor.backend.round(tensor.data, fmt)
        tensor.fmt = fmt
    if backend is not None and backend is not tensor.backend:
        tensor.data = backend.asarray(tensor.backend.to_numpy(tensor.data), tensor.fmt)
        tensor.backend = backend
