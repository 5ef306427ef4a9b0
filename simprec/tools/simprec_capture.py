"""simprec_capture.py: record a native torch AMP training run, bit for bit, for `simprec replay`.

A single file that needs torch and numpy only (no simprec): copy it to the GPU machine
(`simprec capture --write-tool simprec_capture.py`) and run your model through it there.

    python simprec_capture.py --demo gpt --out run.npz                  # the built-in GPT
    python simprec_capture.py --demo mlp --optimizer adam --clip 0.5 --out run.npz
    python simprec_capture.py --help                                     # every option

From Python (your own network, batches and optimizer; the model on the GPU):

    import simprec_capture as sc
    sc.pin_gemm_settings()                       # before building anything (see below)
    model = MyNet().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10)
    sc.capture_run(model, batches, opt, autocast="fp16", scaler=scaler, clip=1.0,
                   out="run.npz", record_grads=[0], record_outputs=[0])

    simprec replay run.npz --torch-module mynet.py:MyNet    # then, anywhere, with simprec

The loop is torch's AMP recipe (docs/source/notes/amp_examples.md): zero_grad; forward and
loss under `torch.autocast`; `scaler.scale(loss).backward()`; with a clip, `scaler.unscale_`
then `clip_grad_norm_`; `scaler.step`; `scaler.update` (no scaler: `optimizer.step()`); the
scheduler's step. The loss is cross_entropy over the output flattened to (-1, classes) (`loss=
"cross_entropy"`) or mse_loss (`loss="mse"`). `pin_gemm_settings` turns off what simprec's
tensor-core model does not describe: fp16/bf16 reduced-precision (split-K) GEMM reductions and
TF32, and prefers cuBLASLt (tests/data/h200_capture/_common.py in simprec).

The npz (no pickle: arrays, and a JSON string under "meta"): the versions (torch, CUDA, GPU), the
recipe, the optimizer's class, hyper-parameters per group (parameters by name) and the
implementation torch runs (single-tensor, foreach, fused), the scaler's and clip's parameters,
the network's structure (`repr`, parameter names, shapes, dtypes), and, as exact bit patterns
(fp32 as uint32, fp16/bf16 as uint16): the initial and final weights, every batch, each step's
learning rates, loss, loss scale (before and after update), total gradient norm (with a clip),
and for the steps asked: the gradients right after backward (`record_grads_raw`), as the
optimizer used them (`record_grads`), the weights after the step (`record_weights`), and every
module's forward output (`record_outputs`, the first `output_rows` rows of batched outputs).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import zlib

import numpy as np

CAPTURE_FORMAT = "simprec-capture"
CAPTURE_VERSION = 1
MAX_BYTES = 200 * 2**20
_HYPER = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "betas", "eps",
          "amsgrad", "capturable", "foreach", "fused", "differentiable",
          "decoupled_weight_decay")


# ------------------------------------------------------------------------------ settings


def pin_gemm_settings() -> dict:
    """Pin the GEMM settings simprec models (cuBLASLt, no reduced-precision reduction or
    split-K, no TF32); returns them with the versions, for the capture's metadata. A setting this
    torch refuses is listed under "setting_errors"."""
    import torch

    meta = {"torch": torch.__version__, "cuda": torch.version.cuda, "numpy": np.__version__,
            "python": platform.python_version(), "setting_errors": {}}
    matmul = torch.backends.cuda.matmul

    def pin(name, fn):
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - record it and keep capturing
            meta["setting_errors"][name] = f"{type(err).__name__}: {err}"

    if torch.cuda.is_available():
        pin("preferred_blas_library",
            lambda: torch.backends.cuda.preferred_blas_library("cublaslt"))
        meta["gpu"] = torch.cuda.get_device_name()
        meta["capability"] = list(torch.cuda.get_device_capability())
        meta["blas_library"] = repr(torch.backends.cuda.preferred_blas_library())
    for half in ("fp16", "bf16"):
        attr = f"allow_{half}_reduced_precision_reduction"

        def off(attr=attr):
            try:  # (reduced precision, split-K); older torch takes a bool only
                setattr(matmul, attr, (False, False))
            except (TypeError, RuntimeError):
                setattr(matmul, attr, False)

        pin(attr, off)
        meta[attr] = repr(getattr(matmul, attr, None))
    pin("allow_tf32", lambda: setattr(matmul, "allow_tf32", False))
    pin("cudnn.allow_tf32", lambda: setattr(torch.backends.cudnn, "allow_tf32", False))
    return meta


# ------------------------------------------------------------------------------ recording


def bits(t) -> np.ndarray:
    """A copy of a tensor's exact bit patterns on the host (uint16 for fp16/bf16, uint32 for
    fp32); a copy, since on the CPU `.numpy()` shares the memory the optimizer updates."""
    import torch

    t = t.detach()
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.contiguous().view(torch.int16).cpu().numpy().view(np.uint16).copy()
    if t.dtype == torch.float32:
        return t.contiguous().view(torch.int32).cpu().numpy().view(np.uint32).copy()
    return t.cpu().numpy().copy()


def optimizer_path(optimizer) -> str:
    """The implementation torch runs: "fused", "foreach" or "single" (torch's default for CUDA
    parameters, `_default_to_fused_or_foreach`, when foreach and fused are None)."""
    paths = set()
    for group in optimizer.param_groups:
        if group.get("fused"):
            paths.add("fused")
        elif group.get("foreach") is False:
            paths.add("single")
        elif group.get("foreach"):
            paths.add("foreach")
        else:
            try:
                from torch.optim.optimizer import _default_to_fused_or_foreach
                _, foreach = _default_to_fused_or_foreach(
                    list(group["params"]), differentiable=bool(group.get("differentiable")),
                    use_fused=False)
            except Exception:  # noqa: BLE001 - a torch without the helper: its CUDA default
                foreach = all(p.is_cuda for p in group["params"])
            paths.add("foreach" if foreach else "single")
    if len(paths) != 1:
        raise ValueError(f"simprec_capture: parameter groups run different paths {paths}")
    return paths.pop()


def _jsonable(value):
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()  # a tensor lr
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def optimizer_meta(optimizer, model) -> dict:
    """The optimizer's class, path and groups (hyper-parameters; parameters by name)."""
    names = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for group in optimizer.param_groups:
        entry = {k: _jsonable(group[k]) for k in _HYPER if k in group}
        if hasattr(group["lr"], "ndim"):
            entry["lr_tensor"] = True
        entry["params"] = [names[id(p)] for p in group["params"]]
        groups.append(entry)
    return {"class": type(optimizer).__name__, "path": optimizer_path(optimizer),
            "groups": groups}


def scaler_meta(scaler):
    if scaler is None or not scaler.is_enabled():
        return None
    return {"init_scale": float(scaler._init_scale), "growth_factor": scaler.get_growth_factor(),
            "backoff_factor": scaler.get_backoff_factor(),
            "growth_interval": scaler.get_growth_interval()}


def _steps(which, total: int) -> set:
    if which in ("all", True):
        return set(range(total))
    return {int(s) % total for s in (which or ())}


def _host(a) -> np.ndarray:
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def capture_run(model, batches, optimizer, *, autocast="fp16", scaler=None, clip=None,
                norm_type=2.0, loss="cross_entropy", scheduler=None, out="capture.npz",
                record_grads_raw=(), record_grads=(0,), record_weights=(), record_outputs=(0,),
                output_rows=1, model_spec=None, extra_meta=None) -> str:
    """Train `model` (on its device) over `batches` (a list of (x, y): numpy arrays or tensors)
    with torch's AMP loop, and write the capture to `out`; returns the path.

    autocast: "fp16", "bf16" or None; scaler: a torch.amp.GradScaler or None; clip: max_norm of
    clip_grad_norm_ (after scaler.unscale_) or None; record_*: steps (or "all") whose gradients,
    weights or module outputs are kept; model_spec: {"name": "gpt"|"mlp", "kwargs": {...}}
    when the network is one of simprec's built-in ones (the demos set it)."""
    import torch
    from torch.nn import functional as F

    batches = list(batches)
    total = len(batches)
    if not total:
        raise ValueError("simprec_capture: no batches")
    device = next(model.parameters()).device
    dev_type = device.type
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, None: None}[autocast]
    named = dict(model.named_parameters())
    params = list(named.values())
    wanted = {k: _steps(v, total) for k, v in (("grad_raw", record_grads_raw),
                                                ("grad", record_grads),
                                                ("weight", record_weights),
                                                ("out", record_outputs))}
    arrays = {f"init__{n}": bits(p) for n, p in named.items()}
    xs, ys = zip(*[(_host(x), _host(y)) for x, y in batches], strict=True)
    arrays["batch_x"], arrays["batch_y"] = np.stack(xs), np.stack(ys)
    meta = {"format": CAPTURE_FORMAT, "version": CAPTURE_VERSION, "steps": total,
            "env": dict(pin_gemm_settings(), device=str(device)),
            "model": dict(model_spec or {}, repr=repr(model), cls=type(model).__qualname__),
            "params": [[n, list(p.shape), str(p.dtype).replace("torch.", "")]
                       for n, p in named.items()],
            "recipe": {"autocast": autocast, "accumulate": "sm90",
                       "param_dtype": str(params[0].dtype).replace("torch.", "")},
            "optimizer": optimizer_meta(optimizer, model), "scaler": scaler_meta(scaler),
            "clip": None if clip is None else {"max_norm": float(clip),
                                               "norm_type": float(norm_type), "foreach": None},
            "loss": loss, "tool": os.path.basename(__file__),
            "record": {k: sorted(v) for k, v in wanted.items()}}
    meta["record"]["output_rows"] = int(output_rows)
    meta.update(extra_meta or {})
    batch = arrays["batch_x"].shape[1]
    order: list[str] = []
    per_step = {"loss": [], "scale": [], "scale_after": [], "grad_norm": [], "lr": []}

    def keeper(step, name):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor) and output.is_floating_point():
                o = output[:output_rows] if output.dim() and output.shape[0] == batch else output
                arrays[f"out__{step}__{name}"] = bits(o)
                if step == min(wanted["out"]):
                    order.append(name)
        return hook

    for step, (x, y) in enumerate(zip(arrays["batch_x"], arrays["batch_y"], strict=True)):
        x = torch.from_numpy(x.astype(np.int64) if x.dtype.kind in "iu" else x).to(device)
        y = torch.from_numpy(y.astype(np.int64) if y.dtype.kind in "iu" else y).to(device)
        optimizer.zero_grad(set_to_none=True)
        per_step["lr"].append([float(g["lr"]) for g in optimizer.param_groups])
        hooks = ([m.register_forward_hook(keeper(step, n)) for n, m in model.named_modules() if n]
                 if step in wanted["out"] else [])
        with torch.autocast(dev_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            output = model(x)
            if loss == "cross_entropy":
                value = F.cross_entropy(output.reshape(-1, output.shape[-1]), y.reshape(-1))
            else:
                value = F.mse_loss(output, y)
        for h in hooks:
            h.remove()
        per_step["loss"].append(bits(value.float()))
        per_step["scale"].append(np.float32(scaler.get_scale() if scaler else 1.0))
        (scaler.scale(value) if scaler else value).backward()
        if step in wanted["grad_raw"]:
            for n, p in named.items():
                if p.grad is not None:
                    arrays[f"grad_raw__{step}__{n}"] = bits(p.grad)
        if clip is not None:
            if scaler:
                scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(params, clip, norm_type=norm_type)
            per_step["grad_norm"].append(bits(norm.float()))
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        per_step["scale_after"].append(np.float32(scaler.get_scale() if scaler else 1.0))
        for n, p in named.items():
            if step in wanted["grad"] and p.grad is not None:
                arrays[f"grad__{step}__{n}"] = bits(p.grad)
            if step in wanted["weight"]:
                arrays[f"weight__{step}__{n}"] = bits(p)
    meta["record"]["output_order"] = order
    arrays["loss"] = np.array(per_step["loss"], np.uint32)
    arrays["scale"] = np.array(per_step["scale"], np.float32).view(np.uint32)
    arrays["scale_after"] = np.array(per_step["scale_after"], np.float32).view(np.uint32)
    arrays["lr"] = np.array(per_step["lr"], np.float64)
    if per_step["grad_norm"]:
        arrays["grad_norm"] = np.array(per_step["grad_norm"], np.uint32)
    for n, p in named.items():
        arrays[f"final__{n}"] = bits(p)
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.savez_compressed(out, **arrays)
    size = os.path.getsize(out)
    if size > MAX_BYTES:
        print(f"simprec_capture: warning: {out} is {size / 2**20:.0f} MiB", file=sys.stderr)
    return out


# ------------------------------------------------------------------------------ demo networks
# The networks of simprec's tests/data/h200_capture/capture_runs.py: simprec.models.TinyGPT
# (tied_head=False, attention="manual") and simprec.models.MLP, with the same parameter names.


def seed_of(*parts) -> int:
    """A stable seed from a description (crc32 of its parts joined by '-')."""
    return zlib.crc32("-".join(str(p) for p in parts).encode())


def demo_modules():
    """torch versions of simprec's TinyGPT (tied_head=False, attention="manual") and MLP."""
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
        def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd):
            super().__init__()
            self.tok_emb = nn.Embedding(vocab_size, n_embd)
            self.pos_emb = nn.Embedding(block_size, n_embd)
            self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
            self.ln_f = nn.LayerNorm(n_embd)
            self.head = nn.Linear(n_embd, vocab_size, bias=False)

        def forward(self, ids):
            pos = torch.arange(ids.shape[1], device=ids.device)
            x = self.tok_emb(ids) + self.pos_emb(pos)
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.ln_f(x))

    def mlp(in_features, hidden, classes):
        layers, width = [], in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        return nn.Sequential(*layers, nn.Linear(width, classes))

    return TinyGPT, mlp


def gpt_init(names_shapes, seed=1301) -> dict:
    """GPT-2's convention (simprec TinyGPT's init_std=0.02): Linear/Embedding weights and
    in_proj_weight N(0, 0.02), biases 0, LayerNorm weight 1; drawn in `names_shapes` order."""
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


DEMOS = {
    "gpt": dict(vocab_size=512, block_size=64, n_layer=2, n_head=4, n_embd=64, batch=64),
    "mlp": dict(in_features=64, hidden=[256, 256], classes=10, batch=128),
}
SMALL = {
    "gpt": dict(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32, batch=4),
    "mlp": dict(in_features=64, hidden=[32, 32], classes=10, batch=16),
}


def demo(name: str, steps: int, device: str, small: bool = False):
    """(model on `device` with the demo's initial weights, batches, model_spec)."""
    import torch

    TinyGPT, mlp = demo_modules()
    cfg = dict((SMALL if small else DEMOS)[name])
    batch = cfg.pop("batch")
    if name == "gpt":
        model = TinyGPT(**cfg)
        init = gpt_init([(n, tuple(p.shape)) for n, p in model.named_parameters()])
        stream = token_stream(cfg["vocab_size"])
        batches = [gpt_batch(stream, s, batch, cfg["block_size"]) for s in range(steps)]
        spec = dict(cfg, tied_head=False, attention="manual")
    else:
        model = mlp(cfg["in_features"], cfg["hidden"], cfg["classes"])
        init = mlp_init([(n, tuple(p.shape)) for n, p in model.named_parameters()])
        batches = [mlp_batch(s, batch, cfg["in_features"], cfg["classes"])
                   for s in range(steps)]
        spec = dict(cfg, activation="relu")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in init.items()})
    return model.to(device), batches, {"name": name, "kwargs": spec}


def make_optimizer(params, name: str, lr: float, path: str | None, weight_decay=None,
                   momentum: float = 0.9):
    """torch's SGD / Adam / AdamW; `path` "single", "foreach", "fused" or None (torch's
    default)."""
    import torch

    kwargs = {"single": {"foreach": False}, "foreach": {"foreach": True},
              "fused": {"fused": True}, None: {}}[path]
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, **kwargs)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    return cls(params, lr=lr, **kwargs)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="simprec_capture.py",
                                description="Record a native torch AMP run of a demo network "
                                            "for `simprec replay` (torch and numpy only).")
    p.add_argument("--demo", choices=sorted(DEMOS), default="gpt")
    p.add_argument("--out", required=True, help="the capture to write (.npz)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--autocast", choices=("fp16", "bf16", "none"), default="fp16")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="adamw")
    p.add_argument("--path", choices=("single", "foreach", "fused"), default=None,
                   help="the optimizer's implementation (default: torch's choice)")
    p.add_argument("--lr", type=float, default=None, help="default: 3e-3 (gpt), 1e-3 (mlp)")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--no-scaler", action="store_true", help="no GradScaler (bf16 needs none)")
    p.add_argument("--init-scale", type=float, default=2.0**10)
    p.add_argument("--growth-interval", type=int, default=4)
    p.add_argument("--clip", type=float, default=None, help="clip_grad_norm_ max_norm")
    p.add_argument("--record-grads", default="0", help="steps: 0,5,.. or all or none")
    p.add_argument("--record-weights", default="none", help="steps: 0,5,.. or all or none")
    p.add_argument("--record-outputs", default="0", help="steps: 0,5,.. or all or none")
    p.add_argument("--small", action="store_true", help="small sizes (a CPU dry run)")
    args = p.parse_args(argv)

    def steps(text):
        return text if text == "all" else [] if text == "none" else [
            int(s) for s in text.split(",") if s]

    import torch

    pin_gemm_settings()
    model, batches, spec = demo(args.demo, args.steps, args.device, args.small)
    lr = args.lr if args.lr is not None else (3e-3 if args.demo == "gpt" else 1e-3)
    opt = make_optimizer(model.parameters(), args.optimizer, lr, args.path, args.weight_decay)
    autocast = None if args.autocast == "none" else args.autocast
    scaler = None
    if not args.no_scaler and autocast == "fp16":
        scaler = torch.amp.GradScaler(torch.device(args.device).type,
                                      init_scale=args.init_scale,
                                      growth_interval=args.growth_interval)
    out = capture_run(model, batches, opt, autocast=autocast, scaler=scaler, clip=args.clip,
                      out=args.out, record_grads=steps(args.record_grads),
                      record_weights=steps(args.record_weights),
                      record_outputs=steps(args.record_outputs), model_spec=spec)
    print(f"{out}: {args.steps} steps of the {args.demo} demo, "
          f"{os.path.getsize(out) / 2**20:.1f} MiB; replay with: simprec replay {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
