"""simprec.optim: torch's optimizers on fp32 master weights, bit for bit.

`SGD`, `Adam`, `AdamW` compute what torch's CUDA paths compute (single-tensor, foreach, fused,
capturable; chosen by `foreach=` / `fused=` as torch chooses, foreach by default), each torch
kernel computed in fp32 and rounded once into the parameter's format (fp32 master weights: no
rounding; fp16 parameters, the pure-fp16 recipe: one rounding per kernel, as torch's half
kernels).
`MasterWeights` keeps fp32 masters for a half-precision model (O2). `lr_scheduler` has StepLR,
LinearLR, CosineAnnealingLR, SequentialLR and `warmup_cosine`; `clip_grad_norm_` clips gradients.
See docs/amp.md.
"""

from __future__ import annotations

from . import lr_scheduler
from .adam import Adam, AdamW
from .clip import clip_grad_norm_, total_grad_norm
from .master import MasterWeights
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "MasterWeights", "Optimizer", "clip_grad_norm_",
           "lr_scheduler", "total_grad_norm"]
