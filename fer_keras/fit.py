"""Train one named experiment on FER2013.

Usage:

    python -m fer_keras.fit baseline_deep_dropout [--data PATH] [--epochs N]
        [--batch-size N] [--learning-rate X] [--weight-decay X] [--dropout-rate X]
        [--hparams BEST.json] [--output-dir DIR] [--seed N]

Writes into `saved_models/EXPERIMENT/` (or `--output-dir`): `model.keras` (best epoch by
validation accuracy), `history.csv`, `config.json`, `metrics.json`,
`learning_curves.png` and `confusion_matrix.png`. Killed runs resume from the last finished
epoch when the same command is run again.
"""

import argparse
import json
import math
import sys
from pathlib import Path

from fer_keras.cli import entry_point, run_command

DEFAULT_ROOT = Path("saved_models")
RESUME_IGNORED_KEYS = ("command", "data_path")


def build_parser():
    from fer_keras.experiments import list_experiments
    from fer_keras.training import OPTIMIZERS, SCHEDULES

    parser = argparse.ArgumentParser(
        prog="python -m fer_keras.fit", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Experiments: " + ", ".join(list_experiments()))
    parser.add_argument("experiment", help="experiment name (see below)")
    parser.add_argument("--data", help="FER2013 CSV (.csv/.csv.gz) or image folder; default "
                        "$FER2013_PATH, then data/fer2013.csv[.gz]")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--dropout-rate", type=float)
    parser.add_argument("--label-smoothing", type=float)
    parser.add_argument("--class-weight", choices=["none", "balanced"])
    parser.add_argument("--optimizer", choices=list(OPTIMIZERS))
    parser.add_argument("--schedule", choices=list(SCHEDULES),
                        help="learning-rate schedule; cosine decays to zero over --epochs")
    parser.add_argument("--warmup-epochs", type=int,
                        help="linear warm-up before the cosine decay")
    parser.add_argument("--hparams", help="JSON of hyperparameters (e.g. the tuner's "
                        "best_hparams.json); explicit flags win over it")
    parser.add_argument("--output-dir", help="default saved_models/EXPERIMENT")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="use at most N rows of each split "
                        "(quick checks; results are not comparable)")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="drop malformed CSV rows / unreadable images (a summary is "
                        "printed) instead of stopping at the first one")
    parser.add_argument("--verbose", type=int, choices=[0, 1, 2],
                        help="Keras verbosity; default: progress bar on a terminal, one "
                        "line per epoch otherwise")
    return parser


def resolve_settings(experiment_name, overrides=None, hparams=None):
    """Merges an experiment with hyperparameter files and flags (flags win).

    Args:
        experiment_name: a registered experiment.
        overrides: dict of experiment fields or `dropout_rate`/model kwargs; None values are
            dropped so the experiment's defaults stay.
        hparams: dict of the same keys (e.g. a tuner's best trial), applied first.

    Returns:
        A JSON-ready dict: experiment, model, model_kwargs and the training fields.
    """
    from fer_keras.experiments import TRAINING_KEYS, get_experiment
    from fer_keras.models.registry import builder_accepts

    experiment = get_experiment(experiment_name)
    settings = {key: getattr(experiment, key) for key in TRAINING_KEYS}
    settings.update(experiment=experiment.name, model=experiment.model,
                    model_kwargs=dict(experiment.model_kwargs))
    for source in (hparams or {}, overrides or {}):
        for key, value in source.items():
            if value is None:
                continue
            if key in TRAINING_KEYS:
                settings[key] = value
            elif key in ("experiment", "model"):
                continue
            elif key == "model_kwargs":
                settings["model_kwargs"].update(value)
            elif builder_accepts(experiment.model, key):
                settings["model_kwargs"][key] = value
            else:
                raise ValueError(f"{key!r} is neither a training setting ({', '.join(TRAINING_KEYS)}) "
                                 f"nor an argument of model {experiment.model!r}. "
                                 f"Received: {key}={value!r}")
    if settings["class_weight"] == "none":
        settings["class_weight"] = None
    return settings


def _recover_torn_backup(backup):
    """Falls back to the previous backup when the last one was cut off mid-write.

    A kill while `BackupAndRestore` writes `latest.weights.h5` leaves a file h5py cannot
    open. Keras would fall back to the `.bkp` copies itself, but only after we had read the
    newer epoch number; doing it here keeps history.csv and the weights in step.
    """
    import shutil

    import h5py

    weights = backup / "latest.weights.h5"
    previous = weights.with_name(weights.name + ".bkp")
    if not weights.exists():
        return
    try:
        with h5py.File(weights, "r"):
            return
    except OSError:
        if not previous.exists():
            raise ValueError(f"The resume state in {backup} is damaged and has no previous "
                             f"copy. Delete {backup} to start the run over.") from None
    print(f"The last backup in {backup} was cut off mid-write; resuming from the one before.",
          file=sys.stderr)
    shutil.copyfile(previous, weights)
    previous_metadata = backup / "training_metadata.json.bkp"
    if previous_metadata.exists():
        shutil.copyfile(previous_metadata, backup / "training_metadata.json")


def _resume_state(output_dir, config):
    """Returns (resuming, finished_epochs, best_val_accuracy) and guards against mixing runs."""
    from fer_keras.results import read_history

    backup = output_dir / "backup"
    metadata = backup / "training_metadata.json"
    if not metadata.exists():
        return False, 0, None
    previous_path = output_dir / "config.json"
    if previous_path.exists():
        previous = json.loads(previous_path.read_text())
        changed = sorted(key for key in set(previous) | set(config)
                         if key not in RESUME_IGNORED_KEYS
                         and previous.get(key) != config.get(key))
        if changed:
            raise ValueError(
                f"{output_dir} holds an unfinished run with different settings ({', '.join(changed)}). "
                f"Rerun the original command to resume it, pass another --output-dir, or delete "
                f"{output_dir / 'backup'} to start over.")
    _recover_torn_backup(backup)
    finished = int(json.loads(metadata.read_text())["epoch"])
    history_path = output_dir / "history.csv"
    history = read_history(history_path)
    if history:
        # Drop epochs logged after the last backup (the run died between the two writes).
        lines = history_path.read_text().splitlines()
        history_path.write_text("\n".join(lines[:finished + 1]) + "\n")
        history = read_history(history_path)
    best = max(history.get("val_accuracy", []), default=None)
    return True, finished, best


def train(experiment_name, data=None, output_dir=None, seed=0, limit=None, overrides=None,
          hparams=None, verbose="auto", skip_bad_rows=False, splits=None):
    """Trains an experiment and writes every output file. Returns the metrics dict.

    Args:
        experiment_name: a registered experiment.
        data: FER2013 path (see `fer_keras.data.resolve_data_path`).
        output_dir: run folder; default `saved_models/EXPERIMENT`.
        seed: seed for weights, shuffling and augmentation.
        limit: keep at most this many rows per split.
        overrides: flag values (None = keep the experiment's).
        hparams: a dict of tuned hyperparameters, applied before `overrides`.
        verbose: Keras verbosity.
        skip_bad_rows: see `fer_keras.data.parse_csv`.
        splits: already loaded splits (used by tests and the tuner); `data` is then ignored.
    """
    import keras
    import numpy as np

    from fer_keras import data as fer_data
    from fer_keras.augmentation import Augmentation
    from fer_keras.models import get_model, load_model
    from fer_keras.results import (evaluate_splits, format_report, plot_confusion,
                                   plot_history, read_history, write_json)
    from fer_keras.training import EpochTimer, StopOnNaN, class_weights, compile_model

    settings = resolve_settings(experiment_name, overrides, hparams)
    output_dir = Path(output_dir or DEFAULT_ROOT / experiment_name)
    data_path = None if splits is not None else str(fer_data.resolve_data_path(data))
    config = dict(settings, seed=seed, limit=limit, data_path=data_path,
                  command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                  keras_version=keras.__version__, backend=keras.backend.backend())
    # JSON round trip, so tuples compare equal to the lists a stored config.json holds.
    config = json.loads(json.dumps(config))
    output_dir.mkdir(parents=True, exist_ok=True)
    resuming, finished, best_so_far = _resume_state(output_dir, config)
    write_json(output_dir / "config.json", config)

    keras.utils.set_random_seed(seed)
    if splits is None:
        splits = fer_data.load_splits(data_path, skip_bad_rows=skip_bad_rows, limit=limit)
    x_train, y_train = splits["train"]
    x_val, y_val = splits["validation"]
    batch_size = int(settings["batch_size"])
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    epochs = int(settings["epochs"])

    model = get_model(settings["model"], **settings["model_kwargs"])
    compile_model(model, steps_per_epoch=steps_per_epoch, **settings)
    augmentation = Augmentation(settings["augmentation"], seed=None) \
        if settings["augmentation"] else None
    train_data = fer_data.make_dataset(x_train, y_train, batch_size, shuffle=True,
                                       augmentation=augmentation, seed=seed)
    val_data = fer_data.make_dataset(x_val, y_val, 512)

    checkpoint_path = output_dir / "model.keras"
    history_path = output_dir / "history.csv"
    callbacks = [
        EpochTimer(len(x_train)),
        StopOnNaN(),
        keras.callbacks.ModelCheckpoint(checkpoint_path, monitor="val_accuracy", mode="max",
                                        save_best_only=True,
                                        initial_value_threshold=best_so_far),
        keras.callbacks.CSVLogger(history_path, append=resuming),
    ]
    if settings["schedule"] == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_accuracy", mode="max", factor=0.5, patience=5, min_lr=1e-6))
    # Last, so everything else of an epoch is on disk before the epoch counts as done.
    callbacks.append(keras.callbacks.BackupAndRestore(output_dir / "backup",
                                                      double_checkpoint=True))
    if resuming:
        print(f"Resuming {experiment_name} from {output_dir} after epoch {finished}/{epochs}"
              + (f" (best val_accuracy so far {best_so_far:.4f})" if best_so_far else ""),
              flush=True)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    print(f"Training {experiment_name} ({settings['model']}, {model.count_params():,} "
          f"parameters) on {len(x_train):,} images, validating on {len(x_val):,}; "
          f"output in {output_dir}", flush=True)
    try:
        model.fit(train_data, validation_data=val_data, epochs=epochs, callbacks=callbacks,
                  verbose=verbose, shuffle=False,
                  class_weight=class_weights(y_train, settings["class_weight"]))
    except KeyboardInterrupt:
        print(f"\nInterrupted. Run the same command again to resume {experiment_name} from "
              f"its last finished epoch.", file=sys.stderr)
        raise

    history = read_history(history_path)
    if checkpoint_path.exists():
        # Keep the best epoch without its optimizer state: a third of the size, and all
        # that evaluation, export and prediction need (resuming uses backup/ instead).
        best_model = load_model(checkpoint_path)
        best_model.save(checkpoint_path)
    else:
        best_model = model
    scored = evaluate_splits(best_model, splits)
    val_history = history.get("val_accuracy", [])
    best_index = int(np.nanargmax(val_history)) if val_history else None
    seconds = history.get("epoch_seconds", [])
    throughput = history.get("train_images_per_second", [])
    metrics = {
        "experiment": experiment_name,
        "model": settings["model"],
        "parameters": int(best_model.count_params()),
        "epochs_run": len(val_history),
        "best_epoch": None if best_index is None else best_index + 1,
        "train_minutes": round(float(np.nansum(seconds)) / 60.0, 2),
        "train_images_per_second": round(float(np.nanmedian(throughput)), 1)
        if throughput else None,
        "splits": scored,
    }
    write_json(output_dir / "metrics.json", metrics)
    plot_history(history, output_dir / "learning_curves.png", title=experiment_name)
    plot_confusion(scored["validation"]["confusion_matrix"],
                   output_dir / "confusion_matrix.png",
                   title=f"{experiment_name}: validation split")
    for split in ("validation", "private_test"):
        if split in scored:
            print(format_report(scored[split], title=f"[{experiment_name}] {split}"))
    print(f"Wrote {', '.join(sorted(p.name for p in output_dir.iterdir() if p.is_file()))} "
          f"to {output_dir}")
    return metrics


def main(argv=None):
    args = build_parser().parse_args(argv)
    overrides = {
        "epochs": args.epochs, "batch_size": args.batch_size,
        "learning_rate": args.learning_rate, "weight_decay": args.weight_decay,
        "dropout_rate": args.dropout_rate, "label_smoothing": args.label_smoothing,
        "class_weight": args.class_weight, "optimizer": args.optimizer,
        "schedule": args.schedule, "warmup_epochs": args.warmup_epochs,
    }

    def body():
        hparams = None
        if args.hparams:
            hparams_path = Path(args.hparams)
            if not hparams_path.exists():
                raise ValueError(f"--hparams file not found: {hparams_path}")
            try:
                hparams = json.loads(hparams_path.read_text())
            except json.JSONDecodeError as error:
                raise ValueError(f"--hparams {hparams_path} is not valid JSON: {error}") from error
            hparams = hparams.get("hyperparameters", hparams)
        train(args.experiment, data=args.data, output_dir=args.output_dir, seed=args.seed,
              limit=args.limit, overrides=overrides, hparams=hparams,
              verbose="auto" if args.verbose is None else args.verbose,
              skip_bad_rows=args.skip_bad_rows)

    from fer_keras.training import TrainingDiverged

    # train() prints how to resume on Ctrl-C itself.
    return run_command(body, failures=(TrainingDiverged,))


if __name__ == "__main__":
    entry_point(main)
