"""Scoring a model on the FER2013 splits, and the plots written beside every run."""

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from fer_keras.data.labels import FER2013, label_set_for, shared_classes
from fer_keras.data.protocols import protocol_of
from fer_keras.data.sources import ImageFiles, labels_of, make_dataset
from fer_keras.training.runs import Run

PROGRESS_MIN_BATCHES = 20
"""Predictions of at least this many batches print progress lines (to stderr)."""


def predict_probabilities(model, images, batch_size=512, progress_seconds=60.0):
    """Class probabilities for uint8 or float images, in batches, without augmentation.

    On large inputs (`PROGRESS_MIN_BATCHES` batches or more) a line of progress goes to
    stderr every `progress_seconds` (None: never), so scoring a big split does not look
    like a hang, while a `--json` result on stdout stays clean.
    """
    callbacks = []
    if progress_seconds and math.ceil(len(images) / batch_size) >= PROGRESS_MIN_BATCHES:
        from fer_keras.training.recipe import ProgressLog  # Keras: not for `--help`

        callbacks.append(ProgressLog(len(images), batch_size, every_seconds=progress_seconds,
                                     stream=sys.stderr, label="scoring"))
    if isinstance(images, ImageFiles):
        # A streamed split is decoded one batch at a time, as in training.
        batches = make_dataset(images, np.zeros(len(images), np.int64), batch_size,
                               one_hot=False)
        return np.asarray(model.predict(batches, verbose=0, callbacks=callbacks))
    return np.asarray(model.predict(np.asarray(images, np.float32), batch_size=batch_size,
                                    verbose=0, callbacks=callbacks))


def _class_names_of(count, class_names, where):
    """`class_names` checked against `count` columns, else the registered label set's of
    that many classes (`fer_keras.data.labels.label_set_for`)."""
    if class_names is None:
        return label_set_for(count, where).class_names
    class_names = tuple(class_names)
    if len(class_names) != count:
        raise ValueError(f"{where} has {count} classes but {len(class_names)} class names "
                         f"were given ({', '.join(class_names)}); pass the model's label "
                         f"set. Received: class_names={list(class_names)}")
    return class_names


def score(labels, probabilities, class_names=None):
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    Rows of the confusion matrix are true classes and columns predictions, both in the
    model's output order. The class names are `class_names` (the model's label set's, as
    its run records them: `fer_keras.data.labels.label_set_of`), else those of the
    registered label set with as many classes as `probabilities` has columns.
    """
    # scikit-learn is heavy and only scoring needs it.
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities)
    class_names = _class_names_of(probabilities.shape[1], class_names, "the scored model")
    predicted = np.argmax(probabilities, axis=1)
    classes = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0)
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "macro_f1": float(f1_score(labels, predicted, labels=classes, average="macro",
                                   zero_division=0)),
        "count": int(len(labels)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(labels, predicted, labels=classes).tolist(),
        "class_order": list(class_names),
    }


def split_probabilities(model, splits, names=None, batch_size=512, transform=None,
                        known=None):
    """`{split: probabilities}` of `model` on each named, non-empty split of `splits`.

    Splits holding the same images (the kaggle protocol's "validation" is PublicTest) are
    predicted once, and so are splits in `known` (`{split: probabilities}` of this model,
    already computed). `transform`, if given, maps a split's uint8 images to the model's input
    (for models that do not take our 48x48 images, such as the `fer` package's).
    """
    names = names or list(splits)
    transform = transform or (lambda images: images)
    probabilities = dict(known or {})
    done = list(probabilities)
    for name in names:
        if name in probabilities:
            continue
        images = splits[name][0]
        if not len(splits[name][1]):
            continue
        same = next((other for other in done if _same_images(splits[other][0], images)), None)
        probabilities[name] = (probabilities[same] if same is not None else
                               predict_probabilities(model, transform(images), batch_size))
        done.append(name)
    return probabilities


def _same_images(a, b):
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return a is b
    return a is b or (a.shape == b.shape and np.array_equal(a, b))


def evaluate_splits(model, splits, names=None, batch_size=512, transform=None,
                    label_set=None, model_set=None):
    """Scores `model` on each named split of `splits` (a `load_splits` dict); see
    `split_probabilities`. With `label_set` (that of the splits' labels) a model of another
    label set is scored on the classes they share (`score_on`). `model_set` is the model's
    own label set (None: found from its output count)."""
    class_names = None if model_set is None else model_set.class_names
    return {name: (score(splits[name][1], probabilities, class_names) if label_set is None
                   else score_on(splits[name][1], label_set, probabilities, model_set))
            for name, probabilities in
            split_probabilities(model, splits, names, batch_size, transform).items()}


def aligned_class_names(label_set, model_set):
    """The classes of the columns `align_to_label_set` keeps: all of `label_set`'s when
    the model has them, else the model's classes that `label_set` has, in model order.

    Raises:
        ValueError: when the two share fewer than 2 classes.
    """
    if set(label_set.class_names) <= set(model_set.class_names):
        return label_set.class_names
    shared = tuple(name for name in model_set.class_names if name in label_set.class_names)
    if len(shared) < 2:
        raise ValueError(f"A {model_set.name} model ({', '.join(model_set.class_names)}) "
                         f"cannot be scored on {label_set.name} labels: they share "
                         f"{len(shared)} class{'es' if len(shared) != 1 else ''}, and "
                         f"scoring needs 2. Score it on data of its own classes.")
    return shared


def align_to_label_set(labels, label_set, probabilities, model_set=None):
    """A model's probabilities and labels of `label_set`, in the same class columns.

    A model with `label_set`'s classes or more keeps only their columns
    (`shared_classes`); otherwise it keeps its columns of the classes `label_set` has
    (all of them, for a model with a subset of the classes: a fine-tuned run's), the
    labels are mapped to their order, and faces of other classes are not to be scored.

    Args:
        labels: int labels of `label_set`.
        label_set: the `LabelSet` of `labels`.
        probabilities: `(faces, classes)` of the model.
        model_set: the model's `LabelSet` (its run's: `fer_keras.data.labels.label_set_of`);
            None finds it from the output count.

    Returns:
        `(kept, labels, probabilities, subset)`: the bool mask of faces to score, the
        labels and probabilities in the same columns (`aligned_class_names`), and whether
        the model lacks some of `label_set`'s classes (faces may be left out).

    Raises:
        ValueError: when the two label sets share fewer than 2 classes.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities)
    if model_set is None:
        model_set = label_set_for(probabilities.shape[1])
    _class_names_of(probabilities.shape[1], model_set.class_names, "the scored model")
    names = aligned_class_names(label_set, model_set)
    if set(label_set.class_names) <= set(model_set.class_names):
        if model_set.class_names != label_set.class_names:
            probabilities = probabilities[:, shared_classes(model_set, label_set)]
        return np.ones(len(labels), bool), labels, probabilities, False
    if names != model_set.class_names:
        probabilities = probabilities[:, [model_set.class_names.index(name)
                                          for name in names]]
    to_model = np.array([names.index(name) if name in names else -1
                         for name in label_set.class_names])
    mapped = to_model[labels]
    return mapped >= 0, mapped, probabilities, True


def score_on(labels, label_set, probabilities, model_set=None):
    """Scores a model's probabilities on labels of `label_set`, whatever the model's own
    label set (`model_set`, its run's; None: found from its output count).

    The same set: `score`. A model with more classes (an 8-class FER+ model on FER2013's
    7): its columns are cut to `label_set`'s classes (`shared_classes`) and the argmax taken
    among them. A model lacking some (a 7-class FER2013 model on FER+ labels, a run
    fine-tuned on 3 of FER2013's classes): only the faces whose label is one of its classes
    are scored, their ids mapped to its order, the argmax taken among its columns of
    `label_set`'s classes; `left_out` says how many faces were not scored.

    Raises:
        ValueError: when the two label sets share fewer than 2 classes.
    """
    model_set = model_set or label_set_for(np.asarray(probabilities).shape[1])
    kept, labels, probabilities, subset = align_to_label_set(labels, label_set, probabilities,
                                                             model_set)
    names = aligned_class_names(label_set, model_set)
    if not subset:
        return score(labels, probabilities, names)
    scored = score(labels[kept], probabilities[kept], names)
    scored["left_out"] = int((~kept).sum())
    return scored


def score_shared_classes(model, images, labels, label_set=FER2013, batch_size=512,
                         model_set=None):
    """Scores `model` on `label_set`'s labels over the classes both label sets share (see
    `score_on`): an 8-class FER+ model scored on FER2013's 7 emotions leaves contempt out."""
    return score_on(labels, label_set, predict_probabilities(model, images, batch_size),
                    model_set)


def format_report(metrics, title=""):
    """A plain-text per-class table for one split's `score` output."""
    lines = [title] if title else []
    lines.append(f"accuracy {100 * metrics['accuracy']:.2f}%  macro-F1 "
                 f"{100 * metrics['macro_f1']:.2f}%  ({metrics['count']} images)")
    lines.append(f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for name, row in metrics["per_class"].items():
        lines.append(f"{name:<10}{row['precision']:>10.3f}{row['recall']:>10.3f}"
                     f"{row['f1']:>10.3f}{row['support']:>9d}")
    return "\n".join(lines)


def read_history(path):
    """Reads a CSVLogger file into a dict of float lists (empty dict if absent)."""
    path = Path(path)
    if not path.exists():
        return {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    history = {}
    for row in rows:
        for key, value in row.items():
            try:
                history.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                history.setdefault(key, []).append(float("nan"))
    return history


def _pyplot():
    import matplotlib  # heavy, and only the plots need it

    matplotlib.use("Agg")
    # matplotlib loads only where a plot is drawn.
    import matplotlib.pyplot as plt

    return plt


def plot_history(history, path, title=""):
    """Loss and accuracy curves (train vs validation) to a PNG."""
    plt = _pyplot()
    epochs = [int(e) + 1 for e in history.get("epoch", range(len(history.get("loss", []))))]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        if key in history:
            axis.plot(epochs, history[key], label="train")
        if f"val_{key}" in history:
            axis.plot(epochs, history[f"val_{key}"], label="validation")
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    if "val_accuracy" in history and history["val_accuracy"]:
        best = int(np.nanargmax(history["val_accuracy"]))
        axes[1].axvline(epochs[best], color="gray", linestyle=":", label="best")
        axes[1].set_title(f"best val {100 * history['val_accuracy'][best]:.2f}% "
                          f"(epoch {epochs[best]})")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion(matrix, path, title="", class_names=None):
    """Row-normalised confusion matrix with counts, classes in the model's output order,
    named `class_names` (a score's `class_order`), else by the registered label set of
    that many classes."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    class_names = _class_names_of(len(matrix), class_names, "the confusion matrix")
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1.0)
    figure, axis = plt.subplots(figsize=(6.5, 5.5))
    image = axis.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            axis.text(j, i, f"{100 * rates[i, j]:.0f}%\n{int(matrix[i, j])}", ha="center",
                      va="center", fontsize=7,
                      color="white" if rates[i, j] > 0.5 else "black")
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true (row-normalised recall)")
    axis.set_title(title + "\n(classes in the model's output order)", fontsize=10)
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_json(path, payload):
    """Writes sorted, indented JSON with a trailing newline (stable diffs)."""
    Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def source_run(run):
    """What a run derived without training (`rebalance`, `tta --output`) takes from its
    source run folder.

    Returns:
        `(config, inherited)`: the source's `config.json` (empty if missing), and the
        fields a derived run's `metrics.json` copies: protocol, label set (and FER+ label
        mode), precision, selection split, epochs and training minutes and speed.
    """
    source = Run(run)
    config, metrics = source.config, source.metrics
    protocol = protocol_of(config)
    labels = {"labels": labels_of(config)}
    if config.get("label_mode"):
        labels["label_mode"] = config["label_mode"]
    return config, {
        "protocol": protocol.name,
        **labels,
        "precision": config.get("precision", "float32"),
        "selection_split": protocol.selection_split,
        "best_epoch": metrics.get("best_epoch"),
        "epochs_run": metrics.get("epochs_run"),
        "train_minutes": metrics.get("train_minutes", 0.0),
        "train_images_per_second": metrics.get("train_images_per_second"),
    }


def save_derived_run(folder, model, config, metrics, split, title):
    """Writes a derived run's `model.keras`, `config.json`, `metrics.json` and the
    confusion matrix of `split` into `folder` (the staging folder of `write_run_folder`)."""
    folder = Path(folder)
    model.save(folder / "model.keras")
    write_json(folder / "config.json", config)
    write_json(folder / "metrics.json", metrics)
    scored = metrics["splits"][split]
    plot_confusion(scored["confusion_matrix"], folder / "confusion_matrix.png", title=title,
                   class_names=scored.get("class_order"))
