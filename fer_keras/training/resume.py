"""Resuming a killed run from its staging folder: the backup of its last finished epoch,
guarded against other settings or other data."""

import json
import shutil
import sys

from fer_keras.training.results import read_history

DATA_KEYS = ("data_fingerprint", "labels_fingerprint", "limit", "skip_bad_rows")
# How a run is spread over devices and read from disk changes neither its data nor its
# optimisation (the batch is global), so a run may resume with other devices or --stream.


RESUME_IGNORED_KEYS = ("command", "data_path", "labels_file", "distribute", "replicas",
                       "stream") + DATA_KEYS


def _recover_torn_backup(backup):
    """Falls back to the previous backup when the last one was cut off mid-write.

    A kill while `BackupAndRestore` writes `latest.weights.h5` leaves a file h5py cannot
    open. Keras would fall back to the `.bkp` copies itself, but only after we had read the
    newer epoch number; doing it here keeps history.csv and the weights in step.
    """

    import h5py  # Keras' own dependency: loaded only when a run resumes

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


def resume_state(folder, config):
    """Returns (resuming, finished_epochs, best_val_accuracy) and guards against mixing runs.

    Args:
        folder: the staging folder of the run.
        config: the settings this command would write to its `config.json`.
    """
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
