"""One runner of every model file fer_keras writes: `.keras`, exported SavedModel, `.tflite`.

`Classifier` loads any of them, checks it (`fer_keras.serving.checks`: built, gray input,
one probability per class of its label set, probabilities rather than logits on a probe
batch) and gives class probabilities for uint8 face crops. The label set is the one the
model's run records (`config.json` of a run folder or of the folder of its `model.keras`)
or its export records (`assets/labels.txt`), else the registered one of its output count
(`fer_keras.data.labels.label_set_of`). `predict`, `evaluate`,
`formats` and `bench` all run models through it, so a format is dispatched in one place.

Example:

>>> from fer_keras.serving.runner import Classifier, default_model
>>> classify = Classifier(default_model())
>>> classify(crops).shape  # crops: uint8 (batch, 48, 48, 1)
(8, 7)
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from fer_keras.data.labels import label_set_of
from fer_keras.serving.checks import (
    check_keras_model,
    check_probabilities,
    check_takes_faces,
    image_size,
    probe_faces,
)
from fer_keras.serving.export import existing_versions
from fer_keras.serving.layout import (
    DEFAULT_SIGNATURE,
    EXTRA_FOLDER,
    INPUT_NAME,
    KERAS_FILE,
    PROBABILITIES,
    SAVED_MODEL_FILE,
    SERVING_FOLDER,
    TFLITE_FILE,
)
from fer_keras.serving.litert import TFLiteClassifier
from fer_keras.serving.packaged import ASSET_FOLDER, MODEL_ASSET, packaged_model_file
from fer_keras.training.loop import DEFAULT_ROOT
from fer_keras.training.results import predict_probabilities
from fer_keras.utils.backend import require_tensorflow

LITERT_BATCH = 256
"""The most faces a `.tflite` file is given at once by `Classifier.predict`."""


def find_best_model(root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    """The run folder under `root` with the highest `splits.validation.accuracy`.

    Args:
        root: the folder holding run folders (`saved_models/`).

    Returns:
        The run folder (it holds `model.keras`).

    Raises:
        ValueError: if no run folder has both `metrics.json` and `model.keras`.
    """
    root = Path(root)
    best, best_accuracy = None, -1.0
    for metrics_path in sorted(root.glob("*/metrics.json")):
        if not (metrics_path.parent / KERAS_FILE).is_file():
            continue
        try:
            accuracy = float(json.loads(metrics_path.read_text())
                             ["splits"]["validation"]["accuracy"])
        except (OSError, ValueError, KeyError, TypeError):
            print(f"warning: skipping {metrics_path}: no splits.validation.accuracy",
                  file=sys.stderr)
            continue
        if accuracy > best_accuracy:
            best, best_accuracy = metrics_path.parent, accuracy
    if best is None:
        raise ValueError(f"No trained model found: no run folder under {root}/ has both "
                         f"metrics.json and model.keras. Train one with `python -m "
                         f"fer_keras.fit EXPERIMENT`, or pass --model DIR_OR_FILE.")
    return best


def default_model(root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    """The model to run when none is named: the best run under `root` (`find_best_model`),
    else the model packaged with fer_keras (`fer_keras/assets/default_model.keras`, see
    `fer_keras.serving.packaged`).

    Raises:
        ValueError: in one line, if there is neither.
    """
    try:
        return find_best_model(root)
    except ValueError:
        packaged = packaged_model_file()
        if packaged is not None:
            return packaged
    raise ValueError(f"No trained model found: no run folder under {root}/ has both "
                     f"metrics.json and model.keras, and this fer_keras has no packaged model "
                     f"(fer_keras/{ASSET_FOLDER}/{MODEL_ASSET}). Train one with `python -m "
                     f"fer_keras.fit EXPERIMENT`, pass --model DIR_OR_FILE, or reinstall "
                     f"fer_keras.")


def find_exported_tflite(path: str | os.PathLike) -> Path:
    """The float TFLite file of an export: in a SavedModel folder, or a run folder's newest.

    Raises:
        ValueError: if there is none (with the export command that writes one).
    """
    path = Path(path)
    if path.is_dir() and not (path / SAVED_MODEL_FILE).is_file():
        versions = existing_versions(path / SERVING_FOLDER)
        if versions:
            path = path / SERVING_FOLDER / str(versions[-1])
    candidate = path / EXTRA_FOLDER / TFLITE_FILE
    if not candidate.is_file():
        raise ValueError(f"--litert needs a .tflite file, or a SavedModel or run folder with "
                         f"an exported {candidate.relative_to(path)}; none at {candidate}. "
                         f"Export with `python -m fer_keras.export RUN_FOLDER`, or pass the "
                         f".tflite file as --model. Received: --model {path}")
    return candidate


def model_format(path: str | os.PathLike) -> str:
    """"tflite", "savedmodel" or "keras": how `Classifier` runs `path` (looked at, not
    loaded; a path that is none of them is "keras" and refused when loaded)."""
    path = Path(path)
    if path.suffix == ".tflite":
        return "tflite"
    if path.is_dir() and (path / SAVED_MODEL_FILE).is_file():
        return "savedmodel"
    return "keras"


class Classifier:
    """Class probabilities for batches of uint8 face crops, from any of our model formats.

    Args:
        path: a run folder holding `model.keras`, a `.keras` file, a SavedModel folder
            exported by `fer_keras.export`, or a `.tflite` file (run with LiteRT).
        litert: run the TFLite file exported beside a SavedModel folder
            (`assets.extra/model.tflite`), or beside a run folder's newest export
            (`serving/VERSION/`), with LiteRT instead of TensorFlow.
        num_threads: LiteRT threads (None: the runtime's choice).
        purpose: what the model is checked for: None (predict) takes any gray input size
            (a size the model leaves open is fed at 48); "evaluate" (or another command's
            name, for the messages) needs one that takes FER2013's 48x48 faces.

    Attributes:
        path: the file or folder that runs (the `.tflite` file with `litert`).
        runtime: "tensorflow" (SavedModel), "keras BACKEND" or the LiteRT runtime's name.
        input_shape: `(height, width, 1)`, None where the model leaves a size open.
        label_set: the `fer_keras.data.labels.LabelSet` of the model's outputs (its run's
            or export's record, else by output count).
        model: the Keras model of a `.keras` file (None for the other formats).

    Raises:
        ValueError: in one line naming the file and the fix, for a missing or damaged
            file, a folder holding no model, or a model that fails the checks.
    """

    model_seconds = 0.0
    """Seconds spent inside model calls so far (for the faces/s summary)."""
    faces_classified = 0

    def __init__(self, path: str | os.PathLike, litert: bool = False,
                 num_threads: int | None = None, purpose: str | None = None) -> None:
        path = Path(path)
        self.path = path
        self.model = None
        self._signature = None
        self._lite = None
        if litert and path.suffix != ".tflite":
            path = self.path = find_exported_tflite(path)
        kind = model_format(path)
        if kind == "tflite":
            self._lite = TFLiteClassifier(path, num_threads=num_threads)
            self.input_shape = self._lite.input_shape
            self.runtime = self._lite.runtime
            self.label_set = self._lite.label_set
        elif kind == "savedmodel":
            self._load_savedmodel(path)
        else:
            self._load_keras(path, purpose)
        if purpose is not None and self.model is None:
            # The Keras checks include this one; the exported formats get it here.
            check_takes_faces(self.input_shape, path, purpose)

    def _load_savedmodel(self, path):
        require_tensorflow(f"Loading the SavedModel {path}")
        # TensorFlow loads a SavedModel; it is heavy and absent on the JAX/torch extras.
        import tensorflow as tf

        # The zoo's checks import Keras, loaded here only for a model that runs.
        from fer_keras.models import check_class_probabilities

        self.runtime = "tensorflow"
        loaded = tf.saved_model.load(str(path))
        if DEFAULT_SIGNATURE not in loaded.signatures:
            raise ValueError(f"{path} has no {DEFAULT_SIGNATURE} signature; export it with "
                             f"`python -m fer_keras.export`. Received: --model {path}")
        self._loaded = loaded  # Keeps the variables alive.
        self._signature = loaded.signatures[DEFAULT_SIGNATURE]
        spec = self._signature.structured_input_signature[1]
        if INPUT_NAME not in spec:
            raise ValueError(f"{path}'s {DEFAULT_SIGNATURE} has no '{INPUT_NAME}' input; "
                             f"export it with `python -m fer_keras.export`. Received: "
                             f"{sorted(spec)}")
        self.input_shape = tuple(spec[INPUT_NAME].shape[1:])
        outputs = self._signature.structured_outputs
        shape = check_class_probabilities(outputs[PROBABILITIES].shape
                                          if PROBABILITIES in outputs else sorted(outputs),
                                          path)
        self.label_set = label_set_of(path, shape[-1], str(path))
        # One small batch shows whether the outputs are probabilities, not logits.
        check_probabilities(self._probabilities(probe_faces(image_size(
            self.input_shape, path))), path)

    def _load_keras(self, path, purpose):
        # Keras (and the zoo's custom layers) load only for a model that runs.
        import keras

        from fer_keras.models import load_model

        if path.is_dir():
            if not (path / KERAS_FILE).is_file():
                raise ValueError(f"{path} holds neither model.keras nor saved_model.pb. Pass a "
                                 f"run folder, a .keras file or an exported SavedModel folder. "
                                 f"Received: --model {path}")
            path = path / KERAS_FILE
        # A .keras file runs on whichever Keras backend is active (KERAS_BACKEND).
        self.runtime = f"keras {keras.backend.backend()}"
        self.model = load_model(path)
        # Built, gray input, a known label set's outputs, and probabilities on a probe
        # batch (not logits); "evaluate" also needs 48x48 faces.
        self.input_shape = check_keras_model(self.model, path, purpose)
        self.label_set = label_set_of(path, self.model.output_shape[-1], str(path))

    @property
    def size(self) -> tuple:
        """`(height, width)` of the crops the model takes: a size the model leaves open
        (a fully convolutional `(None, None, 1)`) is FER2013's 48."""
        return image_size(self.input_shape, self.path)

    @property
    def class_names(self) -> tuple:
        """The class of each output, in output order (the label set's names)."""
        return self.label_set.class_names

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities `(batch, classes)` for uint8 crops `(batch, height, width, 1)`."""
        start = time.perf_counter()
        probabilities = self._probabilities(crops)
        self.model_seconds += time.perf_counter() - start
        self.faces_classified += len(crops)
        return probabilities

    def predict(self, images, batch_size: int = 512) -> np.ndarray:
        """Probabilities for a whole split (an array or `ImageFiles`), in batches.

        A Keras model runs with `model.predict` (progress on stderr for large splits, as
        `fer_keras.training.results.predict_probabilities`); a `.tflite` file at most
        `LITERT_BATCH` faces at a time.
        """
        if self.model is not None:
            return predict_probabilities(self.model, images, batch_size)
        if self._lite is not None:
            return self._lite.predict(images, batch_size=min(batch_size, LITERT_BATCH))
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        parts = [self._probabilities(images[start:start + batch_size])
                 for start in range(0, len(images), batch_size)]
        return (np.concatenate(parts) if parts
                else np.zeros((0, self.label_set.num_classes), np.float32))

    def _probabilities(self, crops):
        if self._lite is not None:
            return self._lite(crops)
        if self._signature is not None:
            # Only a SavedModel, already loaded with TensorFlow, gets here.
            import tensorflow as tf

            result = self._signature(**{INPUT_NAME: tf.constant(crops, tf.uint8)})
            return np.asarray(result[PROBABILITIES])
        return np.asarray(self.model.predict_on_batch(crops.astype("float32")))

