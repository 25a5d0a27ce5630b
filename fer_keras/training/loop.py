"""Training one experiment into its run folder: settings, data, the compiled model and its
inputs, `model.fit` with resume and progress, and the outputs of a finished run.

`train` checks everything refusable, then trains a `TrainingJob` in the staging folder of
the run folder (`train_in_staging`) and commits it; inside the staging folder the pieces
are the run's `config.json` (`run_config`), its callbacks (`make_callbacks`) and, once
trained, its outputs (`write_run_outputs`: the best model, metrics.json and the plots).

Keras is imported inside the functions that train: `fit` imports this module, and
`fit --help` must answer without importing Keras.
"""

import contextlib
import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from fer_keras.data import sources as fer_data
from fer_keras.data.protocols import get_protocol
from fer_keras.training import results
from fer_keras.training.distribute import Distribution, setup_distribution
from fer_keras.training.resume import resume_state
from fer_keras.training.run_folder import (
    check_output_folder,
    commit_run,
    lock_run_folder,
    prepare_run_folder,
    remove_stale_staging,
    run_folder_path,
    staging_folder,
)
from fer_keras.training.settings import check_settings, resolve_settings

DEFAULT_ROOT = Path("saved_models")

VALIDATION_BATCH_SIZE = 512
"""Batch size of the validation pipeline that selects the best epoch."""


@dataclasses.dataclass
class TrainingJob:
    """One experiment to train, resolved and checked by `train`.

    Attributes:
        experiment_name: the registered experiment.
        settings: its `resolve_settings` dict, checked.
        output_dir: the run folder (absolute).
        data_path: the FER2013 source, or None when `splits` are given.
        seed: seed for weights, shuffling and augmentation.
        limit: at most this many rows per split, or None.
        verbose: Keras verbosity, or "auto".
        skip_bad_rows: see `fer_keras.data.sources.parse_csv`.
        splits: already loaded splits, or None to load `data_path`.
        progress_seconds: at verbose 2, a progress line within an epoch this often.
        stream: decode an image folder a batch at a time.
        labels_file: FER+ votes file (`--labels-file`), or None to look for it.
        teacher_fingerprints: `{teacher run: model fingerprint}` of a distilled run.
    """

    experiment_name: str
    settings: dict[str, Any]
    output_dir: Path
    data_path: Path | None = None
    seed: int = 0
    limit: int | None = None
    verbose: int | str = "auto"
    skip_bad_rows: bool = False
    splits: dict | None = None
    progress_seconds: float | None = 60.0
    stream: bool = False
    labels_file: Path | None = None
    teacher_fingerprints: dict[str, str] = dataclasses.field(default_factory=dict)


def train(experiment_name: str, data: str | Path | None = None,
          output_dir: str | Path | None = None, seed: int = 0, limit: int | None = None,
          overrides: dict[str, Any] | None = None, hparams: dict[str, Any] | None = None,
          verbose: int | str = "auto", skip_bad_rows: bool = False, splits: dict | None = None,
          overwrite: bool = False, progress_seconds: float | None = 60.0,
          distribute: str = "none", cpu_devices: int | None = None,
          stream: bool = False, labels_file: str | Path | None = None
          ) -> dict[str, Any] | None:
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
        labels_file: with FER+ labels, the votes file; None looks for `$FERPLUS_PATH`, then
            `fer2013new.csv` beside the data (`fer_keras.data.ferplus.find_votes`).

    Raises:
        ValueError: for out-of-range settings, a finished run in `output_dir` without
            `overwrite`, a folder another fit holds (`RunFolderBusy`), or an unfinished
            run with other settings or data.
    """
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
    if settings["labels"] == "ferplus" and splits is None:
        # Refused here, before any file is written: no votes file, or votes for other rows.
        from fer_keras.data.ferplus import find_votes

        labels_file = find_votes(labels_file, data_path)
    elif labels_file is not None:
        raise ValueError(f"--labels-file is the FER+ votes file: it goes with --labels "
                         f"ferplus. Received: labels={settings['labels']!r}")
    teacher_fingerprints = {}
    if settings["teachers"]:
        from fer_keras.training.distill import check_teachers

        teacher_fingerprints = check_teachers(settings["teachers"], settings)
    job = TrainingJob(experiment_name, settings, output_dir, data_path=data_path, seed=seed,
                      limit=limit, verbose=verbose, skip_bad_rows=skip_bad_rows,
                      splits=splits, progress_seconds=progress_seconds, stream=stream,
                      labels_file=labels_file, teacher_fingerprints=teacher_fingerprints)

    # Before any tensor exists: multi-worker TensorFlow configures its collectives here.
    distribution = setup_distribution(distribute, cpu_devices)
    if not distribution.is_chief:
        _train_as_worker(job, distribution)
        return None
    staging = staging_folder(output_dir)
    with lock_run_folder(output_dir):
        prepare_run_folder(output_dir, staging, overwrite)
        try:
            metrics = train_in_staging(job, staging, distribution)
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


def _train_as_worker(job: TrainingJob, distribution: Distribution) -> None:
    """A worker other than the chief trains in step with it but keeps only its resume
    state, in a folder (and lock) of its own beside the run folder, removed at the end."""
    output_dir = job.output_dir
    worker_dir = output_dir.with_name(f"{output_dir.name}.worker-{distribution.worker}")
    staging = staging_folder(worker_dir)
    with lock_run_folder(worker_dir):
        train_in_staging(job, staging, distribution)
        shutil.rmtree(staging, ignore_errors=True)


def train_in_staging(job: TrainingJob, staging: Path,
                     distribution: Distribution) -> dict[str, Any] | None:
    """`train`'s work inside the staging folder, up to the last output file.

    Returns the metrics dict (None on a worker other than the chief).
    """
    import keras  # Lazy, as every Keras import here (see the module docstring).

    from fer_keras.training.builder import build_for_training, num_classes_of

    settings = job.settings
    config = run_config(job, distribution)
    resuming, finished, best_so_far = resume_state(staging, config)
    staging.mkdir(parents=True, exist_ok=True)
    results.write_json(staging / "config.json", config)

    keras.utils.set_random_seed(job.seed)
    splits = job.splits
    if splits is None:
        splits = fer_data.load_splits(job.data_path, skip_bad_rows=job.skip_bad_rows,
                                      limit=job.limit, protocol=settings["protocol"],
                                      stream=job.stream, labels=settings["labels"],
                                      label_mode=settings["label_mode"],
                                      labels_file=job.labels_file)
    # FER+ splits add the faces and targets to train on under the label mode.
    x_train, y_train = splits.get("train_targets", splits["train"])
    if settings["teachers"]:
        # Distillation: the teachers' softened probabilities mixed with the hard labels.
        from fer_keras.training import distill

        y_train = distill.distillation_targets(
            distill.teacher_probabilities(settings["teachers"], x_train,
                                          cache=staging / distill.CACHE_FILE,
                                          fingerprints=job.teacher_fingerprints),
            y_train, num_classes_of(settings), settings["distill_temperature"],
            settings["distill_weight"])
    _check_replica_batches(settings, len(x_train), distribution)
    # Distributed, every step is a full global batch split evenly across the replicas
    # (the last, partial batch of an epoch is left out).
    setup = build_for_training(settings, x_train, y_train, seed=job.seed,
                               distribution=distribution,
                               drop_remainder=distribution.replicas > 1)
    val_data, val_count = _validation_data(*splits["validation"], distribution,
                                          num_classes_of(settings))

    verbose = job.verbose
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    callbacks = make_callbacks(job, staging, len(x_train), verbose, resuming=resuming,
                               best_so_far=best_so_far)
    epochs = int(settings["epochs"])
    if resuming:
        print(f"Resuming {job.experiment_name} from {staging} after epoch {finished}/{epochs}"
              + (f" (best val_accuracy so far {best_so_far:.4f})" if best_so_far else "")
              + ("; training is done, writing its outputs" if finished >= epochs else ""),
              flush=True)
    selection = get_protocol(settings["protocol"]).selects_on
    print(f"Training {job.experiment_name} ({settings['model']}, "
          f"{setup.model.count_params():,} parameters, {settings['precision']}, "
          f"{settings['protocol']} protocol) on {len(x_train):,} images, selecting on "
          f"{val_count:,} ({selection}); training in {staging}"
          + (f", moved to {job.output_dir} when complete" if distribution.is_chief else "")
          + f"; {keras.backend.backend()} backend, {distribution.describe()}", flush=True)
    try:
        setup.model.fit(setup.train_data, validation_data=val_data, epochs=epochs,
                        callbacks=callbacks, verbose=verbose, shuffle=False,
                        class_weight=setup.class_weight)
    except KeyboardInterrupt:
        print(f"\nInterrupted. Run the same command again to resume {job.experiment_name} "
              f"from its last finished epoch (saved in {staging}).", file=sys.stderr)
        raise
    distribution.finish()
    if not distribution.is_chief:
        return None
    # The teachers' cached probabilities are not part of the run.
    (staging / "teacher_targets.npz").unlink(missing_ok=True)
    return write_run_outputs(job, staging, setup.model, splits, distribution)


def run_config(job: TrainingJob, distribution: Distribution) -> dict[str, Any]:
    """The run's `config.json`: its settings, seed, data (path and fingerprint), command
    line, Keras version and backend, and distribution."""
    # Keras loads on first use, so a command's --help and start-up stay fast.
    import keras

    from fer_keras.data.labels import get_label_set

    data_path = job.data_path
    fingerprint = None if data_path is None else fer_data.source_fingerprint(data_path)
    labels_file = job.labels_file
    config = dict(job.settings, seed=job.seed, limit=job.limit,
                  class_names=list(get_label_set(job.settings["labels"]).class_names),
                  labels_file=None if labels_file is None else str(labels_file),
                  labels_fingerprint=None if labels_file is None
                  else fer_data.source_fingerprint(labels_file),
                  teacher_fingerprints=dict(job.teacher_fingerprints),
                  skip_bad_rows=bool(job.skip_bad_rows),
                  data_path=None if data_path is None else str(data_path),
                  data_fingerprint=fingerprint,
                  command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                  keras_version=keras.__version__, backend=keras.backend.backend(),
                  distribute=distribution.name, replicas=distribution.replicas,
                  stream=bool(job.stream))
    # JSON round trip, so tuples compare equal to the lists a stored config.json holds.
    return json.loads(json.dumps(config))


def _check_replica_batches(settings: dict[str, Any], num_images: int,
                           distribution: Distribution) -> None:
    """Distributed, each batch must split evenly across the replicas, and an epoch must
    hold at least one full batch."""
    batch_size = int(settings["batch_size"])
    replicas = distribution.replicas
    if replicas > 1 and (batch_size % replicas or num_images < batch_size):
        raise ValueError(
            f"--distribute {distribution.name} splits each batch across {replicas} "
            f"replicas: --batch-size must be a multiple of {replicas} and at most the "
            f"{num_images} training images. Received: batch_size={batch_size}")


def _validation_data(x_val: Any, y_val: Any, distribution: Distribution,
                     num_classes: int) -> tuple[Any, int]:
    """The validation pipeline that selects the best epoch, and how many images it holds."""
    batch_size = VALIDATION_BATCH_SIZE
    if distribution.even_batches:
        # JAX splits only batches that divide evenly across the devices: epochs select on
        # all but the last len % replicas validation images (the final scores use all).
        replicas = distribution.replicas
        batch_size = VALIDATION_BATCH_SIZE // replicas * replicas
        kept = len(x_val) // replicas * replicas
        x_val, y_val = x_val[:kept], y_val[:kept]
    return (fer_data.make_dataset(x_val, y_val, batch_size, num_classes=num_classes),
            len(x_val))


def make_callbacks(job: TrainingJob, staging: Path, num_images: int, verbose: int, *,
                   resuming: bool, best_so_far: float | None) -> list:
    """The callbacks of a run training in `staging`, in the order they must run."""
    # Keras loads on first use, so a command's --help and start-up stay fast.
    import keras

    from fer_keras.training.recipe import EpochTimer, ProgressLog, StopOnNaN

    settings = job.settings
    callbacks = [
        EpochTimer(num_images),
        # Before ModelCheckpoint, CSVLogger and BackupAndRestore, so a NaN epoch is stopped
        # before any of them records it (callbacks run in list order).
        StopOnNaN(),
        keras.callbacks.ModelCheckpoint(staging / "model.keras", monitor="val_accuracy",
                                        mode="max", save_best_only=True,
                                        initial_value_threshold=best_so_far),
        keras.callbacks.CSVLogger(staging / "history.csv", append=resuming),
    ]
    if settings["schedule"] == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_accuracy", mode="max", factor=0.5, patience=5, min_lr=1e-6))
    if verbose == 2 and job.progress_seconds:
        callbacks.append(ProgressLog(num_images, int(settings["batch_size"]),
                                     every_seconds=job.progress_seconds))
    # Last, so everything else of an epoch is on disk before the epoch counts as done. The
    # backup outlives training (delete_checkpoint=False): `train` removes it only once the
    # run is complete, so a kill before then resumes without training again.
    callbacks.append(keras.callbacks.BackupAndRestore(staging / "backup",
                                                      double_checkpoint=True,
                                                      delete_checkpoint=False))
    return callbacks


def write_run_outputs(job: TrainingJob, staging: Path, model: Any, splits: dict,
                      distribution: Distribution) -> dict[str, Any]:
    """Writes a trained run's outputs into `staging`: the best epoch's model.keras without
    its optimizer state, metrics.json (scores of every split), learning_curves.png and
    confusion_matrix.png; prints the per-class reports. Returns the metrics dict."""
    # These import Keras; loaded on first use, so --help stays fast.
    from fer_keras.models import with_dtype_policy

    name = job.experiment_name
    history = results.read_history(staging / "history.csv")
    # Scores come from float32 inference, as evaluate, export and predict run the model.
    best_model = with_dtype_policy(_best_model(staging, model), "float32")
    scored = results.evaluate_splits(best_model, splits, names=[
        name for name in ("train", "validation", "public_test", "private_test")
        if name in splits])
    metrics = run_metrics(job, best_model, history, scored, distribution)
    if "fer2013_private_test" in splits:
        # A FER+ model on FER2013's labels, over the 7 classes the two sets share.
        metrics["fer2013_private_test"] = results.score_shared_classes(
            best_model, *splits["fer2013_private_test"])
    results.write_json(staging / "metrics.json", metrics)
    results.plot_history(history, staging / "learning_curves.png", title=name)
    results.plot_confusion(scored["validation"]["confusion_matrix"],
                           staging / "confusion_matrix.png",
                           title=f"{name}: validation split")
    for split in ("validation", "private_test"):
        if split in scored:
            print(results.format_report(scored[split], title=f"[{name}] {split}"))
    return metrics


def _best_model(staging: Path, model: Any) -> Any:
    """The best epoch's model (the checkpoint), re-saved without its optimizer state; the
    trained `model` itself when no epoch was checkpointed."""
    # These import Keras; loaded on first use, so --help stays fast.
    from fer_keras.models import load_model

    checkpoint_path = staging / "model.keras"
    if not checkpoint_path.exists():
        return model
    # Keep the best epoch without its optimizer state: a third of the size, and all
    # that evaluation, export and prediction need (resuming uses backup/ instead).
    # Saved beside it and renamed, so a kill mid-save leaves the checkpoint whole.
    best_model = load_model(checkpoint_path, dtype_policy=None)
    resaved = staging / "model.tmp.keras"
    best_model.save(resaved)
    resaved.replace(checkpoint_path)
    return best_model


def run_metrics(job: TrainingJob, model: Any, history: dict[str, list], scored: dict,
                distribution: Distribution) -> dict[str, Any]:
    """The run's `metrics.json`: what trained, how (epochs, time, speed) and its scores."""
    # Keras loads on first use, so a command's --help and start-up stay fast.
    import keras
    import numpy as np

    settings = job.settings
    val_history = history.get("val_accuracy", [])
    best_index = int(np.nanargmax(val_history)) if val_history else None
    seconds = history.get("epoch_seconds", [])
    throughput = history.get("train_images_per_second", [])
    return {
        "experiment": job.experiment_name,
        "model": settings["model"],
        "parameters": int(model.count_params()),
        "protocol": settings["protocol"],
        "precision": settings["precision"],
        "backend": keras.backend.backend(),
        "distribute": distribution.name,
        "replicas": distribution.replicas,
        "selection_split": get_protocol(settings["protocol"]).selection_split,
        "labels": settings.get("labels", "fer2013"),
        "label_mode": settings.get("label_mode"),
        "epochs_run": len(val_history),
        "best_epoch": None if best_index is None else best_index + 1,
        "train_minutes": round(float(np.nansum(seconds)) / 60.0, 2),
        "train_images_per_second": round(float(np.nanmedian(throughput)), 1)
        if throughput else None,
        "splits": scored,
    }
