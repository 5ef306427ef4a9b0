"""The run directory: what a training run leaves on disk, and how it stays readable.

::

    RUN/
      config.json       the resolved configuration (+ versions, dataset fingerprint)
      metrics.jsonl     one JSON object a line: {"kind": "train", "step", "loss", ...} per step,
                        {"kind": "eval", "step", ...} per evaluation
      checkpoints/      step-00000100.npz ... (the newest few; see simprec.train.checkpoint)
      summary.json      final metrics, written when the run ends
      analysis/         what ``--record`` saved (simprec.analysis.Recorder), if asked

A new run directory appears atomically: it is assembled under a hidden temporary name next to
its final place (config, empty metrics, the step-0 checkpoint) and renamed into place, so a
directory with the run's name always holds a config and a checkpoint to resume from.
JSON files are written atomically; ``metrics.jsonl`` is appended line by line, fsync-ed before
each checkpoint, and cut back to the checkpoint's step on resume (a kill can leave lines of
steps after the last checkpoint, or half a line).
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
from pathlib import Path

from .checkpoint import atomic_write_text, fsync_dir
from .errors import CheckpointError, ConfigError

__all__ = ["MetricsLog", "RunDir", "read_json", "read_metrics", "write_json"]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"


def _jsonable(obj):
    """Floats that are not finite become the strings "inf", "-inf", "nan" (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _jsonable(obj.item())  # NumPy scalar
    return obj


def write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write ``obj`` as indented, strict JSON."""
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is unreadable or corrupt ({err})") from None


def read_metrics(run_dir: str | os.PathLike, kind: str | None = None) -> list[dict]:
    """The records of ``RUN/metrics.jsonl`` (only those of ``kind`` if given).

    A half-written last line (a killed run) is skipped.
    """
    path = Path(run_dir) / METRICS
    records = []
    if not path.exists():
        return records
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and (kind is None or rec.get("kind") == kind):
                records.append(rec)
    return records


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_dead_temporaries(path: Path) -> None:
    """Remove ``.NAME.tmp-PID`` directories that a killed process left while creating ``path``."""
    prefix = f".{path.name}.tmp-"
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return
    for p in siblings:
        if p.name.startswith(prefix) and p.is_dir():
            pid = p.name[len(prefix):]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)


class MetricsLog:
    """Append-only ``metrics.jsonl``: one strict-JSON object a line, flushed after each line."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(_jsonable(record), allow_nan=False) + "\n")
        self._f.flush()

    def sync(self) -> None:
        """Make every line written so far durable (before a checkpoint refers to them)."""
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    @staticmethod
    def truncate_after(path: str | os.PathLike, step: int) -> int:
        """Keep only the complete lines whose ``step`` is ``<= step``; atomically. Lines kept."""
        path = Path(path)
        kept = []
        if path.exists():
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if not line.endswith("\n"):
                        break  # half a line: the kill landed in the middle of a write
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        break
                    if isinstance(rec, dict) and int(rec.get("step", 0)) <= step:
                        kept.append(line)
        atomic_write_text(path, "".join(kept))
        return len(kept)


class RunDir:
    """Paths of a run directory and its atomic creation."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    config = property(lambda self: self.path / CONFIG)
    metrics = property(lambda self: self.path / METRICS)
    summary = property(lambda self: self.path / SUMMARY)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.config.is_file()

    @staticmethod
    def check_new(path: str | os.PathLike) -> Path:
        """Refuse an ``--out`` that exists and is not an empty directory; check writability."""
        path = Path(path)
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"--out {path} exists and is not a directory")
            if any(path.iterdir()):
                hint = (f"; to continue it use --resume {path}" if (path / CONFIG).exists()
                        else "")
                raise ConfigError(f"--out {path} already exists and is not empty{hint}")
        parent = path.resolve().parent
        probe = parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise ConfigError(f"--out {path}: {probe} is a file, not a directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {path}: directory {probe} is not writable")
        return path

    @classmethod
    def create(cls, path: str | os.PathLike, populate, *, unique: bool = False) -> RunDir:
        """Build the run directory under a temporary name, call ``populate(RunDir(tmp))``, rename.

        On any failure the temporary directory is removed and nothing is left at ``path``.
        ``unique`` (a default name, not one the user chose): when ``path`` is taken, even by a
        run that another process starts at the same moment, the first free ``path-2``,
        ``path-3``, ... is used instead. Returns the RunDir actually created.
        """
        path = cls.check_new(path) if not unique else Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--out {path}: cannot create {path.parent} "
                              f"({err.strerror})") from None
        claimed = cls._claim(path) if unique else None
        path = claimed or path
        _remove_dead_temporaries(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            (tmp / CHECKPOINTS).mkdir()
            populate(cls(tmp))
            os.replace(tmp, path)  # replaces an empty directory at `path`, atomically
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if claimed is not None:
                _rmdir_quietly(claimed)
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise ConfigError(f"--out {path}: another process created a run there "
                                  "meanwhile; choose another --out") from None
            raise ConfigError(f"--out {path}: cannot write the run directory "
                              f"({err.strerror or err})") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if claimed is not None:
                _rmdir_quietly(claimed)
            raise
        fsync_dir(path.parent)
        return cls(path)

    @staticmethod
    def _claim(base: Path) -> Path:
        """Create the first of ``base``, ``base-2``, ``base-3``, ... that does not exist (an
        empty directory: ``mkdir`` is atomic, so two processes never claim the same one)."""
        for i in range(1, 10_000):
            candidate = base if i == 1 else base.with_name(f"{base.name}-{i}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            except OSError as err:
                raise ConfigError(f"--out {candidate}: cannot create it ({err.strerror})") from None
            return candidate
        raise ConfigError(f"--out {base}: no free name beside it")


def _rmdir_quietly(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
