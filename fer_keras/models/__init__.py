"""The model zoo. Importing this package registers every architecture family.

Every model takes raw pixels `(48, 48, 1)` in 0-255, rescales them inside its own graph,
and outputs float32 softmax probabilities over the 7 classes (Kaggle id order) from a
layer named "probabilities" (or from a `MirrorAverage` layer around such a model).
"""

from fer_keras.models import baselines, classic, deep_emotion, dexpression, vgg  # noqa: F401
from fer_keras.models.layers import (  # noqa: F401
    LocalResponseNormalization, MirrorAverage, SpatialTransformer)
from fer_keras.models.registry import get_builder, get_model, list_models, register_model  # noqa: F401


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
