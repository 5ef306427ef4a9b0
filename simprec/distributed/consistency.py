"""Refuse at start a rank that would train something else: fingerprints compared across ranks.

Each rank hashes what decides its numbers — the resolved configuration, the dataset, the
starting state (step, weights, optimizer and scaler state: a fresh run's initial weights, or
the checkpoint a resume loaded), the run directory, the world size, simprec's version and the
backend — and all ranks exchange the digests (one all-gather of a few bytes). A rank whose
digest differs from rank 0's makes *every* rank stop with the same message, naming the ranks
and what differs, before anything is written.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from ..train.errors import ConfigError

__all__ = ["InconsistentRanksError", "fingerprint", "check_ranks_agree"]

ITEMS = ("configuration", "dataset", "starting state", "run directory", "world and software")
_DIGEST_BYTES = 8


class InconsistentRanksError(ConfigError):
    """The ranks of a data-parallel job were not started on the same run (the command line
    reports it in one line, as any configuration error)."""


def _hash(obj) -> bytes:
    h = hashlib.sha256()
    if isinstance(obj, (bytes, bytearray)):
        h.update(obj)
    else:
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())
    return h.digest()[:_DIGEST_BYTES]


def state_digest(state) -> bytes:
    """A digest of a nested training state (arrays by their bytes, the rest as JSON)."""
    from ..train.checkpoint import encode_state

    tree, arrays = encode_state(state)
    h = hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode())
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.digest()[:_DIGEST_BYTES]


def fingerprint(trainer, world_size: int) -> np.ndarray:
    """This rank's digests, one per item of :data:`ITEMS`, as a uint8 array."""
    from .. import __version__

    config = trainer.config.to_dict()
    for key in ("record", "keep_checkpoints", "eval_every"):  # not the numbers
        config.pop(key, None)
    data = {k: v for k, v in trainer.dataset.meta.items()
            if not isinstance(v, np.ndarray) and k != "vocab"}
    parts = [
        _hash(config),
        _hash(data),
        state_digest(trainer.state_dict() | {"elapsed": 0.0, "resumes": 0}),
        _hash(str(trainer.run_dir.path.resolve())),
        _hash({"world_size": world_size, "simprec": __version__, "numpy": np.__version__,
               "backend": trainer.config.backend}),
    ]
    return np.frombuffer(b"".join(parts), dtype=np.uint8).copy()


def check_ranks_agree(trainer, collectives) -> None:
    """Raise :class:`InconsistentRanksError` on every rank unless all fingerprints agree."""
    mine = fingerprint(trainer, collectives.world_size)
    everyone = collectives.all_gather_host(mine)
    reference = everyone[0].reshape(len(ITEMS), _DIGEST_BYTES)
    problems = []
    for rank, fp in enumerate(everyone[1:], start=1):
        rows = fp.reshape(len(ITEMS), _DIGEST_BYTES)
        differ = [ITEMS[i] for i in range(len(ITEMS)) if not np.array_equal(rows[i], reference[i])]
        if differ:
            problems.append(f"rank {rank} ({', '.join(differ)})")
    if problems:
        raise InconsistentRanksError(
            "data parallelism: these ranks were started on something else than rank 0: "
            + "; ".join(problems) + ". Start every rank with the same command, options, data "
            "and simprec version (and the same --out or --resume directory)")
