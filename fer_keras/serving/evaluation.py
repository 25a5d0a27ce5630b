"""Scoring a saved model on a FER2013 split, and checking committed runs' recorded scores.

The library behind `python -m fer_keras.evaluate`: `evaluate` scores one model file of any
format (through `fer_keras.serving.runner.Classifier`), with the 95% Wilson interval of its
accuracy, on a whole split or (`unseen=True`) on the faces no Training row copies;
`compare` tests two models on the same faces (exact McNemar test); `verify` rescores runs
and compares with their `metrics.json`; `data_for` picks the data a run was trained on.

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

from fer_keras.data.audit import unseen_mask
from fer_keras.data.labels import FER2013, get_label_set
from fer_keras.data.protocols import protocol_of
from fer_keras.data.sources import (
    labels_of,
    load_fer2013,
    load_splits,
    resolve_data_path,
    source_fingerprint,
    splits_for_run,
)
from fer_keras.serving.runner import Classifier, model_format
from fer_keras.training.results import (
    align_to_label_set,
    evaluate_splits,
    format_report,
    score_on,
)
from fer_keras.utils.files import write_text_atomically
from fer_keras.utils.stats import mcnemar, wilson_interval

VERIFIED_SPLITS = ("validation", "private_test")
TOLERANCE_POINTS = 0.1
USAGE_OF_SPLIT = {"train": "Training", "validation": "Training", "public_test": "PublicTest",
                  "private_test": "PrivateTest"}
"""The FER2013 `Usage` whose rows make up each split (under the study protocol)."""

FIXED_GRAPHS = {"tflite": "a .tflite file", "savedmodel": "an exported SavedModel"}
"""The formats `--no-mirror` cannot open up, in words."""
CONFIDENCE = 0.95
"""The coverage of every accuracy interval evaluate prints."""
SIGNIFICANCE = 0.05
"""The level at which `compare` calls a difference more than noise."""
UNSEEN_SUFFIX = "_unseen"
"""Added to the split key under which `save_scores` keeps a score on the unseen faces, so it
does not replace the whole split's."""


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
        if path.is_dir() and (path / "model.keras").is_file():
            path = path / "model.keras"  # A run folder: its model, beside its metrics.json.
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
        classifier = Classifier(path, purpose="evaluate")
        model = classifier.model
        if model is None:
            raise ValueError(f"{path}: --verify rescores the .keras file fit wrote, not an "
                             f"exported one. Pass RUN_FOLDER/model.keras. Received: {path}")
        measured = evaluate_splits(model, loaded[key], VERIFIED_SPLITS, batch_size,
                                   label_set=get_label_set(key[1]),
                                   model_set=classifier.label_set)
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


def open_classifier(model_path, mirror=True, num_threads=None):
    """`(Classifier, extra scores)` of one model file, as `evaluate` scores it.

    `extra` holds `runtime` and `file_bytes` for a `.tflite` file. With `mirror=False` the
    classifier runs the network inside the model's test-time views.

    Raises:
        ValueError: for a model that cannot be loaded or fails the checks, or
            `mirror=False` on an exported format or on a model without views.
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
    return classifier, extra


def training_faces(data=None) -> np.ndarray:
    """Every Training row's face in the FER2013 source, whatever the protocol (the study
    protocol's validation rows are Training rows too)."""
    images, _, usages = load_fer2013(resolve_data_path(data))
    return images[usages == USAGE_OF_SPLIT["train"]]


def split_faces(split: str, data=None, limit: int | None = None, labels: str = FER2013.name,
                labels_file=None, unseen: bool = False):
    """The faces `evaluate` scores: `(images, labels, left_out_copies)`.

    Args:
        split, data, limit, labels, labels_file: see `evaluate`.
        unseen: keep only the faces with no exact pixel copy among the Training rows of the
            source (`fer_keras.data.audit.unseen_mask`).

    Returns:
        The split's images and labels (those without a copy in Training when `unseen`), and
        how many faces with a copy were left out (None without `unseen`).

    Raises:
        ValueError: for an empty split, or one whose every face is a Training row's copy.
    """
    if get_label_set(labels) is FER2013:
        splits = load_splits(data, limit=limit)
    else:
        splits = load_splits(data, limit=limit, protocol="kaggle", labels=labels,
                             label_mode="majority", labels_file=labels_file)
    images, truth = split_of(splits, split, data)
    if not unseen:
        return images, truth, None
    keep = unseen_mask(images, training_faces(data))
    if not keep.any():
        raise ValueError(f"--unseen leaves no face of the split {split}: every one of its "
                         f"{len(keep):,} faces is an exact copy of a Training row (a split "
                         f"cut from Training is all copies). Pass --split public_test or "
                         f"private_test. Received: split={split!r}")
    return images[keep], truth[keep], int((~keep).sum())


def add_interval(metrics: dict) -> dict:
    """Adds `accuracy_interval`, the `CONFIDENCE` Wilson interval of `metrics["accuracy"]`
    over its `count` faces, to a `score` dict (none for a dict of no faces)."""
    if metrics.get("count"):
        correct = round(metrics["accuracy"] * metrics["count"])
        metrics["accuracy_interval"] = list(wilson_interval(correct, metrics["count"],
                                                            CONFIDENCE))
    return metrics


def accuracy_text(accuracy: float, interval=None) -> str:
    """`accuracy 70.27% (95% CI 68.76-71.74)`, or without the interval when None."""
    text = f"accuracy {100 * accuracy:.2f}%"
    if interval is not None:
        low, high = interval
        text += f" ({100 * CONFIDENCE:.0f}% CI {100 * low:.2f}-{100 * high:.2f})"
    return text


def format_scores(metrics: dict, title: str = "") -> str:
    """`fer_keras.training.results.format_report`'s table with the accuracy's interval."""
    lines = format_report(metrics).split("\n")
    lines[0] = (f"{accuracy_text(metrics['accuracy'], metrics.get('accuracy_interval'))}  "
                f"macro-F1 {100 * metrics['macro_f1']:.2f}%  ({metrics['count']} images)")
    return "\n".join(([title] if title else []) + lines)


def evaluate(model_path: str | os.PathLike, split: str = "validation",
             data: str | os.PathLike | None = None, limit: int | None = None,
             batch_size: int = 512, mirror: bool = True,
             num_threads: int | None = None, labels: str = FER2013.name,
             labels_file: str | os.PathLike | None = None, unseen: bool = False) -> dict:
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
        unseen: score only the faces of the split with no exact pixel copy among the
            source's Training rows (all of them, whatever the protocol), the faces no
            model trained on Training can have memorised.

    Returns:
        The scores, with `model`, `split`, `labels`, `accuracy_interval` (the 95% Wilson
        interval, `[low, high]`), `coverage` (`coverage_table`: accuracy when only the
        most confident faces are answered) and `left_out` (the faces of classes the model
        lacks);
        with `unseen`, also `unseen: True` and `left_out_copies` (the faces left out as
        copies of Training rows); for a `.tflite` file also `runtime` and `file_bytes`.

    Raises:
        ValueError: for a model that cannot be loaded or fails the checks (48x48 gray
            faces in, probabilities out), `mirror=False` on an exported format or on a
            model without views, an empty split, or (`unseen`) a split that is all copies
            of Training rows. The model is checked before the data are read.
    """
    classifier, extra = open_classifier(model_path, mirror, num_threads)
    images, truth, copies = split_faces(split, data, limit, labels, labels_file, unseen)
    probabilities = classifier.predict(images, batch_size)
    # The model's classes are its run's (a fine-tuned run's 3, say), scored on the faces
    # of the split's label set that are of those classes.
    model_set = classifier.label_set
    metrics = add_interval(score_on(truth, get_label_set(labels), probabilities, model_set))
    metrics.update(model=str(model_path), split=split, labels=labels, **extra)
    scored, correct = correct_per_face(truth, get_label_set(labels), probabilities,
                                       model_set)
    # Accuracy against coverage: the most confident faces answered, the rest uncertain.
    metrics["coverage"] = coverage_table(correct[scored], probabilities[scored].max(axis=1))
    if unseen:
        metrics.update(unseen=True, left_out_copies=copies)
    return metrics


COVERAGES = (1.0, 0.9, 0.8, 0.5)
"""Shares of faces answered in the accuracy-against-coverage table."""


def coverage_table(correct, confidence, coverages=COVERAGES):
    """Accuracy when only the most confident faces are answered.

    For each coverage c, the `ceil(c * N)` faces of highest top probability are answered
    and the others called uncertain; `min_confidence` is the top probability of the least
    confident face answered, the `predict --min-confidence` that answers (about) that
    share on this split.

    Returns:
        A list of `{"coverage", "answered", "min_confidence", "accuracy"}` dicts.

    Example:

    >>> [row["accuracy"] for row in coverage_table([1, 0, 1, 1], [0.9, 0.4, 0.8, 0.6],
    ...                                            (1.0, 0.5))]
    [0.75, 1.0]
    """
    correct = np.asarray(correct, bool)
    confidence = np.asarray(confidence, np.float64)
    order = np.argsort(-confidence, kind="stable")
    rows = []
    for coverage in coverages:
        answered = max(1, int(np.ceil(coverage * len(order))))
        kept = order[:answered]
        rows.append({"coverage": float(coverage), "answered": answered,
                     "min_confidence": float(confidence[kept].min()),
                     "accuracy": float(correct[kept].mean())})
    return rows


def format_coverage(rows) -> str:
    """`coverage_table` as a Markdown table."""
    lines = ["| faces answered | --min-confidence | accuracy % | faces |", "|---|---|---|---|"]
    lines += [f"| {100 * row['coverage']:.0f}% | {row['min_confidence']:.3f} | "
              f"{100 * row['accuracy']:.2f} | {row['answered']:,} |" for row in rows]
    return "\n".join(lines)


def correct_per_face(truth, label_set, probabilities, model_set=None):
    """`(scored, correct)`: which faces a model is scored on and whether it got each right,
    with the same rule as `fer_keras.training.results.score_on`.

    A model with more classes than `label_set` takes its argmax among the shared classes;
    one lacking some is not scored on the faces of classes it lacks (`scored` False there).
    `model_set` is the model's label set (its `Classifier.label_set`; None: by output count).

    Raises:
        ValueError: when the two label sets share fewer than 2 classes.
    """
    kept, truth, probabilities, _ = align_to_label_set(truth, label_set, probabilities,
                                                       model_set)
    return kept, np.asarray(probabilities).argmax(axis=1) == truth


def compare(model_paths: list, split: str = "private_test",
            data: str | os.PathLike | None = None, limit: int | None = None,
            batch_size: int = 512, mirror: bool = True, num_threads: int | None = None,
            labels: str = FER2013.name, labels_file: str | os.PathLike | None = None,
            unseen: bool = False) -> dict:
    """Scores two models on the same faces and tests the difference (exact McNemar).

    Args:
        model_paths: two model files (any format `evaluate` takes), A then B.
        split, data, limit, batch_size, mirror, num_threads, labels, labels_file, unseen:
            as for `evaluate`, the same for both models.

    Returns:
        A JSON-serialisable dict: `models` (per model `model`, `accuracy`,
        `accuracy_interval`, `correct`), `count` (the faces both are scored on), `n01`
        (faces A got wrong and B right), `n10` (A right, B wrong), `p_value`, `better`
        ("a", "b" or None), `difference_points` (B's accuracy minus A's, in points),
        `left_out` (faces of a class one model lacks), `split`, `labels`; with `unseen`,
        also `unseen: True` and `left_out_copies`.

    Raises:
        ValueError: for other than two models, any `evaluate` refusal, or no face both
            models can be scored on.

    Example:

    >>> result = compare(["saved_models/fer_vgg_kaggle/model.keras",
    ...                   "saved_models/fer_vgg_kaggle_long/model.keras"], unseen=True)
    >>> print(comparison_sentence(result))  # doctest: +SKIP
    B is more accurate by ...
    """
    if len(model_paths) != 2:
        raise ValueError(f"--compare tests two models against each other: give exactly two. "
                         f"Received: {len(model_paths)} models")
    classifiers = [open_classifier(path, mirror, num_threads)[0] for path in model_paths]
    images, truth, copies = split_faces(split, data, limit, labels, labels_file, unseen)
    label_set = get_label_set(labels)
    scored, correct = zip(*(correct_per_face(truth, label_set,
                                             classifier.predict(images, batch_size),
                                             classifier.label_set)
                            for classifier in classifiers))
    both = scored[0] & scored[1]
    if not both.any():
        raise ValueError(f"No face of {split} can be scored by both models on {labels} "
                         f"labels (each lacks the other's classes there). Compare models "
                         f"of one label set. Received: {list(map(str, model_paths))}")
    correct = [each[both] for each in correct]
    models = [{"model": str(path), "accuracy": float(each.mean()),
               "correct": int(each.sum()),
               "accuracy_interval": list(wilson_interval(int(each.sum()), len(each),
                                                         CONFIDENCE))}
              for path, each in zip(model_paths, correct)]
    result = {"split": split, "labels": labels, "count": int(both.sum()),
              "left_out": int((~both).sum()), "models": models,
              "difference_points": 100 * (models[1]["accuracy"] - models[0]["accuracy"]),
              **mcnemar(*correct)}
    if unseen:
        result.update(unseen=True, left_out_copies=copies)
    return result


PAIRED_KIND = "fer_keras paired tests"
"""The `kind` of a file written by `evaluate --compare --save` (what merging checks)."""


def compare_all(model_paths: list, split: str = "private_test",
                data: str | os.PathLike | None = None, batch_size: int = 512,
                mirror: bool = True, num_threads: int | None = None,
                labels: str = FER2013.name, labels_file: str | os.PathLike | None = None,
                unseen: bool = False) -> dict:
    """Every pair of two or more models tested on the same faces (exact McNemar), each
    model predicted once.

    Returns:
        `split`, `labels`, `unseen`, `count` (faces every model is scored on), `left_out`,
        `models` (per model: `model`, `fingerprint` of its file, `accuracy`,
        `accuracy_interval`, `correct`) in the order given, and `pairs`: for each pair
        `a` < `b` (indices into `models`), `n01`, `n10`, `p_value`, `better`,
        `difference_points` (b's accuracy minus a's) and `significant` (p below
        `SIGNIFICANCE`).

    Raises:
        ValueError: for fewer than two models, a model given twice, any `evaluate`
            refusal, or no face every model can be scored on.
    """
    if len(model_paths) < 2:
        raise ValueError(f"--compare tests models against each other: give at least two. "
                         f"Received: {len(model_paths)} model")
    if len({str(path) for path in model_paths}) != len(model_paths):
        raise ValueError(f"--compare was given a model twice. Received: "
                         f"{list(map(str, model_paths))}")
    images, truth, copies = split_faces(split, data, None, labels, labels_file, unseen)
    label_set = get_label_set(labels)
    scored, correct = [], []
    for path in model_paths:
        classifier = open_classifier(path, mirror, num_threads)[0]
        each_scored, each_correct = correct_per_face(
            truth, label_set, classifier.predict(images, batch_size), classifier.label_set)
        scored.append(each_scored)
        correct.append(each_correct)
    every = np.logical_and.reduce(scored)
    if not every.any():
        raise ValueError(f"No face of {split} can be scored by every model on {labels} "
                         f"labels. Compare models of one label set. Received: "
                         f"{list(map(str, model_paths))}")
    correct = [each[every] for each in correct]
    models = [{"model": str(path), "fingerprint": source_fingerprint(model_file_of(path)),
               "accuracy": float(each.mean()), "correct": int(each.sum()),
               "accuracy_interval": list(wilson_interval(int(each.sum()), len(each),
                                                         CONFIDENCE))}
              for path, each in zip(model_paths, correct)]
    pairs = []
    for a in range(len(models)):
        for b in range(a + 1, len(models)):
            test = mcnemar(correct[a], correct[b])
            pairs.append({"a": a, "b": b, **test,
                          "difference_points": 100 * (models[b]["accuracy"]
                                                      - models[a]["accuracy"]),
                          "significant": bool(test["p_value"] < SIGNIFICANCE)})
    result = {"split": split, "labels": labels, "unseen": bool(unseen),
              "count": int(every.sum()), "left_out": int((~every).sum()),
              "models": models, "pairs": pairs}
    if unseen:
        result["left_out_copies"] = copies
    return result


def model_file_of(path) -> Path:
    """The file behind a model argument: a run folder's `model.keras`, else the path."""
    path = Path(path)
    return path / "model.keras" if (path / "model.keras").is_file() else path


def format_pairs(result: dict) -> str:
    """The table `evaluate --compare` prints for more than two models."""
    lines = [f"on {result['split']}{' (unseen faces)' if result.get('unseen') else ''}, "
             f"{result['labels']} labels: {result['count']:,} faces"]
    for index, model in enumerate(result["models"]):
        lines.append(f"[{index}] {accuracy_text(model['accuracy'], model['accuracy_interval'])}"
                     f"  {model['model']}")
    for pair in result["pairs"]:
        lines.append(f"[{pair['a']}] vs [{pair['b']}]: {pair['difference_points']:+.2f} points, "
                     f"{pair['n10']:,} / {pair['n01']:,} discordant, p = "
                     f"{format_p_value(pair['p_value'])}"
                     f"{'' if pair['significant'] else ' (not significant)'}")
    return "\n".join(lines)


def check_pairs_path(path) -> dict:
    """The paired-tests file at `path` (an empty one if there is none); refuses, before
    anything is scored, a file that is not one of ours or a folder that does not exist."""
    path = Path(path)
    if not path.exists():
        if not path.parent.is_dir():
            raise ValueError(f"--save {path}: the folder {path.parent} does not exist. "
                             f"Create it or pass another --save path.")
        return {"kind": PAIRED_KIND, "tests": []}
    return read_own_json(path, PAIRED_KIND, "a paired-tests file written by evaluate "
                         "--compare --save")


def read_own_json(path: Path, kind: str, what: str) -> dict:
    """The JSON object at `path` if its `kind` is ours; else one line refusing it (the
    file is left as it is)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        stored = None
    if not isinstance(stored, dict) or stored.get("kind") != kind:
        raise ValueError(f"{path} exists and is not {what}; it is left as it is. Pass "
                         f"another --save path.")
    return stored


def save_pairs(result: dict, path: str | os.PathLike, command: str | None = None) -> Path:
    """Merges `result` into the paired-tests file `path`, one entry per (split, labels,
    unseen), replacing an earlier entry of the same key. A file that is not one of ours
    is refused and left as it is."""
    path = Path(path)
    stored = check_pairs_path(path)
    key = (result["split"], result["labels"], bool(result.get("unseen")))
    tests = [test for test in stored["tests"]
             if (test["split"], test["labels"], bool(test.get("unseen"))) != key]
    tests.append({**result, "command": command})
    stored["tests"] = sorted(tests, key=lambda test: (test["labels"], test["split"],
                                                       bool(test.get("unseen"))))
    write_text_atomically(path, json.dumps(stored, indent=2, sort_keys=True) + "\n")
    return path


def format_p_value(p_value: float) -> str:
    """Two significant digits, and never rounded up to the significance level."""
    text = f"{p_value:.2g}"
    if p_value < SIGNIFICANCE <= float(text):
        return f"{p_value:.4g}"
    return text


def comparison_sentence(result: dict) -> str:
    """The plain reading of a `compare` result, e.g. "B is more accurate by 0.42 points;
    p = 0.31, so the difference is within noise at the 5% level."."""
    p_text = format_p_value(result["p_value"])
    level = f"{100 * SIGNIFICANCE:g}%"
    if result["better"] is None:
        return (f"A and B are equally accurate on these faces ({result['n01']:,} faces "
                f"each gets right where the other does not); p = {p_text}, so there is no "
                f"difference at the {level} level.")
    reading = ("within noise" if result["p_value"] >= SIGNIFICANCE
               else "significant")
    return (f"{result['better'].upper()} is more accurate by "
            f"{abs(result['difference_points']):.2f} points; p = {p_text}, so the "
            f"difference is {reading} at the {level} level.")


def format_comparison(result: dict) -> str:
    """The text `evaluate --compare` prints for a `compare` result."""
    faces = f"{result['count']:,} faces"
    if result.get("unseen"):
        faces += (f" with no exact copy in Training ({result['left_out_copies']:,} copies "
                  f"left out)")
    if result["left_out"]:
        faces += f" ({result['left_out']:,} faces of classes a model lacks left out)"
    lines = [f"{name} = {model['model']}" for name, model in zip("AB", result["models"])]
    lines.append(f"on {result['split']}, {result['labels']} labels: {faces}")
    lines += [f"{name}  {accuracy_text(model['accuracy'], model['accuracy_interval'])}"
              for name, model in zip("AB", result["models"])]
    lines.append(f"discordant faces: {result['n10']:,} only A right, {result['n01']:,} only "
                 f"B right; exact McNemar p = {format_p_value(result['p_value'])}")
    lines.append(comparison_sentence(result))
    return "\n".join(lines)


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
        stored = read_own_json(path, SCORES_KIND, "a scores file written by evaluate --save")
    for name, entry in entries.items():
        by_split = stored["scores"].setdefault(entry["labels"], {}).setdefault(
            entry["split"], {})
        by_split[name] = entry
        stored["scores"][entry["labels"]][entry["split"]] = dict(sorted(by_split.items()))
    text = json.dumps(stored, indent=2, sort_keys=True) + "\n"
    write_text_atomically(path, text)
    return path


def saved_entry(model_path, metrics) -> tuple[str, dict]:
    """`(run name, entry)` of one `evaluate` result for `save_scores`: the run folder's
    name, the scores without the per-class tables, and the model file's fingerprint.

    A score on the unseen faces (`evaluate(..., unseen=True)`) is kept under the split key
    `SPLIT_unseen` (e.g. "private_test_unseen"), beside the whole split's, with
    `left_out_copies`.
    """
    model_path = Path(model_path)
    run = model_path.parent if model_path.suffix == ".keras" else model_path
    entry = {key: metrics[key] for key in ("accuracy", "macro_f1", "count", "labels", "split")}
    entry["left_out"] = metrics.get("left_out", 0)
    if "accuracy_interval" in metrics:
        entry["accuracy_interval"] = metrics["accuracy_interval"]
    if metrics.get("unseen"):
        entry.update(split=metrics["split"] + UNSEEN_SUFFIX, unseen=True,
                     left_out_copies=metrics["left_out_copies"])
    entry["model_fingerprint"] = model_fingerprint(model_path)
    return run.name, entry
