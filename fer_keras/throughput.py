"""Training throughput across Keras backends and input pipelines (`bench --backend`,
`bench --stream-folder`).

* `compare_backends`: the same experiment's training images/s on each Keras backend, side
  by side in one run. The backend is fixed when Keras is imported, so each is measured in
  its own subprocess (`python -m fer_keras.throughput`), with `fer_keras.bench`'s
  `measure_training`: `model.fit` on the pipeline `fit` builds for that backend (`tf.data`
  on TensorFlow, the NumPy `PyDataset` on JAX and PyTorch), batch 128, random images, the
  median of timed epochs after untimed warm-up steps.
* `compare_pipelines`: an image folder read two ways: decoded into memory first
  (`load_image_folder`, the load timed apart) or streamed (`ImageFiles`: listed once,
  decoded a batch at a time by worker threads). For each, the input pipeline alone
  (images/s of shuffled, augmented batches read in one thread, no model) and
  `model.fit` on it (Keras reads it with the pipeline's worker threads).

Example:

>>> rows = compare_backends("baseline", ["tensorflow", "jax", "torch"], steps=20)
>>> print(format_backends(rows))
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

from fer_keras.cli import command_prog

BACKENDS = ("tensorflow", "jax", "torch")
PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def measure_backend(experiment, steps=20, seed=0):
    """Training images/s of `experiment` on the backend this process runs (KERAS_BACKEND)."""
    import keras

    from fer_keras.bench import measure_training
    from fer_keras.data.sources import default_pipeline
    from fer_keras.training.settings import resolve_settings

    settings = resolve_settings(experiment)
    rate, model = measure_training(settings, steps, seed, settings["precision"])
    versions = {"keras": keras.__version__}
    package = PACKAGES[keras.backend.backend()]
    versions[package] = __import__(package).__version__
    return {"experiment": experiment, "backend": keras.backend.backend(),
            "pipeline": default_pipeline(), "parameters": int(model.count_params()),
            "train_images_per_second": round(rate, 1), "versions": versions}


def compare_backends(experiment, backends=BACKENDS, steps=20, seed=0, timeout=1800):
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


def format_backends(rows):
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


def write_image_folder(source, root, limit=None):
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
    from pathlib import Path

    import cv2
    import numpy as np

    from fer_keras.data.sources import CLASS_NAMES, load_fer2013

    images, labels, usages = load_fer2013(source)
    root = Path(root)
    written = 0
    for usage in ("Training", "PublicTest", "PrivateTest"):
        rows = np.flatnonzero(usages == usage)[:limit]
        part = "train" if usage == "Training" else "test"
        for name in CLASS_NAMES:
            (root / part / name).mkdir(parents=True, exist_ok=True)
        for row in rows:
            path = root / part / CLASS_NAMES[labels[row]] / f"{usage}_{row}.png"
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


def compare_pipelines(folder, experiment="baseline_aug", batches=40, train_steps=20,
                      batch_size=128, seed=0):
    """In-memory against streamed reading of an image folder (see the module docstring).

    The pipelines are the "numpy" `PyDataset` for both, so only where the pixels come from
    differs: a decoded array, or files decoded per batch (4 threads when training).

    Returns:
        A dict: images, load_seconds (decoding the whole folder for the in-memory path) and
        per path ("in_memory", "streamed") the pipeline's and training's images/s.
    """
    import keras
    import numpy as np

    from fer_keras.data.augmentation import Augmentation
    from fer_keras.data.sources import ImageFiles, list_image_folder, load_image_folder, make_dataset
    from fer_keras.training.settings import resolve_settings
    from fer_keras.models import get_model
    from fer_keras.training.recipe import EpochTimer, compile_model

    settings = resolve_settings(experiment)
    augmentation = Augmentation(settings["augmentation"]) if settings["augmentation"] else None
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
        dataset = make_dataset(x, y, batch_size, shuffle=True, augmentation=augmentation,
                               seed=seed, pipeline="numpy")
        pipeline_rate = _time_pipeline(dataset, batches)
        keras.utils.set_random_seed(seed)
        model = get_model(settings["model"], **settings["model_kwargs"])
        compile_model(model, steps_per_epoch=train_steps, **settings)
        # Training reads the same pipeline through Keras, with its worker threads.
        model.fit(dataset, epochs=1, steps_per_epoch=3, verbose=0)
        timer = EpochTimer(train_steps * batch_size)
        history = model.fit(dataset, epochs=2, steps_per_epoch=train_steps, verbose=0,
                            callbacks=[timer])
        result[name] = {
            "pipeline_images_per_second": round(pipeline_rate, 1),
            "train_images_per_second": round(
                float(np.median(history.history["train_images_per_second"])), 1)}
    return result


def format_pipelines(result):
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


def build_parser():
    from fer_keras.cli import int_at_least

    parser = argparse.ArgumentParser(
        prog=command_prog("throughput"),
        description="Training images/s of one experiment on this process's Keras backend "
        "(KERAS_BACKEND), as one JSON line; python -m fer_keras.bench --backend runs it.")
    parser.add_argument("experiment")
    parser.add_argument("--steps", type=int_at_least(1), default=20)
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    print(json.dumps(measure_backend(args.experiment, args.steps, args.seed)))
    return 0


if __name__ == "__main__":
    from fer_keras.cli import entry_point

    entry_point(main)
