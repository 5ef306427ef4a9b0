"""The fp8 recipe (amp.fp8, ops.fp8, recipe "fp8"): Transformer Engine's delayed per-tensor
scaling, e4m3 forward and e5m2 gradient casts, the GEMMs under a named accumulation model."""

from __future__ import annotations

import numpy as np
import pytest

import simprec as sp
from simprec import accumulate, amp, nn, optim
from simprec.amp.fp8 import E4M3, E5M2, DelayedScaling, fp8_autocast
from simprec.nn import functional as F


def _f32(v):
    return np.asarray(v, np.float32)


def _set_scales(meta, x, w, dy):
    be = meta.be
    for role, s in (("x", x), ("w", w), ("dy", dy)):
        meta.scale[role] = be.asarray(_f32(s), sp.fp32)
        meta.scale_inv[role] = be.elementwise("reciprocal", meta.scale[role])


def test_fp8_linear_forward_and_backward_by_hand():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 20)).astype(np.float32) * 3
    w = rng.standard_normal((5, 20)).astype(np.float32) * 0.05
    b = rng.standard_normal(5).astype(np.float32)
    dy = rng.standard_normal((6, 5)).astype(np.float32) * 1e-3
    layer_w = sp.tensor(w, requires_grad=True)
    layer_b = sp.tensor(b, requires_grad=True)
    xt = sp.tensor(x, requires_grad=True)
    scaling = DelayedScaling()
    sx, sw, sdy = 16.0, 1024.0, 2.0**18
    _set_scales(scaling.meta_for(layer_w), sx, sw, sdy)
    with sp.accumulation("sm70"), fp8_autocast(scaling):
        y = F.linear(xt, layer_w, layer_b)
    assert y.fmt == sp.fp32
    qx, qw = sp.round(x * _f32(sx), E4M3), sp.round(w * _f32(sw), E4M3)
    acc = accumulate.matmul(qx, qw.T, fmt=sp.fp16, accumulate="sm70", out_fmt=sp.fp32)
    factor = _f32(1 / _f32(sx)) * _f32(1 / _f32(sw))
    expected = acc * factor + b
    np.testing.assert_array_equal(y.numpy().view(np.uint32), expected.view(np.uint32))
    y.backward(sp.tensor(dy))
    qdy = sp.round(dy * _f32(sdy), E5M2)
    gx = accumulate.matmul(qdy, qw, fmt=sp.fp16, accumulate="sm70", out_fmt=sp.fp32)
    gx = gx * (_f32(1 / _f32(sdy)) * _f32(1 / _f32(sw)))
    gw = accumulate.matmul(qdy.T, qx, fmt=sp.fp16, accumulate="sm70", out_fmt=sp.fp32)
    gw = gw * (_f32(1 / _f32(sdy)) * _f32(1 / _f32(sx)))
    np.testing.assert_array_equal(xt.grad.numpy().view(np.uint32), gx.view(np.uint32))
    np.testing.assert_array_equal(layer_w.grad.numpy().view(np.uint32), gw.view(np.uint32))
    np.testing.assert_allclose(layer_b.grad.numpy(), dy.sum(0), rtol=1e-6)


def test_casts_saturate_and_amaxes_are_recorded():
    w = sp.tensor(np.array([[1000.0, -0.5]], np.float32), requires_grad=True)
    x = sp.tensor(np.array([[1.0, 2.0]], np.float32), requires_grad=True)
    scaling = DelayedScaling(amax_history_len=3)
    with fp8_autocast(scaling):
        y = F.linear(x, w)
    # 1000 saturates to e4m3's 448 (TE's satfinite cast), not NaN
    assert y.item() == 448.0 * 1.0 + (-0.5) * 2.0
    y.backward()
    meta = scaling.meta_for(w)
    assert float(meta.pending["w"]) == 1000.0 and float(meta.pending["x"]) == 2.0
    assert float(meta.pending["dy"]) == 1.0


def test_delayed_scale_update_follows_transformer_engine():
    w = sp.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    scaling = DelayedScaling(margin=1, amax_history_len=2)
    meta = scaling.meta_for(w)
    for amax_x, amax_w in ((3.0, 0.0), (5.0, 0.0), (1.0, 0.0)):
        meta.record("x", np.float32(amax_x))
        meta.record("w", np.float32(amax_w))
        scaling.update()
    # history of 2: (5, 1) -> amax 5; scale = (448 / 5) / 2**1 in fp32
    assert meta.history["x"].tolist() == [5.0, 1.0]
    assert float(meta.scale["x"]) == np.float32(np.float32(448.0) / np.float32(5.0)) / 2
    assert float(meta.scale_inv["x"]) == np.float32(1) / np.float32(meta.scale["x"])
    assert float(meta.scale["w"]) == 1.0          # amax 0: the scale is kept
    assert float(meta.scale["dy"]) == 1.0         # nothing recorded: untouched
    meta.record("x", np.float32(np.inf))
    scaling.update()
    assert float(meta.scale["x"]) == np.float32(np.float32(448.0) / np.float32(5.0)) / 2


def _mlp():
    return nn.Sequential(nn.Linear(16, 32, generator=np.random.default_rng(0)), nn.ReLU(),
                         nn.Linear(32, 4, generator=np.random.default_rng(1)))


def _batches(n):
    """n batches cycling through 2 of a learnable task (labels: argmax of a fixed map)."""
    rng = np.random.default_rng(2)
    proj = rng.standard_normal((16, 4))
    xs = [rng.standard_normal((32, 16)).astype(np.float32) for _ in range(2)]
    return [(sp.tensor(xs[i % 2]), sp.tensor(np.argmax(xs[i % 2] @ proj, axis=1)))
            for i in range(n)]


def _loss(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


def _train(recipe, batches, model=None):
    model = model or _mlp()
    model, opt, _ = recipe.prepare(model, lambda p: optim.SGD(p, lr=0.1, momentum=0.9))
    losses = [recipe.step(model, opt, _loss, b)[1]["loss"] for b in batches]
    return model, opt, losses


def test_the_fp8_recipe_trains_and_its_scales_move():
    recipe = amp.get_recipe("fp8", accumulate="sm70", amax_history_len=4)
    assert "fp8" in amp.RECIPES
    model, _, losses = _train(recipe, _batches(12))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert all(p.fmt == sp.fp32 for p in model.parameters())
    first = model[0].weight
    meta = recipe.scaling.meta_for(first)
    assert float(meta.scale["w"]) == pytest.approx(448.0 / np.abs(first.numpy()).max(), rel=0.5)
    assert float(meta.scale["dy"]) > 1000   # gradients are small: scaled up before e5m2
    # bf16 autocast elsewhere: the hidden activations are bf16
    with recipe.forward_context():
        h = model[0](_batches(1)[0][0])
    assert h.fmt == sp.bf16


def test_the_fp8_recipe_differs_from_amp_bf16():
    batches = _batches(4)
    _, _, fp8 = _train(amp.get_recipe("fp8", accumulate="sm90"), batches)
    _, _, bf16 = _train(amp.get_recipe("amp-bf16", accumulate="sm90"), batches)
    assert fp8 != bf16


def test_fp8_gemms_follow_the_accumulation_model():
    # fp8 products have few bits: short dot products are exact under every model; long ones
    # over e4m3's whole range are truncated differently in blocks of 4 (sm70) and 16 (sm90)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((8, 512)) * np.exp2(rng.uniform(-8, 8, (8, 512)))).astype(np.float32)
    w = sp.tensor(rng.standard_normal((6, 512)).astype(np.float32))
    out = {}
    for model in ("sm70", "sm90"):
        scaling = DelayedScaling()
        _set_scales(scaling.meta_for(w), 1.0, 64.0, 1.0)
        with sp.accumulation(model), fp8_autocast(scaling):
            out[model] = F.linear(sp.tensor(x), w).numpy()
    assert np.count_nonzero(out["sm70"].view(np.uint32) != out["sm90"].view(np.uint32)) > 0


def test_the_fp8_recipe_resumes_from_its_state_dict():
    batches = _batches(6)
    full = amp.get_recipe("fp8", accumulate="sm80", amax_history_len=3)
    _, _, losses = _train(full, batches)
    first = amp.get_recipe("fp8", accumulate="sm80", amax_history_len=3)
    model, opt, head = _train(first, batches[:3])
    state, weights, opt_state = first.state_dict(), model.state_dict(), opt.state_dict()
    again = amp.get_recipe("fp8", accumulate="sm80", amax_history_len=3)
    model2 = _mlp()
    model2.load_state_dict(weights)
    model2, opt2, _ = again.prepare(model2, lambda p: optim.SGD(p, lr=0.1, momentum=0.9))
    opt2.load_state_dict(opt_state)
    again.load_state_dict(state)
    tail = [again.step(model2, opt2, _loss, b)[1]["loss"] for b in batches[3:]]
    assert head + tail == losses


def test_bad_options():
    with pytest.raises(ValueError, match="accumulate"):
        amp.get_recipe("fp8", accumulate="sm60")
    with pytest.raises(ValueError, match="margin"):
        DelayedScaling(margin=-1)
