"""What a search leaves behind: its trials read from disk, the result files, the comparison.

`collect_trials` reads every trial from a search-state folder (during or after a search,
from any number of workers). `write_results` turns them into `trials.csv`, `trials.json`,
`accuracy_vs_hparams.png` and `best_hparams.json`. `compare_untuned` (`tune --compare`)
trains the untuned experiment as long as the search's longest trial and writes
`comparison.json` and `comparison.md` beside them.
"""

import csv
import json
import shlex
from pathlib import Path

from fer_keras.training.experiments import get_experiment
from fer_keras.training.loop import train
from fer_keras.training.results import _pyplot, write_json
from fer_keras.training.run_folder import RUN_ENTRIES
from fer_keras.tuning.jobs import check_inside, load_job
from fer_keras.utils.files import write_atomically

RESULT_FILES = ("trials.csv", "trials.json", "accuracy_vs_hparams.png", "best_hparams.json")
UNTUNED_DIR = "untuned"
COMPARISON_FILES = ("comparison.json", "comparison.md")
# Each process of a search appends its finished trials to TRIAL_LOG_DIR/TUNER_ID.jsonl
# inside the search state; collect_trials reads the seconds and the worker from there.
TRIAL_LOG_DIR = "fer_keras_log"


def results_folder(job, output_dir=None):
    """The job's results folder (`--output-dir`, default `results/JOB` beside the job file),
    checked to lie strictly inside its parent (`fer_keras.tuning.jobs.check_inside`)."""
    parent = Path(output_dir).parent if output_dir else job.path.parent / "results"
    folder = Path(output_dir) if output_dir else parent / job.name
    return check_inside(folder, parent, "--output-dir")


def _is_our_summary(path):
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(summary, dict) and isinstance(summary.get("trials"), list)


def check_results_dir(output_dir):
    """Refuses a results folder where writing the results would replace someone's files.

    The folder may be new, or hold anything else beside our files; but a file named like
    one of ours (`RESULT_FILES`, `COMPARISON_FILES`) is replaced only when the folder's
    `trials.json` is a summary this module wrote (it is always written first).
    """
    output_dir = Path(output_dir)
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise ValueError(f"{output_dir} is a file, not a folder; the results need a folder. "
                         "Pass another --output-dir.")
    if _is_our_summary(output_dir / "trials.json"):
        return
    clashes = [name for name in (*RESULT_FILES, *COMPARISON_FILES)
               if (output_dir / name).exists()]
    if clashes:
        raise ValueError(
            f"{output_dir} holds {', '.join(clashes)}, which the tuner did not write (no "
            "trials.json of a search beside them), so nothing was replaced. Move them out, "
            "or pass another --output-dir.")


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
    # Lazy: the hypermodel imports Keras and Keras Tuner, which `tune --help` must not.
    from fer_keras.tuning.hypermodel import SEARCHABLE

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


def format_duration(seconds):
    """Seconds as "4m05s" or "1h02m"; "-" for None."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 \
        else f"{seconds // 60}m{seconds % 60:02d}s"


def train_command(job, best_path):
    """The `fit` command line that trains the job's best setting (with its teachers)."""
    words = ["python", "-m", "fer_keras.fit", job.experiment]
    if job.teachers:
        words += ["--teachers", *job.teachers]
    return shlex.join(words + ["--hparams", str(best_path)])


def format_table(rows, job):
    """The trials as a plain-text table, best objective first."""
    # Lazy: the hypermodel imports Keras and Keras Tuner, which `tune --help` must not.
    from fer_keras.tuning.hypermodel import SEARCHABLE

    names = [name for name in SEARCHABLE if name in job.search_space]
    header = ["trial", *names, "val_acc", "best_ep", "epochs", "time", "worker", "status"]
    sign = -1 if job.objective == "val_accuracy" else 1
    ordered = sorted(rows, key=lambda row: (row[job.objective] is None,
                                            sign * (row[job.objective] or 0.0)))
    lines = []
    for row in ordered:
        cells = [row["trial_id"]]
        cells += [f"{row[name]:.2f}" if name in ("dropout_rate", "distill_weight")
                  else f"{row[name]:.3g}" for name in names]
        cells += [f"{row['val_accuracy']:.4f}" if row["val_accuracy"] is not None else "-",
                  str(row["best_epoch"] or "-"),
                  f"{row['epochs_run']}/{row['epochs']}" if row["from_trial"] else
                  str(row["epochs"]),
                  format_duration(row["seconds"]), row["worker"] or "-",
                  row["status"].lower()]
        lines.append(cells)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    text = ["  ".join(str(cell).rjust(width) for cell, width in zip(cells, widths))
            for cells in [header, *lines]]
    return "\n".join(text)


def plot_trials(rows, job, path, defaults=None):
    """Validation accuracy against each searched hyperparameter, one panel each."""
    # Lazy: the hypermodel imports Keras and Keras Tuner, which `tune --help` must not.
    from fer_keras.tuning.hypermodel import SEARCHABLE

    plt = _pyplot()
    # Lazy: Matplotlib is loaded only to plot (`_pyplot` picks its backend first).
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
        if name in ("learning_rate", "distill_temperature"):
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
    # Lazy: the hypermodel imports Keras and Keras Tuner, which `tune --help` must not.
    from fer_keras.tuning.hypermodel import SEARCHABLE

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    best = best_row(rows, job.objective)
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
    # trials.json goes first, whole or not at all: it is what marks the folder as ours
    # (`check_results_dir`), so a search killed while writing can still be continued.
    write_atomically(output_dir / "trials.json", lambda path: write_json(path, summary),
                     clean_stale=False)
    columns = list(rows[0]) if rows else ["trial_id"]
    with open(output_dir / "trials.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
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
            "train_with": train_command(job, best_path),
        })
    return summary


def _check_untuned_folder(untuned_dir):
    """Refuses an untuned-run folder holding files that `fit` did not write."""
    if not untuned_dir.exists():
        return
    if not untuned_dir.is_dir():
        raise ValueError(f"{untuned_dir} is a file, not a run folder; move it away, or pass "
                         "another --output-dir.")
    foreign = sorted(entry.name for entry in untuned_dir.iterdir()
                     if entry.name not in RUN_ENTRIES)
    if foreign:
        raise ValueError(
            f"{untuned_dir} holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}"
            ", which fit did not write; the untuned run trains only into a run folder of its "
            "own, so nothing was changed. Move them out, or pass another --output-dir.")


def compare_untuned(job_path, data=None, output_dir=None, verbose="auto",
                    skip_bad_rows=False, splits=None, limit=None, overwrite=False):
    """Trains the untuned experiment as long as the search's longest trial and compares.

    The untuned run is `python -m fer_keras.fit EXPERIMENT --epochs MAX_EPOCHS` with the
    job's seed, written to `results/JOB/untuned/` (it resumes like any fit run, and a
    finished one is reused). A finished run trained with other settings (epochs, seed,
    `limit`) is kept unless `overwrite` is set; then the new run trains beside it in fit's
    staging folder `results/JOB/untuned.partial/` and replaces it only once complete. A
    folder holding files that fit did not write is never trained into or replaced. The
    comparison puts three validation accuracies side by side: the study's Table 1 row, the
    untuned experiment and the best trial of the search, both of ours trained for the same
    number of epochs through the same compile path.

    Returns:
        The dict written to `comparison.json` (`comparison.md` holds the same as a table).

    Raises:
        ValueError: if the search has no completed trial yet, `untuned/` holds a finished
            run with other settings and `overwrite` is not set, or files fit did not write.
    """
    job = load_job(job_path)
    output_dir = results_folder(job, output_dir)
    trials_path = output_dir / "trials.json"
    if not trials_path.exists():
        raise ValueError(f"No search results in {output_dir}: run the search first "
                         f"(python -m fer_keras.tune {job.path}), then --compare.")
    check_results_dir(output_dir)
    if not _is_our_summary(trials_path):
        raise ValueError(f"{trials_path} is not a search summary written by the tuner; "
                         f"run the search first (python -m fer_keras.tune {job.path}), or "
                         "pass the --output-dir it used.")
    summary = json.loads(trials_path.read_text())
    best = best_row(summary["trials"], job.objective)
    if best is None:
        raise ValueError(f"{trials_path} has no completed trial yet; let the search run "
                         f"(python -m fer_keras.tune {job.path}), then --compare.")
    epochs = job.max_epochs
    untuned_dir = output_dir / UNTUNED_DIR
    _check_untuned_folder(untuned_dir)
    metrics_path = untuned_dir / "metrics.json"
    finished = metrics_path.exists() and not (untuned_dir / "backup").exists()
    changed = []
    if finished:
        try:
            config = json.loads((untuned_dir / "config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{untuned_dir} has a metrics.json but no readable config.json, "
                             "so it is not a finished fit run; move it away, or pass another "
                             "--output-dir.") from error
        wanted = {"epochs": epochs, "seed": job.seed, "limit": limit,
                  "teachers": list(job.teachers)}
        # Runs trained before teachers existed record none: the same as an empty list.
        recorded = {**config, "teachers": list(config.get("teachers") or [])}
        changed = [f"{key} {recorded.get(key)!r}, now {value!r}"
                   for key, value in wanted.items() if recorded.get(key) != value]
        if changed and not overwrite:
            raise ValueError(
                f"{untuned_dir} holds a finished untuned run trained with other settings "
                f"({'; '.join(changed)}). Run with its settings to reuse it, or pass "
                f"--overwrite to train a new one that replaces it once complete.")
    if finished and not changed:
        print(f"Using the finished untuned run in {untuned_dir}", flush=True)
        metrics = json.loads(metrics_path.read_text())
    else:
        # A finished run is replaced only by a complete one: fit trains (and resumes, if
        # killed) in its staging folder beside it and swaps the new run in at the end.
        print(f"Training the untuned {job.experiment} for {epochs} epochs (the search's "
              f"longest trial) into {untuned_dir}", flush=True)
        metrics = train(job.experiment, data=data, output_dir=untuned_dir, seed=job.seed,
                        limit=limit, verbose=verbose,
                        # The untuned run distils from the job's teachers at the
                        # experiment's settings, so the comparison is of tuning alone.
                        overrides={"epochs": epochs, "teachers": list(job.teachers)},
                        skip_bad_rows=skip_bad_rows, splits=splits, overwrite=bool(changed))
    experiment = get_experiment(job.experiment)
    study = experiment.study
    validation = metrics["splits"]["validation"]["accuracy"]
    # Lazy: the hypermodel imports Keras and Keras Tuner, which `tune --help` must not.
    from fer_keras.tuning.hypermodel import SEARCHABLE

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


