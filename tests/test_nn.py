"""simprec.nn: the Module system, the layers against torch.nn, init, state dicts, hooks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import simprec as sp
from simprec import hooks, nn
from simprec.nn import functional as F

torch = pytest.importorskip("torch")
tnn = torch.nn

RTOL, ATOL = 1e-5, 1e-5


# ---------------------------------------------------------------- helpers

def to_torch(module: nn.Module, reference):
    """Copy `module`'s parameters into the torch module `reference` (strict, by name)."""
    state = {k: torch.from_numpy(np.array(v)) for k, v in module.state_dict().items()}
    reference.load_state_dict(state, strict=True)
    return reference


def compare(module, reference, x: np.ndarray, *, call=None, tcall=None, grad_input=True,
            rtol=RTOL, atol=ATOL):
    """Forward both on `x`, backward a fixed random cotangent; compare outputs and every grad."""
    call = call or (lambda m, t: m(t))
    tcall = tcall or (lambda m, t: m(t))
    floating = x.dtype.kind == "f"
    xs = sp.tensor(x, requires_grad=grad_input and floating)
    xt = torch.tensor(x, requires_grad=grad_input and floating)
    out, tout = call(module, xs), tcall(reference, xt)
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=rtol, atol=atol)
    cotangent = np.random.default_rng(7).standard_normal(out.shape).astype(np.float32)
    out.backward(gradient=cotangent)
    tout.backward(torch.from_numpy(cotangent))
    if grad_input and floating:
        np.testing.assert_allclose(xs.grad.numpy(), xt.grad.numpy(), rtol=rtol, atol=atol)
    tparams = dict(reference.named_parameters())
    for name, p in module.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tparams[name].grad.numpy(), rtol=rtol, atol=atol,
                                   err_msg=name)
    return out


def names_and_shapes(module):
    return [(n, tuple(p.shape)) for n, p in module.named_parameters()]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


class Recorder:
    """A hooks observer that keeps each event's module path."""

    def __init__(self):
        self.modules = []

    def on_round(self, event):
        self.modules.append(event.get("module"))


@pytest.fixture
def recorder():
    rec = Recorder()
    hooks.observers.append(rec)
    try:
        yield rec
    finally:
        hooks.observers.remove(rec)


# ---------------------------------------------------------------- names and counts

def test_parameter_names_and_shapes_match_torch():
    cases = [
        (nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)),
         tnn.Sequential(tnn.Linear(64, 128), tnn.ReLU(), tnn.Linear(128, 10))),
        (nn.Linear(5, 3, bias=False), tnn.Linear(5, 3, bias=False)),
        (nn.Conv2d(3, 8, 3, stride=2, padding=1), tnn.Conv2d(3, 8, 3, stride=2, padding=1)),
        (nn.LayerNorm(16), tnn.LayerNorm(16)),
        (nn.LayerNorm((4, 5), elementwise_affine=False),
         tnn.LayerNorm((4, 5), elementwise_affine=False)),
        (nn.Embedding(11, 7), tnn.Embedding(11, 7)),
        (nn.MultiheadAttention(16, 4), tnn.MultiheadAttention(16, 4, batch_first=True)),
        (nn.MultiheadAttention(16, 2, bias=False), tnn.MultiheadAttention(16, 2, bias=False)),
        (nn.ModuleList([nn.Linear(2, 2), nn.Sequential(nn.GELU(), nn.Linear(2, 3))]),
         tnn.ModuleList([tnn.Linear(2, 2), tnn.Sequential(tnn.GELU(), tnn.Linear(2, 3))])),
    ]
    for ours, theirs in cases:
        assert names_and_shapes(ours) == names_and_shapes(theirs), type(ours).__name__
        assert list(ours.state_dict()) == list(theirs.state_dict())
        assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
        assert len(list(ours.children())) == len(list(theirs.children()))


def test_parameters_are_leaf_parameters_with_dotted_names():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 2)))
    params = dict(model.named_parameters())
    assert list(params) == ["0.weight", "0.bias", "2.0.weight", "2.0.bias"]
    for name, p in params.items():
        assert isinstance(p, nn.Parameter) and isinstance(p, sp.Tensor)
        assert p.is_parameter and p.is_leaf and p.requires_grad and p.fmt == sp.fp32
        assert p.name == name
    assert len(list(model.parameters())) == 4


def test_names_follow_the_root_after_nesting():
    inner = nn.Linear(3, 3)
    assert inner.weight.name == "weight"
    outer = nn.Module()
    outer.body = nn.Sequential(inner)
    assert inner.weight.name == "body.0.weight" and inner._path == "body.0"
    assert dict(inner.named_parameters()) == {"weight": inner.weight, "bias": inner.bias}
    assert inner.weight.name == "body.0.weight"  # a sub-module does not rename


def test_shared_parameter_is_listed_once():
    a = nn.Linear(3, 3)
    model = nn.Sequential(a, nn.ReLU(), a)
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # torch's rule


def test_module_attribute_rules():
    m = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="Parameter"):
        m.weight = sp.zeros(2, 2)
    m.bias = None
    assert m.bias is None and [n for n, _ in m.named_parameters()] == ["weight"]
    with pytest.raises(AttributeError, match="no attribute"):
        _ = m.nonexistent

    class Bad(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="super"):
        Bad()
    with pytest.raises(NotImplementedError):
        nn.Module()(1)


def test_register_buffer_state_dict_and_to():
    m = nn.Linear(2, 2)
    m.register_buffer("running", sp.tensor(np.array([1.0, 1.0 / 3.0], np.float32)))
    m.register_buffer("scratch", sp.zeros(2), persistent=False)
    assert [n for n, _ in m.named_buffers()] == ["running", "scratch"]
    assert list(m.state_dict()) == ["weight", "bias", "running"]
    m.to(sp.fp16)
    assert m.running.fmt == sp.fp16
    assert m.running.numpy()[1] == np.float32(np.float16(1.0 / 3.0))


def test_train_eval_apply_zero_grad():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.1)))
    assert all(m.training for m in model.modules())
    assert model.eval() is model and not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Linear", "Dropout", "Dropout", "Sequential", "Sequential"]
    model(sp.ones(2, 3)).sum().backward()
    assert model[0].weight.grad is not None
    model.zero_grad(set_to_none=False)
    assert np.all(model[0].weight.grad.numpy() == 0)
    model.zero_grad()
    assert model[0].weight.grad is None


def test_sequential_indexing():
    layers = [nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and seq[0] is layers[0] and seq[-1] is layers[2]
    assert list(seq) == layers
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[1] is layers[1]
    with pytest.raises(IndexError):
        seq[3]
    seq[1] = nn.Tanh()
    assert isinstance(seq[1], nn.Tanh)
    lst = nn.ModuleList().append(nn.ReLU()).extend([nn.GELU()])
    assert [type(m).__name__ for m in lst] == ["ReLU", "GELU"]
    assert "(0): Linear(in_features=2, out_features=3, bias=True)" in repr(seq)


# ---------------------------------------------------------------- initialisation and seeding

def test_linear_and_conv_init_bounds():
    gen = np.random.default_rng(1)
    lin = nn.Linear(100, 300, generator=gen)
    bound = 1 / math.sqrt(100)  # kaiming_uniform(a=sqrt(5)) = U(±1/sqrt(fan_in))
    w, b = lin.weight.numpy(), lin.bias.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.9 * bound
    conv = nn.Conv2d(4, 64, 3, generator=gen)
    bound = 1 / math.sqrt(4 * 9)
    w = conv.weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
    assert np.abs(conv.bias.numpy()).max() <= bound
    # torch's own bounds agree
    t = tnn.Linear(100, 300)
    assert t.weight.abs().max().item() <= 1 / math.sqrt(100)


def test_other_inits():
    gen = np.random.default_rng(2)
    emb = nn.Embedding(400, 50, generator=gen).weight.numpy()
    assert abs(emb.mean()) < 0.02 and abs(emb.std() - 1) < 0.02
    ln = nn.LayerNorm(6)
    assert np.all(ln.weight.numpy() == 1) and np.all(ln.bias.numpy() == 0)
    mha = nn.MultiheadAttention(32, 4, generator=gen)
    xavier = math.sqrt(6 / (32 + 96))
    w = mha.in_proj_weight.numpy()
    assert np.abs(w).max() <= xavier and np.abs(w).max() > 0.95 * xavier
    assert np.all(mha.in_proj_bias.numpy() == 0) and np.all(mha.out_proj.bias.numpy() == 0)
    assert np.abs(mha.out_proj.weight.numpy()).max() <= 1 / math.sqrt(32)


def test_seeding_is_reproducible():
    def build(**kw):
        return nn.Sequential(nn.Linear(5, 5, **kw), nn.Linear(5, 2, **kw))

    nn.manual_seed(123)
    a = build()
    nn.manual_seed(123)
    b = build()
    c = build()
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert np.array_equal(pa.numpy(), pb.numpy())
        assert not np.array_equal(pa.numpy(), pc.numpy())
    # an int seed is a fresh Generator; one Generator gives one stream
    assert np.array_equal(nn.Linear(3, 3, generator=9).weight.numpy(),
                          nn.Linear(3, 3, generator=9).weight.numpy())
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    assert np.array_equal(build(generator=g1)[1].weight.numpy(),
                          build(generator=g2)[1].weight.numpy())
    with pytest.raises(TypeError, match="generator"):
        nn.Linear(2, 2, generator="seed")


def test_fmt_option_builds_half_parameters():
    lin = nn.Linear(8, 4, fmt=sp.bf16, generator=0)
    assert lin.weight.fmt == sp.bf16 and lin.bias.fmt == sp.bf16
    w = lin.weight.numpy()
    assert np.array_equal(sp.round(w, sp.bf16), w)
    with pytest.raises(TypeError, match="fmt"):
        nn.Linear(2, 2, fmt=sp.int64)


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 3)
    with pytest.raises(ValueError, match="divisible"):
        nn.MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(1, 1, (3, 3, 3))
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")
    with pytest.raises(ValueError, match="p must"):
        nn.Dropout(1.5)


# ---------------------------------------------------------------- forward and backward vs torch

@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(rng, bias):
    m = nn.Linear(7, 5, bias=bias, generator=rng)
    x = rng.standard_normal((3, 4, 7)).astype(np.float32)
    compare(m, to_torch(m, tnn.Linear(7, 5, bias=bias)), x)


@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 1), ((2, 1), (0, 2))])
def test_conv2d_matches_torch(rng, stride, padding):
    m = nn.Conv2d(3, 4, (3, 2), stride=stride, padding=padding, generator=rng)
    ref = to_torch(m, tnn.Conv2d(3, 4, (3, 2), stride=stride, padding=padding))
    compare(m, ref, rng.standard_normal((2, 3, 7, 6)).astype(np.float32))


def test_layer_norm_matches_torch(rng):
    m = nn.LayerNorm((4, 6), eps=1e-3)
    m.weight.data = rng.uniform(0.5, 1.5, (4, 6)).astype(np.float32)
    m.bias.data = rng.standard_normal((4, 6)).astype(np.float32)
    x = rng.standard_normal((3, 4, 6)).astype(np.float32)
    compare(m, to_torch(m, tnn.LayerNorm((4, 6), eps=1e-3)), x)
    plain = nn.LayerNorm(6, elementwise_affine=False)
    compare(plain, tnn.LayerNorm(6, elementwise_affine=False), x[0])


def test_embedding_matches_torch(rng):
    m = nn.Embedding(10, 4, generator=rng)
    ids = np.array([[1, 2, 2], [9, 0, 2]])
    out = compare(m, to_torch(m, tnn.Embedding(10, 4)), ids)
    assert out.shape == (2, 3, 4)


@pytest.mark.parametrize("layer,reference", [
    (lambda: nn.ReLU(), lambda: tnn.ReLU()),
    (lambda: nn.GELU(), lambda: tnn.GELU()),
    (lambda: nn.GELU("tanh"), lambda: tnn.GELU("tanh")),
    (lambda: nn.SiLU(), lambda: tnn.SiLU()),
    (lambda: nn.Tanh(), lambda: tnn.Tanh()),
    (lambda: nn.Sigmoid(), lambda: tnn.Sigmoid()),
    (lambda: nn.Softmax(dim=1), lambda: tnn.Softmax(dim=1)),
    (lambda: nn.Identity(), lambda: tnn.Identity()),
    (lambda: nn.Flatten(), lambda: tnn.Flatten()),
    (lambda: nn.MaxPool2d(2), lambda: tnn.MaxPool2d(2)),
    (lambda: nn.MaxPool2d(3, stride=2, padding=1), lambda: tnn.MaxPool2d(3, stride=2, padding=1)),
    (lambda: nn.AvgPool2d(2), lambda: tnn.AvgPool2d(2)),
    (lambda: nn.AvgPool2d(3, stride=1, padding=1), lambda: tnn.AvgPool2d(3, stride=1, padding=1)),
])
def test_parameterless_layers_match_torch(rng, layer, reference):
    compare(layer(), reference(), rng.standard_normal((2, 3, 6, 6)).astype(np.float32))


def test_sequential_matches_torch(rng):
    m = nn.Sequential(nn.Linear(64, 128, generator=rng), nn.ReLU(),
                      nn.Linear(128, 10, generator=rng))
    ref = to_torch(m, tnn.Sequential(tnn.Linear(64, 128), tnn.ReLU(), tnn.Linear(128, 10)))
    compare(m, ref, rng.standard_normal((16, 64)).astype(np.float32))


def _torch_mha(m: nn.MultiheadAttention, causal: bool, bias=True):
    ref = to_torch(m, tnn.MultiheadAttention(m.embed_dim, m.num_heads, bias=bias, batch_first=True))

    def call(module, x):
        t = x.shape[1]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1) if causal else None
        out, weights = module(x, x, x, need_weights=False, attn_mask=mask)
        assert weights is None
        return out

    return ref, call


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_multihead_attention_matches_torch(rng, causal, bias):
    m = nn.MultiheadAttention(16, 4, bias=bias, generator=rng)
    if bias:  # non-zero biases, so that their gradients are tested too
        m.in_proj_bias.data = rng.standard_normal(48).astype(np.float32) * 0.1
        m.out_proj.bias.data = rng.standard_normal(16).astype(np.float32) * 0.1
    ref, tcall = _torch_mha(m, causal, bias)
    compare(m, ref, rng.standard_normal((2, 5, 16)).astype(np.float32),
            call=lambda mod, x: mod(x, causal=causal), tcall=tcall, atol=2e-5)


def test_multihead_attention_layouts(rng):
    m = nn.MultiheadAttention(8, 2, batch_first=False, generator=rng)
    x = rng.standard_normal((5, 2, 8)).astype(np.float32)  # (T, B, E)
    ref = to_torch(m, tnn.MultiheadAttention(8, 2))
    out = m(sp.tensor(x))
    expected, _ = ref(*(torch.from_numpy(x),) * 3, need_weights=False)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=RTOL, atol=2e-5)
    single = nn.MultiheadAttention(8, 2, generator=rng)
    y = rng.standard_normal((5, 8)).astype(np.float32)
    batched = single(sp.tensor(y[None])).numpy()[0]
    np.testing.assert_allclose(single(sp.tensor(y)).numpy(), batched, rtol=0, atol=0)


def test_public_api_example_runs(rng):
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    xb = rng.standard_normal((32, 64)).astype(np.float32)
    yb = rng.integers(0, 10, 32)
    loss = nn.functional.cross_entropy(model(sp.tensor(xb)), sp.tensor(yb))
    loss.backward()
    assert loss.shape == () and all(p.grad is not None for p in model.parameters())


def test_functional_names_are_the_ops():
    for name in ("linear", "conv2d", "relu", "gelu", "silu", "tanh", "sigmoid", "softplus",
                 "softmax", "log_softmax", "layer_norm", "embedding", "dropout", "max_pool2d",
                 "avg_pool2d", "cross_entropy", "nll_loss", "mse_loss",
                 "scaled_dot_product_attention", "pad"):
        assert getattr(F, name) is getattr(sp.ops, name)
    x = sp.tensor(np.linspace(-3, 3, 7, dtype=np.float32))
    expected = tnn.functional.gelu(torch.from_numpy(x.numpy()), approximate="tanh").numpy()
    np.testing.assert_allclose(F.gelu(x, approximate="tanh").numpy(), expected,
                               rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- dropout

def test_dropout_is_seeded_and_stateful():
    x = sp.ones(1000)
    a, b = nn.Dropout(0.25, generator=3), nn.Dropout(0.25, generator=3)
    ya, yb = a(x).numpy(), b(x).numpy()
    assert np.array_equal(ya, yb)
    assert set(np.unique(ya)) <= {0.0, np.float32(1 / 0.75)}
    assert 150 < np.sum(ya == 0) < 350
    assert not np.array_equal(a(x).numpy(), ya)  # the stream advances
    a.eval()
    assert a(x) is x
    assert nn.Dropout(0.0)(x) is x


def test_dropout_rng_state_round_trips_through_json():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5, generator=1),
                          nn.Dropout(0.5, generator=1))
    x = sp.ones(3, 4)
    model(x)
    saved = json.loads(json.dumps(model.rng_state_dict()))
    assert list(saved) == ["1", "2"]
    first = model(x).numpy()
    model.load_rng_state_dict(saved)
    assert np.array_equal(model(x).numpy(), first)
    with pytest.raises(KeyError):
        model.load_rng_state_dict({"0": saved["1"]})


def test_dropouts_built_from_one_generator_differ():
    gen = np.random.default_rng(0)
    a, b = nn.Dropout(0.5, generator=gen), nn.Dropout(0.5, generator=gen)
    x = sp.ones(200)
    assert not np.array_equal(a(x).numpy(), b(x).numpy())


# ---------------------------------------------------------------- state dict

def test_state_dict_round_trip(rng):
    def build():
        return nn.Sequential(nn.Linear(4, 3, generator=rng), nn.LayerNorm(3),
                             nn.Linear(3, 2, generator=rng))

    a, b = build(), build()
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in state.values())
    state["0.weight"][:] = 0  # a copy: the model is unchanged
    assert np.any(a[0].weight.numpy() != 0)
    weight_before = b[0].weight
    result = b.load_state_dict(a.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert b[0].weight is weight_before  # loaded in place
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert np.array_equal(pa.numpy(), pb.numpy()), n
    b.load_state_dict({k: sp.tensor(v) for k, v in a.state_dict().items()})  # Tensors work too


def test_load_state_dict_errors_change_nothing(rng):
    m = nn.Sequential(nn.Linear(4, 3, generator=rng), nn.Linear(3, 2, generator=rng))
    before = m.state_dict()
    good = {k: np.zeros_like(v) for k, v in before.items()}

    def check_unchanged():
        for k, v in m.state_dict().items():
            assert np.array_equal(v, before[k])

    missing = dict(good)
    del missing["1.bias"]
    with pytest.raises(RuntimeError, match=r"missing key\(s\): '1.bias'"):
        m.load_state_dict(missing)
    check_unchanged()
    with pytest.raises(RuntimeError, match=r"unexpected key\(s\): 'extra'"):
        m.load_state_dict({**good, "extra": np.zeros(1)})
    check_unchanged()
    with pytest.raises(RuntimeError, match=r"size mismatch for '0.weight'.*\(3, 5\).*\(3, 4\)"):
        m.load_state_dict({**good, "0.weight": np.zeros((3, 5))})
    check_unchanged()
    with pytest.raises(RuntimeError, match="size mismatch"):
        m.load_state_dict({"0.weight": np.zeros((3, 5))}, strict=False)
    check_unchanged()
    result = m.load_state_dict({**missing, "extra": np.zeros(1)}, strict=False)
    assert result.missing_keys == ["1.bias"] and result.unexpected_keys == ["extra"]
    assert np.all(m[0].weight.numpy() == 0) and np.array_equal(m[1].bias.numpy(), before["1.bias"])


def test_load_state_dict_rounds_into_the_parameter_format():
    m = nn.Linear(2, 1, fmt=sp.fp16)
    m.load_state_dict({"weight": np.array([[1 / 3, 1e-9]]), "bias": np.array([70000.0])})
    assert m.weight.fmt == sp.fp16
    assert m.weight.numpy()[0, 0] == np.float32(np.float16(1 / 3))
    assert m.weight.numpy()[0, 1] == 0 and np.isinf(m.bias.numpy()[0])


# ---------------------------------------------------------------- formats and backends

def test_to_fp16_rounds_parameters_in_place(rng):
    model = nn.Sequential(nn.Linear(8, 8, generator=rng), nn.ReLU(), nn.Linear(8, 2, generator=rng))
    params = list(model.parameters())
    before = [p.numpy() for p in params]
    model(sp.ones(1, 8)).sum().backward()
    assert model.to(sp.fp16) is model
    for p, old in zip(model.parameters(), before, strict=True):
        assert any(p is q for q in params)  # the same objects (an optimizer keeps working)
        assert isinstance(p, nn.Parameter) and p.is_leaf and p.requires_grad and p.fmt == sp.fp16
        assert np.array_equal(p.numpy(), old.astype(np.float16).astype(np.float32))
        assert p.grad.fmt == sp.fp16
    out = model(sp.tensor(np.ones((2, 8)), fmt=sp.fp16))
    assert out.fmt == sp.fp16
    out.sum().backward()
    assert model[0].weight.grad.fmt == sp.fp16
    model.float()
    assert all(p.fmt == sp.fp32 for p in model.parameters())


def test_to_backend_and_errors():
    m = nn.Linear(2, 2)
    assert m.to("numpy") is m and m.weight.backend is sp.get_backend("numpy")
    with pytest.raises(TypeError, match="Format"):
        m.to(3)
    with pytest.raises(TypeError):
        m.to(sp.int64)


# ---------------------------------------------------------------- hooks

def test_module_paths_pushed_only_when_recording(monkeypatch, rng):
    model = nn.Sequential(nn.Linear(4, 4, generator=rng), nn.ReLU(), nn.Linear(4, 2, generator=rng))
    x = sp.tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)

    def fail(_name):
        raise AssertionError("push_module called with no observer")

    with monkeypatch.context() as patch:
        patch.setattr(hooks, "push_module", fail)
        model(x)


def test_module_paths_seen_by_observers(recorder, rng):
    model = nn.Sequential(nn.Linear(4, 4, generator=rng), nn.ReLU(),
                          nn.Sequential(nn.Linear(4, 2, generator=rng)))
    x = sp.tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    model(x).sum().backward()
    assert {"0", "1", "2.0"} <= set(recorder.modules)
    assert hooks.module_path() == ""  # the stack is empty again


def test_module_path_popped_on_error(recorder):
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model = nn.Sequential(Boom())
    with pytest.raises(RuntimeError, match="boom"):
        model(sp.ones(1))
    assert hooks.module_path() == ""
