"""Run exported TFLite files with LiteRT, the TFLite runtime's new name (`ai-edge-litert`).

`python -m fer_keras.export` writes `assets.extra/model.tflite` beside every SavedModel
(and, with `--quantize`, `model_int8.tflite` / `model_float16.tflite`). This module loads
such a file, classifies uint8 face crops with it (`TFLiteClassifier`, used by `predict`
and `evaluate`) and times it at batch 1 (`measure_latency`, used by `bench`).

The runtime is `ai_edge_litert.interpreter.Interpreter` from the `ai-edge-litert` package
(`pip install "fer_keras[litert]"`). Where that package is missing, TensorFlow's own
`tf.lite.Interpreter` runs the same files (TensorFlow marks it deprecated in favour of
LiteRT); `runtime_name()` says which one is in use, and bench and evaluate print it.

Example:

>>> from fer_keras.serving.litert import TFLiteClassifier
>>> classify = TFLiteClassifier("saved_models/deep_emotion/serving/1/assets.extra/model.tflite")
>>> classify(crops).shape  # crops: uint8 (batch, 48, 48, 1)
(8, 7)
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

from fer_keras.data.labels import label_set_of
from fer_keras.serving.checks import check_probabilities, probe_faces
from fer_keras.serving.layout import DEFAULT_SIGNATURE as SIGNATURE
from fer_keras.serving.layout import EXTRA_FOLDER, INPUT_NAME, PROBABILITIES, TFLITE_FILE
from fer_keras.utils.backend import require_tensorflow

LITERT_PACKAGE = "ai-edge-litert"
LATENCY_THREADS = (1, 2)
"""Thread counts bench times LiteRT with: one core, and both cores of the 2-core machine."""


def interpreter_class():
    """The interpreter class to use and its name: LiteRT's, else TensorFlow's.

    Returns:
        `(Interpreter, name)` with name "ai-edge-litert" or "tf.lite (fallback)".
    """
    try:
        # Optional: the ai-edge-litert package (the `litert` extra).
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        require_tensorflow("Running a .tflite file without ai-edge-litert")
        # The fallback runtime: TensorFlow, heavy and needed only without LiteRT.
        import tensorflow as tf

        return tf.lite.Interpreter, "tf.lite (fallback)"
    return Interpreter, LITERT_PACKAGE


def without_xnnpack():
    """Interpreter keyword arguments that leave out the default XNNPACK delegate."""
    try:
        # Optional, as in `interpreter_class`.
        from ai_edge_litert.interpreter import OpResolverType
    except ImportError:
        # The fallback runtime's enum (TensorFlow, heavy).
        import tensorflow as tf

        OpResolverType = tf.lite.experimental.OpResolverType
    return {"experimental_op_resolver_type":
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


def is_quantized(path):
    """Whether a `.tflite` file holds int8 tensors (read without running anything)."""
    interpreter, _ = interpreter_class()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = interpreter(model_path=str(path), **without_xnnpack())
    return any(detail["dtype"] == np.int8 for detail in probe.get_tensor_details())


def xnnpack_runs(path, timeout=300):
    """Whether the XNNPACK delegate runs a `.tflite` file, tried in a separate process.

    LiteRT 2.3's XNNPACK delegate aborts the whole process ("double free") on some int8
    files (the spatial transformer of deep_emotion, for one) instead of raising, so a
    quantized file is first run once where a crash cannot take the caller down.
    """
    done = subprocess.run(
        [sys.executable, "-c", LATENCY_PROBE, str(path), "1", "1", "0", "xnnpack"],
        capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return done.returncode == 0


def runtime_name():
    """"ai-edge-litert" when LiteRT is installed, else "tf.lite (fallback)"."""
    return interpreter_class()[1]


def check_tflite_path(path):
    """Returns `path` as a `Path` if it is an existing `.tflite` file, else raises ValueError."""
    path = Path(path)
    if path.suffix != ".tflite":
        raise ValueError(f"Expected a .tflite file (written by `python -m fer_keras.export` "
                         f"into SERVING_DIR/VERSION/assets.extra/). Received: {path}")
    if not path.is_file():
        raise ValueError(f"No such TFLite file: {path}. Export one with `python -m "
                         f"fer_keras.export RUN_FOLDER`. Received: {path}")
    return path


def exported_tflite(savedmodel_dir):
    """The float TFLite file `fer_keras.export` wrote beside a SavedModel, or None."""
    path = Path(savedmodel_dir) / EXTRA_FOLDER / TFLITE_FILE
    return path if path.is_file() else None


class TFLiteClassifier:
    """Class probabilities for uint8 face crops from a `.tflite` file of our export.

    Args:
        path: a `.tflite` file whose `serving_default` signature takes `image` (uint8
            `[batch, height, width, 1]`) and returns `probabilities` (`[batch, classes]`,
            classes of the export's `assets/labels.txt` for a file in its `assets.extra/`,
            else of a known label set, `fer_keras.data.labels.label_set_of`), as
            `fer_keras.export` writes (float, float16 or int8).
        num_threads: CPU threads for the interpreter; None lets the runtime choose.

    Raises:
        ValueError: for a missing file, a file the runtime cannot read, a file without
            that signature, or one whose outputs on a probe batch of random faces are not
            probabilities (`fer_keras.serving.checks.check_probabilities`).
    """

    def __init__(self, path, num_threads=None):
        self.path = check_tflite_path(path)
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise ValueError(f"num_threads must be a positive integer or None. Received: "
                             f"num_threads={num_threads!r}")
        interpreter, self.runtime = interpreter_class()
        try:
            self.xnnpack = not is_quantized(self.path) or xnnpack_runs(self.path)
            with warnings.catch_warnings():
                # tf.lite.Interpreter warns that it is deprecated; the fallback is deliberate.
                warnings.simplefilter("ignore")
                self.interpreter = interpreter(
                    model_path=str(self.path), num_threads=num_threads,
                    **({} if self.xnnpack else without_xnnpack()))
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"{self.runtime} cannot read {self.path}: {error}") from None
        signatures = self.interpreter.get_signature_list()
        if SIGNATURE not in signatures or INPUT_NAME not in signatures[SIGNATURE]["inputs"]:
            raise ValueError(f"{self.path} has no {SIGNATURE} signature with an "
                             f"'{INPUT_NAME}' input; export it with `python -m "
                             f"fer_keras.export`. Received: signatures={signatures}")
        self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        details = self.runner.get_input_details()[INPUT_NAME]
        self.input_shape = tuple(int(size) for size in details["shape"][1:])
        if len(self.input_shape) != 3 or self.input_shape[-1] != 1:
            raise ValueError(f"Expected a model of gray images (height, width, 1). Received: "
                             f"input shape {tuple(details['shape'])} in {self.path}")
        outputs = self.runner.get_output_details()
        shapes = {name: detail["shape"].tolist() for name, detail in outputs.items()}
        if PROBABILITIES not in outputs:
            raise ValueError(f"{self.path} must output '{PROBABILITIES}', one per class; "
                             f"export it with `python -m fer_keras.export`. Received: "
                             f"outputs={shapes}")
        try:
            # The export's labels.txt names the classes (a file of an export's
            # assets.extra/), else the output count does.
            self.label_set = label_set_of(self.path, int(outputs[PROBABILITIES]["shape"][-1]),
                                          f"{self.path}'s '{PROBABILITIES}'")
        except ValueError as error:
            raise ValueError(f"{error} evaluate and predict read one probability per class "
                             f"of a known label set. Received: outputs={shapes}") from None
        # One small batch shows whether the outputs are probabilities (a file converted
        # from a model ending in logits is refused here, not scored).
        check_probabilities(self(probe_faces(self.size)), self.path)

    @property
    def size(self):
        """`(height, width)` of the crops the model takes."""
        return self.input_shape[0], self.input_shape[1]

    def __call__(self, crops):
        """Probabilities `(batch, classes)` float32 for uint8 crops `(batch, height, width,
        1)`."""
        crops = np.ascontiguousarray(crops, dtype=np.uint8)
        # The runner resizes the input tensor to each new batch size by itself.
        return np.asarray(self.runner(**{INPUT_NAME: crops})[PROBABILITIES], np.float32)

    def predict(self, images, batch_size=256):
        """Probabilities for any number of images, `batch_size` at a time."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        parts = [self(images[start:start + batch_size])
                 for start in range(0, len(images), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.label_set.num_classes),
                                                         np.float32)


LATENCY_PROBE = r"""
import json, sys, time, warnings
import numpy as np

path, threads, calls, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
xnnpack = sys.argv[5] == "xnnpack"
try:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    runtime = "ai-edge-litert"
except ImportError:
    import tensorflow as tf
    Interpreter, runtime = tf.lite.Interpreter, "tf.lite (fallback)"
    OpResolverType = tf.lite.experimental.OpResolverType
options = {} if xnnpack else {
    "experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    interpreter = Interpreter(model_path=path, num_threads=threads, **options)
runner = interpreter.get_signature_runner("serving_default")
shape = runner.get_input_details()["image"]["shape"]
image = np.random.default_rng(0).integers(0, 256, (1, *shape[1:]), dtype=np.uint8)
seconds = []
for index in range(warmup + calls):
    start = time.perf_counter()
    np.asarray(runner(image=image)["probabilities"])
    if index >= warmup:
        seconds.append(time.perf_counter() - start)
ms = 1000.0 * np.asarray(seconds)
print(json.dumps({"runtime": runtime, "xnnpack": xnnpack,
                  "latency_ms_median": round(float(np.median(ms)), 3) if calls else None,
                  "latency_ms_p90": round(float(np.percentile(ms, 90)), 3) if calls else None}))
"""
"""Run with `python -c`: the timing process imports LiteRT and NumPy, not fer_keras."""


def measure_latency(path, num_threads, calls=200, warmup=20, timeout=600):
    """Batch-1 latency of a `.tflite` file's `serving_default`, in a fresh process.

    Each call gets one uint8 image and its probabilities are copied to NumPy inside the
    timed region, as a client would.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads.
        calls: timed calls, each timed alone.
        warmup: untimed calls first (the XNNPACK delegate prepares on the first one).
        timeout: seconds before the process is given up.

    Returns:
        `{"runtime", "xnnpack", "latency_ms_median", "latency_ms_p90"}`; `xnnpack` is
        False when the XNNPACK delegate crashed or failed on the file and the plain
        builtin kernels were timed instead.

    Raises:
        ValueError: for a bad path, thread count or call count.
        RuntimeError: if the timing process fails (its last error line is included).
    """
    path = check_tflite_path(path)
    for name, value in (("num_threads", num_threads), ("calls", calls)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    def run(delegate):
        return subprocess.run(
            [sys.executable, "-c", LATENCY_PROBE, str(path), str(num_threads), str(calls),
             str(warmup), delegate], capture_output=True, text=True, timeout=timeout,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))

    done = run("xnnpack")
    if done.returncode != 0:
        # The XNNPACK delegate aborted the process (see `xnnpack_runs`) or refused to
        # prepare the graph ("failed to create XNNPACK runtime", seen on an int8 file whose
        # sampler stays float); the plain builtin kernels run such files.
        done = run("builtin")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"The LiteRT timing process failed on {path}: {error}")
    return json.loads(lines[-1])
