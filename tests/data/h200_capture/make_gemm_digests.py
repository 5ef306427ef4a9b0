"""Build h200_gemm_digests.json from the raw GEMM captures (kept outside the repo):

    PYTHONPATH=. python tests/data/h200_capture/make_gemm_digests.py CAPTURE_DIR

For every case of h200_gemm_{f16,bf16,big}.npz: the SHA-256 digest (16 hex digits) of the
H200's output bits, and for the cases simprec's kernel-choice map does not reproduce, the
number of differing values (the test keeps that list honest: they must still differ)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gemm_cases import digest, model_bits, parse  # noqa: E402


def main(src: str) -> None:
    cases, unexplained = {}, {}
    for name, dtype in (("f16", "f16"), ("bf16", "bf16"), ("big", None)):
        d = np.load(os.path.join(src, f"h200_gemm_{name}.npz"))
        for key in d.files:
            if key == "meta":
                continue
            op, kdt, dims = parse(key)
            kdt = kdt or dtype
            case = f"{op}__{kdt}__{'_'.join(map(str, dims))}"
            want = d[key].reshape(-1)
            cases[case] = digest(want)
            diff = int((model_bits(op, kdt, dims) != want).sum())
            if diff:
                unexplained[case] = diff
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "h200_gemm_digests.json")
    with open(out, "w") as f:
        json.dump({"cases": cases, "unexplained": unexplained}, f, indent=0, sort_keys=True)
    print(f"{out}: {len(cases)} cases, {len(unexplained)} not reproduced, "
          f"{sum(unexplained.values())} values")


if __name__ == "__main__":
    main(sys.argv[1])
