"""Shared test helpers: where the project's shared data (real-GPU ground truth) lives.

`shared_dir()` is the shared folder: $SIMPREC_SHARED if set, else `<repo>/../shared`; None when
absent. The `load_h200` fixture loads `<shared>/data/h200/<name>.npz` as a dict of arrays
(cached for the session), or skips the test with the reason when the data is not there.
"""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def load_h200():
    """load_h200(name) -> dict of the arrays in <shared>/data/h200/<name>.npz (or skip)."""
    cache: dict[str, dict[str, np.ndarray]] = {}

    def load(name: str) -> dict[str, np.ndarray]:
        if name not in cache:
            root = shared_dir()
            if root is None:
                pytest.skip("shared data not found: set SIMPREC_SHARED or put it at "
                            "<repo>/../shared")
            path = root / "data" / "h200" / f"{name}.npz"
            if not path.is_file():
                pytest.skip(f"H200 ground truth {path} not found")
            with np.load(path) as npz:
                cache[name] = {k: npz[k] for k in npz.files}
        return cache[name]

    return load
