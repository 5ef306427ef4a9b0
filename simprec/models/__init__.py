"""Reference networks: an MLP and a small CNN for the digits, a tiny GPT for text, and the MLP of
the H200 AMP trace. `build_model(name, **kwargs)` builds one by its registry name."""

from __future__ import annotations

from .cnn import SmallCNN
from .gpt import Block, TinyGPT
from .mlp import MLP, AmpTraceMLP

__all__ = ["MLP", "MODELS", "AmpTraceMLP", "Block", "SmallCNN", "TinyGPT", "build_model"]

# Short names, as `simprec train --model NAME` takes them.
MODELS = {"mlp": MLP, "cnn": SmallCNN, "gpt": TinyGPT, "amp_trace_mlp": AmpTraceMLP}


def build_model(name: str, **kwargs):
    """`MODELS[name](**kwargs)`; ValueError listing the valid names on an unknown name."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: "
                         f"{', '.join(sorted(MODELS))}") from None
    return cls(**kwargs)
