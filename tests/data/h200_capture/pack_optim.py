"""Condense the H200 optimizer captures (h200_optim_*.npz, 24 MB) into what the CI test needs
(h200_optim_digests.npz, small): per captured array (parameters after steps 1, 2, 100, state
after steps 1, 100) its SHA-256, plus the bits of the two smallest parameters (p0, p1: 8
values) after steps 1 and 2 for diagnostics, and each file's meta. Inputs are not stored: the
test regenerates them from `capture_optim.init_params` / `step_grads` and checks them against
the captures' `grads_sha` and `init__p*` digests.

    python tests/data/h200_capture/pack_optim.py CAPTURE_DIR
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "h200_optim_digests.npz")
SMALL = ("__p0__", "__p1__")


def main(capture_dir: str) -> None:
    arrays = {}
    for opt in ("sgd", "adam", "adamw"):
        for dt in ("f32", "f16"):
            name = f"{opt}_{dt}"
            d = np.load(os.path.join(capture_dir, f"h200_optim_{name}.npz"))
            arrays[f"{name}::meta"] = np.array(str(d["meta"]))
            keys = sorted(k for k in d.files if k != "meta")
            digests = [hashlib.sha256(np.ascontiguousarray(d[k]).tobytes()).hexdigest()
                       for k in keys]
            arrays[f"{name}::keys"] = np.array(keys)
            arrays[f"{name}::sha"] = np.array(digests)
            for k in keys:
                if any(s in k for s in SMALL) and k.endswith(("__step1", "__step2")):
                    arrays[f"{name}::{k}"] = d[k]
            arrays[f"{name}::grads_sha"] = d["grads_sha"]
    np.savez_compressed(OUT, **arrays)
    print(OUT, os.path.getsize(OUT), "bytes;",
          json.dumps({k: int(v.size) for k, v in arrays.items() if k.endswith("::keys")}))


if __name__ == "__main__":
    main(sys.argv[1])
