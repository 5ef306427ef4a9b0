"""The configuration of a training run: every choice, resolved, validated, stored as JSON.

A :class:`TrainConfig` holds names (model, data, recipe, backend, optimizer, schedule) and
numbers. Fields left ``None`` take the defaults of the model's preset (:data:`PRESETS`), so
``TrainConfig()`` is the project's main job (an MLP on the digits with the amp-fp16 recipe) and
``TrainConfig(model="gpt")`` a tiny GPT on the text corpus with settings that suit it.
:meth:`TrainConfig.resolve` fills the presets in and checks everything, raising
:class:`~simprec.train.errors.ConfigError` with a one-line reason that lists the valid choices.
The resolved config is what ``config.json`` stores and what ``--resume`` compares against.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .errors import ConfigError, option_flag

__all__ = ["OPTIMIZERS", "PRESETS", "SCHEDULES", "TrainConfig"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "linear")

# Defaults per model. Digits runs are sized to finish in about a minute on 2 CPU cores.
PRESETS: dict[str, dict] = {
    "mlp": dict(data="digits", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.0,
                batch_size=64, steps=1000, schedule="cosine", warmup_steps=0, eval_every=100,
                checkpoint_every=100, clip_grad_norm=None),
    "cnn": dict(data="digits", optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.0,
                batch_size=64, steps=600, schedule="cosine", warmup_steps=0, eval_every=100,
                checkpoint_every=100, clip_grad_norm=None),
    "gpt": dict(data="text", optimizer="adamw", lr=3e-3, momentum=0.9, weight_decay=0.01,
                batch_size=16, steps=300, schedule="cosine", warmup_steps=20, eval_every=100,
                checkpoint_every=50, clip_grad_norm=1.0, block_size=64),
}
_FALLBACK_PRESET = dict(data="digits", optimizer="adam", lr=1e-3, momentum=0.9,
                        weight_decay=0.0, batch_size=64, steps=500, schedule="cosine",
                        warmup_steps=0, eval_every=100, checkpoint_every=100,
                        clip_grad_norm=None)


@dataclass
class TrainConfig:
    """Everything that determines a run's numbers (and a few things that do not: ``record``).

    ``steps`` counts optimizer steps (skipped ones included, as torch's loop counts them);
    ``epochs`` (digits only) is converted to steps. ``eval_every`` / ``checkpoint_every`` of 0
    mean "only at the end". ``threads`` pins the BLAS library's threads (0: leave them alone):
    OpenBLAS's sgemm sums in an order that can depend on the thread count, so it is part of
    what makes a run reproducible. ``model_options`` / ``recipe_options`` are handed to
    ``build_model`` / ``amp.get_recipe``. ``ranks`` is the number of data-parallel ranks the
    global batch of ``batch_size`` examples is dealt to (``torchrun``'s processes or
    ``--simulate-ranks``; simprec.distributed): it changes the numbers, so it is part of the run.
    """

    model: str = "mlp"
    data: str | None = None
    recipe: str = "amp-fp16"
    backend: str = "numpy"
    accumulate: str = "fp32"
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    warmup_steps: int | None = None
    clip_grad_norm: float | None = None
    seed: int = 0
    threads: int = 1
    eval_every: int | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    block_size: int | None = None
    record: bool = False
    model_options: dict = field(default_factory=dict)
    recipe_options: dict = field(default_factory=dict)
    ranks: int = 1

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ resolution
    def resolve(self, *, steps_per_epoch=None) -> TrainConfig:
        """A copy with the preset defaults filled in and every field checked.

        ``steps_per_epoch(config) -> int`` converts ``epochs`` to ``steps`` (the trainer passes
        it; it needs the dataset). Raises ConfigError.
        """
        from . import registry

        for name in ("model_options", "recipe_options"):
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise ConfigError(key=name, problem="must be a set of KEY=VALUE options (a JSON "
                                                    f"object), got {value!r}")
            for key in value:
                if not isinstance(key, str) or not key.isidentifier():
                    raise ConfigError(key=name, problem=f"has an option named {key!r}, which is "
                                                        "not a keyword name")
        cfg = dataclasses.replace(self, model_options=dict(self.model_options),
                                  recipe_options=dict(self.recipe_options))
        registry.check_choice("model", cfg.model, registry.model_names())
        preset = PRESETS.get(cfg.model, _FALLBACK_PRESET)
        from_preset = set()
        for key, value in preset.items():
            if getattr(cfg, key) is None:
                setattr(cfg, key, value)
                from_preset.add(key)
        if cfg.data is None:
            cfg.data = "digits"
        registry.check_choice("data", cfg.data, registry.data_names())
        registry.check_choice("recipe", cfg.recipe, registry.recipe_names())
        registry.check_choice("accumulate", cfg.accumulate, registry.accumulate_names())
        registry.check_backend(cfg.backend)
        registry.check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
        registry.check_choice("schedule", cfg.schedule, SCHEDULES)
        registry.check_model_data(cfg.model, cfg.data)

        _int(cfg, "seed", lo=0)
        _int(cfg, "threads", lo=0)
        _int(cfg, "batch_size", lo=1)
        _int(cfg, "ranks", lo=1)
        if cfg.batch_size % cfg.ranks:
            raise ConfigError(f"--batch-size {cfg.batch_size} is not a multiple of the "
                              f"{cfg.ranks} data-parallel ranks (each rank takes "
                              "batch_size / ranks examples of every batch)")
        _int(cfg, "keep_checkpoints", lo=1)
        _int(cfg, "warmup_steps", lo=0)
        _int(cfg, "eval_every", lo=0)
        _int(cfg, "checkpoint_every", lo=0)
        if cfg.data == "text":
            if cfg.block_size is None:
                cfg.block_size = 64
            _int(cfg, "block_size", lo=1)
        else:
            cfg.block_size = None
        _float(cfg, "lr", positive=True)
        _float(cfg, "momentum", lo=0.0, hi=1.0)
        _float(cfg, "weight_decay", lo=0.0)
        if cfg.clip_grad_norm is not None:  # 0 = off
            _float(cfg, "clip_grad_norm", lo=0.0)
        if not isinstance(cfg.record, bool):
            raise ConfigError(key="record", problem=f"must be true or false, got {cfg.record!r}")
        for key in ("accumulate", "clip_grad_norm"):
            if key in cfg.recipe_options:
                raise ConfigError(f"give {option_flag(key)} as its own option, not as a recipe "
                                  "option", key="recipe_options",
                                  problem=f"may not hold {key!r} (it is a field of its own)")

        if cfg.epochs is not None:
            _int(cfg, "epochs", lo=1)
            if cfg.data == "text":
                raise ConfigError(key="epochs", problem="needs a dataset with epochs (digits): the "
                                  "text corpus is sampled at random; give a number of steps")
            if steps_per_epoch is None:
                raise ConfigError("epochs cannot be converted to steps here")
            steps = cfg.epochs * int(steps_per_epoch(cfg))
            if self.steps is not None and self.steps != steps:  # (a resolved config has both)
                raise ConfigError("give --steps or --epochs, not both")
            cfg.steps = steps
        _int(cfg, "steps", lo=1)
        if "warmup_steps" in from_preset:  # a short run gets a short warm-up
            cfg.warmup_steps = min(cfg.warmup_steps, cfg.steps // 10)
        if cfg.warmup_steps >= cfg.steps and cfg.warmup_steps > 0:
            raise ConfigError(key="warmup_steps", problem=f"({cfg.warmup_steps}) must be "
                                                          f"smaller than steps ({cfg.steps})")
        return cfg


def _int(cfg, name, *, lo):
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            if isinstance(value, float) and value == int(value):
                value = int(value)
            else:
                raise TypeError
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(key=name, problem=f"must be an integer, got {value!r}") from None
        setattr(cfg, name, value)
    if value < lo:
        what = "positive" if lo == 1 else "zero or positive"
        raise ConfigError(key=name, problem=f"must be {what}, got {value}")


def _float(cfg, name, *, lo=None, hi=None, positive=False):
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key=name, problem=f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(key=name, problem=f"must be finite, got {value}")
    if positive and value <= 0:
        raise ConfigError(key=name, problem=f"must be positive, got {value}")
    if lo is not None and value < lo:
        raise ConfigError(key=name, problem=f"must be >= {lo:g}, got {value:g}")
    if hi is not None and value > hi:
        raise ConfigError(key=name, problem=f"must be <= {hi:g}, got {value:g}")
    setattr(cfg, name, value)



