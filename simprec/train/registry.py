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
    """ConfigError (for the field ``what``) unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose from: {', '.join(choices)}",
                          key=what, problem=f"is {value!r}, not one of: {', '.join(choices)}")


# The GPU backends: the package that implements each, and the library it needs.
GPU_BACKENDS = {"cupy": ("simprec_cupy", "cupy", "simprec[cupy]"),
                "torch": ("simprec_torch", "torch", "simprec[torch]")}


def check_backend(name: str) -> None:
    """ConfigError unless backend ``name`` can be created here. A GPU backend whose package or
    library cannot be imported gets one plain line naming what is missing and how to get it."""
    from ..backend import available_backends, get_backend

    if not isinstance(name, str):
        raise ConfigError(f"--backend must be a name, got {name!r}", key="backend",
                          problem=f"must be a name, got {name!r}")
    try:
        get_backend(name)
    except (ValueError, TypeError, ImportError, RuntimeError) as err:
        missing = _missing_module(err)
        prefix = name.partition(":")[0]
        if missing is not None and prefix in GPU_BACKENDS:
            package, library, extra = GPU_BACKENDS[prefix]
            what = (f"its package {package} (it ships in backends/{package} of a source "
                    f"checkout, and needs {library}: pip install '{extra}')"
                    if missing == package else f"{missing}, which {package} needs "
                                               f"(pip install '{extra}')")
            text = f"is not installed or not importable here: cannot import {what}"
        else:
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            if "unknown backend" in msg:
                raise ConfigError(f"unknown backend {name!r}; choose from: "
                                  f"{', '.join(available_backends())}", key="backend",
                                  problem=f"is {name!r}, not one of: "
                                          f"{', '.join(available_backends())}") from None
            prefix_text = f"backend {name!r} is not usable here: "
            text = "is not usable here: " + (msg[len(prefix_text):] if msg.startswith(prefix_text)
                                             else msg)
        raise ConfigError(f"backend {name!r} {text}", key="backend",
                          problem=f"{name!r} {text}") from None


def _missing_module(err: BaseException) -> str | None:
    """The top-level name of the module whose import failed somewhere in ``err``'s chain."""
    while err is not None:
        if isinstance(err, ModuleNotFoundError) and err.name:
            return err.name.partition(".")[0]
        err = err.__cause__ or err.__context__
    return None


def check_model_data(model: str, data: str) -> None:
    allowed = MODEL_DATA.get(model)
    if allowed is not None and data not in allowed:
        raise ConfigError(f"model {model!r} does not train on data {data!r}; it needs: "
                          f"{', '.join(allowed)}")
