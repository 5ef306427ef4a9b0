"""Checkpoints that survive a kill at any moment and run no code when they are read.

A checkpoint is **one** ``.npz`` file (``np.savez``, uncompressed) holding

* every array of the training state, under a readable key (``model/fc1.weight``,
  ``optimizer/state/0/exp_avg``, ...), and
* one 0-d unicode array, ``__simprec__``, holding JSON: the format name and version, the step,
  the *structure* of the state (nested dicts, lists, ints, floats, strings) with a placeholder
  ``{"__array__": key}`` where an array goes, and a sha256 digest of the arrays.

It is read with ``np.load(path, allow_pickle=False)`` and ``json.loads``: no pickle, no code.
Python floats go through JSON by ``repr`` and come back bit for bit; NumPy scalars
(``np.float32`` loss scale, ``np.int32`` growth tracker) are stored as 0-d arrays and come back
with their dtype.

It is written atomically (:func:`atomic_write_bytes`): the bytes go to a temporary file in the
same directory, are flushed and ``fsync``-ed, and the file is renamed over its final name
(``os.replace``, atomic on POSIX), then the directory is ``fsync``-ed. A reader sees the old
file, the new file, or no file, never half of one; a kill leaves at most a hidden ``.*.tmp-*``
file, which readers ignore and :func:`remove_stale_temporaries` deletes.

For tests, the environment variable ``SIMPREC_TEST_CHECKPOINT_PAUSE`` (seconds) makes the writer
sleep halfway through writing the temporary file, so that a test can kill the process there.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import time
import zipfile
from pathlib import Path

import numpy as np

from .errors import CheckpointError

__all__ = [
    "FORMAT", "VERSION", "atomic_write_bytes", "atomic_write_text", "checkpoint_path",
    "decode_state", "encode_state", "find_checkpoints", "latest_checkpoint", "load_checkpoint",
    "remove_stale_temporaries", "save_checkpoint",
]

FORMAT = "simprec-checkpoint"
VERSION = 1
META_KEY = "__simprec__"
PAUSE_ENV = "SIMPREC_TEST_CHECKPOINT_PAUSE"
_NAME = re.compile(r"^step-(\d{8,})\.npz$")


# ------------------------------------------------------------------ atomic files


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, pause_hook: bool = False) -> None:
    """Write ``data`` to ``path`` so that ``path`` is never seen half-written.

    Temporary file in the same directory, flush, ``fsync``, ``os.replace``, ``fsync`` of the
    directory. With ``pause_hook``, honours ``SIMPREC_TEST_CHECKPOINT_PAUSE`` (tests only).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            if pause_hook and os.environ.get(PAUSE_ENV):
                f.flush()
                time.sleep(float(os.environ[PAUSE_ENV]))
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(err, OSError) and err.filename in (None, str(tmp)):
            err.filename = str(path)  # name the file the user knows, not the temporary one
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the ``.*.tmp-*`` files a killed writer left in ``directory``; return them."""
    removed = []
    directory = Path(directory)
    if directory.is_dir():
        for p in directory.iterdir():
            if p.name.startswith(".") and ".tmp-" in p.name and p.is_file():
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
    return removed


# ------------------------------------------------------------------ state <-> (JSON, arrays)


def _is_tensor(obj) -> bool:
    return hasattr(obj, "numpy") and hasattr(obj, "fmt") and hasattr(obj, "backend")


def encode_state(state) -> tuple[object, dict[str, np.ndarray]]:
    """Split a nested state into a JSON-able tree and a flat ``{key: ndarray}`` dict.

    Supported: dict (any keys of the supported scalar types), list, tuple, str, bool, int,
    float (incl. inf/NaN), None, NumPy arrays and scalars (non-object dtypes), and simprec
    Tensors (stored as their NumPy values). Anything else raises TypeError: a checkpoint never
    needs pickle.
    """
    arrays: dict[str, np.ndarray] = {}

    def key_for(path: list[str]) -> str:
        base = "/".join(path) or "value"
        key, i = base, 1
        while key in arrays or key == META_KEY:
            key, i = f"{base}~{i}", i + 1
        return key

    def put(array: np.ndarray, path, **extra):
        if array.dtype.hasobject:
            raise TypeError(f"checkpoint: object array at {'/'.join(path)!r} cannot be stored "
                            "without pickle")
        key = key_for(path)
        arrays[key] = array if array.flags.c_contiguous else array.copy(order="C")
        return {"__array__": key, **extra}

    def enc(obj, path):
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int) and not isinstance(obj, np.generic):
            return obj
        if isinstance(obj, float):
            if math.isfinite(obj):
                return obj
            return {"__float__": repr(obj)}  # 'inf', '-inf', 'nan'
        if isinstance(obj, np.ndarray):
            return put(obj, path)
        if isinstance(obj, np.generic):
            return put(np.asarray(obj), path, scalar=True)
        if _is_tensor(obj):
            return put(np.asarray(obj.numpy()), path)
        if isinstance(obj, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in obj):
                return {k: enc(v, path + [k]) for k, v in obj.items()}
            items = []
            for k, v in obj.items():
                if not (k is None or isinstance(k, (bool, int, str, float))):
                    raise TypeError(f"checkpoint: dict key {k!r} of type {type(k).__name__} "
                                    f"at {'/'.join(path)!r} is not storable")
                items.append([enc(k, path), enc(v, path + [str(k)])])
            return {"__items__": items}
        if isinstance(obj, list):
            return [enc(v, path + [str(i)]) for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            return {"__tuple__": [enc(v, path + [str(i)]) for i, v in enumerate(obj)]}
        raise TypeError(f"checkpoint: cannot store {type(obj).__name__} at "
                        f"{'/'.join(path) or '<root>'!r} (only arrays, numbers, strings, "
                        "lists, tuples and dicts)")

    return enc(state, []), arrays


def decode_state(tree, arrays) -> object:
    """The inverse of :func:`encode_state` (``arrays`` may be an open ``NpzFile``)."""

    def dec(obj):
        if isinstance(obj, list):
            return [dec(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if "__array__" in obj:
            value = np.array(arrays[obj["__array__"]])  # a private, writable copy
            return value[()] if obj.get("scalar") else value
        if "__float__" in obj:
            return float(obj["__float__"])
        if "__tuple__" in obj:
            return tuple(dec(v) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {dec(k): dec(v) for k, v in obj["__items__"]}
        return {k: dec(v) for k, v in obj.items()}

    return dec(tree)


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = arrays[key]
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------ files


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """``directory/step-00000123.npz``."""
    return Path(directory) / f"step-{int(step):08d}.npz"


def find_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoint files in ``directory``, by increasing step."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    found = find_checkpoints(directory)
    return found[-1][1] if found else None


def save_checkpoint(path: str | os.PathLike, state: dict, *, step: int,
                    extra: dict | None = None) -> Path:
    """Write ``state`` (nested, see :func:`encode_state`) atomically to ``path``."""
    tree, arrays = encode_state(state)
    meta = {"format": FORMAT, "version": VERSION, "step": int(step), "state": tree,
            "digest": _digest(arrays), **(extra or {})}
    buf = io.BytesIO()
    np.savez(buf, **{META_KEY: np.array(json.dumps(meta, allow_nan=False))}, **arrays)
    atomic_write_bytes(path, buf.getvalue(), pause_hook=True)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read a checkpoint: ``(state, meta)``; :class:`CheckpointError` if missing or corrupt.

    ``meta`` holds ``format, version, step, digest`` and any ``extra`` given to
    :func:`save_checkpoint`. The digest of the arrays is checked.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            if META_KEY not in z.files:
                raise CheckpointError(f"{path} is not a simprec checkpoint (no {META_KEY} entry)")
            meta = json.loads(str(z[META_KEY][()]))
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path} is not a simprec checkpoint")
            if meta.get("version") != VERSION:
                raise CheckpointError(f"{path} has checkpoint format version "
                                      f"{meta.get('version')}, this simprec reads {VERSION}")
            arrays = {k: z[k] for k in z.files if k != META_KEY}
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError,
            UnicodeDecodeError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable "
                              f"({type(err).__name__}: {err})") from None
    if _digest(arrays) != meta.get("digest"):
        raise CheckpointError(f"checkpoint {path} is corrupt (its arrays do not match their "
                              "digest)")
    try:
        state = decode_state(meta.pop("state"), arrays)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt ({err})") from None
    return state, meta
