"""Interop with plain torch: `to_torch(model)` and `from_torch(module)`.

`to_torch` gives a `torch.nn.Module` with the same structure, parameter names, weights (bit for
bit, in the dtype of each parameter's format) and forward as a simprec network, so the network can
be trained under native `torch.autocast` + `GradScaler` (the peer run the simulator predicts).
`from_torch` is the reverse for the layers simprec has; any other layer is an error that names
it. `from_torch(to_torch(m))` gives `m`'s class back with bit-identical weights.

The forward is the same composition of torch ops that simprec's ops model; where simprec's op is
not torch's default kernel, the module says which:
- attention: simprec's `scaled_dot_product_attention` is torch's *math* composite (q and k
  scaled by sqrt(scale), masked softmax, two matmuls, each rounding in the half format, autocast
  excluded inside). `attention="explicit"` (the default) writes that composite by hand;
  `attention="sdpa"` calls `torch.nn.functional.scaled_dot_product_attention` (flash or
  memory-efficient kernels on a GPU: faster, not bit-identical to the model).
- dropout masks come from torch's generator, not simprec's NumPy Generators: a run with
  dropout > 0 cannot match bit for bit.
- Conv2d is torch's (cuDNN or mkldnn), simprec's is an im2col GEMM.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn as tnn

import simprec as sp
from simprec import models as sm
from simprec import nn as snn

__all__ = ["ATTENTION", "TorchAmpTraceMLP", "TorchBlock", "TorchGPT", "TorchMLP",
           "TorchSelfAttention", "TorchSmallCNN", "from_torch", "to_torch", "torch_dtype"]

ATTENTION = ("explicit", "sdpa")

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_FORMATS = {torch.float32: sp.fp32, torch.float16: sp.fp16, torch.bfloat16: sp.bf16}


def torch_dtype(fmt) -> torch.dtype:
    """The torch dtype that holds `fmt`'s values natively (fp32, fp16, bf16)."""
    try:
        return _DTYPES[fmt.name]
    except KeyError:
        raise TypeError(f"to_torch: format {fmt.name} has no native torch dtype "
                        f"(fp32, fp16 and bf16 do)") from None


# ------------------------------------------------------------------------ the torch modules


def explicit_attention(q, k, v, *, is_causal: bool, dropout_p: float = 0.0,
                       training: bool = False):
    """softmax(q kᵀ / sqrt(E)) v as torch's `_scaled_dot_product_attention_math` composes it
    (aten/src/ATen/native/transformers/attention.cpp) and simprec's ops.attention models it.

    Under autocast the three inputs are cast to the autocast dtype (SDPA is on autocast's
    lower-precision list) and the composite runs with autocast off, so every op rounds in the
    half format (softmax included; torch >= 2.5's math kernel would upcast to fp32 instead).
    """
    device = q.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        q, k, v = (t.to(dtype) if t.dtype == torch.float32 else t for t in (q, k, v))
    with torch.autocast(device, enabled=False):
        factor = math.sqrt(1.0 / math.sqrt(q.shape[-1]))
        attn = torch.matmul(q * factor, k.transpose(-2, -1) * factor)
        if is_causal:
            t, s = q.shape[-2], k.shape[-2]
            keep = torch.ones(t, s, dtype=torch.bool, device=q.device).tril()
            attn = attn.masked_fill(~keep, float("-inf"))
        attn = torch.softmax(attn, dim=-1)
        if dropout_p > 0.0:
            attn = F.dropout(attn, dropout_p, training=training)
        return torch.matmul(attn, v)


class TorchSelfAttention(tnn.Module):
    """simprec's `nn.MultiheadAttention` in torch: the same parameters (`in_proj_weight`,
    `in_proj_bias`, `out_proj`), `forward(x, causal=False)` on (B, T, E) (or (T, B, E) with
    `batch_first=False`, or unbatched (T, E)), returning the output alone.

    `attention`: "explicit" (torch's math composite, the path simprec models) or "sdpa"
    (`F.scaled_dot_product_attention`, torch's fastest kernel for the device).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = True, *, attention: str = "explicit", dtype=None,
                 device=None):
        super().__init__()
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION)}, got {attention!r}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout, self.batch_first, self.attention = float(dropout), batch_first, attention
        kw = {"dtype": dtype, "device": device}
        self.in_proj_weight = tnn.Parameter(torch.empty(3 * embed_dim, embed_dim, **kw))
        if bias:
            self.in_proj_bias = tnn.Parameter(torch.zeros(3 * embed_dim, **kw))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = tnn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        tnn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x, causal: bool = False):
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0)
        elif not self.batch_first:
            x = x.transpose(0, 1)
        b, t, e = x.shape
        h, d = self.num_heads, self.head_dim
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(b, t, 3, h, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        p = self.dropout if self.training else 0.0
        if self.attention == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
        else:
            out = explicit_attention(q, k, v, is_causal=causal, dropout_p=p,
                                     training=self.training)
        out = self.out_proj(out.transpose(1, 2).reshape(b, t, e))
        if unbatched:
            return out.reshape(t, e)
        return out if self.batch_first else out.transpose(0, 1)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"dropout={self.dropout}, attention={self.attention!r}")


class TorchMLP(tnn.Sequential):
    """simprec's `models.MLP`: a Sequential that flattens inputs of more than two dims."""

    def forward(self, x):
        if x.dim() > 2:
            x = x.reshape(x.shape[0], -1)
        return super().forward(x)


class TorchSmallCNN(tnn.Sequential):
    """simprec's `models.SmallCNN`: flat (N, C*H*W) inputs are reshaped to (N, C, H, W)."""

    def __init__(self, *layers, in_channels: int = 1, image_size: int = 8):
        super().__init__(*layers)
        self.in_channels, self.image_size = in_channels, image_size

    def forward(self, x):
        if x.dim() == 2:
            x = x.reshape(x.shape[0], self.in_channels, self.image_size, self.image_size)
        return super().forward(x)


class TorchAmpTraceMLP(tnn.Module):
    """simprec's `models.AmpTraceMLP`: fc1 -> GELU -> ln -> fc2 -> ReLU -> fc3."""

    def __init__(self, fc1, ln, fc2, fc3):
        super().__init__()
        self.fc1, self.ln, self.fc2, self.fc3 = fc1, ln, fc2, fc3

    def forward(self, x):
        h = self.ln(F.gelu(self.fc1(x)))
        return self.fc3(F.relu(self.fc2(h)))


class TorchBlock(tnn.Module):
    """simprec's `models.Block`: x + drop(attn(ln1(x), causal)), then x + mlp(ln2(x))."""

    def __init__(self, ln1, attn, drop, ln2, mlp):
        super().__init__()
        self.ln1, self.attn, self.drop, self.ln2, self.mlp = ln1, attn, drop, ln2, mlp

    def forward(self, x):
        x = x + self.drop(self.attn(self.ln1(x), causal=True))
        return x + self.mlp(self.ln2(x))


class TorchGPT(tnn.Module):
    """simprec's `models.TinyGPT`: token + position embeddings, blocks, final LayerNorm, head
    (the token embedding matrix when `tied_head`, else a bias-free Linear `head`)."""

    def __init__(self, tok_emb, pos_emb, drop, blocks, ln_f, head=None, *, vocab_size: int,
                 block_size: int):
        super().__init__()
        self.tok_emb, self.pos_emb, self.drop = tok_emb, pos_emb, drop
        self.blocks, self.ln_f = blocks, ln_f
        self.tied_head = head is None
        if head is not None:
            self.head = head
        self.vocab_size, self.block_size = vocab_size, block_size

    def forward(self, ids):
        t = ids.shape[1]
        if t > self.block_size:
            raise ValueError(f"TorchGPT: sequence length {t} exceeds block_size {self.block_size}")
        positions = torch.arange(t, device=ids.device)
        x = self.drop(self.tok_emb(ids) + self.pos_emb(positions))
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        if self.tied_head:
            return F.linear(x, self.tok_emb.weight)
        return self.head(x)


# ------------------------------------------------------------------------ simprec -> torch


def to_torch(model: snn.Module, *, attention: str = "explicit", device="cpu") -> tnn.Module:
    """A plain `torch.nn.Module` with `model`'s structure, parameter names and weights (bit for
    bit; each parameter in the torch dtype of its format), on `device`, in `model`'s training
    mode. `attention` picks the attention kernel ("explicit": the math composite simprec models;
    "sdpa": torch's fused kernel). TypeError naming the layer when one has no counterpart."""
    if attention not in ATTENTION:
        raise ValueError(f"to_torch: attention must be one of {', '.join(ATTENTION)}, "
                         f"got {attention!r}")
    if not isinstance(model, snn.Module):
        raise TypeError(f"to_torch: expected a simprec nn.Module, got {type(model).__name__}")
    with torch.device("meta"):  # no init drawn from torch's generator: the weights replace it
        out = _to_torch(model, "", attention)
    out.load_state_dict({key: _torch_value(tensor)
                         for key, _, _, tensor in model._state_entries()}, strict=True,
                        assign=True)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    for name, p in out.named_parameters():
        p.requires_grad_(name not in frozen)
    _copy_training_flags(model, out)
    return out.to(device)


def _copy_training_flags(src, dst) -> None:
    modes = {name: m.training for name, m in src.named_modules()}
    for name, m in dst.named_modules():
        m.training = modes.get(name, src.training)


def _torch_value(tensor) -> torch.Tensor:
    host = np.ascontiguousarray(tensor.numpy())
    if tensor.fmt.is_float:
        return torch.from_numpy(host.astype(np.float32, copy=False)).to(torch_dtype(tensor.fmt))
    return torch.from_numpy(host)


def _dtype_of(module: snn.Module):
    """The torch dtype of the module's own parameters (one format per layer)."""
    fmts = {p.fmt.name for p in module._parameters.values() if p is not None}
    if len(fmts) > 1:
        raise TypeError(f"to_torch: layer {type(module).__name__} holds parameters in several "
                        f"formats ({', '.join(sorted(fmts))})")
    return _DTYPES.get(fmts.pop(), None) if fmts else None


def _to_torch(m: snn.Module, path: str, attention: str) -> tnn.Module:
    def child(name):
        return _to_torch(getattr(m, name), f"{path}.{name}" if path else name, attention)

    def children():
        return [_to_torch(c, f"{path}.{n}" if path else n, attention)
                for n, c in m._modules.items()]

    for p in m._parameters.values():
        if p is not None:
            torch_dtype(p.fmt)  # a clear error for formats torch cannot hold
    dtype = _dtype_of(m)
    kind = type(m)
    if kind is sm.MLP:
        return TorchMLP(*children())
    if kind is sm.SmallCNN:
        return TorchSmallCNN(*children(), in_channels=m.in_channels, image_size=m.image_size)
    if kind is sm.AmpTraceMLP:
        return TorchAmpTraceMLP(child("fc1"), child("ln"), child("fc2"), child("fc3"))
    if kind is sm.Block:
        return TorchBlock(child("ln1"), child("attn"), child("drop"), child("ln2"), child("mlp"))
    if kind is sm.TinyGPT:
        return TorchGPT(child("tok_emb"), child("pos_emb"), child("drop"), child("blocks"),
                        child("ln_f"), None if m.tied_head else child("head"),
                        vocab_size=m.vocab_size, block_size=m.block_size)
    if kind is snn.Sequential:
        return tnn.Sequential(*children())
    if kind is snn.ModuleList:
        return tnn.ModuleList(children())
    if kind is snn.Linear:
        return tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None, dtype=dtype)
    if kind is snn.Conv2d:
        return tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                          padding=m.padding, bias=m.bias is not None, dtype=dtype)
    if kind is snn.MaxPool2d:
        return tnn.MaxPool2d(m.kernel_size, m.stride, m.padding)
    if kind is snn.AvgPool2d:
        return tnn.AvgPool2d(m.kernel_size, m.stride, m.padding)
    if kind is snn.Flatten:
        return tnn.Flatten(m.start_dim, m.end_dim)
    if kind is snn.LayerNorm:
        return tnn.LayerNorm(m.normalized_shape, eps=m.eps,
                             elementwise_affine=m.elementwise_affine, dtype=dtype)
    if kind is snn.Embedding:
        return tnn.Embedding(m.num_embeddings, m.embedding_dim, dtype=dtype)
    if kind is snn.MultiheadAttention:
        return TorchSelfAttention(m.embed_dim, m.num_heads, m.dropout,
                                  bias=m.in_proj_bias is not None, batch_first=m.batch_first,
                                  attention=attention, dtype=dtype)
    if kind is snn.Dropout:
        return tnn.Dropout(m.p)
    if kind is snn.GELU:
        return tnn.GELU(approximate=m.approximate)
    if kind is snn.Softmax:
        return tnn.Softmax(dim=m.dim)
    simple = {snn.ReLU: tnn.ReLU, snn.SiLU: tnn.SiLU, snn.Tanh: tnn.Tanh,
              snn.Sigmoid: tnn.Sigmoid, snn.Identity: tnn.Identity}
    if kind in simple:
        return simple[kind]()
    raise TypeError(f"to_torch: layer {path or '<root>'!r} ({kind.__module__}.{kind.__name__}) "
                    f"has no torch counterpart; supported: {', '.join(_supported_simprec())}")


def _supported_simprec() -> list[str]:
    return ["Sequential", "ModuleList", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten",
            "LayerNorm", "Embedding", "MultiheadAttention", "Dropout", "GELU", "ReLU", "SiLU",
            "Tanh", "Sigmoid", "Softmax", "Identity", "models.MLP", "models.SmallCNN",
            "models.AmpTraceMLP", "models.Block", "models.TinyGPT"]


# ------------------------------------------------------------------------ torch -> simprec


def from_torch(module: tnn.Module) -> snn.Module:
    """The simprec network of a torch module made of layers simprec has (those `to_torch`
    produces, and the plain torch layers of `_supported_simprec`), with bit-identical weights,
    each parameter in the format of its torch dtype, in the module's training mode. TypeError
    naming the first unsupported layer (or option, such as a grouped convolution)."""
    if not isinstance(module, tnn.Module):
        raise TypeError(f"from_torch: expected a torch.nn.Module, got {type(module).__name__}")
    out = _from_torch(module, "")
    state = {}
    for key, value in module.state_dict().items():
        value = value.detach().cpu()
        state[key] = value.float().numpy() if value.is_floating_point() else value.numpy()
    out.load_state_dict(state, strict=True)
    _copy_training_flags(module, out)
    return out


def _format_of(module: tnn.Module, path: str):
    dtypes = {p.dtype for p in module.parameters(recurse=False)}
    if not dtypes:
        return sp.fp32
    if len(dtypes) > 1:
        raise TypeError(f"from_torch: layer {path!r} holds parameters of several dtypes "
                        f"({', '.join(sorted(map(str, dtypes)))})")
    dtype = dtypes.pop()
    if dtype not in _FORMATS:
        raise TypeError(f"from_torch: layer {path!r} holds {dtype} parameters; simprec takes "
                        f"float32, float16 and bfloat16")
    return _FORMATS[dtype]


def _unsupported(path: str, module, why: str = "") -> TypeError:
    kind = type(module)
    where = path or "<root>"
    reason = f": {why}" if why else f"; supported: {', '.join(_supported_torch())}"
    return TypeError(f"from_torch: simprec has no layer for {where!r} "
                     f"({kind.__module__}.{kind.__qualname__}){reason}")


def _require(ok: bool, path: str, module, why: str) -> None:
    if not ok:
        raise _unsupported(path, module, why)


def _from_torch(m: tnn.Module, path: str) -> snn.Module:
    rng = np.random.default_rng(0)  # layers draw an init that the weights then replace
    fmt = _format_of(m, path)

    def sub(name):
        return _from_torch(getattr(m, name), f"{path}.{name}" if path else name)

    def children():
        return [_from_torch(c, f"{path}.{n}" if path else n) for n, c in m.named_children()]

    kind = type(m)
    if kind is TorchMLP:
        layers = children()
        linears = [c for c in layers if isinstance(c, snn.Linear)]
        out = sm.MLP.__new__(sm.MLP)
        snn.Sequential.__init__(out, *layers)
        out.in_features, out.classes = linears[0].in_features, linears[-1].out_features
        return out
    if kind is TorchSmallCNN:
        out = sm.SmallCNN.__new__(sm.SmallCNN)
        snn.Sequential.__init__(out, *children())
        out.in_channels, out.image_size = m.in_channels, m.image_size
        return out
    if kind is TorchAmpTraceMLP:
        out = sm.AmpTraceMLP(m.fc1.in_features, m.fc1.out_features, m.fc3.out_features,
                             generator=rng)
        out.fc1, out.ln, out.fc2, out.fc3 = sub("fc1"), sub("ln"), sub("fc2"), sub("fc3")
        return out
    if kind is TorchBlock:
        out = sm.Block.__new__(sm.Block)
        snn.Module.__init__(out)
        out.ln1, out.attn, out.drop = sub("ln1"), sub("attn"), sub("drop")
        out.ln2, out.mlp = sub("ln2"), sub("mlp")
        return out
    if kind is TorchGPT:
        out = sm.TinyGPT.__new__(sm.TinyGPT)
        snn.Module.__init__(out)
        out.vocab_size, out.block_size, out.tied_head = m.vocab_size, m.block_size, m.tied_head
        out.tok_emb, out.pos_emb, out.drop = sub("tok_emb"), sub("pos_emb"), sub("drop")
        out.blocks, out.ln_f = sub("blocks"), sub("ln_f")
        if not m.tied_head:
            out.head = sub("head")
        return out
    if kind is TorchSelfAttention:
        return _attention(m, fmt, rng)
    if kind is tnn.MultiheadAttention:
        _require(m._qkv_same_embed_dim and m.bias_k is None and not m.add_zero_attn, path, m,
                 "only self-attention with one in_proj_weight, no bias_k/bias_v, no "
                 "add_zero_attn")
        return _attention(m, fmt, rng)
    if kind is tnn.Sequential:
        return snn.Sequential(*children())
    if kind is tnn.ModuleList:
        return snn.ModuleList(children())
    if kind is tnn.Linear:
        return snn.Linear(m.in_features, m.out_features, bias=m.bias is not None, fmt=fmt,
                          generator=rng)
    if kind is tnn.Conv2d:
        _require(m.groups == 1 and tuple(m.dilation) == (1, 1) and m.padding_mode == "zeros"
                 and not isinstance(m.padding, str), path, m,
                 "only groups=1, dilation=1, zero padding given as numbers")
        return snn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                          bias=m.bias is not None, fmt=fmt, generator=rng)
    if kind is tnn.MaxPool2d:
        _require(m.dilation in (1, (1, 1)) and not m.ceil_mode and not m.return_indices,
                 path, m, "only dilation=1, ceil_mode=False, return_indices=False")
        return snn.MaxPool2d(m.kernel_size, m.stride, m.padding)
    if kind is tnn.AvgPool2d:
        _require(not m.ceil_mode and m.count_include_pad and m.divisor_override is None,
                 path, m, "only ceil_mode=False, count_include_pad=True, no divisor_override")
        return snn.AvgPool2d(m.kernel_size, m.stride, m.padding)
    if kind is tnn.Flatten:
        return snn.Flatten(m.start_dim, m.end_dim)
    if kind is tnn.LayerNorm:
        affine = m.elementwise_affine
        _require(not affine or m.bias is not None, path, m, "only with a bias (bias=True)")
        return snn.LayerNorm(m.normalized_shape, eps=m.eps, elementwise_affine=affine, fmt=fmt)
    if kind is tnn.Embedding:
        _require(m.padding_idx is None and m.max_norm is None and not m.sparse
                 and not m.scale_grad_by_freq, path, m,
                 "only padding_idx=None, max_norm=None, dense, no scale_grad_by_freq")
        return snn.Embedding(m.num_embeddings, m.embedding_dim, fmt=fmt, generator=rng)
    if kind is tnn.Dropout:
        return snn.Dropout(m.p, generator=rng)
    if kind is tnn.GELU:
        return snn.GELU(m.approximate)
    if kind is tnn.Softmax:
        _require(m.dim is not None, path, m, "only with an explicit dim")
        return snn.Softmax(m.dim)
    simple = {tnn.ReLU: snn.ReLU, tnn.SiLU: snn.SiLU, tnn.Tanh: snn.Tanh,
              tnn.Sigmoid: snn.Sigmoid, tnn.Identity: snn.Identity}
    if kind in simple:
        return simple[kind]()
    raise _unsupported(path, m)


def _attention(m, fmt, rng) -> snn.MultiheadAttention:
    return snn.MultiheadAttention(m.embed_dim, m.num_heads, m.dropout,
                                  bias=m.in_proj_bias is not None, batch_first=m.batch_first,
                                  fmt=fmt, generator=rng)


def _supported_torch() -> list[str]:
    return ["Sequential", "ModuleList", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten",
            "LayerNorm", "Embedding", "MultiheadAttention (self-attention)", "Dropout", "GELU",
            "ReLU", "SiLU", "Tanh", "Sigmoid", "Softmax", "Identity", "and the Torch* modules "
            "of simprec_torch.interop"]
