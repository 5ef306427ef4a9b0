"""Checkpoint files: exact round trips, no pickle, atomic writes, corruption detected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from conftest import assert_bit_identical

from simprec.train.checkpoint import (
    META_KEY,
    PAUSE_ENV,
    atomic_write_text,
    checkpoint_path,
    decode_state,
    encode_state,
    find_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from simprec.train.errors import CheckpointError
from simprec.train.rundir import MetricsLog, RunDir, read_metrics


def _state():
    rng = np.random.default_rng(5)
    return {
        "model": {"0.weight": rng.standard_normal((4, 3)).astype(np.float32),
                  "0.bias": np.zeros(4, np.float32)},
        "optimizer": {"state": {0: {"momentum_buffer": np.ones((4, 3), np.float32), "step": 7},
                                1: {"exp_avg": np.full(4, 0.1, np.float32)}},
                      "param_groups": [{"lr": 0.1 + 1e-17, "betas": (0.9, 0.999), "params": [0, 1],
                                        "nesterov": False, "maximize": None}]},
        "scaler": {"scale": np.float32(65536.0), "growth_tracker": np.int32(3),
                   "inf": float("inf"), "ninf": float("-inf"), "nan": float("nan")},
        "rng": np.random.default_rng(1).bit_generator.state,  # 128-bit Python ints
        "bits": np.array([np.nan, -0.0, np.inf, 1e-45], dtype=np.float32),
        "ints": np.arange(5, dtype=np.int64),
        "text": "é ok",
        "nested": [[1, 2.5], {"a": None}],
        "lr": 0.1 * 3,
    }


def test_encode_decode_is_exact():
    state = _state()
    tree, arrays = encode_state(state)
    json.dumps(tree, allow_nan=False)  # the structure is strict JSON
    assert_bit_identical(state, decode_state(json.loads(json.dumps(tree)), arrays))


def test_save_load_roundtrip_without_pickle(tmp_path):
    state = _state()
    path = save_checkpoint(checkpoint_path(tmp_path, 12), state, step=12, extra={"run": "x"})
    assert path.name == "step-00000012.npz"
    loaded, meta = load_checkpoint(path)
    assert_bit_identical(state, loaded)
    assert meta["step"] == 12 and meta["run"] == "x"
    with np.load(path, allow_pickle=False) as z:  # plain npz: readable by anyone, no code run
        assert "model/0.weight" in z.files and META_KEY in z.files
        np.testing.assert_array_equal(z["model/0.weight"], state["model"]["0.weight"])


def test_unstorable_objects_are_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot store"):
        encode_state({"f": lambda: 0})
    with pytest.raises(TypeError, match="object array"):
        encode_state({"a": np.array([1, "x"], dtype=object)})


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty", "not_ours"])
def test_corrupt_checkpoints_raise_checkpoint_error(tmp_path, damage):
    path = save_checkpoint(checkpoint_path(tmp_path, 1), _state(), step=1)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # a byte inside the first array's data: caught by CRC or digest
        with np.load(path) as z:
            key = "model/0.weight"
            raw = z[key].tobytes()
        i = data.find(raw)
        assert i > 0
        data = bytearray(data)
        data[i + 5] ^= 0x40
        path.write_bytes(bytes(data))
    elif damage == "garbage":
        path.write_bytes(os.urandom(300))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        np.savez(path, x=np.zeros(3))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")


def test_digest_detects_swapped_member(tmp_path):
    """A well-formed zip whose array differs from what the header promised."""
    path = save_checkpoint(checkpoint_path(tmp_path, 1), {"a": np.zeros(3)}, step=1)
    with zipfile.ZipFile(path) as z:
        meta = z.read(META_KEY + ".npy")
    other = tmp_path / "other.npz"
    np.savez(other, a=np.ones(3))
    with zipfile.ZipFile(other) as z:
        arr = z.read("a.npy")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(META_KEY + ".npy", meta)
        z.writestr("a.npy", arr)
    with pytest.raises(CheckpointError, match="digest"):
        load_checkpoint(path)


def test_find_and_latest_ignore_temporaries(tmp_path):
    for step in (5, 100, 20):
        save_checkpoint(checkpoint_path(tmp_path, step), {"s": step}, step=step)
    (tmp_path / ".step-00000200.npz.tmp-123").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("x")
    assert [s for s, _ in find_checkpoints(tmp_path)] == [5, 20, 100]
    assert latest_checkpoint(tmp_path).name == "step-00000100.npz"
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".step-00000200.npz.tmp-123"]


def test_kill_during_write_leaves_old_file_intact(tmp_path):
    """SIGKILL while the writer sleeps halfway: the final name keeps the previous content."""
    path = checkpoint_path(tmp_path, 3)
    save_checkpoint(path, {"v": np.arange(3)}, step=3)
    code = ("import numpy as np, sys; from simprec.train.checkpoint import save_checkpoint;"
            f"save_checkpoint({str(path)!r}, {{'v': np.arange(100000)}}, step=3)")
    env = dict(os.environ, **{PAUSE_ENV: "30"})
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.time() + 20
    while time.time() < deadline and not any(p.name.startswith(".") for p in tmp_path.iterdir()):
        time.sleep(0.02)
    time.sleep(0.1)
    proc.kill()
    proc.wait()
    assert any(".tmp-" in p.name for p in tmp_path.iterdir()), "the kill did not land mid-write"
    state, _ = load_checkpoint(path)
    np.testing.assert_array_equal(state["v"], np.arange(3))
    assert [s for s, _ in find_checkpoints(tmp_path)] == [3]


def test_atomic_write_text_replaces(tmp_path):
    p = tmp_path / "c.json"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.json"]


def test_metrics_truncate_after(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in range(1, 6):
        loss = float("nan") if step == 2 else 1.0 / step
        log.write({"kind": "train", "step": step, "loss": loss})
    log.write({"kind": "eval", "step": 4, "accuracy": 0.5})
    log.sync()
    log.close()
    with open(path, "a") as f:
        f.write('{"kind": "train", "st')  # half a line: a kill in mid-write
    assert MetricsLog.truncate_after(path, 4) == 5
    recs = read_metrics(tmp_path)
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 4]
    assert recs[1]["loss"] == "nan"  # strict JSON: non-finite floats as strings
    assert [r["step"] for r in read_metrics(tmp_path, "eval")] == [4]


def test_rundir_create_is_atomic(tmp_path):
    target = tmp_path / "runs" / "a"

    def populate(rd):
        rd.config.write_text("{}")

    rd = RunDir.create(target, populate)
    assert rd.exists() and (target / "checkpoints").is_dir()

    def fail(rd):
        rd.config.write_text("{}")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        RunDir.create(tmp_path / "runs" / "b", fail)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["a"]
