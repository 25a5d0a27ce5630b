"""Train one named experiment on FER2013.

Usage:

    python -m fer_keras.fit baseline_deep_dropout [--data PATH] [--epochs N]
        [--batch-size N] [--learning-rate X] [--weight-decay X] [--dropout-rate X]
        [--hparams BEST.json] [--output-dir DIR] [--overwrite] [--seed N]
        [--distribute mirrored|multi-worker] [--stream]

The run folder is `saved_models/EXPERIMENT/` (or `--output-dir DIR`). A finished run there
holds `model.keras` (best epoch by validation accuracy), `history.csv`, `config.json`,
`metrics.json`, `learning_curves.png` and `confusion_matrix.png`.

A finished run (one with `metrics.json`) is never replaced by accident: fit into its folder
stops with exit status 2 unless `--overwrite` is given. Every run trains in a staging
folder beside the run folder, `DIR.partial/`, and moves into `DIR` only once all its outputs
are written, so a crash or a bad flag leaves a finished run as it was; with `--overwrite`
the old run stays in `DIR` until the new one is complete.

The staging folder is also the resume state: `backup/` (Keras `BackupAndRestore`: weights
and optimizer after the last finished epoch), `history.csv` and `config.json` (the settings
and a fingerprint of the data). Run the same command again to resume a killed run from its
last finished epoch; one killed after its last epoch only writes its outputs. Resuming with
other settings or other data (`--data`, `--limit`, `--skip-bad-rows`) is refused. One fit
at a time may use a run folder: a second one exits with status 2 (the lock is the file
`.DIR.lock` beside it, released when the first ends, even by a crash).

The same command trains on any Keras backend (`KERAS_BACKEND=tensorflow|jax|torch`); on JAX
and PyTorch the input pipeline is NumPy (`fer_keras.pipeline`), so TensorFlow need not be
installed. `--distribute mirrored` trains on every GPU of the machine and
`--distribute multi-worker` on several machines (`fer_keras.distribute`; `--batch-size` is
the global batch, split across replicas; only the chief writes the run folder).
`--stream` reads an image folder from disk a batch at a time instead of decoding it all
first, for folders larger than memory.

On a terminal Keras shows a progress bar within each epoch; in a log there is a line per
epoch, plus one every `--progress-seconds` within it (steps, images/s, time left).
"""

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

from fer_keras.cli import command_prog, entry_point, int_at_least, number_in, run_command

DEFAULT_ROOT = Path("saved_models")
STAGING_SUFFIX = ".partial"
RETIRED_SUFFIX = ".replaced"
RUN_ENTRIES = frozenset({"model.keras", "history.csv", "config.json", "metrics.json",
                         "learning_curves.png", "confusion_matrix.png", "backup",
                         "model.tmp.keras", "tau_sweep.png"})
"""What fit (and the commands that publish run folders the same way: ensemble, tta,
rebalance) write into a run folder. A folder holding anything else is never replaced, not
even with --overwrite: it holds files that are not ours."""
DATA_KEYS = ("data_fingerprint", "limit", "skip_bad_rows")
# How a run is spread over devices and read from disk changes neither its data nor its
# optimisation (the batch is global), so a run may resume with other devices or --stream.
RESUME_IGNORED_KEYS = ("command", "data_path", "distribute", "replicas", "stream") + DATA_KEYS


def build_parser():
    # None of these imports Keras, so `fit --help` answers at once.
    from fer_keras.data import PROTOCOLS
    from fer_keras.distribute import DISTRIBUTIONS
    from fer_keras.experiments import OPTIMIZERS, PRECISIONS, SCHEDULES, list_experiments

    # The docstring's paragraphs on run folders, resuming and progress, without its usage.
    details = __doc__[__doc__.index("The run folder"):]
    parser = argparse.ArgumentParser(
        prog=command_prog("fit"), description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=details + "\nExperiments: " + ", ".join(list_experiments()))
    parser.add_argument("experiment", help="experiment name (see below)")
    parser.add_argument("--data", help="FER2013 CSV (.csv/.csv.gz) or image folder; default "
                        "$FER2013_PATH, then data/fer2013.csv[.gz]")
    parser.add_argument("--epochs", type=int_at_least(1))
    parser.add_argument("--batch-size", type=int_at_least(1))
    parser.add_argument("--learning-rate", type=number_in(0, low_open=True))
    parser.add_argument("--weight-decay", type=number_in(0))
    parser.add_argument("--dropout-rate", type=number_in(0, 1, high_open=True))
    parser.add_argument("--label-smoothing", type=number_in(0, 1, high_open=True))
    parser.add_argument("--class-weight", choices=["none", "balanced"])
    parser.add_argument("--optimizer", choices=list(OPTIMIZERS))
    parser.add_argument("--schedule", choices=list(SCHEDULES),
                        help="learning-rate schedule; cosine decays to zero over --epochs")
    parser.add_argument("--warmup-epochs", type=int_at_least(0),
                        help="linear warm-up before the cosine decay")
    parser.add_argument("--precision", choices=list(PRECISIONS),
                        help="training dtype policy; mixed_bfloat16 trains about 2x faster on "
                        "CPUs with AVX512-BF16 (evaluation and export run in float32)")
    parser.add_argument("--protocol", choices=list(PROTOCOLS),
                        help="study: train on 80%% of Training, select on the other 20%%; "
                        "kaggle: train on all of Training, select on PublicTest")
    parser.add_argument("--hparams", help="JSON of hyperparameters (e.g. the tuner's "
                        "best_hparams.json); explicit flags win over it")
    parser.add_argument("--output-dir", help="default saved_models/EXPERIMENT")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished run in the output folder (it is kept "
                        "until the new run is complete)")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--limit", type=int_at_least(1), help="use at most N rows of each "
                        "split (quick checks; results are not comparable)")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="drop malformed CSV rows / unreadable images (a summary is "
                        "printed) instead of stopping at the first one")
    parser.add_argument("--distribute", choices=list(DISTRIBUTIONS), default="none",
                        help="mirrored: every GPU of this machine (tf.distribute."
                        "MirroredStrategy, or JAX DataParallel); multi-worker: several "
                        "machines (TensorFlow's MultiWorkerMirroredStrategy from TF_CONFIG); "
                        "--batch-size is the global batch")
    parser.add_argument("--cpu-devices", type=int_at_least(2),
                        help="split the CPU into N logical devices (runs --distribute "
                        "mirrored on a machine without GPUs, for tests)")
    parser.add_argument("--stream", action="store_true",
                        help="with an image folder as --data: list the files once and "
                        "decode them a batch at a time (folders larger than memory)")
    parser.add_argument("--verbose", type=int, choices=[0, 1, 2],
                        help="Keras verbosity; default: progress bar on a terminal, one "
                        "line per epoch otherwise")
    parser.add_argument("--progress-seconds", type=number_in(0, low_open=True), default=60.0,
                        help="when not on a terminal, a progress line within an epoch every "
                        "this many seconds (default 60)")
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


SETTING_RANGES = {
    # setting: (integer?, low, high, low_open, high_open), as `cli.describe_range` reads them
    "epochs": (True, 1, None, False, False),
    "batch_size": (True, 1, None, False, False),
    "warmup_epochs": (True, 0, None, False, False),
    "learning_rate": (False, 0, None, True, False),
    "weight_decay": (False, 0, None, False, False),
    "label_smoothing": (False, 0, 1, False, True),
}
"""Allowed values of the numeric training settings, whether they come from a flag, an
--hparams file or the experiment table. Any builder argument named `*dropout_rate` must be
in [0, 1)."""


def setting_choices():
    """The allowed values of the categorical training settings (None: the feature is off)."""
    from fer_keras.augmentation import POLICIES
    from fer_keras.data import PROTOCOLS
    from fer_keras.experiments import OPTIMIZERS, PRECISIONS, SCHEDULES

    return {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "precision": PRECISIONS,
            "protocol": tuple(PROTOCOLS), "augmentation": (None, *POLICIES),
            "class_weight": (None, "balanced")}


def check_settings(settings, seed=0, limit=None):
    """Raises a `ValueError` naming the first bad setting and what it may be.

    Categorical settings (optimizer, schedule, precision, protocol, augmentation,
    class_weight) must be one of `setting_choices()`; numeric ones lie in `SETTING_RANGES`.

    Args:
        settings: a `resolve_settings` dict.
        seed: must be an integer >= 0 (NumPy's seeds are unsigned).
        limit: None, or an integer >= 1.
    """
    from fer_keras.cli import describe_range, in_range

    for key, allowed in setting_choices().items():
        value = settings.get(key)
        if value not in allowed:
            shown = ", ".join("none" if each is None else str(each) for each in allowed)
            raise ValueError(f"{key} (--{key.replace('_', '-')}) must be one of {shown}. "
                             f"Received: {key}={value!r}")
    checks = [(key, settings.get(key), *bounds) for key, bounds in SETTING_RANGES.items()]
    checks += [(key, value, False, 0, 1, False, True)
               for key, value in settings["model_kwargs"].items()
               if key.endswith("dropout_rate") and value is not None]
    checks.append(("seed", seed, True, 0, None, False, False))
    if limit is not None:
        checks.append(("limit", limit, True, 1, None, False, False))
    for key, value, integer, low, high, low_open, high_open in checks:
        whole = isinstance(value, int) and not isinstance(value, bool)
        if (integer and not whole) or not in_range(value, low, high, low_open, high_open):
            kind = "an integer" if integer else "a finite number"
            raise ValueError(
                f"{key} (--{key.replace('_', '-')}) must be {kind} "
                f"{describe_range(low, high, low_open, high_open)}. Received: {key}={value!r}")


class RunFolderBusy(ValueError):
    """Raised when another process holds the lock of a run folder."""


def staging_folder(output_dir):
    """Where a run into `output_dir` trains (and resumes) until it is complete."""
    output_dir = Path(output_dir)
    return output_dir.with_name(output_dir.name + STAGING_SUFFIX)


@contextlib.contextmanager
def lock_run_folder(output_dir):
    """Holds an exclusive lock on a run folder for the life of the block.

    The lock is `fcntl.flock` on `.NAME.lock` beside the folder, not inside it, since a
    complete run replaces the folder as a whole. The kernel drops the lock when the process
    ends, however it ends, so a killed run never leaves its folder locked; a clean exit also
    removes the file.

    Raises:
        RunFolderBusy: if another process holds the lock.
    """
    import fcntl

    output_dir = Path(output_dir)
    path = output_dir.with_name(f".{output_dir.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"Cannot create the folder {path.parent} for the run {output_dir}: "
                         f"{error.strerror}. Choose another output folder.") from None
    while True:
        try:
            handle = open(path, "a+")
        except OSError as error:
            raise ValueError(f"Cannot write the lock file {path} beside the run "
                             f"{output_dir}: {error.strerror}. Choose an output folder in a "
                             f"place you can write to.") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise RunFolderBusy(
                f"Another fit (process {owner}) is writing the run in {output_dir}; its lock "
                f"is {path}. Wait for it to finish, or pass another --output-dir.") from None
        # The previous holder may have removed the file between our open and our lock; a
        # lock on that orphaned file would exclude nobody, so take the current one instead.
        try:
            current = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        handle.close()


def _settle_swap(output_dir):
    """Finishes or undoes a replacement of `output_dir` that a crash interrupted."""
    retired = output_dir.with_name(output_dir.name + RETIRED_SUFFIX)
    if retired.is_dir() and not _foreign_entries(retired):
        if output_dir.exists():
            # A crash after the new run moved into place: the old one is no longer needed.
            shutil.rmtree(retired)
        else:
            # A crash between the two renames of a swap: the old run goes back, and the new
            # one, still in the staging folder, only rewrites its outputs when resumed.
            retired.rename(output_dir)


def run_folder_path(output_dir, flag="--output-dir"):
    """`output_dir` as an absolute, normalised path that names a folder (`.` and `runs/..`
    become the folders they mean), or a `ValueError` for a place no run folder can be."""
    path = Path(os.path.abspath(os.fspath(output_dir)))
    if not path.name:
        raise ValueError(f"{flag} {output_dir} is the file-system root; a run folder is "
                         f"replaced as a whole, so give a folder inside it (e.g. "
                         f"{path / 'runs' / 'my_run'}).")
    return path


def _foreign_entries(folder):
    """The names in `folder` that no command of ours writes into a run folder."""
    return sorted(entry.name for entry in Path(folder).iterdir()
                  if entry.name not in RUN_ENTRIES)


def _probe_writable(folder, what):
    """Raises a `ValueError` unless a file can be created (and removed) in `folder`."""
    try:
        handle, name = tempfile.mkstemp(prefix=".fer_keras-write-check-", dir=folder)
    except OSError as error:
        raise ValueError(f"{what} {folder} is not writable ({error.strerror}). Choose an "
                         f"output folder in a place you can write to.") from None
    os.close(handle)
    os.unlink(name)


def check_output_folder(output_dir, overwrite=False, flag="--output-dir"):
    """Refuses, before any work, a run folder that fit could not publish or must not replace.

    A run folder is replaced as a whole when the run is complete, so it must be: absent,
    empty, or a folder of run files (the names in `RUN_ENTRIES`) that is either our own
    unfinished run or, with `overwrite`, a finished run or other run files. A folder holding
    any other file, a path that is a file, a mount point (which cannot be renamed) and a
    place that cannot be written are refused with one line; nothing is changed.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() or output_dir.is_symlink():
        if not output_dir.is_dir():
            raise ValueError(f"{flag} {output_dir} is a file, not a folder. A run is a "
                             f"folder of files (model.keras, metrics.json, ...): give the "
                             f"path of a new folder.")
        if os.path.ismount(output_dir):
            raise ValueError(f"{flag} {output_dir} is a mount point, which cannot be "
                             f"replaced by a finished run. Give a folder inside it (e.g. "
                             f"{output_dir / 'run'}).")
        foreign = _foreign_entries(output_dir)
        if foreign:
            raise ValueError(
                f"{output_dir} holds files that are not a run's ({', '.join(foreign[:5])}"
                f"{', ...' if len(foreign) > 5 else ''}); a run replaces its folder as a "
                f"whole, so it will not be written there, even with --overwrite. Choose "
                f"another {flag}, or move those files out.")
        entries = {entry.name for entry in output_dir.iterdir()}
        if "metrics.json" in entries and not overwrite:
            raise ValueError(
                f"{output_dir} already holds a finished run (its metrics.json). Pass another "
                f"{flag} to keep it, or --overwrite to replace it once the new run is "
                f"complete (it stays as it is until then).")
        if entries and "metrics.json" not in entries and not overwrite \
                and not _is_unfinished_run(output_dir):
            raise ValueError(
                f"{output_dir} holds {', '.join(sorted(entries)[:5])} but no finished run "
                f"of ours (no metrics.json), so fit will not replace them. Choose another "
                f"{flag}, or pass --overwrite to replace exactly these files once the new "
                f"run is complete.")
        retired = output_dir.with_name(output_dir.name + RETIRED_SUFFIX)
        if retired.exists() and (not retired.is_dir() or _foreign_entries(retired)):
            raise ValueError(f"{retired} is where the run in {output_dir} moves for a moment "
                             f"while a new one replaces it, but it holds files that are not "
                             f"a run's. Move it, or choose another {flag}.")
    parent = output_dir.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {output_dir} lies under {parent}, which is a file, not a "
                         f"folder. Choose another {flag}.")
    _probe_writable(parent, "The folder")
    if output_dir.is_dir():
        _probe_writable(output_dir, "The run folder")


def _is_unfinished_run(folder):
    """Whether `folder` is a run of fit's that trained in place (earlier versions did) and
    can resume: Keras' resume state as fit keeps it (`backup/training_metadata.json`) and a
    config.json object beside it."""
    config = Path(folder) / "config.json"
    if not (Path(folder) / "backup" / "training_metadata.json").exists() \
            or not config.exists():
        return False
    try:
        written = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(written, dict)


def _remove_stale_staging(staging):
    """Removes a staging folder in which no epoch finished (a run that failed or was
    stopped while starting): there is nothing to resume. Called under the run's lock, so no
    live process uses it; a folder holding files that are not a run's is left alone."""
    if not staging.is_dir() or (staging / "backup" / "training_metadata.json").exists():
        return
    if _foreign_entries(staging):
        raise ValueError(f"{staging} is where this run would train, but it holds files that "
                         f"are not a run's ({', '.join(_foreign_entries(staging)[:5])}). Move "
                         f"them out, or choose another output folder.")
    shutil.rmtree(staging)


def refuse_finished_run(output_dir, overwrite=False, flag="--output"):
    """Raises a `ValueError` when `output_dir` cannot take a new run (a finished run without
    `overwrite`, files that are not a run's, a file, an unwritable place; see
    `check_output_folder`).

    Commands that spend minutes before writing call it first too, to fail before that work.
    """
    check_output_folder(run_folder_path(output_dir, flag), overwrite, flag)


def write_run_folder(output_dir, write, overwrite=False, flag="--output"):
    """Publishes a run folder that needs no training the way `fit` publishes its own.

    Used by `fer_keras.ensemble` and `fer_keras.rebalance`: under the folder's lock, a
    finished run is refused unless `overwrite`; `write(folder)` fills the staging folder,
    which replaces `output_dir` only once it returned, so a failure never leaves a
    half-written run where a finished one was.

    Args:
        output_dir: the run folder.
        write: a function of the staging folder that writes every output into it.
        overwrite: replace a finished run.
        flag: the command's output flag, named in the refusal.
    """
    output_dir = run_folder_path(output_dir, flag)
    check_output_folder(output_dir, overwrite, flag)
    with lock_run_folder(output_dir):
        _settle_swap(output_dir)
        check_output_folder(output_dir, overwrite, flag)
        staging = staging_folder(output_dir)
        if staging.exists():
            if not staging.is_dir() or _foreign_entries(staging):
                raise ValueError(f"{staging}, where this run is staged, holds files that are "
                                 f"not a run's. Move it, or choose another {flag}.")
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        try:
            write(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _commit(staging, output_dir)


def _prepare_run_folder(output_dir, staging, overwrite):
    """Settles what a crash may have left and refuses to replace a finished run by accident.

    Runs under the folder's lock, before anything else is read or written.
    """
    _settle_swap(output_dir)
    check_output_folder(output_dir, overwrite)
    _remove_stale_staging(staging)
    if (output_dir / "metrics.json").exists() or not output_dir.exists():
        return
    if not staging.exists() and _is_unfinished_run(output_dir):
        # Earlier versions trained inside the run folder itself; a run killed that way moves
        # to the staging folder and resumes there like any other.
        print(f"Moving the unfinished run in {output_dir} to {staging} to resume it there.",
              flush=True)
        output_dir.rename(staging)


def _commit(staging, output_dir):
    """Moves a complete run from its staging folder into `output_dir`.

    Replacing a previous run takes two renames; `_prepare_run_folder` settles a crash
    between them. The backup goes last, so until the run is in place it can be resumed.
    """
    retired = output_dir.with_name(output_dir.name + RETIRED_SUFFIX)
    replacing = output_dir.exists()
    if replacing:
        output_dir.rename(retired)
    staging.rename(output_dir)
    if replacing:
        shutil.rmtree(retired)
    shutil.rmtree(output_dir / "backup", ignore_errors=True)


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


def _check_same_data(previous, config, folder):
    """Refuses to resume a run on other data than it started on, naming both."""
    # Keys a config.json from an older version lacks are not compared.
    differs = [key for key in DATA_KEYS
               if key in previous and previous[key] != config.get(key)]
    if not differs:
        return

    def describe(settings):
        return (f"{settings.get('data_path')} ({settings.get('data_fingerprint')}, limit "
                f"{settings.get('limit')}, skip_bad_rows {settings.get('skip_bad_rows')})")

    raise ValueError(
        f"{folder} holds an unfinished run on other data ({', '.join(differs)} differ): it "
        f"started on {describe(previous)}; this command gives {describe(config)}. Rerun with "
        f"the original data to resume it, pass another --output-dir, or delete {folder} to "
        f"start over.")


def _resume_state(folder, config):
    """Returns (resuming, finished_epochs, best_val_accuracy) and guards against mixing runs.

    Args:
        folder: the staging folder of the run.
        config: the settings this command would write to its `config.json`.
    """
    from fer_keras.results import read_history

    backup = folder / "backup"
    metadata = backup / "training_metadata.json"
    if not metadata.exists():
        return False, 0, None
    previous_path = folder / "config.json"
    if previous_path.exists():
        previous = json.loads(previous_path.read_text())
        _check_same_data(previous, config, folder)
        changed = sorted(key for key in set(previous) | set(config)
                         if key not in RESUME_IGNORED_KEYS
                         and previous.get(key) != config.get(key))
        if changed:
            raise ValueError(
                f"{folder} holds an unfinished run with different settings ({', '.join(changed)}). "
                f"Rerun the original command to resume it, pass another --output-dir, or delete "
                f"{folder} to start over.")
    _recover_torn_backup(backup)
    finished = int(json.loads(metadata.read_text())["epoch"])
    history_path = folder / "history.csv"
    history = read_history(history_path)
    if history:
        # Drop epochs logged after the last backup (the run died between the two writes);
        # as bytes, to keep CSVLogger's line endings.
        lines = history_path.read_bytes().splitlines(keepends=True)
        if len(lines) > finished + 1:
            history_path.write_bytes(b"".join(lines[:finished + 1]))
            history = read_history(history_path)
    best = max(history.get("val_accuracy", []), default=None)
    return True, finished, best


def train(experiment_name, data=None, output_dir=None, seed=0, limit=None, overrides=None,
          hparams=None, verbose="auto", skip_bad_rows=False, splits=None, overwrite=False,
          progress_seconds=60.0, distribute="none", cpu_devices=None, stream=False):
    """Trains an experiment and writes every output file. Returns the metrics dict.

    The run trains in `staging_folder(output_dir)` and moves into `output_dir` once every
    output is written; see the module docstring for resuming and the folder's lock.

    Args:
        experiment_name: a registered experiment.
        data: FER2013 path (see `fer_keras.data.resolve_data_path`).
        output_dir: run folder; default `saved_models/EXPERIMENT`.
        seed: seed for weights, shuffling and augmentation.
        limit: keep at most this many rows per split.
        overrides: flag values (None = keep the experiment's).
        hparams: a dict of tuned hyperparameters, applied before `overrides`.
        verbose: Keras verbosity, or "auto" (a progress bar on a terminal, else 2).
        skip_bad_rows: see `fer_keras.data.parse_csv`.
        splits: already loaded splits (used by tests and the tuner); `data` is then ignored.
        overwrite: replace a finished run in `output_dir`, which stays as it is until the
            new one is complete.
        progress_seconds: at verbose 2, a progress line within an epoch this often; None
            for none.
        distribute: "none", "mirrored" or "multi-worker" (see `fer_keras.distribute`).
            A worker other than the chief trains in `DIR.worker-K.partial/`, removed at
            the end, and returns None.
        cpu_devices: split the CPU into this many logical devices first.
        stream: decode an image folder a batch at a time (`fer_keras.data.ImageFiles`).

    Raises:
        ValueError: for out-of-range settings, a finished run in `output_dir` without
            `overwrite`, a folder another fit holds (`RunFolderBusy`), or an unfinished
            run with other settings or data.
    """
    from fer_keras import data as fer_data

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
    from fer_keras.distribute import setup_distribution

    # Before any tensor exists: multi-worker TensorFlow configures its collectives here.
    distribution = setup_distribution(distribute, cpu_devices)
    if not distribution.is_chief:
        # Other workers train in step with the chief but keep only their resume state,
        # in a folder (and lock) of their own beside the run folder.
        worker_dir = output_dir.with_name(f"{output_dir.name}.worker-{distribution.worker}")
        staging = staging_folder(worker_dir)
        with lock_run_folder(worker_dir):
            _train_in(staging, output_dir, experiment_name, settings, data_path, seed, limit,
                      verbose, skip_bad_rows, splits, progress_seconds, distribution, stream)
            shutil.rmtree(staging, ignore_errors=True)
        return None
    staging = staging_folder(output_dir)
    with lock_run_folder(output_dir):
        _prepare_run_folder(output_dir, staging, overwrite)
        try:
            metrics = _train_in(staging, output_dir, experiment_name, settings, data_path,
                                seed, limit, verbose, skip_bad_rows, splits,
                                progress_seconds, distribution, stream)
        except BaseException:
            # A run stopped before its first epoch finished has nothing to resume: leave no
            # DIR.partial/ behind (one with a finished epoch stays, to resume from).
            with contextlib.suppress(OSError, ValueError):
                _remove_stale_staging(staging)
            raise
        _commit(staging, output_dir)
    print(f"Wrote {', '.join(sorted(p.name for p in output_dir.iterdir() if p.is_file()))} "
          f"to {output_dir}")
    return metrics


def _train_in(staging, output_dir, experiment_name, settings, data_path, seed, limit,
              verbose, skip_bad_rows, splits, progress_seconds, distribution, stream):
    """`train`'s work inside the staging folder, up to the last output file."""
    import keras
    import numpy as np

    from fer_keras import data as fer_data
    from fer_keras.augmentation import Augmentation
    from fer_keras.distribute import prepare_model
    from fer_keras.models import get_model, load_model, with_dtype_policy
    from fer_keras.results import (evaluate_splits, format_report, plot_confusion,
                                   plot_history, read_history, write_json)
    from fer_keras.training import (EpochTimer, ProgressLog, StopOnNaN, class_weights,
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
    resuming, finished, best_so_far = _resume_state(staging, config)
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    overrides = {
        "epochs": args.epochs, "batch_size": args.batch_size,
        "learning_rate": args.learning_rate, "weight_decay": args.weight_decay,
        "dropout_rate": args.dropout_rate, "label_smoothing": args.label_smoothing,
        "class_weight": args.class_weight, "optimizer": args.optimizer,
        "schedule": args.schedule, "warmup_epochs": args.warmup_epochs,
        "precision": args.precision, "protocol": args.protocol,
    }

    def body():
        hparams = None
        if args.hparams:
            hparams_path = Path(args.hparams)
            if not hparams_path.is_file():
                raise ValueError(f"--hparams file not found: {hparams_path}" if not
                                 hparams_path.exists() else
                                 f"--hparams {hparams_path} is not a regular file")
            try:
                hparams = json.loads(hparams_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ValueError(f"--hparams {hparams_path} is not valid JSON: {error}") from error
            if isinstance(hparams, dict) and "hyperparameters" in hparams:
                hparams = hparams["hyperparameters"]
            if not isinstance(hparams, dict):
                raise ValueError(
                    f"--hparams {hparams_path} must hold a JSON object of settings (e.g. "
                    f'{{"learning_rate": 0.001}}, or the tuner\'s best_hparams.json). '
                    f"Received: {json.dumps(hparams)[:80]}")
        train(args.experiment, data=args.data, output_dir=args.output_dir, seed=args.seed,
              limit=args.limit, overrides=overrides, hparams=hparams,
              verbose="auto" if args.verbose is None else args.verbose,
              skip_bad_rows=args.skip_bad_rows, overwrite=args.overwrite,
              progress_seconds=args.progress_seconds, distribute=args.distribute,
              cpu_devices=args.cpu_devices, stream=args.stream)

    from fer_keras.training import TrainingDiverged

    # train() prints how to resume on Ctrl-C itself.
    return run_command(body, failures=(TrainingDiverged,))


if __name__ == "__main__":
    entry_point(main)
