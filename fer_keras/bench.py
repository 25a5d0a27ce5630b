"""Measure each experiment's size, training speed and serving speed on this machine.

Usage:

    python -m fer_keras.bench [EXPERIMENT ...] [--steps N] [--json]
    python -m fer_keras.bench --all --serving-only --save saved_models/serving_benchmark.json
    python -m fer_keras.bench baseline --backend tensorflow jax torch
    python -m fer_keras.bench baseline_aug --stream-folder /tmp/fer2013_folder [--data CSV]

With no names, the 13 rows of the study's Table 1 are measured (`--all`: every registered
experiment). For each experiment (`--serving-only` skips the training figures):

* parameters: `count_params()` of the experiment's model.
* training images/s: `model.fit` on the pipeline `fit` builds (`fer_keras.data.sources.make_dataset`
  with shuffling and the experiment's augmentation, `fer_keras.training.recipe.compile_model` with
  the experiment's optimizer and loss), batch 128, on random uint8 images. The model first
  trains `WARMUP_STEPS` steps untimed (graph tracing); then `EPOCHS` epochs of N steps are
  timed by the same `EpochTimer` callback that writes `train_images_per_second` into a
  run's history.csv, and the median epoch is reported.
* inference images/s: the model exported by `fer_keras.export.write_savedmodel` to a
  temporary folder and loaded with `tf.saved_model.load` in a fresh Python process that
  never imports fer_keras (as a serving client would, with TensorFlow's own default for
  oneDNN unless `--serving-onednn` says otherwise); its `serving_default` signature is
  called on one uint8 batch of 256, N times after `WARMUP_CALLS` untimed calls. Each
  call's probabilities are copied to NumPy inside the timed region, as a client would.
* batch-1 latency: the same signature on a single image, 10 x N calls after the warm-up,
  each timed alone; the median (and 90th percentile) in milliseconds.
* LiteRT batch-1 latency: the same SavedModel converted to TFLite as `fer_keras.export`
  writes `assets.extra/model.tflite`, run by LiteRT (`ai-edge-litert`, XNNPACK) in a fresh
  process with 1 and with 2 threads, 10 x N single-image calls each after `WARMUP_CALLS`
  untimed ones (`fer_keras.serving.litert.measure_latency`); median and 90th percentile.

Why a separate process: fer_keras turns TensorFlow's oneDNN kernels on for training (they
train several times faster on CPUs where TensorFlow leaves them off), but on such CPUs
they add a fixed cost to every small call, and a TF Serving process would not have them on
unless told to. `--serving-onednn on|off` measures the served model either way.

With `--peer PATH/torch_peer.py` (the study's framework, PyTorch: `pip install torch`), the
peer script is run in a subprocess right before each experiment, for the architectures it
knows, and its training images/s and our ratio to it are added: the two are measured in
one run, on the same machine, minutes apart. The peer trains on pre-made tensors without
augmentation; ours goes through `fit`'s input pipeline, so a ratio is only printed for
experiments without augmentation (the peer's names: baseline, baseline_deep_dropout,
deep_emotion).

`--backend tensorflow jax torch` measures only training images/s, of the same net on each
Keras backend side by side, each in its own process (`fer_keras.throughput`); the
TensorFlow backend trains on `tf.data`, JAX and PyTorch on the NumPy `PyDataset`.
`--stream-folder DIR` compares reading an image folder into memory against streaming it
from disk a batch at a time (`fit --stream`): input-pipeline and training images/s of the
first experiment (DIR is first written from the `--data` CSV as PNG files if it has no
`train/`).

Export, loading and warm-up are not timed. Other processes on the machine slow every
number; the header prints the load average so a reader can judge.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from fer_keras.cli import command_prog, entry_point, run_command
from fer_keras.serving.litert import LATENCY_THREADS, measure_latency, runtime_name

TRAIN_BATCH = 128
INFERENCE_BATCH = 256
WARMUP_STEPS = 5
WARMUP_CALLS = 3
EPOCHS = 2
DEFAULT_STEPS = 20


def environment():
    """The machine and library versions the numbers were measured with."""
    import keras
    import tensorflow as tf

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"machine": platform.platform(), "processor": platform.processor() or None,
            "cpu_count": os.cpu_count(), "load_average": load,
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "devices": [device.name for device in tf.config.list_logical_devices()]}


def method(steps, serving_onednn="default", litert=True, serving_only=False, int8=False,
           model_only=False, rounds=1):
    """What is timed, in words, for the report."""
    onednn = {"default": "TensorFlow's default oneDNN setting for this CPU",
              "on": "TF_ENABLE_ONEDNN_OPTS=1", "off": "TF_ENABLE_ONEDNN_OPTS=0"}[serving_onednn]
    described = {
        "training": f"model.fit on fer_keras.data.make_dataset (shuffle, the experiment's "
                    f"augmentation), compiled by fer_keras.training.compile_model, batch "
                    f"{TRAIN_BATCH}, random uint8 images; {WARMUP_STEPS} untimed warm-up steps, "
                    f"then the median of {EPOCHS} epochs of {steps} steps (EpochTimer)",
        "inference": f"exported SavedModel loaded with tf.saved_model.load in a fresh process "
                     f"without fer_keras ({onednn}), serving_default on a uint8 "
                     f"batch of {INFERENCE_BATCH}, {steps} calls after {WARMUP_CALLS} "
                     f"warm-up calls, output copied to NumPy",
        "latency": f"the same signature on 1 image, median and p90 of {10 * steps} "
                   f"individually timed calls after {WARMUP_CALLS} warm-up calls",
    }
    if model_only:
        described["network alone"] = (
            f"model.fit of the same network and optimizer on the same random images as "
            f"cached batches of {TRAIN_BATCH} in a fixed order, without augmentation or "
            f"shuffling; warm-up and timing as for training")
    if rounds > 1:
        described["rounds"] = (
            f"training timed {rounds} times under each precision, the precisions taking "
            f"turns; each figure is the median of its {rounds} rounds (every round is in "
            f"train_images_per_second_rounds)")
    if int8:
        described["int8"] = ("the same SavedModel converted to int8 TFLite as export "
                             "--quantize int8 does (nets with a spatial transformer keep "
                             "their sampler in float), calibrated on 32 random images: its "
                             "speed, not its accuracy; timed like the float file")
    if serving_only:
        described["training"] = ("not timed (--serving-only): each experiment's network is "
                                 "built with fresh weights in float32 and exported as is")
    if litert:
        described["litert"] = (
            f"the SavedModel's serving_default converted to TFLite (as "
            f"assets.extra/model.tflite), run by {runtime_name()} in a fresh process with "
            f"{' and '.join(map(str, LATENCY_THREADS))} threads; 1 uint8 image, median and "
            f"p90 of {10 * steps} individually timed calls after {WARMUP_CALLS} warm-up "
            f"calls, output copied to NumPy")
    return described


def run_peer(script, name, timeout=900):
    """Runs the PyTorch peer script on one architecture.

    Args:
        script: path of a script printing `name parameters train_img_s infer_img_s` lines
            (`shared/bench/torch_peer.py`).
        name: the architecture name.
        timeout: seconds before the peer is given up.

    Returns:
        `{"parameters", "train_images_per_second", "inference_images_per_second"}`, or
        `{"error": text}` when the peer does not know the name or cannot run.
    """
    try:
        done = subprocess.run([sys.executable, str(script), name], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[0] == name:
            return {"parameters": int(fields[1]),
                    "train_images_per_second": float(fields[2]),
                    "inference_images_per_second": float(fields[3])}
    return {"error": f"exit {done.returncode}: {_last_line(done.stderr)}"}


def _last_line(text):
    """The last line a failed subprocess wrote (its error, usually)."""
    return (text.strip().splitlines() or ["no output"])[-1]


SERVING_PROBE = r"""
import json, sys, time
import numpy as np
import tensorflow as tf

folder, steps, batch, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
shape = json.loads(sys.argv[5])
serve = tf.saved_model.load(folder).signatures["serving_default"]
images = np.random.default_rng(0).integers(0, 256, (batch, *shape), dtype=np.uint8)
many, one = tf.constant(images), tf.constant(images[:1])

def timed(tensor, count):
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        serve(image=tensor)["probabilities"].numpy()
        seconds.append(time.perf_counter() - start)
    return seconds

timed(many, warmup)
timed(one, warmup)
rate = steps * batch / sum(timed(many, steps))
latency = 1000.0 * np.asarray(timed(one, 10 * steps))
print(json.dumps({"inference_images_per_second": round(float(rate), 1),
                  "latency_ms_median": round(float(np.median(latency)), 3),
                  "latency_ms_p90": round(float(np.percentile(latency, 90)), 3)}))
"""
"""Run with `python -c` so the measuring process imports TensorFlow but not fer_keras."""

SERVING_ONEDNN = ("default", "on", "off")


def serving_environment(onednn="default"):
    """The environment of the serving process: ours, with the chosen oneDNN setting.

    Args:
        onednn: "default" (TensorFlow's own choice for this CPU, unless the user set
            `TF_ENABLE_ONEDNN_OPTS` before running us), "on" or "off".
    """
    import fer_keras

    if onednn not in SERVING_ONEDNN:
        raise ValueError(f"serving oneDNN must be one of {', '.join(SERVING_ONEDNN)}. "
                         f"Received: {onednn!r}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if onednn == "on":
        env["TF_ENABLE_ONEDNN_OPTS"] = "1"
    elif onednn == "off":
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    elif not fer_keras.ONEDNN_CHOSEN_BY_USER:
        env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    return env


def measure_serving(folder, shape, steps, onednn="default", timeout=900):
    """Inference throughput and batch-1 latency of a SavedModel, in a fresh process.

    Returns:
        `{"inference_images_per_second", "latency_ms_median", "latency_ms_p90"}`.

    Raises:
        RuntimeError: if the serving process fails (its last error line is included).
    """
    done = subprocess.run(
        [sys.executable, "-c", SERVING_PROBE, str(folder), str(steps), str(INFERENCE_BATCH),
         str(WARMUP_CALLS), json.dumps(list(shape))],
        capture_output=True, text=True, timeout=timeout, env=serving_environment(onednn))
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"The serving process failed on {folder}: "
                           f"{_last_line(done.stderr)}")
    return json.loads(lines[-1])


def measure_litert(savedmodel_dir, tflite_path, steps, quantize=None, float_ops=None):
    """LiteRT batch-1 latency of a SavedModel's TFLite conversion, per thread count.

    Returns:
        `{"litert_runtime", "litert_threads_T_latency_ms_median",
        "litert_threads_T_latency_ms_p90" for T in LATENCY_THREADS}`, or
        `{"litert_error": reason}` when the model does not convert. With `quantize="int8"`
        the keys start with `litert_int8_` instead: the file is calibrated on random pixels,
        which sets its speed (int8 kernels do not depend on the values) but not its accuracy
        (`python -m fer_keras.formats` scores trained runs' int8 files).
    """
    import numpy as np

    from fer_keras.export import convert_tflite

    prefix = "litert_int8" if quantize == "int8" else "litert"
    representative = None
    if quantize == "int8":
        representative = np.random.default_rng(0).integers(0, 256, (32, 48, 48, 1), np.uint8)
    written, message = convert_tflite(savedmodel_dir, tflite_path, quantize, representative,
                                      float_ops)
    if not written:
        return {f"{prefix}_error": message}
    result = {}
    for threads in LATENCY_THREADS:
        timed = measure_latency(tflite_path, threads, calls=10 * steps, warmup=WARMUP_CALLS)
        result[f"{prefix}_runtime"] = timed["runtime"]
        for key in ("latency_ms_median", "latency_ms_p90"):
            result[f"{prefix}_threads_{threads}_{key}"] = timed[key]
    return result


def measure_training(settings, steps, seed, precision, model_only=False):
    """Training images/s of one resolved experiment under a dtype policy.

    Args:
        model_only: time the network alone: the same random images as cached batches in
            a fixed order, without the experiment's augmentation (which runs on the CPU
            too, in float32, whatever the policy), so the figure is the network's own
            forward and backward pass.

    Returns:
        `(images_per_second, model)`: the median over `EPOCHS` timed epochs, and the model
        (under `precision`), trained on random images.
    """
    import keras
    import numpy as np

    from fer_keras.data.augmentation import Augmentation
    from fer_keras.data.sources import IMAGE_SIZE, NUM_CLASSES, make_dataset
    from fer_keras.models import get_model
    from fer_keras.training.recipe import EpochTimer, class_weights, compile_model, precision_policy

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    count = steps * TRAIN_BATCH
    images = rng.integers(0, 256, (count, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, count)
    with precision_policy(precision):
        model = get_model(settings["model"], **settings["model_kwargs"])
        compile_model(model, steps_per_epoch=steps, **settings)
    augmentation = (Augmentation(settings["augmentation"])
                    if settings["augmentation"] and not model_only else None)
    dataset = make_dataset(images, labels, TRAIN_BATCH, shuffle=not model_only,
                           augmentation=augmentation, seed=seed)
    weights = class_weights(labels, settings["class_weight"])
    model.fit(dataset, epochs=1, steps_per_epoch=min(WARMUP_STEPS, steps), verbose=0,
              shuffle=False, class_weight=weights)
    timer = EpochTimer(count)
    history = model.fit(dataset, epochs=EPOCHS, verbose=0, shuffle=False, callbacks=[timer],
                        class_weight=weights)
    return float(np.median(history.history["train_images_per_second"])), model


def bench_experiment(name, steps=DEFAULT_STEPS, seed=0, serving_onednn="default",
                     jit_compile=False, litert=True, precisions=None, serving_only=False,
                     int8=False, model_only=False, rounds=1):
    """Measures one experiment (see the module docstring for what is timed).

    Args:
        name: an experiment from `fer_keras.training.experiments.list_experiments()`.
        steps: timed training steps per epoch and timed inference batches; batch-1
            latency takes 10 x `steps` calls.
        seed: seed of the random images, labels and weights.
        serving_onednn: oneDNN in the serving process: "default", "on" or "off".
        jit_compile: also export with XLA (`fer_keras.export.build_archive`) and measure
            that SavedModel too, as `xla_inference_images_per_second`,
            `xla_latency_ms_median` and `xla_latency_ms_p90`.
        litert: also convert the SavedModel to TFLite and time it with LiteRT at batch 1
            (see `measure_litert`).
        int8: also time an int8 TFLite file (post-training quantization as `export
            --quantize int8` does it, calibrated on random pixels: its speed, not its
            accuracy).
        precisions: dtype policies to time training under, one after the other (e.g.
            `["float32", "mixed_bfloat16"]`); default the experiment's own. The first is
            `train_images_per_second`; all go in `train_images_per_second_by_precision`.
            Serving is always timed in float32, as `export` writes it.
        model_only: also time training of the network alone under each precision
            (cached batches, no augmentation or shuffling), as
            `model_train_images_per_second_by_precision`: it separates the network's
            bfloat16 speed-up from that of the whole `fit` pipeline.
        rounds: time training this many times under each precision, the precisions taking
            turns (float32, bfloat16, float32, ...), and keep each one's median: slow drift
            of the machine then falls on every precision alike. The single figures go in
            `train_images_per_second_rounds` (and `model_train_..._rounds`).
        serving_only: skip training; serve the experiment's freshly built float32 model
            (weights do not change a float model's speed). The result then has no
            training figures.

    Returns:
        A JSON-ready dict: experiment, model, augmentation, parameters, forward_passes
        (per face at inference: 2 for a mirror-averaged net), train_images_per_second
        (not with `serving_only`), inference_images_per_second, latency_ms_median,
        latency_ms_p90 and the LiteRT and XLA figures asked for.
    """
    import keras
    import numpy as np

    from fer_keras.export import write_savedmodel
    from fer_keras.training.settings import resolve_settings
    from fer_keras.models import get_model, with_dtype_policy
    from fer_keras.models.layers import forward_passes

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer. Received: steps={steps!r}")
    settings = resolve_settings(name)
    precisions = list(precisions or [settings["precision"]])
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer. Received: rounds={rounds!r}")
    by_round, model_by_round = {}, {}
    if serving_only:
        keras.utils.set_random_seed(seed)
        model = get_model(settings["model"], **settings["model_kwargs"])
    else:
        for _ in range(rounds):
            for precision in precisions:
                rate, model = measure_training(settings, steps, seed, precision)
                by_round.setdefault(precision, []).append(rate)
                if model_only:
                    rate, _ = measure_training(settings, steps, seed, precision,
                                               model_only=True)
                    model_by_round.setdefault(precision, []).append(rate)
        model = with_dtype_policy(model, "float32")

    with tempfile.TemporaryDirectory(prefix="fer_bench_") as folder:
        write_savedmodel(model, Path(folder) / "savedmodel")
        serving = measure_serving(Path(folder) / "savedmodel", model.input_shape[1:], steps,
                                  serving_onednn)
        if litert:
            serving.update(measure_litert(Path(folder) / "savedmodel",
                                          Path(folder) / "model.tflite", steps))
        if int8:
            from fer_keras.export import float_ops_for

            serving.update(measure_litert(Path(folder) / "savedmodel",
                                          Path(folder) / "model_int8.tflite", steps, "int8",
                                          float_ops_for(model)))
        if jit_compile:
            write_savedmodel(model, Path(folder) / "xla", jit_compile=True)
            compiled = measure_serving(Path(folder) / "xla", model.input_shape[1:], steps,
                                       serving_onednn)
            serving.update({f"xla_{key}": value for key, value in compiled.items()})
    result = {
        "experiment": name,
        "model": settings["model"],
        "augmentation": settings["augmentation"],
        "parameters": int(model.count_params()),
        "forward_passes": forward_passes(model),
        **serving,
    }
    # Through fit's pipeline, then of the network alone: each precision's median over the
    # rounds, and every round where there were several.
    for prefix, timed in (("", by_round), ("model_", model_by_round)):
        if not timed:
            continue
        result[f"{prefix}train_images_per_second_by_precision"] = {
            key: round(float(np.median(values)), 1) for key, values in timed.items()}
        if rounds > 1:
            result[f"{prefix}train_images_per_second_rounds"] = {
                key: [round(value, 1) for value in values] for key, values in timed.items()}
    if by_round:
        result["train_images_per_second"] = \
            result["train_images_per_second_by_precision"][precisions[0]]
    if rounds > 1:
        result["rounds"] = rounds
    keras.backend.clear_session()
    return result


def add_peer(result, peer):
    """Adds the peer's training throughput and our ratio to a `bench_experiment` result."""
    result = dict(result)
    if "error" in peer:
        result["peer_error"] = peer["error"]
        return result
    result["peer_train_images_per_second"] = peer["train_images_per_second"]
    result["peer_parameters"] = peer["parameters"]
    if result["augmentation"] is None:
        result["train_ratio_to_peer"] = round(
            result["train_images_per_second"] / peer["train_images_per_second"], 2)
    return result


def table_rows(results):
    """Column names and formatted cells of a results table, shared by the text table here
    and the Markdown one of `fer_keras.report`.

    "ms/image, batch 256" is the inverse of the batch-256 throughput: the compute one image
    costs when the cores are kept busy, a floor that batch-1 latency can approach but not
    beat. PyTorch columns appear when any result has the peer's figures.
    """
    peer = any("peer_train_images_per_second" in row or "peer_error" in row
               for row in results)
    training = any("train_images_per_second" in row for row in results)
    passes = any("forward_passes" in row for row in results)
    header = ["experiment", "model", "parameters"] + (["passes/face"] if passes else []) \
        + (["train img/s"] if training else [])
    # Training images/s per dtype policy: through fit's pipeline, then of the network alone.
    by_precision = [_precision_columns(results, key, label) for key, label in (
        ("train_images_per_second_by_precision", ("train img/s", "bfloat16 speed-up")),
        ("model_train_images_per_second_by_precision",
         ("network alone img/s", "bfloat16 speed-up, network alone")))]
    for columns, _ in by_precision:
        header += columns
    if peer:
        header += ["PyTorch train img/s", "ratio"]
    header += ["inference img/s (batch 256)", "ms/image, batch 256",
               "batch-1 ms, median (p90)"]
    xla = any("xla_latency_ms_median" in row for row in results)
    if xla:
        header.append("batch-1 ms, XLA export")
    litert = any("litert_runtime" in row or "litert_error" in row for row in results)
    if litert:
        header += [f"LiteRT batch-1 ms, {threads} thread{'s' if threads > 1 else ''}"
                   for threads in LATENCY_THREADS]
    int8 = any("litert_int8_runtime" in row or "litert_int8_error" in row for row in results)
    if int8:
        header += [f"LiteRT int8 batch-1 ms, {LATENCY_THREADS[-1]} threads"]
    rows = []
    for row in results:
        cells = [row["experiment"], row["model"], f"{row['parameters']:,}"]
        if passes:
            cells.append(str(row.get("forward_passes", "-")))
        if training:
            rate = row.get("train_images_per_second")
            cells.append("-" if rate is None else f"{rate:,.0f}")
        for _, cells_of in by_precision:
            cells += cells_of(row)
        if peer:
            rate, ratio = row.get("peer_train_images_per_second"), row.get("train_ratio_to_peer")
            cells += ["-" if rate is None else f"{rate:,.0f}",
                      "-" if ratio is None else f"{ratio:.2f}x"]
        cells += [f"{row['inference_images_per_second']:,.0f}",
                  f"{1000.0 / row['inference_images_per_second']:.2f}",
                  f"{row['latency_ms_median']:.2f} ({row['latency_ms_p90']:.2f})"]
        if xla:
            cells.append("-" if "xla_latency_ms_median" not in row else
                         f"{row['xla_latency_ms_median']:.2f} ({row['xla_latency_ms_p90']:.2f})")
        if litert:
            for threads in LATENCY_THREADS:
                key = f"litert_threads_{threads}_latency_ms"
                cells.append("-" if f"{key}_median" not in row else
                             f"{row[f'{key}_median']:.2f} ({row[f'{key}_p90']:.2f})")
        if int8:
            key = f"litert_int8_threads_{LATENCY_THREADS[-1]}_latency_ms"
            cells.append("-" if f"{key}_median" not in row else
                         f"{row[f'{key}_median']:.2f} ({row[f'{key}_p90']:.2f})")
        rows.append(cells)
    return header, rows


def _precision_columns(results, key, labels):
    """Columns for the `{precision: images/s}` dicts under `key`, where any row times more
    than one policy: one per policy, then the bfloat16/float32 ratio when both are there.

    Returns `(header, cells)`: the column names and a function giving one row's cells.
    """
    name, ratio_name = labels
    compared = sorted({precision for row in results for precision in row.get(key, {})})
    compared = compared if len(compared) > 1 else []
    speedup = {"float32", "mixed_bfloat16"} <= set(compared)
    header = [f"{name}, {precision}" for precision in compared] + ([ratio_name] if speedup else [])

    def cells(row):
        rates = row.get(key, {})
        values = ["-" if precision not in rates else f"{rates[precision]:,.0f}"
                  for precision in compared]
        if speedup:
            values.append(f"{rates['mixed_bfloat16'] / rates['float32']:.2f}x"
                          if {"float32", "mixed_bfloat16"} <= set(rates) else "-")
        return values

    return header, cells


def format_table(results, env=None, steps=DEFAULT_STEPS, serving_onednn="default"):
    """A plain-text table of `bench_experiment` results with what was timed above it."""
    lines = []
    if env is not None:
        load = env.get("load_average")
        load_text = " ".join(f"{value:.2f}" for value in load) if load else "unknown"
        lines.append(f"TensorFlow {env['tensorflow']}, Keras {env['keras']}, "
                     f"{env['cpu_count']} CPU(s), devices {', '.join(env['devices'])}, "
                     f"load average {load_text}")
    for key, text in method(steps, serving_onednn, litert=any(
            "litert_runtime" in row for row in results), serving_only=not any(
            "train_images_per_second" in row for row in results), int8=any(
            "litert_int8_runtime" in row for row in results), model_only=any(
            "model_train_images_per_second_by_precision" in row for row in results),
            rounds=max((row.get("rounds", 1) for row in results), default=1)).items():
        lines.append(f"{key}: {text}")
    header, rows = table_rows(results)
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    line = "  ".join(f"{{:<{widths[0]}}}" if i == 0 else f"{{:>{w}}}"
                     for i, w in enumerate(widths))
    lines += ["", line.format(*header), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    lines += [line.format(*row) for row in rows]
    return "\n".join(lines)


def build_parser():
    from fer_keras.cli import int_at_least
    from fer_keras.training.experiments import list_experiments
    from fer_keras.training.experiments import PRECISIONS

    parser = argparse.ArgumentParser(
        prog=command_prog("bench"), description=__doc__.split("\n\n")[0],
        epilog="Experiments: " + ", ".join(list_experiments()))
    parser.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                        help="experiment names; default the study's 13 rows")
    parser.add_argument("--steps", type=int_at_least(1), default=DEFAULT_STEPS,
                        help=f"timed training steps per epoch and inference batches "
                        f"(default {DEFAULT_STEPS}); batch-1 latency uses 10x as many calls")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--serving-onednn", choices=SERVING_ONEDNN, default="default",
                        help="oneDNN in the process that serves the SavedModel: TensorFlow's "
                        "default for this CPU (as TF Serving would run), on or off")
    parser.add_argument("--precision", nargs="+", choices=list(PRECISIONS),
                        help="time training under each of these dtype policies, side by side "
                        "(e.g. --precision float32 mixed_bfloat16); default: the experiment's")
    parser.add_argument("--model-only", action="store_true",
                        help="also time training of the network alone under each --precision "
                        "(cached batches, no augmentation): the network's own speed-up, "
                        "apart from the input pipeline's")
    parser.add_argument("--rounds", type=int_at_least(1), default=1,
                        help="time training this many times under each --precision, taking "
                        "turns, and report each one's median (default 1)")
    parser.add_argument("--jit-compile", action="store_true",
                        help="also measure batch-1 latency of an XLA-compiled export "
                        "(python -m fer_keras.export --jit-compile)")
    parser.add_argument("--all", action="store_true",
                        help="every registered experiment (the study's rows and ours)")
    parser.add_argument("--serving-only", action="store_true",
                        help="skip training; time only the exported model (SavedModel and "
                        "LiteRT), built with fresh weights: a float model's speed does not "
                        "depend on its weights")
    parser.add_argument("--int8", action="store_true",
                        help="also time an int8 TFLite file with LiteRT (quantized as export "
                        "--quantize int8 does, calibrated on random pixels: speed only)")
    parser.add_argument("--no-litert", action="store_true",
                        help="skip the LiteRT (TFLite) batch-1 latency columns")
    parser.add_argument("--peer", metavar="SCRIPT",
                        help="PyTorch peer script (shared/bench/torch_peer.py) run before "
                        "each experiment it knows; adds its training images/s and our ratio")
    parser.add_argument("--backend", nargs="+", choices=["tensorflow", "jax", "torch"],
                        help="instead of the full table: training images/s of the first "
                        "experiment on each Keras backend, side by side (one process each)")
    parser.add_argument("--stream-folder", metavar="DIR",
                        help="instead of the full table: in-memory against streamed reading "
                        "of the image folder DIR (written from --data first if it has no "
                        "train/), pipeline and training images/s of the first experiment")
    parser.add_argument("--data", help="FER2013 CSV to write --stream-folder DIR from "
                        "(default $FER2013_PATH, then data/fer2013.csv[.gz])")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (environment, method, results)")
    parser.add_argument("--save", metavar="PATH",
                        help="also write that JSON object to PATH (e.g. to keep the figures "
                        "behind a README table)")
    return parser


def _throughput(args, experiment):
    """`--backend` and `--stream-folder`: training throughput only (`fer_keras.throughput`)."""
    from fer_keras import throughput

    if args.backend:
        rows = throughput.compare_backends(experiment, args.backend, args.steps, args.seed)
        report = {"experiment": experiment, "load_average": os.getloadavg(), "results": rows}
        text = throughput.format_backends(rows)
    else:
        folder = Path(args.stream_folder)
        if not (folder / "train").is_dir():
            from fer_keras.data.sources import resolve_data_path

            source = resolve_data_path(args.data)
            print(f"writing {source} as PNG files under {folder} ...", file=sys.stderr,
                  flush=True)
            throughput.write_image_folder(source, folder)
        report = throughput.compare_pipelines(folder, experiment, train_steps=args.steps,
                                              seed=args.seed)
        report["load_average"] = os.getloadavg()
        text = throughput.format_pipelines(report)
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(report, indent=2) + "\n")
    load = " ".join(f"{value:.2f}" for value in report["load_average"])
    print(json.dumps(report, indent=2) if args.json else f"load average {load}\n{text}")


def main(argv=None):
    from fer_keras.training.experiments import STUDY_EXPERIMENTS, get_experiment

    from fer_keras.training.experiments import list_experiments

    args = build_parser().parse_args(argv)
    if args.all and args.experiments:
        build_parser().error("give experiment names or --all, not both")
    names = list(list_experiments()) if args.all else (args.experiments
                                                       or list(STUDY_EXPERIMENTS))

    def body():
        for name in names:
            get_experiment(name)  # Unknown names fail before anything is timed.
        if args.peer and not Path(args.peer).is_file():
            raise ValueError(f"--peer: no such script: {args.peer}. Pass the path of "
                             f"torch_peer.py (shared/bench/torch_peer.py beside the project).")
        if args.steps < 1:
            raise ValueError(f"--steps must be a positive integer. Received: "
                             f"steps={args.steps}")
        if args.model_only and args.serving_only:
            raise ValueError("--model-only times training; it cannot go with --serving-only.")
        if args.backend or args.stream_folder:
            return _throughput(args, names[0])
        env = environment()
        results = []
        for name in names:
            if not args.json:
                print(f"measuring {name} ...", file=sys.stderr, flush=True)
            peer = run_peer(args.peer, name) if args.peer else None
            result = bench_experiment(name, steps=args.steps, seed=args.seed,
                                      serving_onednn=args.serving_onednn,
                                      jit_compile=args.jit_compile,
                                      litert=not args.no_litert,
                                      precisions=args.precision,
                                      serving_only=args.serving_only,
                                      int8=args.int8, model_only=args.model_only,
                                      rounds=args.rounds)
            results.append(add_peer(result, peer) if peer is not None else result)
        command = " ".join(["python -m fer_keras.bench", *(argv if argv is not None
                                                           else sys.argv[1:])])
        report = {"command": command, "environment": env,
                  "method": method(args.steps, args.serving_onednn, not args.no_litert,
                                   args.serving_only, args.int8, args.model_only,
                                   args.rounds),
                  "results": results}
        if args.save:
            Path(args.save).parent.mkdir(parents=True, exist_ok=True)
            Path(args.save).write_text(json.dumps(report, indent=2) + "\n")
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(format_table(results, env, args.steps, args.serving_onednn))

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
