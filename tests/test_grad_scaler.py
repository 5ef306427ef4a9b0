"""amp.GradScaler against torch.amp.GradScaler("cpu"): the same scale, growth tracker, skipped
steps and parameters, bit for bit; plus the kernel's edge cases and the bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest

import simprec as sp
from simprec import amp, hooks, optim
from simprec.amp.grad_scaler import amp_update_scale

torch = pytest.importorskip("torch")

SHAPES = [(3,), (2, 5), (17,)]


def _pair(seed=0):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    ours = [sp.tensor(a, requires_grad=True) for a in init]
    theirs = [torch.tensor(a, requires_grad=True) for a in init]
    return ours, theirs


def _run_against_torch(steps, seed, init_scale, growth_factor, backoff_factor, growth_interval,
                       p_inf, momentum=0.9):
    rng = np.random.default_rng(seed)
    ours, theirs = _pair(seed)
    # lr a power of two: lr * buf is exact, so torch's CPU add(alpha) gives the same bits whether
    # or not its build fuses the multiply-add (test_optim pins that for other rates)
    opt = optim.SGD(ours, lr=2.0**-7, momentum=momentum)
    topt = torch.optim.SGD(theirs, lr=2.0**-7, momentum=momentum, foreach=False)
    kw = dict(init_scale=init_scale, growth_factor=growth_factor, backoff_factor=backoff_factor,
              growth_interval=growth_interval)
    scaler = amp.GradScaler(**kw)
    tscaler = torch.amp.GradScaler("cpu", **kw)
    skipped, scales = 0, []
    for step in range(steps):
        scaler.scale(sp.tensor(1.0))
        tscaler.scale(torch.tensor(1.0))
        scale = np.float32(scaler.get_scale())
        assert scaler.get_scale() == tscaler.get_scale(), step
        bad = rng.integers(len(SHAPES)) if rng.random() < p_inf else -1
        for i, (p, q, s) in enumerate(zip(ours, theirs, SHAPES, strict=False)):
            g = rng.standard_normal(s).astype(np.float32)
            with np.errstate(over="ignore"):
                g = (g * scale).astype(np.float32)  # the scaled gradient, overflowing naturally
            if i == bad:
                g.flat[rng.integers(g.size)] = rng.choice([np.inf, -np.inf, np.nan])
            p.grad = sp.tensor(g)
            q.grad = torch.tensor(g)
        scaler.step(opt)
        tscaler.step(topt)
        torch_skipped = sum(v.item() for v in tscaler._found_inf_per_device(topt).values()) > 0
        scaler.update()
        tscaler.update()
        opt.zero_grad()
        topt.zero_grad()
        assert scaler.last_step["skipped"] == torch_skipped, step
        skipped += torch_skipped
        scales.append(scaler.get_scale())
        assert scaler.get_scale() == tscaler.get_scale(), step
        assert scaler.get_growth_tracker() == tscaler._get_growth_tracker(), step
        for p, q in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(p.numpy().view(np.uint32),
                                          q.detach().numpy().view(np.uint32))
    return skipped, np.array(scales)


def test_matches_torch_for_10000_steps():
    skipped, scales = _run_against_torch(10_000, 0, 2.0**16, 2.0, 0.5, 3, p_inf=0.2)
    assert 1500 < skipped < 4000
    # the walk climbs until the scaled gradients overflow fp32 by themselves
    assert scales.max() >= 2.0**100 and scales.min() <= 2.0**16


def test_matches_torch_with_odd_factors():
    # non-power-of-two factors make every update round the scale to fp32
    skipped, scales = _run_against_torch(2_000, 1, 1000.0, 3.0, 0.3, 2, p_inf=0.3)
    assert skipped > 300 and len(np.unique(scales)) > 20


def test_scale_grows_to_fp32_max_and_backs_off_to_zero_like_torch():
    s, t = amp_update_scale(np.float32(2.0**127), np.int32(0), 0.0, 2.0, 0.5, 1)
    assert s == np.float32(2.0**127) and t == 0  # growth to inf refused, tracker still reset
    s = np.float32(1.0)
    for _ in range(150):
        s, t = amp_update_scale(s, np.int32(5), 1.0, 2.0, 0.5, 2000)
    assert s == 0.0 and t == 0  # no floor: 2^-150 rounds to zero


def test_update_kernel_against_torch():
    rng = np.random.default_rng(3)
    for _ in range(300):
        scale = np.float32(rng.choice([1.0, 3.0, 2.0**100, 3.4e38, 1e-40, 0.7]))
        tracker = int(rng.integers(0, 4))
        found = float(rng.random() < 0.5)
        gf, bf = float(rng.choice([2.0, 1.5, 7.0])), float(rng.choice([0.5, 0.1]))
        gi = int(rng.integers(1, 5))
        ts, tt = torch.tensor(scale), torch.tensor(tracker, dtype=torch.int32)
        torch._amp_update_scale_(ts, tt, torch.tensor(found), gf, bf, gi)
        s, t = amp_update_scale(scale, np.int32(tracker), found, gf, bf, gi)
        assert s.view(np.uint32) == ts.numpy().view(np.uint32) and t == tt.item()


def test_unscale_is_fp32_multiply_by_fp64_reciprocal():
    scaler = amp.GradScaler(init_scale=3.0)
    p = sp.tensor(np.ones(4, np.float32), requires_grad=True)
    g = np.array([1.0, 3.0, 7.0, 1e-30], np.float32)
    p.grad = sp.tensor(g)
    opt = optim.SGD([p], lr=0.0)
    scaler.scale(sp.tensor(1.0))
    scaler.unscale_(opt)
    inv = np.float32(1.0 / np.float64(np.float32(3.0)))
    np.testing.assert_array_equal(p.grad.numpy(), g * inv)


def test_step_skips_on_nonfinite_and_returns_optimizer_result():
    p = sp.tensor(np.ones(2, np.float32), requires_grad=True)
    opt = optim.SGD([p], lr=1.0)
    scaler = amp.GradScaler(init_scale=4.0)
    scaler.scale(sp.tensor(1.0))
    p.grad = sp.tensor(np.array([np.nan, 1.0], np.float32))
    assert scaler.step(opt) is None
    scaler.update()
    np.testing.assert_array_equal(p.numpy(), [1.0, 1.0])
    assert scaler.last_step == {"scale": 4.0, "found_inf": True, "skipped": True, "new_scale": 2.0,
                                "growth_tracker": 0}
    scaler.scale(sp.tensor(1.0))
    p.grad = sp.tensor(np.array([2.0, 2.0], np.float32))
    opt.step = lambda *a, **k: "stepped"  # step() hands back what optimizer.step() returned
    assert scaler.step(opt) == "stepped"
    del opt.step
    scaler.update()
    scaler.scale(sp.tensor(1.0))
    scaler.step(opt)
    scaler.update()
    np.testing.assert_array_equal(p.numpy(), [0.5, 0.5])  # grad [2, 2] unscaled twice: 1 - 2/2/2
    assert scaler.last_step["skipped"] is False and scaler.get_growth_tracker() == 2


def test_scale_formats_follow_torch():
    scaler = amp.GradScaler()
    loss16 = sp.tensor(1.5, fmt=sp.fp16, requires_grad=True)
    out = scaler.scale(loss16)
    assert out.fmt == sp.fp32 and out.item() == 1.5 * 2**16  # 0-dim fp16 * fp32 scale -> fp32
    vec = sp.tensor(np.full(3, 2.0**-10, np.float32), fmt=sp.fp16)
    out = scaler.scale(vec)
    # torch's CPU kernel: one fp32 product, one rounding to fp16
    assert out.fmt == sp.fp16 and out.numpy().tolist() == [64.0] * 3
    tvec = torch.full((3,), 2.0**-10, dtype=torch.half)
    assert (torch.amp.GradScaler("cpu").scale(tvec).float().numpy() == out.numpy()).all()
    assert isinstance(scaler.scale([loss16, loss16]), list)
    # backward of a scaled fp16 loss: the loss's gradient is the scale in fp16 (inf at 2^16)
    scaler.scale(loss16).backward()
    assert np.isinf(loss16.grad.item())


def test_disabled_scaler_is_transparent():
    scaler = amp.GradScaler(enabled=False)
    loss = sp.tensor(2.0)
    assert scaler.scale(loss) is loss
    assert scaler.get_scale() == 1.0 and not scaler.is_enabled() and scaler.state_dict() == {}
    p = sp.tensor(np.ones(2, np.float32), requires_grad=True)
    p.grad = sp.tensor(np.array([np.inf, 1.0], np.float32))
    opt = optim.SGD([p], lr=1.0)
    scaler.step(opt)
    scaler.update()
    assert np.isinf(p.numpy()[0])


def test_state_dict_roundtrip_matches_torch_keys():
    scaler = amp.GradScaler(init_scale=8.0, growth_interval=5)
    assert scaler.get_scale() == 8.0  # before the first scale(): init_scale
    scaler.scale(sp.tensor(1.0))
    p = sp.tensor(np.ones(1, np.float32), requires_grad=True)
    p.grad = sp.tensor(np.ones(1, np.float32))
    opt = optim.SGD([p], lr=0.1)
    scaler.step(opt)
    scaler.update()
    state = scaler.state_dict()
    assert set(state) == set(torch.amp.GradScaler("cpu").state_dict())
    other = amp.GradScaler()
    other.load_state_dict(state)
    assert other.get_scale() == 8.0 and other.get_growth_tracker() == 1
    assert other.get_growth_interval() == 5
    with pytest.raises(RuntimeError, match="empty"):
        amp.GradScaler().load_state_dict({})


def test_scaler_event_goes_to_observers():
    class Obs:
        def __init__(self):
            self.events = []

        def on_round(self, event):
            if event["kind"] == "scaler":
                self.events.append(event)

    obs = Obs()
    hooks.observers.append(obs)
    try:
        p = sp.tensor(np.ones(2, np.float32), requires_grad=True)
        opt = optim.SGD([p], lr=0.1)
        scaler = amp.GradScaler(init_scale=2.0)
        scaler.scale(sp.tensor(1.0))
        p.grad = sp.tensor(np.array([np.inf, 0.0], np.float32))
        scaler.step(opt)
        scaler.update()
    finally:
        hooks.observers.remove(obs)
    assert obs.events == [{"kind": "scaler", "scale": 2.0, "found_inf": True, "skipped": True,
                           "new_scale": 1.0, "growth_tracker": 0}]


def test_static_scaler_keeps_its_scale():
    scaler = amp.StaticLossScaler(1024.0)
    p = sp.tensor(np.ones(2, np.float32), requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    for grad in ([np.inf, 0.0], [1024.0, 0.0]):
        scaler.scale(sp.tensor(1.0))
        p.grad = sp.tensor(np.array(grad, np.float32))
        scaler.step(opt)
        scaler.update()
        assert scaler.get_scale() == 1024.0
    np.testing.assert_array_equal(p.numpy(), np.float32([1 - np.float32(0.1), 1.0]))


# ---- bad input: clear errors ----

@pytest.mark.parametrize("kwargs, message", [
    (dict(init_scale=0.0), "init_scale must be finite and > 0"),
    (dict(init_scale=-2.0), "init_scale must be finite and > 0"),
    (dict(init_scale=float("inf")), "init_scale must be finite"),
    (dict(growth_factor=1.0), r"growth_factor must be finite and > 1"),
    (dict(growth_factor=-2.0), r"growth_factor must be finite and > 1"),
    (dict(backoff_factor=0.0), r"backoff_factor must be finite and in \(0, 1\)"),
    (dict(backoff_factor=1.0), r"backoff_factor must be finite and in \(0, 1\)"),
    (dict(backoff_factor=-0.5), r"backoff_factor must be finite and in \(0, 1\)"),
    (dict(growth_interval=0), "growth_interval must be a positive integer"),
    (dict(growth_interval=2.5), "growth_interval must be a positive integer"),
])
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        amp.GradScaler(**kwargs)


def test_step_or_update_before_scale_is_an_error():
    p = sp.tensor(np.ones(2, np.float32), requires_grad=True)
    p.grad = sp.tensor(np.ones(2, np.float32))
    opt = optim.SGD([p], lr=0.1)
    scaler = amp.GradScaler()
    with pytest.raises(RuntimeError, match=r"step\(\) was called before scale\(\)"):
        scaler.step(opt)
    with pytest.raises(RuntimeError, match=r"update\(\) was called before scale\(\)"):
        scaler.update()
    with pytest.raises(RuntimeError, match=r"unscale_\(\) was called before scale\(\)"):
        scaler.unscale_(opt)


def test_state_machine_errors_follow_torch():
    p = sp.tensor(np.ones(2, np.float32), requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    scaler = amp.GradScaler()
    scaler.scale(sp.tensor(1.0))
    p.grad = sp.tensor(np.ones(2, np.float32))
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="unscale_\\(\\) has already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="unscale_\\(\\) is being called after step\\(\\)"):
        scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    with pytest.raises(RuntimeError, match="Closure use is not currently supported"):
        scaler.step(opt, closure=lambda: None)
    scaler.update()
    with pytest.raises(RuntimeError, match="No inf checks were recorded prior to update"):
        scaler.update()
    q = sp.tensor(np.ones(2, np.float32), requires_grad=True)
    with pytest.raises(RuntimeError, match="No inf checks were recorded for this optimizer"):
        scaler.step(optim.SGD([q], lr=0.1))
    with pytest.raises(ValueError, match="new_scale must be finite and > 0"):
        scaler.update(new_scale=0.0)


def test_fp16_gradients_are_refused_like_torch():
    p = sp.tensor(np.ones(2, np.float32), fmt=sp.fp16, requires_grad=True)
    p.grad = sp.tensor(np.ones(2, np.float32), fmt=sp.fp16)
    scaler = amp.GradScaler()
    scaler.scale(sp.tensor(1.0))
    with pytest.raises(ValueError, match="^Attempting to unscale FP16 gradients.$"):
        scaler.unscale_(optim.SGD([p], lr=0.1))
