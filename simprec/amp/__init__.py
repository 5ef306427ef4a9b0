"""simprec.amp: torch's automatic mixed precision, simulated bit for bit.

- `autocast(fmt=sp.fp16, enabled=True, accumulate=None)`: the CUDA op policy (`policy.TABLE`)
  and the per-region cache of half copies of the parameters.
- `GradScaler`: dynamic loss scaling with torch's exact algorithm; `StaticLossScaler`: a fixed one.
- `get_recipe(name, **options)`: training recipes (`RECIPES`): fp32, amp-fp16, amp-fp16-noscale,
  amp-fp16-static, amp-bf16, pure-fp16, o2-fp16, fp8.
- `fp8`: Transformer Engine's delayed per-tensor scaling for fp8 GEMMs (`fp8.DelayedScaling`,
  `fp8.fp8_autocast`).

See docs/amp.md.
"""

from __future__ import annotations

from . import fp8, policy
from .autocast import autocast, get_autocast_format, is_autocast_enabled
from .grad_scaler import GradScaler, OptState, StaticLossScaler
from .recipes import RECIPES, Recipe, get_recipe, recipe_names

__all__ = ["GradScaler", "OptState", "RECIPES", "Recipe", "StaticLossScaler", "autocast",
           "fp8", "get_autocast_format", "get_recipe", "is_autocast_enabled", "policy",
           "recipe_names"]
