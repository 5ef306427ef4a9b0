"""The torch backend: names, finding it from a plain checkout, moving models and state, the
error without a GPU; on a GPU (marked gpu) the tensor-core GEMMs of odd shapes, the accumulation
models it refuses, and ten training steps bit-identical to the NumPy reference.

The kernel-by-kernel contract and short whole-model runs are in tests/test_backend_contract.py
(parametrised over torch:cpu and torch:cuda). On the GPU machine, from the repository root:
    python -m pytest -q -p no:cacheprovider -m gpu tests/test_backend_contract.py \
        tests/test_torch_backend.py
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest

import simprec as sp
from simprec import formats
from simprec.backend import get_backend

torch = pytest.importorskip("torch")
ROOT = pathlib.Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


def test_found_from_a_plain_checkout_by_name():
    code = ("import simprec as sp; from simprec.backend import get_backend;"
            "b = get_backend('torch:cpu'); print(b.name, type(b).__module__)")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["torch:cpu", "simprec_torch.backend"]


def test_registered_as_an_entry_point():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'torch = "simprec_torch:TorchBackend"' in text


def test_cuda_without_a_gpu_is_one_clear_line_and_exit_2(tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this runs on every machine
    out = subprocess.run([sys.executable, "-m", "simprec", "train", "--backend", "torch:cuda",
                          "--steps", "1", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                              "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 2
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert len(lines) == 1 and "torch:cuda" in lines[0] and "CUDA GPU" in lines[0], lines


def test_native_half_containers_and_moves():
    from simprec.models import MLP

    model = MLP(8, (6,), 3, generator=0)
    want = {n: p.numpy() for n, p in model.named_parameters()}
    model.to("torch:cpu").to(sp.fp16)
    for p in model.parameters():
        assert p.backend.name == "torch:cpu" and p.data.dtype == torch.float16
    model.to("numpy")
    for n, p in model.named_parameters():
        assert isinstance(p.data, np.ndarray)
        np.testing.assert_array_equal(p.numpy(), formats.round(want[n], sp.fp16))
    x = sp.tensor(np.ones((2, 3)), fmt=sp.bf16, backend="torch:cpu")
    assert x.data.dtype == torch.bfloat16 and x.device == "torch:cpu"
    assert x.to("numpy").backend.name == "numpy"


# ---- on the GPU ----

@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("fmt", [sp.fp16, sp.bf16], ids=lambda f: f.name)
@pytest.mark.parametrize("mkn", [(33, 65, 48), (33, 48, 65), (64, 64, 64), (17, 10, 9),
                                 (128, 1000, 7), (1, 4096, 1), (4096, 784, 512)], ids=str)
@pytest.mark.parametrize("out", ["same", "fp32"])
def test_tensor_core_gemm_is_the_sm90_model(fmt, mkn, out):
    be = get_backend("torch:cuda")
    out = fmt if out == "same" else sp.fp32
    m, k, n = mkn
    rng = np.random.default_rng(m * k + n)
    a = formats.round(rng.standard_normal((m, k)).astype(np.float32), fmt)
    b = formats.round(rng.standard_normal((k, n)).astype(np.float32) * 3, fmt)
    bias = formats.round(rng.standard_normal(n).astype(np.float32), fmt)
    ref = get_backend("numpy")
    for with_bias in (None, bias):
        want = ref.matmul(a, b, fmt=fmt, accumulate="sm90", out_fmt=out, bias=with_bias)
        got = be.matmul(be.asarray(a, fmt), be.asarray(b, fmt), fmt=fmt, accumulate="sm90",
                        out_fmt=out, bias=None if with_bias is None else be.asarray(bias, fmt))
        got = be.to_numpy(got)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (
            f"{int(np.sum(got.view(np.uint32) != want.view(np.uint32)))} of {want.size} differ")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("accumulate", ["sm70", "sm80", "fp16"])
def test_models_the_gpu_lacks_name_the_emulating_backends(accumulate):
    be = get_backend("torch:cuda")
    a = be.asarray(np.ones((4, 4), np.float32), sp.fp16)
    with pytest.raises(NotImplementedError, match="numpy"):
        be.matmul(a, a, fmt=sp.fp16, accumulate=accumulate, out_fmt=sp.fp16)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("recipe", ["amp-fp16", "amp-bf16", "pure-fp16", "o2-fp16"])
@pytest.mark.parametrize("model", ["mlp", "cnn", "gpt"])
def test_ten_steps_bit_identical_on_the_gpu(model, recipe):
    from test_backend_contract import _loss, _model

    from simprec import amp, optim

    def train(backend):
        net, batches = _model(model)
        net.to(backend)
        rec = amp.get_recipe(recipe, accumulate="sm90")
        factory = ((lambda p: optim.SGD(p, lr=0.05, momentum=0.9)) if recipe == "pure-fp16"
                   else (lambda p: optim.AdamW(p, lr=1e-2)))
        net, opt, _ = rec.prepare(net, factory)
        facts = []
        for step in range(10):
            x, y = batches[step % len(batches)]
            _, f = rec.step(net, opt, _loss, (sp.tensor(x, backend=backend),
                                              sp.tensor(y, backend=backend)))
            facts.append((f["loss"], f["scale"]))
        return facts, [p.numpy() for p in net.parameters()]

    want, got = train("numpy"), train("torch:cuda")
    assert got[0] == want[0]
    for a, b in zip(got[1], want[1], strict=True):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
