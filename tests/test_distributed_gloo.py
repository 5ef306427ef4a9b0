"""Data parallelism across processes on gloo (CPU): the real job against ``--simulate-ranks``.

* 2 processes (started with torchrun's variables: RANK, WORLD_SIZE, MASTER_ADDR, ...) train the
  MLP (pure-fp16: fp16 gradients travel) and the tiny GPT (amp-fp16: fp32 master gradients
  travel) for 50 steps, in small buckets; the run equals, bit for bit, the same command with
  ``--simulate-ranks 2`` in one process — weights, optimizer and scaler state, every loss;
* a rank started with another option is refused at start, on every rank, with a message;
* ``torchrun``: a rank killed with SIGKILL in the middle of a checkpoint write ends the whole
  job within 60 s, the last checkpoint loads, and ``--resume`` on 2 processes ends with the
  uninterrupted run's state, bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, assert_bit_identical, checkpoint_state

from simprec.cli import main
from simprec.train import read_metrics
from simprec.train.checkpoint import PAUSE_ENV, find_checkpoints, load_checkpoint

# The backends the 2-process runs are held against their simulation on (a backend joins with
# its name); the fault tests (refusal, SIGKILL) exercise the job machinery, the same for every
# backend, on the reference alone to keep CI short.
BACKENDS = ["numpy", "torch:cpu"]
FAULT_BACKENDS = ["numpy"]

STEPS = 50
CASES = {
    "mlp-pure-fp16": ["--model", "mlp", "--model-opt", "hidden=[64,64]", "--batch-size", "32",
                      "--recipe", "pure-fp16"],
    "gpt-amp-fp16": ["--model", "gpt", "--model-opt", "n_layer=1", "--model-opt", "n_embd=32",
                     "--model-opt", "n_head=2", "--block-size", "16", "--batch-size", "8",
                     "--recipe", "amp-fp16"],
}
TIMEOUT = 300
_simulated: dict = {}


def _args(case: str, backend: str, *extra: str) -> list[str]:
    return ["train", *CASES[case], "--backend", backend, "--steps", str(STEPS),
            "--eval-every", "0", "--checkpoint-every", "0", "-q", *extra]


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", PAUSE_ENV):
        env.pop(key, None)
    env.update(extra)
    paths = [str(REPO), str(REPO / "backends"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(n: int, argv: list[str], per_rank: dict | None = None) -> list[subprocess.Popen]:
    """``n`` processes of ``python -m simprec ARGV`` with the variables torchrun sets."""
    port = str(_free_port())
    procs = []
    for rank in range(n):
        env = _env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(n),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        cmd = [sys.executable, "-m", "simprec", *argv, *(per_rank or {}).get(rank, [])]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def _finish(procs) -> list[tuple[int, str]]:
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append((p.returncode, out + err))
    return results


def _simulated_run(case: str, backend: str, tmp_root: Path) -> Path:
    """The ``--simulate-ranks 2`` run of a case (one per case and backend, in-process)."""
    key = (case, backend)
    if key not in _simulated:
        out = tmp_root / f"sim-{case}-{backend.replace(':', '_')}"
        assert main([*_args(case, backend), "--simulate-ranks", "2", "--out", str(out)]) == 0
        _simulated[key] = out
    return _simulated[key]


WALL_CLOCK = {"seconds", "samples_per_s", "tokens_per_s", "mfu"}


def _train_lines(run: Path) -> list[dict]:
    """The train lines of metrics.jsonl without their wall-clock facts."""
    return [{k: v for k, v in m.items() if k not in WALL_CLOCK}
            for m in read_metrics(run, "train")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_two_gloo_processes_equal_simulated_ranks_bit_for_bit(case, backend, tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    run = tmp_path_factory.mktemp("gloo") / "run"
    results = _finish(_launch(2, [*_args(case, backend, "--bucket-cap-mb", "0.01"),
                                  "--out", str(run)]))
    for rank, (code, output) in enumerate(results):
        assert code == 0, f"rank {rank}:\n{output[-3000:]}"
    sim = _simulated_run(case, backend, root)
    assert_bit_identical(checkpoint_state(run), checkpoint_state(sim))
    lines = _train_lines(run)
    assert len(lines) == STEPS and lines == _train_lines(sim)
    for rank in range(2):
        log = [json.loads(x) for x in (run / "ranks" / f"rank-{rank}.jsonl").read_text()
               .splitlines()]
        assert log[-1]["step"] == STEPS and sum(x["steps"] for x in log) == STEPS
        assert all(0 <= x["comm_wait_share"] <= 1 and x["examples_per_second"] > 0
                   for x in log)


@pytest.mark.parametrize("backend", FAULT_BACKENDS)
def test_a_rank_with_another_configuration_is_refused_on_every_rank(backend, tmp_path):
    run = tmp_path / "run"
    procs = _launch(2, [*_args("mlp-pure-fp16", backend), "--out", str(run)],
                    per_rank={1: ["--lr", "0.05"]})
    for code, output in _finish(procs):
        assert code != 0
        assert "rank 1 (configuration, starting state)" in output, output[-2000:]
    assert not run.exists()


def _wait_for(predicate, proc, what: str, timeout: float = TIMEOUT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"torchrun ended (code {proc.returncode}) before {what}:\n"
                                 + proc.communicate()[0][-3000:])
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("backend", FAULT_BACKENDS)
def test_sigkill_of_a_rank_ends_the_torchrun_job_and_resume_is_bit_identical(backend, tmp_path,
                                                                             tmp_path_factory):
    run = tmp_path / "run"
    argv = [*_args("mlp-pure-fp16", backend), "--checkpoint-every", "10", "--out", str(run)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), "-m", "simprec", *argv[1:]]
    cmd.insert(cmd.index("-m", 3) + 2, "train")
    torchrun = subprocess.Popen(cmd, env=_env(**{PAUSE_ENV: "1.5"}), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        # rank 0 is inside the step-20 checkpoint write (paused halfway), rank 1 waits for it
        ckpts = run / "checkpoints"
        _wait_for(lambda: ckpts.is_dir() and any(p.name.startswith(".step-00000020.npz.tmp")
                                                 for p in ckpts.iterdir()),
                  torchrun, "the step-20 checkpoint write")
        log = run / "ranks" / "rank-1.jsonl"
        pid = _wait_for(lambda: log.is_file() and log.read_text().strip()
                        and json.loads(log.read_text().splitlines()[0])["pid"],
                        torchrun, "rank 1's log")
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        output, _ = torchrun.communicate(timeout=60)
        ended = time.monotonic() - killed
    finally:
        if torchrun.poll() is None:
            torchrun.kill()
            torchrun.communicate()
    assert torchrun.returncode != 0, output[-3000:]
    assert ended < 60
    steps = [s for s, _ in find_checkpoints(run / "checkpoints")]
    assert steps[-1] in (10, 20), steps
    state, meta = load_checkpoint(find_checkpoints(run / "checkpoints")[-1][1])
    assert state["step"] == steps[-1]

    results = _finish(_launch(2, ["train", "--resume", str(run), "-q"]))
    for rank, (code, out) in enumerate(results):
        assert code == 0, f"rank {rank}:\n{out[-3000:]}"
    sim = _simulated_run("mlp-pure-fp16", backend, tmp_path_factory.getbasetemp())
    assert_bit_identical(checkpoint_state(run), checkpoint_state(sim))
    assert _train_lines(run) == _train_lines(sim)
