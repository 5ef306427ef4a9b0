"""tests/data/h200_capture: the torch networks the run captures train have simprec's parameter
names and shapes (so simprec loads their weights), and the seeded inputs regenerate exactly."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from simprec.models import MLP, TinyGPT

torch = pytest.importorskip("torch")

FOLDER = Path(__file__).parent / "data" / "h200_capture"


def load(name):
    spec = importlib.util.spec_from_file_location(f"h200_capture_{name}", FOLDER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(FOLDER))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(FOLDER))
    return module


def shapes(state):
    return {k: tuple(np.shape(v)) for k, v in state.items()}


def test_gpt_layout_matches_simprec():
    runs = load("capture_runs")
    torch_gpt, _ = runs.torch_modules()
    cfg = runs.GPT
    ours = TinyGPT(cfg["vocab"], cfg["block"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"],
                   tied_head=False)
    theirs = torch_gpt(cfg["vocab"], cfg["block"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"])
    assert shapes(ours.state_dict()) == shapes(theirs.state_dict())
    init = runs.gpt_init([(n, tuple(p.shape)) for n, p in theirs.named_parameters()])
    ours.load_state_dict(init)
    assert np.array_equal(np.asarray(ours.state_dict()["tok_emb.weight"]).view(np.uint32),
                          init["tok_emb.weight"].view(np.uint32))
    assert np.all(init["blocks.0.ln1.weight"] == 1) and np.all(init["head.weight"] != 0)


def test_mlp_layout_matches_simprec():
    runs = load("capture_runs")
    _, torch_mlp = runs.torch_modules()
    cfg = runs.MLP
    ours = MLP(cfg["din"], cfg["hidden"], cfg["classes"])
    theirs = torch_mlp(cfg["din"], cfg["hidden"], cfg["classes"])
    assert shapes(ours.state_dict()) == shapes(theirs.state_dict())


def test_inputs_regenerate_bit_for_bit():
    runs, optim, gemm = load("capture_runs"), load("capture_optim"), load("capture_gemm")
    stream = runs.token_stream(64, 1000)
    a, b = runs.gpt_batch(stream, 3, 4, 16), runs.gpt_batch(stream, 3, 4, 16)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[0][:, 1:], a[1][:, :-1])
    g1, g2 = optim.step_grads(5), optim.step_grads(5)
    assert all(np.array_equal(x.view(np.uint32), y.view(np.uint32))
               for x, y in zip(g1, g2, strict=True))
    assert not np.array_equal(optim.step_grads(6)[2], g1[2])
    x, y = gemm.operands("mm-f16-7-8-9", (7, 9), (9, 8)), gemm.operands("mm-f16-7-8-9", (7, 9))
    assert np.array_equal(x[0], y[0])
