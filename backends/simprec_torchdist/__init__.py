"""simprec's data-parallel collectives on torch.distributed (gloo between CPUs, NCCL between GPUs).

The core's :mod:`simprec.distributed` decides *what* is exchanged and when (buckets of averaged
gradients, a few host numbers); this plugin moves it. It knows each backend's arrays:

* numpy: ``torch.from_numpy`` (no copy) on the fp32 container; fp16 / bf16 values are converted
  to a torch.float16 / torch.bfloat16 buffer (exact), so that a bucket travels, and is summed,
  in the gradients' own format, as a GPU run's would;
* torch:<device>: the tensors themselves;
* cupy: DLPack (``torch.from_dlpack``), no copy;
* any other backend: through host NumPy arrays (``Backend.to_numpy`` / ``asarray``).

A format torch has no dtype for (fp8, custom formats) travels as fp32; the core rounds the sums
to the format.
"""

from __future__ import annotations

import datetime
import os

import numpy as np
import torch
import torch.distributed as dist

from simprec.distributed.collectives import CollectiveError, Collectives, Work
from simprec.formats import bf16, fp16, fp32

__all__ = ["TorchDistCollectives", "select_device"]

_DTYPES = ((fp32, torch.float32), (fp16, torch.float16), (bf16, torch.bfloat16))


def comm_dtype(fmt) -> torch.dtype:
    """The dtype a gradient of ``fmt`` travels in: its own, or fp32."""
    for f, dtype in _DTYPES:
        if fmt == f:
            return dtype
    return torch.float32


def _kind(backend) -> str:
    name = backend.name
    if name == "numpy":
        return "numpy"
    if name.startswith("torch"):
        return "torch"
    if name.startswith("cupy"):
        return "cupy"
    return "host"


def to_torch(backend, array, dtype, device) -> torch.Tensor:
    """A torch tensor with the values of ``array`` (a ``backend`` array) in ``dtype``."""
    kind = _kind(backend)
    if kind == "numpy":
        t = torch.from_numpy(np.ascontiguousarray(array))
    elif kind == "torch":
        t = array
    elif kind == "cupy":
        t = torch.from_dlpack(array)
    else:
        t = torch.from_numpy(np.ascontiguousarray(backend.to_numpy(array)))
    return t.to(device=device, dtype=dtype)


def from_torch(backend, t: torch.Tensor, fmt):
    """``t``'s values (exact in ``fmt`` or fp32) as a ``backend`` array in fp32 opmath."""
    t32 = t.to(torch.float32)
    kind = _kind(backend)
    if kind == "numpy":
        return t32.cpu().numpy().copy()
    if kind == "torch":
        return t32.clone()
    if kind == "cupy":
        import cupy

        return cupy.from_dlpack(t32.clone())
    return backend.asarray(t32.cpu().numpy(), fp32)


def _failed(what: str, err: Exception) -> CollectiveError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return CollectiveError(f"data parallelism: {what} failed on rank {dist.get_rank()}: another "
                           f"rank has died or did not answer in time ({first})")


def select_device(backend_name: str, local_rank: int) -> torch.device:
    """The CUDA device of this rank (``local_rank`` modulo the GPUs), made current for torch and,
    for the cupy backend, for CuPy; the CPU for other backends or without CUDA."""
    if not backend_name.startswith(("torch:cuda", "cupy")) or not torch.cuda.is_available():
        return torch.device("cpu")
    suffix = backend_name.partition(":")[2]  # "cuda", "cuda:N" (torch) or "" / "N" (cupy)
    index = suffix.rpartition(":")[2] if backend_name.startswith("torch") else suffix
    if index.isdigit():  # a backend pinned to one GPU keeps it
        torch.cuda.set_device(int(index))
    else:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    device = torch.device("cuda", torch.cuda.current_device())
    if backend_name.startswith("cupy"):
        import cupy

        cupy.cuda.Device(device.index).use()
    return device


class _BucketWork(Work):
    def __init__(self, work, flat, backend, fmt, shapes):
        self._work, self._flat = work, flat
        self._backend, self._fmt, self._shapes = backend, fmt, shapes

    def wait(self) -> list:
        try:
            self._work.wait()
        except RuntimeError as err:
            raise _failed("the gradient all-reduce", err) from err
        out, offset = [], 0
        for shape in self._shapes:
            n = int(np.prod(shape, dtype=np.int64))
            piece = self._flat[offset:offset + n].reshape(shape)
            out.append(from_torch(self._backend, piece, self._fmt))
            offset += n
        return out


class TorchDistCollectives(Collectives):
    """The job ``torchrun`` started, joined through ``torch.distributed.init_process_group``."""

    def __init__(self, backend_name: str, *, engine: str | None = None, timeout: float = 300.0):
        cuda = backend_name.startswith(("torch:cuda", "cupy"))
        self.engine = engine or ("nccl" if cuda else "gloo")
        if self.engine not in ("gloo", "nccl"):
            raise ValueError(f"unknown torch.distributed engine {self.engine!r}: gloo or nccl")
        self.device = select_device(backend_name, int(os.environ.get("LOCAL_RANK", "0")))
        if self.engine == "nccl" and self.device.type != "cuda":
            raise ValueError("the NCCL engine needs a CUDA backend (torch:cuda or cupy)")
        kwargs = {}
        if self.engine == "nccl":
            kwargs["device_id"] = self.device
        dist.init_process_group(self.engine, timeout=datetime.timedelta(seconds=timeout),
                                **kwargs)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.name = f"torch.distributed/{self.engine}"
        # host numbers travel on the engine's device (NCCL moves only CUDA tensors)
        self._host_device = self.device if self.engine == "nccl" else torch.device("cpu")

    def all_reduce_async(self, backend, fmt, arrays: list) -> Work:
        dtype = comm_dtype(fmt)
        device = self.device if _kind(backend) != "numpy" else torch.device("cpu")
        if self.engine == "nccl":
            device = self.device
        pieces = [to_torch(backend, a, dtype, device).reshape(-1) for a in arrays]
        flat = torch.cat(pieces) if len(pieces) > 1 else pieces[0].clone()
        try:
            work = dist.all_reduce(flat, op=dist.ReduceOp.SUM, async_op=True)
        except RuntimeError as err:
            raise _failed("the gradient all-reduce", err) from err
        shapes = [tuple(backend.shape(a)) for a in arrays]
        return _BucketWork(work, flat, backend, fmt, shapes)

    def all_reduce_host(self, values: np.ndarray) -> np.ndarray:
        t = torch.tensor(np.asarray(values, dtype=np.float64), device=self._host_device)
        try:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        except RuntimeError as err:
            raise _failed("an all-reduce", err) from err
        return t.cpu().numpy()

    def all_gather_host(self, array: np.ndarray) -> list[np.ndarray]:
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8)).to(self._host_device)
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        try:
            dist.all_gather(out, t)
        except RuntimeError as err:
            raise _failed("an all-gather", err) from err
        return [o.cpu().numpy() for o in out]

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
