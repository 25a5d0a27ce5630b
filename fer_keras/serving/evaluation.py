"""Scoring a saved model on a FER2013 split, and checking committed runs' recorded scores.

The library behind `python -m fer_keras.evaluate`: `evaluate` scores one model file of any
format (through `fer_keras.serving.runner.Classifier`), `verify` rescores runs and
compares with their `metrics.json`, `data_for` picks the data a run was trained on.

Example:

>>> from fer_keras.serving.evaluation import evaluate
>>> evaluate("saved_models/baseline/model.keras", split="private_test")["accuracy"]
0.5...
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

from fer_keras.data.labels import FER2013, get_label_set
from fer_keras.data.protocols import protocol_of
from fer_keras.data.sources import (
    labels_of,
    load_fer2013,
    load_splits,
    resolve_data_path,
    splits_for_run,
)
from fer_keras.serving.runner import Classifier, model_format
from fer_keras.training.results import evaluate_splits, score_on

VERIFIED_SPLITS = ("validation", "private_test")
TOLERANCE_POINTS = 0.1
USAGE_OF_SPLIT = {"train": "Training", "validation": "Training", "public_test": "PublicTest",
                  "private_test": "PrivateTest"}
"""The FER2013 `Usage` whose rows make up each split (under the study protocol)."""

FIXED_GRAPHS = {"tflite": "a .tflite file", "savedmodel": "an exported SavedModel"}
"""The formats `--no-mirror` cannot open up, in words."""


def split_of(splits, split, data=None):
    """`(images, labels)` of one split of a `load_splits` dict, refusing an empty one.

    Raises:
        ValueError: naming the source and the `Usage` values it does hold, when the split
            has no rows (a CSV of Training rows alone has no private_test).
    """
    images, labels = splits[split]
    if len(labels):
        return images, labels
    path = resolve_data_path(data)
    # Only on this error path: the source is decoded again (from its cache) to say what
    # it holds.
    names, counts = np.unique(load_fer2013(path)[2], return_counts=True)
    held = ", ".join(f"{name} ({count:,} rows)" for name, count in zip(names, counts))
    raise ValueError(f"The split {split} is empty in {path} (it holds only: "
                     f"{held or 'no rows'}); {split} is read from its "
                     f"{USAGE_OF_SPLIT[split]} rows. Pass --data with a FER2013 file that has "
                     f"{USAGE_OF_SPLIT[split]} rows, or another --split.")


def recorded_accuracies(metrics_path, splits):
    """The metrics.json of a run and the accuracy it records for each of `splits`.

    Returns:
        `(metrics, {split: accuracy})`.

    Raises:
        ValueError: naming the file and the missing key, for a file that is not JSON, not
            an object, or lacks `splits.SPLIT.accuracy` for one of `splits`.
    """
    fix = ("Pass a run folder written by `python -m fer_keras.fit`, whose metrics.json "
           "records splits.SPLIT.accuracy")
    try:
        metrics = json.loads(Path(metrics_path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{metrics_path} cannot be read as JSON ({error}). {fix}.") from None
    recorded = metrics.get("splits") if isinstance(metrics, dict) else None
    if not isinstance(recorded, dict):
        raise ValueError(f"{metrics_path} lacks the key 'splits' (the scores fit records). "
                         f"{fix}. Received: {json.dumps(metrics)[:200]}")
    accuracies = {}
    for split in splits:
        if split not in recorded:
            raise ValueError(f"{metrics_path} lacks the key 'splits.{split}': it has no {split} "
                             f"score to compare with. Pass a --split among "
                             f"{', '.join(recorded) or 'none'}, or a run that scored {split}. "
                             f"Received: split={split!r}")
        entry = recorded[split]
        accuracy = entry.get("accuracy") if isinstance(entry, dict) else None
        if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)):
            raise ValueError(f"{metrics_path} lacks the key 'splits.{split}.accuracy' (a "
                             f"number). {fix}. Received: {entry!r:.200}")
        accuracies[split] = float(accuracy)
    return metrics, accuracies


def verify(model_paths: list, data: str | os.PathLike | None = None,
           batch_size: int = 512) -> list[tuple[str, str, float, float, bool]]:
    """Rescores committed models and compares with their `metrics.json`.

    Args:
        model_paths: `.keras` files, each with the `metrics.json` fit wrote beside it.
        data: FER2013 CSV or image folder (see `fer_keras.data.sources.resolve_data_path`).
        batch_size: images per model call.

    Returns:
        A list of `(model, split, recorded %, measured %, agrees)` rows, `agrees` meaning
        within `TOLERANCE_POINTS`.

    Raises:
        ValueError: for a model without its `metrics.json`, a `metrics.json` that records
            no score to compare or comes from a `--limit` run, an empty split, or a model
            that fails the checks.
    """
    recorded = {}
    for path in map(Path, model_paths):
        metrics_path = path.with_name("metrics.json")
        if not path.is_file() or not metrics_path.is_file():
            raise ValueError(f"{path}: --verify needs the model file and the metrics.json "
                             f"that fit wrote beside it ({metrics_path}).")
        metrics, accuracies = recorded_accuracies(metrics_path, VERIFIED_SPLITS)
        if metrics.get("limit"):
            raise ValueError(f"{metrics_path} comes from a --limit run; its numbers are for "
                             "a slice of the data and cannot be verified on the full splits.")
        recorded[path] = (accuracies, metrics)
    loaded = {}
    rows = []
    for path, (scored, metrics) in recorded.items():
        # Each run is rescored under its own protocol (its "validation" is PublicTest
        # under the kaggle protocol) and label set (FER+ runs on FER+ majority labels);
        # the data are decoded once for each.
        key = (protocol_of(metrics).name, labels_of(metrics))
        if key not in loaded:
            loaded[key] = splits_for_run(data, metrics)
            for split in VERIFIED_SPLITS:
                split_of(loaded[key], split, data)
        model = Classifier(path, purpose="evaluate").model
        if model is None:
            raise ValueError(f"{path}: --verify rescores the .keras file fit wrote, not an "
                             f"exported one. Pass RUN_FOLDER/model.keras. Received: {path}")
        measured = evaluate_splits(model, loaded[key], VERIFIED_SPLITS, batch_size,
                                   label_set=get_label_set(key[1]))
        for split in VERIFIED_SPLITS:
            before = 100 * scored[split]
            now = 100 * measured[split]["accuracy"]
            rows.append((str(path), split, before, now,
                         abs(now - before) <= TOLERANCE_POINTS))
    return rows


def without_mirror(model, model_path):
    """The network inside `model`'s test-time views (`MirrorAverage`, or any
    `TestTimeAugmentation`), ValueError if it has none."""
    # The zoo's layers import Keras, loaded by then for the model itself.
    from fer_keras.models.layers import unwrap_views

    inner = unwrap_views(model)
    if inner is model:
        raise ValueError(f"{model_path} has no MirrorAverage layer, so it already scores "
                         "one pass per face; drop --no-mirror.")
    return inner


def evaluate(model_path: str | os.PathLike, split: str = "validation",
             data: str | os.PathLike | None = None, limit: int | None = None,
             batch_size: int = 512, mirror: bool = True,
             num_threads: int | None = None, labels: str = FER2013.name,
             labels_file: str | os.PathLike | None = None) -> dict:
    """Loads a model and scores it; returns `fer_keras.training.results.score`'s dict.

    Args:
        model_path: a `.keras` file (or run folder), an exported SavedModel folder, or a
            `.tflite` file (float or quantized, run with LiteRT).
        split: a key of `fer_keras.data.sources.SPLITS`.
        data: FER2013 CSV or image folder (see `fer_keras.data.sources.resolve_data_path`).
        limit: score only the first `limit` images of the split.
        batch_size: images per model call.
        mirror: False scores the network inside the model's test-time views
            (`MirrorAverage`) alone, one pass per face (a Keras model only).
        num_threads: LiteRT threads for a `.tflite` file (None: the runtime's choice).
        labels: "fer2013" (FER2013's labels, under the study protocol's splits) or
            "ferplus" (FER+ majority labels, under the kaggle protocol's splits: validation
            is PublicTest). A model of the other label set is scored on the classes the
            two share (`fer_keras.training.results.score_on`): a 7-class FER2013 model on
            the faces whose FER+ majority is one of its 7 emotions.
        labels_file: the FER+ votes file (default: `$FERPLUS_PATH`, then beside the data).

    Returns:
        The scores, with `model`, `split` and `labels` (and `left_out`, the faces of
        classes the model lacks); for a `.tflite` file also `runtime` and `file_bytes`.

    Raises:
        ValueError: for a model that cannot be loaded or fails the checks (48x48 gray
            faces in, probabilities out), `mirror=False` on an exported format or on a
            model without views, or an empty split. The model is checked before the data
            are read.
    """
    kind = model_format(model_path)
    if not mirror and kind in FIXED_GRAPHS:
        raise ValueError(f"--no-mirror needs the Keras model: {FIXED_GRAPHS[kind]} is one "
                         f"fixed graph. Score the run's model.keras instead. Received: "
                         f"{model_path}")
    classifier = Classifier(model_path, num_threads=num_threads, purpose="evaluate")
    extra = {}
    if kind == "tflite":
        extra = {"runtime": classifier.runtime, "file_bytes": Path(model_path).stat().st_size}
    if not mirror:
        classifier.model = without_mirror(classifier.model, model_path)
    label_set = get_label_set(labels)
    if label_set is FER2013:
        splits = load_splits(data, limit=limit)
    else:
        splits = load_splits(data, limit=limit, protocol="kaggle", labels=labels,
                             label_mode="majority", labels_file=labels_file)
    images, truth = split_of(splits, split, data)
    probabilities = classifier.predict(images, batch_size)
    metrics = score_on(truth, label_set, probabilities)
    metrics.update(model=str(model_path), split=split, labels=labels, **extra)
    return metrics


def data_for(model_path, data=None):
    """The data to score `model_path` on: `data` (`--data`), else `$FER2013_PATH`, else the
    file the model's run folder recorded in its `config.json` (so `evaluate RUN/model.keras`
    right after `fit --data PATH` needs no flag), else the defaults; see
    `fer_keras.data.sources.resolve_data_path`. Says on stderr when the run's record chose it."""
    if data is not None or os.environ.get("FER2013_PATH"):
        return data
    config_path = Path(model_path).with_name("config.json")
    recorded = None
    try:
        config = json.loads(config_path.read_text())
        if isinstance(config, dict) and isinstance(config.get("data_path"), str):
            recorded = config["data_path"]
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    path = resolve_data_path(None, recorded=None if recorded is None else
                             (str(config_path), recorded))
    if recorded is not None and path == Path(recorded):
        print(f"Scoring on {path}, the data {config_path} records (pass --data for other "
              f"data).", file=sys.stderr)
    return path


SCORES_KIND = "fer_keras.evaluate scores"
"""The `kind` of the JSON file `evaluate --save` writes (a file without it is not ours)."""


def model_fingerprint(model_path) -> str | None:
    """SHA-256 of a model file (None for a folder or a missing file): ties a saved score to
    the weights it was measured on."""
    path = Path(model_path)
    if not path.is_file():
        return None
    # The CSV hash of fer_keras.data.sources serves any file.
    from fer_keras.data.sources import source_fingerprint

    return source_fingerprint(path)


def save_scores(path, entries) -> Path:
    """Merges `entries` (`{run name: scores}`) into the JSON file `path` run by run.

    The file holds `{"kind": SCORES_KIND, "scores": {labels: {split: {run: entry}}}}`;
    an entry measured again replaces the old one, the others stay. `path` is created if
    absent; an existing file that is not such a file is refused and left as it is.

    Raises:
        ValueError: in one line naming `path`, for a file that is not one `save_scores`
            wrote.
    """
    path = Path(path)
    stored = {"kind": SCORES_KIND, "scores": {}}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            stored = None
        if not isinstance(stored, dict) or stored.get("kind") != SCORES_KIND:
            raise ValueError(f"{path} exists and is not a scores file written by evaluate "
                             f"--save; it is left as it is. Pass another --save path.")
    for name, entry in entries.items():
        by_split = stored["scores"].setdefault(entry["labels"], {}).setdefault(
            entry["split"], {})
        by_split[name] = entry
        stored["scores"][entry["labels"]][entry["split"]] = dict(sorted(by_split.items()))
    text = json.dumps(stored, indent=2, sort_keys=True) + "\n"
    # Written beside it under a name no one else uses, then moved over it in one step.
    partial = path.with_name(f".{path.name}.evaluate-partial")
    partial.write_text(text)
    partial.replace(path)
    return path


def saved_entry(model_path, metrics) -> tuple[str, dict]:
    """`(run name, entry)` of one `evaluate` result for `save_scores`: the run folder's
    name, the scores without the per-class tables, and the model file's fingerprint."""
    model_path = Path(model_path)
    run = model_path.parent if model_path.suffix == ".keras" else model_path
    entry = {key: metrics[key] for key in ("accuracy", "macro_f1", "count", "labels", "split")}
    entry["left_out"] = metrics.get("left_out", 0)
    entry["model_fingerprint"] = model_fingerprint(model_path)
    return run.name, entry
