"""Helpers shared by the H200 capture scripts: exact bit patterns, seeded inputs, npz output.

torch and numpy only (the GPU machine has no simprec). Every input is drawn on the host from
numpy's PCG64 with a seed the script names, so a replay regenerates it bit for bit.
"""

from __future__ import annotations

import json
import os
import zlib

import numpy as np

MAX_BYTES = 15 * 1024 * 1024


def seed_of(*parts) -> int:
    """A stable seed from a case's description (crc32 of its parts joined by '-')."""
    return zlib.crc32("-".join(str(p) for p in parts).encode())


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def bits(t) -> np.ndarray:
    """A torch tensor's bit patterns on the host: uint16 for fp16/bf16, uint32 for fp32,
    the integer array itself for integer tensors."""
    import torch

    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).cpu().numpy().view(np.uint16)
    if t.dtype == torch.float16:
        return t.view(torch.int16).cpu().numpy().view(np.uint16)
    if t.dtype == torch.float32:
        return t.view(torch.int32).cpu().numpy().view(np.uint32)
    if t.dtype == torch.float64:
        return t.view(torch.int64).cpu().numpy().view(np.uint64)
    return t.cpu().numpy()


def np_bits(a: np.ndarray) -> np.ndarray:
    """A numpy float array's bit patterns (fp16 -> uint16, fp32 -> uint32)."""
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def torch_dtype(name: str):
    import torch

    return {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[name]


def to_torch(a: np.ndarray, dtype: str, device: str):
    """fp32 numpy values -> a torch tensor of `dtype` on `device`, rounded on the host by
    torch's CPU cast (round to nearest even), so host and device hold the same bits."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return t.to(torch_dtype(dtype)).to(device)


def setup_torch(device: str) -> dict:
    """Pin the settings of the project's earlier H200 captures (shared/data/h200/capture.py):
    cuBLASLt preferred, fp16/bf16 reduced-precision reductions and split-K off, no TF32. Returns
    them with the versions for the file's `meta` (a setting torch refuses is listed under
    "setting_errors" rather than stopping the capture)."""
    import torch

    meta = {"torch": torch.__version__, "numpy": np.__version__, "device": device,
            "cuda": torch.version.cuda, "setting_errors": {},
            "env": {k: v for k, v in os.environ.items()
                    if k.startswith(("CUBLAS", "CUDA", "TORCH"))}}
    matmul = torch.backends.cuda.matmul

    def pin(name, fn):
        try:
            fn()
        except Exception as e:  # keep capturing; the file says which setting did not take
            meta["setting_errors"][name] = f"{type(e).__name__}: {e}"

    if device.startswith("cuda"):
        pin("preferred_blas_library", lambda: torch.backends.cuda.preferred_blas_library(
            "cublaslt"))
        meta["gpu"] = torch.cuda.get_device_name(device)
        meta["capability"] = list(torch.cuda.get_device_capability(device))
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
    if device.startswith("cuda"):
        meta["blas_library"] = repr(torch.backends.cuda.preferred_blas_library())
    return meta


def save(out_dir: str, name: str, arrays: dict, meta: dict) -> str:
    """Write `arrays` plus `meta` (a JSON string under key "meta") to OUT/name.npz,
    compressed; refuse a file over 15 MB."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name + ".npz")
    arrays = dict(arrays)
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    np.savez_compressed(path, **arrays)
    size = os.path.getsize(path)
    print(f"{path}: {len(arrays)} arrays, {size / 1e6:.2f} MB", flush=True)
    if size > MAX_BYTES:
        raise RuntimeError(f"{path} is {size / 1e6:.1f} MB, over the 15 MB limit")
    return path


def cli(capture, doc: str) -> None:
    """`python script.py --out DIR [--device cuda|cpu] [--small]` calling capture(out, device,
    small)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="small sizes (CPU dry run)")
    args = parser.parse_args()
    capture(args.out, args.device, args.small)
