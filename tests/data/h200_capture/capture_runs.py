"""Whole native torch AMP training runs on the GPU, for simprec to replay bit for bit.

    python tests/data/h200_capture/capture_runs.py --out DIR [--device cuda]

Writes one file per run (RUNS):
- h200_run_gpt_fp16: TinyGPT (simprec.models.TinyGPT(vocab, block, n_layer=2, n_head=4,
  n_embd=64, tied_head=False) names and layout; attention written out: q @ kᵀ * 1/sqrt(d),
  masked_fill(-inf) above the diagonal, softmax, @ v), fp16 autocast, AdamW(lr=3e-3) on torch's
  default path (foreach on CUDA), GradScaler(init_scale=2**10, growth_interval=4), 45 steps.
- h200_run_gpt_bf16_fused: the same network under bf16 autocast, AdamW(lr=3e-3, fused=True),
  no scaler, 45 steps.
- h200_run_mlp_fp16_clip: simprec.models.MLP(64, (256, 256), 10) layout ("0.weight", ...),
  fp16 autocast, Adam(lr=1e-3) default path, GradScaler(init_scale=2**12, growth_interval=10),
  scaler.unscale_ then clip_grad_norm_(max_norm=0.5), 50 steps.
Keys (bits unless said):
- `init__{param}`, `final__{param}`: fp32 parameters before step 0 and after the last step.
- `batch_x`, `batch_y` (steps, ...): GPT int16 ids; MLP float32 inputs and int32 labels
  (regenerable by `gpt_batch` / `mlp_batch`).
- `loss` (steps,) uint32; `scale` (steps,): the loss scale used in the step (uint32 of fp32),
  `scale_after`: after scaler.update(); `grad_norm`: MLP, clip_grad_norm_'s return (uint32).
- `grad0__{param}`: .grad right after step 0's backward (times the loss scale);
  `grad0_unscaled__{param}`: .grad after the step (unscaled; MLP: also clipped).
- `act0__{module}`: step 0's forward output of each module, batch row 0 (pos_emb: all of
  it); `logits0`: step 0's logits of batch row 0.
- `repeat_identical`: whether a second identical run gave the same losses and final weights
  (True: the GPU run is deterministic).
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bits, cli, save, seed_of, setup_torch  # noqa: E402

GPT = dict(vocab=512, block=64, n_layer=2, n_head=4, n_embd=64, batch=64, steps=45)
GPT_SMALL = dict(vocab=64, block=16, n_layer=2, n_head=4, n_embd=32, batch=4, steps=5)
MLP = dict(din=64, hidden=(256, 256), classes=10, batch=128, steps=50)
MLP_SMALL = dict(din=64, hidden=(32, 32), classes=10, batch=16, steps=5)


def torch_modules():
    """torch versions of simprec's TinyGPT (tied_head=False) and MLP, same parameter names."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Attention(nn.Module):
        def __init__(self, e, h):
            super().__init__()
            self.h = h
            self.in_proj_weight = nn.Parameter(torch.empty(3 * e, e))
            self.in_proj_bias = nn.Parameter(torch.empty(3 * e))
            self.out_proj = nn.Linear(e, e)

        def forward(self, x):
            b, t, e = x.shape
            d = e // self.h
            qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
            q, k, v = qkv.reshape(b, t, 3, self.h, d).permute(2, 0, 3, 1, 4)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d))
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            att = F.softmax(att.masked_fill(mask, float("-inf")), dim=-1)
            return self.out_proj((att @ v).transpose(1, 2).reshape(b, t, e))

    class Block(nn.Module):
        def __init__(self, e, h):
            super().__init__()
            self.ln1 = nn.LayerNorm(e)
            self.attn = Attention(e, h)
            self.ln2 = nn.LayerNorm(e)
            self.mlp = nn.Sequential(nn.Linear(e, 4 * e), nn.GELU(), nn.Linear(4 * e, e))

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class TinyGPT(nn.Module):
        def __init__(self, vocab, block, n_layer, n_head, n_embd):
            super().__init__()
            self.tok_emb = nn.Embedding(vocab, n_embd)
            self.pos_emb = nn.Embedding(block, n_embd)
            self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
            self.ln_f = nn.LayerNorm(n_embd)
            self.head = nn.Linear(n_embd, vocab, bias=False)

        def forward(self, ids):
            pos = torch.arange(ids.shape[1], device=ids.device)
            x = self.tok_emb(ids) + self.pos_emb(pos)
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.ln_f(x))

    def mlp(din, hidden, classes):
        layers, width = [], din
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        return nn.Sequential(*layers, nn.Linear(width, classes))

    return TinyGPT, mlp


def gpt_init(names_shapes, seed=1301) -> dict:
    """simprec TinyGPT's init_std=0.02 convention: Linear/Embedding weights and in_proj_weight
    N(0, 0.02), biases 0, LayerNorm weight 1; drawn in `names_shapes` order."""
    g = np.random.default_rng(seed)
    out = {}
    for name, shape in names_shapes:
        if ".ln" in name or name.startswith("ln_"):
            out[name] = np.full(shape, 1.0 if name.endswith("weight") else 0.0, np.float32)
        elif name.endswith("bias"):
            out[name] = np.zeros(shape, np.float32)
        else:
            out[name] = (g.standard_normal(shape) * 0.02).astype(np.float32)
    return out


def mlp_init(names_shapes, seed=1302) -> dict:
    """torch Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    g = np.random.default_rng(seed)
    out, fan_in = {}, None
    for name, shape in names_shapes:
        if name.endswith("weight"):
            fan_in = shape[1]
        bound = 1.0 / math.sqrt(fan_in)
        out[name] = g.uniform(-bound, bound, shape).astype(np.float32)
    return out


def token_stream(vocab: int, length: int = 200_000) -> np.ndarray:
    """A Markov chain over the vocabulary (each token has 4 successors), so the loss falls."""
    g = np.random.default_rng(seed_of("gpt-stream", vocab))
    table = g.integers(0, vocab, (vocab, 4))
    pick = g.integers(0, 4, length)
    out = np.empty(length, np.int32)
    out[0] = 0
    for i in range(1, length):
        out[i] = table[out[i - 1], pick[i]]
    return out


def gpt_batch(stream, step: int, batch: int, block: int):
    g = np.random.default_rng(seed_of("gpt-batch", step))
    offsets = g.integers(0, len(stream) - block - 1, batch)
    rows = np.stack([stream[o:o + block + 1] for o in offsets])
    return rows[:, :-1].astype(np.int16), rows[:, 1:].astype(np.int16)


def mlp_batch(step: int, batch: int, din: int, classes: int):
    teacher = np.random.default_rng(seed_of("mlp-teacher")).standard_normal((din, classes))
    x = np.random.default_rng(seed_of("mlp-batch", step)).standard_normal((batch, din),
                                                                         dtype=np.float32)
    return x, np.argmax(x.astype(np.float64) @ teacher, axis=1).astype(np.int32)


def train(kind: str, device: str, small: bool) -> dict:
    """One run; returns the arrays to save."""
    import torch
    from torch.nn import functional as F

    TinyGPT, mlp = torch_modules()
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    gpt = kind.startswith("gpt")
    cfg = (GPT_SMALL if small else GPT) if gpt else (MLP_SMALL if small else MLP)
    if gpt:
        model = TinyGPT(cfg["vocab"], cfg["block"], cfg["n_layer"], cfg["n_head"],
                        cfg["n_embd"])
        init = gpt_init([(n, tuple(p.shape)) for n, p in model.named_parameters()])
        stream = token_stream(cfg["vocab"])
        batches = [gpt_batch(stream, s, cfg["batch"], cfg["block"]) for s in range(cfg["steps"])]
    else:
        model = mlp(cfg["din"], cfg["hidden"], cfg["classes"])
        init = mlp_init([(n, tuple(p.shape)) for n, p in model.named_parameters()])
        batches = [mlp_batch(s, cfg["batch"], cfg["din"], cfg["classes"])
                   for s in range(cfg["steps"])]
    model.load_state_dict({k: torch.from_numpy(v) for k, v in init.items()})
    model.to(device)
    params = list(model.parameters())
    if kind == "gpt_fp16":
        amp_dtype, opt = torch.float16, torch.optim.AdamW(params, lr=3e-3)
        scaler = torch.amp.GradScaler(dev_type, init_scale=2.0**10, growth_interval=4)
    elif kind == "gpt_bf16_fused":
        amp_dtype, opt = torch.bfloat16, torch.optim.AdamW(params, lr=3e-3, fused=True)
        scaler = None
    else:
        amp_dtype, opt = torch.float16, torch.optim.Adam(params, lr=1e-3)
        scaler = torch.amp.GradScaler(dev_type, init_scale=2.0**12, growth_interval=10)
    out = {f"init__{k}": v.view(np.uint32) for k, v in init.items()}
    out["batch_x"] = np.stack([b[0] for b in batches])
    out["batch_y"] = np.stack([b[1] for b in batches])
    def keep(name, o):  # batch row 0 of step 0's output (all of it when not batched)
        if isinstance(o, torch.Tensor):
            out[f"act0__{name}"] = bits(o[:1] if o.shape[0] == cfg["batch"] else o)

    hooks = [module.register_forward_hook(lambda m, i, o, name=name: keep(name, o))
             for name, module in model.named_modules() if name]
    loss_bits, scales, scales_after, norms = [], [], [], []
    named = dict(model.named_parameters())
    for step, (x_np, y_np) in enumerate(batches):
        x = torch.from_numpy(x_np.astype(np.int64) if gpt else x_np).to(device)
        y = torch.from_numpy(y_np.astype(np.int64)).to(device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev_type, dtype=amp_dtype):
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        if step == 0:
            for h in hooks:
                h.remove()
            out["logits0"] = bits(logits[0])
        loss_bits.append(bits(loss.float()))
        scales.append(np.float32(scaler.get_scale()) if scaler else np.float32(1.0))
        (scaler.scale(loss) if scaler else loss).backward()
        if step == 0:
            for k, p in named.items():
                out[f"grad0__{k}"] = bits(p.grad)
        if scaler:
            if not gpt:
                scaler.unscale_(opt)
                norms.append(bits(torch.nn.utils.clip_grad_norm_(params, max_norm=0.5)))
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        if step == 0:
            for k, p in named.items():
                out[f"grad0_unscaled__{k}"] = bits(p.grad)
        scales_after.append(np.float32(scaler.get_scale()) if scaler else np.float32(1.0))
    out["loss"] = np.array(loss_bits, np.uint32)
    out["scale"] = np.array(scales, np.float32).view(np.uint32)
    out["scale_after"] = np.array(scales_after, np.float32).view(np.uint32)
    if norms:
        out["grad_norm"] = np.array(norms, np.uint32)
    for k, p in named.items():
        out[f"final__{k}"] = bits(p)
    out["_cfg"] = cfg
    return out


RUNS = {"h200_run_gpt_fp16": "gpt_fp16", "h200_run_gpt_bf16_fused": "gpt_bf16_fused",
        "h200_run_mlp_fp16_clip": "mlp_fp16_clip"}


def capture(out_dir: str, device: str = "cuda", small: bool = False) -> None:
    meta = setup_torch(device)
    for name, kind in RUNS.items():
        t0 = time.time()
        out = train(kind, device, small)
        again = train(kind, device, small)
        same = all(np.array_equal(out[k], again[k]) for k in out
                   if k == "loss" or k.startswith("final__"))
        out["repeat_identical"] = np.array(same)
        cfg = out.pop("_cfg")
        save(out_dir, name, out, dict(meta, run=kind, cfg=cfg, seconds=round(time.time() - t0, 2)))


if __name__ == "__main__":
    cli(capture, __doc__)
