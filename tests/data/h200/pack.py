"""Pack capture.py's raw elementwise_dev.npz for the repository, losslessly (13.4 MB -> 11 MB).

    python tests/data/h200/pack.py RAW_DIR [OUT_DIR]     (OUT_DIR defaults to this folder)

Two kinds of array cost space without carrying information a test needs to store:
- ``x_all`` and ``xb_all`` are every 16-bit pattern in order (``arange(65536)``): left out,
  rebuilt on load;
- ``f32_to_bf16``, the casts of 1,000,000 random fp32 patterns, is incompressible as it is but
  almost equal to the top half of each input: stored as the residual ``(out - (in >> 16))``
  modulo 2**16 (mostly 0 or 1), which compresses ten-fold.
The ``packing`` entry records each rule and the SHA-256 of the original array;
``simprec.parity.load_capture`` rebuilds the arrays and checks those digests, so the packed file
reads back bit for bit as the raw one. matmul_dev.npz and amp_trace_dev.npz are kept as the GPU
wrote them (their SHA-256 are in README.md). Needs only NumPy (no GPU).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
KEPT_AS_CAPTURED = ("matmul_dev.npz", "amp_trace_dev.npz")


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(a.tobytes()).hexdigest()


def pack_elementwise(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of a packed elementwise_dev.npz (see the module docstring)."""
    out = dict(raw)
    packing = {}
    for name in ("x_all", "xb_all"):
        value = out.pop(name)
        assert np.array_equal(value, np.arange(65536, dtype=np.uint16)), name
        packing[name] = {"rule": "arange", "size": 65536, "dtype": "uint16",
                         "sha256": _sha(value)}
    value = out.pop("f32_to_bf16")
    out["f32_to_bf16_residual"] = (value - (raw["f32_bits"] >> 16).astype(np.uint16)).astype(
        np.uint16)
    packing["f32_to_bf16"] = {"rule": "residual_hi16", "source": "f32_bits",
                              "sha256": _sha(value)}
    out["packing"] = np.array(json.dumps(packing))
    return out


def main(raw_dir: str, out_dir: str = str(HERE)) -> None:
    raw_dir, out = Path(raw_dir), Path(out_dir)
    sys.path.insert(0, str(HERE.parents[2]))  # the checkout, for simprec.parity.load_capture
    from simprec.parity import load_capture

    with np.load(raw_dir / "elementwise_dev.npz") as npz:
        raw = {k: npz[k] for k in npz.files}
    np.savez_compressed(out / "elementwise_dev.npz", **pack_elementwise(raw))
    back = load_capture(out / "elementwise_dev.npz")
    assert set(back) == set(raw) and all(np.array_equal(back[k], raw[k]) for k in raw)
    for name in KEPT_AS_CAPTURED:
        if (raw_dir / name).resolve() != (out / name).resolve():
            shutil.copyfile(raw_dir / name, out / name)
    for name in ("elementwise_dev.npz", *KEPT_AS_CAPTURED):
        print(f"{hashlib.sha256((out / name).read_bytes()).hexdigest()}  {name}")


if __name__ == "__main__":
    main(*sys.argv[1:])
