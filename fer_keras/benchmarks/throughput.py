"""Training throughput across Keras backends and input pipelines (`bench --backend`,
`bench --stream-folder`).

* `compare_backends`: the same experiment's training images/s on each Keras backend, side
  by side in one run. The backend is fixed when Keras is imported, so each is measured in
  its own subprocess (`python -m fer_keras.throughput`, which calls `measure_backend`),
  with `fer_keras.benchmarks.bench.measure_training`: `model.fit` on the pipeline `fit`
  builds for that backend (`tf.data` on TensorFlow, the NumPy `PyDataset` on JAX and
  PyTorch), batch 128, random images, the median of timed epochs after untimed warm-up
  steps.
* `compare_pipelines`: an image folder read two ways: decoded into memory first
  (`load_image_folder`, the load timed apart) or streamed (`ImageFiles`: listed once,
  decoded a batch at a time by worker threads). For each, the input pipeline alone
  (images/s of shuffled, augmented batches read in one thread, no model) and
  `model.fit` on it (Keras reads it with the pipeline's worker threads). Model, pipeline
  and class weights come from `fer_keras.training.builder.build_for_training`, as `fit`
  builds them, so the model trains under the experiment's precision policy.

Example:

>>> rows = compare_backends("baseline", ["tensorflow", "jax", "torch"], steps=20)
>>> print(format_backends(rows))
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fer_keras.benchmarks.bench import measure_training
from fer_keras.data.labels import FER2013
from fer_keras.data.sources import (
    ImageFiles,
    default_pipeline,
    list_image_folder,
    load_fer2013,
    load_image_folder,
)
from fer_keras.training.settings import resolve_settings

BACKENDS = ("tensorflow", "jax", "torch")
PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def measure_backend(experiment: str, steps: int = 20, seed: int = 0) -> dict:
    """Training images/s of `experiment` on the backend this process runs (KERAS_BACKEND)."""
    # Heavy: Keras (and with it the backend) loads only when something is measured.
    import keras

    settings = resolve_settings(experiment)
    rate, model = measure_training(settings, steps, seed, settings["precision"])
    versions = {"keras": keras.__version__}
    package = PACKAGES[keras.backend.backend()]
    versions[package] = __import__(package).__version__
    return {"experiment": experiment, "backend": keras.backend.backend(),
            "pipeline": default_pipeline(), "parameters": int(model.count_params()),
            "train_images_per_second": round(rate, 1), "versions": versions}


def compare_backends(experiment: str, backends=BACKENDS, steps: int = 20, seed: int = 0,
                     timeout: float = 1800) -> list[dict]:
    """Measures `experiment` on each backend, one subprocess each, one after the other.

    Returns:
        A list of `measure_backend` dicts; a backend that is not installed or fails gets
        `{"backend", "error"}` instead.
    """
    rows = []
    for backend in backends:
        if backend not in BACKENDS:
            raise ValueError(f"Unknown backend. Use some of {', '.join(BACKENDS)}. "
                             f"Received: backend={backend!r}")
        if importlib.util.find_spec(PACKAGES[backend]) is None:
            rows.append({"backend": backend, "error": f"{PACKAGES[backend]} is not installed "
                         f"(pip install -e '.[{'cpu' if backend == 'tensorflow' else backend}]')"})
            continue
        print(f"measuring {experiment} on {backend} ...", file=sys.stderr, flush=True)
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        try:
            done = subprocess.run(
                [sys.executable, "-m", "fer_keras.throughput", experiment, "--steps",
                 str(steps), "--seed", str(seed)], env=env, capture_output=True, text=True,
                timeout=timeout)
        except subprocess.TimeoutExpired:
            rows.append({"backend": backend, "error": f"timed out after {timeout} s"})
            continue
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append({"backend": backend, "error": f"exit {done.returncode}: {last}"})
            continue
        rows.append(json.loads(lines[-1]))
    return rows


def format_backends(rows: list[dict]) -> str:
    """A plain-text table of `compare_backends` rows."""
    lines = [f"{'backend':<11} {'pipeline':<8} {'train img/s':>11}  versions"]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['backend']:<11} {'-':<8} {'-':>11}  {row['error']}")
            continue
        versions = ", ".join(f"{name} {version}" for name, version in row["versions"].items())
        lines.append(f"{row['backend']:<11} {row['pipeline']:<8} "
                     f"{row['train_images_per_second']:>11,.0f}  {versions}")
    return "\n".join(lines)


def write_image_folder(source: str | Path, root: str | Path, limit: int | None = None) -> int:
    """Writes FER2013 in the image-folder layout `load_image_folder` reads, as PNG files.

    Training rows go to `root/train/<class>/Training_N.png`, the others to
    `root/test/<class>/PublicTest_N.png` or `PrivateTest_N.png`.

    Args:
        source: a FER2013 CSV (see `fer_keras.data.sources.load_fer2013`).
        root: the folder to write (it should not exist yet).
        limit: write at most this many rows of each usage.

    Returns:
        The number of files written.
    """
    # Optional: OpenCV writes the PNG files.
    import cv2
    import numpy as np

    class_names = FER2013.class_names  # The CSV's emotion ids are FER2013's.
    images, labels, usages = load_fer2013(source)
    root = Path(root)
    written = 0
    for usage in ("Training", "PublicTest", "PrivateTest"):
        rows = np.flatnonzero(usages == usage)[:limit]
        part = "train" if usage == "Training" else "test"
        for name in class_names:
            (root / part / name).mkdir(parents=True, exist_ok=True)
        for row in rows:
            path = root / part / class_names[labels[row]] / f"{usage}_{row}.png"
            cv2.imwrite(str(path), images[row, ..., 0])
            written += 1
    return written


def _time_pipeline(dataset, batches):
    """Images/s of reading `batches` batches of a `PyDataset` in this thread (no model)."""
    start = time.perf_counter()
    images = 0
    for index in range(batches):
        x, _ = dataset[index % len(dataset)]
        images += len(x)
    return images / (time.perf_counter() - start)


def compare_pipelines(folder: str | Path, experiment: str = "baseline_aug", batches: int = 40,
                      train_steps: int = 20, batch_size: int = 128, seed: int = 0) -> dict:
    """In-memory against streamed reading of an image folder (see the module docstring).

    The pipelines are the "numpy" `PyDataset` for both, so only where the pixels come from
    differs: a decoded array, or files decoded per batch (4 threads when training).

    Returns:
        A dict: images, load_seconds (decoding the whole folder for the in-memory path) and
        per path ("in_memory", "streamed") the pipeline's and training's images/s.
    """
    # Heavy: Keras and the builder (which imports it) load only when something is measured.
    import keras
    import numpy as np

    from fer_keras.training.builder import build_for_training
    from fer_keras.training.recipe import EpochTimer

    settings = dict(resolve_settings(experiment), batch_size=batch_size)
    start = time.perf_counter()
    paths, labels, _ = list_image_folder(folder)
    list_seconds = time.perf_counter() - start
    start = time.perf_counter()
    images, loaded_labels, _ = load_image_folder(folder)
    load_seconds = time.perf_counter() - start
    sources = {"in_memory": (images, loaded_labels), "streamed": (ImageFiles(paths), labels)}
    result = {"folder": str(folder), "images": int(len(paths)),
              "list_seconds": round(list_seconds, 2), "load_seconds": round(load_seconds, 2),
              "experiment": experiment, "backend": keras.backend.backend(),
              "batch_size": batch_size}
    for name, (x, y) in sources.items():
        keras.utils.set_random_seed(seed)
        setup = build_for_training(settings, x, y, seed=seed, steps_per_epoch=train_steps,
                                   pipeline="numpy")
        pipeline_rate = _time_pipeline(setup.train_data, batches)
        # Training reads the same pipeline through Keras, with its worker threads.
        setup.model.fit(setup.train_data, epochs=1, steps_per_epoch=3, verbose=0,
                        class_weight=setup.class_weight)
        timer = EpochTimer(train_steps * batch_size)
        history = setup.model.fit(setup.train_data, epochs=2, steps_per_epoch=train_steps,
                                  verbose=0, callbacks=[timer],
                                  class_weight=setup.class_weight)
        result[name] = {
            "pipeline_images_per_second": round(pipeline_rate, 1),
            "train_images_per_second": round(
                float(np.median(history.history["train_images_per_second"])), 1)}
    return result


def format_pipelines(result: dict) -> str:
    """A plain-text table of a `compare_pipelines` result."""
    lines = [f"{result['images']:,} images in {result['folder']}: listed in "
             f"{result['list_seconds']} s; decoded into memory in {result['load_seconds']} s "
             f"(the in-memory path's start-up, not in the rates below); "
             f"{result['experiment']} on {result['backend']}, batch {result['batch_size']}",
             f"{'path':<10} {'pipeline img/s':>14} {'train img/s':>11}"]
    for name in ("in_memory", "streamed"):
        row = result[name]
        lines.append(f"{name:<10} {row['pipeline_images_per_second']:>14,.0f} "
                     f"{row['train_images_per_second']:>11,.0f}")
    return "\n".join(lines)
