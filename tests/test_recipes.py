"""amp recipes: every recipe trains the H200 trace MLP for 60 steps on the trace's batches;
pure-fp16 loses updates that fp32 master weights keep; options, errors and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

import simprec as sp
from simprec import amp, hooks, optim

STEPS = 60


@pytest.fixture(scope="module")
def trace(load_h200):
    return load_h200("amp_trace_dev")


def _model(trace):
    from simprec.models import AmpTraceMLP

    return AmpTraceMLP.from_trace(trace, "init")


def _loss_fn(model, batch):
    from simprec.nn import functional as F

    x, y = batch
    return F.cross_entropy(model(x), y)


def _batches(trace, steps=STEPS):
    return [(sp.tensor(trace["X"][t]), sp.tensor(trace["Y"][t])) for t in range(steps)]


def _sgd(params):
    return optim.SGD(params, lr=0.05, momentum=0.9)


class UpdateLog:
    """A hooks observer keeping, per optimizer step, how many elements had a nonzero intended
    update and how many of those left the stored value unchanged."""

    def __init__(self):
        self.nonzero = self.lost = 0

    def on_round(self, event):
        if event["kind"] == "update":
            nz = np.asarray(event["update"]) != 0
            self.nonzero += int(nz.sum())
            self.lost += int((nz & (np.asarray(event["new"]) == np.asarray(event["old"]))).sum())


def _train(name, trace, steps=STEPS, observer=None, **options):
    recipe = amp.get_recipe(name, **options)
    model, opt, scaler = recipe.prepare(_model(trace), _sgd)
    facts = []
    if observer is not None:
        hooks.observers.append(observer)
    try:
        for batch in _batches(trace, steps):
            _, f = recipe.step(model, opt, _loss_fn, batch)
            facts.append(f)
    finally:
        if observer is not None:
            hooks.observers.remove(observer)
    return recipe, model, opt, scaler, facts


@pytest.mark.parametrize("name", amp.RECIPES)
def test_every_recipe_trains_the_trace_mlp_for_60_steps(name, trace):
    recipe, model, opt, scaler, facts = _train(name, trace)
    assert len(facts) == STEPS
    assert set(facts[0]) == {"loss", "scale", "skipped", "found_inf", "grad_norm"}
    losses = np.array([f["loss"] for f in facts])
    assert np.isfinite(losses).all() and losses.max() < 3.0
    fmt = sp.fp16 if name in ("pure-fp16", "o2-fp16") else sp.fp32
    assert all(p.fmt == fmt for p in model.parameters())
    if name in ("amp-fp16", "o2-fp16"):
        assert isinstance(scaler, amp.GradScaler)
        for now, nxt in zip(facts, facts[1:], strict=False):  # a skipped step halves the scale
            assert now["skipped"] == now["found_inf"]
            if now["skipped"]:
                assert nxt["scale"] == now["scale"] * 0.5
    elif name == "amp-fp16-static":
        assert {f["scale"] for f in facts} == {1024.0}
    else:
        assert scaler is None and {f["scale"] for f in facts} == {1.0}
        assert not any(f["skipped"] for f in facts)
    if name == "o2-fp16":  # the model holds the fp32 masters rounded once into fp16
        for p, m in zip(opt.model_params, opt.master_params, strict=False):
            np.testing.assert_array_equal(p.numpy(), sp.round(m.numpy(), sp.fp16))


def test_amp_fp16_recipe_is_the_traced_torch_loop(trace):
    """amp-fp16 with the trace's settings skips the same steps and uses the same scales."""
    recipe, *_, facts = _train("amp-fp16", trace, steps=20, init_scale=2.0**24, growth_interval=10,
                               accumulate="sm90")
    np.testing.assert_array_equal([f["scale"] for f in facts], trace["scale"][:20])
    np.testing.assert_array_equal([f["skipped"] for f in facts], trace["found_inf"][:20] == 1)
    np.testing.assert_array_equal(np.float32([f["loss"] for f in facts[:6]]), trace["loss"][:6])


def test_pure_fp16_drops_updates_that_master_weights_keep(trace):
    """Stagnation: in pure fp16 many nonzero intended updates leave the fp16 weight unchanged
    (|update| below half an ulp of the weight); fp32 master weights keep them."""
    pure = UpdateLog()
    _train("pure-fp16", trace, steps=20, observer=pure)
    master = UpdateLog()
    _train("o2-fp16", trace, steps=20, observer=master)
    assert pure.nonzero > 0 and pure.lost > 0
    assert pure.lost / pure.nonzero > 0.02  # about 5% over the first 20 steps
    assert master.lost / max(master.nonzero, 1) < 0.01 * (pure.lost / pure.nonzero)


def test_clipping_and_eval(trace):
    recipe, model, opt, scaler, facts = _train("amp-bf16", trace, steps=3, clip_grad_norm=0.5)
    assert all(f["grad_norm"] is not None and f["grad_norm"] > 0 for f in facts)
    x, y = _batches(trace, 1)[0]
    value = recipe.eval_loss(model, _loss_fn, (x, y))
    assert np.isfinite(value) and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["amp-fp16", "o2-fp16"])
def test_state_dict_resumes_exactly(name, trace):
    batches = _batches(trace, 8)
    recipe, model, opt, _, _ = _train(name, trace, steps=0, init_scale=2.0**20, growth_interval=2)
    for b in batches[:4]:
        recipe.step(model, opt, _loss_fn, b)
    saved = (model.state_dict(), opt.state_dict(), recipe.state_dict())
    reference = [recipe.step(model, opt, _loss_fn, b)[1] for b in batches[4:]]

    recipe2 = amp.get_recipe(name, init_scale=2.0**20, growth_interval=2)
    model2, opt2, _ = recipe2.prepare(_model(trace), _sgd)
    model2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    recipe2.load_state_dict(saved[2])
    again = [recipe2.step(model2, opt2, _loss_fn, b)[1] for b in batches[4:]]
    assert again == reference
    assert recipe.state_dict()["scaler"] == recipe2.state_dict()["scaler"]


def test_recipe_names_and_errors():
    assert amp.RECIPES == ("fp32", "amp-fp16", "amp-fp16-noscale", "amp-fp16-static", "amp-bf16",
                           "pure-fp16", "o2-fp16", "fp8")
    assert amp.recipe_names() == list(amp.RECIPES)
    with pytest.raises(ValueError, match=r"unknown recipe 'amp-fp8'; valid recipes: fp32, "
                                         r"amp-fp16, amp-fp16-noscale, amp-fp16-static, amp-bf16, "
                                         r"pure-fp16, o2-fp16"):
        amp.get_recipe("amp-fp8")
    with pytest.raises(ValueError, match=r"recipe 'amp-bf16': unknown option\(s\) init_scale; "
                                         r"valid options: accumulate, clip_grad_norm"):
        amp.get_recipe("amp-bf16", init_scale=2.0)
    with pytest.raises(ValueError, match="accumulate must be one of"):
        amp.get_recipe("amp-fp16", accumulate="tf32")
    with pytest.raises(ValueError, match="clip_grad_norm must be a number >= 0"):
        amp.get_recipe("fp32", clip_grad_norm=-1)
    with pytest.raises(ValueError, match="growth_factor must be finite and > 1"):
        amp.get_recipe("amp-fp16", growth_factor=0.5)
    assert amp.get_recipe("amp-fp16-static", scale=8.0).scaler.get_scale() == 8.0
