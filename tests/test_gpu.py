"""On a CUDA GPU: the H200 captures redone live, and the NumPy reference held against them.

`python -m pytest -m gpu` on a GPU machine (docs/testing.md). Each test reruns one capture of
tests/data/h200/capture.py with torch on the GPU (the same seeds, shapes and settings: cuBLASLt,
no reduced-precision reduction, no TF32), writes it as the capture file it would be, and runs
the cases of `simprec parity` on it: every element must match bit for bit. The matmul and
training-trace cases use the sm_90 tensor-core model, so they run on Hopper GPUs only; the
elementwise and row cases run on any CUDA GPU.
Where the GPU is an H200 with the torch the shipped captures came from, the fresh capture must
also equal the shipped one, bit for bit (the hardware and libraries are what the data says).

Without a CUDA GPU (or torch) every test here skips: the `gpu` marker is the one skip
tests/conftest.py allows for that. The whole module takes well under 2 minutes on an H200.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import H200

import simprec.parity as parity

pytestmark = pytest.mark.gpu

MATMUL_SHAPES = [(64, 64, 64, False), (96, 200, 40, False), (128, 1024, 128, True),
                 (1, 2048, 64, False), (64, 4096, 64, True)]  # capture.py's __main__
SEED = 1234


@pytest.fixture(scope="module")
def torch():
    try:
        import torch
    except ImportError:
        pytest.skip("no torch: the GPU tests need torch with CUDA")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    return torch


@pytest.fixture(scope="module")
def capture(torch):
    """tests/data/h200/capture.py as a module (importing it sets cuBLASLt and its flags)."""
    spec = importlib.util.spec_from_file_location("h200_capture", H200 / "capture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def same_setup_as_shipped(torch):
    """Whether this GPU and torch are those of the shipped captures (H200, torch 2.11)."""
    return "H200" in torch.cuda.get_device_name() and torch.__version__.startswith("2.11")


def _differing(folder, group: str) -> dict[str, tuple[int, int]]:
    """{case: (compared, differing)} of the parity cases of `group` on the captures in folder."""
    paths = parity.DataPaths(h200=folder, extra=None, how="live", own=None)
    return {r.name: (r.compared, r.differing) for r in parity.run_cases(paths, [group])}


def _assert_all_match(results: dict[str, tuple[int, int]], at_least: int) -> None:
    assert len(results) >= at_least, sorted(results)
    differing = {name: d for name, (_, d) in results.items() if d}
    assert not differing, differing


def _assert_same_as_shipped(rec: dict, name: str) -> None:
    shipped = parity.load_capture(H200 / name)
    assert sorted(shipped) == sorted(rec)
    for key, value in rec.items():
        assert np.asarray(value).tobytes() == shipped[key].tobytes(), key


@pytest.fixture(scope="module")
def sm90(torch):
    """The matmul and trace cases model sm_90 tensor cores (Hopper: H100, H200)."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip(f"the matmul and trace cases model sm_90; this GPU is "
                    f"sm_{''.join(map(str, torch.cuda.get_device_capability()))}")


def test_matmul_live(torch, sm90, capture, tmp_path, same_setup_as_shipped):
    rec = capture.capture_matmul(SEED, MATMUL_SHAPES)
    np.savez(tmp_path / "matmul_dev.npz", **rec)
    _assert_all_match(_differing(tmp_path, "matmul"), at_least=30)
    if same_setup_as_shipped:
        _assert_same_as_shipped(rec, "matmul_dev.npz")


def test_elementwise_and_rows_live(torch, capture, tmp_path, same_setup_as_shipped):
    rec = capture.capture_elementwise(SEED)
    np.savez(tmp_path / "elementwise_dev.npz", **rec)
    _assert_all_match(_differing(tmp_path, "elementwise"), at_least=27)
    _assert_all_match(_differing(tmp_path, "rows"), at_least=5)
    if same_setup_as_shipped:
        _assert_same_as_shipped(rec, "elementwise_dev.npz")


def test_amp_trace_live(torch, sm90, capture, tmp_path, same_setup_as_shipped):
    rec = capture.capture_amp_trace(SEED)
    np.savez(tmp_path / "amp_trace_dev.npz", **rec)
    results = _differing(tmp_path, "trace")
    _assert_all_match(results, at_least=11)
    config = json.loads(str(rec["config"]))
    assert config["steps"] == len(rec["loss"]) == 60
    if same_setup_as_shipped:
        _assert_same_as_shipped(rec, "amp_trace_dev.npz")


OPTIMIZERS = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=3e-4)),
    ("Adam", dict(lr=1e-3)),
    ("Adam", dict(lr=2e-3, betas=(0.3, 0.6), amsgrad=True)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
]


@pytest.mark.parametrize("foreach", [False, True], ids=["single-tensor", "foreach"])
@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=lambda v: str(v))
def test_optimizers_live(torch, name, kwargs, foreach):
    """simprec.optim against torch.optim on the GPU (its CUDA kernels: sqrt correctly rounded,
    the multiply-adds as nvcc contracts them), 50 steps of the same gradients, fp32 bit for bit;
    sizes with vector tails, both of torch's CUDA code paths (single-tensor and foreach)."""
    import simprec as sp
    from simprec import optim

    rng = np.random.default_rng(0)
    shapes = [(7,), (5, 13), (64,), (3, 33), (1000,)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    ours = [sp.tensor(a, requires_grad=True) for a in init]
    theirs = [torch.tensor(a, device="cuda", requires_grad=True) for a in init]
    opt = getattr(optim, name)(ours, foreach=foreach, **kwargs)  # the same CUDA path
    topt = getattr(torch.optim, name)(theirs, foreach=foreach, **kwargs)
    for _ in range(50):
        for p, q, s in zip(ours, theirs, shapes, strict=True):
            g = rng.standard_normal(s).astype(np.float32)
            p.grad = sp.tensor(g)
            q.grad = torch.tensor(g, device="cuda")
        opt.step()
        topt.step()
    for i, (p, q) in enumerate(zip(ours, theirs, strict=True)):
        got, want = p.numpy().view(np.uint32), q.detach().cpu().numpy().view(np.uint32)
        assert np.array_equal(got, want), f"param {i}: {np.sum(got != want)} of {got.size} differ"
