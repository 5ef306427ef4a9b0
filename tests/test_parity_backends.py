"""`simprec parity --backends`: a training run on two backends (or a backend and native torch)
compared step by step. NumPy against NumPy is bit-identical; a backend perturbed in one op is
caught at that op; against native torch on the CPU the differences are reported, starting at the
right layer; the command's table, JSON and exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simprec.backend import register_backend
from simprec.backend.numpy_backend import NumpyBackend
from simprec.cli import main
from simprec.parity_backends import (
    _first_module_difference,
    compare_arrays,
    run_parity,
    ulp_distance,
)
from simprec.train import TrainConfig


class GeluOffByOne(NumpyBackend):
    """The reference, except that GELU's first output element is off by one (in its format)."""

    name = "gelu-off"

    def elementwise(self, op, *xs, fmt=None, **params):
        out = super().elementwise(op, *xs, fmt=fmt, **params)
        if op == "gelu":
            out = np.array(out, copy=True)
            out.flat[0] += 1.0
            if fmt is not None:
                out = self.round(out, fmt)
        return out


@pytest.fixture(autouse=True, scope="module")
def gelu_off_backend():
    """The perturbed backend under the name "gelu-off" for this module's tests only."""
    import simprec.backend as registry

    register_backend("gelu-off", lambda device: GeluOffByOne())
    yield
    registry._factories.pop("gelu-off", None)
    registry._instances.pop("gelu-off", None)


def run_cli(capsys, *argv):
    code = main(["parity", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def config(**kw):
    return TrainConfig(**{"model": "mlp", "recipe": "amp-fp16", "accumulate": "sm90",
                          "batch_size": 16, **kw})


# ---------------------------------------------------------------------------- the measures


def test_ulp_distance_counts_representable_values():
    one = np.float32(1.0)
    assert ulp_distance([one], [np.nextafter(one, np.float32(2))], "fp32")[0] == 1
    assert ulp_distance([1.0], [1.0 + 2**-10], "fp16")[0] == 1
    assert ulp_distance([1.0], [1.0 + 2**-7], "bf16")[0] == 1
    # across zero: the smallest fp16 subnormals on either side are two steps apart
    assert ulp_distance([2**-24], [-(2**-24)], "fp16")[0] == 2
    assert ulp_distance([np.nan], [1.0], "fp16")[0] == 2**62
    d = compare_arrays(np.array([0.0, 1.0, np.nan], np.float32),
                       np.array([-0.0, 1.0, np.nan], np.float32), "fp16")
    assert (d.compared, d.differing, d.max_ulp) == (3, 1, 0)  # -0 differs in its bits only
    d = compare_arrays(np.array([1.0, -4.0], np.float32), np.array([1.0, -3.0], np.float32))
    assert (d.differing, d.max_rel, d.max_ulp) == (1, 0.25, 2**22)  # |1| / |-4|; ulp 2^-22


def test_module_outputs_are_matched_by_path_and_call():
    a = np.zeros(4, np.float32)
    b = a.copy()
    b[2] = 1.0
    ours = [("0", "Linear", "fp32", a), ("1", "ReLU", "fp32", a), ("0", "Linear", "fp32", a)]
    theirs = [("0", "Linear", "fp32", a), ("1", "ReLU", "fp32", a), ("0", "Linear", "fp32", b),
              ("", "Sequential", "fp32", b)]
    first = _first_module_difference(5, ours, theirs)
    assert (first.step, first.index, first.module, first.op) == (5, 2, "0", "Linear")
    assert first.diff.differing == 1
    assert _first_module_difference(1, ours, theirs[:2]) is None


# ---------------------------------------------------------------------------- two backends


@pytest.mark.parametrize("model,recipe", [("mlp", "amp-fp16"), ("cnn", "o2-fp16"),
                                          ("gpt", "amp-bf16"), ("mlp", "pure-fp16")])
def test_numpy_against_numpy_is_bit_identical(model, recipe):
    report = run_parity(config(model=model, recipe=recipe, batch_size=4), ("numpy", "numpy"),
                        steps=2)
    assert report.identical and report.first is None and len(report.steps) == 2
    n_params = report.steps[0].params.compared
    assert n_params > 0 and report.steps[-1].params.differing == 0
    assert report.steps[0].grads.compared == n_params


def test_a_perturbed_op_is_the_first_difference():
    cfg = config(model_options={"activation": "gelu"})
    report = run_parity(cfg, ("numpy", "gelu-off"), steps=3)
    assert not report.identical
    first = report.first
    assert first.step == 1 and first.op == "Gelu" and first.kind == "activation"
    assert first.module == "1" and first.fmt == "fp16"
    assert first.diff.differing == 1 and first.diff.max_ulp > 0
    # tracing stops at the first difference; the later steps still compare every tensor
    assert report.steps[1].first is None and not report.steps[1].identical
    assert report.steps[0].grads.differing > 0


def test_numpy_against_torch_cpu_is_bit_identical():
    """The plumbing of a real second backend, on every commit: torch:cpu runs the reference's
    arithmetic on torch tensors."""
    report = run_parity(config(batch_size=8), ("numpy", "torch:cpu"), steps=2)
    assert report.identical and report.sides == ("numpy", "torch:cpu")
    assert report.trace == "ops" and report.first is None


# ---------------------------------------------------------------------------- native torch


def test_against_native_torch_on_the_cpu():
    pytest.importorskip("torch")
    report = run_parity(config(recipe="amp-fp16"), ("numpy",), steps=3, against="native",
                        native_device_name="cpu")
    assert report.sides[1].startswith("native torch (cpu")
    assert [s.scale for s in report.steps] == [(65536.0, 65536.0)] * 3
    for s in report.steps:
        assert s.loss[1] == pytest.approx(s.loss[0], rel=1e-3)
        assert s.grads.compared == s.params.compared == 85002
    if not report.identical:  # torch's CPU kernels are not the GPU's: usually some differ
        assert report.first is not None and report.first.step == 1


def test_native_first_difference_names_the_perturbed_layer(monkeypatch):
    """A torch layer made to differ grossly is named, whatever the CPU's kernels do."""
    torch = pytest.importorskip("torch")
    from simprec.parity_backends import _plugin

    native = _plugin("simprec_torch.native")
    original = native.NativeRecipe.__init__

    def perturbed(self, *args, **kwargs):
        original(self, *args, **kwargs)

        def shift(module, inputs, output):
            with torch.no_grad():
                output.view(-1)[0] += 1000.0
        self.module[0].register_forward_hook(shift)

    monkeypatch.setattr(native.NativeRecipe, "__init__", perturbed)
    report = run_parity(config(), ("numpy",), steps=1, against="native",
                        native_device_name="cpu")
    first = report.first
    assert (first.index, first.module, first.op, first.kind) == (0, "0", "Linear", "output")
    assert first.diff.max_ulp > 1000


# ---------------------------------------------------------------------------- the command


def test_cli_identical_run_exits_0_with_table_and_json(capsys, tmp_path):
    path = tmp_path / "p.json"
    code, out, _ = run_cli(capsys, "--backends", "numpy,numpy", "--steps", 2, "--batch-size", 8,
                           "--json", path)
    assert code == 0
    assert "verdict: bit-identical" in out and "numpy and numpy" in out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 2
    doc = json.loads(path.read_text())
    assert doc["mode"] == "backends" and doc["exit_status"] == 0
    assert doc["summary"]["identical"] and doc["summary"]["steps"] == 2
    assert set(doc["steps"][0]) >= {"loss", "scale", "grads", "params", "first_difference"}


def test_cli_a_perturbed_op_the_run_never_calls_changes_nothing(capsys):
    code, out, _ = run_cli(capsys, "--backends", "numpy,gelu-off", "--steps", 1,
                           "--batch-size", 8, "--json")
    # the run has ReLU, not GELU: a perturbed GELU changes nothing
    assert code == 0
    doc = json.loads(out)
    assert doc["summary"]["identical"]


def test_cli_json_to_stdout_for_a_difference(capsys, monkeypatch):
    import simprec.parity_cli as parity_cli

    resolve = parity_cli._backends_config

    def gelu_config(args):
        return resolve(args).replace(model_options={"activation": "gelu"})

    monkeypatch.setattr(parity_cli, "_backends_config", gelu_config)
    code, out, err = run_cli(capsys, "--backends", "numpy,gelu-off", "--steps", 1,
                             "--batch-size", 8, "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["summary"]["first_difference"]["op"] == "Gelu"
    assert "first difference: step 1" in err and "verdict: DIFFERS" in err


@pytest.mark.parametrize("argv,words", [
    (("--backends", "numpy"), ["two backends"]),
    (("--backends", "numpy,numpy", "--against", "native"), ["one backend"]),
    (("--backends", "numpy,nope"), ["nope", "not usable"]),
    (("--backends", "numpy,numpy", "--model", "resnet"), ["resnet"]),
    (("--backends", "numpy,numpy", "--recipe", "fp7"), ["fp7"]),
    (("--backends", "numpy,numpy", "--only", "matmul"), ["--only"]),
    (("--against", "native"), ["--backends"]),
    (("--backends", "numpy", "--against", "native", "--native-device", "tpu"), ["tpu"]),
])
def test_cli_bad_input_is_one_line_exit_2(capsys, argv, words):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("simprec parity: error:"), err
    for word in words:
        assert word in lines[0]


# ---------------------------------------------------------------------------- on a GPU


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("model", ["mlp", "cnn", "gpt"])
@pytest.mark.parametrize("recipe", ["amp-fp16", "amp-bf16", "pure-fp16", "o2-fp16"])
def test_numpy_against_torch_cuda_is_bit_identical(model, recipe):
    """Issue 12's acceptance in small: the reference (sm90) and the real H200 agree bit for bit
    on every loss, scale, gradient and parameter."""
    from simprec.parity_backends import format_report

    report = run_parity(config(model=model, recipe=recipe, batch_size=8),
                        ("numpy", "torch:cuda"), steps=3)
    assert report.identical, format_report(report)


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("recipe", ["amp-fp16", "amp-bf16"])
def test_numpy_against_native_cuda_mlp_is_bit_identical(recipe):
    """The MLP has only kernels the reference models (cuBLASLt GEMMs with K a multiple of 16,
    ReLU, cross_entropy, GradScaler, single-tensor SGD): hand-written torch AMP on the GPU gives
    the reference's bits."""
    from simprec.parity_backends import format_report

    report = run_parity(config(recipe=recipe), ("numpy",), steps=5, against="native",
                        native_device_name="cuda")
    assert report.identical, format_report(report)


def test_a_diverged_run_on_both_sides_is_the_same_loss():
    """Losses are compared as the gradients are: the same bits, or NaN on both sides."""
    from simprec.parity_backends import ArrayDiff, StepResult

    def step(a, b):
        same = ArrayDiff(4, 0, 0)
        return StepResult(1, (a, b), (1.0, 1.0), (False, False), same, same, {}, {})

    assert step(float("nan"), float("nan")).identical
    assert not step(float("nan"), 1.0).identical
    assert not step(0.0, -0.0).identical
    assert step(2.5, 2.5).identical
