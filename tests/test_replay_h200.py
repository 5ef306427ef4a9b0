"""Whole native torch AMP runs on the H200, replayed bit for bit (issue 13), and the capture /
replay tools.

The captures (tests/data/h200_capture/h200_run_*.npz; made by capture_runs.py on an H200, torch
2.11 CUDA 13, converted to simprec_capture.py's format by convert_runs.py):
- GPT fp16: TinyGPT(512, 64, 2 layers, 4 heads, width 64, untied head, manual attention), fp16
  autocast, AdamW on torch's default CUDA path (foreach), GradScaler(2**10, growth_interval 4),
  45 steps;
- GPT bf16: the same under bf16 autocast with AdamW(fused=True), no scaler, 45 steps;
- MLP: MLP(64, (256, 256), 10), fp16 autocast, Adam (foreach), GradScaler, unscale_ and
  clip_grad_norm_(0.5), 50 steps.

Every run replays whole on every CI run (the acceptance: every loss, scale, gradient norm and
final weight; the two GPT runs take about a minute of CPU each).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simprec.cli import main
from simprec.replay import CaptureError, build_model, load_capture, replay

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "tests" / "data" / "h200_capture"
TOOL = REPO / "backends" / "simprec_tools" / "simprec_capture.py"


def _capture(name):
    return load_capture(HERE / f"{name}.npz")


def test_mlp_adam_clip_run_is_bit_identical_every_step():
    capture = _capture("h200_run_mlp_fp16_clip")
    report = replay(capture, build_model(capture))
    assert report.identical, report.first.describe()
    assert report.losses_same == 50
    assert report.checks["grad_norm"] == [50, 50]   # clip_grad_norm_'s total norm, every step
    assert report.checks["scale_after"] == [50, 50]
    assert report.checks["final"] == [6, 6]          # every final weight


@pytest.mark.slow
@pytest.mark.parametrize("name", ["h200_run_gpt_fp16", "h200_run_gpt_bf16_fused"])
def test_gpt_runs_are_bit_identical(name):
    capture = _capture(name)
    report = replay(capture, build_model(capture))
    assert report.identical, report.first.describe()
    assert report.losses_same == 45
    assert report.checks["grad"] == [29, 29]         # step 0, every parameter
    assert report.checks["output"] == [22, 22]       # step 0, every module's output (row 0)
    assert report.checks["final"] == [29, 29]        # every final weight


@pytest.mark.slow
def test_gpt_with_the_sdpa_composite_departs_in_the_attention_backward():
    """The captured GPT writes attention by hand (softmax under autocast: fp32 probabilities);
    simprec's sdpa composite rounds them to fp16 before the backward: the forward is the same,
    the gradients from the second block's in_proj down are not."""
    from simprec.models import TinyGPT

    capture = _capture("h200_run_gpt_fp16")
    kw = dict(capture.meta["model"]["kwargs"], attention="sdpa")
    model = TinyGPT(kw["vocab_size"], kw["block_size"], kw["n_layer"], kw["n_head"],
                    kw["n_embd"], tied_head=False, attention="sdpa")
    report = replay(capture, build_model(capture, model), steps=1)
    assert report.losses_same == 1
    first = report.first
    assert (first.step, first.what, first.name) == (0, "grad", "blocks.1.attn.in_proj_bias")
    assert first.module.startswith("none")           # every module output of step 0 the same
    assert report.checks["grad"][1] == 11            # the 11 parameters after it: identical


# ------------------------------------------------------------------------------ the command


def test_replay_command_reports_bit_identical_steps_and_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    status = main(["replay", str(HERE / "h200_run_mlp_fp16_clip.npz"), "--steps", "2",
                   "--json", str(out)])
    text = capsys.readouterr().out
    assert status == 0
    assert "bit-identical: all 2 steps" in text
    data = json.loads(out.read_text())
    assert data["identical"] and data["losses_identical"] == 2
    assert data["first_departure"] is None


def _bad_capture(tmp_path, **meta_changes):
    with np.load(HERE / "h200_run_mlp_fp16_clip.npz") as d:
        arrays = {k: d[k] for k in d.files}
    meta = json.loads(str(arrays["meta"]))
    meta.update(meta_changes)
    arrays["meta"] = np.array(json.dumps(meta))
    path = tmp_path / "c.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"), ("not-npz", "not an npz file"),
    ("version", "format version 99"), ("network", "the capture's network is 'mlp'"),
    ("module", "has no 'nope'"),
])
def test_replay_command_bad_input_is_one_line_and_status_2(tmp_path, capsys, case, message):
    args = {"missing": [str(tmp_path / "none.npz")],
            "not-npz": [str(tmp_path / "x.npz")],
            "version": [str(_bad_capture(tmp_path, version=99))],
            "network": [str(HERE / "h200_run_mlp_fp16_clip.npz"), "--model", "gpt"],
            "module": [str(HERE / "h200_run_mlp_fp16_clip.npz"), "--torch-module",
                       f"{tmp_path / 'm.py'}:nope"]}[case]
    (tmp_path / "x.npz").write_text("not a zip")
    (tmp_path / "m.py").write_text("x = 1\n")
    assert main(["replay", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_network_that_does_not_match_the_capture_is_refused():
    from simprec.models import MLP

    capture = _capture("h200_run_mlp_fp16_clip")
    with pytest.raises(CaptureError, match="does not match"):
        build_model(capture, MLP(64, (128, 256), 10))


def test_replay_through_from_torch_of_a_torch_sequential(tmp_path, capsys):
    pytest.importorskip("torch")
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "def make():\n"
        "    L = torch.nn.Linear\n"
        "    return torch.nn.Sequential(L(64, 256), torch.nn.ReLU(), L(256, 256), "
        "torch.nn.ReLU(), L(256, 10))\n")
    status = main(["replay", str(HERE / "h200_run_mlp_fp16_clip.npz"), "--torch-module",
                   f"{tmp_path / 'net.py'}:make", "--steps", "2", "-q"])
    assert status == 0, capsys.readouterr()


def test_capture_command_hands_out_the_tool(tmp_path, capsys):
    assert main(["capture", "--write-tool", str(tmp_path)]) == 0
    assert (tmp_path / "simprec_capture.py").read_bytes() == TOOL.read_bytes()
    assert main(["capture", "--print-tool"]) == 0
    assert capsys.readouterr().out.endswith(TOOL.read_text())


# ------------------------------------------------------------------------------ the tool


def test_tool_needs_neither_simprec_nor_pickle():
    tree = ast.parse(TOOL.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert "simprec" not in imported and "pickle" not in imported
    assert imported <= {"__future__", "argparse", "json", "math", "os", "platform", "sys",
                        "zlib", "numpy", "torch", "importlib"}


def test_tool_demo_batches_and_init_are_the_shipped_captures():
    """The tool's demo GPT draws capture_runs.py's initial weights and batches."""
    sys.path.insert(0, str(TOOL.parent))
    try:
        import simprec_capture as sc
    finally:
        sys.path.remove(str(TOOL.parent))
    capture = _capture("h200_run_gpt_fp16")
    names = [(n, tuple(shape)) for n, shape, _ in capture.meta["params"]]
    init = sc.gpt_init(names)
    for name, values in init.items():
        assert np.array_equal(values.view(np.uint32), capture.arrays[f"init__{name}"]), name
    stream = sc.token_stream(512)
    x, y = sc.gpt_batch(stream, 3, 64, 64)
    assert np.array_equal(x, capture.arrays["batch_x"][3])
    assert np.array_equal(y, capture.arrays["batch_y"][3])


def test_tool_capture_on_the_cpu_replays_end_to_end(tmp_path):
    """A CPU dry run of the tool (torch's CPU kernels are not the H200's, so the replay may
    depart): the file loads, every recorded kind is compared, the verdict names a step."""
    pytest.importorskip("torch")
    out = tmp_path / "run.npz"
    subprocess.run([sys.executable, str(TOOL), "--demo", "mlp", "--small", "--device", "cpu",
                    "--steps", "3", "--optimizer", "adam", "--clip", "0.5",
                    "--record-weights", "all", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    capture = load_capture(out)
    assert capture.meta["optimizer"]["path"] == "single"   # torch's default for CPU parameters
    assert capture.meta["model"]["name"] == "mlp"
    report = replay(capture, build_model(capture))
    assert report.checks["loss"][0] == 3 and report.checks["grad_norm"][0] == 3
    assert report.checks["weight"][0] == 18 and report.checks["final"][0] == 6
    assert report.checks["scale"] == [3, 3]   # no overflow: the scale is the same number
    assert report.checks["output"][0] == 5     # step 0: the five layers' outputs compared
    if not report.identical:
        assert report.first.step in (0, 1, 2)


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("args", [
    ["--demo", "mlp", "--optimizer", "adam", "--clip", "0.5", "--init-scale", "4096",
     "--growth-interval", "3"],
    ["--demo", "mlp", "--optimizer", "sgd", "--lr", "0.05", "--path", "single"],
    ["--demo", "mlp", "--optimizer", "adamw", "--autocast", "bf16", "--path", "fused"],
], ids=["adam-clip-fp16", "sgd-single-fp16", "adamw-fused-bf16"])
def test_tool_capture_on_the_gpu_replays_bit_identically(tmp_path, args):
    """The tool on the GPU (an H200: sm_90, what simprec models), then the replay here."""
    out = tmp_path / "run.npz"
    subprocess.run([sys.executable, str(TOOL), *args, "--device", "cuda", "--steps", "20",
                    "--record-weights", "0,19", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    capture = load_capture(out)
    report = replay(capture, build_model(capture))
    assert report.identical, report.first.describe()
    assert report.losses_same == 20 and report.checks["weight"] == [12, 12]


# ------------------------------------------------------------------------------ manual attention


def test_manual_attention_is_causal_and_matches_sdpa_forward_for_power_of_two_scales():
    """With head width 16 the scale 1/4 is a power of two: (q kᵀ)·¼ and (q·½)(kᵀ·½) round
    alike, and fp32 probabilities rounded to fp16 equal fp16 softmax: the forward bits agree
    (the backward does not: test_gpt_with_the_sdpa_composite_departs...)."""
    import simprec as sp
    from simprec import amp, nn

    x = np.random.default_rng(5).standard_normal((2, 6, 32)).astype(np.float32)
    outs = {}
    for kind in ("sdpa", "manual"):
        layer = nn.MultiheadAttention(32, 2, attention=kind, generator=1)
        with amp.autocast(sp.fp16, accumulate="sm90"):
            outs[kind] = layer(sp.tensor(x), causal=True).numpy()
            later = x.copy()
            later[:, 3:] += 1.0                       # the future of position 2 changes
            changed = layer(sp.tensor(later), causal=True).numpy()
        assert np.array_equal(changed[:, :3].view(np.uint32), outs[kind][:, :3].view(np.uint32))
    assert np.array_equal(outs["sdpa"].view(np.uint32), outs["manual"].view(np.uint32))
    with pytest.raises(ValueError, match="attention must be one of"):
        nn.MultiheadAttention(32, 2, attention="flash")
