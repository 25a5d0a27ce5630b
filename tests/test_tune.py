import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pytest

from fer_keras import tune
from fer_keras.models import get_model
from fer_keras.models.layers import all_layers
from fer_keras.training import settings as training_settings
from fer_keras.training.builder import num_classes_of
from fer_keras.training.experiments import get_experiment, list_experiments
from fer_keras.tuning import jobs as tune_jobs
from fer_keras.tuning import results as tune_results
from fer_keras.tuning import search as tune_search
from fer_keras.tuning.hypermodel import (
    FERHyperModel,
    check_search_space,
    default_dropout_rate,
    weight_decay_values,
)

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "tuning" / "smoke.toml"
STUDY_JOBS = {"deep_emotion": REPO / "tuning" / "deep_emotion.toml",
              "dexpression": REPO / "tuning" / "dexpression.toml"}

VALID_JOB = """
experiment = "baseline"
tuner = "hyperband"

[search_space.learning_rate]
min = 1e-4
max = 1e-2

[search_space.dropout_rate]
min = 0.0
max = 0.5

[budget]
max_epochs = 2
"""


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    """In-process searches never see distribution variables of the calling shell."""
    for name in tune_search.DISTRIBUTED_ENV:
        monkeypatch.delenv(name, raising=False)


def _dropout_rates(model):
    return [layer.rate for layer in all_layers(model) if isinstance(layer, keras.layers.Dropout)]


def _log_lines(runs_dir):
    lines = []
    for log in sorted((runs_dir / tune_results.TRIAL_LOG_DIR).glob("*.jsonl")):
        lines += [json.loads(line) for line in log.read_text().splitlines()]
    return lines


# --- The HyperModel -------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_experiments())
def test_default_hyperparameters_build_the_experiment_as_fit_does(name):
    experiment = get_experiment(name)
    hypermodel = FERHyperModel(name)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)

    settings = training_settings.resolve_settings(name)
    reference = get_model(settings["model"], num_classes=num_classes_of(settings),
                          **settings["model_kwargs"])
    assert hp.values["learning_rate"] == experiment.learning_rate
    assert hp.values["weight_decay"] == experiment.weight_decay
    assert hp.values["dropout_rate"] == pytest.approx(max(_dropout_rates(reference), default=0.0))
    assert ([layer.name for layer in all_layers(model)]
            == [layer.name for layer in all_layers(reference)])
    assert _dropout_rates(model) == _dropout_rates(reference)
    assert model.count_params() == reference.count_params()
    optimizer = model.optimizer
    assert type(optimizer).__name__.lower() == settings["optimizer"]
    rate = optimizer.get_config()["learning_rate"]
    if isinstance(rate, dict):  # A schedule (warm-up + cosine): its peak is the rate.
        rate = rate["config"]["peak"]
    assert rate == pytest.approx(experiment.learning_rate)
    assert (optimizer.weight_decay or 0.0) == pytest.approx(experiment.weight_decay)


def test_builder_defaults_count_when_the_experiment_sets_no_dropout():
    # deep_emotion's builder defaults to 0.5 behind **kwargs; baseline has none.
    assert default_dropout_rate(get_experiment("deep_emotion")) == 0.5
    assert default_dropout_rate(get_experiment("baseline_dropout")) == 0.4
    assert default_dropout_rate(get_experiment("baseline")) == 0.0


def test_sampled_values_reach_the_builder_and_the_optimizer():
    hypermodel = FERHyperModel("baseline_deep_dropout")
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    hp.values.update(learning_rate=2e-3, weight_decay=1e-4, dropout_rate=0.2)
    model = hypermodel.build(hp)
    assert _dropout_rates(model) == pytest.approx([0.2] * 4)
    assert float(model.optimizer.learning_rate) == pytest.approx(2e-3)
    assert model.optimizer.weight_decay == pytest.approx(1e-4)
    # The same names are what fit accepts from a best_hparams.json.
    settings = training_settings.resolve_settings("baseline_deep_dropout", hparams=dict(hp.values))
    assert settings["model_kwargs"]["dropout_rate"] == 0.2
    assert settings["learning_rate"] == 2e-3 and settings["weight_decay"] == 1e-4


def test_weight_decay_is_zero_or_log_spaced():
    spec = check_search_space({"weight_decay": {"min": 1e-5, "max": 1e-2}})["weight_decay"]
    assert weight_decay_values(spec) == [0.0, 1e-5, 1e-4, 1e-3, 1e-2]
    spec = check_search_space({"weight_decay": {"min": 1e-4, "max": 1e-3, "steps_per_decade": 2,
                                                "allow_zero": False}})["weight_decay"]
    assert weight_decay_values(spec, include=5e-4) == [1e-4, 3.16e-4, 5e-4, 1e-3]


def test_fit_forwards_the_tuners_callbacks_and_fails_diverged_trials():
    class Seen(keras.callbacks.Callback):
        epochs = []

        def on_epoch_end(self, epoch, logs=None):
            Seen.epochs.append((epoch, sorted(logs)))

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (24, 48, 48, 1)).astype(np.uint8)
    y = np.arange(24) % 7
    hypermodel = FERHyperModel("baseline_dropout_aug", {"learning_rate": {"min": 1e-4, "max": 1}})
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    history = hypermodel.fit(hp, model, x, y, validation_data=(x, y), epochs=2,
                             callbacks=[Seen()], verbose=0)
    assert [epoch for epoch, _ in Seen.epochs] == [0, 1]
    assert "val_accuracy" in Seen.epochs[0][1]
    assert len(history.history["val_accuracy"]) == 2

    hp.values["learning_rate"] = float("inf")  # Adam then writes inf/NaN weights.
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="Lower --learning-rate"):
        hypermodel.fit(hp, hypermodel.build(hp), x, y, validation_data=(x, y), epochs=3,
                       verbose=0)


# --- Job files ------------------------------------------------------------------------------

def _job(tmp_path, text, name="job.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("change, key", [
    (('experiment = "baseline"', 'experiment = "deep_emotoin"'), "experiment"),
    (('tuner = "hyperband"', 'tuner = "hyperband"\nmax_trails = 3'), "max_trails"),
    (("min = 1e-4\nmax = 1e-2", "min = 1e-2\nmax = 1e-4"), "search_space.learning_rate"),
    (("min = 0.0\nmax = 0.5", "min = 0.5\nmax = 0.5"), "search_space.dropout_rate"),
    (("max = 0.5\n", "max = 0.5\nsteps = 0.1\n"), "search_space.dropout_rate.steps"),
    (("[search_space.dropout_rate]", "[search_space.momentum]"), "search_space.momentum"),
    (("min = 1e-4\n", ""), "search_space.learning_rate.min"),
    (('experiment = "baseline"\n', ""), "experiment"),
    (("max_epochs = 2", "epochs = 2"), "budget.epochs"),
    (("max_epochs = 2", "max_epochs = 2\nmax_trials = 4"), "budget.max_trials"),
    (('tuner = "hyperband"', 'tuner = "random"'), "budget.max_epochs"),
    (("max_epochs = 2", "max_epochs = 2.5"), "budget.max_epochs"),
    (('tuner = "hyperband"', 'tuner = "grid"'), "tuner"),
    (("min = 1e-4\n", "min = 0.0\n"), "search_space.learning_rate.min"),
])
def test_bad_job_files_name_the_file_and_the_key(tmp_path, change, key):
    old, new = change
    assert old in VALID_JOB
    path = _job(tmp_path, VALID_JOB.replace(old, new, 1))
    with pytest.raises(ValueError) as error:
        tune_jobs.load_job(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and key in message, message


def test_job_file_with_a_utf8_byte_order_mark_loads(tmp_path):
    # Windows editors (Notepad) often save UTF-8 with a byte-order mark.
    plain = tune_jobs.load_job(_job(tmp_path, VALID_JOB))
    path = tmp_path / "marked.toml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID_JOB.encode())
    marked = tune_jobs.load_job(path)
    assert marked.name == "marked"
    for field in ("experiment", "tuner", "objective", "seed", "search_space", "budget"):
        assert getattr(marked, field) == getattr(plain, field), field


def test_job_errors_come_before_any_data_or_training(tmp_path, capsys):
    path = _job(tmp_path, VALID_JOB.replace("min = 1e-4\nmax = 1e-2", "min = 1e-2\nmax = 1e-4"))
    runs = tmp_path / "runs"
    with pytest.raises(ValueError, match="inverted"):
        tune_search.run_job(path, data=tmp_path / "missing.csv", runs_dir=runs)
    assert not runs.exists()
    assert tune.main([str(path), "--data", str(tmp_path / "missing.csv")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {path}: search_space.learning_rate")
    assert tune.main([str(_job(tmp_path, "experiment = [", "broken.toml"))]) == 2
    assert "is not valid TOML" in capsys.readouterr().err


def test_close_names_are_suggested(tmp_path):
    path = _job(tmp_path, VALID_JOB.replace('"baseline"', '"baseline_deep_dropot"'))
    with pytest.raises(ValueError, match="Did you mean 'baseline_deep_dropout'"):
        tune_jobs.load_job(path)
    path = _job(tmp_path, VALID_JOB.replace("max_epochs", "max_epoch"))
    with pytest.raises(ValueError, match=r"budget.max_epoch: unknown key. Did you mean "
                       r"'max_epochs'"):
        tune_jobs.load_job(path)
    with pytest.raises(ValueError, match=f"Did you mean '{tmp_path / 'job.toml'}'"):
        tune_jobs.load_job(tmp_path / "jbo.toml")


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_limit_below_one_exits_2_naming_the_flag(tmp_path, capsys, value):
    path = _job(tmp_path, VALID_JOB)
    with pytest.raises(SystemExit) as exited:
        tune.main([str(path), "--limit", value, "--data", str(tmp_path / "missing.csv")])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "argument --limit: must be an integer >= 1" in error and "Traceback" not in error
    assert not (tmp_path / "runs").exists()


def _fake_search(tmp_path, job_text):
    """A job whose results folder holds one completed trial and a finished untuned run."""
    job = _job(tmp_path, job_text, "fake.toml")
    results = tmp_path / "results" / "fake"
    untuned = results / "untuned"
    untuned.mkdir(parents=True)
    trial = {"trial_id": "0", "status": "COMPLETED", "learning_rate": 1e-3,
             "dropout_rate": 0.1, "val_accuracy": 0.5, "val_loss": 1.5, "best_epoch": 1,
             "epochs": 1}
    (results / "trials.json").write_text(json.dumps({
        "trials": [trial], "experiment_defaults": {"learning_rate": 1e-3, "dropout_rate": 0.0},
        "completed_trials": 1, "trial_seconds": 3.0}))
    (untuned / "config.json").write_text(json.dumps({"epochs": 1, "seed": 1, "limit": 40}))
    (untuned / "metrics.json").write_text(json.dumps({"epochs_run": 1}))
    (untuned / "model.keras").write_bytes(b"a finished run")
    return job, untuned


def _snapshot(folder):
    return {path.relative_to(folder): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_compare_keeps_a_finished_untuned_run_unless_overwrite(tiny_csv, tmp_path, capsys):
    job, untuned = _fake_search(
        tmp_path, VALID_JOB.replace('tuner = "hyperband"', 'tuner = "random"')
        .replace("max_epochs = 2", "max_trials = 1\nepochs = 1"))
    before = _snapshot(untuned)
    with pytest.raises(ValueError, match=r"untuned holds a finished untuned run .*limit 40, "
                       r"now None.*--overwrite"):
        tune_results.compare_untuned(job, data=tiny_csv, verbose=0)
    assert tune.main([str(job), "--compare", "--data", str(tiny_csv)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {untuned} holds") and error.count("\n") == 1
    assert _snapshot(untuned) == before

    comparison = tune_results.compare_untuned(job, data=tiny_csv, verbose=0, overwrite=True)
    metrics = json.loads((untuned / "metrics.json").read_text())
    assert json.loads((untuned / "config.json").read_text())["limit"] is None
    assert comparison["untuned"]["val_accuracy"] == metrics["splits"]["validation"]["accuracy"]
    assert sorted(path.name for path in untuned.parent.iterdir()) == [
        "comparison.json", "comparison.md", "trials.json", "untuned"]


def test_distribution_variables_are_checked(monkeypatch):
    assert tune_search.distributed_role() == ("single", "tuner0")
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    with pytest.raises(ValueError, match="KERASTUNER_TUNER_ID"):
        tune_search.distributed_role()
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "80a")
    with pytest.raises(ValueError, match="port"):
        tune_search.distributed_role()
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    assert tune_search.distributed_role() == ("chief", "chief")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner1")
    assert tune_search.distributed_role() == ("worker", "tuner1")


@pytest.mark.parametrize("name", sorted(STUDY_JOBS))
def test_study_jobs_search_around_the_experiment(name):
    job = tune_jobs.load_job(STUDY_JOBS[name])
    assert job.experiment == name and job.tuner == "hyperband"
    hypermodel = FERHyperModel(job.experiment, job.search_space)
    # The untuned experiment lies inside the searched space.
    for key, value in hypermodel.defaults.items():
        spec = job.search_space[key]
        assert spec["min"] <= value <= spec["max"] or (key == "weight_decay" and value == 0.0)


@pytest.mark.parametrize("path", [SMOKE, *STUDY_JOBS.values()], ids=lambda p: p.stem)
def test_planned_budget_matches_keras_tuners_hyperband(path, tmp_path):
    class Simulated(keras_tuner.Hyperband):
        def run_trial(self, trial, *args, **kwargs):
            return {"val_accuracy": random.random()}

    job = tune_jobs.load_job(path)
    space = keras_tuner.HyperParameters()
    space.Float("learning_rate", 1e-5, 1e-1, sampling="log")
    tuner = Simulated(hyperparameters=space, objective="val_accuracy", seed=1,
                      max_epochs=job.budget["max_epochs"], factor=job.budget["factor"],
                      hyperband_iterations=job.budget["hyperband_iterations"],
                      directory=str(tmp_path), project_name="simulated")
    tuner.search(verbose=0)
    values = [trial.hyperparameters.values for trial in tuner.oracle.trials.values()]
    epochs = sum(v["tuner/epochs"] - v["tuner/initial_epoch"] for v in values)
    assert tune_jobs.planned_budget(job) == (len(values), epochs)


# --- Searches -------------------------------------------------------------------------------

def test_search_finishes_writes_results_and_rerun_repeats_nothing(tiny_csv, tmp_path):
    job = _job(tmp_path, VALID_JOB.replace('tuner = "hyperband"', 'tuner = "bayesian"')
               .replace("max_epochs = 2", "max_trials = 2\nepochs = 1"), "two.toml")
    runs, results = tmp_path / "runs" / "two", tmp_path / "results"
    summary = tune_search.run_job(job, data=tiny_csv, verbose=0)
    assert runs.is_dir() and (tmp_path / "results" / "two").is_dir()  # beside the job file
    assert summary["completed_trials"] == 2
    assert {p.name for p in (results / "two").iterdir()} == set(tune_results.RESULT_FILES)
    logged = _log_lines(runs)
    assert sorted(line["trial_id"] for line in logged) == ["0", "1"]

    again = tune_search.run_job(job, data=tiny_csv, verbose=0)
    assert _log_lines(runs) == logged
    assert [row["trial_id"] for row in again["trials"]] == ["0", "1"]

    rows = summary["trials"]
    best = max(rows, key=lambda row: row["val_accuracy"])
    stored = json.loads((results / "two" / "best_hparams.json").read_text())
    assert stored["trial_id"] == best["trial_id"]
    assert set(stored["hyperparameters"]) == {"learning_rate", "dropout_rate"}
    settings = training_settings.resolve_settings("baseline", hparams=stored["hyperparameters"])
    assert settings["learning_rate"] == best["learning_rate"]
    assert settings["model_kwargs"]["dropout_rate"] == best["dropout_rate"]
    csv_lines = (results / "two" / "trials.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("trial_id,status,learning_rate")
    assert all(row["seconds"] > 0 and row["runs"] == 1 for row in rows)

    comparison = tune_results.compare_untuned(job, data=tiny_csv, verbose=0)
    untuned = json.loads((results / "two" / "untuned" / "metrics.json").read_text())
    assert untuned["epochs_run"] == 1 and comparison["epochs"] == 1
    assert comparison["untuned"]["val_accuracy"] == untuned["splits"]["validation"]["accuracy"]
    assert comparison["untuned"]["hyperparameters"] == {"learning_rate": 1e-3,
                                                        "dropout_rate": 0.0}
    assert comparison["tuned"]["val_accuracy"] == best["val_accuracy"]
    assert comparison["study"]["row"] == get_experiment("baseline").study.row
    assert comparison["tuned_minus_untuned_points"] == pytest.approx(
        100 * (best["val_accuracy"] - untuned["splits"]["validation"]["accuracy"]), abs=0.01)
    table = (results / "two" / "comparison.md").read_text()
    assert f"| {100 * best['val_accuracy']:.2f}% |" in table
    stamp = (results / "two" / "untuned" / "model.keras").stat().st_mtime_ns
    assert tune_results.compare_untuned(job, data=tiny_csv, verbose=0) == comparison  # reused
    assert (results / "two" / "untuned" / "model.keras").stat().st_mtime_ns == stamp

    job.write_text(job.read_text().replace("max_trials = 2", "max_trials = 3"))
    with pytest.raises(ValueError, match=r"different settings \(budget\)"):
        tune_search.run_job(job, data=tiny_csv, verbose=0)


def _wait_for(predicate, timeout, processes=()):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if any(process.poll() is not None for process in processes):
            return predicate()
        time.sleep(0.2)
    return False


def _stop(processes):
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_killed_search_continues_without_repeating_trials(tiny_csv, tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    args = [sys.executable, "-m", "fer_keras.tune", str(SMOKE), "--data", str(tiny_csv),
            "--runs-dir", str(runs), "--output-dir", str(results), "--verbose", "0"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    output = tmp_path / "first.log"
    with open(output, "w") as handle:
        first = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=handle,
                                 stderr=subprocess.STDOUT)
    try:
        # The second trial has started (and is saved as running): kill the search then.
        started = _wait_for(lambda: "Running Trial #2" in output.read_text(), 180, [first])
        assert started and first.poll() is None, output.read_text()[-3000:]
        first.send_signal(signal.SIGKILL)
    finally:
        _stop([first])
    assert [line["trial_id"] for line in _log_lines(runs)] == ["0000"]

    summary = tune_search.run_job(SMOKE, data=tiny_csv, runs_dir=runs, output_dir=results,
                                  verbose=0)
    logged = sorted(line["trial_id"] for line in _log_lines(runs))
    assert logged == ["0000", "0001"]
    planned_trials = tune_jobs.planned_budget(tune_jobs.load_job(SMOKE))[0]
    assert summary["completed_trials"] == planned_trials == 2
    assert (results / "accuracy_vs_hparams.png").stat().st_size > 0


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_chief_and_two_workers_on_loopback_run_every_trial_once(tiny_csv, tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    args = [sys.executable, "-m", "fer_keras.tune", str(SMOKE), "--data", str(tiny_csv),
            "--runs-dir", str(runs), "--output-dir", str(results), "--verbose", "0"]
    base = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3",
                KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(_free_port()))
    processes, logs = {}, {}

    def start(tuner_id):
        logs[tuner_id] = tmp_path / f"{tuner_id}.log"
        with open(logs[tuner_id], "w") as handle:
            processes[tuner_id] = subprocess.Popen(
                args, cwd=tmp_path, env=dict(base, KERASTUNER_TUNER_ID=tuner_id),
                stdout=handle, stderr=subprocess.STDOUT)

    try:
        # The chief first: workers that start before it retry their connection with a
        # growing back-off and may reach it only after another worker has run every trial.
        start("chief")
        ready = _wait_for(lambda: "serving the oracle" in logs["chief"].read_text(), 180,
                          processes.values())
        assert ready, logs["chief"].read_text()[-2000:]
        for worker in ("tuner0", "tuner1"):
            start(worker)
        deadline = time.time() + 300
        for tuner_id, process in processes.items():
            try:
                process.wait(timeout=max(deadline - time.time(), 1))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{tuner_id} hung:\n{logs[tuner_id].read_text()[-3000:]}")
    finally:
        _stop(processes.values())

    for tuner_id, process in processes.items():
        assert process.returncode == 0, logs[tuner_id].read_text()[-3000:]
    runs_by_worker = {}
    for line in _log_lines(runs):
        runs_by_worker.setdefault(line["tuner_id"], []).append(line["trial_id"])
    summary = json.loads((results / "trials.json").read_text())
    completed = sorted(row["trial_id"] for row in summary["trials"]
                       if row["status"] == "COMPLETED")
    assert completed == ["0000", "0001"] == sorted(sum(runs_by_worker.values(), []))
    # Which worker gets which trial is a matter of timing (a fast worker may finish one trial
    # and take the next before the other has asked), so the test checks what is certain:
    # only workers trained, each trial ran exactly once, and both workers spoke to the chief
    # until it told them the search was over.
    assert set(runs_by_worker) <= {"tuner0", "tuner1"}
    assert "best_hparams.json" in {p.name for p in results.iterdir()}
    for worker in ("tuner0", "tuner1"):
        assert "the chief reports the search is over" in logs[worker].read_text()
