"""Shared test helpers.

Where the project's shared data (real-GPU ground truth) lives: `shared_dir()` is the shared
folder, $SIMPREC_SHARED if set, else `<repo>/../shared`; None when absent. `h200_file(name)` is
`<shared>/data/h200/<name>.npz`, or skips the test with the reason when it is not there. The
`load_h200` fixture loads that file as a dict of arrays (cached for the session).

Comparing training states: `assert_bit_identical(a, b)` holds two nested states equal bit for
bit; `checkpoint_state(run_dir)` reads a run's checkpoint without its wall-clock facts.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """The shared data folder ($SIMPREC_SHARED, else <repo>/../shared), or None if absent."""
    env = os.environ.get("SIMPREC_SHARED")
    path = Path(env) if env else REPO.parent / "shared"
    return path if path.is_dir() else None


def h200_file(name: str) -> Path:
    """The path of <shared>/data/h200/<name>.npz; skips the calling test when it is absent."""
    root = shared_dir()
    if root is None:
        pytest.skip("shared data not found: set SIMPREC_SHARED or put it at <repo>/../shared")
    path = root / "data" / "h200" / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"H200 ground truth {path} not found")
    return path


@pytest.fixture(scope="session")
def load_h200():
    """load_h200(name) -> dict of the arrays in <shared>/data/h200/<name>.npz (or skip)."""
    cache: dict[str, dict[str, np.ndarray]] = {}

    def load(name: str) -> dict[str, np.ndarray]:
        if name not in cache:
            with np.load(h200_file(name)) as npz:
                cache[name] = {k: npz[k] for k in npz.files}
        return cache[name]

    return load


def assert_bit_identical(a, b, path: str = "state") -> None:
    """Nested states (dicts, lists, tuples, arrays, NumPy scalars, numbers, strings) are equal
    bit for bit: same types, the same keys in the same order, arrays of the same dtype, shape and
    bytes; a NaN float equals a NaN float."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, path
        assert a.tobytes() == b.tobytes(), f"{path} differs"
    elif isinstance(a, np.generic):
        assert type(a) is type(b) and a.tobytes() == b.tobytes(), f"{path}: {a!r} != {b!r}"
    elif isinstance(a, float):
        assert isinstance(b, float), f"{path}: {a!r} != {b!r}"
        assert (math.isnan(a) and math.isnan(b)) or a == b, f"{path}: {a!r} != {b!r}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{path}: keys differ"
        for key_a, key_b in zip(a, b, strict=True):
            assert type(key_a) is type(key_b), f"{path}: key {key_a!r}"
            assert_bit_identical(a[key_a], b[key_b], f"{path}/{key_a}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_bit_identical(x, y, f"{path}/{i}")
    else:
        assert a == b and type(a) is type(b), f"{path}: {a!r} != {b!r}"


def checkpoint_state(run_dir, step: int | None = None) -> dict:
    """The state in a run's newest checkpoint (or the one of `step`), without the wall-clock
    facts (`elapsed`, `resumes`) that differ between two runs of equal numbers."""
    from simprec.train.checkpoint import find_checkpoints, load_checkpoint

    found = find_checkpoints(Path(run_dir) / "checkpoints")
    state, _ = load_checkpoint(found[-1][1] if step is None else dict(found)[step])
    for key in ("elapsed", "resumes"):
        state.pop(key)
    return state
