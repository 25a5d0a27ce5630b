"""The run-folder transaction: a run trains in `DIR.partial/` under the lock `.DIR.lock` and
replaces `DIR` as a whole once complete, so a crash or a bad flag never leaves half a run
where a finished one was, and no folder holding files that are not a run's is replaced.

`fit` publishes its runs this way; `ensemble`, `tta` and `rebalance` through
`write_run_folder`.
"""

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

STAGING_SUFFIX = ".partial"


RETIRED_SUFFIX = ".replaced"


RUN_ENTRIES = frozenset({"model.keras", "history.csv", "config.json", "metrics.json",
                         "learning_curves.png", "confusion_matrix.png", "backup",
                         "model.tmp.keras", "tau_sweep.png", "reliability.png"})
"""What fit (and the commands that publish run folders the same way: ensemble, tta,
rebalance, calibrate) write into a run folder. A folder holding anything else is never replaced, not
even with --overwrite: it holds files that are not ours."""


class RunFolderBusy(ValueError):
    """Raised when another process holds the lock of a run folder."""


def staging_folder(output_dir: str | os.PathLike) -> Path:
    """Where a run into `output_dir` trains (and resumes) until it is complete."""
    output_dir = Path(output_dir)
    return output_dir.with_name(output_dir.name + STAGING_SUFFIX)


@contextlib.contextmanager
def lock_run_folder(output_dir: str | os.PathLike) -> Iterator[Path]:
    """Holds an exclusive lock on a run folder for the life of the block.

    The lock is `fcntl.flock` on `.NAME.lock` beside the folder, not inside it, since a
    complete run replaces the folder as a whole. The kernel drops the lock when the process
    ends, however it ends, so a killed run never leaves its folder locked; a clean exit also
    removes the file.

    Raises:
        RunFolderBusy: if another process holds the lock.
    """
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


def run_folder_path(output_dir: str | os.PathLike, flag: str = "--output-dir") -> Path:
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


def check_output_folder(output_dir: str | os.PathLike, overwrite: bool = False,
                        flag: str = "--output-dir") -> None:
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


def remove_stale_staging(staging: Path) -> None:
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


def refuse_finished_run(output_dir: str | os.PathLike, overwrite: bool = False,
                        flag: str = "--output") -> None:
    """Raises a `ValueError` when `output_dir` cannot take a new run (a finished run without
    `overwrite`, files that are not a run's, a file, an unwritable place; see
    `check_output_folder`).

    Commands that spend minutes before writing call it first too, to fail before that work.
    """
    check_output_folder(run_folder_path(output_dir, flag), overwrite, flag)


def write_run_folder(output_dir: str | os.PathLike, write: Callable[[Path], object],
                     overwrite: bool = False, flag: str = "--output") -> None:
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
        commit_run(staging, output_dir)


def prepare_run_folder(output_dir: Path, staging: Path, overwrite: bool) -> None:
    """Settles what a crash may have left and refuses to replace a finished run by accident.

    Runs under the folder's lock, before anything else is read or written.
    """
    _settle_swap(output_dir)
    check_output_folder(output_dir, overwrite)
    remove_stale_staging(staging)
    if (output_dir / "metrics.json").exists() or not output_dir.exists():
        return
    if not staging.exists() and _is_unfinished_run(output_dir):
        # Earlier versions trained inside the run folder itself; a run killed that way moves
        # to the staging folder and resumes there like any other.
        print(f"Moving the unfinished run in {output_dir} to {staging} to resume it there.",
              flush=True)
        output_dir.rename(staging)


def commit_run(staging: Path, output_dir: Path) -> None:
    """Moves a complete run from its staging folder into `output_dir`.

    Replacing a previous run takes two renames; `prepare_run_folder` settles a crash
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
