"""The one model registry: every builder registers here under a unique name."""

import inspect
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # Only for the annotations: the registry itself never needs Keras.
    import keras

_MODELS = {}


def register_model(function=None, *, name=None, forwards_to=None):
    """Registers a model builder, as a decorator (`@register_model`) or a call.

    Args:
        function: the builder; it must accept `input_shape` and `num_classes` keywords.
        name: registry name; defaults to the function's name.
        forwards_to: for a thin variant whose `**kwargs` go on to a generic builder, that
            builder, so `builder_accepts` can see the keywords it takes.

    Raises:
        ValueError: if the name is already registered.
    """

    def decorate(builder):
        key = name or builder.__name__
        if key in _MODELS:
            raise ValueError(f"Model {key!r} is already registered by "
                             f"{_MODELS[key].__module__}. Pick another name.")
        builder.forwards_to = forwards_to
        _MODELS[key] = builder
        return builder

    return decorate(function) if function is not None else decorate


def list_models() -> "list[str]":
    """Returns the sorted names of all registered models."""
    return sorted(_MODELS)


def get_builder(name: str) -> "Callable[..., keras.Model]":
    """Returns the builder function registered under `name`; unknown names suggest the
    closest ones and list the valid ones."""
    if name not in _MODELS:
        from fer_keras.utils.names import did_you_mean

        raise ValueError(f"Unknown model {name!r}.{did_you_mean(name, list_models())} "
                         f"Valid names: {', '.join(list_models())}. Received: name={name!r}")
    return _MODELS[name]


def get_model(name: str, **kwargs: Any) -> "keras.Model":
    """Builds a registered model.

    Args:
        name: a name from `list_models()`.
        **kwargs: forwarded to the builder (e.g. `dropout_rate`, `input_shape`).

    Returns:
        A `keras.Model` that takes raw pixels (0-255) and outputs class probabilities.
    """
    return get_builder(name)(**kwargs)


def builder_accepts(name: str, keyword: str) -> bool:
    """Whether the builder registered as `name` takes `keyword`, directly or through the
    generic builder its `**kwargs` are forwarded to."""

    builder = get_builder(name)
    while builder is not None:
        parameters = inspect.signature(builder).parameters
        if keyword in parameters:
            return True
        if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
            return False
        builder = getattr(builder, "forwards_to", None)
    return False
