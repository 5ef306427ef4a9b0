"""The training loop: a run that can be killed at any moment and continued bit for bit.

    from simprec.train import TrainConfig, train
    result = train(TrainConfig(recipe="amp-fp16", steps=500), out="runs/demo")
    result.summary["test_accuracy"], result.run_dir, result.model

One step (``Trainer.run``), in this order:

1. the next batch from the seeded, resumable stream (``BatchIterator`` / ``LMBatchSampler``);
2. ``recipe.step``: forward and loss under the recipe's autocast, ``scaler.scale(loss)
   .backward()``, ``unscale_``, gradient clipping (after unscaling, as in torch's AMP recipe),
   ``scaler.step``, ``scaler.update``, ``zero_grad``;
3. the learning-rate scheduler's step (after the optimizer's, as in torch);
4. one ``train`` line in metrics.jsonl; an evaluation (``eval`` line) every ``eval_every``
   steps; a checkpoint every ``checkpoint_every`` steps.

A checkpoint holds the step, the model, the optimizer (with its parameter groups and learning
rates), the scheduler, the recipe (loss scaler, fp32 masters), the data stream's position,
the models' random generators (dropout) and the elapsed time. Everything that decides the next
step's numbers is in it, so a run resumed from it continues exactly as if it had never
stopped. The run directory and its files are described in :mod:`simprec.train.rundir`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import math
import os
import platform
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import (
    checkpoint_path,
    find_checkpoints,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from .config import TrainConfig
from .errors import CheckpointError, ConfigError, RunWarning, TrainError, option_flag
from .progress import Progress
from .rundir import MetricsLog, RunDir, read_json, read_metrics, write_json

__all__ = ["TrainResult", "Trainer", "train"]

STATE_VERSION = 1
_warned_threads = False
EVAL_BATCH = 512          # digits: examples per evaluation forward
TEXT_EVAL_WINDOWS = 256   # text: validation windows per evaluation (the first ones, in order)


def train(config: TrainConfig | None = None, *, out=None, quiet: bool = True, **overrides):
    """Run a training job and return its :class:`TrainResult`.

    ``train(model="mlp", recipe="fp32", steps=300)`` works too (keywords build the config).
    ``out`` is the new run directory (default ``runs/MODEL-RECIPE-TIMESTAMP``).
    """
    config = config or TrainConfig()
    if overrides:
        config = config.replace(**overrides)
    return Trainer(config, out=out, quiet=quiet).run()


# ---------------------------------------------------------------------------- result


@dataclass
class TrainResult:
    """What a run produced: its directory, resolved config, summary and the trained model."""

    run_dir: Path
    config: TrainConfig
    summary: dict
    model: object = None
    interrupted: bool = False
    metrics: list = field(default_factory=list, repr=False)

    def table(self) -> str:
        """A short, human table of the results and the path of the run."""
        s, c = self.summary, self.config
        rows = [("model", f"{c.model} on {c.data}  ({s.get('parameters', '?')} parameters)"),
                ("recipe", f"{c.recipe}  (backend {c.backend}, accumulate {c.accumulate})")]
        done = s.get("steps_done", s.get("steps"))
        rows.append(("steps", f"{done} of {c.steps}  (skipped {s.get('skipped_steps', 0)}, "
                              f"final loss scale {_num(s.get('final_scale'))})"))
        if "test_accuracy" in s:
            rows.append(("test accuracy", f"{100 * s['test_accuracy']:.2f} %"))
            rows.append(("test loss", _num(s.get("test_loss"))))
        if "val_loss" in s:
            rows.append(("val loss", f"{_num(s['val_loss'])} nats/char  (unigram entropy "
                                     f"{_num(s.get('unigram_entropy'))})"))
        if s.get("train_loss") is not None:
            rows.append(("train loss", f"{_num(s['train_loss'])}  (mean of the last "
                                       f"{s.get('train_loss_window')} steps)"))
        rows.append(("wall time", f"{s.get('wall_seconds', 0):.1f} s  "
                                  f"({s.get('steps_per_second', 0):.1f} steps/s)"))
        width = max(len(k) for k, _ in rows)
        lines = [f"  {k:<{width}}  {v}" for k, v in rows]
        head = "interrupted" if self.interrupted else "done"
        if s.get("diverged"):
            head += f" (but it did not train: {s['diverged']})"
        tail = (f"continue with: simprec train --resume {self.run_dir}" if self.interrupted
                else f"run directory: {self.run_dir}")
        return "\n".join([f"simprec train: {head}", *lines, tail])


def _num(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    if v != 0 and v == int(v) and abs(v) < 1e12:
        return str(int(v))
    return f"{v:.4f}" if abs(v) >= 1e-3 else f"{v:.3e}"


# ---------------------------------------------------------------------------- the trainer


class Trainer:
    """A training run: built from a :class:`TrainConfig`, or resumed from a run directory.

    ``Trainer(config, out=None)`` checks the configuration and builds everything (dataset,
    model, recipe, optimizer, schedule, batch stream) but writes nothing; :meth:`run` creates
    the run directory (atomically) and trains. ``Trainer.resume(run)`` continues a run.
    Bad input raises :class:`ConfigError` / :class:`CheckpointError` before anything is
    written.
    """

    def __init__(self, config: TrainConfig | None = None, *, out=None, quiet: bool = False,
                 handle_signals: bool = False, _run_dir=None):
        config = config if config is not None else TrainConfig()
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.quiet = quiet
        self.handle_signals = handle_signals
        self.dataset = None
        self.config = config.resolve(steps_per_epoch=self._steps_per_epoch)
        self._build()
        self.step = 0
        self.elapsed = 0.0
        self.resumes = 0
        self.skipped_steps = 0    # steps the scaler skipped so far (kept in the checkpoint)
        self.resumed_from = None  # the checkpoint file, after Trainer.resume
        self._stop_requested = False
        self._signalled = False  # a SIGINT/SIGTERM arrived (ranks agree on stopping on it)
        self.parallel = None  # a data-parallel strategy (simprec.distributed.attach)
        if _run_dir is not None:
            self.run_dir = RunDir(_run_dir)
            self._new = False
        else:
            self._default_name = out is None  # a taken default name moves to NAME-2, ...
            out = Path(out) if out is not None else _default_out(self.config)
            RunDir.check_new(out)
            self.run_dir = RunDir(out)
            self._new = True

    # ------------------------------------------------------------------ building
    def _load_data(self, cfg: TrainConfig):
        from ..data import load_digits, load_text

        if self.dataset is None:
            if cfg.data == "digits":
                self.dataset = load_digits(flat=cfg.model != "cnn", seed=0)
            elif cfg.data == "text":
                try:
                    self.dataset = load_text(block_size=cfg.block_size, seed=cfg.seed)
                except ValueError:
                    meta = load_text(block_size=1).meta
                    longest = min(meta["n_train"], meta["n_val"]) - 1
                    raise ConfigError(key="block_size", problem=(
                        f"{cfg.block_size} is longer than the text corpus allows (its "
                        f"validation split has {meta['n_val']:,} characters: at most "
                        f"{longest:,}; the model attends over block-size² pairs, so a few "
                        "hundred is already large)")) from None
            else:
                from ..data import get_dataset

                self.dataset = get_dataset(cfg.data)
        return self.dataset

    def _steps_per_epoch(self, cfg: TrainConfig) -> int:
        ds = self._load_data(cfg)
        return -(-len(ds.x_train) // cfg.batch_size)

    def _build(self) -> None:
        from .. import amp, optim
        from ..data import BatchIterator
        from ..models import build_model

        cfg = self.config
        ds = self._load_data(cfg)
        self.is_text = cfg.data == "text"
        kwargs = dict(cfg.model_options)
        check_options(f"model {cfg.model!r}", _model_class(cfg.model), kwargs, "model_options")
        if self.is_text:
            kwargs.setdefault("vocab_size", ds.tokenizer.vocab_size)
            kwargs.setdefault("block_size", cfg.block_size)
        try:
            model = build_model(cfg.model, generator=np.random.default_rng(cfg.seed), **kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(key="model_options", problem=(
                f"{_options_text(cfg.model_options)}: model {cfg.model!r} cannot be built with "
                f"them ({err})")) from None
        if cfg.backend != "numpy":
            model.to(cfg.backend)
        try:
            recipe_opts = dict(cfg.recipe_options, accumulate=cfg.accumulate)
            if cfg.clip_grad_norm:  # the recipe clips after unscaling, before the step
                recipe_opts["clip_grad_norm"] = cfg.clip_grad_norm
            self.recipe = amp.get_recipe(cfg.recipe, **recipe_opts)
        except (TypeError, ValueError) as err:
            raise ConfigError(key="recipe_options", problem=(
                f"{_options_text(cfg.recipe_options)}: {err}")) from None

        def make_optimizer(params):
            if cfg.optimizer == "sgd":
                return optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                 weight_decay=cfg.weight_decay)
            cls = optim.Adam if cfg.optimizer == "adam" else optim.AdamW
            return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

        try:
            self.model, self.optimizer, self.scaler = self.recipe.prepare(model, make_optimizer)
        except (TypeError, ValueError) as err:
            raise ConfigError(str(err)) from None
        self.scheduler = _make_scheduler(optim.lr_scheduler, self.optimizer, cfg)
        if self.is_text:
            self.stream = ds.sampler(cfg.batch_size, seed=cfg.seed)
        else:
            self.stream = BatchIterator((ds.x_train, ds.y_train), cfg.batch_size, seed=cfg.seed,
                                        shuffle=True)
        self.n_parameters = int(sum(p.size for p in self.model.parameters()))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything that decides the rest of the run (see the module docstring)."""
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "model": self.model.state_dict(),
            "model_rng": self.model.rng_state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "recipe": self.recipe.state_dict(),
            "data": self.stream.state_dict(),
            "elapsed": float(self.elapsed),
            "resumes": int(self.resumes),
            "skipped_steps": int(self.skipped_steps),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise CheckpointError(f"checkpoint state version {state.get('version')} is not "
                                  f"{STATE_VERSION}")
        try:
            self.model.load_state_dict(state["model"])
            self.model.load_rng_state_dict(state["model_rng"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            self.recipe.load_state_dict(state["recipe"])
            self.stream.load_state_dict(state["data"])
        except (KeyError, IndexError, AttributeError, ValueError, TypeError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"the checkpoint does not fit this run ({first})") from None
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        self.resumes = int(state.get("resumes", 0))
        # (checkpoints written before the counter was stored: counted from metrics.jsonl)
        self.skipped_steps = state.get("skipped_steps")

    # ------------------------------------------------------------------ resume
    @classmethod
    def resume(cls, run, *, overrides: dict | None = None, quiet: bool = False,
               handle_signals: bool = False) -> Trainer:
        """Continue the run in directory ``run`` from its newest checkpoint (or, when ``run`` is
        a checkpoint file, from that checkpoint). ``overrides`` (the options given again) must
        equal the run's configuration."""
        run = Path(run)
        if run.is_file() and run.suffix == ".npz":
            ckpt_file = run
            run = run.parent.parent if run.parent.name == "checkpoints" else run.parent
        elif run.is_dir():
            ckpt_file = None
        else:
            raise CheckpointError(f"--resume {run}: no such run directory or checkpoint "
                                  "(.npz) file")
        rd = RunDir(run)
        if not rd.config.is_file():
            raise CheckpointError(f"--resume {run}: not a run directory (no config.json)")
        stored = read_json(rd.config)
        if not isinstance(stored, dict):
            raise CheckpointError(f"{rd.config} is not a simprec run config (not a JSON object)")
        fields = TrainConfig.__dataclass_fields__
        try:
            saved = TrainConfig.from_dict({k: v for k, v in stored.items() if k in fields})
        except (TypeError, ConfigError) as err:
            raise CheckpointError(f"{rd.config} is not a simprec run config ({err})") from None
        info = stored.get("run_info")
        info = info if isinstance(info, dict) else {}
        try:  # the stored configuration alone: its errors name the file and the key
            trainer = cls(saved, quiet=quiet, handle_signals=handle_signals, _run_dir=run)
        except ConfigError as err:
            raise err.in_file(rd.config) from None
        given = dict(overrides or {})
        if given:
            base = saved.replace(**({"epochs": None} if "steps" in given else {}),
                                 **({"steps": None} if "epochs" in given else {}))
            wanted_r = Trainer._resolve_for(base.replace(**given))
            diffs = [k for k in given
                     if getattr(wanted_r, k) != getattr(saved, k)
                     or (k in ("steps", "epochs") and wanted_r.steps != saved.steps)]
            if diffs:
                shown = ", ".join(f"{option_flag(k)} {getattr(wanted_r, k)!r} (the run has "
                                  f"{getattr(saved, k)!r})" for k in diffs)
                raise ConfigError(f"--resume with a different configuration: {shown}; a resumed "
                                  "run keeps its configuration (leave these options out)")
        if trainer.config != saved:
            raise CheckpointError(f"{rd.config}: the stored configuration is not a resolved one")
        trainer._check_data_fingerprint(info)
        if ckpt_file is None:
            ckpt_file, state, meta = _newest_valid_checkpoint(rd.checkpoints, run)
        else:
            try:
                state, meta = load_checkpoint(ckpt_file)
            except CheckpointError as err:
                others = [p.name for _, p in find_checkpoints(rd.checkpoints) if p != ckpt_file]
                hint = (f"; the run has other checkpoints ({', '.join(others)}): --resume {run} "
                        "takes the newest valid one" if others else "")
                raise CheckpointError(f"{err}{hint}") from None
        if meta.get("config_id") not in (None, _config_id(saved)):
            raise CheckpointError(f"{ckpt_file} belongs to a run with another configuration")
        trainer.load_state_dict(state)
        if trainer.step < trainer.config.steps:
            trainer.resumes += 1
        trainer.resumed_from = ckpt_file
        return trainer

    @staticmethod
    def _resolve_for(config: TrainConfig) -> TrainConfig:
        probe = Trainer.__new__(Trainer)
        probe.dataset = None
        return config.resolve(steps_per_epoch=probe._steps_per_epoch)

    def _check_data_fingerprint(self, info: dict) -> None:
        dataset = info.get("dataset")
        want = dataset.get("sha256") if isinstance(dataset, dict) else None
        have = self.dataset.meta.get("sha256")
        if want and have and want != have:
            hint = (" (the text corpus comes from the running Python's documentation: resume "
                    f"with Python {info.get('environment', {}).get('python')})"
                    if self.is_text else "")
            raise CheckpointError(f"the dataset differs from the one the run started with{hint}")

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict:
        """Loss (and accuracy) on the held-out split, in the recipe's forward precision."""
        from .. import no_grad
        from ..nn import functional as F
        from ..tensor import tensor

        cfg, ds, recipe = self.config, self.dataset, self.recipe
        was_training = getattr(self.model, "training", True)
        self.model.eval()
        total_loss, total_n, correct = 0.0, 0, 0
        try:
            with no_grad(), recipe.forward_context(), np.errstate(all="ignore"):
                if self.is_text:
                    batches = ds.eval_batches(64)
                    windows = 0
                    for xb, yb in batches:
                        if windows >= TEXT_EVAL_WINDOWS:
                            break
                        xb, yb = xb[:TEXT_EVAL_WINDOWS - windows], yb[:TEXT_EVAL_WINDOWS - windows]
                        windows += len(xb)
                        x, y = recipe.cast_batch((tensor(xb, backend=cfg.backend),
                                                  tensor(yb, backend=cfg.backend)))
                        logits = self.model(x)
                        v = logits.shape[-1]
                        loss = F.cross_entropy(logits.reshape(-1, v), y.reshape(-1),
                                               reduction="sum")
                        total_loss += float(loss.item())
                        total_n += yb.size
                else:
                    for start in range(0, len(ds.x_test), EVAL_BATCH):
                        xb = ds.x_test[start:start + EVAL_BATCH]
                        yb = ds.y_test[start:start + EVAL_BATCH]
                        x, y = recipe.cast_batch((tensor(xb, backend=cfg.backend),
                                                  tensor(yb, backend=cfg.backend)))
                        logits = self.model(x)
                        loss = F.cross_entropy(logits, y, reduction="sum")
                        total_loss += float(loss.item())
                        total_n += len(yb)
                        correct += int((logits.numpy().argmax(axis=-1) == yb).sum())
        finally:
            self.model.train(was_training)
        if self.is_text:
            return {"split": "val", "loss": total_loss / total_n, "tokens": total_n}
        return {"split": "test", "loss": total_loss / total_n, "accuracy": correct / total_n,
                "examples": total_n}

    # ------------------------------------------------------------------ the loop
    def _loss_fn(self):
        from ..nn import functional as F

        if self.is_text:
            def lm_loss(model, batch):
                x, y = batch
                logits = model(x)
                return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            return lm_loss

        def classify_loss(model, batch):
            x, y = batch
            return F.cross_entropy(model(x), y)
        return classify_loss

    def _write_checkpoint(self, metrics: MetricsLog | None) -> Path:
        if metrics is not None:
            metrics.sync()  # the lines up to this step are durable before the checkpoint is
        path = checkpoint_path(self.run_dir.checkpoints, self.step)
        try:
            save_checkpoint(path, self.state_dict(), step=self.step,
                            extra={"config_id": _config_id(self.config)})
        except OSError as err:
            if err.filename is None:
                err.filename = str(path)
            raise
        for _, old in find_checkpoints(self.run_dir.checkpoints)[:-self.config.keep_checkpoints]:
            try:
                old.unlink()
            except OSError:
                pass
        return path

    def _create_run_dir(self) -> None:
        config_doc = self._config_document()

        first_eval = self.evaluate() if self.config.eval_every else None

        def populate(rd: RunDir):
            write_json(rd.config, config_doc)
            log = MetricsLog(rd.metrics)
            if first_eval is not None:  # the untrained model, for the curves
                log.write({"kind": "eval", "step": 0, **first_eval, "seconds": 0.0})
            log.close()
            save_checkpoint(checkpoint_path(rd.checkpoints, 0), self.state_dict(), step=0,
                            extra={"config_id": _config_id(self.config)})

        self.run_dir = RunDir.create(self.run_dir.path, populate, unique=self._default_name)

    def _config_document(self) -> dict:
        from .. import __version__

        meta = {k: v for k, v in self.dataset.meta.items()
                if not isinstance(v, np.ndarray) and k != "vocab"}
        return {
            **self.config.to_dict(),
            "run_info": {
                "model_class": type(self.model).__name__,
                "parameters": self.n_parameters,
                "dataset": meta,
                "environment": {"simprec": __version__, "numpy": np.__version__,
                                "python": platform.python_version(),
                                "platform": platform.platform()},
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            },
        }

    def _install_signals(self):
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return None
        previous = {}

        def handler(signum, frame):
            if self._signalled:  # second signal: stop now (the run dir stays valid)
                raise KeyboardInterrupt
            self._signalled = True
            if self.parallel is None:  # data-parallel ranks agree on it at their next step
                self._stop_requested = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):
                pass
        return previous

    def run(self) -> TrainResult:
        """Train to the configured number of steps (or to a Ctrl-C) and return the result."""
        with blas_threads(self.config.threads or None):
            return self._run()

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run directory (all but the ranks > 0 of a
        data-parallel job)."""
        return self.parallel is None or self.parallel.writer

    def _run(self) -> TrainResult:
        resuming = not self._new
        if self._new:
            if self.is_writer:
                self._create_run_dir()
            self._new = False
        lock = _RunLock.acquire(self.run_dir.path) if self.is_writer else None
        try:
            return self._train(resuming)
        except OSError as err:
            if err.errno not in _DISK_ERRNOS:
                raise
            raise TrainError(_write_failure(err, self.run_dir)) from None
        finally:
            if lock is not None:
                lock.release()

    def _train(self, resuming: bool) -> TrainResult:
        cfg = self.config
        if resuming and self.is_writer:  # clean what the interrupted run left after its last
            # checkpoint
            remove_stale_temporaries(self.run_dir.checkpoints)
            remove_stale_temporaries(self.run_dir.path)
            MetricsLog.truncate_after(self.run_dir.metrics, self.step)
            for later_step, later in find_checkpoints(self.run_dir.checkpoints):
                if later_step > self.step:  # resumed from an older checkpoint than the newest
                    later.unlink()
            if self.step < cfg.steps:
                try:
                    self.run_dir.summary.unlink()
                except FileNotFoundError:
                    pass
        if self.parallel is not None:
            self.parallel.run_dir_ready(self)

        recorder = None
        if cfg.record and self.step < cfg.steps and self.is_writer:
            from ..analysis import Recorder

            recorder = Recorder(self.model)
            recorder.meta["first_step"] = self.step + 1
        metrics = MetricsLog(self.run_dir.metrics) if self.is_writer else _NoMetrics()
        progress = Progress(cfg.steps, initial=self.step,
                            enabled=False if self.quiet or not self.is_writer else None,
                            desc=f"{cfg.model} {cfg.recipe}")
        loss_fn = self._loss_fn()
        previous_handlers = self._install_signals()
        interrupted = False
        missing = (_missing_steps(read_metrics(self.run_dir.path, "train"), self.step)
                   if self.is_writer else [])
        if missing:
            warnings.warn(RunWarning(
                f"{self.run_dir.metrics} lacks the lines of steps {_ranges_text(missing)} (the "
                "file was cut or edited): curves and the summary's train loss miss them, the "
                "skipped-step count comes from the checkpoint"), stacklevel=2)
        if self.skipped_steps is None and self.is_writer:  # a checkpoint without the counter
            self.skipped_steps = sum(1 for r in read_metrics(self.run_dir.path, "train")
                                     if r.get("skipped"))
        skipped_total = self.skipped_steps or 0
        scale = None
        t_start = time.perf_counter() - self.elapsed
        # Overflow to inf and NaN are expected events of half-precision training (the loss
        # scaler's business), not something to warn about at every step.
        errstate = np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")
        try:
            errstate.__enter__()
            if recorder is not None:
                recorder.__enter__()
            while self.step < cfg.steps:
                if self._stop_requested:
                    interrupted = True
                    break
                batch = self._next_batch()
                step_start = self.elapsed
                lr = float(self.optimizer.param_groups[0]["lr"])
                if recorder is not None:
                    recorder.start_step(self.step + 1)
                _, facts = self._train_step(loss_fn, batch)
                if self.scheduler is not None:
                    self.scheduler.step()
                self.step += 1
                self.elapsed = time.perf_counter() - t_start
                scale = facts["scale"]
                skipped = bool(facts["skipped"])
                skipped_total += skipped
                self.skipped_steps = skipped_total
                line = {"kind": "train", "step": self.step, "loss": facts["loss"],
                        "scale": float(scale), "skipped": skipped, "lr": lr,
                        "seconds": round(self.elapsed, 4)}
                if facts.get("grad_norm") is not None:
                    line["grad_norm"] = float(facts["grad_norm"])
                if facts.get("found_inf") and not skipped:
                    line["nonfinite_grad"] = True
                speed = _throughput(batch, self.elapsed - step_start, self.model, cfg.backend,
                                    self.recipe, getattr(self.parallel, "devices", 1))
                line.update(speed)
                metrics.write(line)
                if recorder is not None:
                    recorder.end_step(loss=facts["loss"], scale=scale, skipped=skipped, lr=lr)
                progress.update(self.step, loss=facts["loss"], scale=scale, skipped=skipped_total,
                                throughput=_speed_text(speed))
                last = self.step == cfg.steps
                evaluate = (cfg.eval_every and self.step % cfg.eval_every == 0) or last
                if evaluate and self.is_writer:
                    ev = self.evaluate()
                    metrics.write({"kind": "eval", "step": self.step, **ev,
                                   "seconds": round(time.perf_counter() - t_start, 4)})
                    progress.note(_eval_text(self.step, ev))
                self.elapsed = time.perf_counter() - t_start
                if ((cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or last
                        or self._stop_requested) and self.is_writer:
                    self._write_checkpoint(metrics)
        finally:
            errstate.__exit__(None, None, None)
            progress.close()
            metrics.close()
            if recorder is not None:
                recorder.__exit__(None, None, None)
            if previous_handlers:
                for sig, h in previous_handlers.items():
                    signal.signal(sig, h)
        if recorder is not None:
            recorder.save(self.run_dir.path)
        if not self.is_writer:  # rank 0 writes the summary
            return TrainResult(self.run_dir.path, cfg, {"steps_done": self.step}, self.model,
                               interrupted)
        summary = self._summary(skipped_total, scale, interrupted)
        if missing:
            summary["metrics_missing_steps"] = _ranges_text(missing)
        if not interrupted:
            write_json(self.run_dir.summary, summary)
        return TrainResult(self.run_dir.path, cfg, summary, self.model, interrupted)

    def _train_step(self, loss_fn, batch):
        """One optimizer step on ``batch``: the recipe's, or the data-parallel strategy's."""
        if self.parallel is not None:
            return self.parallel.train_step(self, loss_fn, batch)
        return self.recipe.step(self.model, self.optimizer, loss_fn, batch)

    def _next_batch(self):
        from ..tensor import tensor

        xb, yb = self.stream.next_batch()
        backend = self.config.backend
        return tensor(xb, backend=backend), tensor(yb, backend=backend)

    def _summary(self, skipped_total: int, scale, interrupted: bool) -> dict:
        cfg = self.config
        train_lines = read_metrics(self.run_dir.path, "train")
        evals = read_metrics(self.run_dir.path, "eval")
        final_eval = evals[-1] if evals and evals[-1]["step"] == self.step else None
        if final_eval is None and not interrupted:
            final_eval = {"step": self.step, **self.evaluate()}
        window = min(50, len(train_lines))
        recent = [_as_float(r["loss"]) for r in train_lines[-window:]] if window else []
        if scale is None and train_lines:
            scale = train_lines[-1].get("scale")
        summary = {
            "run": str(self.run_dir.path),
            "model": cfg.model, "data": cfg.data, "recipe": cfg.recipe, "backend": cfg.backend,
            "accumulate": cfg.accumulate, "parameters": self.n_parameters,
            "steps": cfg.steps, "steps_done": self.step,
            "skipped_steps": int(skipped_total),
            "nonfinite_loss_steps": sum(1 for r in train_lines
                                        if not math.isfinite(_as_float(r["loss"]))),
            "final_scale": None if scale is None else float(scale),
            "train_loss": float(np.mean(recent)) if recent else None,
            "train_loss_window": window,
        }
        if final_eval is not None:
            if self.is_text:
                summary["val_loss"] = final_eval["loss"]
                summary["val_bits_per_char"] = final_eval["loss"] / math.log(2)
                summary["unigram_entropy"] = self.dataset.meta.get("unigram_entropy_train")
            else:
                summary["test_accuracy"] = final_eval["accuracy"]
                summary["test_loss"] = final_eval["loss"]
        summary["wall_seconds"] = round(self.elapsed, 3)
        summary["steps_per_second"] = round(self.step / self.elapsed, 3) if self.elapsed else 0.0
        summary["resumes"] = self.resumes
        summary["evals"] = [{k: v for k, v in e.items() if k != "kind"} for e in evals]
        summary["diverged"] = None if interrupted else _divergence(summary)
        return summary


# ---------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Limit the BLAS library's threads to ``n`` inside (no-op for None).

    OpenBLAS's sgemm can sum in another order with another number of threads (for some
    shapes), so a reproducible run pins the count; the small matmuls of these models are also
    fastest on one thread. Needs ``threadpoolctl``; without it a warning says the count is not
    pinned."""
    global _warned_threads
    if n is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if not _warned_threads:
            warnings.warn("threadpoolctl is not installed: the BLAS thread count is not pinned, "
                          "and fp32 matmul results may depend on it (pip install threadpoolctl)",
                          RuntimeWarning, stacklevel=3)
            _warned_threads = True
        yield
        return
    with threadpool_limits(limits=int(n), user_api="blas"):
        yield


def _newest_valid_checkpoint(directory: Path, run: Path):
    """``(path, state, meta)`` of the newest checkpoint in ``directory`` that loads. A corrupt
    newer one is renamed ``*.corrupt`` (kept for a look, no longer a candidate) and a RunWarning
    says which checkpoint the run continues from instead."""
    found = find_checkpoints(directory)
    if not found:
        raise CheckpointError(f"--resume {run}: the run has no checkpoint (in {directory})")
    problems = []
    for _, path in reversed(found):
        try:
            state, meta = load_checkpoint(path)
        except CheckpointError as err:
            problems.append((path, err))
            continue
        for bad, err in problems:
            kept = bad.with_name(bad.name + ".corrupt")
            try:
                bad.replace(kept)
            except OSError:
                kept = bad
            warnings.warn(RunWarning(f"{err}; continuing from the older checkpoint {path.name} "
                                     f"(step {meta.get('step')}) instead; the corrupt file is "
                                     f"kept as {kept.name}"), stacklevel=3)
        return path, state, meta
    raise CheckpointError(f"--resume {run}: no checkpoint of the run can be read ("
                          + "; ".join(str(err) for _, err in problems) + ")")


def _divergence(summary: dict) -> str | None:
    """Why a finished run did not train (None if it did): most of its steps were skipped, or
    its loss ended non-finite. ``simprec train`` then warns and exits with status 3."""
    done, skipped = summary["steps_done"], summary["skipped_steps"]
    reasons = []
    if done and skipped > done / 2:
        reasons.append(f"{skipped} of {done} steps were skipped (inf/NaN gradients)")
    final = summary.get("test_loss", summary.get("val_loss"))
    if final is not None and not math.isfinite(_as_float(final)):
        reasons.append(f"the final evaluation loss is {final}")
    elif summary.get("train_loss") is not None and not math.isfinite(summary["train_loss"]):
        reasons.append(f"the training loss is {summary['train_loss']}")
    return "; ".join(reasons) or None


def _missing_steps(train_lines: list[dict], step: int) -> list[int]:
    """The steps 1..step that have no ``train`` line in metrics.jsonl."""
    have = {r.get("step") for r in train_lines}
    return [s for s in range(1, step + 1) if s not in have]


def _ranges_text(steps: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    parts, start = [], None
    for i, s in enumerate(steps):
        if start is None:
            start = s
        if i + 1 == len(steps) or steps[i + 1] != s + 1:
            parts.append(f"{start}" if start == s else f"{start}-{s}")
            start = None
    return ", ".join(parts)


def _model_class(name: str):
    from ..models import MODELS

    return MODELS[name]


def check_options(what: str, fn, options: dict, key: str) -> None:
    """ConfigError (for config field ``key``) when ``options`` are not keywords of ``fn``, or
    give text where ``fn``'s default is a number, a flag or a list: ``hidden=abc`` is a typo for
    ``hidden=[128,128]``, not a string to iterate."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    names = [n for n, p in params.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in _INTERNAL]
    for name, value in options.items():
        if name not in names:
            if takes_any:
                continue
            raise ConfigError(key=key, problem=f"{name}: {what} has no option {name!r}; its "
                                               f"options: {', '.join(names)}")
        default = params[name].default
        if isinstance(value, str) and isinstance(default, (bool, int, float, tuple, list)):
            kind = ("true or false" if isinstance(default, bool) else
                    "a JSON list" if isinstance(default, (tuple, list)) else "a number")
            raise ConfigError(key=key, problem=f"{name}={value!r} is text, but {name} takes "
                                               f"{kind}, such as {name}={_json_text(default)} "
                                               "(the default)")
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(key=key, problem=f"{name}={_json_text(value)}: {name} takes true or "
                                               "false")


_INTERNAL = ("self", "fmt", "generator")


def _json_text(value) -> str:
    try:
        return json.dumps(list(value) if isinstance(value, tuple) else value).replace(" ", "")
    except (TypeError, ValueError):
        return repr(value)


def _options_text(options: dict) -> str:
    return " ".join(f"{k}={_json_text(v)}" for k, v in options.items()) or "(none)"


class _NoMetrics:
    """The metrics log of a rank that does not write the run directory."""

    def write(self, record: dict) -> None:
        pass

    sync = close = lambda self: None



def _as_float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _eval_text(step, ev) -> str:
    text = f"step {step}: {ev['split']} loss {ev['loss']:.4f}"
    if "accuracy" in ev:
        text += f", accuracy {100 * ev['accuracy']:.2f} %"
    return text


def _make_scheduler(lr_scheduler, optimizer, cfg: TrainConfig):
    if cfg.schedule == "constant":
        if cfg.warmup_steps:
            return lr_scheduler.LinearLR(optimizer, start_factor=1e-3, end_factor=1.0,
                                         total_iters=cfg.warmup_steps)
        return None
    if cfg.schedule == "cosine":
        if cfg.warmup_steps:
            return lr_scheduler.warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps)
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.steps)
    # linear decay to 0 at the last step
    decay_steps = cfg.steps - cfg.warmup_steps
    decay = lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0,
                                  total_iters=decay_steps)
    if not cfg.warmup_steps:
        return decay
    warm = lr_scheduler.LinearLR(optimizer, start_factor=1e-3, end_factor=1.0,
                                 total_iters=cfg.warmup_steps)
    return lr_scheduler.SequentialLR(optimizer, [warm, decay], milestones=[cfg.warmup_steps])


class _RunLock:
    """An exclusive ``flock`` on ``RUN/.lock`` while a process trains the run, so that two
    processes never train it at once; the kernel drops it if the process dies. The file is
    removed when the lock is released: a process that opened the old file before the removal
    finds, once it holds its lock, that the path no longer names that file, and tries again on
    the new one. ``_RunLock.acquire`` returns None where ``fcntl`` does not exist (Windows)."""

    def __init__(self, path: Path, file):
        self.path, self.file = path, file

    @classmethod
    def acquire(cls, run_dir: Path):
        try:
            import fcntl
        except ImportError:
            return None
        path = run_dir / ".lock"
        while True:
            f = open(path, "a+")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                raise CheckpointError(f"{run_dir} is being trained by another process right "
                                      "now") from None
            try:
                same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return cls(path, f)
            f.close()  # the holder removed the file as we opened it: lock the new one

    def release(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass
        self.file.close()


# Errors of the machine, not of simprec: a full disk, a quota, a read-only or forbidden path.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def _write_failure(err: OSError, run_dir: RunDir) -> str:
    """One line for a write that failed during a run: what, why, and how to continue."""
    found = find_checkpoints(run_dir.checkpoints)
    where = f" {err.filename}" if err.filename else ""
    last = (f"its last checkpoint is step {found[-1][0]}; " if found else "")
    return (f"cannot write{where}: {err.strerror or err} (the run directory stays valid: {last}"
            f"make room, then continue with: simprec train --resume {run_dir})")


def _config_id(cfg: TrainConfig) -> str:
    """A fingerprint of the settings that decide the numbers (not record/keep/eval cadence)."""
    import hashlib
    import json

    d = cfg.to_dict()
    for k in ("record", "keep_checkpoints"):
        d.pop(k, None)
    if d.get("ranks") == 1:  # the ids of single-process runs predate the field
        d.pop("ranks")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _default_out(cfg: TrainConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{cfg.model}-{cfg.recipe}-{stamp}"
    out, i = base, 2
    while out.exists():
        out, i = base.with_name(f"{base.name}-{i}"), i + 1
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: simprec train (or python -m simprec train)")


def _throughput(batch, seconds: float, model, backend: str, recipe, devices: int = 1) -> dict:
    """A step's speed: samples (and, for token ids, tokens) per second; with a half-precision
    recipe on a backend that knows its GPU's peak, also the model FLOP utilisation (MFU):
    6 * parameters * tokens (or samples) per step over the dense half-precision peak of the
    ``devices`` that share the step (the ranks of a data-parallel job)."""
    if seconds <= 0:
        return {}
    x = batch[0]
    samples = x.shape[0] if x.shape else 1
    out = {"samples_per_s": round(samples / seconds, 2)}
    units = samples
    if not x.fmt.is_float and x.ndim >= 2:  # token ids
        units = x.size
        out["tokens_per_s"] = round(units / seconds, 1)
    peak = _peak_flops(backend, recipe)
    if peak:
        params = sum(p.size for p in model.parameters())
        out["mfu"] = round(6.0 * params * units / seconds / (peak * devices), 4)
    return out


def _peak_flops(backend: str, recipe) -> float | None:
    """The backend's dense half-precision peak (FLOP/s) for a half-precision recipe, where the
    backend knows it (`peak_flops()`: the torch backend on an H100/H200), else None."""
    from ..backend import get_backend
    from ..formats import fp32

    if getattr(recipe, "autocast_fmt", None) is None and getattr(recipe, "model_fmt", fp32) == fp32:
        return None
    peak = getattr(get_backend(backend), "peak_flops", None)
    return peak() if callable(peak) else None


def _speed_text(speed: dict) -> str:
    if "tokens_per_s" in speed:
        text = f"{speed['tokens_per_s']:.0f} tok/s"
    elif "samples_per_s" in speed:
        text = f"{speed['samples_per_s']:.0f} samples/s"
    else:
        return ""
    return text + (f" MFU {100 * speed['mfu']:.1f}%" if "mfu" in speed else "")
