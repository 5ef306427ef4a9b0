"""torch.nn.utils.clip_grad_norm_ on lists of fp32 and fp16 gradients on the GPU.

    python tests/data/h200_capture/capture_clip.py --out DIR [--device cuda]

Writes h200_clip.npz. Each case: gradients of shapes SHAPES from `case_grads(name, dtype)`
(fp32 drawn on the host, times the case's magnitude, rounded to fp16 for fp16 cases), one
norm_type (2 or inf) and one max_norm: either half the total norm (clipping) or twice it (no
clipping). Keys, per case `{dtype}_{mag}_{norm}_{hit|miss}` and foreach setting `fe` ("default":
foreach=None, torch's choice on CUDA; "off": foreach=False):
- `{dtype}_{mag}__grad{i}`: input gradient bits (inputs are small and saved).
- `{case}__fnorm{i}`: torch._foreach_norm(grads, norm_type)[i] bits (per-tensor norms);
  `{case}__vnorm{i}`: torch.linalg.vector_norm(grad_i, norm_type) bits (the foreach=False path).
- `{case}__{fe}__total`: the total norm clip_grad_norm_ returns (bits; dtype as torch returns it).
- `{case}__{fe}__clipped{i}`: gradient bits after clip_grad_norm_.
- `{case}__max_norm`: max_norm as float64.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bits, cli, np_bits, save, seed_of, setup_torch, to_torch  # noqa: E402

SHAPES = [(1,), (7,), (1000,), (4099,), (33, 65), (128, 256)]
SMALL_SHAPES = [(1,), (7,), (100,), (3, 5)]
# gradient magnitude: "unit" N(0,1)*10**U(-3,0); "big": fp16 squares overflow in a naive sum;
# "tiny": fp16 subnormals
MAGNITUDES = {"unit": 1.0, "big": 300.0, "tiny": 1e-4}


def case_grads(mag: str, dtype: str, shapes=SHAPES) -> list[np.ndarray]:
    g = np.random.default_rng(seed_of("clip", mag, dtype))
    out = []
    for s in shapes:
        v = g.standard_normal(s, dtype=np.float32) * (10.0 ** g.uniform(-3.0, 0.0, s))
        out.append((v * MAGNITUDES[mag]).astype(np.float32))
    if dtype == "f16":
        out = [v.astype(np.float16).astype(np.float32) for v in out]
    return out


def capture(out_dir: str, device: str = "cuda", small: bool = False) -> None:
    import torch

    meta = setup_torch(device)
    shapes = SMALL_SHAPES if small else SHAPES
    out, errors = {}, {}
    for dtype in ("f32", "f16"):
        for mag in MAGNITUDES:
            host = case_grads(mag, dtype, shapes)
            for norm_name, norm_type in (("l2", 2.0), ("inf", float("inf"))):
                ref = [to_torch(v, dtype, device) for v in host]
                fnorms = torch._foreach_norm(ref, norm_type)
                vnorms = [torch.linalg.vector_norm(t, norm_type) for t in ref]
                total = float(torch.linalg.vector_norm(
                    torch.stack([n.float() for n in vnorms]), norm_type))
                for hit, factor in (("hit", 0.5), ("miss", 2.0)):
                    case = f"{dtype}_{mag}_{norm_name}_{hit}"
                    max_norm = total * factor if np.isfinite(total) and total > 0 else 1.0
                    out[f"{case}__max_norm"] = np.float64(max_norm)
                    for i in range(len(ref)):
                        out[f"{dtype}_{mag}__grad{i}"] = np_bits(
                            host[i].astype(np.float16 if dtype == "f16" else np.float32))
                        out[f"{case}__fnorm{i}"] = bits(fnorms[i])
                        out[f"{case}__vnorm{i}"] = bits(vnorms[i])
                    for fe, foreach in (("default", None), ("off", False)):
                        params = [torch.nn.Parameter(torch.zeros_like(t)) for t in ref]
                        for p, t in zip(params, ref, strict=True):
                            p.grad = t.clone()
                        try:
                            tn = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type,
                                                                foreach=foreach)
                        except Exception as e:
                            errors[f"{case}__{fe}"] = f"{type(e).__name__}: {e}"
                            continue
                        out[f"{case}__{fe}__total"] = bits(tn)
                        for i, p in enumerate(params):
                            out[f"{case}__{fe}__clipped{i}"] = bits(p.grad)
    meta.update(shapes=shapes, magnitudes=MAGNITUDES, errors=errors)
    save(out_dir, "h200_clip", out, meta)


if __name__ == "__main__":
    cli(capture, __doc__)
