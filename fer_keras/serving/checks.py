"""Checks that a loaded model is one fer_keras can score, classify with and export.

`predict`, `evaluate` and `export` read a model as "48x48 gray faces in, 7 probabilities
out". A model that breaks that contract would otherwise fail deep inside Keras (an unbuilt
`Sequential` has no input shape at all) or, worse, run and print nonsense (a model ending
in logits gives "probabilities" of -70901.98). These checks turn each such model into one
line naming the file and the fix, before any work is done with it.

Example:

>>> from fer_keras.serving.checks import check_keras_model
>>> check_keras_model(load_model("saved_models/baseline/model.keras"), "baseline")
(48, 48, 1)
"""

import numpy as np

FACE_SHAPE = (48, 48, 1)
"""FER2013's faces: 48x48 gray, the input every fer_keras model takes."""

PROBE_COUNT = 4
"""Random faces the output check runs the model on (one small batch)."""

PROBE_SEED = 0

SUM_TOLERANCE = 0.02
"""How far a row of probabilities may sum from 1. Float32 softmax rows are within 1e-6;
an int8 TFLite file stores each probability in steps of 1/256, so its rows can be off by
a few of those steps."""

NEGATIVE_TOLERANCE = 1e-3
"""How far below 0 a probability may be (rounding only; a softmax is never negative)."""


def keras_input_shape(model, source):
    """The `(height, width, channels)` of a Keras model's one input.

    Args:
        model: a loaded Keras model.
        source: its file, named in the messages.

    Raises:
        ValueError: for a model saved before being built (no input shape), or a model
            with several inputs.
    """
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        # Keras raises AttributeError for an unbuilt Sequential, ValueError for some
        # subclassed models that were never called.
        raise ValueError(
            f"{source} has no input shape: it was saved before being built; build it "
            f"(start it with keras.Input(shape={FACE_SHAPE}), or call "
            f"model.build((None, {', '.join(map(str, FACE_SHAPE))})) before saving) and save "
            f"it again.") from None
    if isinstance(shape, list) or (isinstance(shape, tuple) and shape
                                   and isinstance(shape[0], (tuple, list))):
        raise ValueError(f"{source} takes {len(shape)} inputs; fer_keras feeds one, gray "
                         f"face crops of shape (batch, {', '.join(map(str, FACE_SHAPE))}). "
                         f"Received: input_shape={shape}")
    return tuple(shape[1:])


def image_size(shape, source):
    """`(height, width)` fer_keras feeds a model whose input shape (batch left out) is `shape`.

    A height or width the model leaves open (None, as in a fully convolutional net's
    `(None, None, 1)`) is fed at FER2013's 48, the size such a model was trained on.

    Raises:
        ValueError: unless `shape` is `(height, width, 1)`.
    """
    shape = tuple(shape)
    if len(shape) != 3 or shape[-1] != 1:
        raise ValueError(f"{source} takes input shape {shape}; fer_keras feeds gray face "
                         f"crops of shape (height, width, 1), FER2013's being {FACE_SHAPE}. "
                         f"Received: input_shape={shape} (batch left out)")
    return tuple(FACE_SHAPE[axis] if size is None else int(size)
                 for axis, size in enumerate(shape[:2]))


def check_fixed_shape(shape, source, what="export"):
    """Raises a `ValueError` unless `shape` is a fully fixed `(height, width, 1)`."""
    image_size(shape, source)
    if None in tuple(shape):
        raise ValueError(f"{source} takes input shape {tuple(shape)}, which is not fully "
                         f"fixed; {what} needs a fixed size such as {FACE_SHAPE}. Rebuild it "
                         f"with keras.Input(shape={FACE_SHAPE}), load the weights and save it "
                         f"again.")


def check_takes_faces(shape, source, what="evaluate"):
    """Raises a `ValueError` unless a model of input `shape` takes 48x48 gray faces."""
    image_size(shape, source)
    if any(size is not None and size != wanted for size, wanted in zip(shape, FACE_SHAPE)):
        raise ValueError(f"{source} takes input shape {tuple(shape)}; {what} feeds FER2013's "
                         f"48x48 gray faces, shape {FACE_SHAPE}. Pass a model trained on "
                         f"them (`python -m fer_keras.fit EXPERIMENT`).")


def probe_faces(size, count=PROBE_COUNT, seed=PROBE_SEED):
    """Random uint8 faces `(count, height, width, 1)` to probe a model's outputs with."""
    return np.random.default_rng(seed).integers(0, 256, (count, *size, 1), dtype=np.uint8)


def check_probabilities(probabilities, source):
    """Raises a `ValueError` unless every row of `probabilities` is a probability vector.

    Args:
        probabilities: a model's outputs `(batch, 7)` on `probe_faces`.
        source: the model file, named in the message.

    Returns:
        The outputs as a float64 array.
    """
    values = np.asarray(probabilities, np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"{source} gave outputs of shape {values.shape} for "
                         f"{PROBE_COUNT} faces; fer_keras reads (batch, 7) probabilities.")
    sums = values.sum(axis=1)
    if not np.isfinite(values).all():
        problem = "NaN or infinite values (were its weights trained to NaN?)"
    elif values.min() < -NEGATIVE_TOLERANCE:
        problem = f"negative values (as low as {values.min():.6g})"
    elif np.abs(sums - 1.0).max() > SUM_TOLERANCE:
        problem = f"rows summing to {sums[np.argmax(np.abs(sums - 1.0))]:.6g}, not 1"
    else:
        return values
    raise ValueError(f"{source} does not output probabilities: on {len(values)} random "
                     f"48x48 faces it gives {problem}, as a model ending in logits does. "
                     f"End it with a softmax (activation=\"softmax\" on its last Dense "
                     f"layer, or a keras.layers.Softmax()) and save it again.")


def keras_probabilities(model, faces):
    """`model`'s outputs for uint8 `faces`, as NumPy (one eager call, no tracing)."""
    # Keras loads on first use, so a command's --help and start-up stay fast.
    import keras

    return keras.ops.convert_to_numpy(model(faces.astype("float32"), training=False))


def check_keras_model(model, source, what=None):
    """All checks on a loaded Keras model: built, gray input, 7 outputs, probabilities.

    Args:
        model: the loaded model.
        source: its file, named in the messages.
        what: "export" also needs a fully fixed input size; "evaluate" needs one that
            takes 48x48 faces; None (predict) takes any gray size, open sizes fed at 48.

    Returns:
        The model's input shape `(height, width, channels)` (batch left out).

    Raises:
        ValueError: with one line naming `source` and the fix.
    """
    # These import Keras; loaded on first use, so --help stays fast.
    from fer_keras.models import check_class_probabilities

    shape = keras_input_shape(model, source)
    size = image_size(shape, source)
    if what == "export":
        check_fixed_shape(shape, source, what)
    elif what is not None:
        check_takes_faces(shape, source, what)
    try:
        output_shape = model.output_shape
    except (AttributeError, ValueError):
        output_shape = None
    check_class_probabilities(output_shape, source)
    check_probabilities(keras_probabilities(model, probe_faces(size)), source)
    return shape
