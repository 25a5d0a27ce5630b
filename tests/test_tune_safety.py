"""The tuner deletes or writes only folders of its own, and refuses bad bounds up front.

Each case of issue 26 that lost a user's files (a job named `..` or `.`, `--runs-dir` a
folder that is not a search state, `--overwrite`) is run here with a sentinel file the user
owns, which must come through byte-identical, and a one-line `error:` with exit status 2.
Every refusal happens before any data is read, so nothing here trains.
"""

import json
import os
import random

import keras_tuner
import pytest

from fer_keras import tune
from fer_keras.tuning import jobs as tune_jobs
from fer_keras.tuning import results as tune_results
from fer_keras.tuning import search as tune_search

JOB = """
experiment = "baseline"
tuner = "hyperband"
seed = 1

[search_space.learning_rate]
min = 1e-4
max = 1e-2

[search_space.weight_decay]
min = 1e-5
max = 1e-3

[search_space.dropout_rate]
min = 0.0
max = 0.5
step = 0.1

[budget]
max_epochs = 2
"""


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    """In-process searches never see distribution variables of the calling shell."""
    for name in tune_search.DISTRIBUTED_ENV:
        monkeypatch.delenv(name, raising=False)


def _snapshot(folder):
    """Every file and folder under `folder`, with the bytes of each file."""
    return {str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None
            for path in sorted(folder.rglob("*"))}


def _fake_search_state(folder, trial_ids=("0000", "0001")):
    """The files a search of ours leaves in its state folder (no real training)."""
    folder.mkdir(parents=True)
    (folder / tune_search.JOB_RECORD).write_text('{"experiment": "baseline"}\n')
    (folder / "oracle.json").write_text('{"ongoing_trials": {}}')
    (folder / "tuner0.json").write_text("{}")
    for trial_id in trial_ids:
        trial = folder / f"trial_{trial_id}"
        trial.mkdir()
        observed = {"observations": [{"value": [0.5], "step": 0}]}
        (trial / "trial.json").write_text(json.dumps({
            "trial_id": trial_id, "status": "COMPLETED", "best_step": 0,
            "hyperparameters": {"values": {"learning_rate": 1e-3, "weight_decay": 0.0,
                                           "dropout_rate": 0.1, "tuner/epochs": 2,
                                           "tuner/initial_epoch": 0}},
            "metrics": {"metrics": {"val_accuracy": observed, "val_loss": observed}}}))
        (trial / "checkpoint.weights.h5").write_bytes(b"weights")
    log = folder / tune_results.TRIAL_LOG_DIR
    log.mkdir()
    (log / "tuner0.jsonl").write_text("".join(
        json.dumps({"trial_id": trial_id, "tuner_id": "tuner0", "status": "COMPLETED",
                    "seconds": 2.5}) + "\n" for trial_id in trial_ids))
    return folder


def _run(argv, capsys):
    """`python -m fer_keras.tune ARGV` in-process: (status, stderr)."""
    status = tune.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.err


def _assert_one_line(error, *parts):
    assert error.startswith("error: ") and error.count("\n") == 1, error
    assert "Traceback" not in error
    for part in parts:
        assert part in error, error


@pytest.fixture
def project(tmp_path, monkeypatch):
    """`proj/` with the user's own file and another job's state and results in it."""
    monkeypatch.chdir(tmp_path)
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "precious.txt").write_bytes(b"the user's notes\n")
    (proj / "otherjob.toml").write_text(JOB)
    _fake_search_state(proj / "runs" / "otherjob")
    (proj / "results" / "otherjob").mkdir(parents=True)
    (proj / "results" / "otherjob" / "trials.json").write_text('{"trials": []}\n')
    return proj


# --- Case 1: the job name must be a plain folder name ---------------------------------------

@pytest.mark.parametrize("file_name, name", [("...toml", ".."), ("..toml", ".")])
@pytest.mark.parametrize("flags", [["--overwrite"], [], ["--dry-run"],
                                   ["--overwrite", "--dry-run"], ["--summary-only"]])
def test_a_job_named_dot_or_dot_dot_touches_nothing(project, capsys, file_name, name, flags):
    job = project / file_name
    job.write_text(JOB)
    before = _snapshot(project)
    status, error = _run([job, *flags, "--data", project / "missing.csv"], capsys)
    assert status == 2
    _assert_one_line(error, f"error: {job}: the job name {name!r}", "Rename the file")
    assert _snapshot(project) == before


@pytest.mark.parametrize("file_name", [".toml", ".hidden.toml", " padded.toml",
                                       "back\\slash.toml", "tab\there.toml"])
def test_load_job_refuses_a_name_that_is_not_a_plain_folder_name(tmp_path, file_name):
    job = tmp_path / file_name
    job.write_text(JOB)
    with pytest.raises(ValueError, match="the job name .* Rename the file") as error:
        tune_jobs.load_job(job)
    assert str(error.value).startswith(f"{job}: ") and "\n" not in str(error.value)


def test_a_plain_job_name_still_loads(tmp_path):
    job = tmp_path / "deep-emotion_v2.1.toml"
    job.write_text(JOB)
    assert tune_jobs.load_job(job).name == "deep-emotion_v2.1"


@pytest.mark.parametrize("runs_dir", [".", "..", "runs/..", "ABSOLUTE/runs/.."])
def test_a_runs_dir_that_is_not_inside_its_parent_is_refused(project, tmp_path, monkeypatch,
                                                             capsys, runs_dir):
    # Run from inside proj/, so that even `..` names only this test's own folder.
    monkeypatch.chdir(project)
    runs_dir = runs_dir.replace("ABSOLUTE", str(project))
    before = _snapshot(tmp_path)
    status, error = _run([project / "otherjob.toml", "--runs-dir", runs_dir, "--overwrite",
                          "--data", project / "missing.csv"], capsys)
    assert status == 2
    _assert_one_line(error, f"error: {runs_dir} resolves to", "strictly inside", "--runs-dir")
    assert _snapshot(tmp_path) == before


def test_a_search_state_behind_a_link_is_not_deleted(project, tmp_path, capsys):
    # runs/JOB is a link to a search state elsewhere: it resolves outside runs/, so
    # --overwrite must not delete what the link points to.
    elsewhere = _fake_search_state(tmp_path / "elsewhere")
    (project / "linked.toml").write_text(JOB)
    os.symlink(elsewhere, project / "runs" / "linked")
    before = _snapshot(elsewhere)
    status, error = _run([project / "linked.toml", "--overwrite", "--data",
                          project / "missing.csv"], capsys)
    assert status == 2
    _assert_one_line(error, "resolves to", "strictly inside")
    assert _snapshot(elsewhere) == before


def test_runs_and_results_must_be_separate_folders(project, capsys):
    for runs_dir, output_dir in [("shared", "shared"), ("out/state", "out")]:
        status, error = _run([project / "otherjob.toml", "--dry-run", "--runs-dir", runs_dir,
                              "--output-dir", output_dir], capsys)
        assert status == 2
        _assert_one_line(error, "must be separate folders")


# --- Case 2: --overwrite deletes only a search state of ours --------------------------------

@pytest.mark.parametrize("flags", [["--overwrite"], ["--overwrite", "--dry-run"], []])
def test_runs_dir_holding_the_users_files_is_never_deleted_or_filled(
        project, tmp_path, capsys, flags):
    important = tmp_path / "important"
    important.mkdir()
    (important / "thesis.txt").write_bytes(b"chapter 1\n" * 100)
    before = _snapshot(important)
    status, error = _run([project / "otherjob.toml", "--runs-dir", "important", *flags,
                          "--data", tmp_path / "missing.csv"], capsys)
    assert status == 2
    _assert_one_line(error, "error: important ", "thesis.txt", "--runs-dir")
    assert _snapshot(important) == before  # Nothing deleted, nothing written into it.


def test_a_search_state_with_a_users_file_in_it_is_not_deleted(project, capsys):
    state = project / "runs" / "otherjob"
    (state / "notes.md").write_text("why trial 3 diverged\n")
    before = _snapshot(state)
    status, error = _run([project / "otherjob.toml", "--overwrite", "--data",
                          project / "missing.csv"], capsys)
    assert status == 2
    _assert_one_line(error, f"error: {state} holds notes.md", "deletes nothing")
    assert _snapshot(state) == before


def test_overwrite_deletes_a_search_state_of_ours(project):
    state = project / "runs" / "otherjob"
    # The data is missing, so the run stops right after starting the new search state.
    with pytest.raises(ValueError):
        tune_search.run_job(project / "otherjob.toml", data=project / "missing.csv",
                            overwrite=True)
    assert sorted(path.name for path in state.iterdir()) == [tune_search.JOB_RECORD]
    assert (project / "precious.txt").read_bytes() == b"the user's notes\n"


def test_keras_tuners_own_files_count_as_a_search_state(tmp_path):
    class Simulated(keras_tuner.Hyperband):
        def run_trial(self, trial, *args, **kwargs):
            return {"val_accuracy": random.random()}

    space = keras_tuner.HyperParameters()
    space.Float("learning_rate", 1e-5, 1e-1, sampling="log")
    tuner = Simulated(hyperparameters=space, objective="val_accuracy", seed=1, max_epochs=2,
                      directory=str(tmp_path), project_name="state")
    tuner.search(verbose=0)
    state = tmp_path / "state"
    assert (state / "oracle.json").exists() and list(state.glob("trial_*/trial.json"))
    assert tune_search.foreign_entries(state) == []
    (state / "thesis.txt").write_text("mine")
    (state / "trial_0000" / "draft.txt").write_text("mine too")
    assert tune_search.foreign_entries(state) == ["thesis.txt", "trial_0000"]


def test_a_new_search_writes_its_marker_into_a_new_folder(project, tmp_path):
    with pytest.raises(ValueError):  # The data is missing: stops after the marker.
        tune_search.run_job(project / "otherjob.toml", data=tmp_path / "missing.csv",
                            runs_dir=tmp_path / "fresh")
    record = json.loads((tmp_path / "fresh" / tune_search.JOB_RECORD).read_text())
    assert record["experiment"] == "baseline"
    assert tune_search.foreign_entries(tmp_path / "fresh") == []


def test_results_folder_with_files_we_did_not_write_is_refused(project, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "trials.csv").write_bytes(b"my own spreadsheet\n")
    before = _snapshot(mine)
    for flags in (["--dry-run"], ["--summary-only"], []):
        status, error = _run([project / "otherjob.toml", "--output-dir", mine, *flags,
                              "--data", tmp_path / "missing.csv"], capsys)
        assert status == 2
        _assert_one_line(error, f"error: {mine} holds trials.csv", "--output-dir")
        assert _snapshot(mine) == before
    # A results folder of ours (its trials.json is a search summary) is rewritten as before.
    status, error = _run([project / "otherjob.toml", "--summary-only"], capsys)
    assert status == 0, error
    assert json.loads((project / "results" / "otherjob" / "trials.json").read_text())["job"]


def test_compare_never_replaces_an_untuned_folder_holding_the_users_files(project, capsys):
    results = project / "results" / "otherjob"
    trial = {"trial_id": "0", "status": "COMPLETED", "learning_rate": 1e-3,
             "weight_decay": 0.0, "dropout_rate": 0.1, "val_accuracy": 0.5,
             "val_loss": 1.5, "best_epoch": 1, "epochs": 1}
    (results / "trials.json").write_text(json.dumps({
        "trials": [trial], "experiment_defaults": {"learning_rate": 1e-3},
        "completed_trials": 1, "trial_seconds": 3.0}))
    untuned = results / "untuned"
    untuned.mkdir()
    (untuned / "config.json").write_text(json.dumps({"epochs": 7, "seed": 1, "limit": None}))
    (untuned / "metrics.json").write_text(json.dumps({"epochs_run": 7}))
    (untuned / "thesis.txt").write_bytes(b"not a run file\n")
    before = _snapshot(results)
    status, error = _run([project / "otherjob.toml", "--compare", "--overwrite", "--data",
                          project / "missing.csv"], capsys)
    assert status == 2
    _assert_one_line(error, f"error: {untuned} holds thesis.txt", "nothing was changed")
    assert _snapshot(results) == before


# --- Case 14: bounds that are not finite numbers --------------------------------------------

@pytest.mark.parametrize("table, old, new, key", [
    ("learning_rate", "min = 1e-4", "min = nan", "search_space.learning_rate.min=nan"),
    ("learning_rate", "max = 1e-2", "max = inf", "search_space.learning_rate.max=inf"),
    ("learning_rate", "max = 1e-2", "max = 1e400", "search_space.learning_rate.max=inf"),
    ("weight_decay", "max = 1e-3", "max = +inf", "search_space.weight_decay.max=inf"),
    ("weight_decay", "min = 1e-5", "min = -nan", "search_space.weight_decay.min=nan"),
    ("dropout_rate", "min = 0.0", "min = -inf", "search_space.dropout_rate.min=-inf"),
    ("dropout_rate", "step = 0.1", "step = nan", "search_space.dropout_rate.step=nan"),
])
def test_a_bound_that_is_not_finite_is_refused_by_dry_run(tmp_path, capsys, table, old, new,
                                                           key):
    section = JOB.index(f"[search_space.{table}]")
    at = JOB.index(old, section)
    job = tmp_path / "job.toml"
    job.write_text(JOB[:at] + new + JOB[at + len(old):])
    status, error = _run([job, "--dry-run"], capsys)
    assert status == 2
    _assert_one_line(error, f"error: {job}: ", "must be a finite number", f"Received: {key}")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("table, old, new, key", [
    ("learning_rate", "min = 1e-4", "min = 1e-2", "search_space.learning_rate"),
    ("weight_decay", "min = 1e-5", "min = 0.0", "search_space.weight_decay.min"),
    ("learning_rate", "min = 1e-4", "min = -1e-4", "search_space.learning_rate.min"),
    ("weight_decay", "max = 1e-3", "max = 1e-3\nsteps_per_decade = 1000000000000",
     "search_space.weight_decay.steps_per_decade"),
])
def test_empty_log_scale_or_endless_ranges_are_refused_by_dry_run(tmp_path, capsys, table,
                                                                   old, new, key):
    section = JOB.index(f"[search_space.{table}]")
    at = JOB.index(old, section)
    job = tmp_path / "job.toml"
    job.write_text(JOB[:at] + new + JOB[at + len(old):])
    status, error = _run([job, "--dry-run"], capsys)
    assert status == 2
    _assert_one_line(error, f"error: {job}: {key}")
