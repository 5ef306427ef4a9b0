"""Compare the final checkpoints and train metrics of simprec runs, bit for bit.

    python scripts/compare_runs.py RUN_A RUN_B [RUN_C RUN_D ...]     # pairs: A~B, C~D, ...

For each pair: the number of state arrays that are bit-identical, the differing ones (with their
count of differing elements), and whether every logged loss and scale is equal. Exit code 0 when
every pair is identical.
"""

from __future__ import annotations

import sys

import numpy as np

from simprec.train import read_metrics
from simprec.train.checkpoint import find_checkpoints, load_checkpoint


def _flatten(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{path}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _flatten(v, f"{path}/{i}")
    else:
        yield path, obj


def _state(run):
    state, _ = load_checkpoint(find_checkpoints(f"{run}/checkpoints")[-1][1])
    for key in ("elapsed", "resumes"):
        state.pop(key, None)
    return dict(_flatten(state))


def compare(a, b) -> bool:
    sa, sb = _state(a), _state(b)
    same, differ = 0, []
    for key in sorted(set(sa) | set(sb)):
        x, y = sa.get(key), sb.get(key)
        if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
            if x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes():
                same += 1
            else:
                n = int((x != y).sum()) if x.shape == y.shape else -1
                differ.append(f"{key} ({n} of {x.size} elements)")
        elif x == y or (isinstance(x, float) and x != x and y != y):
            same += 1
        else:
            differ.append(f"{key} ({x!r} != {y!r})")
    la = [(m["step"], m["loss"], m["scale"]) for m in read_metrics(a, "train")]
    lb = [(m["step"], m["loss"], m["scale"]) for m in read_metrics(b, "train")]
    print(f"{a} ~ {b}: {same} state entries bit-identical, {len(differ)} differ; "
          f"train losses/scales {'identical' if la == lb else 'DIFFER'} ({len(la)} steps)")
    for d in differ[:20]:
        print("   ", d)
    return not differ and la == lb


if __name__ == "__main__":
    runs = sys.argv[1:]
    if len(runs) < 2 or len(runs) % 2:
        sys.exit(__doc__)
    ok = all([compare(runs[i], runs[i + 1]) for i in range(0, len(runs), 2)])
    sys.exit(0 if ok else 1)
