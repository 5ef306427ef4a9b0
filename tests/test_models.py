"""simprec.models: the reference networks build, run forward+backward, and equal torch's."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import h200_file

import simprec as sp
from simprec import hooks
from simprec.models import MLP, MODELS, AmpTraceMLP, SmallCNN, TinyGPT, build_model
from simprec.nn import functional as F

torch = pytest.importorskip("torch")
tnn = torch.nn


def to_torch(module, reference):
    state = {k: torch.from_numpy(np.array(v)) for k, v in module.state_dict().items()}
    reference.load_state_dict(state)
    return reference


def assert_same_names(ours, theirs):
    assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]


def check_grads(ours, theirs, rtol=1e-4, atol=1e-5):
    tparams = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        np.testing.assert_allclose(p.grad.numpy(), tparams[name].grad.numpy(), rtol=rtol, atol=atol,
                                   err_msg=name)


# ---------------------------------------------------------------- registry

def test_registry_builds_every_model():
    assert set(MODELS) == {"mlp", "cnn", "gpt", "amp_trace_mlp"}
    assert isinstance(build_model("mlp", hidden=(8,)), MLP)
    assert isinstance(build_model("cnn"), SmallCNN)
    assert isinstance(build_model("gpt", vocab_size=11, block_size=8), TinyGPT)
    assert isinstance(build_model("amp_trace_mlp"), AmpTraceMLP)
    with pytest.raises(ValueError, match="amp_trace_mlp, cnn, gpt, mlp"):
        build_model("resnet")


# ---------------------------------------------------------------- MLP

def test_mlp_matches_torch_sequential():
    rng = np.random.default_rng(0)
    model = MLP(generator=rng)
    ref = to_torch(model, tnn.Sequential(tnn.Linear(64, 256), tnn.ReLU(), tnn.Linear(256, 256),
                                         tnn.ReLU(), tnn.Linear(256, 10)))
    assert_same_names(model, ref)
    x = rng.standard_normal((32, 64)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    loss = F.cross_entropy(model(sp.tensor(x)), sp.tensor(y))
    tloss = tnn.functional.cross_entropy(ref(torch.from_numpy(x)), torch.from_numpy(y))
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-5)
    loss.backward()
    tloss.backward()
    check_grads(model, ref)


def test_mlp_options():
    model = MLP(in_features=10, hidden=16, classes=3, activation="gelu", dropout=0.1, generator=1)
    assert [type(m).__name__ for m in model] == ["Linear", "GELU", "Dropout", "Linear"]
    assert model(sp.ones(4, 10)).shape == (4, 3)
    assert model(sp.ones(4, 2, 5)).shape == (4, 3)  # images are flattened
    with pytest.raises(ValueError, match="activation"):
        MLP(activation="swish")


def test_mlp_learns_the_digits():
    """150 plain SGD steps in fp32 bring the loss well down (a smoke test of the stack)."""
    from simprec.data import load_digits

    data = load_digits()
    model = MLP(hidden=(64,), generator=0)
    rng = np.random.default_rng(0)
    x, y = sp.tensor(data.x_train), sp.tensor(data.y_train)
    first = None
    for _ in range(150):
        idx = rng.integers(0, len(data.x_train), 64)
        loss = F.cross_entropy(model(sp.tensor(data.x_train[idx])), sp.tensor(data.y_train[idx]))
        first = first if first is not None else loss.item()
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data = p.data - np.float32(0.5) * p.grad.data
    with sp.no_grad():
        final = F.cross_entropy(model(x), y).item()
        accuracy = float(np.mean(model(x).numpy().argmax(1) == data.y_train))
    assert final < 0.3 * first and accuracy > 0.9


# ---------------------------------------------------------------- SmallCNN

def test_small_cnn_matches_torch():
    rng = np.random.default_rng(1)
    model = SmallCNN(generator=rng)
    ref = to_torch(model, tnn.Sequential(
        tnn.Conv2d(1, 16, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(16, 32, 3, padding=1), tnn.ReLU(), tnn.Flatten(), tnn.Linear(32 * 4 * 4, 10)))
    assert_same_names(model, ref)
    x = rng.random((6, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 6)
    out = model(sp.tensor(x))
    assert out.shape == (6, 10)
    np.testing.assert_allclose(model(sp.tensor(x.reshape(6, 64))).numpy(), out.numpy())  # flat rows
    tout = ref(torch.from_numpy(x))
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-5, atol=1e-5)
    F.cross_entropy(out, sp.tensor(y)).backward()
    tnn.functional.cross_entropy(tout, torch.from_numpy(y)).backward()
    check_grads(model, ref)


def test_small_cnn_sizes():
    model = SmallCNN(in_channels=3, channels=(4, 6), classes=5, image_size=12, kernel_size=5,
                     generator=0)
    assert model(sp.ones(2, 3, 12, 12)).shape == (2, 5)
    with pytest.raises(ValueError, match="odd"):
        SmallCNN(kernel_size=2)


# ---------------------------------------------------------------- TinyGPT

class TorchBlock(tnn.Module):
    def __init__(self, e, h):
        super().__init__()
        self.ln1 = tnn.LayerNorm(e)
        self.attn = tnn.MultiheadAttention(e, h, batch_first=True)
        self.drop = tnn.Dropout(0.0)
        self.ln2 = tnn.LayerNorm(e)
        self.mlp = tnn.Sequential(tnn.Linear(e, 4 * e), tnn.GELU(), tnn.Linear(4 * e, e),
                                  tnn.Dropout(0.0))

    def forward(self, x):
        t = x.shape[1]
        h = self.ln1(x)
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        a, _ = self.attn(h, h, h, need_weights=False, attn_mask=mask)
        x = x + self.drop(a)
        return x + self.mlp(self.ln2(x))


class TorchGPT(tnn.Module):
    def __init__(self, v, block, n_layer, h, e, tied):
        super().__init__()
        self.tok_emb, self.pos_emb = tnn.Embedding(v, e), tnn.Embedding(block, e)
        self.drop = tnn.Dropout(0.0)
        self.blocks = tnn.ModuleList(TorchBlock(e, h) for _ in range(n_layer))
        self.ln_f = tnn.LayerNorm(e)
        self.tied = tied
        if not tied:
            self.head = tnn.Linear(e, v, bias=False)

    def forward(self, ids):
        x = self.drop(self.tok_emb(ids) + self.pos_emb(torch.arange(ids.shape[1])))
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        return x @ self.tok_emb.weight.T if self.tied else self.head(x)


@pytest.mark.parametrize("tied", [True, False])
def test_tiny_gpt_matches_torch(tied):
    rng = np.random.default_rng(2)
    model = TinyGPT(vocab_size=13, block_size=8, n_layer=2, n_head=4, n_embd=16, tied_head=tied,
                    generator=rng)
    ref = to_torch(model, TorchGPT(13, 8, 2, 4, 16, tied))
    assert_same_names(model, ref)
    ids = rng.integers(0, 13, (3, 7))
    targets = rng.integers(0, 13, (3, 7))
    logits = model(sp.tensor(ids))
    assert logits.shape == (3, 7, 13)
    tlogits = ref(torch.from_numpy(ids))
    np.testing.assert_allclose(logits.numpy(), tlogits.detach().numpy(), rtol=1e-4, atol=1e-5)
    loss = F.cross_entropy(logits.reshape(-1, 13), sp.tensor(targets.reshape(-1)))
    tloss = tnn.functional.cross_entropy(tlogits.reshape(-1, 13),
                                         torch.from_numpy(targets.reshape(-1)))
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-5)
    loss.backward()
    tloss.backward()
    check_grads(model, ref, rtol=1e-3, atol=1e-5)


def test_tiny_gpt_parameters_and_init():
    tied = TinyGPT(vocab_size=20, block_size=8, n_embd=16, generator=0)
    untied = TinyGPT(vocab_size=20, block_size=8, n_embd=16, tied_head=False, generator=0)
    n_tied = sum(p.numel() for p in tied.parameters())
    assert sum(p.numel() for p in untied.parameters()) == n_tied + 20 * 16
    assert "head.weight" not in dict(tied.named_parameters())
    assert "blocks.1.attn.in_proj_weight" in dict(tied.named_parameters())
    w = tied.tok_emb.weight.numpy()
    assert abs(w.std() - 0.02) < 0.005  # GPT-2 init by default
    assert np.all(tied.blocks[0].mlp[0].bias.numpy() == 0)
    torch_init = TinyGPT(vocab_size=20, block_size=8, n_embd=16, init_std=None, generator=0)
    assert abs(torch_init.tok_emb.weight.numpy().std() - 1) < 0.1


def test_tiny_gpt_is_causal():
    model = TinyGPT(vocab_size=11, block_size=10, n_embd=16, generator=3)
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 11, (2, 10))
    changed = ids.copy()
    changed[:, 6:] = (changed[:, 6:] + 1) % 11
    a, b = model(sp.tensor(ids)).numpy(), model(sp.tensor(changed)).numpy()
    np.testing.assert_array_equal(a[:, :6], b[:, :6])
    assert not np.allclose(a[:, 6:], b[:, 6:])


def test_tiny_gpt_input_checks():
    model = TinyGPT(vocab_size=11, block_size=4, n_embd=8, n_head=2, generator=0)
    with pytest.raises(ValueError, match="block_size"):
        model(sp.tensor(np.zeros((1, 5), np.int64)))
    with pytest.raises(TypeError, match="int64"):
        model(sp.ones(1, 4))


def test_tiny_gpt_dropout_is_reproducible_and_off_in_eval():
    def run(seed):
        model = TinyGPT(vocab_size=11, block_size=6, n_embd=8, n_head=2, dropout=0.2,
                        generator=seed)
        return model, model(sp.tensor(np.arange(6).reshape(1, 6))).numpy()

    (m1, a), (_, b) = run(5), run(5)
    np.testing.assert_array_equal(a, b)
    m1.eval()
    ids = sp.tensor(np.arange(6).reshape(1, 6))
    np.testing.assert_array_equal(m1(ids).numpy(), m1(ids).numpy())
    assert set(m1.rng_state_dict()) >= {"drop", "blocks.0.attn", "blocks.0.drop", "blocks.0.mlp.3"}


def test_tiny_gpt_module_paths_for_observers():
    class Recorder:
        def __init__(self):
            self.modules = set()

        def on_round(self, event):
            self.modules.add(event.get("module"))

    model = TinyGPT(vocab_size=11, block_size=6, n_embd=8, n_head=2, generator=0)
    rec = Recorder()
    hooks.observers.append(rec)
    try:
        model(sp.tensor(np.arange(6).reshape(1, 6))).sum().backward()
    finally:
        hooks.observers.remove(rec)
    expected = {"blocks.0.attn", "blocks.0.attn.out_proj", "blocks.1.ln2", "blocks.1.mlp.0", "ln_f"}
    assert expected <= rec.modules


def test_tiny_gpt_trains_in_pure_fp16():
    model = TinyGPT(vocab_size=11, block_size=6, n_embd=8, n_head=2, generator=0).to(sp.fp16)
    logits = model(sp.tensor(np.arange(6).reshape(1, 6) % 11))
    assert logits.fmt == sp.fp16
    F.cross_entropy(logits.reshape(-1, 11), sp.tensor(np.arange(6) % 11)).backward()
    assert all(p.grad is not None and p.grad.fmt == sp.fp16 for p in model.parameters())


# ---------------------------------------------------------------- the AMP-trace MLP

class TorchTraceMLP(tnn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.ln = tnn.Linear(64, 256), tnn.LayerNorm(256)
        self.fc2, self.fc3 = tnn.Linear(256, 256), tnn.Linear(256, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(self.ln(tnn.functional.gelu(self.fc1(x))))))


def test_amp_trace_mlp_loads_the_trace_and_matches_torch(load_h200):
    trace = load_h200("amp_trace_dev")
    model = AmpTraceMLP.from_trace(trace)
    names = [k[len("init_"):] for k in trace if k.startswith("init_")]
    assert sorted(n for n, _ in model.named_parameters()) == sorted(names)
    assert np.array_equal(model.fc1.weight.numpy(), trace["init_fc1.weight"])
    ref = to_torch(model, TorchTraceMLP())
    x, y = trace["X"][0], trace["Y"][0]
    out = model(sp.tensor(x))
    tout = ref(torch.from_numpy(x))
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-5, atol=1e-5)
    F.cross_entropy(out, sp.tensor(y)).backward()
    tnn.functional.cross_entropy(tout, torch.from_numpy(y)).backward()
    check_grads(model, ref)
    final = AmpTraceMLP.from_trace(str(h200_file("amp_trace_dev")), which="final")
    assert np.array_equal(final.fc3.bias.numpy(), trace["final_fc3.bias"])


def test_amp_trace_mlp_structure():
    model = AmpTraceMLP(generator=0)
    assert [n for n, _ in model.named_children()] == ["fc1", "ln", "fc2", "fc3"]
    assert model(sp.ones(3, 64)).shape == (3, 10)
    with pytest.raises(ValueError, match="which"):
        AmpTraceMLP.from_trace({}, which="middle")
