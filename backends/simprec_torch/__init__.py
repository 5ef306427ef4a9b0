"""simprec's torch backend: the same networks on torch tensors, "torch:cpu" or "torch:cuda[:N]".

`TorchBackend` implements simprec's kernel contract (simprec/backend/contract.py) on native
torch tensors; simprec finds it by name (`sp.tensor(..., backend="torch:cuda")`,
`model.to("torch:cuda")`) from a plain checkout or through the `simprec.backends` entry point.
`to_torch` / `from_torch` (interop with torch.nn) are imported on first use.
"""

from __future__ import annotations

from .backend import TorchBackend

__all__ = ["TorchBackend", "to_torch", "from_torch"]


def __getattr__(name):
    if name in ("to_torch", "from_torch"):
        from . import interop

        return getattr(interop, name)
    raise AttributeError(f"module 'simprec_torch' has no attribute {name!r}")
