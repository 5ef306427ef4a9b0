"""TorchBackend: simprec's kernel contract over torch tensors, on "cpu" or a CUDA device.

Containers: fp16 and bf16 values live in native torch.float16 / torch.bfloat16 tensors (tensor
cores, half the memory); every other float format up to fp32 in float32 tensors (float64 beyond);
integer tensors in int64, masks in bool. Every kernel runs on the tensors' device; the host sees
a tensor only through `to_numpy` (and, on "torch:cpu" only, where CPU tensors and NumPy arrays
share memory, the reference's own math-library kernels and matmul models, see below).

Arithmetic follows the reference (`simprec.backend.numpy_backend`) bit for bit:
- rounding: torch's fp16/bf16 casts; every other format by `rounding.round_to_format`;
- elementwise: `kernels` (fp32 opmath; IEEE ones with torch operations everywhere, math-library
  ones with torch's CUDA kernels on a GPU and the reference's formulas on the CPU);
- matmul: on CUDA, cuBLASLt tensor-core GEMMs with split-K and reduced-precision reductions off
  and K padded to whole blocks of 16, which is the reference's "sm90" model (and the realisation
  of "fp32", whose order the reference leaves unspecified); an accumulation model the device
  does not have is an error naming the backends that emulate it. On the CPU,
  the reference's model runs on the tensors' memory;
- reductions: float64 accumulation, one rounding to fp32, like the reference's fallback sums.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from simprec import formats
from simprec.backend.contract import Backend
from simprec.backend.gemm_layout import sm90_gemm_layout
from simprec.backend.numpy_backend import NumpyBackend

from . import kernels, op_kernels
from .rounding import container_dtype, round_to_format

_HALVES = (torch.float16, torch.bfloat16)
_TC_BLOCK = 16  # sm_90's K block: padding K to a multiple keeps the block order fixed
_SMALL_M = 16  # GEMMs of this many rows or fewer are padded to 2 * _SMALL_M (_not_tma)
_REFERENCE = NumpyBackend()
# Dense fp16/bf16 tensor-core peaks (FLOP/s, no sparsity) from NVIDIA's H100/H200 SXM datasheets.
_PEAK_HALF_FLOPS = {"H200": 989.4e12, "H100": 989.4e12}


def _device_of(suffix: str) -> torch.device:
    if suffix in ("", "cpu"):
        return torch.device("cpu")
    if suffix == "cuda" or suffix.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ImportError(f"backend 'torch:{suffix}' needs a CUDA GPU and torch built with "
                              f"CUDA; this torch {torch.__version__} sees none")
        device = torch.device(suffix)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ImportError(f"backend 'torch:{suffix}': this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
        return device
    raise ValueError(f"torch backend: device must be 'cpu', 'cuda' or 'cuda:N', got {suffix!r}")


def _pin_gemm_settings() -> None:
    """The cuBLAS settings the reference's tensor-core model describes: fp32 accumulation with
    no reduced-precision (fp16/bf16) reductions, no split-K, and no TF32 for fp32 GEMMs."""
    matmul = torch.backends.cuda.matmul
    # cuBLASLt, whose kernels the H200 captures measured (tests/data/h200_capture/_common.py);
    # torch refuses split-K off under plain cuBLAS (a CPU-only build runs no cuBLAS GEMM)
    lt = _prefer_cublaslt() or not torch.cuda.is_available()
    for attr in ("allow_fp16_reduced_precision_reduction",
                 "allow_bf16_reduced_precision_reduction"):
        # torch >= 2.10 takes (reduced precision, split-K); a bare False still lets cuBLASLt
        # split K (H200: the CNN's conv1 weight gradient, 16x9 with K = 4096, ran
        # splitKreduce_kernel and differed from the model in 3 of 144 values;
        # scripts/h200_gemm13_check.py). Older torch takes a bool, which turns both off.
        try:
            setattr(matmul, attr, (False, False) if lt else False)
        except (TypeError, RuntimeError):
            setattr(matmul, attr, False)
    matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _prefer_cublaslt() -> bool:
    """Make cuBLASLt torch's BLAS library; False where this torch cannot."""
    try:
        torch.backends.cuda.preferred_blas_library("cublaslt")
    except (AttributeError, RuntimeError, ValueError):
        return False
    return True


class TorchBackend(Backend):
    """simprec's kernels on torch tensors: "torch:cpu", "torch:cuda", "torch:cuda:N"."""

    def __init__(self, device: str = "cpu"):
        self.device = _device_of(device)
        self.name = "torch:" + (device or "cpu")
        self.is_cuda = self.device.type == "cuda"
        self.host_memory = not self.is_cuda
        # Which kernels run: torch's own (the ones the reference models on CUDA) or, on the CPU,
        # the reference's models. `cuda_plan()` makes a CPU backend that follows the CUDA plan
        # (its bits are torch's CPU kernels', not the reference's): for counting a step's ops.
        self.native = self.is_cuda
        self._k_slot_cache = {}  # GemmLayout.key -> its K slots on this device
        if self.is_cuda:
            _pin_gemm_settings()

    @classmethod
    def cuda_plan(cls) -> TorchBackend:
        """A "torch:cpu" backend that runs the kernels "torch:cuda" runs (torch's own, on the
        CPU), registered as "torch:cpu-cuda-plan": without a GPU, a step on it launches the ops
        a step on "torch:cuda" launches, so their count measures the CUDA step's kernel launches
        (tests/test_torch_op_count.py, benchmarks/count_step_ops.py). Not bit-exact: torch's CPU
        kernels add in other orders than its CUDA ones."""
        from simprec.backend import _instances

        name = "torch:cpu-cuda-plan"
        if name not in _instances:
            be = cls("cpu")
            be.name, be.native, be.host_memory = name, True, False
            _instances[name] = be
        return _instances[name]

    def peak_flops(self) -> float | None:
        """This GPU's dense half-precision tensor-core peak in FLOP/s (None when unknown), for
        the trainer's model FLOP utilisation."""
        if not self.is_cuda:
            return None
        name = torch.cuda.get_device_name(self.device)
        return next((v for k, v in _PEAK_HALF_FLOPS.items() if k in name), None)

    # ---- helpers ----
    def _tensor(self, v, dtype=None):
        """`v` as a tensor on this device (tensors pass; NumPy arrays and scalars are copied;
        a float scalar becomes fp32, torch's wrapped-number rule). Scalars are filled on the
        device and host arrays go through pinned memory without blocking, so neither waits for
        the device's queue (a pageable copy would)."""
        if isinstance(v, torch.Tensor):
            t = v if v.device == self.device else v.to(self.device)
        elif isinstance(v, (bool, np.bool_, int, np.integer, float, np.floating)):
            value, kind = _scalar(v)
            t = torch.full((), value, dtype=kind, device=self.device)
        else:
            array = np.asarray(v)
            if array.dtype.kind == "V" or array.dtype.kind == "f" and array.dtype.itemsize < 4 \
                    or array.dtype.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
                array = array.astype(np.float32)
            t = torch.from_numpy(np.ascontiguousarray(array))
            if self.is_cuda:
                t = t.pin_memory().to(self.device, non_blocking=True)
        return t if dtype is None else t.to(dtype)

    @staticmethod
    def _opmath(x):
        """fp32 opmath view of a float tensor (fp16/bf16 widened; fp32/fp64/int/bool as is)."""
        if isinstance(x, torch.Tensor) and x.dtype in _HALVES:
            return x.float()
        return x

    def _operand(self, v):
        return self._opmath(self._tensor(v))

    def _host(self, x):
        """A NumPy view of a CPU tensor (torch:cpu only; fp16/bf16 widened to float32)."""
        if isinstance(x, torch.Tensor):
            return self._opmath(x).numpy()
        return x

    def _index(self, index):
        """A getitem index with NumPy arrays turned into tensors on this device."""
        if isinstance(index, tuple):
            return tuple(self._index(i) for i in index)
        if isinstance(index, np.ndarray):
            return self._tensor(index)
        if isinstance(index, list):
            return self._tensor(np.asarray(index))
        if isinstance(index, np.integer):
            return int(index)
        return index

    # ---- arrays ----
    def asarray(self, data, fmt):
        if isinstance(data, np.ndarray) and data.ndim == 0 and data.dtype.kind in "fiub" \
                and data.dtype.itemsize >= 4 or isinstance(data, (np.floating, np.integer)):
            # one fill on the device (no host-to-device copy): the value is exact in `fmt`
            return torch.full((), data.item(), dtype=container_dtype(fmt), device=self.device)
        return self._tensor(data).to(container_dtype(fmt), copy=True)

    def to_numpy(self, x):
        if not isinstance(x, torch.Tensor):
            return np.asarray(x)
        return self._opmath(x.detach()).cpu().numpy()

    def full(self, shape, value, fmt):
        return torch.full(tuple(shape), value, dtype=container_dtype(fmt), device=self.device)

    def shape(self, x):
        return tuple(x.shape)

    # ---- precision ----
    def round(self, x, fmt, *, inplace=False, exact=False):
        x = self._tensor(x)
        if not isinstance(fmt, formats.Format):
            return x.float() if x.is_floating_point() else x.to(torch.float32)
        if exact:
            return x.to(container_dtype(fmt))
        return round_to_format(x if x.is_floating_point() else x.float(), fmt)

    def round_mode(self, x, fmt, mode, words=None, random_bits=32):
        """`x` rounded into `fmt` by `mode` ("nearest", "toward_zero", "stochastic" with
        `words`, one random 32-bit word per element), on the device."""
        return round_to_format(self._tensor(x), fmt, mode, words, random_bits)

    def elementwise(self, op, *xs, fmt=None, **params):
        if self.native:
            out = self._native_elementwise(op, xs, fmt, params)
            if out is not None:
                return out
        args = [self._operand(x) for x in xs]
        if op in kernels.IEEE_KERNELS:
            out = kernels.run_ieee(op, args, params)
        elif op in kernels.CUDA_KERNELS:
            if self.native:
                out = kernels.CUDA_KERNELS[op](*args, **params)
            else:  # the reference's libdevice formulas, on the CPU tensors' memory
                out = torch.from_numpy(np.require(
                    _REFERENCE.elementwise(op, *(self._host(a) for a in args), **params),
                    requirements=("W",)))
        else:
            raise ValueError(f"torch backend: unknown elementwise op {op!r}")
        if fmt is None:
            return out
        return self.round(out, fmt)

    def _native_elementwise(self, op, xs, fmt, params):
        """One torch kernel on the operands as they are, where that kernel computes what the
        reference does (None otherwise: the caller widens to fp32 and rounds after):
        - fma with a number as one factor: torch.add(c, t, alpha=s), which nvcc contracts to
          fma(s, t, c) (AddFunctor; measured on the H200, docs/notes tensor-cores.md §2.2);
        - an op on fp16 (bf16) tensors whose result is wanted in fp16 (bf16): torch's CUDA kernel
          computes in fp32 opmath and rounds once to nearest even (`opmath_type`, Loops.cuh), the
          reference's rule, without the widening copies (comparisons: any wanted format);
        - a binary op whose torch result type is fp32 (an fp16 and an fp32 tensor): the loads
          widen the half operand, as `.float()` would, in the same kernel."""
        if op == "fma":
            return self._fma_by_add(*xs, fmt)
        if op == "sqrt" and all(isinstance(x, torch.Tensor) for x in xs):
            out = torch.sqrt(self._opmath(xs[0]))  # CUDA's sqrtf: correctly rounded
            return out if fmt is None else self.round(out, fmt)
        if op not in kernels.NATIVE_DTYPE_OPS or not all(isinstance(x, torch.Tensor) for x in xs):
            return None
        floats = {x.dtype for x in xs if x.is_floating_point()}
        if len(floats) == 1 and (dtype := floats.pop()) in _HALVES and all(
                x.is_floating_point() or x.dtype == torch.bool for x in xs):
            if op in kernels.COMPARISONS:
                return kernels.run_native(op, xs, params)
            if isinstance(fmt, formats.Format) and container_dtype(fmt) == dtype:
                return kernels.run_native(op, xs, params)
            return None
        if (len(xs) == 2 and op in kernels.IEEE_KERNELS and floats <= {torch.float32, *_HALVES}
                and torch.result_type(*xs) == torch.float32):
            out = kernels.run_native(op, xs, params)
            return out if fmt is None else self.round(out, fmt)
        return None

    def _fma_by_add(self, a, b, c, fmt):
        number = (int, float, np.integer, np.floating)
        if isinstance(c, number) or not (isinstance(a, number) or isinstance(b, number)):
            return None
        t, s = (a, b) if isinstance(b, number) else (b, a)
        if isinstance(t, number):
            return None
        out = torch.add(self._operand(c), self._operand(t), alpha=kernels.scalar(s))
        return out if fmt is None else self.round(out, fmt)

    def matmul(self, a, b, *, fmt, accumulate, out_fmt, bias=None):
        if not self.native:
            # torch:cpu: the reference's accumulation model on the same memory (a CPU tensor and
            # a NumPy array share it); CPU BLAS orders differ, so torch.matmul is not used.
            out = _REFERENCE.matmul(self._host(a), self._host(b), fmt=fmt, accumulate=accumulate,
                                    out_fmt=out_fmt, bias=None if bias is None
                                    else self._host(bias))
            return self.round(torch.from_numpy(np.require(out, requirements=("W",))),
                              out_fmt, exact=True)
        return self._cuda_matmul(a, b, fmt, accumulate, out_fmt, bias)

    def _cuda_matmul(self, a, b, fmt, accumulate, out_fmt, bias):
        half = fmt in (formats.fp16, formats.bf16)
        if fmt == formats.fp32 or (accumulate == "fp32" and not half):
            acc = torch.matmul(a.float(), b.float())  # TF32 off: an fp32 GEMM, order unspecified
            if bias is not None:
                acc = acc + self._operand(bias)
            return self.round(acc, out_fmt)
        # "fp32" (exact products, fp32 sums in an unspecified order) is realised by the GPU's own
        # fp32-accumulating tensor-core GEMM; bit parity with the reference needs "sm90".
        if not half or accumulate not in ("sm90", "fp32"):
            cap = torch.cuda.get_device_capability(self.device)
            raise NotImplementedError(
                f"torch backend on {self.name} (sm_{cap[0]}{cap[1]}): accumulate={accumulate!r} "
                f"with {fmt.name} inputs is not what this GPU's tensor cores compute (they are "
                f"the 'sm90' model on fp16/bf16); the 'numpy' backend (and 'cupy' at GPU speed) "
                f"emulates it")
        dtype = container_dtype(fmt)
        a, b = a.to(dtype), b.to(dtype)
        if accumulate == "sm90":  # the kernel cuBLASLt picks on the H200 (the reference's map)
            layout = sm90_gemm_layout(a.shape, b.shape, fmt, bias=bias is not None)
            if not layout.fused_bias:  # no bias epilogue: product rounded, bias added, rounded
                prod = self._cuda_matmul(a, b, fmt, accumulate, fmt, None)
                return self.round(prod.float() + self._operand(bias), out_fmt)
            if layout.slots is not None or _not_tma(a, b):
                return self._laid_out_matmul(a, b, layout, out_fmt, bias)
        k = a.shape[-1]
        pad = -k % _TC_BLOCK
        if pad:  # zero terms at the end of K: whole blocks of 16, the model's block order
            a = F.pad(a, (0, pad))
            b = F.pad(b, (0, 0, 0, pad))
        out_dtype = container_dtype(out_fmt)
        if (out_dtype == dtype and bias is not None and a.dim() == 2 and b.dim() == 2
                and isinstance(bias, torch.Tensor) and bias.dtype == dtype and b.shape[1] > 1):
            # the bias epilogue: added to the fp32 accumulator, one rounding (cublasLt; with
            # N == 1 cuBLASLt runs an unfused kernel, simprec/_gemm_choice.py: fp32 out below)
            return self.round(torch.addmm(bias, a, b), out_fmt, exact=True)
        if out_dtype == dtype and bias is None:
            return self.round(torch.matmul(a, b), out_fmt, exact=True)
        acc = _matmul_fp32_out(a, b)
        if bias is not None:
            acc = acc + self._operand(bias)
        return self.round(acc, out_fmt)

    def _laid_out_matmul(self, a, b, layout, out_fmt, bias):
        """The sm90 GEMM of a shape the map gives another kernel, or whose operands cuBLASLt
        cannot load with the sm_90 TMA kernels: run as the plain 16-block kernel on operands
        laid out for it (K products at `layout.slots` of K' positions, N padded to a multiple
        of 8 and M to at least 32 with zeros; simprec.backend.gemm_layout), sliced back."""
        vec_a, vec_b = a.dim() == 1, b.dim() == 1
        a = a[None] if vec_a else a
        b = b[:, None] if vec_b else b
        rows = a.shape[:-1] if a.dim() > 2 and b.dim() == 2 else None
        if rows is not None:  # one GEMM of all of a's rows, as torch.matmul folds it
            a = a.reshape(math.prod(rows), a.shape[-1])
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        kp, mp, np_ = layout.k_padded, (m if m > _SMALL_M else 2 * _SMALL_M), n + (-n % 8)
        if layout.slots is None:  # one F.pad each, as the plain path
            a = F.pad(a, (0, kp - k, 0, mp - m))
            b = F.pad(b, (0, np_ - n, 0, kp - k))
        else:
            slots = self._k_slots(layout)
            a_lay = a.new_zeros(*a.shape[:-2], mp, kp)
            a_lay[..., :m, :].index_copy_(-1, slots, a)
            b_lay = b.new_zeros(*b.shape[:-2], kp, np_)
            b_lay[..., :n].index_copy_(-2, slots, b)
            a, b = a_lay, b_lay
        acc = _matmul_fp32_out(a, b)[..., :m, :n]
        if rows is not None:
            acc = acc.reshape(*rows, n)
        if vec_b:
            acc = acc[..., 0]
        if vec_a:
            acc = acc[..., 0, :] if not vec_b else acc[..., 0]
        if bias is not None:  # the bias epilogue: fp32 add before the one rounding
            acc = acc + self._operand(bias)
        return self.round(acc, out_fmt)

    def _k_slots(self, layout):
        """`layout.slots` on this device, cached per layout."""
        slots = self._k_slot_cache.get(layout.key)
        if slots is None:
            slots = torch.from_numpy(layout.slots.copy()).to(self.device)
            self._k_slot_cache[layout.key] = slots
        return slots

    # ---- reductions: float64 accumulation, one rounding to fp32 ----
    def sum(self, x, axis, keepdims):
        if axis == ():  # NumPy's empty axis tuple reduces nothing (torch's would reduce all)
            return x.float() if x.is_floating_point() else x.long()
        if not x.is_floating_point():
            return torch.sum(x.long(), dim=_dims(axis, x.dim()), keepdim=keepdims)
        return torch.sum(x.double(), dim=_dims(axis, x.dim()), keepdim=keepdims).float()

    def max(self, x, axis, keepdims):
        if axis == ():
            return x
        if axis is None:
            out = torch.amax(x) if x.numel() else torch.max(x)
            return out.reshape((1,) * x.dim()) if keepdims else out
        return torch.amax(x, dim=_dims(axis, x.dim()), keepdim=keepdims)

    def argmax(self, x, axis):
        return torch.argmax(x, dim=axis)

    def all_finite(self, xs):
        flags = [torch.isfinite(x).all() for x in xs if x.is_floating_point()]
        return True if not flags else bool(torch.stack(flags).all())

    # ---- movement ----
    def reshape(self, x, shape):
        return x.reshape(tuple(shape) if not isinstance(shape, int) else (shape,))

    def transpose(self, x, axes):
        return x.permute(tuple(axes) if axes is not None else tuple(range(x.dim()))[::-1])

    def broadcast_to(self, x, shape):
        return torch.broadcast_to(self._tensor(x), tuple(shape))

    def getitem(self, x, index):
        return x[self._index(index)]

    def index_add(self, shape, index, values):
        if _basic(index):
            # ints and slices select each element at most once: nothing accumulates, the values
            # are copied into zeros (in their own container: exact), with no index plan
            values = self._tensor(values)
            dtype = values.dtype if values.dtype in _HALVES else torch.float32
            out = torch.zeros(tuple(shape), dtype=dtype, device=self.device)
            out[index] = values
            return out
        # flat positions of the selected elements; duplicates accumulate in float64 (the
        # reference's np.add.at), then one rounding to fp32
        positions = torch.arange(math.prod(shape), device=self.device).reshape(shape)
        positions = positions[self._index(index)]
        values = torch.broadcast_to(self._operand(values), positions.shape)
        out = torch.zeros(math.prod(shape), dtype=torch.float64, device=self.device)
        out.index_add_(0, positions.reshape(-1), values.reshape(-1).double())
        return out.reshape(shape).float()

    def concatenate(self, xs, axis):
        xs = [self._tensor(x) for x in xs]
        dtypes = {x.dtype for x in xs}
        if len(dtypes) > 1 and dtypes & set(_HALVES):
            xs = [self._opmath(x) for x in xs]
        return torch.cat(xs, dim=axis)

    def pad(self, x, pad_width, value):
        flat = []
        for before, after in reversed(tuple(pad_width)):
            flat += [int(before), int(after)]
        return F.pad(x, flat, value=float(value))

    def take(self, x, indices, axis):
        idx = self._tensor(indices).long()
        axis = axis % x.dim()
        out = torch.index_select(x, axis, idx.reshape(-1))
        return out.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])

    def im2col(self, x, kernel, stride, padding):
        n = x.shape[0]
        cols = F.unfold(x, kernel_size=tuple(kernel), padding=tuple(padding), stride=tuple(stride))
        return cols.transpose(1, 2).reshape(n, -1, cols.shape[1])

    def col2im(self, cols, input_shape, kernel, stride, padding):
        n, c, h, w = input_shape
        folded = F.fold(self._opmath(cols).double().transpose(1, 2), output_size=(h, w),
                        kernel_size=tuple(kernel), padding=tuple(padding), stride=tuple(stride))
        return folded.float()

    def astype(self, x, kind):
        dtype = {"float": torch.float32, "int": torch.int64, "bool": torch.bool}[kind]
        return self._tensor(x).to(dtype)


    # ---- level 2: torch's own kernels on CUDA (op_kernels), the reference's models on the CPU
    def reduce_sum(self, x, axes, keepdims):
        if self.native:
            return op_kernels.reduce_sum(x, axes, keepdims)
        return super().reduce_sum(x, axes, keepdims)

    def var(self, x, axes, correction, keepdims, fmt):
        if self.native and op_kernels.native(fmt):
            return op_kernels.var(x, axes, correction, keepdims, fmt)
        return super().var(x, axes, correction, keepdims, fmt)

    def softmax(self, x, axis, in_fmt, out_fmt, log=False):
        if self.native and op_kernels.native(in_fmt, out_fmt):
            return op_kernels.softmax(x, axis, in_fmt, out_fmt, log)
        return super().softmax(x, axis, in_fmt, out_fmt, log)

    def softmax_backward(self, grad, out, axis, in_fmt, out_fmt, log=False):
        if self.native and op_kernels.native(in_fmt, out_fmt):
            return op_kernels.softmax_backward(grad, out, axis, in_fmt, out_fmt, log)
        return super().softmax_backward(grad, out, axis, in_fmt, out_fmt, log)

    def layer_norm(self, x, weight, bias, eps, fmt):
        if self.native and op_kernels.native(fmt):
            return op_kernels.layer_norm(x, weight, bias, eps, fmt)
        return super().layer_norm(x, weight, bias, eps, fmt)

    def layer_norm_backward(self, grad, x, mean, rstd, weight, fmt, needs=(True, True, True)):
        if self.native and op_kernels.native(fmt):
            return op_kernels.layer_norm_backward(grad, x, mean, rstd, weight, fmt, needs)
        return super().layer_norm_backward(grad, x, mean, rstd, weight, fmt, needs)

    def nll_loss(self, logp, target, ignore_index, reduction):
        if self.native and logp.dtype in (torch.float32,) + _HALVES:
            return op_kernels.nll_loss(logp, target, ignore_index, reduction)
        return super().nll_loss(logp, target, ignore_index, reduction)

    def nll_loss_backward(self, grad, target, ignore_index, reduction, total_weight, shape, fmt):
        if self.native and op_kernels.native(fmt):
            return op_kernels.nll_loss_backward(grad, target, ignore_index, reduction,
                                                total_weight, shape, fmt)
        return super().nll_loss_backward(grad, target, ignore_index, reduction, total_weight,
                                         shape, fmt)

    def embedding_backward(self, grad, ids, num_weights, padding_idx, fmt=None,
                           scale_grad_by_freq=False):
        if self.native and op_kernels.native(fmt or formats.fp32):
            return op_kernels.embedding_backward(grad.to(container_dtype(fmt or formats.fp32)), ids,
                                                 num_weights, padding_idx, scale_grad_by_freq)
        return super().embedding_backward(grad, ids, num_weights, padding_idx, fmt,
                                          scale_grad_by_freq)

    def amp_unscale(self, grads, fmts, inv_scale):
        if self.native and grads and op_kernels.native(*fmts) and all(
                g.dtype == container_dtype(f) for g, f in zip(grads, fmts, strict=True)):
            return op_kernels.amp_unscale(list(grads), inv_scale)
        return super().amp_unscale(grads, fmts, inv_scale)

    def adam_foreach(self, params, grads, exp_avgs, exp_avg_sqs, fmts, *, lr, beta1, beta2, eps,
                     weight_decay, decoupled, step):
        arrays = (params, grads, exp_avgs, exp_avg_sqs)
        if self.native and params and op_kernels.native(*fmts) and all(
                isinstance(x, torch.Tensor) and x.dtype == container_dtype(f)
                for group in arrays for x, f in zip(group, fmts, strict=True)):
            return op_kernels.adam_foreach(*arrays, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                           weight_decay=weight_decay, decoupled=decoupled,
                                           step=step)
        return super().adam_foreach(params, grads, exp_avgs, exp_avg_sqs, fmts, lr=lr,
                                    beta1=beta1, beta2=beta2, eps=eps,
                                    weight_decay=weight_decay, decoupled=decoupled, step=step)

    def amp_update_scale(self, scale, tracker, found_inf, growth_factor, backoff_factor,
                         growth_interval):
        if self.native:
            return op_kernels.amp_update_scale(scale, tracker, found_inf, growth_factor,
                                               backoff_factor, growth_interval)
        return super().amp_update_scale(scale, tracker, found_inf, growth_factor,
                                        backoff_factor, growth_interval)


def _scalar(v):
    """A Python or NumPy number as (value, torch dtype): floats as fp32 (exact in a double)."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v), torch.bool
    if isinstance(v, (int, np.integer)):
        return int(v), torch.int64
    return float(np.float32(v)), torch.float32


def _basic(index) -> bool:
    """A getitem index of ints, slices, None and Ellipsis only (no element selected twice)."""
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (slice, int, np.integer))
               and not isinstance(i, (bool, np.bool_)) for i in items)


def _dims(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    return axis if isinstance(axis, int) else tuple(axis)


def _not_tma(a, b):
    """Operands cuBLASLt runs on another kernel than the sm_90 TMA one even with K padded to
    16: C rows (N) not a multiple of 8 half values (16 bytes; docs/fidelity.md "GEMM kernel
    choice"), or few rows (M <= 16: gemv and SIMT kernels for small M)."""
    n = 1 if b.dim() == 1 else b.shape[-1]
    # rows of one GEMM: against a 2-D b, torch.matmul folds a's batch into the rows
    m = math.prod(a.shape[:-1]) if b.dim() <= 2 else a.shape[-2]
    return n % 8 != 0 or m <= _SMALL_M


def _matmul_fp32_out(a, b):
    """fp16/bf16 GEMM whose fp32 accumulator is the output (cuBLASLt with an fp32 D matrix)."""
    if a.device.type == "cpu":  # the CUDA plan on the CPU (op counting): no fp32-output GEMM,
        return torch.matmul(a, b).float()  # one op more than on CUDA
    if a.dim() == 2 and b.dim() == 2:
        return torch.mm(a, b, out_dtype=torch.float32)
    shape = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a3 = torch.broadcast_to(a, shape + a.shape[-2:]).reshape(-1, *a.shape[-2:])
    b3 = torch.broadcast_to(b, shape + b.shape[-2:]).reshape(-1, *b.shape[-2:])
    return torch.bmm(a3, b3, out_dtype=torch.float32).reshape(*shape, a.shape[-2], b.shape[-1])
