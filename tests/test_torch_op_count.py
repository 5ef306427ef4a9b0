"""Regression guard for the torch backend's speed (issue 12): the torch ops one AMP step of a GPT
and an MLP launches on "torch:cuda", counted without a GPU on `TorchBackend.cuda_plan()` (the
CUDA backend's kernels on CPU tensors; benchmarks/count_step_ops.py). Each op is a kernel launch
and a trip through simprec's Python layers, so a change that adds ops per parameter or per layer
shows here. The bounds are the counts of docs/benchmarks.md plus a margin of about 5 %."""

from __future__ import annotations

import pathlib
import sys

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

import count_step_ops  # noqa: E402

# measured: gpt 1982, mlp 130 (8 blocks of width 64; 784-64-64-10); native torch on the CPU
# (for-loop AdamW): gpt 1546, mlp 103
BOUNDS = {"gpt": 2080, "mlp": 137}


@pytest.mark.parametrize("name", ["gpt", "mlp"])
def test_amp_step_op_count_is_bounded(name):
    counter = count_step_ops.count(name)
    assert counter.total <= BOUNDS[name], counter.ops.most_common(12)
    assert counter.syncs <= 1  # at most the GradScaler's one read of found_inf
    assert counter.float64 == 0  # no float64 kernel on the device


def test_the_plan_runs_torchs_kernels():
    """The counting backend takes the CUDA kernel choices (else the count means nothing)."""
    from simprec_torch import TorchBackend

    plan = TorchBackend.cuda_plan()
    assert plan.native and not plan.is_cuda and plan.device.type == "cpu"
    counter = count_step_ops.count("mlp")
    assert counter.ops["_amp_foreach_non_finite_check_and_unscale_"] == 1
