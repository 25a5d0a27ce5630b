"""Training one experiment into its run folder: settings, data, the compiled model and its
inputs, `model.fit` with resume and progress, and the outputs of a finished run."""

import contextlib
import json
import math
import shutil
import sys
from pathlib import Path

from fer_keras.training.resume import resume_state
from fer_keras.training.run_folder import (check_output_folder, commit_run, lock_run_folder,
                                          prepare_run_folder, remove_stale_staging,
                                          run_folder_path, staging_folder)
from fer_keras.training.settings import check_settings, resolve_settings


DEFAULT_ROOT = Path("saved_models")


def train(experiment_name, data=None, output_dir=None, seed=0, limit=None, overrides=None,
          hparams=None, verbose="auto", skip_bad_rows=False, splits=None, overwrite=False,
          progress_seconds=60.0, distribute="none", cpu_devices=None, stream=False):
    """Trains an experiment and writes every output file. Returns the metrics dict.

    The run trains in `staging_folder(output_dir)` and moves into `output_dir` once every
    output is written; see the module docstring for resuming and the folder's lock.

    Args:
        experiment_name: a registered experiment.
        data: FER2013 path (see `fer_keras.data.sources.resolve_data_path`).
        output_dir: run folder; default `saved_models/EXPERIMENT`.
        seed: seed for weights, shuffling and augmentation.
        limit: keep at most this many rows per split.
        overrides: flag values (None = keep the experiment's).
        hparams: a dict of tuned hyperparameters, applied before `overrides`.
        verbose: Keras verbosity, or "auto" (a progress bar on a terminal, else 2).
        skip_bad_rows: see `fer_keras.data.sources.parse_csv`.
        splits: already loaded splits (used by tests and the tuner); `data` is then ignored.
        overwrite: replace a finished run in `output_dir`, which stays as it is until the
            new one is complete.
        progress_seconds: at verbose 2, a progress line within an epoch this often; None
            for none.
        distribute: "none", "mirrored" or "multi-worker" (see `fer_keras.training.distribute`).
            A worker other than the chief trains in `DIR.worker-K.partial/`, removed at
            the end, and returns None.
        cpu_devices: split the CPU into this many logical devices first.
        stream: decode an image folder a batch at a time (`fer_keras.data.sources.ImageFiles`).

    Raises:
        ValueError: for out-of-range settings, a finished run in `output_dir` without
            `overwrite`, a folder another fit holds (`RunFolderBusy`), or an unfinished
            run with other settings or data.
    """
    from fer_keras.data import sources as fer_data

    # Everything that can be refused is checked before a file is read or written.
    settings = resolve_settings(experiment_name, overrides, hparams)
    check_settings(settings, seed=seed, limit=limit)
    output_dir = run_folder_path(output_dir or DEFAULT_ROOT / experiment_name)
    data_path = None if splits is not None else fer_data.resolve_data_path(data)
    check_output_folder(output_dir, overwrite)
    if stream and data_path is not None and not data_path.is_dir():
        raise ValueError(f"--stream reads an image folder (train/<class>/*); a CSV is parsed "
                         f"into memory anyway. Drop --stream, or pass a folder. Received: "
                         f"data={str(data_path)!r}")
    from fer_keras.training.distribute import setup_distribution

    # Before any tensor exists: multi-worker TensorFlow configures its collectives here.
    distribution = setup_distribution(distribute, cpu_devices)
    if not distribution.is_chief:
        # Other workers train in step with the chief but keep only their resume state,
        # in a folder (and lock) of their own beside the run folder.
        worker_dir = output_dir.with_name(f"{output_dir.name}.worker-{distribution.worker}")
        staging = staging_folder(worker_dir)
        with lock_run_folder(worker_dir):
            train_in_staging(staging, output_dir, experiment_name, settings, data_path, seed, limit,
                      verbose, skip_bad_rows, splits, progress_seconds, distribution, stream)
            shutil.rmtree(staging, ignore_errors=True)
        return None
    staging = staging_folder(output_dir)
    with lock_run_folder(output_dir):
        prepare_run_folder(output_dir, staging, overwrite)
        try:
            metrics = train_in_staging(staging, output_dir, experiment_name, settings, data_path,
                                seed, limit, verbose, skip_bad_rows, splits,
                                progress_seconds, distribution, stream)
        except BaseException:
            # A run stopped before its first epoch finished has nothing to resume: leave no
            # DIR.partial/ behind (one with a finished epoch stays, to resume from).
            with contextlib.suppress(OSError, ValueError):
                remove_stale_staging(staging)
            raise
        commit_run(staging, output_dir)
    print(f"Wrote {', '.join(sorted(p.name for p in output_dir.iterdir() if p.is_file()))} "
          f"to {output_dir}")
    return metrics


def train_in_staging(staging, output_dir, experiment_name, settings, data_path, seed, limit,
              verbose, skip_bad_rows, splits, progress_seconds, distribution, stream):
    """`train`'s work inside the staging folder, up to the last output file."""
    import keras
    import numpy as np

    from fer_keras.data import sources as fer_data
    from fer_keras.data.augmentation import Augmentation
    from fer_keras.training.distribute import prepare_model
    from fer_keras.models import get_model, load_model, with_dtype_policy
    from fer_keras.training.results import (evaluate_splits, format_report, plot_confusion,
                                   plot_history, read_history, write_json)
    from fer_keras.training.recipe import (EpochTimer, ProgressLog, StopOnNaN, class_weights,
                                    compile_model, precision_policy)

    fingerprint = None if data_path is None else fer_data.source_fingerprint(data_path)
    config = dict(settings, seed=seed, limit=limit, skip_bad_rows=bool(skip_bad_rows),
                  data_path=None if data_path is None else str(data_path),
                  data_fingerprint=fingerprint,
                  command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                  keras_version=keras.__version__, backend=keras.backend.backend(),
                  distribute=distribution.name, replicas=distribution.replicas,
                  stream=bool(stream))
    # JSON round trip, so tuples compare equal to the lists a stored config.json holds.
    config = json.loads(json.dumps(config))
    resuming, finished, best_so_far = resume_state(staging, config)
    staging.mkdir(parents=True, exist_ok=True)
    write_json(staging / "config.json", config)

    keras.utils.set_random_seed(seed)
    if splits is None:
        splits = fer_data.load_splits(data_path, skip_bad_rows=skip_bad_rows, limit=limit,
                                      protocol=settings["protocol"], stream=stream)
    x_train, y_train = splits["train"]
    x_val, y_val = splits["validation"]
    batch_size = int(settings["batch_size"])
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    replicas = distribution.replicas
    if replicas > 1:
        # Distributed, every step is a full global batch split evenly across the replicas
        # (the last, partial batch of an epoch is left out).
        if batch_size % replicas or len(x_train) < batch_size:
            raise ValueError(
                f"--distribute {distribution.name} splits each batch across {replicas} "
                f"replicas: --batch-size must be a multiple of {replicas} and at most the "
                f"{len(x_train)} training images. Received: batch_size={batch_size}")
        steps_per_epoch = len(x_train) // batch_size
    epochs = int(settings["epochs"])

    with precision_policy(settings["precision"]), distribution.scope():
        model = get_model(settings["model"], **settings["model_kwargs"])
        compile_model(model, steps_per_epoch=steps_per_epoch, **settings)
        prepare_model(model, distribution)
    augmentation = Augmentation(settings["augmentation"], seed=None) \
        if settings["augmentation"] else None
    train_data = fer_data.make_dataset(x_train, y_train, batch_size, shuffle=True,
                                       augmentation=augmentation, seed=seed,
                                       drop_remainder=replicas > 1)
    val_batch_size = 512
    if distribution.even_batches:
        # JAX splits only batches that divide evenly across the devices: epochs select on
        # all but the last len % replicas validation images (the final scores use all).
        val_batch_size = 512 // replicas * replicas
        kept = len(x_val) // replicas * replicas
        x_val, y_val = x_val[:kept], y_val[:kept]
    val_data = fer_data.make_dataset(x_val, y_val, val_batch_size)

    checkpoint_path = staging / "model.keras"
    history_path = staging / "history.csv"
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    callbacks = [
        EpochTimer(len(x_train)),
        # Before ModelCheckpoint, CSVLogger and BackupAndRestore, so a NaN epoch is stopped
        # before any of them records it (callbacks run in list order).
        StopOnNaN(),
        keras.callbacks.ModelCheckpoint(checkpoint_path, monitor="val_accuracy", mode="max",
                                        save_best_only=True,
                                        initial_value_threshold=best_so_far),
        keras.callbacks.CSVLogger(history_path, append=resuming),
    ]
    if settings["schedule"] == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_accuracy", mode="max", factor=0.5, patience=5, min_lr=1e-6))
    if verbose == 2 and progress_seconds:
        callbacks.append(ProgressLog(len(x_train), batch_size, every_seconds=progress_seconds))
    # Last, so everything else of an epoch is on disk before the epoch counts as done. The
    # backup outlives training (delete_checkpoint=False): `train` removes it only once the
    # run is complete, so a kill before then resumes without training again.
    callbacks.append(keras.callbacks.BackupAndRestore(staging / "backup",
                                                      double_checkpoint=True,
                                                      delete_checkpoint=False))
    if resuming:
        print(f"Resuming {experiment_name} from {staging} after epoch {finished}/{epochs}"
              + (f" (best val_accuracy so far {best_so_far:.4f})" if best_so_far else "")
              + ("; training is done, writing its outputs" if finished >= epochs else ""),
              flush=True)
    selection = fer_data.PROTOCOLS[settings["protocol"]][1]
    print(f"Training {experiment_name} ({settings['model']}, {model.count_params():,} "
          f"parameters, {settings['precision']}, {settings['protocol']} protocol) on "
          f"{len(x_train):,} images, selecting on {len(x_val):,} ({selection}); "
          f"training in {staging}"
          + (f", moved to {output_dir} when complete" if distribution.is_chief else "")
          + f"; {keras.backend.backend()} backend, {distribution.describe()}", flush=True)
    try:
        model.fit(train_data, validation_data=val_data, epochs=epochs, callbacks=callbacks,
                  verbose=verbose, shuffle=False,
                  class_weight=class_weights(y_train, settings["class_weight"]))
    except KeyboardInterrupt:
        print(f"\nInterrupted. Run the same command again to resume {experiment_name} from "
              f"its last finished epoch (saved in {staging}).", file=sys.stderr)
        raise
    distribution.finish()
    if not distribution.is_chief:
        return None

    history = read_history(history_path)
    if checkpoint_path.exists():
        # Keep the best epoch without its optimizer state: a third of the size, and all
        # that evaluation, export and prediction need (resuming uses backup/ instead).
        # Saved beside it and renamed, so a kill mid-save leaves the checkpoint whole.
        best_model = load_model(checkpoint_path, dtype_policy=None)
        resaved = staging / "model.tmp.keras"
        best_model.save(resaved)
        resaved.replace(checkpoint_path)
    else:
        best_model = model
    # Scores come from float32 inference, as evaluate, export and predict run the model.
    best_model = with_dtype_policy(best_model, "float32")
    scored = evaluate_splits(best_model, splits)
    val_history = history.get("val_accuracy", [])
    best_index = int(np.nanargmax(val_history)) if val_history else None
    seconds = history.get("epoch_seconds", [])
    throughput = history.get("train_images_per_second", [])
    metrics = {
        "experiment": experiment_name,
        "model": settings["model"],
        "parameters": int(best_model.count_params()),
        "protocol": settings["protocol"],
        "precision": settings["precision"],
        "backend": keras.backend.backend(),
        "distribute": distribution.name,
        "replicas": distribution.replicas,
        "selection_split": "public_test" if settings["protocol"] == "kaggle" else "validation",
        "epochs_run": len(val_history),
        "best_epoch": None if best_index is None else best_index + 1,
        "train_minutes": round(float(np.nansum(seconds)) / 60.0, 2),
        "train_images_per_second": round(float(np.nanmedian(throughput)), 1)
        if throughput else None,
        "splits": scored,
    }
    write_json(staging / "metrics.json", metrics)
    plot_history(history, staging / "learning_curves.png", title=experiment_name)
    plot_confusion(scored["validation"]["confusion_matrix"],
                   staging / "confusion_matrix.png",
                   title=f"{experiment_name}: validation split")
    for split in ("validation", "private_test"):
        if split in scored:
            print(format_report(scored[split], title=f"[{experiment_name}] {split}"))
    return metrics
