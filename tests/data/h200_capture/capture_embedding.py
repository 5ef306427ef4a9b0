"""F.embedding backward (torch's CUDA embedding_dense_backward) with many repeated ids.

    python tests/data/h200_capture/capture_embedding.py --out DIR [--device cuda]

Writes h200_embedding.npz. Cases CASES (name, vocab, dim, ids shape) cover both of torch's
kernels: up to 3,072 indices without scale_grad_by_freq (embedding_backward_feature_kernel),
and the sort-and-segment path (more indices, or scale_grad_by_freq). For each case, `case_ids`
draws ids with Zipf-like repeats (p ~ 1/(rank+1)^1.1, ranks permuted; padding id 3 always
present) and `case_grad_output` the fp32 output gradient (rounded to the case's dtype).
Keys:
- `{case}__ids`: int32 ids; `{case}__go_{dtype}`: grad_output bits when it has <= 65,536 values
  (else regenerate it with `case_grad_output`).
- `{case}__{dtype}__{variant}`: weight.grad bits, (vocab, dim). dtype f32/f16/bf16 (weight and
  grad_output), variant: plain, pad (padding_idx=3), freq (scale_grad_by_freq=True), pad_freq.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bits, cli, save, seed_of, setup_torch, to_torch, torch_dtype  # noqa: E402

CASES = [
    ("v13_d64_n256", 13, 64, (4, 64)),
    ("v50_d33_n3072", 50, 33, (48, 64)),
    ("v50_d33_n3073", 50, 33, (3073,)),
    ("v512_d64_n2048", 512, 64, (32, 64)),
    ("v512_d64_n4096", 512, 64, (64, 64)),
    ("v65_d64_n8192", 65, 64, (16, 512)),
    ("v512_d64_n32768", 512, 64, (32, 1024)),
    ("v300_d128_n2048", 300, 128, (4, 512)),
    ("v7_d128_n100000", 7, 128, (100000,)),
]
SMALL_CASES = [("v13_d64_n256", 13, 64, (4, 64)), ("v50_d33_n3073", 50, 33, (3073,))]
VARIANTS = {
    "plain": dict(),
    "pad": dict(padding_idx=3),
    "freq": dict(scale_grad_by_freq=True),
    "pad_freq": dict(padding_idx=3, scale_grad_by_freq=True),
}
DTYPES = ("f32", "f16", "bf16")


def case_ids(name: str, vocab: int, shape) -> np.ndarray:
    g = np.random.default_rng(seed_of("emb-ids", name))
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    ids = g.permutation(vocab)[g.choice(vocab, size=shape, p=p / p.sum())]
    ids.ravel()[g.integers(0, ids.size)] = 3 % vocab
    return ids.astype(np.int32)


def case_grad_output(name: str, dim: int, shape) -> np.ndarray:
    """fp32 grad_output of shape (*ids.shape, dim); fp16/bf16 cases round it (torch's cast)."""
    g = np.random.default_rng(seed_of("emb-go", name))
    return g.standard_normal((*shape, dim), dtype=np.float32)


def capture(out_dir: str, device: str = "cuda", small: bool = False) -> None:
    import torch
    import torch.nn.functional as F

    meta = setup_torch(device)
    out = {}
    for name, vocab, dim, shape in SMALL_CASES if small else CASES:
        ids_np = case_ids(name, vocab, shape)
        out[f"{name}__ids"] = ids_np
        ids = torch.from_numpy(ids_np.astype(np.int64)).to(device)
        go32 = case_grad_output(name, dim, shape)
        for dtype in DTYPES:
            go = to_torch(go32, dtype, device)
            if go32.size <= 65536:
                out[f"{name}__go_{dtype}"] = bits(go)
            for variant, kw in VARIANTS.items():
                weight = torch.zeros(vocab, dim, dtype=torch_dtype(dtype), device=device,
                                     requires_grad=True)
                F.embedding(ids, weight, **kw).backward(go)
                out[f"{name}__{dtype}__{variant}"] = bits(weight.grad)
    meta.update(cases=SMALL_CASES if small else CASES, variants=VARIANTS)
    save(out_dir, "h200_embedding", out, meta)


if __name__ == "__main__":
    cli(capture, __doc__)
