"""Measure each experiment's size, training speed and serving speed on this machine
(`python -m fer_keras.bench` is the command).

For each experiment (`serving_only` skips the training figures):

* parameters: `count_params()` of the experiment's model.
* training images/s: `model.fit` of the model and pipeline `fit` builds
  (`fer_keras.training.builder.build_for_training`: the precision policy timed, by
  default the experiment's; `compile_model` with its optimizer and loss; `make_dataset`
  with shuffling and its augmentation; its class weights), batch 128, on random uint8
  images. The model first trains `WARMUP_STEPS` steps untimed (graph tracing); then
  `EPOCHS` epochs of N steps are timed by the same `EpochTimer` callback that writes
  `train_images_per_second` into a run's history.csv, and the median epoch is reported.
* inference images/s: the model exported by `fer_keras.serving.export.write_savedmodel` to a
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

Export, loading and warm-up are not timed. Other processes on the machine slow every
number; the header prints the load average so a reader can judge.

Results are typed (`fer_keras.benchmarks.results`): `bench_experiment` returns a
`BenchResult`, and `table_rows` / `format_table` take those or their JSON rows.
"""

import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer_keras.benchmarks.results import (
    BenchResult,
    Latency,
    LiteRTFigures,
    PeerFigures,
    ResultLike,
    ServingFigures,
    TrainingFigures,
    as_result,
)
from fer_keras.data.labels import FER2013
from fer_keras.data.sources import IMAGE_SIZE
from fer_keras.serving.export import convert_tflite, float_ops_for, write_savedmodel
from fer_keras.serving.litert import LATENCY_THREADS, measure_latency, runtime_name
from fer_keras.training.settings import resolve_settings

TRAIN_BATCH = 128
INFERENCE_BATCH = 256
WARMUP_STEPS = 5
WARMUP_CALLS = 3
EPOCHS = 2
DEFAULT_STEPS = 20


def environment() -> dict:
    """The machine and library versions the numbers were measured with."""
    # Heavy: TensorFlow and Keras load only when something is measured (fast `--help`).
    import keras
    import tensorflow as tf

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"machine": platform.platform(), "processor": platform.processor() or None,
            "cpu_count": os.cpu_count(), "load_average": load,
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "devices": [device.name for device in tf.config.list_logical_devices()]}


def method(steps: int, serving_onednn: str = "default", litert: bool = True,
           serving_only: bool = False, int8: bool = False, model_only: bool = False,
           rounds: int = 1) -> dict[str, str]:
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


def run_peer(script: str | Path, name: str, timeout: float = 900) -> dict:
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


def serving_environment(onednn: str = "default") -> dict[str, str]:
    """The environment of the serving process: ours, with the chosen oneDNN setting.

    Args:
        onednn: "default" (TensorFlow's own choice for this CPU, unless the user set
            `TF_ENABLE_ONEDNN_OPTS` before running us), "on" or "off".
    """
    import fer_keras  # The package's flag, set once at import (see fer_keras/__init__.py).

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


def measure_serving(folder: str | Path, shape: tuple, steps: int, onednn: str = "default",
                    timeout: float = 900) -> ServingFigures:
    """Inference throughput and batch-1 latency of a SavedModel, in a fresh process.

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
    return ServingFigures.from_json(json.loads(lines[-1]))


def measure_litert(savedmodel_dir: str | Path, tflite_path: str | Path, steps: int,
                   quantize: str | None = None,
                   float_ops: Sequence[str] | None = None) -> LiteRTFigures:
    """LiteRT batch-1 latency of a SavedModel's TFLite conversion, per thread count
    (`LATENCY_THREADS`), or the reason it does not convert.

    With `quantize="int8"` the file is calibrated on random pixels, which sets its speed
    (int8 kernels do not depend on the values) but not its accuracy (`python -m
    fer_keras.formats` scores trained runs' int8 files).
    """

    representative = None
    if quantize == "int8":
        representative = np.random.default_rng(0).integers(0, 256, (32, 48, 48, 1), np.uint8)
    written, message = convert_tflite(savedmodel_dir, tflite_path, quantize, representative,
                                      float_ops)
    if not written:
        return LiteRTFigures(error=message)
    runtime, latency = None, {}
    for threads in LATENCY_THREADS:
        timed = measure_latency(tflite_path, threads, calls=10 * steps, warmup=WARMUP_CALLS)
        runtime = timed["runtime"]
        latency[threads] = Latency(timed["latency_ms_median"], timed["latency_ms_p90"])
    return LiteRTFigures(runtime=runtime, latency=latency)


def measure_training(settings: dict, steps: int, seed: int, precision: str,
                     model_only: bool = False) -> tuple[float, Any]:
    """Training images/s of one resolved experiment under a dtype policy.

    The model and its pipeline come from `fer_keras.training.builder.build_for_training`,
    as `fit` builds them, with the batch at `TRAIN_BATCH` and the policy at `precision`.

    Args:
        settings: resolved settings (`fer_keras.training.settings.resolve_settings`).
        steps: training steps per timed epoch (and the learning-rate schedule's epoch).
        seed: seed of the random images and labels, the weights and the shuffle.
        precision: the dtype policy to build the model under.
        model_only: time the network alone: the same random images as cached batches in
            a fixed order, without the experiment's augmentation (which runs on the CPU
            too, in float32, whatever the policy), so the figure is the network's own
            forward and backward pass.

    Returns:
        `(images_per_second, model)`: the median over `EPOCHS` timed epochs, and the model
        (under `precision`), trained on random images.
    """
    # Heavy: Keras and the builder (which imports it) load only when training is timed.
    import keras

    from fer_keras.training.builder import build_for_training
    from fer_keras.training.recipe import EpochTimer

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    count = steps * TRAIN_BATCH
    images = rng.integers(0, 256, (count, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.uint8)
    labels = rng.integers(0, FER2013.num_classes, count)
    timed = dict(settings, precision=precision, batch_size=TRAIN_BATCH,
                 augmentation=None if model_only else settings["augmentation"])
    setup = build_for_training(timed, images, labels, seed=seed, steps_per_epoch=steps,
                               shuffle=not model_only)
    model = setup.model
    model.fit(setup.train_data, epochs=1, steps_per_epoch=min(WARMUP_STEPS, steps), verbose=0,
              shuffle=False, class_weight=setup.class_weight)
    timer = EpochTimer(count)
    history = model.fit(setup.train_data, epochs=EPOCHS, verbose=0, shuffle=False,
                        callbacks=[timer], class_weight=setup.class_weight)
    return float(np.median(history.history["train_images_per_second"])), model


def _median_figures(timed: dict[str, list[float]], rounds: int) -> dict[str, TrainingFigures]:
    """Each precision's median over its rounds (rounded as bench writes it), and every
    round where there were several."""

    return {precision: TrainingFigures(
        round(float(np.median(values)), 1),
        [round(value, 1) for value in values] if rounds > 1 else None)
        for precision, values in timed.items()}


def bench_experiment(name: str, steps: int = DEFAULT_STEPS, seed: int = 0,
                     serving_onednn: str = "default", jit_compile: bool = False,
                     litert: bool = True, precisions: list[str] | None = None,
                     serving_only: bool = False, int8: bool = False, model_only: bool = False,
                     rounds: int = 1) -> BenchResult:
    """Measures one experiment (see the module docstring for what is timed).

    Args:
        name: an experiment from `fer_keras.training.experiments.list_experiments()`.
        steps: timed training steps per epoch and timed inference batches; batch-1
            latency takes 10 x `steps` calls.
        seed: seed of the random images, labels and weights.
        serving_onednn: oneDNN in the serving process: "default", "on" or "off".
        jit_compile: also export with XLA (`fer_keras.serving.export.build_archive`) and
            measure that SavedModel too (`xla`; JSON `xla_inference_images_per_second`,
            `xla_latency_ms_median` and `xla_latency_ms_p90`).
        litert: also convert the SavedModel to TFLite and time it with LiteRT at batch 1
            (see `measure_litert`).
        int8: also time an int8 TFLite file (post-training quantization as `export
            --quantize int8` does it, calibrated on random pixels: its speed, not its
            accuracy).
        precisions: dtype policies to time training under, one after the other (e.g.
            `["float32", "mixed_bfloat16"]`); default the experiment's own. The first is
            `train_images_per_second`; all go in `training` (JSON
            `train_images_per_second_by_precision`). Serving is always timed in float32,
            as `export` writes it.
        model_only: also time training of the network alone under each precision
            (cached batches, no augmentation or shuffling), as `network_alone` (JSON
            `model_train_images_per_second_by_precision`): it separates the network's
            bfloat16 speed-up from that of the whole `fit` pipeline.
        rounds: time training this many times under each precision, the precisions taking
            turns (float32, bfloat16, float32, ...), and keep each one's median: slow drift
            of the machine then falls on every precision alike. The single figures go in
            each `TrainingFigures.rounds` (JSON `train_images_per_second_rounds` and
            `model_train_..._rounds`).
        serving_only: skip training; serve the experiment's freshly built float32 model
            (weights do not change a float model's speed). The result then has no
            training figures.

    Returns:
        A `BenchResult`: experiment, model, augmentation, parameters, forward_passes (per
        face at inference: 2 for a mirror-averaged net), the training figures (not with
        `serving_only`), the SavedModel's serving figures and the LiteRT and XLA figures
        asked for.
    """
    # Heavy: Keras and the zoo load only when something is measured (fast `--help`).
    import keras

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

    litert_figures = int8_figures = xla = None
    with tempfile.TemporaryDirectory(prefix="fer_bench_") as folder:
        savedmodel = Path(folder) / "savedmodel"
        write_savedmodel(model, savedmodel)
        serving = measure_serving(savedmodel, model.input_shape[1:], steps, serving_onednn)
        if litert:
            litert_figures = measure_litert(savedmodel, Path(folder) / "model.tflite", steps)
        if int8:
            int8_figures = measure_litert(savedmodel, Path(folder) / "model_int8.tflite",
                                          steps, "int8", float_ops_for(model))
        if jit_compile:
            write_savedmodel(model, Path(folder) / "xla", jit_compile=True)
            xla = measure_serving(Path(folder) / "xla", model.input_shape[1:], steps,
                                  serving_onednn)
    # Through fit's pipeline, then of the network alone: each precision's median over the
    # rounds, and every round where there were several.
    training = _median_figures(by_round, rounds)
    result = BenchResult(
        experiment=name, model=settings["model"], augmentation=settings["augmentation"],
        parameters=int(model.count_params()), forward_passes=forward_passes(model),
        serving=serving, litert=litert_figures, litert_int8=int8_figures, xla=xla,
        training=training, network_alone=_median_figures(model_by_round, rounds),
        train_images_per_second=(training[precisions[0]].images_per_second
                                 if training else None),
        rounds=rounds if rounds > 1 else None)
    keras.backend.clear_session()
    return result


def add_peer(result: ResultLike, peer: dict) -> ResultLike:
    """Adds the peer's training throughput (a `run_peer` dict) and our ratio to it to a
    `bench_experiment` result; a JSON row comes back as a JSON row."""
    typed = as_result(result)
    if "error" in peer:
        figures = PeerFigures(error=peer["error"])
    else:
        ratio = None
        if typed.augmentation is None:
            ratio = round(typed.train_images_per_second / peer["train_images_per_second"], 2)
        figures = PeerFigures(peer["train_images_per_second"], peer["parameters"], ratio)
    typed = dataclasses.replace(typed, peer=figures)
    return typed if isinstance(result, BenchResult) else typed.to_json()


def _latency_cell(latency: Latency | None) -> str:
    return "-" if latency is None else f"{latency.median_ms:.2f} ({latency.p90_ms:.2f})"


def _litert_latency(figures: LiteRTFigures | None, threads: int) -> Latency | None:
    return None if figures is None else figures.latency.get(threads)


def table_rows(results: list[ResultLike]) -> tuple[list[str], list[list[str]]]:
    """Column names and formatted cells of a results table, shared by the text table here
    and the Markdown one of `fer_keras.reporting.report`.

    "ms/image, batch 256" is the inverse of the batch-256 throughput: the compute one image
    costs when the cores are kept busy, a floor that batch-1 latency can approach but not
    beat. PyTorch columns appear when any result has the peer's figures.
    """
    results = [as_result(row) for row in results]
    peer = any(row.peer is not None for row in results)
    training = any(row.train_images_per_second is not None for row in results)
    passes = any(row.forward_passes is not None for row in results)
    header = ["experiment", "model", "parameters"] + (["passes/face"] if passes else []) \
        + (["train img/s"] if training else [])
    # Training images/s per dtype policy: through fit's pipeline, then of the network alone.
    by_precision = [_precision_columns([getattr(row, field) for row in results], label)
                    for field, label in (
                        ("training", ("train img/s", "bfloat16 speed-up")),
                        ("network_alone",
                         ("network alone img/s", "bfloat16 speed-up, network alone")))]
    for columns, _ in by_precision:
        header += columns
    if peer:
        header += ["PyTorch train img/s", "ratio"]
    header += ["inference img/s (batch 256)", "ms/image, batch 256",
               "batch-1 ms, median (p90)"]
    xla = any(row.xla is not None for row in results)
    if xla:
        header.append("batch-1 ms, XLA export")
    litert = any(row.litert is not None and row.litert.ran for row in results)
    if litert:
        header += [f"LiteRT batch-1 ms, {threads} thread{'s' if threads > 1 else ''}"
                   for threads in LATENCY_THREADS]
    int8 = any(row.litert_int8 is not None and row.litert_int8.ran for row in results)
    if int8:
        header += [f"LiteRT int8 batch-1 ms, {LATENCY_THREADS[-1]} threads"]
    rows = []
    for index, row in enumerate(results):
        cells = [row.experiment, row.model, f"{row.parameters:,}"]
        if passes:
            cells.append("-" if row.forward_passes is None else str(row.forward_passes))
        if training:
            rate = row.train_images_per_second
            cells.append("-" if rate is None else f"{rate:,.0f}")
        for _, cells_of in by_precision:
            cells += cells_of(index)
        if peer:
            figures = row.peer or PeerFigures()
            rate, ratio = figures.train_images_per_second, figures.train_ratio
            cells += ["-" if rate is None else f"{rate:,.0f}",
                      "-" if ratio is None else f"{ratio:.2f}x"]
        served = row.serving.inference_images_per_second
        cells += [f"{served:,.0f}", f"{1000.0 / served:.2f}", _latency_cell(row.serving.latency)]
        if xla:
            cells.append(_latency_cell(None if row.xla is None else row.xla.latency))
        if litert:
            cells += [_latency_cell(_litert_latency(row.litert, threads))
                      for threads in LATENCY_THREADS]
        if int8:
            cells.append(_latency_cell(_litert_latency(row.litert_int8, LATENCY_THREADS[-1])))
        rows.append(cells)
    return header, rows


def _precision_columns(figures: list[dict[str, TrainingFigures]], labels: tuple[str, str]
                       ) -> tuple[list[str], Callable[[int], list[str]]]:
    """Columns for each row's `{precision: TrainingFigures}`, where any row times more than
    one policy: one per policy, then the bfloat16/float32 ratio when both are there.

    Returns `(header, cells)`: the column names and a function giving row `index`'s cells.
    """
    name, ratio_name = labels
    compared = sorted({precision for row in figures for precision in row})
    compared = compared if len(compared) > 1 else []
    speedup = {"float32", "mixed_bfloat16"} <= set(compared)
    header = [f"{name}, {precision}" for precision in compared] + ([ratio_name] if speedup else [])

    def cells(index):
        rates = {precision: each.images_per_second for precision, each in figures[index].items()}
        values = ["-" if precision not in rates else f"{rates[precision]:,.0f}"
                  for precision in compared]
        if speedup:
            values.append(f"{rates['mixed_bfloat16'] / rates['float32']:.2f}x"
                          if {"float32", "mixed_bfloat16"} <= set(rates) else "-")
        return values

    return header, cells


def format_table(results: list[ResultLike], env: dict | None = None,
                 steps: int = DEFAULT_STEPS, serving_onednn: str = "default") -> str:
    """A plain-text table of `bench_experiment` results with what was timed above it."""
    results = [as_result(row) for row in results]
    lines = []
    if env is not None:
        load = env.get("load_average")
        load_text = " ".join(f"{value:.2f}" for value in load) if load else "unknown"
        lines.append(f"TensorFlow {env['tensorflow']}, Keras {env['keras']}, "
                     f"{env['cpu_count']} CPU(s), devices {', '.join(env['devices'])}, "
                     f"load average {load_text}")
    described = method(
        steps, serving_onednn,
        litert=any(row.litert is not None and row.litert.runtime is not None
                   for row in results),
        serving_only=all(row.train_images_per_second is None for row in results),
        int8=any(row.litert_int8 is not None and row.litert_int8.runtime is not None
                 for row in results),
        model_only=any(row.network_alone for row in results),
        rounds=max((row.rounds or 1 for row in results), default=1))
    for key, text in described.items():
        lines.append(f"{key}: {text}")
    header, rows = table_rows(results)
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    line = "  ".join(f"{{:<{widths[0]}}}" if i == 0 else f"{{:>{w}}}"
                     for i, w in enumerate(widths))
    lines += ["", line.format(*header), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    lines += [line.format(*row) for row in rows]
    return "\n".join(lines)
