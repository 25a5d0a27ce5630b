"""Fine-tuning a trained model on a folder of labelled faces (`python -m fer_keras.finetune`).

The folder holds one subfolder per class (`DATA/happy/*.png`); folder names are matched to
the base model's classes case-insensitively, with common synonyms ("happiness", "fearful").
A folder of a class the base model lacks is refused unless `new_classes` (`--classes`)
names it. The new model is the base network (test-time views unwrapped), its penultimate
features and a new softmax head over exactly the folder's classes: the base classes found,
in the base label set's order, then the new ones, in `new_classes`' order. The run records
them as `class_names` in `config.json`, which every command that loads the run reads
(`fer_keras.data.labels.label_set_of`). The head trains first with the backbone frozen, then
every layer at a tenth of the rate, with class-balanced weights, `Augmentation("combined")`
and early stopping on a holdout part.

>>> metrics = finetune("my_faces", "saved_models/fer_vgg_long", "runs/mine", folds=5,
...                    group_by=r"^(\\w+?)_")
>>> metrics["cross_validation"]["mean"], metrics["zero_shot_cross_validation"]["mean"]
(81.2, 54.0)
"""

import csv
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from fer_keras.data.labels import label_set_of
from fer_keras.data.sources import IMAGE_SUFFIXES
from fer_keras.training.results import plot_history, save_derived_run, score
from fer_keras.training.run_folder import refuse_finished_run, write_run_folder
from fer_keras.vision.images import load_gray

SYNONYMS = {"anger": "angry", "disgusted": "disgust", "fearful": "fear", "scared": "fear",
            "happiness": "happy", "sadness": "sad", "surprised": "surprise",
            "neutrality": "neutral"}
"""Folder names taken as another name of a class (lower case)."""

DETECT_ABOVE = 96
"""Without --detect/--no-detect, images larger than this (either side, px) are searched for
a face; smaller ones are taken whole, as face crops."""

FINE_RATE_FACTOR = 0.1
"""The rate of the all-layers phase, as a fraction of the head's."""

PATIENCE = 5
"""Epochs without a better holdout accuracy before a phase stops early."""

SEED = 1234
"""Seed of the splits (the same folder always splits the same way)."""


def base_label_set(base, base_path):
    """The label set of a base model: the one its run records (`class_names` in the run's
    `config.json`), else the registered one of its output count (`label_set_of`)."""
    return label_set_of(base_path, base.output_shape[-1], f"the base model {base_path}")


def parse_classes(text):
    """The new class names of `--classes NAME[,NAME...]`, lower case, in the given order.

    Raises:
        ValueError: for an empty or repeated name.
    """
    if text is None or (not isinstance(text, str) and not len(text)):
        return ()
    if isinstance(text, str):
        text = text.split(",")
    names = tuple(str(name).strip().lower() for name in text)
    if not names or not all(names):
        raise ValueError(f"--classes takes names separated by commas, none empty, e.g. "
                         f"--classes bored,confused. Received: classes={text!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"--classes names {', '.join(repeated)} more than once; give each "
                         f"new class once. Received: classes={','.join(names)!r}")
    return names


def match_classes(folder_names, label_set, new_classes=()):
    """Maps class-folder names to the base label set's classes and the new ones.

    Args:
        folder_names: the subfolder names of DATA.
        label_set: the base model's `LabelSet`.
        new_classes: names of classes the base model lacks that the folders may hold
            (`--classes`, see `parse_classes`); each must be a folder's name, matched
            case-insensitively, and none a base class.

    Returns:
        `(class_names, folder_class)`: the matched base classes in the label set's order,
        then the new classes in `new_classes`' order, and a dict from each folder name to
        its class.

    Raises:
        ValueError: in one line naming an unknown folder and the known classes, two
            folders of one class, a new class that is a base class or no folder's name, or
            fewer than 2 classes.
    """
    known = label_set.class_names
    new_classes = parse_classes(new_classes)
    for name in new_classes:
        if SYNONYMS.get(name, name) in known:
            raise ValueError(f"--classes names {name!r}, a class the base model has "
                             f"({SYNONYMS.get(name, name)}); list only new classes there. "
                             f"Received: classes={','.join(new_classes)!r}")
    folder_class = {}
    for folder in folder_names:
        key = folder.strip().lower()
        name = key if key in new_classes else SYNONYMS.get(key, key)
        if name not in known and name not in new_classes:
            listed = f"; --classes lists {', '.join(new_classes)}" if new_classes else ""
            raise ValueError(f"Class folder {folder!r} matches no class of the base model "
                             f"({', '.join(known)}){listed}; rename it to one of those, or "
                             f"add it to --classes to train a new class. Received: "
                             f"folder={folder!r}")
        if name in folder_class.values():
            other = next(each for each, value in folder_class.items() if value == name)
            raise ValueError(f"Class folders {other!r} and {folder!r} are both {name!r}; "
                             f"merge them into one folder. Received: folder={folder!r}")
        folder_class[folder] = name
    missing = [name for name in new_classes if name not in folder_class.values()]
    if missing:
        raise ValueError(f"--classes names {', '.join(missing)}, but DATA has no folder of "
                         f"that name; add the folder or drop the name. Received: "
                         f"folders={sorted(folder_names)}")
    if len(folder_class) < 2:
        raise ValueError(f"Fine-tuning needs at least 2 class folders; found "
                         f"{len(folder_class)}. Received: folders={sorted(folder_names)}")
    class_names = tuple(name for name in known if name in folder_class.values())
    return class_names + new_classes, folder_class


def list_faces(data, label_set, new_classes=()):
    """The image files of `data` (one subfolder per class) with their labels.

    Args:
        data: the folder.
        label_set: the base model's `LabelSet`.
        new_classes: the classes the base lacks that the folders may hold (`match_classes`).

    Returns:
        `(paths, labels, class_names)`: sorted file paths, int labels indexing
        `class_names` (the matched base classes in the base label set's order, then the
        new ones).
    """
    root = Path(data)
    if not root.is_dir():
        raise ValueError(f"DATA {data} is not a folder; give a folder with one subfolder "
                         f"of images per class. Received: data={str(data)!r}")
    folders = sorted(path for path in root.iterdir() if path.is_dir())
    class_names, folder_class = match_classes([path.name for path in folders], label_set,
                                              new_classes)
    paths, labels = [], []
    for folder in folders:
        files = sorted(path for path in folder.iterdir()
                       if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"Class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}"
                             f"); add some or remove it. Received: folder={folder.name!r}")
        paths += [str(path) for path in files]
        labels += [class_names.index(folder_class[folder.name])] * len(files)
    return paths, np.asarray(labels, np.int64), class_names


def fingerprint(paths):
    """SHA-256 over the files' names (relative to their class folder's parent) and bytes."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        digest.update(f"{path.parent.name}/{path.name}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_faces(paths, size=(48, 48), detect=None, stream=sys.stderr):
    """Decodes the files to uint8 `(N, height, width, 1)` faces.

    Args:
        paths: image files (any format `load_gray` reads).
        size: the face size of the model.
        detect: True to find a face in every image, False to take every image whole, None
            to find one only in images larger than `DETECT_ABOVE` px.
        stream: where the warning about skipped images goes.

    Returns:
        `(faces, kept)`: the faces, and the indices of `paths` they come from (images in
        which no face was found are skipped, with one counted warning).
    """
    # The vision layer's detector needs OpenCV, which loads only when faces are searched.
    from fer_keras.vision.faces import crop_face, detect_faces, load_detector

    detector = None
    faces, kept, missed = [], [], []
    for index, path in enumerate(paths):
        try:
            gray = load_gray(path)
        except ValueError as error:
            raise ValueError(f"{path}: {error}. Remove the file or replace it. "
                             f"Received: file={str(path)!r}") from None
        height, width = gray.shape
        search = detect if detect is not None else max(height, width) > DETECT_ABOVE
        box = [0, 0, width, height]
        if search:
            detector = detector or load_detector()
            boxes = detect_faces(detector, gray)
            if not boxes:
                missed.append(path)
                continue
            box = max(boxes, key=lambda each: each[2] * each[3])
        faces.append(crop_face(gray, box, size))
        kept.append(index)
    if missed:
        print(f"warning: no face found in {len(missed)} of {len(paths)} images; skipped them "
              f"(first: {missed[0]}). Pass --no-detect if they are face crops already.",
              file=stream)
    if not faces:
        raise ValueError("No face left to train on: every image was skipped. Pass --no-detect "
                         "if the images are face crops already.")
    return np.stack(faces).astype(np.uint8), np.asarray(kept, np.int64)


def subject_ids(paths, group_by):
    """The subject of each file: the first group of `group_by` matched in its file name,
    or the file itself without `group_by`.

    Raises:
        ValueError: for a bad pattern, one without a group, or a file name it does not match.
    """
    if group_by is None:
        return np.asarray([str(path) for path in paths])
    try:
        pattern = re.compile(group_by)
    except re.error as error:
        raise ValueError(f"--group-by is not a regular expression ({error}). Received: "
                         f"group_by={group_by!r}") from None
    if pattern.groups < 1:
        raise ValueError(f"--group-by needs a group, the subject id, e.g. '^(\\w+?)_'. "
                         f"Received: group_by={group_by!r}")
    ids = []
    for path in paths:
        found = pattern.search(Path(path).name)
        if found is None or found.group(1) is None:
            raise ValueError(f"--group-by does not match the file name {Path(path).name!r}; "
                             f"fix the pattern or the name. Received: group_by={group_by!r}")
        ids.append(found.group(1))
    return np.asarray(ids)


def holdout_split(labels, groups, fraction, seed=SEED):
    """`(train, holdout)` indices; all images of a group fall in one part.

    About `fraction` of the groups are held out, stratified by their first image's class
    so every class keeps images in training where it can.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--holdout must be between 0 and 1 (exclusive). Received: "
                         f"holdout={fraction}")
    rng = np.random.default_rng(seed)
    unique = np.unique(groups)
    if len(unique) < 2:
        raise ValueError(f"A holdout needs at least 2 subjects; found {len(unique)}. Check "
                         f"--group-by. Received: subjects={list(unique)}")
    first_label = {group: labels[np.flatnonzero(groups == group)[0]] for group in unique}
    held = []
    for label in np.unique(labels):
        members = np.asarray([group for group in unique if first_label[group] == label])
        if len(members) == 0:
            continue
        rng.shuffle(members)
        count = int(round(fraction * len(members)))
        count = min(max(count, 1), len(members) - 1) if len(members) > 1 else 0
        held += list(members[:count])
    if not held:
        held = [unique[rng.integers(len(unique))]]
    is_held = np.isin(groups, held)
    return np.flatnonzero(~is_held), np.flatnonzero(is_held)


def fold_splits(labels, groups, folds, seed=SEED):
    """K `(train, test)` index pairs; a group never falls in two parts of one fold."""
    # scikit-learn is heavy and only the folds need it.
    from sklearn.model_selection import StratifiedGroupKFold

    subjects = len(np.unique(groups))
    if folds < 2 or folds > subjects:
        raise ValueError(f"--folds must be from 2 to the number of subjects ({subjects}). "
                         f"Received: folds={folds}")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels, groups))


def nested_fold_splits(labels, groups, folds, holdout, seed=SEED):
    """K `(train, selection, test)` index triples: each fold's training part split again
    (`holdout_split`, grouped) so that the epoch is chosen on `selection` and the fold's
    `test` part is only ever scored. No group falls in two parts of one triple."""
    triples = []
    for number, (train, test) in enumerate(fold_splits(labels, groups, folds, seed), 1):
        subjects = len(np.unique(groups[train]))
        if subjects < 2:
            raise ValueError(f"--folds {folds} leaves fold {number} {subjects} subject to "
                             f"train on, too few to also choose its epoch on a holdout of "
                             f"them; use fewer --folds (or more subjects). Received: "
                             f"folds={folds}, subjects={len(np.unique(groups))}")
        inner_train, inner_selection = holdout_split(labels[train], groups[train], holdout,
                                                     seed)
        triples.append((train[inner_train], train[inner_selection], test))
    return triples


def class_weights(labels, num_classes):
    """Balanced class weights: `N / (num_classes * count)`, for the classes present."""
    counts = np.bincount(labels, minlength=num_classes)
    return {index: float(len(labels) / (num_classes * count))
            for index, count in enumerate(counts) if count}


def build_finetune_model(base, num_classes, pretrained=True, columns=()):
    """A copy of the base network (views unwrapped) with a new softmax head over
    `num_classes`; with `pretrained=False`, the same layers freshly initialised (the
    from-scratch comparison).

    `columns` are the base outputs of the classes kept, which come first in the new
    order: their rows of the new head start as the base classifier's (so training starts
    from the base's own answers over those classes, its zero-shot accuracy); the outputs
    of new classes start from Keras' initialisation.

    Returns:
        `(model, backbone)`: the new network, and its part up to the penultimate features
        (to freeze for the head's phase).
    """
    import keras

    from fer_keras.models.layers import unwrap_views

    # A copy, so training never changes the base model (its zero-shot scores and the next
    # fold start from the weights it was loaded with).
    inner = unwrap_views(base)
    network = keras.models.clone_model(inner)
    if pretrained:
        network.set_weights(inner.get_weights())
    features = network.layers[-1].input
    backbone = keras.Model(network.inputs, features, name="finetune_backbone")
    image = keras.Input(shape=network.input_shape[1:], name="image")
    head = keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                              name="probabilities")
    outputs = head(backbone(image))
    classifier = inner.layers[-1]
    if pretrained and len(columns) and isinstance(classifier, keras.layers.Dense):
        kernel, bias = head.get_weights()
        base_kernel, base_bias = classifier.get_weights()[:2]
        columns = list(columns)
        kernel[:, :len(columns)] = base_kernel[:, columns]
        bias[:len(columns)] = base_bias[columns]
        head.set_weights([kernel, bias])
    return keras.Model(image, outputs, name="finetuned"), backbone


def _views_of(base):
    from fer_keras.models.layers import TestTimeAugmentation

    for layer in base.layers:
        if isinstance(layer, TestTimeAugmentation):
            return tuple(layer.views)
    return ("identity",)


def zero_shot_accuracy(base, images, labels, columns, batch_size=256):
    """Accuracy (%) of the base model over only the kept classes: argmax of its output's
    `columns` (the kept base classes' columns, which come first in the new label order).

    A face of a new class (`--classes`), which the base model has no output for, counts
    as wrong; with no base class kept the zero-shot accuracy is 0.
    """
    if not len(columns) or not len(labels):
        return 0.0
    probabilities = np.asarray(base.predict(images.astype(np.float32), batch_size=batch_size,
                                            verbose=0))
    predicted = np.argmax(probabilities[:, columns], axis=1)
    return float(100.0 * np.mean(predicted == labels))


def train_head_then_all(base, images, labels, train, holdout, num_classes, epochs=30,
                        freeze_epochs=5, learning_rate=1e-3, batch_size=32,
                        early_stopping=True, from_scratch=False, columns=()):
    """Trains a new model from `base` on `images[train]`, scored on `images[holdout]`.

    The head trains `freeze_epochs` epochs with the backbone frozen, then all layers train
    the remaining `epochs - freeze_epochs` at `learning_rate * FINE_RATE_FACTOR`. With
    `early_stopping`, each phase stops after `PATIENCE` epochs without a better holdout
    accuracy and keeps its best weights, or the weights it started from when no epoch
    beat them on the holdout (so fine-tuning never ends below where it began on the faces
    that choose). With `from_scratch`, the base's architecture
    starts from fresh weights and all layers train `epochs` at `learning_rate` (the
    comparison that says what the base's weights are worth).
    `columns`: the base outputs of the kept classes, whose classifier rows the new head
    starts from (`build_finetune_model`).

    Returns:
        `(model, history)`: the network, and one dict of per-epoch lists over both phases
        (with `phase`, `learning_rate`).
    """
    import keras

    from fer_keras.data.augmentation import Augmentation
    from fer_keras.data.sources import make_dataset

    model, backbone = build_finetune_model(base, num_classes, pretrained=not from_scratch,
                                           columns=columns)
    weights = class_weights(labels[train], num_classes)
    training = make_dataset(images[train], labels[train], batch_size=batch_size, shuffle=True,
                            augmentation=Augmentation("combined"), seed=SEED,
                            num_classes=num_classes)
    validation = make_dataset(images[holdout], labels[holdout], batch_size=batch_size,
                              num_classes=num_classes)
    history = {}
    phases = [("head", freeze_epochs, learning_rate, False),
              ("all", max(epochs - freeze_epochs, 0), learning_rate * FINE_RATE_FACTOR, True)]
    if from_scratch:
        phases = [("scratch", epochs, learning_rate, True)]
    for phase, phase_epochs, rate, trainable in phases:
        if phase_epochs <= 0:
            continue
        backbone.trainable = trainable
        model.compile(optimizer=keras.optimizers.Adam(rate), loss="categorical_crossentropy",
                      metrics=["accuracy"])
        if early_stopping:
            # Where the phase starts (the base's own answers, for the first): a phase
            # whose every epoch scores worse on the holdout is undone below.
            start_weights = model.get_weights()
            start_accuracy = model.evaluate(validation, verbose=0, return_dict=True)[
                "accuracy"]
        callbacks = [keras.callbacks.EarlyStopping(
            monitor="val_accuracy", mode="max", patience=PATIENCE,
            restore_best_weights=True)] if early_stopping else []
        # The dataset reshuffles itself every epoch; fit's own shuffle does not apply to it.
        fitted = model.fit(training, validation_data=validation, epochs=phase_epochs,
                           class_weight=weights, callbacks=callbacks, shuffle=False,
                           verbose=0)
        if early_stopping and max(fitted.history["val_accuracy"]) < start_accuracy:
            model.set_weights(start_weights)
        history.setdefault("phase_start_val_accuracy", []).extend(
            [float(start_accuracy) if early_stopping else float("nan")]
            * len(fitted.history["loss"]))
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(float(value) for value in values)
        history.setdefault("phase", []).extend([phase] * len(fitted.history["loss"]))
        history.setdefault("learning_rate", []).extend([rate] * len(fitted.history["loss"]))
    history["epoch"] = list(range(len(history.get("loss", []))))
    return model, history


def _write_history(path, history):
    keys = ["epoch"] + [key for key in history if key != "epoch"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(keys)
        for row in zip(*(history[key] for key in keys)):
            writer.writerow(row)


def label_set_name(class_names, base_set):
    """The name recorded for the fine-tuned classes: the base's when all are kept."""
    if tuple(class_names) == tuple(base_set.class_names):
        return base_set.name
    return f"{base_set.name}:{'+'.join(class_names)}"


def _mean_std(values):
    values = np.asarray(values, np.float64)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"folds": [round(float(value), 4) for value in values],
            "mean": round(float(np.mean(values)), 4), "std": round(std, 4)}


def finetune(data, base_path, output, holdout=0.2, folds=None, group_by=None, detect=None,
             epochs=30, freeze_epochs=5, learning_rate=1e-3, batch_size=32, overwrite=False,
             command=None, stream=sys.stderr, new_classes=(), scratch=False):
    """Fine-tunes the model of `base_path` on the faces in `data`; writes a run folder.

    Args:
        data: a folder with one subfolder of images per class.
        base_path: a `.keras` file, or a run folder holding `model.keras`.
        output: the run folder to write (refused if it holds a finished run, unless
            `overwrite`).
        holdout: fraction of the subjects held out to choose the epoch and score the model.
        folds: K for K-fold cross-validation, or None. Each fold holds out `holdout` of
            its training subjects to choose the epoch (early stopping), and scores its
            test part, which no choice has seen.
        group_by: a regular expression whose first group in a file name is the subject.
        detect: True/False/None (see `load_faces`).
        epochs: total epochs per training, the frozen ones included.
        freeze_epochs: epochs of the head alone.
        learning_rate: the head's rate; all layers train at a tenth of it.
        batch_size: batch size.
        overwrite: replace a finished run in `output`.
        command: the command line, recorded in config.json.
        stream: where progress and warnings go.
        new_classes: class names the base model lacks that folders of `data` may hold
            (`--classes`); they get outputs of the new head after the base classes kept.
        scratch: also train the base's architecture from fresh weights on the same
            splits (`--scratch`), recorded beside the fine-tuned scores.

    Returns:
        The metrics written to `metrics.json` (`class_names`: the new model's classes in
        output order, also recorded in `config.json`).
    """
    from fer_keras.models import load_model

    if epochs < 1 or freeze_epochs < 0:
        raise ValueError(f"--epochs must be at least 1 and --freeze-epochs at least 0. "
                         f"Received: epochs={epochs}, freeze_epochs={freeze_epochs}")
    refuse_finished_run(output, overwrite, "--output")
    base_path = Path(base_path)
    model_file = base_path / "model.keras" if base_path.is_dir() else base_path
    base = load_model(model_file)
    base_set = base_label_set(base, base_path)
    new_classes = parse_classes(new_classes)
    paths, labels, class_names = list_faces(data, base_set, new_classes)
    size = tuple(base.input_shape[1:3])
    found = len(paths)
    images, kept = load_faces(paths, size=size, detect=detect, stream=stream)
    paths = [paths[index] for index in kept]
    labels = labels[kept]
    groups = subject_ids(paths, group_by)
    columns = [base_set.class_names.index(name) for name in class_names
               if name in base_set.class_names]
    num_classes = len(class_names)
    settings = dict(epochs=epochs, freeze_epochs=freeze_epochs, learning_rate=learning_rate,
                    batch_size=batch_size)

    metrics = {"class_names": list(class_names), "images": len(paths),
               "skipped_images": found - len(paths), "subjects": int(len(np.unique(groups)))}
    views = _views_of(base)

    def served(model):
        """The model as it is saved: the base's test-time views around it."""
        if views == ("identity",):
            return model
        from fer_keras.models.layers import wrap_with_views

        return wrap_with_views(model, views)

    def fold_accuracy(model, test):
        predicted = np.argmax(served(model).predict(images[test].astype(np.float32),
                                                    verbose=0), axis=1)
        return 100.0 * float(np.mean(predicted == labels[test]))

    if folds:
        scores = {"fine-tuned": [], "zero-shot": [], "scratch": []}
        fold_seconds = []
        triples = nested_fold_splits(labels, groups, folds, holdout)
        for number, (train, selection, test) in enumerate(triples, 1):
            started = time.perf_counter()
            model, _ = train_head_then_all(base, images, labels, train, selection,
                                           num_classes, columns=columns, **settings)
            fold_seconds.append(round(time.perf_counter() - started, 1))
            scores["fine-tuned"].append(fold_accuracy(model, test))
            scores["zero-shot"].append(zero_shot_accuracy(base, images[test], labels[test],
                                                          columns))
            line = (f"fold {number}/{folds}: accuracy {scores['fine-tuned'][-1]:.2f} "
                    f"(zero-shot {scores['zero-shot'][-1]:.2f}")
            if scratch:
                model, _ = train_head_then_all(base, images, labels, train, selection,
                                               num_classes, from_scratch=True, **settings)
                scores["scratch"].append(fold_accuracy(model, test))
                line += f", from scratch {scores['scratch'][-1]:.2f}"
            print(f"{line}), fine-tuned on {len(train)} faces (epoch chosen on "
                  f"{len(selection)}) in {fold_seconds[-1]:.0f} s", file=stream, flush=True)
        metrics["cross_validation"] = {**_mean_std(scores["fine-tuned"]),
                                       "train_seconds": fold_seconds,
                                       "selection": f"early stopping on {holdout:g} of each "
                                                    f"fold's training subjects"}
        metrics["zero_shot_cross_validation"] = _mean_std(scores["zero-shot"])
        if scratch:
            metrics["scratch_cross_validation"] = _mean_std(scores["scratch"])

    train, held = holdout_split(labels, groups, holdout)
    if scratch:
        model, _ = train_head_then_all(base, images, labels, train, held, num_classes,
                                       from_scratch=True, **settings)
        metrics["scratch_holdout_accuracy"] = round(fold_accuracy(model, held), 4)
    model, history = train_head_then_all(base, images, labels, train, held, num_classes,
                                         columns=columns, **settings)
    # The base's test-time views go back around the new network, as it will be served.
    model = served(model)
    probabilities = np.asarray(model.predict(images[held].astype(np.float32), verbose=0))
    name = label_set_name(class_names, base_set)
    holdout_score = score(labels[held], probabilities, class_names)
    metrics.update({
        "splits": {"holdout": holdout_score},
        "holdout_accuracy": round(100.0 * holdout_score["accuracy"], 4),
        "zero_shot_holdout_accuracy": round(zero_shot_accuracy(
            base, images[held], labels[held], columns), 4),
        "labels": name, "epochs_run": len(history["epoch"]),
        "best_epoch": int(np.argmax(history["val_accuracy"])) + 1,
    })
    config = {"base_model": str(model_file), "base_labels": base_set.name,
              "base_class_names": list(base_set.class_names),
              "data": str(data), "data_fingerprint": fingerprint(paths),
              "class_names": list(class_names), "labels": name,
              "new_classes": list(new_classes), "command": command,
              "group_by": group_by, "holdout": holdout, "folds": folds,
              "detect": detect, "views": list(views), "scratch": scratch, **settings}

    def write(folder):
        save_derived_run(folder, model, config, metrics, "holdout",
                         title=f"fine-tuned {'/'.join(class_names)} (holdout)")
        _write_history(folder / "history.csv", history)
        plot_history(history, folder / "learning_curves.png", title="fine-tuning")

    write_run_folder(output, write, overwrite, "--output")
    return metrics


FINETUNED_KEYS = ("base_model", "data", "data_fingerprint", "class_names", "holdout")
"""The `config.json` entries that mark a run folder as written by `finetune`."""


def is_finetuned_run(run) -> bool:
    """Whether the run folder `run` was written by `finetune` (or calibrated from one)."""
    try:
        config = json.loads((Path(run) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and all(key in config for key in FINETUNED_KEYS)


def holdout_faces(config, size, data=None, stream=sys.stderr):
    """The holdout faces of a fine-tuned run, rebuilt from its class folder exactly as
    `finetune` split them (same files, same subjects, same seed).

    Returns:
        `(images, labels)` of the holdout part.

    Raises:
        ValueError: when the folder is gone, or its classes or files (the recorded
            `data_fingerprint`) are not those the run was fine-tuned on.
    """
    from fer_keras.data.labels import get_label_set, label_set_named

    data = data or config["data"]
    # A base that was itself fine-tuned has classes of its own, recorded beside its name.
    base_set = (label_set_named(config["base_class_names"], config["base_labels"])
                if config.get("base_class_names") else get_label_set(config["base_labels"]))
    paths, labels, class_names = list_faces(data, base_set, config.get("new_classes") or ())
    if list(class_names) != list(config["class_names"]):
        raise ValueError(f"{data} now holds the classes {', '.join(class_names)}, not the "
                         f"run's {', '.join(config['class_names'])}; give the folder it was "
                         f"fine-tuned on with --data.")
    images, kept = load_faces(paths, size=size, detect=config.get("detect"), stream=stream)
    paths = [paths[index] for index in kept]
    if fingerprint(paths) != config["data_fingerprint"]:
        raise ValueError(f"The images of {data} are not the ones the run was fine-tuned on "
                         f"(data_fingerprint differs: files added, removed or changed), so "
                         f"its holdout cannot be rebuilt. Give the original folder with "
                         f"--data, or fine-tune again.")
    labels = labels[kept]
    _, held = holdout_split(labels, subject_ids(paths, config.get("group_by")),
                            config["holdout"])
    return images[held], labels[held]


def calibrate_finetuned_run(run, output, data=None, overwrite=False, command=None,
                            stream=sys.stderr):
    """Temperature scaling of a fine-tuned run, fitted on its holdout faces (the part that
    chose its epoch, its selection split), written as the run folder `output`.

    The ECE, NLL and Brier score before and after are measured on those same faces: a
    fine-tuned run has no other labelled faces held out, so the "after" figures are the
    fit's own (optimistic for a small holdout); the accuracy is unchanged by design.

    Args:
        run: a run folder written by `finetune`.
        output: the run folder to write.
        data: the class folder (default: the one the run recorded).
        overwrite: replace a finished run already in `output`.
        command: recorded in `config.json`.

    Returns:
        The new run's metrics (`calibration` as `calibrate_run` writes it, with
        `selection_split` "holdout").
    """
    import keras

    from fer_keras.accuracy.calibration import (
        BINS,
        TEMPERATURE_BRACKET,
        calibration_scores,
        fit_temperature,
        plot_reliability,
        reliability,
    )
    from fer_keras.models import load_model
    from fer_keras.models.calibration import LAYER_NAME, calibrated, temperature_of

    run, output = Path(run), Path(output)
    refuse_finished_run(output, overwrite, "--output")
    config = json.loads((run / "config.json").read_text())
    source = load_model(run / "model.keras")
    if temperature_of(source) is not None:
        raise ValueError(f"{run} is already calibrated (T = {temperature_of(source):g}); "
                         f"calibrate the run it was made from instead.")
    images, labels = holdout_faces(config, tuple(source.input_shape[1:3]), data, stream)
    before = np.asarray(source.predict(images.astype(np.float32), verbose=0), np.float64)
    temperature = fit_temperature(labels, before, from_probabilities=True)
    model = calibrated(source, temperature, name=output.name)
    after = np.asarray(keras.ops.convert_to_numpy(
        model.get_layer(LAYER_NAME)(before.astype(np.float32))), np.float64)
    changed = int(np.sum(before.argmax(axis=1) != after.argmax(axis=1)))
    if changed:
        raise RuntimeError(f"Temperature scaling (T = {temperature:g}) changed the predicted "
                           f"class of {changed} holdout faces; it must keep every one.")
    class_names = list(config["class_names"])
    calibration = {
        "method": "temperature scaling", "temperature": temperature,
        "selection_split": "holdout", "bins": BINS, "bracket": list(TEMPERATURE_BRACKET),
        "measured_on": "the holdout faces that fitted T (no other faces are held out)",
        "before": {"holdout": calibration_scores(labels, before)},
        "after": {"holdout": calibration_scores(labels, after)},
        "reliability": {"holdout": {"before": reliability(labels, before),
                                    "after": reliability(labels, after)}},
    }
    scored = score(labels, after, class_names)
    metrics = {"experiment": output.name, "model": "calibrated", "source": str(run),
               "class_names": class_names, "labels": config.get("labels"),
               "calibration": calibration, "splits": {"holdout": scored},
               "holdout_accuracy": round(100.0 * scored["accuracy"], 4)}
    new_config = {**config, "source": str(run), "model": "calibrated",
                  "temperature": temperature, "selection_split": "holdout",
                  "command": command}
    diagram = {"holdout (fits T)": {
        "before": calibration["reliability"]["holdout"]["before"],
        "after": calibration["reliability"]["holdout"]["after"],
        "ece_before": calibration["before"]["holdout"]["ece"],
        "ece_after": calibration["after"]["holdout"]["ece"]}}

    def write(folder):
        save_derived_run(folder, model, new_config, metrics, "holdout",
                         title=f"{output.name}: holdout")
        plot_reliability(diagram, folder / "reliability.png",
                         title=f"{run.name}: temperature scaling, T = {temperature:.3f}")

    write_run_folder(output, write, overwrite, "--output")
    return metrics
