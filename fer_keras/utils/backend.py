"""Whether TensorFlow is installed, for the parts that need it whatever the Keras backend."""

import os

TENSORFLOW_EXTRAS = 'pip install -e ".[cpu]" (or ".[gpu]" for a CUDA GPU)'


def require_tensorflow(what):
    """Raises a `ValueError` saying `what` needs TensorFlow, when it is not installed.

    Training, evaluation and prediction run on any Keras backend, so a `.[jax]` or
    `.[torch]` install has no TensorFlow; SavedModel and TFLite export need it.
    """
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise ValueError(
            f"{what} needs TensorFlow, which is not installed here (the jax and torch "
            f"extras leave it out). Install the cpu or gpu extra: {TENSORFLOW_EXTRAS}. "
            f"Received: KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'tensorflow')}"
        ) from None
