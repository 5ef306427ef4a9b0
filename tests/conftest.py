"""Shared test helpers, and the rule that a test may skip only for a reason named here.

The real-GPU ground truth ships with the repository: `h200_file(name)` is
`tests/data/h200/<name>.npz` (the H200 captures, see tests/data/h200/README.md) and the
`load_h200` fixture loads it as a dict of arrays (packed captures unpacked and checked by
their digests; cached for the session). A missing file fails the test: it never skips.

Skips: `pytest_runtest_makereport` and `pytest_make_collect_report` below turn every skip into a
failure except the allowed ones (docs/testing.md): a test marked `gpu` on a machine without a
CUDA GPU, and a test of an optional dependency in OPTIONAL_IMPORTS that is not installed. So a
run that lost its data, or a test that skips because of the machine it runs on, cannot pass CI.

Comparing training states: `assert_bit_identical(a, b)` holds two nested states equal bit for
bit; `checkpoint_state(run_dir)` reads a run's checkpoint without its wall-clock facts.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
H200 = REPO / "tests" / "data" / "h200"

# module -> why a test may skip when it is absent (pytest.importorskip's reason names it)
OPTIONAL_IMPORTS = {
    "cupy": "CuPy, only on a CUDA machine: the cupy backend's tests are gpu tests",
    "sklearn": "scikit-learn, only to cross-check the shipped digits file (not a dependency)",
    "numba": "numba, the optional `fast` extra (absent on the GPU machine): tests of the "
             "compiled paths' own helpers",
}


def h200_file(name: str) -> Path:
    """The path of tests/data/h200/<name>.npz; fails the calling test when it is absent."""
    path = H200 / f"{name}.npz"
    if not path.is_file():
        pytest.fail(f"H200 ground truth {path} is missing from the checkout")
    return path


@pytest.fixture(scope="session")
def load_h200():
    """load_h200(name) -> dict of the arrays in tests/data/h200/<name>.npz, as captured."""
    from simprec.parity import load_capture

    cache: dict[str, dict[str, np.ndarray]] = {}

    def load(name: str) -> dict[str, np.ndarray]:
        if name not in cache:
            cache[name] = load_capture(h200_file(name))
        return cache[name]

    return load


@pytest.fixture
def pinned_pointwise(monkeypatch):
    """torch.optim's CPU pointwise kernels pinned to the CUDA arithmetic, computed exactly, so
    that a comparison with torch's optimizers is the same on every machine
    (tests/torch_reference.py)."""
    import torch
    from torch_reference import pin_pointwise

    pin_pointwise(monkeypatch, torch)


# ------------------------------------------------------------------------------ the skip rule


def allowed_skip(reason: str, item: pytest.Item | None) -> bool:
    """Whether a skip is one of the allowed ones: a `gpu` test, or a missing optional import
    (pytest.importorskip's reason: "could not import 'package.module': ...")."""
    if item is not None and item.get_closest_marker("gpu") is not None:
        return True
    missing = re.match(r"could not import '([^']+)'", reason)
    return missing is not None and missing.group(1).split(".")[0] in OPTIONAL_IMPORTS


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_instead(report, reason: str) -> None:
    report.outcome = "failed"
    report.longrepr = (f"skip not allowed: {reason!r}. Only gpu tests without a GPU and the "
                       f"optional imports {sorted(OPTIONAL_IMPORTS)} may skip "
                       "(tests/conftest.py, docs/testing.md)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not allowed_skip(reason, item):
            _fail_instead(report, reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if report.skipped:
        reason = _skip_reason(report)
        if not allowed_skip(reason, None):
            _fail_instead(report, reason)


# ------------------------------------------------------------------------------ states


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
