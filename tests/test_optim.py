"""simprec.optim against torch.optim (CPU, foreach=False): identical fp32 parameters after 100
steps on the same gradients; fp16 parameters (pure-fp16) too; schedulers, clipping, state."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simprec as sp
from simprec import hooks, optim
from simprec.backend import get_backend
from simprec.optim import _kernels as K

torch = pytest.importorskip("torch")

# sizes hitting torch's vectorised loop bodies and their scalar tails
SHAPES = [(7,), (5, 13), (64,), (3, 33)]


# torch's CPU kernels run half tensors through fp32 vectors in the loop body but through scalar
# c10::Half arithmetic in the tail (n % 64 elements), rounding alpha * b to fp16 before the add;
# CUDA computes every element in fp32 (as simprec does), so fp16 comparisons use whole vectors.
HALF_SHAPES = [(64,), (2, 64), (128,)]


def _params(seed, fmt=sp.fp32, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    ours = [sp.tensor(a, fmt=fmt, requires_grad=True) for a in arrays]
    tdt = torch.float16 if fmt == sp.fp16 else torch.float32
    theirs = [torch.tensor(p.numpy(), dtype=tdt, requires_grad=True) for p in ours]
    return ours, theirs


def _bits(x):
    return x.view(np.uint16) if x.dtype == np.float16 else x.view(np.uint32)


def _assert_same(ours, theirs, fmt=sp.fp32):
    for p, q in zip(ours, theirs, strict=False):
        mine = p.numpy().astype(np.float16) if fmt == sp.fp16 else p.numpy()
        np.testing.assert_array_equal(_bits(mine), _bits(q.detach().numpy()))


def _train(make_ours, make_theirs, steps=100, seed=0, fmt=sp.fp32, grad_scale=1.0, shapes=SHAPES):
    ours, theirs = _params(seed, fmt, shapes)
    opt, topt = make_ours(ours), make_theirs(theirs)
    rng = np.random.default_rng(seed + 100)
    tdt = torch.float16 if fmt == sp.fp16 else torch.float32
    for _ in range(steps):
        for p, q, s in zip(ours, theirs, shapes, strict=False):
            g = (rng.standard_normal(s) * grad_scale).astype(np.float32)
            p.grad = sp.tensor(g, fmt=fmt)
            q.grad = torch.tensor(p.grad.numpy(), dtype=tdt)
        opt.step()
        topt.step()
    return ours, theirs


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.5, weight_decay=1e-2),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=3e-4),
    dict(lr=0.01, weight_decay=0.1, maximize=True),
]


def _ids(kwargs):
    return ",".join(f"{a}={b}" for a, b in kwargs.items())


@pytest.mark.parametrize("kwargs", SGD_CASES, ids=_ids)
def test_sgd_bitwise_like_torch(kwargs, pinned_pointwise):
    ours, theirs = _train(lambda ps: optim.SGD(ps, **kwargs),
                          lambda ps: torch.optim.SGD(ps, foreach=False, **kwargs))
    _assert_same(ours, theirs)


@pytest.fixture
def ieee_sqrt(monkeypatch):
    """Give the torch CPU reference the two CUDA kernels Adam uses that torch's CPU build computes
    differently (simprec simulates the GPU):
    - sqrt: torch's CPU sqrt need not be correctly rounded (its vectorised kernel depends on the
      CPU and the build: 0.6% of float32 results 1 ulp off on one machine, 17% on another);
      CUDA's sqrtf rounds correctly. Reference: the fp64 root rounded once (53 >= 2*24 + 2 bits
      make that double rounding exact), the same on every machine.
    - tensor / Python number: CUDA multiplies by the reciprocal (BinaryDivTrueKernel.cu,
      "compute a * reciprocal(b)"), taken in double and rounded to fp32 (H200 captures,
      tests/test_optim_h200.py); the CPU divides.
    - addcmul / addcdiv: CUDA computes `a + alpha * (b * c)` and `a + alpha * (b / c)`, the
      product or quotient rounded, then one fma (PointwiseOpsKernel.cu); torch's CPU computes
      fma(alpha * b, c, a) and (alpha * b) / c + a. Reference: `add_(b * c, alpha=v)` in fp32
      (the CPU add is one fma)."""
    monkeypatch.setattr(torch.Tensor, "sqrt", lambda self: torch.sqrt(self.double()).to(self.dtype))
    true_div = torch.Tensor.__truediv__

    def div(self, other):
        if isinstance(other, (int, float)):
            return torch.mul(self, float(np.float32(1.0 / other)))
        return true_div(self, other)

    monkeypatch.setattr(torch.Tensor, "__truediv__", div)
    monkeypatch.setattr(torch.Tensor, "addcmul_",
                        lambda self, a, b, value=1: self.add_(a.float() * b.float(), alpha=value))
    monkeypatch.setattr(torch.Tensor, "addcdiv_",
                        lambda self, a, b, value=1: self.add_(a.float() / b.float(), alpha=value))


def _fp64_root(x: np.ndarray) -> np.ndarray:
    """The correctly rounded float32 square root: the fp64 root rounded once (53 >= 2*24 + 2
    bits make that double rounding exact), which is what CUDA's sqrtf returns (IEEE mode)."""
    with np.errstate(invalid="ignore"):
        return np.sqrt(x.astype(np.float64)).astype(np.float32)


def test_optimizer_sqrt_is_correctly_rounded_like_cudas_sqrtf():
    """Adam's sqrt kernel on fp32 values: the correctly rounded root, bit for bit, on random
    values over the whole exponent range, subnormals, signed zeros, inf, NaN, negative inputs and
    near-ties (squares of the midpoints between two floats, where a 1-ulp error shows first)."""
    rng = np.random.default_rng(0)
    randoms = rng.integers(0, 0x7F800000, 200_000, dtype=np.uint32).view(np.float32)
    mids = rng.uniform(0.5, 2.0, 100_000).astype(np.float32).astype(np.float64)
    mids = mids + np.spacing(mids.astype(np.float32)).astype(np.float64) / 2
    near_ties = (mids * mids).astype(np.float32)
    near_ties = np.concatenate([near_ties, np.nextafter(near_ties, np.float32(0)),
                                np.nextafter(near_ties, np.float32(np.inf))])
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, -1e-45, 1e-45, 2**-126,
                         np.finfo(np.float32).max], np.float32)
    x = np.concatenate([randoms, near_ties, specials])
    be = get_backend("numpy")
    got = be.to_numpy(K.sqrt(be, be.asarray(x, sp.fp32)))
    want = _fp64_root(x)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
    # the near-ties really are hard: truncating the fp64 root gets some of them wrong
    truncated = (np.sqrt(near_ties.astype(np.float64)).view(np.uint64) & ~np.uint64(0x1FFFFFFF)) \
        .view(np.float64).astype(np.float32)
    assert np.sum(truncated != _fp64_root(near_ties)) > 1000


ADAM_CASES = [
    dict(lr=1e-3),
    dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=1e-3, weight_decay=0.05),
    dict(lr=1e-3, amsgrad=True),
    dict(lr=2e-3, betas=(0.3, 0.6)),  # 1 - beta1 >= 0.5: lerp's other branch
]


@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=_ids)
def test_adam_bitwise_like_torch(kwargs, ieee_sqrt):
    ours, theirs = _train(lambda ps: optim.Adam(ps, foreach=False, **kwargs),
                          lambda ps: torch.optim.Adam(ps, foreach=False, **kwargs))
    _assert_same(ours, theirs)


@pytest.mark.parametrize("kwargs", [dict(), dict(lr=1e-2, weight_decay=0.1), dict(amsgrad=True)])
def test_adamw_bitwise_like_torch(kwargs, ieee_sqrt):
    ours, theirs = _train(lambda ps: optim.AdamW(ps, foreach=False, **kwargs),
                          lambda ps: torch.optim.AdamW(ps, foreach=False, **kwargs))
    _assert_same(ours, theirs)


def test_defaults_are_torchs():
    p = [sp.tensor(np.ones(2, np.float32), requires_grad=True)]
    q = [torch.ones(2, requires_grad=True)]
    for ours, theirs in ((optim.SGD(p), torch.optim.SGD(q)), (optim.Adam(p), torch.optim.Adam(q)),
                         (optim.AdamW(p), torch.optim.AdamW(q))):
        for key, value in ours.defaults.items():
            if key in theirs.defaults and key != "decoupled_weight_decay":
                assert theirs.defaults[key] == value, (type(ours).__name__, key)


# torch's *CPU* add kernel rounds `alpha` to the tensor's dtype for half tensors (CUDA keeps it
# fp32, as simprec does); with fp16-exact alphas (lr, momentum, weight_decay) the two agree.
@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.0625, momentum=0.875)),
    ("SGD", dict(lr=0.0625, momentum=0.875, nesterov=True, weight_decay=2.0**-10)),
    ("Adam", dict(lr=1e-3)),
    ("AdamW", dict(lr=1e-3, weight_decay=0.01)),
])
def test_fp16_parameters_update_like_torch_half(name, kwargs, pinned_pointwise):
    """pure fp16: state in fp16, each kernel computed in fp32 and rounded once to fp16."""
    ours, theirs = _train(lambda ps: getattr(optim, name)(ps, foreach=False, **kwargs),
                          lambda ps: getattr(torch.optim, name)(ps, foreach=False, **kwargs),
                          steps=60, fmt=sp.fp16, grad_scale=0.05, shapes=HALF_SHAPES)
    _assert_same(ours, theirs, fmt=sp.fp16)


def test_fp16_state_is_fp16():
    p = sp.tensor(np.ones(4, np.float32), fmt=sp.fp16, requires_grad=True)
    p.grad = sp.tensor(np.full(4, 1e-3, np.float32), fmt=sp.fp16)
    opt = optim.Adam([p])
    opt.step()
    assert opt.state[p]["exp_avg"].fmt == sp.fp16 and opt.state[p]["exp_avg_sq"].fmt == sp.fp16
    assert p.fmt == sp.fp16


# ---- the fused kernels ----

@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-2.0**60, 2.0**60, width=32), min_size=3, max_size=3))
def test_fma_host_is_correctly_rounded(abc):
    from fractions import Fraction

    a, b, c = (np.float32(v) for v in abc)
    got = K.fma_host(a, b, c)
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    if exact == 0:
        assert got == 0
        return
    # the correctly rounded float32: compare against both neighbours of the float64 nearest value
    cand = np.float32(float(exact))
    down, up = np.float32(-np.inf), np.float32(np.inf)
    neighbours = (np.nextafter(cand, down), cand, np.nextafter(cand, up))
    best = min(neighbours, key=lambda v: (abs(Fraction(float(v)) - exact),
                                          int(np.float32(v).view(np.uint32)) & 1))
    assert got.view(np.uint32) == np.float32(best).view(np.uint32)


def test_kernels_match_torch_cpu():
    be = get_backend("numpy")
    rng = np.random.default_rng(5)
    a, b, c = (rng.standard_normal(1001).astype(np.float32) for _ in range(3))
    ta, tb, tc = (torch.from_numpy(x.copy()) for x in (a, b, c))
    np.testing.assert_array_equal(K.add(be, a, b, -0.05), ta.add(tb, alpha=-0.05).numpy())
    for w in (0.1, 0.7):
        np.testing.assert_array_equal(K.lerp(be, a, b, w), ta.clone().lerp_(tb, w).numpy())
    np.testing.assert_array_equal(K.addcmul(be, a, b, c, 0.001),
                                  ta.clone().addcmul_(tb, tc, value=0.001).numpy())
    pos = np.abs(c) + 0.5
    expected = ta.clone().addcdiv_(tb, torch.from_numpy(pos), value=-0.01).numpy()
    np.testing.assert_array_equal(K.addcdiv(be, a, b, pos, -0.01), expected)


# ---- the Optimizer API ----

def test_zero_grad_and_param_groups():
    a = sp.tensor(np.ones(2, np.float32), requires_grad=True)
    b = sp.tensor(np.ones(3, np.float32), requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.5)
    a.grad = sp.tensor(np.ones(2, np.float32))
    b.grad = sp.tensor(np.ones(3, np.float32))
    opt.step()
    np.testing.assert_array_equal(a.numpy(), [0.5, 0.5])
    np.testing.assert_array_equal(b.numpy(), [0.0, 0.0, 0.0])
    opt.zero_grad(set_to_none=False)
    assert a.grad is not None and not a.grad.numpy().any()
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_state_dict_resume_is_exact():
    def run(steps, opt, ps, rng):
        for _ in range(steps):
            for p in ps:
                p.grad = sp.tensor(rng.standard_normal(p.shape).astype(np.float32))
            opt.step()

    ps, _ = _params(1)
    opt = optim.Adam(ps, lr=1e-2, weight_decay=0.1)
    run(10, opt, ps, np.random.default_rng(0))
    state = opt.state_dict()
    saved = [p.numpy() for p in ps]
    values = [v for s in state["state"].values() for v in s.values()]
    assert all(isinstance(v, (np.ndarray, float, int)) for v in values)
    run(10, opt, ps, np.random.default_rng(1))
    reference = [p.numpy() for p in ps]
    qs = [sp.tensor(a, requires_grad=True) for a in saved]
    other = optim.Adam(qs, lr=123.0)
    other.load_state_dict(state)
    assert other.param_groups[0]["lr"] == 1e-2
    run(10, other, qs, np.random.default_rng(1))
    for p, r in zip(qs, reference, strict=False):
        np.testing.assert_array_equal(p.numpy(), r)
    with pytest.raises(ValueError, match="different number of parameter groups"):
        optim.Adam([{"params": qs[:1]}, {"params": qs[1:]}]).load_state_dict(state)


def test_update_events_only_with_observers():
    class Obs:
        events = []

        def on_round(self, event):
            if event["kind"] == "update":
                self.events.append(event)

    p = sp.tensor(np.array([1.0, 2048.0], np.float32), fmt=sp.fp16, requires_grad=True)
    p.name = "w"
    opt = optim.SGD([p], lr=1.0)
    p.grad = sp.tensor(np.array([0.25, 0.25], np.float32), fmt=sp.fp16)
    opt.step()
    assert Obs.events == []
    hooks.observers.append(Obs())
    try:
        opt.step()
    finally:
        hooks.observers.pop()
    (event,) = Obs.events
    assert event["name"] == "w" and event["fmt"] == sp.fp16
    np.testing.assert_array_equal(event["update"], [-0.25, -0.25])
    np.testing.assert_array_equal(event["old"], [0.75, 2048.0])
    np.testing.assert_array_equal(event["new"], [0.5, 2048.0])  # 2048 - 0.25 rounds back: lost


@pytest.mark.parametrize("make, message", [
    (lambda ps: optim.SGD(ps, lr=-1.0), "Invalid learning rate"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=-0.1), "Invalid momentum value"),
    (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), "Nesterov momentum requires a momentum"),
    (lambda ps: optim.Adam(ps, betas=(1.0, 0.9)), "Invalid beta parameter at index 0"),
    (lambda ps: optim.Adam(ps, eps=-1.0), "Invalid epsilon value"),
    (lambda ps: optim.SGD([], lr=0.1), "empty parameter list"),
])
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make([sp.tensor(np.ones(2, np.float32), requires_grad=True)])


# ---- MasterWeights (O2) ----

def test_master_weights_update_fp32_copies_and_round_into_the_model():
    start = np.random.default_rng(0).standard_normal(8).astype(np.float32)
    w = sp.tensor(start, fmt=sp.fp16, requires_grad=True)
    opt = optim.MasterWeights([w], lambda ps: optim.SGD(ps, lr=1e-4))
    (master,) = opt.master_params
    assert master.fmt == sp.fp32
    np.testing.assert_array_equal(master.numpy(), w.numpy())
    for _ in range(20):
        w.grad = sp.tensor(np.ones(8, np.float32), fmt=sp.fp16)
        opt.step()
        opt.zero_grad()
        np.testing.assert_array_equal(w.numpy(), sp.round(master.numpy(), sp.fp16))
    # 20 updates of 1e-4 accumulate in the fp32 master; a pure fp16 weight would drop each one
    assert not np.array_equal(w.numpy(), sp.round(start, sp.fp16))
    state = opt.state_dict()
    blank = sp.tensor(np.zeros(8, np.float32), fmt=sp.fp16, requires_grad=True)
    other = optim.MasterWeights([blank], lambda ps: optim.SGD(ps, lr=1e-4))
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.master_params[0].numpy(), master.numpy())


# ---- schedulers ----

def _lr_sequences(make_ours, make_theirs, steps=60):
    p = [sp.tensor(np.ones(2, np.float32), requires_grad=True)]
    q = [torch.ones(2, requires_grad=True)]
    opt, topt = optim.SGD(p, lr=0.1), torch.optim.SGD(q, lr=0.1)
    sched, tsched = make_ours(opt), make_theirs(topt)
    ours, theirs = [], []
    for _ in range(steps):
        ours.append(opt.param_groups[0]["lr"])
        theirs.append(topt.param_groups[0]["lr"])
        topt.step()
        sched.step()
        tsched.step()
    return ours, theirs, sched, tsched


S = torch.optim.lr_scheduler
L = optim.lr_scheduler


@pytest.mark.parametrize("make_ours, make_theirs", [
    (lambda o: L.StepLR(o, 7, gamma=0.3), lambda o: S.StepLR(o, 7, gamma=0.3)),
    (lambda o: L.LinearLR(o, 0.01, 1.0, 13), lambda o: S.LinearLR(o, 0.01, 1.0, 13)),
    (lambda o: L.CosineAnnealingLR(o, 17, 1e-4), lambda o: S.CosineAnnealingLR(o, 17, 1e-4)),
    (lambda o: L.warmup_cosine(o, 10, 50, 1e-3, 1e-5),
     lambda o: S.SequentialLR(o, [S.LinearLR(o, 1e-3, 1.0, 10), S.CosineAnnealingLR(o, 40, 1e-5)],
                              [10])),
], ids=["step", "linear", "cosine", "warmup_cosine"])
def test_schedules_equal_torchs(make_ours, make_theirs):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs, sched, tsched = _lr_sequences(make_ours, make_theirs)
    assert ours == theirs
    # after the last step: the rate the next step would use, as torch's scheduler says
    assert sched.get_last_lr() == tsched.get_last_lr()
    assert sched.get_last_lr() == [sched.optimizer.param_groups[0]["lr"]]


def test_scheduler_state_dict_resumes():
    p = [sp.tensor(np.ones(2, np.float32), requires_grad=True)]
    opt = optim.SGD(p, lr=0.1)
    sched = optim.lr_scheduler.warmup_cosine(opt, 5, 30)
    for _ in range(12):
        sched.step()
    state = sched.state_dict()
    assert "optimizer" not in state
    lrs = []
    for _ in range(10):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    opt2 = optim.SGD([sp.tensor(np.ones(2, np.float32), requires_grad=True)], lr=0.1)
    sched2 = optim.lr_scheduler.warmup_cosine(opt2, 5, 30)
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = state["_last_lr"][0]
    again = []
    for _ in range(10):
        sched2.step()
        again.append(opt2.param_groups[0]["lr"])
    assert again == lrs


# ---- clipping ----

def test_clip_grad_norm_like_torch():
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(s).astype(np.float32) * 3 for s in SHAPES]
    ps = [sp.tensor(np.zeros(s, np.float32), requires_grad=True) for s in SHAPES]
    qs = [torch.zeros(s, requires_grad=True) for s in SHAPES]
    for p, q, a in zip(ps, qs, arrays, strict=False):
        p.grad, q.grad = sp.tensor(a), torch.from_numpy(a.copy())
    total = optim.clip_grad_norm_(ps, 1.0)
    ttotal = torch.nn.utils.clip_grad_norm_(qs, 1.0, foreach=False)
    assert math.isclose(total, ttotal.item(), rel_tol=1e-6)
    for p, q in zip(ps, qs, strict=False):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-6)
    assert optim.total_grad_norm(ps) == pytest.approx(1.0, rel=1e-5)
    assert optim.clip_grad_norm_(ps, 100.0) == pytest.approx(1.0, rel=1e-5)  # no clipping: coef 1


@pytest.mark.parametrize("opt", ["adam", "adamw"])
@pytest.mark.parametrize("fmt", ["fp32", "fp16"])
def test_adam_foreach_group_kernel_is_the_per_parameter_path(opt, fmt):
    """Adam's foreach path runs as one `adam_foreach` kernel per group (the backend's), or one
    parameter at a time while observers watch: the same bits."""
    def run(observe):
        rng = np.random.default_rng(0)
        params = [sp.tensor(rng.standard_normal(s).astype(np.float32), getattr(sp, fmt),
                            requires_grad=True) for s in ((4, 3), (5,))]
        cls = optim.AdamW if opt == "adamw" else optim.Adam
        o = cls(params, lr=1e-2, weight_decay=0.1)
        seen = []

        class Observer:
            def on_round(self, event):
                seen.append(event["kind"])

        observer = Observer()
        if observe:
            hooks.observers.append(observer)
        try:
            for step in range(3):
                for p in params:
                    g = rng.standard_normal(p.shape).astype(np.float32) * (step + 1)
                    p.grad = sp.tensor(g, fmt=p.fmt)
                o.step()
        finally:
            if observe:
                hooks.observers.remove(observer)
        assert bool(seen) == observe
        return [p.numpy() for p in params] + [o.state[p][k].numpy() for p in params
                                              for k in ("exp_avg", "exp_avg_sq")]

    for a, b in zip(run(False), run(True), strict=True):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
