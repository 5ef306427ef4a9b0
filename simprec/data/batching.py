"""Seeded minibatch streams whose state can be saved and restored exactly.

Two kinds of stream, both resumable from a checkpoint so that a resumed run sees exactly the
batches an uninterrupted run would have seen:

* :class:`BatchIterator` walks a dataset in epochs, each epoch a fresh shuffle. The order of an
  epoch is a pure function of ``(seed, epoch)`` (:func:`epoch_order`), so the whole state is a
  handful of ints: no generator state and no permutation need to be stored.
* :class:`LMBatchSampler` draws random windows of ``block_size + 1`` tokens from a token array
  (language-model batches: inputs and the next-token targets). It keeps one PCG64 generator,
  whose state is saved as plain ints and decimal strings (PCG64's 128-bit words do not fit an
  int64).

Each ``state_dict()`` is a flat ``dict`` of ``int`` and ``str`` values: JSON-able as it is, and
storable in an ``.npz`` without pickle. ``load_state_dict`` accepts the values back as Python
scalars or as the 0-d arrays that ``np.load`` returns.

The streams are deterministic for a given NumPy version: NumPy does not promise that
``Generator.permutation``/``integers`` produce the same stream across versions (NEP 19).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

__all__ = [
    "BatchIterator", "LMBatchSampler", "batches", "epoch_order", "sequential_windows",
]


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The order (int64 indices) in which epoch ``epoch`` visits ``n`` examples.

    A permutation drawn from a generator seeded with ``SeedSequence([seed, epoch])``, or
    ``arange(n)`` when ``shuffle`` is false.
    """
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(epoch)])
    return rng.permutation(n).astype(np.int64, copy=False)


def _as_arrays(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    if isinstance(arrays, np.ndarray):
        raise TypeError("pass a sequence of arrays, e.g. (x, y), not a single array")
    arrays = tuple(np.asarray(a) for a in arrays)
    if not arrays:
        raise ValueError("need at least one array")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"arrays differ in length: {[len(a) for a in arrays]}")
    return arrays


def batches(
    arrays: Sequence[np.ndarray], batch_size: int, *, seed: int = 0, epoch: int = 0,
    shuffle: bool = True, drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, ...]]:
    """The minibatches of one epoch: tuples ``(a[idx] for a in arrays)``, stateless.

    The same batches that :class:`BatchIterator` yields for that ``seed`` and ``epoch``.
    """
    arrays = _as_arrays(arrays)
    n = len(arrays[0])
    order = epoch_order(n, seed, epoch, shuffle)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield tuple(a[idx] for a in arrays)


def _scalar(v, kind):
    """A state value back as a Python int/str (it may be a 0-d array from ``np.load``)."""
    v = v.item() if isinstance(v, np.ndarray) else v
    return kind(v)


def _check_matches(state: dict, expected: dict, what: str) -> None:
    """ValueError unless every ``state[key]`` equals the int ``expected[key]``."""
    for key, have in expected.items():
        if _scalar(state[key], int) != have:
            raise ValueError(f"state has {key}={_scalar(state[key], int)}, this {what} {have}")


class BatchIterator:
    """Seeded epoch-wise minibatches over ``arrays`` (equal first dimensions), resumable.

    ``for xb, yb in it:`` yields the batches left in the current epoch, then the epoch counter
    advances, so ``for epoch in ...: for xb, yb in it: ...`` works and, after a resume
    mid-epoch, finishes that epoch first. ``it.next_batch()`` crosses epoch boundaries by itself.
    The last batch of an epoch is shorter unless ``drop_last``.
    """

    def __init__(
        self, arrays: Sequence[np.ndarray], batch_size: int, *, seed: int = 0,
        shuffle: bool = True, drop_last: bool = False,
    ):
        self.arrays = _as_arrays(arrays)
        self.n = len(self.arrays[0])
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self.n == 0 or (drop_last and self.n < batch_size):
            raise ValueError(f"{self.n} examples make no batch of {batch_size}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.position = 0  # examples of the current epoch already delivered
        self._order_epoch = None
        self._order = None

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def _epoch_order(self) -> np.ndarray:
        if self._order_epoch != (self.seed, self.epoch):
            self._order = epoch_order(self.n, self.seed, self.epoch, self.shuffle)
            self._order_epoch = (self.seed, self.epoch)
        return self._order

    def next_batch(self) -> tuple[np.ndarray, ...]:
        """The next batch; moves to the next epoch after an epoch's last batch."""
        stop = min(self.position + self.batch_size, self.n)
        idx = self._epoch_order()[self.position:stop]
        remaining = self.n - stop
        if remaining == 0 or (self.drop_last and remaining < self.batch_size):
            self.epoch, self.position = self.epoch + 1, 0
        else:
            self.position = stop
        return tuple(a[idx] for a in self.arrays)

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        epoch = self.epoch
        while self.epoch == epoch:
            yield self.next_batch()

    def state_dict(self) -> dict:
        """Plain ints: where the stream stands (``seed, epoch, position``) and its shape."""
        return {
            "n": self.n, "batch_size": self.batch_size, "shuffle": int(self.shuffle),
            "drop_last": int(self.drop_last), "seed": self.seed, "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore ``seed, epoch, position``; the data size and batching options must match."""
        _check_matches(state, {key: int(getattr(self, key))
                               for key in ("n", "batch_size", "shuffle", "drop_last")}, "iterator")
        position = _scalar(state["position"], int)
        if not 0 <= position < self.n:
            raise ValueError(f"position {position} out of range for {self.n} examples")
        self.seed = _scalar(state["seed"], int)
        self.epoch = _scalar(state["epoch"], int)
        self.position = position


def _generator_state(rng: np.random.Generator) -> dict:
    """A PCG64 generator's state as flat ints and strings (the 128-bit words as decimal)."""
    s = rng.bit_generator.state
    if s["bit_generator"] != "PCG64":
        raise TypeError(f"only PCG64 is supported, got {s['bit_generator']}")
    return {
        "bit_generator": "PCG64", "rng_state": str(s["state"]["state"]),
        "rng_inc": str(s["state"]["inc"]), "rng_has_uint32": int(s["has_uint32"]),
        "rng_uinteger": int(s["uinteger"]),
    }


def _set_generator_state(rng: np.random.Generator, state: dict) -> None:
    if _scalar(state["bit_generator"], str) != "PCG64":
        raise ValueError(f"state is for {state['bit_generator']}, not PCG64")
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": int(_scalar(state["rng_state"], str)),
                  "inc": int(_scalar(state["rng_inc"], str))},
        "has_uint32": _scalar(state["rng_has_uint32"], int),
        "uinteger": _scalar(state["rng_uinteger"], int),
    }


class LMBatchSampler:
    """Random language-model batches from a 1-D token array, resumable.

    Each call of :meth:`next_batch` draws ``batch_size`` start offsets uniformly (with
    replacement) from a PCG64 generator seeded with ``seed``, cuts windows of
    ``block_size + 1`` tokens, and returns ``(x, y)``: int64 arrays of shape
    ``(batch_size, block_size)``, ``y`` being ``x`` shifted by one token. Iterating gives an
    endless stream of such batches.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, block_size: int, *, seed: int = 0):
        self.tokens = np.asarray(tokens, dtype=np.int64)
        if self.tokens.ndim != 1:
            raise ValueError(f"tokens must be 1-D, got shape {self.tokens.shape}")
        if batch_size < 1 or block_size < 1:
            raise ValueError("batch_size and block_size must be >= 1")
        if len(self.tokens) < block_size + 1:
            raise ValueError(f"{len(self.tokens)} tokens are too few for block_size {block_size}")
        self.batch_size = int(batch_size)
        self.block_size = int(block_size)
        self.seed = int(seed)
        self.step = 0  # batches drawn so far
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        self._offsets = np.arange(self.block_size + 1, dtype=np.int64)

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        high = len(self.tokens) - self.block_size  # last start leaves room for block_size + 1
        starts = self.rng.integers(0, high, size=self.batch_size, dtype=np.int64)
        windows = self.tokens[starts[:, None] + self._offsets]
        self.step += 1
        return windows[:, :-1], windows[:, 1:]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        """Flat ints and strings: the generator state, the step count and the shapes."""
        return {
            "n_tokens": len(self.tokens), "batch_size": self.batch_size,
            "block_size": self.block_size, "seed": self.seed, "step": self.step,
            **_generator_state(self.rng),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the generator and step; token count and batch shape must match."""
        _check_matches(state, {"n_tokens": len(self.tokens), "batch_size": self.batch_size,
                               "block_size": self.block_size}, "sampler")
        _set_generator_state(self.rng, state)
        self.seed = _scalar(state["seed"], int)
        self.step = _scalar(state["step"], int)


def sequential_windows(
    tokens: np.ndarray, block_size: int, batch_size: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Deterministic evaluation batches: consecutive non-overlapping windows, in order.

    Window ``i`` is ``tokens[i*block_size : (i+1)*block_size + 1]``; a tail shorter than
    ``block_size + 1`` tokens is left out. Yields ``(x, y)`` int64 pairs of at most
    ``batch_size`` windows (the last batch may be smaller).
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    n_windows = (len(tokens) - 1) // block_size
    offsets = np.arange(block_size + 1, dtype=np.int64)
    for first in range(0, n_windows, batch_size):
        starts = np.arange(first, min(first + batch_size, n_windows), dtype=np.int64) * block_size
        windows = tokens[starts[:, None] + offsets]
        yield windows[:, :-1], windows[:, 1:]
