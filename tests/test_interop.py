"""simprec_torch.interop: to_torch / from_torch keep structure, names and weights bit for bit, the
forward is the same network, and layers without a counterpart are errors that name them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends"))

from simprec_torch.interop import (  # noqa: E402
    TorchGPT,
    TorchMLP,
    TorchSelfAttention,
    TorchSmallCNN,
    explicit_attention,
    from_torch,
    to_torch,
)

import simprec as sp  # noqa: E402
from simprec import models  # noqa: E402
from simprec import nn as snn  # noqa: E402

_TORCH_CLASSES = {"mlp": TorchMLP, "cnn": TorchSmallCNN, "gpt": TorchGPT}


def _model(name, **kw):
    if name == "gpt":
        kw = {"vocab_size": 23, "block_size": 12, "n_layer": 2, "n_head": 2, "n_embd": 16, **kw}
    return models.build_model(name, generator=np.random.default_rng(3), **kw)


def _input(name, rng):
    if name == "gpt":
        return rng.integers(0, 23, (3, 12))
    if name == "cnn":
        return rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    return rng.standard_normal((5, 64)).astype(np.float32)


def _bits(array, fmt_name):
    array = np.asarray(array, np.float32)
    if fmt_name == "fp16":
        return array.astype(np.float16).view(np.uint16)
    if fmt_name == "bf16":
        import ml_dtypes

        return array.astype(ml_dtypes.bfloat16).view(np.uint16)
    return array.view(np.uint32)


def _assert_same_weights(model, other):
    ours, theirs = model.state_dict(), other.state_dict()
    assert list(ours) == list(theirs)
    fmts = {n: p.fmt.name for n, p in model.named_parameters()}
    for key, value in ours.items():
        fmt = fmts.get(key, "fp32")
        assert np.array_equal(_bits(value, fmt), _bits(theirs[key], fmt)), key


@pytest.mark.parametrize("name", ["mlp", "cnn", "gpt", "amp_trace_mlp"])
def test_round_trip_keeps_class_names_and_bits(name):
    model = _model(name)
    module = to_torch(model)
    assert isinstance(module, torch.nn.Module)
    assert [n for n, _ in module.named_parameters()] == [n for n, _ in model.named_parameters()]
    for (key, value), tensor in zip(model.state_dict().items(), module.state_dict().values(),
                                    strict=True):
        assert tensor.dtype == torch.float32, key
        assert np.array_equal(value.view(np.uint32), tensor.numpy().view(np.uint32)), key
    if name in _TORCH_CLASSES:
        assert type(module) is _TORCH_CLASSES[name]
    back = from_torch(module)
    assert type(back) is type(model)
    _assert_same_weights(model, back)


@pytest.mark.parametrize("fmt", [sp.fp16, sp.bf16])
def test_half_parameters_become_half_tensors_exactly(fmt):
    model = _model("gpt", tied_head=False).to(fmt)
    module = to_torch(model)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[fmt.name]
    assert {p.dtype for p in module.parameters()} == {dtype}
    for key, value in model.state_dict().items():
        got = module.state_dict()[key].float().numpy()
        assert np.array_equal(_bits(value, fmt.name), _bits(got, fmt.name)), key
    back = from_torch(module)
    assert {p.fmt for p in back.parameters()} == {fmt}
    _assert_same_weights(model, back)


@pytest.mark.parametrize("name", ["mlp", "cnn", "gpt", "amp_trace_mlp"])
def test_the_forward_is_the_same_network(name):
    """fp32: the same function up to the order of fp32 sums (BLAS against torch's kernels)."""
    model = _model(name)
    x = _input(name, np.random.default_rng(0))
    ours = model(sp.tensor(x)).numpy()
    theirs = to_torch(model)(torch.from_numpy(x)).detach().numpy()
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_sdpa_and_explicit_attention_agree_in_fp32():
    model = _model("gpt")
    x = torch.from_numpy(_input("gpt", np.random.default_rng(1)))
    explicit = to_torch(model, attention="explicit")(x)
    fused = to_torch(model, attention="sdpa")(x)
    torch.testing.assert_close(explicit, fused, rtol=1e-5, atol=1e-5)
    assert isinstance(to_torch(model, attention="sdpa").blocks[0].attn, TorchSelfAttention)
    with pytest.raises(ValueError, match="attention"):
        to_torch(model, attention="flash")


def test_explicit_attention_rounds_in_the_autocast_format():
    """Under autocast the composite runs in half: each op's output is a half tensor (softmax
    included), as simprec's ops.attention models torch's math composite."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = explicit_attention(q, k, v, is_causal=True)
    assert out.dtype == torch.bfloat16
    # the same composite by hand, in bf16, with autocast off
    qh, kh, vh = q.bfloat16(), k.bfloat16(), v.bfloat16()
    f = (1 / 8**0.5) ** 0.5
    s = (qh * f) @ (kh.transpose(-2, -1) * f)
    s = s.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf"))
    expected = torch.softmax(s, -1) @ vh
    assert torch.equal(out.view(torch.int16), expected.view(torch.int16))


def test_training_mode_is_copied_both_ways():
    model = _model("mlp", dropout=0.5)
    model.eval()
    module = to_torch(model)
    assert not module.training and not any(m.training for m in module.modules())
    module.train()
    assert from_torch(module).training


def test_to_torch_draws_nothing_from_torch_generator():
    torch.manual_seed(7)
    before = torch.get_rng_state()
    to_torch(_model("gpt"))
    assert torch.equal(before, torch.get_rng_state())


def test_plain_torch_layers_come_over():
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(4, 4, 3, stride=2, bias=False), torch.nn.SiLU(), torch.nn.MaxPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 6), torch.nn.LayerNorm(6), torch.nn.Tanh(),
        torch.nn.Dropout(0.1), torch.nn.GELU("tanh"), torch.nn.Sigmoid(), torch.nn.Softmax(-1),
        torch.nn.Identity())
    module.eval()
    model = from_torch(module)
    assert [type(m).__name__ for m in model] == [type(m).__name__ for m in module]
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(model(sp.tensor(x)).numpy(),
                               module(torch.from_numpy(x)).detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    again = to_torch(model)
    for key, value in module.state_dict().items():
        assert torch.equal(value.view(torch.int32), again.state_dict()[key].view(torch.int32))


def test_torch_multihead_attention_becomes_simprec_self_attention():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    model = from_torch(torch.nn.Sequential(mha))
    assert isinstance(model[0], snn.MultiheadAttention)
    x = np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32)
    expected, _ = mha(*(torch.from_numpy(x),) * 3, need_weights=False)
    np.testing.assert_allclose(model(sp.tensor(x)).numpy(), expected.detach().numpy(),
                               rtol=1e-5, atol=1e-6)


def test_unsupported_torch_layer_is_named():
    module = torch.nn.Sequential(torch.nn.Linear(4, 4),
                                 torch.nn.Sequential(torch.nn.BatchNorm1d(4)))
    with pytest.raises(TypeError, match=r"'1\.0'.*BatchNorm1d"):
        from_torch(module)
    with pytest.raises(TypeError, match=r"'<root>'.*Conv2d.*groups=1"):
        from_torch(torch.nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(TypeError, match="float64"):
        from_torch(torch.nn.Linear(2, 2).double())


def test_unsupported_simprec_layer_is_named():
    class Custom(snn.Module):
        def forward(self, x):
            return x

    model = snn.Sequential(snn.Linear(2, 2), Custom())
    with pytest.raises(TypeError, match=r"'1'.*Custom.*no torch counterpart"):
        to_torch(model)
    with pytest.raises(TypeError, match="fp8_e4m3.*no native torch dtype"):
        to_torch(snn.Sequential(snn.Linear(2, 2, fmt=sp.fp8_e4m3)))
