"""The names a run can choose from, read from the layers that own them.

Models from ``simprec.models.MODELS``, datasets from ``simprec.data.DATASETS``, recipes from
``simprec.amp``, accumulation models from ``simprec.accumulate.MODELS``, backends from
``simprec.backend``. A wrong name raises ConfigError listing the valid ones.
"""

from __future__ import annotations

from .errors import ConfigError

# Which dataset each kind of model reads. A model not listed here is assumed to classify
# digits given as flat vectors.
MODEL_DATA = {"mlp": ("digits",), "cnn": ("digits",), "gpt": ("text",)}


def model_names() -> list[str]:
    from ..models import MODELS

    return sorted(MODELS)


def data_names() -> list[str]:
    from ..data import DATASETS

    return sorted(DATASETS)


def recipe_names() -> list[str]:
    from ..amp import RECIPES

    return sorted(RECIPES)


def accumulate_names() -> list[str]:
    from ..accumulate import MODELS

    return list(MODELS)


def check_choice(what: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose from: {', '.join(choices)}")


def check_backend(name: str) -> None:
    from ..backend import available_backends, get_backend

    try:
        get_backend(name)
    except (ValueError, TypeError, ImportError, RuntimeError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "unknown backend" in msg:
            raise ConfigError(f"unknown backend {name!r}; choose from: "
                              f"{', '.join(available_backends())}") from None
        raise ConfigError(f"backend {name!r} is not usable here: {msg}") from None


def check_model_data(model: str, data: str) -> None:
    allowed = MODEL_DATA.get(model)
    if allowed is not None and data not in allowed:
        raise ConfigError(f"model {model!r} does not train on data {data!r}; it needs: "
                          f"{', '.join(allowed)}")
