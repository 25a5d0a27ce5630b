"""fer_keras: facial expression recognition on FER2013 with Keras 3.

The package holds a model zoo (`fer_keras.models`), the FER2013 data pipeline
(`fer_keras.data.sources`), the named experiments of the reproduced study
(`fer_keras.training.experiments`) and command-line entry points:

* `python -m fer_keras.fit EXPERIMENT` trains one experiment,
* `python -m fer_keras.evaluate MODEL.keras` scores a saved model (on FER2013's labels,
  or FER+'s crowd labels with `--labels ferplus`),
* `python -m fer_keras.audit` counts the test faces that have an exact pixel copy among
  the training faces,
* `python -m fer_keras.tune tuning/JOB.toml` runs a Keras Tuner search job,
* `python -m fer_keras.export RUN_DIR` writes a TF Serving SavedModel (and TFLite),
* `python -m fer_keras.predict PHOTOS_OR_VIDEOS...` finds faces in photos and videos and
  classifies them,
* `python -m fer_keras.bench` measures training and inference speed (SavedModel and LiteRT),
* `python -m fer_keras.formats RUN_DIR` compares a run's float32, float16 and int8 TFLite
  files (accuracy, LiteRT latency, size),
* `python -m fer_keras.report` regenerates the results tables from the run folders.

Installed, each is also `fer-keras COMMAND` (e.g. `fer-keras fit EXPERIMENT`).

fit, evaluate, predict and tune run on any Keras backend (`KERAS_BACKEND=tensorflow|jax|
torch`) and need TensorFlow only on its own backend; export needs TensorFlow. Nothing here
imports TensorFlow when the package is imported.
"""

import os

# TensorFlow leaves its oneDNN kernels off on some x86 CPUs (AMD EPYC among them), where
# they make small-image convolutions several times faster. Opt in unless the user chose;
# this only takes effect when fer_keras is imported before TensorFlow.
ONEDNN_CHOSEN_BY_USER = "TF_ENABLE_ONEDNN_OPTS" in os.environ
"""Whether TF_ENABLE_ONEDNN_OPTS was set before fer_keras was imported (bench uses it to
give a serving process TensorFlow's own default)."""
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

from fer_keras.data.sources import CLASS_NAMES  # noqa: E402, F401  (the package's class names)

LAZY_EXPORTS = {"Recognizer": "fer_keras.api"}
"""Names `fer_keras` exports from modules that load Keras: imported on first use, so that
`import fer_keras` stays light (`from fer_keras import Recognizer` is the Python API)."""


def __getattr__(name):
    if name in LAZY_EXPORTS:
        # The import runs only here, when the name is first asked for (PEP 562).
        import importlib

        value = getattr(importlib.import_module(LAZY_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fer_keras' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *LAZY_EXPORTS])
