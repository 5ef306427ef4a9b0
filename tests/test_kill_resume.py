"""Kill test: `simprec train` killed with SIGKILL at random moments, resumed, ends bit-identical.

A reference run goes uninterrupted in one process. The victim run, with the same options, is
started in a subprocess and killed with SIGKILL again and again, at moments chosen to land

* during start-up (imports, building, creating the run directory),
* in the middle of training (after the process has written a new metrics line),
* inside a checkpoint write (``SIMPREC_TEST_CHECKPOINT_PAUSE`` makes the writer sleep halfway
  through the temporary file; the test waits for that file to appear, then kills),

and restarted after each kill (``--resume`` when the run directory exists, a fresh start with the
same ``--out`` when the kill came before the directory appeared). After every kill the run
directory must be readable: a valid config, a checkpoint that loads, metrics lines that parse.
At the end, the final checkpoints (model, optimizer, scheduler, loss scaler, data order, random
state), the metrics (all but wall-clock seconds) and the summaries must be identical, bit for bit.

The dynamic loss scale is made to grow every 4 steps, so the run also goes through overflowing
(skipped) steps and back-offs: the scaler's state is part of what must survive the kills.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_bit_identical, checkpoint_state

from simprec.train.checkpoint import PAUSE_ENV, find_checkpoints, load_checkpoint

STEPS = 150
ARGS = ["train", "--model-opt", "hidden=[64,64]", "--steps", str(STEPS), "--batch-size", "32",
        "--eval-every", "25", "--checkpoint-every", "4", "--recipe", "amp-fp16",
        "--recipe-opt", "growth_interval=4", "--seed", "3", "-q"]
TIMEOUT = 300


def _env(pause: float | None = None) -> dict:
    env = dict(os.environ)
    env.pop(PAUSE_ENV, None)
    if pause is not None:
        env[PAUSE_ENV] = str(pause)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def _cmd(out: Path, resume: bool) -> list[str]:
    if resume:
        return [sys.executable, "-m", "simprec", "train", "--resume", str(out), "-q"]
    return [sys.executable, "-m", "simprec", *ARGS, "--out", str(out)]


def _metric_lines(run: Path) -> int:
    try:
        return (run / "metrics.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _temporaries(root: Path, pid: int) -> list[Path]:
    """Files process `pid` is writing: a checkpoint in the run's checkpoints, or one in the run
    directory it is creating (temporary names end in the writer's pid)."""
    found = []
    for d in [root / "run" / "checkpoints", root / f".run.tmp-{pid}" / "checkpoints"]:
        if d.is_dir():
            found += [p for p in d.iterdir() if p.name.endswith(f".tmp-{pid}")]
    return found


def _check_readable(run: Path) -> None:
    """What a kill may never leave: a run directory that cannot be read or resumed."""
    if not run.exists():
        return
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == STEPS
    found = find_checkpoints(run / "checkpoints")
    assert found, "a run directory without a checkpoint"
    load_checkpoint(found[-1][1])
    text = (run / "metrics.jsonl").read_text()
    lines = text.split("\n")
    for line in lines[:-1]:  # every complete line parses; the last may be cut by the kill
        json.loads(line)


def _wait(pred, proc, limit=60.0, poll=0.002) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    return False


def _final_state(run: Path):
    assert find_checkpoints(run / "checkpoints")[-1][0] == STEPS
    return checkpoint_state(run)


def _metrics_without_time(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec.pop("seconds")
        out.append(rec)
    return out


def _assert_same_run(ref: Path, run: Path) -> None:
    assert_bit_identical(_final_state(ref), _final_state(run))
    assert _metrics_without_time(ref) == _metrics_without_time(run)
    s_ref = json.loads((ref / "summary.json").read_text())
    s_run = json.loads((run / "summary.json").read_text())
    for key in ("test_accuracy", "test_loss", "train_loss", "skipped_steps", "final_scale",
                "steps_done"):
        assert s_ref[key] == s_run[key], key


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    ref = tmp_path_factory.mktemp("ref") / "run"
    proc = subprocess.run(_cmd(ref, False), env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    metrics = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    assert any(m.get("skipped") for m in metrics), "the run should include skipped steps"
    return ref


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, reference):
    rng = random.Random(20261128)
    run = tmp_path / "run"
    # start-up kills, kills inside checkpoint writes, kills in the middle of training
    plan = ["startup", "checkpoint", "training", "checkpoint", "training", "training",
            "startup", "checkpoint", "training"]
    landed = {"checkpoint": 0, "training": 0, "startup": 0, "creating": 0}
    attempts = 0
    for mode in plan + [None]:
        attempts += 1
        assert attempts < 40
        resume = (run / "config.json").exists()
        pause = 0.4 if mode == "checkpoint" else None
        before = _metric_lines(run)
        proc = subprocess.Popen(_cmd(run, resume), env=_env(pause), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            if mode is None:  # the last attempt runs to the end
                _, err = proc.communicate(timeout=TIMEOUT)
                assert proc.returncode == 0, err.decode()
                break
            if mode == "startup":
                time.sleep(rng.uniform(0.0, 0.8))
            elif mode == "checkpoint":
                hit = _wait(lambda pid=proc.pid: bool(_temporaries(tmp_path, pid)), proc)
                if hit:
                    landed["checkpoint" if resume or run.exists() else "creating"] += 1
                time.sleep(rng.uniform(0.0, 0.2))
            else:
                _wait(lambda n=before: _metric_lines(run) > n + 1, proc)
                time.sleep(rng.uniform(0.0, 0.05))
            if proc.poll() is None:
                landed[mode] += mode != "checkpoint"
                proc.kill()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
        if proc.returncode == 0 and (run / "summary.json").exists():
            break  # finished before the kill (a slow start); nothing left to interrupt
        assert proc.returncode in (-signal.SIGKILL, 0), proc.returncode
        _check_readable(run)
    print(f"kills landed: {landed}, attempts: {attempts}")
    assert landed["checkpoint"] + landed["creating"] >= 2, landed
    assert landed["training"] >= 2, landed
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not hidden, f"temporary run directories left behind: {hidden}"
    _assert_same_run(reference, run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumes"] >= 1  # resumes that lived to write a checkpoint


@pytest.mark.slow
def test_ctrl_c_checkpoints_then_resume_is_bit_identical(tmp_path, reference):
    """Ctrl-C is sent while the run sleeps inside a checkpoint write (the pause hook), so that
    it lands before the end of the run however fast the machine is."""
    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(run, False), env=_env(pause=0.3), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        assert _wait(lambda: _metric_lines(run) > 8 and _temporaries(tmp_path, proc.pid), proc), \
            "the run did not start"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    last_step = max(json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines())
    # a checkpoint where it stopped
    assert find_checkpoints(run / "checkpoints")[-1][0] == last_step < STEPS
    assert not (run / "summary.json").exists()
    done = subprocess.run(_cmd(run, True), env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    _assert_same_run(reference, run)
