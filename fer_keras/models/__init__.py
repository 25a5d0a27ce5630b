"""The model zoo. Importing this package registers every architecture family.

Every model takes raw pixels `(48, 48, 1)` in 0-255, rescales them inside its own graph,
and outputs float32 softmax probabilities over its label set's classes (FER2013's 7 in
Kaggle id order, unless its run records others) from a layer named "probabilities" (or
from a `MirrorAverage` layer around such a model).
"""

import numbers
import zipfile

from fer_keras.models import baselines, classic, deep_emotion, dexpression, resnet, vgg  # noqa: F401
from fer_keras.models.calibration import TemperatureScaling  # noqa: F401  (for load_model)
from fer_keras.models.layers import (  # noqa: F401
    LocalResponseNormalization,
    MirrorAverage,
    SpatialTransformer,
    TestTimeAugmentation,
    graph_inputs,
)
from fer_keras.models.registry import get_builder, get_model, list_models, register_model  # noqa: F401
from fer_keras.models.schedules import WarmupCosine  # noqa: F401  (registers it for load_model)


def check_class_probabilities(output_shape, source, label_set=None):
    """Raises a `ValueError` unless a model outputs one `(batch, classes)` probability
    vector, one per class of its label set.

    The label set is `label_set` if given, else the one recorded for `source` (a run
    folder's `config.json`, an export's `labels.txt`: `fer_keras.data.labels.label_set_of`),
    else any registered one (7 classes for FER2013, 8 for FER+). Scoring, prediction and
    export read each output row as the probabilities of those classes in their order, so a
    model with another output (10 classes, several heads) would otherwise be scored or
    served wrongly without a word.

    Args:
        output_shape: a Keras `model.output_shape` (a list of shapes for several outputs),
            or a `tf.TensorShape`.
        source: the model's file or folder, named in the message (and read for a recorded
            label set where it is a path).
        label_set: the model's `LabelSet`, where the caller knows it.

    Returns:
        The shape, as a tuple.

    Example:

    >>> check_class_probabilities(get_model("baseline").output_shape, "baseline")
    (None, 7)
    """
    from fer_keras.data.labels import (
        get_label_set,
        label_set_of,
        list_label_sets,
        recorded_label_set,
    )

    if hasattr(output_shape, "as_list"):
        output_shape = output_shape.as_list() if output_shape.rank is not None else None
    shape = output_shape
    recorded = label_set is not None or recorded_label_set(source) is not None
    if isinstance(shape, (list, tuple)) and all(
            size is None or isinstance(size, numbers.Integral) for size in shape):
        shape = tuple(None if size is None else int(size) for size in shape)
        if len(shape) == 2 and shape[-1] is not None and recorded:
            if label_set is None:
                label_set_of(source, shape[-1])  # One line naming the record on a mismatch.
            elif label_set.num_classes != shape[-1]:
                raise ValueError(f"{source} has {shape[-1]} outputs but its label set "
                                 f"{label_set.name!r} has {label_set.num_classes} classes; "
                                 f"pass the model of that label set. Received: "
                                 f"output_shape={output_shape}")
            return shape
        known = {get_label_set(name).num_classes: name
                 for name in reversed(list_label_sets())}
        if len(shape) == 2 and shape[-1] in known:
            return shape
    known = {get_label_set(name).num_classes: name for name in reversed(list_label_sets())}
    counts = " or ".join(f"{count} ({name})" for count, name in sorted(known.items()))
    where = "its run's classes" if recorded else "a known label set"
    raise ValueError(f"{source} does not output class probabilities of {where}: "
                     f"fer_keras reads a model's output as shape (batch, classes) with "
                     f"{counts} classes, or as many as its run records. Pass a model "
                     f"trained by `python -m fer_keras.fit` or `fer_keras.finetune`. "
                     f"Received: output_shape={output_shape}")


def archive_damage(path, check_contents=True):
    """Why the `.keras` file `path` is not an intact zip archive, or None if it is.

    Keras reports any file that is not a zip archive as "File not found", which misleads
    when the file is there but was cut short by a full disk or an interrupted copy.

    Args:
        path: an existing file.
        check_contents: also decompress every member and check its CRC (reads it all).
    """

    if not zipfile.is_zipfile(path):
        return "it is not a complete zip archive, as a .keras file is; its end is missing"
    if not check_contents:
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        return f"its zip archive cannot be read ({error})"
    return None if bad_member is None else f"its member {bad_member} fails the CRC check"


def with_dtype_policy(model, policy="float32"):
    """Rebuilds `model` with every layer under `policy`, sharing nothing but weight values.

    A model trained under `mixed_bfloat16` keeps float32 weights, so the same weights run in
    float32 exactly. Inference uses float32 by default: it is the reference the tests
    compare against, what the TFLite converter and most serving CPUs handle, and on this
    package's models it scores within a few hundredths of a point of bfloat16 inference.

    Returns:
        `model` itself when no layer uses another policy, else a rebuilt copy.
    """
    # Keras loads on first use, so a command's --help and start-up stay fast.
    import json

    import keras

    config = keras.saving.serialize_keras_object(model)
    policies = set()

    def convert(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
                policies.add(node["config"].get("name"))
                return {**node, "config": {**node["config"], "name": policy}}
            return {key: convert(value) for key, value in node.items()}
        if isinstance(node, list):
            return [convert(value) for value in node]
        return node

    converted = convert(json.loads(json.dumps(config)))
    if policies <= {policy}:
        return model
    rebuilt = keras.saving.deserialize_keras_object(converted)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def with_bare_input(model):
    """`model`, or the same graph rebuilt around its one input when it was recorded as a
    one-element list (`keras.Model([image], ...)`), which makes Keras warn that "the
    structure of `inputs` doesn't match" at every call with a batch. Weights and layers are
    shared; nothing is computed differently."""
    import keras

    struct = getattr(model, "_inputs_struct", None)
    if not (isinstance(model, keras.Model) and isinstance(struct, (list, tuple))
            and len(struct) == 1 and len(getattr(model, "outputs", None) or ()) == 1):
        return model
    return keras.Model(model.inputs[0], model.outputs[0], name=model.name)


def load_model(path, compile=False, dtype_policy="float32"):
    """Loads a `.keras` file written by fer_keras (custom layers are registered here).

    Args:
        path: the `.keras` file.
        compile: restore the optimizer and loss too (only needed to continue training).
        dtype_policy: run the loaded model under this Keras dtype policy (see
            `with_dtype_policy`); None keeps the policy it was trained with (so a
            `mixed_bfloat16` run computes in bfloat16). Ignored when `compile` is True.

    Raises:
        ValueError: if the file is missing, truncated or damaged, or is not a Keras
            archive.
    """
    # Keras loads on first use, so a command's --help and start-up stay fast.
    from pathlib import Path

    import keras

    path = Path(path)
    if not path.exists():
        raise ValueError(f"Model file not found: {path}. Train one with "
                         "`python -m fer_keras.fit EXPERIMENT` (it writes "
                         "saved_models/EXPERIMENT/model.keras).")

    def damaged(problem):
        return ValueError(f"{path} is truncated or damaged: {problem} ({path.stat().st_size:,} "
                          f"bytes). Re-train it with `python -m fer_keras.fit EXPERIMENT`, or "
                          f"copy or download it again.")

    # A .keras file is a zip archive (a legacy .h5 file, which Keras also loads, is not).
    is_archive = path.suffix == ".keras" and path.is_file()
    problem = archive_damage(path, check_contents=False) if is_archive else None
    if problem is not None:
        raise damaged(problem)
    try:
        model = keras.saving.load_model(path, compile=compile)
    except Exception as error:  # Keras raises several types for a bad archive.
        problem = archive_damage(path) if is_archive else None
        if problem is not None:
            raise damaged(problem) from error
        raise ValueError(f"Cannot load {path} as a Keras model: {error}") from error
    if compile:
        return model
    if dtype_policy is not None:
        model = with_dtype_policy(model, dtype_policy)
    return with_bare_input(model)
