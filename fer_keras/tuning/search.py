"""Running a search: single-process, or Keras Tuner's chief and workers.

`run_job` checks the job, the search-state folder and the distribution variables, builds
the job's tuner over `fer_keras.tuning.hypermodel.FERHyperModel` and runs it. The search state
lives in `tuning/runs/JOB/`, so a killed search continues without repeating finished
trials. After each trial, `Progress` prints a line and (outside workers) rewrites the
result files through `fer_keras.tuning.results`.

Distributed mode is Keras Tuner's: `KERASTUNER_TUNER_ID` ("chief" for the process that
serves the oracle, "tuner0", "tuner1", ... for the workers), `KERASTUNER_ORACLE_IP` and
`KERASTUNER_ORACLE_PORT`, the same command everywhere.
"""

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from fer_keras.data import sources as fer_data
from fer_keras.training.settings import resolve_settings
from fer_keras.tuning.jobs import check_inside, load_job, planned_budget
from fer_keras.tuning.results import (
    RESULT_FILES,
    TRIAL_LOG_DIR,
    best_row,
    check_results_dir,
    collect_trials,
    format_duration,
    format_table,
    results_folder,
    train_command,
    write_results,
)
from fer_keras.utils.files import PARTIAL_SUFFIX, write_text_atomically

JOB_RECORD = "fer_keras_job.json"
DISTRIBUTED_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def distributed_role():
    """Reads Keras Tuner's distribution variables: `(role, tuner_id)`.

    `role` is "single" without `KERASTUNER_ORACLE_IP`, else "chief" when the tuner id
    contains "chief" (Keras Tuner's rule) and "worker" otherwise.
    """
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID") or "tuner0"
    if not os.environ.get("KERASTUNER_ORACLE_IP"):
        return "single", tuner_id
    missing = [name for name in DISTRIBUTED_ENV if not os.environ.get(name)]
    if missing:
        raise ValueError(f"KERASTUNER_ORACLE_IP is set but {', '.join(missing)} is not. A "
                         "distributed search needs all of " + ", ".join(DISTRIBUTED_ENV)
                         + " (KERASTUNER_TUNER_ID=chief on one process, tuner0, tuner1, ... "
                         "on the workers).")
    port = os.environ["KERASTUNER_ORACLE_PORT"]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"KERASTUNER_ORACLE_PORT must be a TCP port number. "
                         f"Received: KERASTUNER_ORACLE_PORT={port!r}")
    return ("chief" if "chief" in tuner_id else "worker"), tuner_id


def _check_port_free(host, port):
    # gRPC binds with SO_REUSEPORT, so a second chief on a busy port would start silently
    # and split the workers between two oracles; a plain bind detects the clash.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # SO_REUSEADDR ignores connections of a previous chief still in TIME_WAIT, while a
        # live listener still makes the bind fail.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as error:
            raise ValueError(f"The chief cannot listen on {host}:{port} ({error.strerror}). "
                             "Is another chief running? Pick a free KERASTUNER_ORACLE_PORT "
                             "and give the workers the same one.") from error


# What a search state holds: our job record (written first, when the tuner creates the
# folder, so it also marks the folder as ours) and its temporary copy, our trial log, and
# Keras Tuner's files: oracle.json, one `{}` state file per tuner id (tuner0.json,
# chief.json, ...) and a trial_ID/ folder per trial with its trial.json and checkpoint.
TEACHER_CACHE = "teacher_targets.npz"
"""The teachers' probabilities on the training faces, predicted once for a whole search."""
STATE_FILES = (JOB_RECORD, "oracle.json", TEACHER_CACHE)
TRIAL_FILES = ("trial.json", "build_config.json", "checkpoint.weights.h5", "checkpoint",
               "checkpoint.index")


def _is_tuner_state_file(entry):
    # Keras Tuner's Tuner.save() writes TUNER_ID.json holding an empty object.
    if entry.suffix != ".json" or entry.stat().st_size > 64:
        return False
    try:
        return json.loads(entry.read_text()) == {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def _is_state_entry(entry):
    name = entry.name
    if entry.is_symlink():
        return False
    if entry.is_dir():
        if name == TRIAL_LOG_DIR:
            return all(child.is_file() and child.suffix == ".jsonl"
                       for child in entry.iterdir())
        if name.startswith("trial_"):
            return all(child.is_file() and (child.name in TRIAL_FILES
                                            or child.name.startswith("checkpoint.data-"))
                       for child in entry.iterdir())
        return False
    if not entry.is_file():
        return False
    if name in STATE_FILES:
        return True
    if name.startswith(Path(JOB_RECORD).stem + ".") and name.endswith(".tmp"):
        return True  # Our record, cut off before its rename (as written before 0.2).
    if name.endswith(PARTIAL_SUFFIX) and any(name.startswith(f".{state}.")
                                             for state in STATE_FILES):
        return True  # A state file of ours cut off before its rename (`write_atomically`).
    return _is_tuner_state_file(entry)


def foreign_entries(runs_dir):
    """The entries of a search-state folder that no search of ours wrote (sorted names)."""
    return sorted(entry.name for entry in Path(runs_dir).iterdir()
                  if not _is_state_entry(entry))


def _remove_search_state(runs_dir, parent):
    """Deletes a search state, refusing any folder that holds something else."""
    check_inside(runs_dir, parent, "--runs-dir")
    foreign = foreign_entries(runs_dir)
    if foreign:
        _refuse_foreign(runs_dir, foreign)
    shutil.rmtree(runs_dir)


def _refuse_foreign(runs_dir, foreign):
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more"
                                      if len(foreign) > 3 else "")
    raise ValueError(
        f"{runs_dir} holds {shown}, which no search of fer_keras.tune wrote, so --overwrite "
        "deletes nothing there. Move those out of the folder, or pass a --runs-dir of the "
        "search's own.")


def check_folders(job, runs_dir=None, output_dir=None, overwrite=False):
    """Checks the job's folders without writing anything (also for `--dry-run`).

    Returns:
        `(runs_dir, runs_parent, output_dir)`, see `job_folders`.

    Raises:
        ValueError: for a folder outside its parent, a results folder whose files are not
            ours (`check_results_dir`), or, with `overwrite`, a search-state folder holding
            anything a search did not write.
    """
    runs_dir, runs_parent, output_dir = job_folders(job, runs_dir, output_dir)
    check_results_dir(output_dir)
    if overwrite and runs_dir.is_dir():
        foreign = foreign_entries(runs_dir)
        if foreign:
            _refuse_foreign(runs_dir, foreign)
    return runs_dir, runs_parent, output_dir


def _check_run_dir(runs_dir, job, limit, overwrite, parent=None):
    """Prepares the search-state folder, refusing one that is not a search state of ours.

    A new search starts only in a new or empty folder (or one holding only Keras Tuner's
    files); `overwrite` deletes only a folder every entry of which a search wrote. A search
    that is continued must have been started with the same job and data limit.
    """
    parent = Path(runs_dir).parent if parent is None else parent
    check_inside(runs_dir, parent, "--runs-dir")
    record = dict(job.record(), limit=limit)
    record_path = runs_dir / JOB_RECORD
    if runs_dir.exists() and not runs_dir.is_dir():
        raise ValueError(f"{runs_dir} is a file, not a folder; the search state needs a "
                         "folder. Pass another --runs-dir.")
    if overwrite and runs_dir.exists():
        _remove_search_state(runs_dir, parent)
    if record_path.exists():
        try:
            previous = json.loads(record_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{record_path} is damaged ({error}); it records the job that "
                             "started this search. Pass --overwrite to start over, or a new "
                             "--runs-dir.") from error
        changed = sorted(key for key in set(previous) | set(record)
                         if previous.get(key) != record.get(key))
        if changed:
            raise ValueError(
                f"{runs_dir} holds a search started with different settings "
                f"({', '.join(changed)}). Restore {job.path} (or the --limit) to continue it, "
                f"pass --runs-dir for a new search, or --overwrite to start over.")
        return
    if runs_dir.exists():
        foreign = foreign_entries(runs_dir)
        if foreign:
            raise ValueError(
                f"{runs_dir} is not empty and not a search state ({', '.join(foreign[:3])}"
                f"{' ...' if len(foreign) > 3 else ''}); a new search needs a folder of its "
                "own. Pass a --runs-dir naming a new or empty folder.")
    runs_dir.mkdir(parents=True, exist_ok=True)
    # Other machines may share the search state: no clean-up of their partial files.
    write_text_atomically(record_path, json.dumps(record, indent=2, sort_keys=True) + "\n",
                          clean_stale=False)


def job_folders(job, runs_dir=None, output_dir=None):
    """The job's search-state and results folders, each checked to lie inside its parent.

    Args:
        job: a `Job`.
        runs_dir: `--runs-dir`; default `runs/JOB` beside the job file.
        output_dir: `--output-dir`; default `results/JOB` beside the job file.

    Returns:
        `(runs_dir, runs_parent, output_dir)` as `Path`s.

    Raises:
        ValueError: when a folder resolves outside its parent (`check_inside`), or the
            two are the same folder or one lies inside the other.
    """
    runs_parent = Path(runs_dir).parent if runs_dir else job.path.parent / "runs"
    runs_dir = Path(runs_dir) if runs_dir else runs_parent / job.name
    output_dir = results_folder(job, output_dir)
    check_inside(runs_dir, runs_parent, "--runs-dir")
    runs, results = runs_dir.resolve(), output_dir.resolve()
    if runs == results or runs in results.parents or results in runs.parents:
        raise ValueError(f"The search state ({runs_dir}) and the results ({output_dir}) "
                         "must be separate folders, neither inside the other. Pass another "
                         "--runs-dir or --output-dir.")
    return runs_dir, runs_parent, output_dir


def _make_tuner_classes():
    # Lazy: Keras Tuner imports Keras, which `tune --help` must not.
    import keras_tuner

    class TrialRecorder:
        """Mixed in before a Keras Tuner class: logs and times each trial it runs.

        Each finished trial appends one line to `DIR/fer_keras_log/TUNER_ID.jsonl` (one file
        per process, so workers never write the same file) after the oracle has stored the
        trial, then calls `after_trial(record)`.
        """

        trial_log_dir = None
        after_trial = None
        idle_seconds = 1.0

        def pre_create_trial(self):
            # Hyperband answers "idle" while a round waits for other workers' trials;
            # Keras Tuner asks again at once, which would spin a CPU the trainers need.
            if getattr(self, "_waiting", False):
                time.sleep(self.idle_seconds)
            self._waiting = True
            super().pre_create_trial()

        def on_trial_begin(self, trial):
            self._waiting = False
            self._trial_started = time.time()
            super().on_trial_begin(trial)

        def on_trial_end(self, trial):
            seconds = time.time() - self._trial_started
            super().on_trial_end(trial)
            record = {"trial_id": trial.trial_id, "tuner_id": self.tuner_id,
                      "host": socket.gethostname(), "pid": os.getpid(),
                      "status": str(trial.status), "seconds": round(seconds, 2),
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            if self.trial_log_dir is not None:
                self.trial_log_dir.mkdir(parents=True, exist_ok=True)
                with open(self.trial_log_dir / f"{self.tuner_id}.jsonl", "a") as handle:
                    handle.write(json.dumps(record) + "\n")
            if self.after_trial is not None:
                self.after_trial(record)

    class HyperbandSearch(TrialRecorder, keras_tuner.Hyperband):
        pass

    class BayesianSearch(TrialRecorder, keras_tuner.BayesianOptimization):
        pass

    class RandomSearch(TrialRecorder, keras_tuner.RandomSearch):
        pass

    return {"hyperband": HyperbandSearch, "bayesian": BayesianSearch, "random": RandomSearch}


def make_tuner(job, hypermodel, runs_dir):
    """Builds the job's tuner on `runs_dir`, reloading a search already there."""
    budget = dict(job.budget)
    kwargs = dict(hypermodel=hypermodel, objective=job.objective, seed=job.seed,
                  directory=str(runs_dir.parent), project_name=runs_dir.name, overwrite=False,
                  executions_per_trial=budget.pop("executions_per_trial"),
                  max_consecutive_failed_trials=budget.pop("max_consecutive_failed_trials"))
    budget.pop("epochs", None)
    if budget.get("num_initial_points", 0) is None:
        budget.pop("num_initial_points")
    tuner = _make_tuner_classes()[job.tuner](**kwargs, **budget)
    tuner.trial_log_dir = runs_dir / TRIAL_LOG_DIR
    return tuner


class Progress:
    """Prints a line per finished trial and keeps the result files current."""

    def __init__(self, job, role, tuner_id, runs_dir, output_dir, defaults):
        # Lazy: the hypermodel imports Keras and Keras Tuner, which `tune --help` must not.
        from fer_keras.tuning.hypermodel import SEARCHABLE

        self.job, self.role, self.tuner_id = job, role, tuner_id
        self.runs_dir, self.output_dir, self.defaults = runs_dir, output_dir, defaults
        self.planned = planned_budget(job)
        self.names = [name for name in SEARCHABLE if name in job.search_space]

    def after_trial(self, record):
        rows = collect_trials(self.runs_dir, self.job)
        row = next((row for row in rows if row["trial_id"] == record["trial_id"]), None)
        values = ", ".join(f"{name}={row[name]:.3g}" for name in self.names) if row else ""
        score = (f"val_accuracy {row['val_accuracy']:.4f}"
                 if row and row["val_accuracy"] is not None else f"{record['status'].lower()}")
        line = (f"[{self.job.name}] trial {record['trial_id']} ({values}) {score} in "
                f"{format_duration(record['seconds'])}")
        if self.role == "worker":
            print(f"{line} on {self.tuner_id}", flush=True)
            return
        done = [row for row in rows if row["runs"]]
        epochs_done = sum(row["epochs_run"] for row in done)
        seconds = sum(row["seconds"] or 0.0 for row in done)
        trials, epochs = self.planned
        left = max(epochs - epochs_done, 0) * seconds / max(epochs_done, 1)
        best = best_row(rows, self.job.objective)
        best_text = (f"best {best['val_accuracy']:.4f} (trial {best['trial_id']})"
                     if best else "no completed trial yet")
        print(f"{line} | {len(done)}/{trials} trials, {epochs_done}/{epochs} epochs, "
              f"{best_text}, about {format_duration(left)} left", flush=True)
        write_results(rows, self.job, self.output_dir, self.defaults, self.planned)


def run_job(job_path, data=None, limit=None, output_dir=None, runs_dir=None,
            overwrite=False, verbose="auto", skip_bad_rows=False, splits=None,
            summary_only=False):
    """Runs (or continues) a search job and writes its results.

    Args:
        job_path: the TOML job file.
        data: FER2013 path (see `fer_keras.data.sources.resolve_data_path`).
        limit: keep at most this many rows per split.
        output_dir: results folder; default `results/JOB` beside the job file.
        runs_dir: search state; default `runs/JOB` beside the job file.
        overwrite: delete the search state first and start over (only a folder that
            holds nothing but a search state; anything else there is refused).
        verbose: Keras verbosity of each trial's training.
        skip_bad_rows: see `fer_keras.data.sources.parse_csv`.
        splits: already loaded splits (tests); `data` is then ignored.
        summary_only: only rewrite the results from the search state.

    Returns:
        The summary written to `trials.json`, or None on a distributed worker (the chief
        writes the results).
    """
    # Lazy: Keras (and the hypermodel, which imports it) must stay out of `tune --help`.
    import keras

    from fer_keras.tuning.hypermodel import FERHyperModel, steps_per_epoch

    job = load_job(job_path)
    role, tuner_id = distributed_role()
    runs_dir, runs_parent, output_dir = check_folders(job, runs_dir, output_dir, overwrite)
    planned = planned_budget(job)
    if summary_only:
        if not (runs_dir / JOB_RECORD).exists():
            raise ValueError(f"No search state in {runs_dir}. Run the job first (or pass "
                             "the --runs-dir it used).")
        hypermodel = FERHyperModel(job.experiment, job.search_space)
        summary = write_results(collect_trials(runs_dir, job), job, output_dir,
                                hypermodel.defaults, planned)
        print(format_table(summary["trials"], job))
        return summary
    if overwrite and role == "worker":
        raise ValueError("--overwrite deletes the shared search state; give it to the chief "
                         f"only. Received: KERASTUNER_TUNER_ID={tuner_id!r}")
    if role == "chief":
        _check_port_free(os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"])
    _check_run_dir(runs_dir, job, limit, overwrite, runs_parent)
    keras.utils.set_random_seed(job.seed)

    steps = 1
    if role != "chief":
        if splits is None:
            # Trials select on the experiment's own selection split (PublicTest under the
            # kaggle protocol), as its fit does.
            splits = fer_data.load_splits(fer_data.resolve_data_path(data),
                                          skip_bad_rows=skip_bad_rows, limit=limit,
                                          protocol=resolve_settings(job.experiment)["protocol"])

        batch_size = int(resolve_settings(job.experiment)["batch_size"])
        steps = steps_per_epoch(len(splits["train"][1]), batch_size)
    teachers = None
    if job.teachers and role != "chief":
        from fer_keras.training.distill import check_teachers, teacher_probabilities

        # Checked as fit checks them (protocol, label set), predicted once for all trials.
        settings = resolve_settings(job.experiment)
        fingerprints = check_teachers(job.teachers, settings)
        runs_dir.mkdir(parents=True, exist_ok=True)
        teachers = teacher_probabilities(job.teachers, splits["train"][0],
                                         cache=runs_dir / TEACHER_CACHE,
                                         fingerprints=fingerprints)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    hypermodel = FERHyperModel(job.experiment, job.search_space, steps_per_epoch=steps,
                               epochs=job.max_epochs, seed=job.seed, verbose=verbose,
                               teacher_probabilities=teachers)
    tuner = make_tuner(job, hypermodel, runs_dir)
    progress = Progress(job, role, tuner_id, runs_dir, output_dir, hypermodel.defaults)
    tuner.after_trial = progress.after_trial
    print(f"Job {job.name}: {job.experiment} with {job.tuner} over "
          f"{', '.join(job.search_space)}; about {planned[0]} trials, {planned[1]} epochs in "
          f"all; state in {runs_dir}, results in {output_dir}", flush=True)

    if role == "chief":
        address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
        print(f"Chief: serving the oracle at {address}. Start workers with the same command "
              "and KERASTUNER_TUNER_ID=tuner0, tuner1, ...; the chief exits once every "
              "worker has been told the search is over.", flush=True)
        tuner.search(verbose=1)
    else:
        if role == "worker":
            print(f"Worker {tuner_id}: asking the chief at {os.environ['KERASTUNER_ORACLE_IP']}:"
                  f"{os.environ['KERASTUNER_ORACLE_PORT']} for trials", flush=True)
        (x_train, y_train), validation = splits["train"], splits["validation"]
        # No verbose= here: Keras Tuner would apply it to its per-trial display too.
        tuner.search(x_train, y_train, validation_data=validation, epochs=job.max_epochs)
    if role == "worker":
        print(f"Worker {tuner_id}: the chief reports the search is over.", flush=True)
        return None
    rows = collect_trials(runs_dir, job)
    summary = write_results(rows, job, output_dir, hypermodel.defaults, planned)
    print(format_table(rows, job))
    print(f"{summary['completed_trials']} completed trials; wrote "
          f"{', '.join(name for name in RESULT_FILES if (output_dir / name).exists())} "
          f"to {output_dir}")
    if summary["best_trial"] is not None:
        print(f"Train the best setting: "
              f"{train_command(job, output_dir / 'best_hparams.json')}", flush=True)
    return summary


