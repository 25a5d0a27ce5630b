"""Export a trained model for serving: a TF Serving SavedModel, a `.keras` copy and TFLite.

The library behind `python -m fer_keras.export` (whose docstring describes the version
folder and both signatures): find the model of a run folder (`resolve_source`), pick and
check the version folder (`next_version`, `check_output_folder`, `remove_stale_partials`),
write the SavedModel (`write_savedmodel`), convert it to TFLite, float or quantized
(`convert_tflite`), and all of it at once (`export`).

Example:

>>> from fer_keras.serving.export import export
>>> result = export("saved_models/baseline_deep_dropout")
>>> result["savedmodel"]
'saved_models/baseline_deep_dropout/serving/1'
"""

import json
import numbers
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fer_keras.data.labels import FER2013, label_set_for, label_set_of
from fer_keras.data.sources import load_splits
from fer_keras.serving.checks import check_keras_model
from fer_keras.serving.layout import (
    ANY_SIZE_SIGNATURE,
    DEFAULT_SIGNATURE,
    EXTRA_FOLDER,
    INPUT_NAME,
    KERAS_FILE,
    LABELS_FILE,
    METADATA_FILE,
    PROBABILITIES,
    SERVING_FOLDER,
    TFLITE_FILE,
)
from fer_keras.serving.litert import TFLiteClassifier

GRAY_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights, the ones OpenCV and Pillow use for colour to gray."""

VERSION_MAX = 2**63 - 1
"""The highest version: TF Serving reads version folder names as int64."""

PARTIAL_NAME = re.compile(r"\.partial-([0-9]+)-([0-9]+)")
"""The staging folders `export` writes a version into: `.partial-VERSION-PID`."""


def resolve_source(path):
    """Finds the `.keras` file of a run folder or `.keras` path, and its default output.

    Args:
        path: a run folder holding `model.keras`, or a `.keras` file.

    Returns:
        `(keras_path, serving_dir)`: the model file and the default TF Serving base folder.

    Raises:
        ValueError: if the path is missing or holds no Keras model.
    """
    path = Path(path)
    if path.is_dir():
        keras_path = path / KERAS_FILE
        if not keras_path.is_file():
            raise ValueError(f"{path} is a folder without {KERAS_FILE}. Pass a run folder "
                             f"written by `python -m fer_keras.fit` (saved_models/EXPERIMENT) "
                             f"or a .keras file. Received: {path}")
        return keras_path, path / SERVING_FOLDER
    if not path.exists():
        raise ValueError(f"No such run folder or model file: {path}. Pass a run folder "
                         f"(saved_models/EXPERIMENT) or a .keras file. Received: {path}")
    if path.suffix != ".keras":
        raise ValueError(f"Expected a run folder or a .keras file. Received: {path}")
    if path.name == KERAS_FILE:
        return path, path.parent / SERVING_FOLDER
    return path, path.parent / path.stem / SERVING_FOLDER


def existing_versions(serving_dir):
    """The integer version folders under a TF Serving base folder, sorted.

    Only names of ASCII digits up to `VERSION_MAX` count, as for TF Serving ("²" is a
    digit to Python's `str.isdigit`, but no version).
    """
    serving_dir = Path(serving_dir)
    if not serving_dir.is_dir():
        return []
    return sorted(int(child.name) for child in serving_dir.iterdir()
                  if child.is_dir() and re.fullmatch(r"[0-9]+", child.name)
                  and int(child.name) <= VERSION_MAX)


def next_version(serving_dir):
    """One more than the highest version under `serving_dir`, or 1.

    Raises:
        ValueError: if the highest version is already `VERSION_MAX`.
    """
    versions = existing_versions(serving_dir)
    if versions and versions[-1] >= VERSION_MAX:
        raise ValueError(f"{serving_dir} already holds version {VERSION_MAX}, the highest "
                         f"TF Serving reads (int64), so there is no next one. Pass a free "
                         f"--version, or --output another folder.")
    return versions[-1] + 1 if versions else 1



def check_output_folder(serving_dir):
    """Raises a `ValueError` unless `serving_dir` is, or can become, a folder we can write.

    Nothing is created: the nearest part of the path that exists must be a folder in which
    this process can create a file (tried with a temporary file, removed at once, since
    permission bits say nothing on a read-only mount, or for root).

    Args:
        serving_dir: the TF Serving base folder an export writes `VERSION/` into.
    """
    serving_dir = Path(serving_dir)
    existing = serving_dir
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    fix = "Pass --output a folder (new or existing) that you can write to."
    if not existing.is_dir():
        if existing == serving_dir:
            raise ValueError(f"The export folder {serving_dir} exists and is not a folder; "
                             f"export writes VERSION/ folders into it. {fix}")
        raise ValueError(f"The export folder {serving_dir} cannot be created: {existing} is "
                         f"not a folder. {fix}")
    try:
        handle, probe = tempfile.mkstemp(prefix=".fer_keras-write-check-", dir=existing)
    except OSError as error:
        raise ValueError(f"The export folder {serving_dir} is not writable: no file can be "
                         f"created in {existing} ({error.strerror or error}). {fix}"
                         ) from None
    os.close(handle)
    os.unlink(probe)


def process_alive(pid):
    """Whether a process `pid` may be running (True when that cannot be told)."""
    if pid <= 0 or os.name == "nt":
        # On Windows `os.kill` terminates the process whatever the signal.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # PermissionError: another user's process; OverflowError: no pid.
    return True


def remove_stale_partials(serving_dir):
    """Removes the `.partial-VERSION-PID/` folders of exports that were killed.

    An export writes a version into such a hidden folder and renames it when complete, so
    `kill -9` leaves it behind (tens of MB). Only folders named exactly so, directly under
    `serving_dir`, whose process is gone are removed; those of running exports (this one
    included) and every other file stay.

    Returns:
        The removed folders.
    """
    serving_dir = Path(serving_dir)
    if not serving_dir.is_dir():
        return []
    removed = []
    for child in sorted(serving_dir.iterdir()):
        match = PARTIAL_NAME.fullmatch(child.name)
        if match is None or child.is_symlink() or not child.is_dir():
            continue
        pid = int(match.group(2))
        if pid == os.getpid() or process_alive(pid):
            continue
        shutil.rmtree(child, ignore_errors=True)
        if not os.path.lexists(child):
            removed.append(child)
    return removed


def to_model_input(image, size=(48, 48)):
    """Turns a uint8 batch of any size and 1-4 channels into float gray `(*size, 1)`.

    The graph version of what `fer_keras.predict` does to a face crop with Pillow and
    OpenCV: BT.601 gray, alpha composited over white, area resize. Values stay 0-255.

    Args:
        image: uint8 tensor `(batch, height, width, channels)`, channels 1 to 4.
        size: output `(height, width)`.

    Returns:
        float32 tensor `(batch, height, width, 1)`.
    """
    # A graph function: TensorFlow, needed only inside an export.
    import tensorflow as tf

    pixels = tf.cast(image, tf.float32)

    def luma():
        return tf.reduce_sum(pixels[..., :3] * tf.constant(GRAY_WEIGHTS), axis=-1,
                             keepdims=True)

    def alpha():
        return pixels[..., -1:] / 255.0

    static_channels = pixels.shape[-1]
    if static_channels is not None:
        # A known channel count (eager calls, fixed signatures) picks the branches here.
        if not 1 <= static_channels <= 4:
            raise ValueError(f"image must have 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) "
                             f"channels. Received: shape={pixels.shape}")
        gray = luma() if static_channels >= 3 else pixels[..., :1]
        if static_channels in (2, 4):
            opacity = alpha()
            gray = gray * opacity + 255.0 * (1.0 - opacity)
    else:
        channels = tf.shape(pixels)[-1]
        checked = tf.debugging.assert_less_equal(
            channels, 4, message="image must have 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 "
                                 "(RGBA) channels")
        with tf.control_dependencies([checked]):
            gray = tf.cond(channels >= 3, luma, lambda: pixels[..., :1])
            has_alpha = tf.logical_or(tf.equal(channels, 2), tf.equal(channels, 4))
            opacity = tf.cond(has_alpha, alpha, lambda: tf.ones_like(gray))
        gray = gray * opacity + 255.0 * (1.0 - opacity)
    resized = tf.image.resize(gray, list(size), method="area")
    return tf.ensure_shape(resized, [None, *size, 1])


def checked_image(image, minimum, maximum, expected):
    """Stops a request of the wrong shape with a clear error before any kernel sees it.

    A rank-3 batch fed to a signature declared `(batch, 48, 48, 1)` is not rejected by
    TensorFlow: it reaches the oneDNN convolution, which aborts the whole process (a CHECK
    failure, exit 134), so one bad request would take down a server. The checks here read
    the shape the caller actually sent. The rank is not tested with `tf.rank`, which
    Grappler folds to the declared rank; instead the runtime shape is padded with zeros
    (a missing dimension reads 0 and fails its minimum), and `tf.ensure_shape` catches
    extra dimensions, which the padding cannot see.

    Args:
        image: the signature's input tensor.
        minimum: the smallest allowed size of each dimension (the rank is its length).
        maximum: the largest allowed size of each dimension (None: no limit).
        expected: what the signature takes, in words, for the error message.

    Returns:
        `image`, to be used in place of the input so that the checks run first.

    Raises:
        tf.errors.InvalidArgumentError: when called with a tensor of another shape.
    """
    # A graph function: TensorFlow, needed only inside an export.
    import tensorflow as tf

    rank = len(minimum)
    shape = tf.shape(image, out_type=tf.int64)
    padded = tf.concat([shape, tf.zeros([rank], tf.int64)], axis=0)[:rank]
    highest = [tf.int64.max if high is None else high for high in maximum]
    valid = tf.logical_and(tf.reduce_all(padded >= tf.constant(minimum, tf.int64)),
                           tf.reduce_all(padded <= tf.constant(highest, tf.int64)))
    checked = tf.debugging.Assert(valid, [f"{expected}. Received image shape:", shape],
                                  summarize=2 * rank)
    with tf.control_dependencies([checked]):
        return tf.ensure_shape(image, [low if low == high else None
                                       for low, high in zip(minimum, maximum)])


def build_archive(model, jit_compile=False, label_set=None):
    """An `ExportArchive` with the `serving_default` and `any_size` endpoints of `model`.

    Args:
        model: a zoo model: raw pixels `(48, 48, 1)` in, one probability per class out.
        jit_compile: compile the model's forward pass with XLA (the label lookup stays
            outside, since XLA has no strings). Faster at batch 1 on CPU, but TF Serving
            runs such a graph only when started with `--xla_cpu_compilation_enabled=true`,
            and each new batch size is compiled once on first use.
        label_set: the model's `LabelSet`, whose names the `label` output gives (its run's:
            `fer_keras.data.labels.label_set_of`); None: the registered one of as many
            classes as the model outputs.

    Returns:
        A `keras.export.ExportArchive` ready for `write_out`.
    """
    # TensorFlow and Keras load only once an export starts, so `--help` stays fast.
    import keras
    import tensorflow as tf

    from fer_keras.models import check_class_probabilities

    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or shape[-1] != 1 or None in shape:
        raise ValueError(f"Only single-channel models with a fixed input size export. "
                         f"Received: input_shape={model.input_shape}")
    check_class_probabilities(model.output_shape, f"Model {model.name!r}", label_set)
    if label_set is None:
        label_set = label_set_for(model.output_shape[-1], f"Model {model.name!r}")
    class_names = tf.constant(label_set.class_names)

    def forward(pixels):
        return model(pixels, training=False)

    if jit_compile:
        forward = tf.function(forward, jit_compile=True, autograph=False)

    # The argument name is the signature's input name.
    def serving_default(image):
        image = checked_image(
            image, (1, *shape), (None, *shape),
            f"{DEFAULT_SIGNATURE} takes image as uint8 gray face crops of shape (batch, "
            f"{', '.join(map(str, shape))}), batch >= 1 (the {ANY_SIZE_SIGNATURE} signature "
            f"takes other sizes and colour)")
        probabilities = forward(tf.cast(image, tf.float32))
        probabilities = tf.cast(probabilities, tf.float32)
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {PROBABILITIES: probabilities, "class_id": class_id,
                "label": tf.gather(class_names, class_id)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    default_function = archive.add_endpoint(DEFAULT_SIGNATURE, serving_default, input_signature=[
        tf.TensorSpec((None, *shape), tf.uint8, name=INPUT_NAME)])

    def any_size(image):
        # Rounded to uint8 like the training pixels, then the default signature's function:
        # the model is traced once, and both signatures classify a crop identically.
        image = checked_image(
            image, (1, 1, 1, 1), (None, None, None, 4),
            f"{ANY_SIZE_SIGNATURE} takes image as uint8 images of shape (batch, height, width, "
            f"channels), batch, height and width >= 1, channels 1 (gray), 2 (gray + alpha), "
            f"3 (RGB) or 4 (RGBA)")
        pixels = to_model_input(image, size=shape[:2])
        return default_function(tf.cast(tf.round(tf.clip_by_value(pixels, 0.0, 255.0)),
                                        tf.uint8))

    archive.add_endpoint(ANY_SIZE_SIGNATURE, any_size, input_signature=[
        tf.TensorSpec((None, None, None, None), tf.uint8, name=INPUT_NAME)])
    return archive


def write_savedmodel(model, directory, jit_compile=False, label_set=None):
    """Writes `model` as a SavedModel with the serving signatures and `assets/labels.txt`.

    Args:
        model: a zoo Keras model.
        directory: the SavedModel folder to create (it must not exist).
        jit_compile: see `build_archive`.
        label_set: the model's `LabelSet` (see `build_archive`); its names are the `label`
            output and `labels.txt`, so a runner reading the export names its classes.

    Returns:
        The folder, as a `Path`.
    """
    directory = Path(directory)
    if label_set is None:
        label_set = label_set_for(model.output_shape[-1], f"Model {model.name!r}")
    build_archive(model, jit_compile, label_set).write_out(str(directory), verbose=False)
    # Nothing in the graph reads the file, so it is written beside the saved graph rather
    # than tracked; the `label` output carries the same names.
    (directory / "assets").mkdir(exist_ok=True)
    (directory / "assets" / LABELS_FILE).write_text(
        "\n".join(label_set.class_names) + "\n")
    return directory


QUANTIZATIONS = ("int8", "float16")
"""`--quantize` choices: post-training integer quantization, or float16 weights."""

REPRESENTATIVE_COUNT = 300
"""Training images the int8 converter calibrates activation ranges on."""


def quantized_tflite_name(quantize):
    """The file name of a quantized TFLite export: `model_int8.tflite`, ..."""
    return f"model_{quantize}.tflite"


def representative_images(data=None, count=REPRESENTATIVE_COUNT, seed=0):
    """A random sample of training-split faces for int8 calibration, uint8 `(n, 48, 48, 1)`.

    Drawn from the training split only, so calibration never sees the validation or test
    faces the quantized model is scored on.

    Args:
        data: FER2013 CSV or image folder (see `fer_keras.data.sources.resolve_data_path`).
        count: images to draw (all of them if the split is smaller).
        seed: seed of the draw.
    """
    images = load_splits(data)["train"][0]
    if len(images) == 0:
        raise ValueError(f"The training split of {data or 'the default FER2013 file'} is "
                         f"empty, so int8 quantization has nothing to calibrate on. Pass "
                         f"--data with a FER2013 CSV that has Training rows. Received: "
                         f"data={data!r}")
    chosen = np.random.default_rng(seed).permutation(len(images))[:count]
    images = np.asarray(images[np.sort(chosen)], np.uint8)
    return images if images.ndim == 4 else images[..., None]


INT8_AGREEMENT_WARNING = 0.9
"""Below this share of calibration faces given the float file's class, export warns."""


def class_agreement(float_path, quantized_path, images):
    """The share of `images` a quantized TFLite file gives the float file's class.

    A quick check that quantization did not break the model (int8 ruins a spatial
    transformer's sampling grid, for one); the calibration faces are used because they are
    at hand, so it is no accuracy figure (score the file with `fer_keras.evaluate`).
    """
    reference = TFLiteClassifier(float_path).predict(images).argmax(axis=1)
    quantized = TFLiteClassifier(quantized_path).predict(images).argmax(axis=1)
    return round(float(np.mean(reference == quantized)), 4)


SAMPLER_FLOAT_OPS = ("MUL", "ADD", "SUB", "FLOOR", "CAST", "MAXIMUM", "MINIMUM", "GATHER",
                     "SUM", "PACK", "BROADCAST_TO", "SELECT_V2", "LESS", "CONCATENATION",
                     "PAD", "EXPAND_DIMS", "RESHAPE", "TRANSPOSE", "STRIDED_SLICE")
"""TFLite ops an int8 export keeps in float32 for nets with a `SpatialTransformer`.

The sampler turns predicted coordinates into pixel indices and bilinear weights (`FLOOR`,
`CAST`, `GATHER` and elementwise arithmetic). In int8 those coordinates are off by whole
pixels, and a fully quantized `deep_emotion` falls to near chance. Keeping these ops in
float leaves the convolutions and dense layers, nearly all the compute, in int8; the
`deep_emotion` rows of `saved_models/formats.json` (`python -m fer_keras.formats`) give
the accuracy of each file."""


def float_ops_for(model):
    """The ops an int8 export of `model` keeps in float (`SAMPLER_FLOAT_OPS` when the model
    holds a `SpatialTransformer` at any depth), or None."""
    # The zoo's layers import Keras, which only an export that has started needs.
    from fer_keras.models.layers import SpatialTransformer, all_layers

    if any(isinstance(layer, SpatialTransformer) for layer in all_layers(model)):
        return SAMPLER_FLOAT_OPS
    return None


def convert_tflite(savedmodel_dir, output_path, quantize=None, representative=None,
                   float_ops=None):
    """Converts the `serving_default` signature of a SavedModel to a TFLite file.

    Only TFLite's builtin ops are allowed, so the file runs with the plain TFLite runtime.

    Args:
        savedmodel_dir: a folder written by `write_savedmodel`.
        output_path: the `.tflite` file to write.
        quantize: None (float32), "float16" (weights stored as float16, computed in float32
            by XNNPACK) or "int8" (post-training integer quantization: int8 weights and
            activations, the ranges calibrated on `representative`; an op without an int8
            kernel stays float). Input (uint8 pixels) and outputs stay as in the float file.
        representative: uint8 images `(n, height, width, 1)` for "int8" calibration.
        float_ops: TFLite op names (e.g. `SAMPLER_FLOAT_OPS`) that an "int8" file keeps
            in float32 (selective quantization with TensorFlow's `QuantizationDebugger`).

    Returns:
        `(written, message)`: whether the file was written, and its size or the reason it
        could not be (the converter's first error line).

    Raises:
        ValueError: for an unknown `quantize`, or "int8" without representative images.
    """
    # The converter is TensorFlow's; only a conversion needs it.
    import tensorflow as tf

    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)} or None. "
                         f"Received: quantize={quantize!r}")
    if quantize == "int8" and (representative is None or len(representative) == 0):
        raise ValueError("int8 quantization needs representative images (training faces) "
                         "to calibrate on; pass representative=representative_images(data).")

    def calibration_batches():
        # One image per batch: the converter calibrates on the shapes the model serves.
        for image in representative:
            yield {INPUT_NAME: np.asarray(image, np.uint8)[None]}

    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(savedmodel_dir), signature_keys=[DEFAULT_SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            converter.representative_dataset = calibration_batches
        if quantize == "int8" and float_ops:
            options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=list(float_ops))
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=calibration_batches,
                debug_options=options)
            flatbuffer = debugger.get_nondebug_quantized_model()
        else:
            flatbuffer = converter.convert()
    except Exception as error:  # The converter raises several types (ConverterError, ...).
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if "error" in line.lower()),
                      lines[0] if lines else type(error).__name__)
        return False, f"TFLite conversion failed: {reason}"
    Path(output_path).write_bytes(flatbuffer)
    return True, f"{len(flatbuffer):,} bytes"


def export(source, output=None, version=None, tflite=True, jit_compile=False, quantize=(),
           data=None):
    """Exports a run folder or `.keras` file for TF Serving (and TFLite).

    Args:
        source: a run folder holding `model.keras`, or a `.keras` file.
        output: the TF Serving base folder; default `RUN_FOLDER/serving`.
        version: the version folder number; default one more than the highest present.
        tflite: also write `assets.extra/model.tflite` where the converter allows it.
        jit_compile: XLA-compile the forward pass (see `build_archive`); recorded in
            `export.json`.
        quantize: quantized TFLite files to write beside the float one, each of
            `QUANTIZATIONS` ("int8", "float16"), as `assets.extra/model_int8.tflite` etc.
        data: FER2013 CSV or folder whose training split calibrates "int8"
            (default: $FER2013_PATH, then data/fer2013.csv[.gz]).

    Returns:
        A dict with the written paths (`savedmodel`, `keras`, `tflite` or None), the
        `version`, `tflite_message`, and `quantized`: `{kind: {"path" or None, "message"}}`.

    Raises:
        ValueError: for a missing source, a model that cannot be loaded or fails
            `fer_keras.serving.checks.check_keras_model` (unbuilt, not gray, not fixed-size,
            logits), an output that is not a writable folder, a bad version, a version
            folder that already exists, or an unknown or impossible `quantize`.
    """
    # Keras and TensorFlow load once the export starts (their versions are recorded).
    import keras
    import tensorflow as tf

    from fer_keras.models import load_model

    keras_path, default_output = resolve_source(source)
    serving_dir = Path(output) if output is not None else default_output
    check_output_folder(serving_dir)
    if version is None:
        version = next_version(serving_dir)
    elif (isinstance(version, bool) or not isinstance(version, numbers.Integral)
          or not 1 <= version <= VERSION_MAX):
        raise ValueError(f"version must be an integer in [1, {VERSION_MAX}] (TF Serving's "
                         f"folder names, read as int64). Received: version={version!r}")
    version = int(version)
    quantize = [quantize] if isinstance(quantize, str) else list(quantize or ())
    for kind in quantize:
        if kind not in QUANTIZATIONS:
            raise ValueError(f"quantize must be among {', '.join(QUANTIZATIONS)}. "
                             f"Received: quantize={kind!r}")
    if quantize and not tflite:
        raise ValueError(f"Quantization writes TFLite files, so it cannot be combined with "
                         f"--no-tflite; drop one of them. Received: quantize={quantize}, "
                         f"tflite=False")
    target = serving_dir / str(version)
    if target.exists():
        raise ValueError(f"{target} already exists. Pass another --version (the next free "
                         f"one is {next_version(serving_dir)}), or delete it to re-export. "
                         f"Received: version={version}")
    for stale in remove_stale_partials(serving_dir):
        print(f"export: removed {stale}, left by an export that was stopped",
              file=sys.stderr)
    # The data is read before the slow export starts, so a bad --data fails at once.
    representative = representative_images(data) if "int8" in quantize else None
    model = load_model(keras_path)
    # Built, gray fixed-size input, one output per class of its run's label set (else of a
    # registered one), probabilities on a probe batch (not logits).
    check_keras_model(model, keras_path, "export")
    label_set = label_set_of(keras_path, model.output_shape[-1], str(keras_path))
    serving_dir.mkdir(parents=True, exist_ok=True)
    # TF Serving ignores folders whose names are not numbers, so the partial export is
    # invisible to it until the rename below.
    partial = serving_dir / f".partial-{version}-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    steps = 2 + bool(tflite) + len(quantize)
    started = time.perf_counter()
    done = [0]

    def stage(text):
        # Each stage of an export can take from seconds (SavedModel) to a minute (int8
        # calibration), so say which one is running, on stderr beside the results.
        done[0] += 1
        print(f"export: step {done[0]}/{steps}, {text} "
              f"({time.perf_counter() - started:.0f} s so far)", file=sys.stderr, flush=True)

    try:
        stage("writing the SavedModel")
        write_savedmodel(model, partial, jit_compile, label_set)
        extra = partial / EXTRA_FOLDER
        extra.mkdir()
        shutil.copyfile(keras_path, extra / KERAS_FILE)
        tflite_path, message = None, "skipped (--no-tflite)"
        if tflite:
            stage("converting to TFLite")
            written, message = convert_tflite(partial, extra / TFLITE_FILE)
            tflite_path = target / EXTRA_FOLDER / TFLITE_FILE if written else None
        quantized = {}
        for kind in quantize:
            name = quantized_tflite_name(kind)
            stage(f"converting to {kind} TFLite")
            float_ops = float_ops_for(model) if kind == "int8" else None
            written, kind_message = convert_tflite(partial, extra / name, kind,
                                                   representative, float_ops)
            quantized[kind] = {"path": str(target / EXTRA_FOLDER / name) if written
                               else None, "message": kind_message}
            if written and kind == "int8" and tflite_path is not None:
                quantized[kind]["agreement_with_float"] = class_agreement(
                    extra / TFLITE_FILE, extra / name, representative)
        metadata = {
            "source": str(keras_path),
            "model": model.name,
            "parameters": int(model.count_params()),
            "version": version,
            "class_names": list(label_set.class_names),
            "labels": label_set.name,
            "signatures": signature_summary(model.input_shape[1:], label_set.num_classes),
            "tflite": {"written": tflite_path is not None, "message": message},
            "quantized": {kind: {"file": quantized_tflite_name(kind),
                                 "written": entry["path"] is not None,
                                 "message": entry["message"],
                                 **({"representative_images": len(representative),
                                     "representative_split": "train",
                                     "float_ops": list(float_ops_for(model) or [])}
                                    if kind == "int8" else {}),
                                 **({"agreement_with_float": entry["agreement_with_float"]}
                                    if "agreement_with_float" in entry else {})}
                          for kind, entry in quantized.items()},
            "jit_compile": bool(jit_compile),
            "keras_version": keras.__version__,
            "tensorflow_version": tf.__version__,
        }
        stage("writing export.json")
        (extra / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True)
                                           + "\n")
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return {"savedmodel": str(target), "keras": str(target / EXTRA_FOLDER / KERAS_FILE),
            "tflite": None if tflite_path is None else str(tflite_path),
            "tflite_message": message, "quantized": quantized, "version": version,
            "serving_dir": str(serving_dir)}


def signature_summary(shape=(48, 48, 1), num_classes=FER2013.num_classes):
    """The signatures' inputs and outputs, as recorded in `export.json`."""
    outputs = {PROBABILITIES: ["float32", [None, num_classes]], "class_id": ["int32", [None]],
               "label": ["string", [None]]}
    return {
        DEFAULT_SIGNATURE: {"inputs": {INPUT_NAME: ["uint8", [None, *shape]]},
                            "outputs": outputs},
        ANY_SIZE_SIGNATURE: {"inputs": {INPUT_NAME: ["uint8", [None, None, None, None]]},
                             "outputs": outputs},
    }
