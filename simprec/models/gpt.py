"""TinyGPT: a small pre-norm decoder-only transformer for character-level language modelling."""

from __future__ import annotations

import numpy as np

from .. import nn
from ..formats import fp32, int64
from ..nn import functional as F
from ..tensor import Tensor

__all__ = ["Block", "TinyGPT"]


class Block(nn.Module):
    """Pre-norm transformer block: x + drop(attn(ln1(x))), then x + mlp(ln2(x)) with
    mlp = Linear(E, 4E) -> GELU -> Linear(4E, E) -> Dropout."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, *, attention="sdpa",
                 fmt=fp32, generator=None):
        super().__init__()
        gen = nn.init.get_generator(generator)
        self.ln1 = nn.LayerNorm(n_embd, fmt=fmt)
        self.attn = nn.MultiheadAttention(n_embd, n_head, dropout=dropout, attention=attention,
                                          fmt=fmt, generator=gen)
        self.drop = nn.Dropout(dropout, generator=gen)
        self.ln2 = nn.LayerNorm(n_embd, fmt=fmt)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd, fmt=fmt, generator=gen),
            nn.GELU(),
            nn.Linear(4 * n_embd, n_embd, fmt=fmt, generator=gen),
            nn.Dropout(dropout, generator=gen),
        )

    def forward(self, x):
        x = x + self.drop(self.attn(self.ln1(x), causal=True))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """`TinyGPT(vocab_size, block_size, n_layer=2, n_head=4, n_embd=64, dropout=0.0,
    tied_head=True)`.

    Token + position embeddings -> dropout -> `n_layer` pre-norm causal blocks -> final
    LayerNorm -> head. With `tied_head` the head is the token embedding matrix (no `head`
    module; logits = h @ tok_emb.weightᵀ), else a bias-free Linear `head`.

    `forward(ids)`: ids int64 (B, T) with T <= block_size -> logits (B, T, vocab_size). For the
    loss, `F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))`.

    Init: `init_std=0.02` (the default, GPT-2's convention) redraws every Linear and Embedding
    weight from N(0, 0.02) and zeroes Linear biases, after the layers' own torch-default init;
    `init_std=None` keeps torch's layer defaults (Embedding N(0, 1), which with a tied head gives
    logits of standard deviation about sqrt(n_embd)).

    `attention`: "sdpa" (default: torch's scaled_dot_product_attention math composite) or
    "manual" (the attention written out as nanoGPT's manual path and `simprec_capture.py`'s demo
    GPT write it; see `nn.attention.manual_attention`).
    """

    def __init__(self, vocab_size: int, block_size: int, n_layer: int = 2, n_head: int = 4,
                 n_embd: int = 64, dropout: float = 0.0, tied_head: bool = True, *,
                 init_std: float | None = 0.02, attention: str = "sdpa", fmt=fp32,
                 generator=None):
        super().__init__()
        gen = nn.init.get_generator(generator)
        self.vocab_size, self.block_size, self.tied_head = vocab_size, block_size, tied_head
        self.tok_emb = nn.Embedding(vocab_size, n_embd, fmt=fmt, generator=gen)
        self.pos_emb = nn.Embedding(block_size, n_embd, fmt=fmt, generator=gen)
        self.drop = nn.Dropout(dropout, generator=gen)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, attention=attention, fmt=fmt,
                                          generator=gen)
                                    for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, fmt=fmt)
        if not tied_head:
            self.head = nn.Linear(n_embd, vocab_size, bias=False, fmt=fmt, generator=gen)
        if init_std is not None:
            self._init_weights(float(init_std), gen)

    def _init_weights(self, std: float, gen: np.random.Generator) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std, generator=gen)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.MultiheadAttention):
                nn.init.normal_(module.in_proj_weight, 0.0, std, generator=gen)

    def forward(self, ids):
        if not isinstance(ids, Tensor) or ids.fmt != int64 or ids.ndim != 2:
            raise TypeError("TinyGPT: ids must be an int64 Tensor of shape (B, T)")
        t = ids.shape[1]
        if t > self.block_size:
            raise ValueError(f"TinyGPT: sequence length {t} exceeds block_size {self.block_size}")
        positions = Tensor._from_data(np.arange(t), int64, ids.backend)
        x = self.drop(self.tok_emb(ids) + self.pos_emb(positions))
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        if self.tied_head:
            return F.linear(x, self.tok_emb.weight)
        return self.head(x)
