"""The model zoo. Importing this package registers every architecture family.

Every model takes raw pixels `(48, 48, 1)` in 0-255, rescales them inside its own graph,
and outputs float32 softmax probabilities over the 7 classes (Kaggle id order) from a
layer named "probabilities" (or from a `MirrorAverage` layer around such a model).
"""

from fer_keras.models import baselines, classic, deep_emotion, dexpression, vgg  # noqa: F401
from fer_keras.models.layers import (  # noqa: F401
    LocalResponseNormalization, MirrorAverage, SpatialTransformer)
from fer_keras.models.registry import get_builder, get_model, list_models, register_model  # noqa: F401


def check_class_probabilities(output_shape, source):
    """Raises a `ValueError` unless a model outputs one `(batch, 7)` probability vector.

    Scoring, prediction and export read each output row as the probabilities of the 7
    FER2013 classes in Kaggle order, so a model with another output (10 classes, several
    heads) would otherwise be scored or served wrongly without a word.

    Args:
        output_shape: a Keras `model.output_shape` (a list of shapes for several outputs),
            or a `tf.TensorShape`.
        source: the model's file or folder, named in the message.

    Returns:
        The shape, as a tuple.

    Example:

    >>> check_class_probabilities(get_model("baseline").output_shape, "baseline")
    (None, 7)
    """
    import numbers

    from fer_keras.data import CLASS_NAMES

    if hasattr(output_shape, "as_list"):
        output_shape = output_shape.as_list() if output_shape.rank is not None else None
    shape = output_shape
    if isinstance(shape, (list, tuple)) and all(
            size is None or isinstance(size, numbers.Integral) for size in shape):
        shape = tuple(None if size is None else int(size) for size in shape)
        if len(shape) == 2 and shape[-1] == len(CLASS_NAMES):
            return shape
    raise ValueError(f"{source} does not output {len(CLASS_NAMES)} class probabilities: "
                     f"fer_keras reads a model's output as shape (batch, {len(CLASS_NAMES)}), "
                     f"one probability per FER2013 class ({', '.join(CLASS_NAMES)}). Pass a "
                     f"model trained by `python -m fer_keras.fit` (num_classes="
                     f"{len(CLASS_NAMES)}). Received: output_shape={output_shape}")


def load_model(path, compile=False):
    """Loads a `.keras` file written by fer_keras (custom layers are registered here).

    Args:
        path: the `.keras` file.
        compile: restore the optimizer and loss too (only needed to continue training).

    Raises:
        ValueError: if the file is missing or is not a Keras archive.
    """
    from pathlib import Path

    import keras

    import fer_keras.training  # noqa: F401  (registers the learning-rate schedule)

    path = Path(path)
    if not path.exists():
        raise ValueError(f"Model file not found: {path}. Train one with "
                         "`python -m fer_keras.fit EXPERIMENT` (it writes "
                         "saved_models/EXPERIMENT/model.keras).")
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as error:  # Keras raises several types for a bad archive.
        raise ValueError(f"Cannot load {path} as a Keras model: {error}") from error
