"""Short probe of FER+ training targets for fer_vgg (issue 23): majority vs probability.

Not part of the package: a self-contained first measurement, to be ported into fit's
`--labels ferplus --label-mode ...` once label sets exist there. It reuses the package's
builder (`fer_vgg`, 8 outputs), compile step, dtype policy, `tf.data` pipeline and
augmentation, with fer_vgg_kaggle's recipe and the kaggle protocol: train on the Training
rows, select the epoch on PublicTest under the FER+ majority rule, score PrivateTest under
the majority rule (test labels are always the majority rule, whatever the training mode).

    python docs/probes/ferplus.py counts
    python docs/probes/ferplus.py train --mode majority --epochs 6 --save FILE.json
    python docs/probes/ferplus.py train --mode probability --epochs 6 --save FILE.json
    python docs/probes/ferplus.py merge A.json B.json --save docs/probes/ferplus_probe.json

The votes file is `fer2013new.csv` (Microsoft FER+, github.com/microsoft/FERPlus): one line
per row of `fer2013.csv`, same order, columns
`Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF`.
It is found through `--votes`, `$FERPLUS_PATH`, or beside the FER2013 source.

Targets (Barsoum et al. 2016, arXiv:1608.01041, and FERPlus' `ferplus.py`):

* majority: votes of 1 are dropped (set to 0); a face is kept only if its top count holds
  more than half of what is left (unknown and NF included in the total) and is not unknown
  or NF. A tie for the top never holds more than half, so ties are dropped.
* probability: the distribution of the 8 emotions' votes after dropping votes of 1; faces
  whose remaining votes are mostly (more than half) unknown / NF, or that have no emotion
  vote left, are dropped.
"""

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

FERPLUS_CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                   "contempt")
"""FER+'s 8 emotions, in the votes file's column order (the model's output order)."""
VOTE_COLUMNS = FERPLUS_CLASSES + ("unknown", "NF")
FERPLUS_TO_FER2013 = {"anger": 0, "disgust": 1, "fear": 2, "happiness": 3, "sadness": 4,
                      "surprise": 5, "neutral": 6}
"""FER2013 id of each FER+ class that has one (contempt has none)."""
MODES = ("majority", "probability")
USAGE_OF_SPLIT = {"train": "Training", "validation": "PublicTest", "private_test": "PrivateTest"}


def find_votes(path=None, data_path=None):
    """The votes file: `path`, else `$FERPLUS_PATH`, else `fer2013new.csv` beside the data."""
    candidates = [Path(path)] if path else []
    if not path and os.environ.get("FERPLUS_PATH"):
        candidates.append(Path(os.environ["FERPLUS_PATH"]))
    if not path and data_path is not None:
        candidates.append(Path(data_path).parent / "fer2013new.csv")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ValueError("FER+ votes file (fer2013new.csv) not found; pass --votes PATH or set "
                     f"FERPLUS_PATH. Looked at: {', '.join(map(str, candidates)) or 'nothing'}")


def load_votes(path, usages):
    """Reads the votes file as int `(N, 10)` counts, checked row by row against FER2013.

    Args:
        path: `fer2013new.csv`.
        usages: string `(N,)` Usage of each FER2013 row, in file order.

    Raises:
        ValueError: when the header, the row count or any row's Usage does not match.
    """
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    header = tuple(rows[0]) if rows else ()
    if header[2:] != VOTE_COLUMNS or header[:1] != ("Usage",):
        raise ValueError(f"{path} is not a FER+ votes file: its header should be Usage,Image "
                         f"name,{','.join(VOTE_COLUMNS)}. Received: header={','.join(header)}")
    rows = rows[1:]
    if len(rows) != len(usages):
        raise ValueError(f"{path} has {len(rows):,} rows but the FER2013 source has "
                         f"{len(usages):,}; FER+ votes are matched by position, so both must "
                         f"be the complete, unshuffled files.")
    ferplus_usages = np.array([row[0] for row in rows])
    mismatched = np.flatnonzero(ferplus_usages != np.asarray(usages))
    if len(mismatched):
        first = int(mismatched[0])
        raise ValueError(f"{path} is not aligned with the FER2013 source: {len(mismatched):,} "
                         f"rows differ in Usage, the first at data row {first + 1} "
                         f"({str(ferplus_usages[first])!r} vs {str(usages[first])!r}).")
    return np.array([[int(value) for value in row[2:]] for row in rows], np.int64)


def majority_labels(votes):
    """FER+ majority labels: int `(N,)` class ids in `FERPLUS_CLASSES` order, -1 if dropped."""
    votes = np.where(votes <= 1, 0, votes)
    top = votes.argmax(axis=1)
    kept = (votes.max(axis=1) * 2 > votes.sum(axis=1)) & (top < len(FERPLUS_CLASSES))
    return np.where(kept, top, -1)


def probability_targets(votes):
    """FER+ vote distributions: float32 `(N, 8)` and the bool `(N,)` mask of kept faces."""
    votes = np.where(votes <= 1, 0, votes).astype(np.float64)
    emotions = votes[:, :len(FERPLUS_CLASSES)]
    emotion_total = emotions.sum(axis=1)
    kept = (emotion_total > 0) & (votes[:, len(FERPLUS_CLASSES):].sum(axis=1) * 2
                                  <= votes.sum(axis=1))
    targets = emotions / np.maximum(emotion_total, 1.0)[:, None]
    return targets.astype(np.float32), kept


def kaggle_rows(usages):
    """Row indices of the kaggle protocol's train / validation (PublicTest) / test splits."""
    return {split: np.flatnonzero(np.asarray(usages) == usage)
            for split, usage in USAGE_OF_SPLIT.items()}


def kept_counts(votes, usages):
    """Faces kept per split under each mode (test splits always use the majority rule)."""
    majority = majority_labels(votes)
    _, probability_kept = probability_targets(votes)
    counts = {}
    for split, rows in kaggle_rows(usages).items():
        counts[split] = {"rows": int(len(rows)), "majority": int((majority[rows] >= 0).sum()),
                         "probability": int(probability_kept[rows].sum())}
    return counts


def training_targets(mode, votes, rows):
    """`(rows kept, float32 (n, 8) targets)` of the training split under `mode`."""
    if mode == "majority":
        labels = majority_labels(votes)[rows]
        rows = rows[labels >= 0]
        return rows, np.eye(len(FERPLUS_CLASSES), dtype=np.float32)[labels[labels >= 0]]
    targets, kept = probability_targets(votes)
    return rows[kept[rows]], targets[rows[kept[rows]]]


def fer2013_shared_predictions(probabilities):
    """FER2013 ids predicted from 8-class FER+ probabilities: the argmax over the 7 classes
    both label sets share (contempt is left out)."""
    shared = [FERPLUS_CLASSES.index(name) for name in sorted(
        FERPLUS_TO_FER2013, key=FERPLUS_TO_FER2013.get)]
    return np.asarray(probabilities)[:, shared].argmax(axis=1)


def accuracy_and_f1(labels, predicted, num_classes):
    from sklearn.metrics import f1_score

    return {"accuracy": round(float(np.mean(labels == predicted)), 4),
            "macro_f1": round(float(f1_score(labels, predicted, labels=list(range(num_classes)),
                                             average="macro", zero_division=0)), 4),
            "count": int(len(labels))}


def train(mode, epochs, seed=0, data=None, votes_path=None, limit=None, experiment="fer_vgg_kaggle",
          warmup_epochs=None, label_smoothing=None, batch_size=None, precision=None):
    """Trains fer_vgg with 8 outputs on FER+ targets and returns the probe's result dict."""
    import keras

    from fer_keras.data import sources as fer_data
    from fer_keras.data.augmentation import Augmentation
    from fer_keras.models import get_model, with_dtype_policy
    from fer_keras.training.recipe import EpochTimer, StopOnNaN, compile_model, precision_policy
    from fer_keras.training.settings import resolve_settings

    overrides = {"epochs": epochs, "warmup_epochs": warmup_epochs,
                 "label_smoothing": label_smoothing, "batch_size": batch_size,
                 "precision": precision}
    settings = resolve_settings(experiment, overrides)
    if settings["protocol"] != "kaggle":
        raise ValueError(f"The probe follows the kaggle protocol; {experiment} uses "
                         f"{settings['protocol']!r}. Received: experiment={experiment!r}")
    data_path = fer_data.resolve_data_path(data)
    votes_path = find_votes(votes_path, data_path)
    images, fer2013_labels, usages = fer_data.load_fer2013(data_path)
    votes = load_votes(votes_path, usages)
    rows = kaggle_rows(usages)
    if limit is not None:
        rows = {split: indices[:limit] for split, indices in rows.items()}
    majority = majority_labels(votes)
    train_rows, train_targets = training_targets(mode, votes, rows["train"])
    val_rows = rows["validation"][majority[rows["validation"]] >= 0]
    val_targets = np.eye(len(FERPLUS_CLASSES), dtype=np.float32)[majority[val_rows]]

    keras.utils.set_random_seed(seed)
    batch_size = int(settings["batch_size"])
    steps_per_epoch = -(-len(train_rows) // batch_size)
    with precision_policy(settings["precision"]):
        model = get_model(settings["model"], num_classes=len(FERPLUS_CLASSES),
                          **settings["model_kwargs"])
        compile_model(model, steps_per_epoch=steps_per_epoch, **settings)
    augmentation = Augmentation(settings["augmentation"]) if settings["augmentation"] else None
    # one_hot=False passes the (n, 8) float targets through unchanged.
    train_data = fer_data.make_dataset(images[train_rows], train_targets, batch_size,
                                       shuffle=True, augmentation=augmentation, seed=seed,
                                       one_hot=False)
    val_data = fer_data.make_dataset(images[val_rows], val_targets, 512, one_hot=False)

    best = {"accuracy": -1.0, "epoch": None, "weights": None}

    class KeepBest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print(f"[{mode}] epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f}, train "
                  f"accuracy {logs['accuracy']:.4f}, FER+ val (PublicTest majority) accuracy "
                  f"{logs['val_accuracy']:.4f}, {logs['epoch_seconds'] / 60:.1f} min",
                  flush=True)
            if logs["val_accuracy"] > best["accuracy"]:
                best.update(accuracy=float(logs["val_accuracy"]), epoch=epoch + 1,
                            weights=self.model.get_weights())

    print(f"[{mode}] fer_vgg, 8 outputs, {model.count_params():,} parameters, "
          f"{settings['precision']}, {epochs} epochs ({settings['schedule']}, warm-up "
          f"{settings['warmup_epochs']}), label smoothing {settings['label_smoothing']}; "
          f"training on {len(train_rows):,} of {len(rows['train']):,} Training faces, "
          f"selecting on {len(val_rows):,} PublicTest faces", flush=True)
    started, cpu_started = time.time(), time.process_time()
    history = model.fit(train_data, validation_data=val_data, epochs=epochs, verbose=2,
                        callbacks=[EpochTimer(len(train_rows)), StopOnNaN(), KeepBest()])
    wall_minutes = (time.time() - started) / 60
    cpu_minutes = (time.process_time() - cpu_started) / 60

    model.set_weights(best["weights"])
    # Scored in float32, as evaluate, export and predict run the package's models.
    scorer = with_dtype_policy(model, "float32")
    test_rows = rows["private_test"]
    probabilities = np.asarray(scorer.predict(images[test_rows].astype(np.float32),
                                              batch_size=512, verbose=0))
    test_kept = majority[test_rows] >= 0
    val_probabilities = np.asarray(scorer.predict(images[val_rows].astype(np.float32),
                                                  batch_size=512, verbose=0))
    result = {
        "mode": mode,
        "experiment_recipe": experiment,
        "settings": {key: settings[key] for key in (
            "model", "model_kwargs", "augmentation", "optimizer", "learning_rate",
            "weight_decay", "schedule", "warmup_epochs", "batch_size", "label_smoothing",
            "precision", "protocol")},
        "num_classes": len(FERPLUS_CLASSES),
        "class_names": list(FERPLUS_CLASSES),
        "seed": seed,
        "limit": limit,
        "epochs": epochs,
        "train_faces": int(len(train_rows)),
        "validation_faces": int(len(val_rows)),
        "best_epoch": best["epoch"],
        "wall_minutes": round(wall_minutes, 1),
        "process_cpu_minutes": round(cpu_minutes, 1),
        "history": {key: [round(float(value), 4) for value in values]
                    for key, values in history.history.items()},
        "ferplus_validation": accuracy_and_f1(majority[val_rows],
                                              val_probabilities.argmax(axis=1), 8),
        "ferplus_test": accuracy_and_f1(majority[test_rows][test_kept],
                                        probabilities[test_kept].argmax(axis=1), 8),
        "fer2013_private_test_7_shared": accuracy_and_f1(
            fer2013_labels[test_rows], fer2013_shared_predictions(probabilities), 7),
        "command": " ".join(["python"] + sys.argv),
    }
    print(json.dumps({key: result[key] for key in (
        "mode", "epochs", "best_epoch", "wall_minutes", "ferplus_validation", "ferplus_test",
        "fer2013_private_test_7_shared")}, indent=1), flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    counts = commands.add_parser("counts", help="faces kept per split under each mode")
    fit = commands.add_parser("train", help="train fer_vgg on FER+ targets")
    for command in (counts, fit):
        command.add_argument("--data", help="FER2013 CSV (default as fit finds it)")
        command.add_argument("--votes", help="fer2013new.csv (default: $FERPLUS_PATH or "
                                             "beside the data)")
    fit.add_argument("--mode", choices=MODES, required=True)
    fit.add_argument("--epochs", type=int, required=True)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--limit", type=int, help="at most this many rows of each split")
    fit.add_argument("--experiment", default="fer_vgg_kaggle",
                     help="the recipe (network, optimiser, schedule, precision) to follow")
    fit.add_argument("--warmup-epochs", type=int)
    fit.add_argument("--label-smoothing", type=float)
    fit.add_argument("--batch-size", type=int)
    fit.add_argument("--precision", choices=("float32", "mixed_bfloat16"),
                     help="default the recipe's (mixed_bfloat16); float32 on a CPU without "
                          "AVX512-BF16, where bfloat16 is emulated and many times slower")
    fit.add_argument("--save", help="write the result JSON here")
    merge = commands.add_parser("merge", help="combine train results into one file")
    merge.add_argument("results", nargs="+")
    merge.add_argument("--save", required=True)
    args = parser.parse_args(argv)

    if args.command == "counts":
        from fer_keras.data import sources as fer_data

        data_path = fer_data.resolve_data_path(args.data)
        _, _, usages = fer_data.load_fer2013(data_path)
        table = kept_counts(load_votes(find_votes(args.votes, data_path), usages), usages)
        print(json.dumps(table, indent=1))
        return 0
    if args.command == "merge":
        runs = [json.loads(Path(path).read_text()) for path in args.results]
        payload = {"issue": 23, "runs": runs}
        Path(args.save).write_text(json.dumps(payload, indent=1) + "\n")
        print(f"{'mode':<12}{'epochs':>7}{'best':>5}{'wall min':>9}{'FER+ val':>9}"
              f"{'FER+ test':>10}{'FER2013 7':>10}")
        for run in runs:
            print(f"{run['mode']:<12}{run['epochs']:>7}{run['best_epoch']:>5}"
                  f"{run['wall_minutes']:>9}{100 * run['ferplus_validation']['accuracy']:>9.2f}"
                  f"{100 * run['ferplus_test']['accuracy']:>10.2f}"
                  f"{100 * run['fer2013_private_test_7_shared']['accuracy']:>10.2f}")
        return 0
    result = train(args.mode, args.epochs, seed=args.seed, data=args.data,
                   votes_path=args.votes, limit=args.limit, experiment=args.experiment,
                   warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
                   batch_size=args.batch_size, precision=args.precision)
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
