"""Run a Keras Tuner search job over learning rate, weight decay and dropout.

Usage:

    python -m fer_keras.tune tuning/JOB.toml [--data PATH] [--limit N] [--output-dir DIR]
        [--runs-dir DIR] [--dry-run] [--summary-only] [--overwrite]
    python -m fer_keras.tune tuning/JOB.toml --compare [--data PATH]

A job file (TOML) names an experiment, the search-space bounds, the tuner ("hyperband" by
default, "bayesian" or "random"), the objective and the budget; see `tuning/smoke.toml`.
The file is checked before any data is read. The search state lives in `tuning/runs/JOB/`
(git-ignored): run the same command again after an interruption and the search continues
where it stopped, without repeating finished trials. Results go to `tuning/results/JOB/`:
`trials.csv`, `trials.json`, `accuracy_vs_hparams.png` and `best_hparams.json`, which
`python -m fer_keras.fit EXPERIMENT --hparams tuning/results/JOB/best_hparams.json` trains.
After a search, `--compare` trains the untuned experiment for as many epochs as the longest
trial (into `tuning/results/JOB/untuned/`) and writes `comparison.md`/`comparison.json`:
the study's row, the untuned experiment and the best trial side by side.

Distributed search uses Keras Tuner's chief/worker mode: set `KERASTUNER_TUNER_ID`
("chief" for the process that runs the oracle, "tuner0", "tuner1", ... for workers),
`KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT`, and run the same command everywhere.
The chief trains nothing; it exits and writes the results once every worker has been told
that the search is over.
"""

import argparse
import dataclasses
import json
import math
import os
import socket
import sys
import time
import tomllib
from pathlib import Path

from fer_keras.cli import entry_point, run_command


TUNERS = ("hyperband", "bayesian", "random")
OBJECTIVES = ("val_accuracy", "val_loss")
TOP_KEYS = ("experiment", "tuner", "objective", "seed", "search_space", "budget")
REQUIRED = object()
BUDGET_KEYS = {
    "hyperband": {"max_epochs": REQUIRED, "factor": 3, "hyperband_iterations": 1},
    "bayesian": {"max_trials": REQUIRED, "epochs": REQUIRED, "num_initial_points": None},
    "random": {"max_trials": REQUIRED, "epochs": REQUIRED},
}
COMMON_BUDGET_KEYS = {"executions_per_trial": 1, "max_consecutive_failed_trials": 3}
BUDGET_MINIMUM = {"factor": 2}
RESULT_FILES = ("trials.csv", "trials.json", "accuracy_vs_hparams.png", "best_hparams.json")
JOB_RECORD = "fer_keras_job.json"
TRIAL_LOG_DIR = "fer_keras_log"
DISTRIBUTED_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


@dataclasses.dataclass(frozen=True)
class Job:
    """A checked search job.

    Attributes:
        path: the job file.
        name: the job's name (the file name without `.toml`); it names the run and result
            folders.
        experiment: the experiment searched.
        tuner: "hyperband", "bayesian" or "random".
        objective: "val_accuracy" (maximised) or "val_loss" (minimised).
        seed: oracle and shuffle seed (a positive integer: Keras Tuner draws a random seed
            for 0).
        search_space: the checked search space (see `fer_keras.hypermodel`).
        budget: the tuner's budget keys with defaults filled in.
    """

    path: Path
    name: str
    experiment: str
    tuner: str
    objective: str
    seed: int
    search_space: dict
    budget: dict

    @property
    def max_epochs(self):
        """The longest training of one trial, in epochs."""
        return self.budget["max_epochs" if self.tuner == "hyperband" else "epochs"]

    def record(self):
        """The fields that define the search (what a resumed run must not change)."""
        return {"experiment": self.experiment, "tuner": self.tuner,
                "objective": self.objective, "seed": self.seed,
                "search_space": self.search_space, "budget": self.budget}


def _integer(value, where, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where} must be an integer >= {minimum}. Received: {where}={value!r}")
    return value


def load_job(path):
    """Reads and checks a job file; every problem names the file and the key.

    Args:
        path: a TOML job file.

    Returns:
        A `Job`.

    Raises:
        ValueError: for a missing or unparsable file, an unknown experiment, tuner,
            objective or key, a missing required key, a wrong type or an inverted range.
    """
    from fer_keras.experiments import get_experiment
    from fer_keras.hypermodel import check_search_space

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Job file not found: {path}. Job files live in tuning/, e.g. "
                         "tuning/smoke.toml.")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from error

    def fail(message):
        raise ValueError(f"{path}: {message}")

    for key in raw:
        if key not in TOP_KEYS:
            fail(f"unknown key {key!r}. A job file takes {', '.join(TOP_KEYS)}.")
    for key in ("experiment", "search_space", "budget"):
        if key not in raw:
            fail(f"missing required key {key!r}. See tuning/smoke.toml for a complete job.")
    experiment = raw["experiment"]
    try:
        get_experiment(experiment)
    except ValueError as error:
        fail(f"experiment: {error}")
    tuner = raw.get("tuner", "hyperband")
    if tuner not in TUNERS:
        fail(f"tuner must be one of {', '.join(TUNERS)}. Received: tuner={tuner!r}")
    objective = raw.get("objective", "val_accuracy")
    if objective not in OBJECTIVES:
        fail(f"objective must be one of {', '.join(OBJECTIVES)}. "
             f"Received: objective={objective!r}")
    try:
        seed = _integer(raw.get("seed", 1), "seed", 1)
        search_space = check_search_space(raw["search_space"])
    except ValueError as error:
        fail(str(error))

    budget_in = raw["budget"]
    if not isinstance(budget_in, dict):
        fail(f"budget must be a table ([budget]). Received: budget={budget_in!r}")
    allowed = dict(BUDGET_KEYS[tuner], **COMMON_BUDGET_KEYS)
    for key in budget_in:
        if key not in allowed:
            known = sorted({k for keys in BUDGET_KEYS.values() for k in keys})
            hint = (f"it does not apply to tuner {tuner!r}" if key in known else "unknown key")
            fail(f"budget.{key}: {hint}; tuner {tuner!r} takes {', '.join(allowed)}.")
    budget = {}
    for key, default in allowed.items():
        if key not in budget_in:
            if default is REQUIRED:
                fail(f"missing required key budget.{key} (tuner {tuner!r} needs "
                     + ", ".join(k for k, v in allowed.items() if v is REQUIRED) + ").")
            budget[key] = default
            continue
        try:
            budget[key] = _integer(budget_in[key], f"budget.{key}", BUDGET_MINIMUM.get(key, 1))
        except ValueError as error:
            fail(str(error))
    return Job(path=path, name=path.stem, experiment=experiment, tuner=tuner,
               objective=objective, seed=seed, search_space=search_space, budget=budget)


def hyperband_plan(max_epochs, factor=3, iterations=1):
    """The rounds a Hyperband search runs, by Keras Tuner's formulas.

    Returns:
        A list of `(bracket, round, trials, epochs, initial_epoch)`: each round trains
        `trials` models from `initial_epoch` to `epochs` (later rounds continue the best
        models of the round before).
    """
    brackets, epochs = 0, max_epochs
    while epochs >= 1:
        epochs /= factor
        brackets += 1
    final_size = math.ceil(1 + math.log(max_epochs, factor))
    plan = []
    for _ in range(iterations):
        for bracket in reversed(range(brackets)):
            for round_num in range(bracket + 1):
                shrink = factor ** (bracket - round_num)
                plan.append((bracket, round_num,
                             math.ceil(final_size / (bracket + 1) * shrink),
                             math.ceil(max_epochs / shrink),
                             0 if round_num == 0 else math.ceil(max_epochs / (shrink * factor))))
    return plan


def planned_budget(job):
    """Returns `(trials, epochs)`: how many trials the job runs and the epochs they train."""
    executions = job.budget["executions_per_trial"]
    if job.tuner == "hyperband":
        plan = hyperband_plan(job.budget["max_epochs"], job.budget["factor"],
                              job.budget["hyperband_iterations"])
        return (sum(size for _, _, size, _, _ in plan),
                executions * sum(size * (end - start) for _, _, size, end, start in plan))
    return job.budget["max_trials"], executions * job.budget["max_trials"] * job.budget["epochs"]


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


def _check_run_dir(runs_dir, job, limit, overwrite):
    """Refuses to continue a search that was started with another job or data limit."""
    import shutil

    record = dict(job.record(), limit=limit)
    record_path = runs_dir / JOB_RECORD
    if overwrite and runs_dir.exists():
        shutil.rmtree(runs_dir)
    if record_path.exists():
        previous = json.loads(record_path.read_text())
        changed = sorted(key for key in set(previous) | set(record)
                         if previous.get(key) != record.get(key))
        if changed:
            raise ValueError(
                f"{runs_dir} holds a search started with different settings "
                f"({', '.join(changed)}). Restore {job.path} (or the --limit) to continue it, "
                f"pass --runs-dir for a new search, or --overwrite to start over.")
        return
    runs_dir.mkdir(parents=True, exist_ok=True)
    partial = record_path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    partial.replace(record_path)


def _make_tuner_classes():
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


def _mean(value):
    if isinstance(value, list):
        return sum(value) / len(value) if value else None
    return value


def _metric_at(metrics, name, step):
    observations = metrics.get(name, {}).get("observations", [])
    for observation in observations:
        if observation.get("step") == step:
            return _mean(observation.get("value"))
    return None


def collect_trials(runs_dir, job):
    """Reads every trial of a search from disk (works during and after a search).

    Returns:
        A list of dicts in trial order: trial_id, status, the searched hyperparameters,
        val_accuracy and val_loss at the best epoch, best_epoch (counted from the model's
        first epoch, also for continued trials), epochs (the model's total
        after this trial), epochs_run (trained in this trial; Hyperband continues earlier
        trials), from_trial, seconds, worker and runs (finished runs of this trial id; 1
        unless it was retried after an interruption).
    """
    from fer_keras.hypermodel import SEARCHABLE

    runs_dir = Path(runs_dir)
    runs = {}
    for log in sorted((runs_dir / TRIAL_LOG_DIR).glob("*.jsonl")):
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # A line cut short by a kill.
            runs.setdefault(record["trial_id"], []).append(record)
    rows = []
    for path in sorted(runs_dir.glob("trial_*/trial.json")):
        try:
            trial = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue  # Being rewritten by a running search; the next summary has it.
        values = trial["hyperparameters"]["values"]
        metrics = trial.get("metrics", {}).get("metrics", {})
        best_step = trial.get("best_step")
        ran = runs.get(trial["trial_id"], [])
        epochs = values.get("tuner/epochs", job.max_epochs)
        started = values.get("tuner/initial_epoch", 0)
        row = {"trial_id": trial["trial_id"], "status": trial["status"]}
        # Six significant digits: a stepped dropout of 0.30000000000000004 reads 0.3.
        row.update({name: float(f"{values[name]:.6g}") if values.get(name) is not None else None
                    for name in SEARCHABLE if name in job.search_space})
        complete = trial["status"] == "COMPLETED" and best_step is not None
        row.update(
            val_accuracy=_metric_at(metrics, "val_accuracy", best_step) if complete else None,
            val_loss=_metric_at(metrics, "val_loss", best_step) if complete else None,
            # Keras Tuner counts the best step within this trial's own training.
            best_epoch=started + int(best_step) + 1 if complete else None,
            epochs=epochs, epochs_run=epochs - started,
            from_trial=values.get("tuner/trial_id"),
            seconds=ran[-1]["seconds"] if ran else None,
            worker=ran[-1]["tuner_id"] if ran else None,
            runs=len(ran))
        rows.append(row)
    return rows


def best_row(rows, objective="val_accuracy"):
    """The completed trial with the best objective (ties: the earlier trial), or None."""
    done = [row for row in rows if row["status"] == "COMPLETED" and row[objective] is not None]
    if not done:
        return None
    sign = 1 if objective == "val_accuracy" else -1
    return max(done, key=lambda row: (sign * row[objective], -rows.index(row)))


def _duration(seconds):
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 \
        else f"{seconds // 60}m{seconds % 60:02d}s"


def format_table(rows, job):
    """The trials as a plain-text table, best objective first."""
    from fer_keras.hypermodel import SEARCHABLE

    names = [name for name in SEARCHABLE if name in job.search_space]
    header = ["trial", *names, "val_acc", "best_ep", "epochs", "time", "worker", "status"]
    sign = -1 if job.objective == "val_accuracy" else 1
    ordered = sorted(rows, key=lambda row: (row[job.objective] is None,
                                            sign * (row[job.objective] or 0.0)))
    lines = []
    for row in ordered:
        cells = [row["trial_id"]]
        cells += [f"{row[name]:.3g}" if name != "dropout_rate" else f"{row[name]:.2f}"
                  for name in names]
        cells += [f"{row['val_accuracy']:.4f}" if row["val_accuracy"] is not None else "-",
                  str(row["best_epoch"] or "-"),
                  f"{row['epochs_run']}/{row['epochs']}" if row["from_trial"] else
                  str(row["epochs"]),
                  _duration(row["seconds"]), row["worker"] or "-", row["status"].lower()]
        lines.append(cells)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    text = ["  ".join(str(cell).rjust(width) for cell, width in zip(cells, widths))
            for cells in [header, *lines]]
    return "\n".join(text)


def plot_trials(rows, job, path, defaults=None):
    """Validation accuracy against each searched hyperparameter, one panel each."""
    from fer_keras.hypermodel import SEARCHABLE
    from fer_keras.results import _pyplot

    plt = _pyplot()
    from matplotlib import ticker

    names = [name for name in SEARCHABLE if name in job.search_space]
    done = [row for row in rows if row["val_accuracy"] is not None]
    best = best_row(rows, job.objective)
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    epochs = [row["epochs"] for row in done]
    # Colour shows the epochs behind each score where trials differ (Hyperband's rounds).
    colours = dict(c=epochs, cmap="viridis", vmin=min(epochs), vmax=max(epochs)) \
        if len(set(epochs)) > 1 else dict(color="tab:blue")
    for axis, name in zip(axes[0], names):
        points = axis.scatter([row[name] for row in done],
                              [100 * row["val_accuracy"] for row in done],
                              s=36, edgecolors="black", linewidths=0.4, **colours)
        if best is not None:
            axis.scatter([best[name]], [100 * best["val_accuracy"]], marker="*", s=220,
                         facecolors="none", edgecolors="red", linewidths=1.2,
                         label=f"best (trial {best['trial_id']})")
        if defaults and name in defaults:
            axis.axvline(defaults[name], color="gray", linestyle="--", linewidth=1,
                         label="experiment's value")
        low, high = job.search_space[name]["min"], job.search_space[name]["max"]
        if name == "learning_rate":
            axis.set_xscale("log")
            axis.set_xlim(low / 1.4, high * 1.4)
            axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        elif name == "weight_decay":
            # A symmetric-log axis shows "no weight decay" at 0 beside the log-spaced values.
            axis.set_xscale("symlog", linthresh=low)
            axis.set_xlim(-0.5 * low, high * 1.6)
            axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        else:
            axis.set_xlim(low - 0.06 * (high - low), high + 0.06 * (high - low))
        axis.set_xlabel(name)
        axis.set_ylabel("best validation accuracy (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    if len(set(epochs)) > 1:
        figure.colorbar(points, ax=axes[0].tolist(), label="epochs trained", fraction=0.03)
    figure.suptitle(f"{job.name}: {job.experiment}, {job.tuner}, {len(done)} completed trials",
                    fontsize=10)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def write_results(rows, job, output_dir, defaults=None, planned=None):
    """Writes trials.csv, trials.json, the plot and best_hparams.json; returns the summary."""
    import csv

    from fer_keras.hypermodel import SEARCHABLE
    from fer_keras.results import write_json

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    best = best_row(rows, job.objective)
    columns = list(rows[0]) if rows else ["trial_id"]
    with open(output_dir / "trials.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "job": str(job.path), "experiment": job.experiment, "tuner": job.tuner,
        "objective": job.objective, "search_space": job.search_space, "budget": job.budget,
        "planned_trials": planned[0] if planned else None,
        "planned_epochs": planned[1] if planned else None,
        "completed_trials": sum(row["status"] == "COMPLETED" for row in rows),
        "trial_seconds": round(sum(row["seconds"] or 0.0 for row in rows), 1),
        "experiment_defaults": defaults,
        "best_trial": best["trial_id"] if best else None,
        "trials": rows,
    }
    write_json(output_dir / "trials.json", summary)
    if rows:
        plot_trials(rows, job, output_dir / "accuracy_vs_hparams.png", defaults)
    best_path = output_dir / "best_hparams.json"
    if best is not None:
        hyperparameters = {name: best[name] for name in SEARCHABLE if name in job.search_space}
        write_json(best_path, {
            "experiment": job.experiment, "job": str(job.path), "trial_id": best["trial_id"],
            "objective": job.objective, "val_accuracy": best["val_accuracy"],
            "val_loss": best["val_loss"], "trial_epochs": best["epochs"],
            "hyperparameters": hyperparameters,
            "train_with": f"python -m fer_keras.fit {job.experiment} --hparams {best_path}",
        })
    return summary


UNTUNED_DIR = "untuned"
COMPARISON_FILES = ("comparison.json", "comparison.md")


def compare_untuned(job_path, data=None, output_dir=None, verbose="auto",
                    skip_bad_rows=False, splits=None, limit=None):
    """Trains the untuned experiment as long as the search's longest trial and compares.

    The untuned run is `python -m fer_keras.fit EXPERIMENT --epochs MAX_EPOCHS` with the
    job's seed, written to `results/JOB/untuned/` (it resumes like any fit run, and a
    finished one is reused). The comparison puts three validation accuracies side by side:
    the study's Table 1 row, the untuned experiment and the best trial of the search, both
    of ours trained for the same number of epochs through the same compile path.

    Returns:
        The dict written to `comparison.json` (`comparison.md` holds the same as a table).

    Raises:
        ValueError: if the search has no completed trial yet.
    """
    from fer_keras.experiments import get_experiment
    from fer_keras.fit import train
    from fer_keras.results import write_json

    job = load_job(job_path)
    output_dir = Path(output_dir or job.path.parent / "results" / job.name)
    trials_path = output_dir / "trials.json"
    if not trials_path.exists():
        raise ValueError(f"No search results in {output_dir}: run the search first "
                         f"(python -m fer_keras.tune {job.path}), then --compare.")
    summary = json.loads(trials_path.read_text())
    best = best_row(summary["trials"], job.objective)
    if best is None:
        raise ValueError(f"{trials_path} has no completed trial yet; let the search run "
                         f"(python -m fer_keras.tune {job.path}), then --compare.")
    epochs = job.max_epochs
    untuned_dir = output_dir / UNTUNED_DIR
    metrics_path = untuned_dir / "metrics.json"
    reuse = False
    if metrics_path.exists() and not (untuned_dir / "backup").exists():
        config = json.loads((untuned_dir / "config.json").read_text())
        reuse = (config.get("epochs") == epochs and config.get("seed") == job.seed
                 and config.get("limit") == limit)
    if reuse:
        print(f"Using the finished untuned run in {untuned_dir}", flush=True)
        metrics = json.loads(metrics_path.read_text())
    else:
        print(f"Training the untuned {job.experiment} for {epochs} epochs (the search's "
              f"longest trial) into {untuned_dir}", flush=True)
        metrics = train(job.experiment, data=data, output_dir=untuned_dir, seed=job.seed,
                        limit=limit, overrides={"epochs": epochs}, verbose=verbose,
                        skip_bad_rows=skip_bad_rows, splits=splits)
    experiment = get_experiment(job.experiment)
    study = experiment.study
    validation = metrics["splits"]["validation"]["accuracy"]
    from fer_keras.hypermodel import SEARCHABLE

    defaults = summary["experiment_defaults"] or {}
    names = [name for name in SEARCHABLE if name in defaults and name in best]
    comparison = {
        "job": str(job.path), "experiment": job.experiment, "epochs": epochs,
        "study": None if study is None else {
            "row": study.row, "val_accuracy": study.val_accuracy / 100.0,
            "epoch": study.epoch},
        "untuned": {
            "hyperparameters": {name: defaults[name] for name in names},
            "val_accuracy": validation, "best_epoch": metrics["best_epoch"],
            "epochs": metrics["epochs_run"], "train_minutes": metrics["train_minutes"],
            "private_test_accuracy": metrics["splits"].get("private_test", {}).get("accuracy"),
            "run": str(untuned_dir)},
        "tuned": {
            "trial_id": best["trial_id"], "hyperparameters": {name: best[name] for name in names},
            "val_accuracy": best["val_accuracy"], "best_epoch": best["best_epoch"],
            "epochs": best["epochs"]},
        "search": {"completed_trials": summary["completed_trials"],
                   "trial_minutes": round(summary["trial_seconds"] / 60.0, 1)},
    }
    comparison["tuned_minus_untuned_points"] = round(
        100.0 * (best["val_accuracy"] - validation), 2)
    if study is not None:
        comparison["tuned_minus_study_points"] = round(
            100.0 * best["val_accuracy"] - study.val_accuracy, 2)
    write_json(output_dir / "comparison.json", comparison)
    text = format_comparison(comparison)
    (output_dir / "comparison.md").write_text(text + "\n")
    print(text, flush=True)
    return comparison


def format_hyperparameters(hyperparameters):
    """`{"learning_rate": 0.00165, ...}` as "learning_rate 0.00165, ..." for tables."""
    return ", ".join(f"{name} {value:.3g}" for name, value in hyperparameters.items())


def format_comparison(comparison):
    """`comparison.json` as a Markdown table."""
    epochs = comparison["epochs"]
    lines = [f"# {comparison['experiment']}: tuned against untuned and the study",
             "",
             f"Generated by `python -m fer_keras.tune {comparison['job']} --compare`. Both of "
             f"our rows train for at most {epochs} epochs on the same training split and "
             f"select their best epoch on the same validation split.",
             "",
             "| setting | hyperparameters | epochs | best epoch | validation accuracy |",
             "|---|---|---|---|---|"]
    study = comparison["study"]
    if study is not None:
        lines.append(f"| study, Table 1 row {study['row']} | as reported | {study['epoch']} | "
                     f"- | {100 * study['val_accuracy']:.2f}% |")
    untuned, tuned = comparison["untuned"], comparison["tuned"]
    lines.append(f"| untuned (the experiment's own values) | "
                 f"{format_hyperparameters(untuned['hyperparameters'])}"
                 f" | {untuned['epochs']} | {untuned['best_epoch']} | "
                 f"{100 * untuned['val_accuracy']:.2f}% |")
    lines.append(f"| tuned (best trial, {tuned['trial_id']}) | "
                 f"{format_hyperparameters(tuned['hyperparameters'])}"
                 f" | {tuned['epochs']} | {tuned['best_epoch']} | "
                 f"{100 * tuned['val_accuracy']:.2f}% |")
    lines += ["", f"Tuned minus untuned: {comparison['tuned_minus_untuned_points']:+.2f} points."]
    if "tuned_minus_study_points" in comparison:
        lines.append(f"Tuned minus the study's row: "
                     f"{comparison['tuned_minus_study_points']:+.2f} points (the study trained "
                     f"{study['epoch']} epochs).")
    search = comparison["search"]
    lines.append(f"The search: {search['completed_trials']} completed trials, "
                 f"{search['trial_minutes']} minutes of training.")
    return "\n".join(lines)


class Progress:
    """Prints a line per finished trial and keeps the result files current."""

    def __init__(self, job, role, tuner_id, runs_dir, output_dir, defaults):
        from fer_keras.hypermodel import SEARCHABLE

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
                f"{_duration(record['seconds'])}")
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
              f"{best_text}, about {_duration(left)} left", flush=True)
        write_results(rows, self.job, self.output_dir, self.defaults, self.planned)


def run_job(job_path, data=None, limit=None, output_dir=None, runs_dir=None,
            overwrite=False, verbose="auto", skip_bad_rows=False, splits=None,
            summary_only=False):
    """Runs (or continues) a search job and writes its results.

    Args:
        job_path: the TOML job file.
        data: FER2013 path (see `fer_keras.data.resolve_data_path`).
        limit: keep at most this many rows per split.
        output_dir: results folder; default `results/JOB` beside the job file.
        runs_dir: search state; default `runs/JOB` beside the job file.
        overwrite: delete the search state first and start over.
        verbose: Keras verbosity of each trial's training.
        skip_bad_rows: see `fer_keras.data.parse_csv`.
        splits: already loaded splits (tests); `data` is then ignored.
        summary_only: only rewrite the results from the search state.

    Returns:
        The summary written to `trials.json`, or None on a distributed worker (the chief
        writes the results).
    """
    import keras

    from fer_keras import data as fer_data
    from fer_keras.hypermodel import FERHyperModel, steps_per_epoch

    job = load_job(job_path)
    role, tuner_id = distributed_role()
    runs_dir = Path(runs_dir or job.path.parent / "runs" / job.name)
    output_dir = Path(output_dir or job.path.parent / "results" / job.name)
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
    _check_run_dir(runs_dir, job, limit, overwrite)
    keras.utils.set_random_seed(job.seed)

    steps = 1
    if role != "chief":
        if splits is None:
            splits = fer_data.load_splits(fer_data.resolve_data_path(data),
                                          skip_bad_rows=skip_bad_rows, limit=limit)
        from fer_keras.fit import resolve_settings

        batch_size = int(resolve_settings(job.experiment)["batch_size"])
        steps = steps_per_epoch(len(splits["train"][1]), batch_size)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    hypermodel = FERHyperModel(job.experiment, job.search_space, steps_per_epoch=steps,
                               epochs=job.max_epochs, seed=job.seed, verbose=verbose)
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
        print(f"Train the best setting: python -m fer_keras.fit {job.experiment} "
              f"--hparams {output_dir / 'best_hparams.json'}", flush=True)
    return summary


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m fer_keras.tune", description=__doc__.split("\n\n")[0],
        epilog="Distributed: run the same command with KERASTUNER_TUNER_ID=chief on one "
        "process and tuner0, tuner1, ... on the workers, all with KERASTUNER_ORACLE_IP and "
        "KERASTUNER_ORACLE_PORT set to the chief's address.")
    parser.add_argument("job", help="TOML job file, e.g. tuning/deep_emotion.toml")
    parser.add_argument("--data", help="FER2013 CSV (.csv/.csv.gz) or image folder; default "
                        "$FER2013_PATH, then data/fer2013.csv[.gz]")
    parser.add_argument("--limit", type=int, help="use at most N rows of each split "
                        "(quick checks; results are not comparable)")
    parser.add_argument("--output-dir", help="results folder; default results/JOB beside "
                        "the job file")
    parser.add_argument("--runs-dir", help="search state (resumable); default runs/JOB "
                        "beside the job file")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the search state and start over")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the job file, print the planned trials and epochs, exit")
    parser.add_argument("--summary-only", action="store_true",
                        help="rewrite the results from the search state without training")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="drop malformed CSV rows instead of stopping at the first one")
    parser.add_argument("--compare", action="store_true",
                        help="after the search: train the untuned experiment for the "
                        "longest trial's epochs and compare it, the best trial and the "
                        "study's row (writes comparison.json/.md)")
    parser.add_argument("--verbose", type=int, choices=[0, 1, 2],
                        help="Keras verbosity per trial; default: progress bar on a "
                        "terminal, one line per epoch otherwise")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        if args.dry_run:
            job = load_job(args.job)
            trials, epochs = planned_budget(job)
            print(f"{job.path}: experiment {job.experiment}, tuner {job.tuner}, objective "
                  f"{job.objective}; about {trials} trials training {epochs} epochs in all.")
            if job.tuner == "hyperband":
                for bracket, round_num, size, end, start in hyperband_plan(
                        job.budget["max_epochs"], job.budget["factor"],
                        job.budget["hyperband_iterations"]):
                    print(f"  bracket {bracket} round {round_num}: {size} trials, epochs "
                          f"{start}->{end}")
            return
        verbose = "auto" if args.verbose is None else args.verbose
        if args.compare:
            compare_untuned(args.job, data=args.data, output_dir=args.output_dir,
                            verbose=verbose, skip_bad_rows=args.skip_bad_rows,
                            limit=args.limit)
            return
        run_job(args.job, data=args.data, limit=args.limit, output_dir=args.output_dir,
                runs_dir=args.runs_dir, overwrite=args.overwrite, verbose=verbose,
                skip_bad_rows=args.skip_bad_rows, summary_only=args.summary_only)

    return run_command(body, interrupted="Interrupted. Run the same command again to "
                       "continue; finished trials (and finished epochs of --compare) are kept.")


if __name__ == "__main__":
    entry_point(main)
