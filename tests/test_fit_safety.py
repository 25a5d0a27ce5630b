"""fit never loses a run: finished folders, crashes, locks, resumes, data and flag checks."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import random_rows, write_csv

from fer_keras import bench, evaluate, export, fit, predict
from fer_keras.models.registry import get_builder
from fer_keras.training import loop, run_folder
from fer_keras.training import recipe as training
from fer_keras.training import results as fer_results

REPO = Path(__file__).resolve().parents[1]


def _snapshot(folder):
    """Every file under `folder` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _fit_args(data, out, *extra):
    return ["baseline", "--data", str(data), "--output-dir", str(out), "--epochs", "1",
            "--batch-size", "16", "--verbose", "0", *extra]


@pytest.fixture
def finished_run(tiny_csv, tmp_path):
    """A finished one-epoch baseline run in tmp_path/run."""
    out = tmp_path / "run"
    assert fit.main(_fit_args(tiny_csv, out)) == 0
    assert (out / "metrics.json").exists()
    return out


def _fail_at_epoch(monkeypatch, failing_epoch):
    """Makes training raise at the end of the epoch with this index (a crash mid-run)."""
    original = training.EpochTimer.on_epoch_end

    def crash(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == failing_epoch:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(training.EpochTimer, "on_epoch_end", crash)


def test_fit_refuses_a_finished_run_and_leaves_it_byte_identical(finished_run, tiny_csv,
                                                                 capsys):
    before = _snapshot(finished_run)
    capsys.readouterr()
    # Other settings too: the old guard only looked at unfinished runs.
    assert fit.main(_fit_args(tiny_csv, finished_run, "--seed", "3")) == 2
    err = capsys.readouterr().err
    assert str(finished_run) in err and "--overwrite" in err and "--output-dir" in err
    assert "Traceback" not in err
    assert _snapshot(finished_run) == before
    assert not run_folder.staging_folder(finished_run).exists()


def test_overwrite_replaces_a_finished_run(finished_run, tiny_csv):
    before = _snapshot(finished_run)
    assert fit.main(_fit_args(tiny_csv, finished_run, "--seed", "3", "--overwrite")) == 0
    assert json.loads((finished_run / "config.json").read_text())["seed"] == 3
    assert _snapshot(finished_run)["metrics.json"] != before["metrics.json"]
    assert sorted(p.name for p in finished_run.parent.iterdir()) == [
        "cache", "fer2013.csv", "run"]
    assert not (finished_run / "backup").exists()


def test_a_crash_mid_run_leaves_the_previous_run_intact_and_resumes(finished_run, tiny_csv,
                                                                    monkeypatch, capsys):
    before = _snapshot(finished_run)
    args = _fit_args(tiny_csv, finished_run, "--epochs", "2", "--overwrite")
    _fail_at_epoch(monkeypatch, 1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit.main(args)
    assert _snapshot(finished_run) == before
    staging = run_folder.staging_folder(finished_run)
    assert json.loads((staging / "backup" / "training_metadata.json").read_text())["epoch"] == 1

    monkeypatch.undo()
    capsys.readouterr()
    assert fit.main(args) == 0
    assert "after epoch 1/2" in capsys.readouterr().out
    assert json.loads((finished_run / "metrics.json").read_text())["epochs_run"] == 2
    assert not staging.exists()


def test_a_bad_flag_leaves_a_finished_run_untouched(finished_run, tiny_csv):
    before = _snapshot(finished_run)
    # Earlier, batch size 0 rewrote the run's config.json, then died dividing by zero.
    with pytest.raises(SystemExit):
        fit.main(_fit_args(tiny_csv, finished_run, "--batch-size", "0"))
    assert _snapshot(finished_run) == before


def test_a_crash_between_the_two_renames_of_a_swap_restores_the_old_run(finished_run,
                                                                        tiny_csv, capsys):
    before = _snapshot(finished_run)
    # What a kill leaves after the old run moved aside and before the new one moved in.
    finished_run.rename(finished_run.with_name("run.replaced"))
    assert fit.main(_fit_args(tiny_csv, finished_run)) == 2
    assert "holds a finished run" in capsys.readouterr().err
    assert _snapshot(finished_run) == before
    assert not finished_run.with_name("run.replaced").exists()


def test_an_unfinished_run_inside_the_run_folder_moves_to_staging_and_resumes(
        tiny_csv, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = _fit_args(tiny_csv, out, "--epochs", "2")
    _fail_at_epoch(monkeypatch, 1)
    with pytest.raises(RuntimeError):
        fit.main(args)
    monkeypatch.undo()
    # Earlier versions kept an unfinished run (and its backup/) in the run folder itself.
    run_folder.staging_folder(out).rename(out)
    capsys.readouterr()
    assert fit.main(args) == 0
    printed = capsys.readouterr().out
    assert f"Moving the unfinished run in {out}" in printed and "after epoch 1/2" in printed
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 2


def test_a_folder_of_other_files_is_not_replaced_without_overwrite(tiny_csv, tmp_path,
                                                                   capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert fit.main(_fit_args(tiny_csv, out)) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"


INVALID_FLAGS = [
    (fit, ["--epochs", "0"]), (fit, ["--batch-size", "0"]), (fit, ["--batch-size", "-4"]),
    (fit, ["--learning-rate", "inf"]), (fit, ["--learning-rate", "nan"]),
    (fit, ["--learning-rate", "0"]), (fit, ["--learning-rate=-1e-3"]),
    (fit, ["--weight-decay", "-1"]), (fit, ["--weight-decay", "inf"]),
    (fit, ["--dropout-rate", "1"]), (fit, ["--dropout-rate", "-0.1"]),
    (fit, ["--label-smoothing", "1"]), (fit, ["--label-smoothing", "nan"]),
    (fit, ["--warmup-epochs", "-1"]), (fit, ["--limit", "0"]), (fit, ["--seed", "-1"]),
    (fit, ["--epochs", "two"]), (fit, ["--progress-seconds", "0"]),
    (evaluate, ["--limit", "0"]), (evaluate, ["--batch-size", "0"]),
    (evaluate, ["--threads", "0"]),
    (predict, ["--batch-size", "0"]), (predict, ["--every", "0"]),
    (predict, ["--fps", "0"]), (predict, ["--fps", "inf"]), (predict, ["--threads", "0"]),
    (bench, ["--steps", "0"]), (bench, ["--seed", "-2"]),
    (export, ["--version", "0"]),
]


@pytest.mark.parametrize("module, flags", INVALID_FLAGS,
                         ids=[f"{m.__name__.split('.')[-1]}{''.join(f)}"
                              for m, f in INVALID_FLAGS])
def test_invalid_numeric_flag_exits_2_naming_the_flag_and_range(module, flags, tmp_path,
                                                                 capsys):
    out = tmp_path / "out"
    positional = {fit: ["baseline", "--data", str(tmp_path / "x.csv"), "--output-dir",
                        str(out)],
                  evaluate: [str(tmp_path / "model.keras")],
                  predict: [str(tmp_path / "face.png")],
                  bench: ["baseline"],
                  export: [str(tmp_path / "model.keras")]}[module]
    with pytest.raises(SystemExit) as exited:
        module.main(positional + flags)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    flag = flags[0].split("=")[0]
    assert last.startswith("python -m fer_keras.") and f"argument {flag}" in last
    assert ("integer >=" in last or "finite number" in last) and "Received" in last
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("hparams, named", [({"batch_size": 0}, "batch_size"),
                                            ({"dropout_rate": 1.5}, "dropout_rate"),
                                            ({"learning_rate": float("inf")}, "learning_rate")])
def test_settings_from_an_hparams_file_are_checked_too(hparams, named, tiny_csv, tmp_path,
                                                       capsys):
    hparams_path = tmp_path / "best.json"
    hparams_path.write_text(json.dumps({"hyperparameters": hparams}))
    out = tmp_path / "out"
    # No --batch-size or --epochs here: flags would win over the file.
    assert fit.main(["baseline", "--data", str(tiny_csv), "--output-dir", str(out),
                     "--hparams", str(hparams_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {named} ") and "Received" in err
    assert not out.exists() and not run_folder.staging_folder(out).exists()


def test_unknown_names_suggest_the_closest(tmp_path, capsys):
    assert fit.main(["baseline_deep_dropot", "--data", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'baseline_deep_dropout'" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="Did you mean 'fer_vgg'"):
        get_builder("fer_vg")


def test_a_second_fit_on_a_locked_run_folder_exits_2(tiny_csv, tmp_path, capsys):
    out = tmp_path / "run"
    with run_folder.lock_run_folder(out):
        assert fit.main(_fit_args(tiny_csv, out)) == 2
        err = capsys.readouterr().err
        assert "Another fit" in err and f"process {os.getpid()}" in err
        assert str(out) in err
        assert not out.exists() and not run_folder.staging_folder(out).exists()
    # Released at the end of the block: the next fit runs.
    assert fit.main(_fit_args(tiny_csv, out)) == 0


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    out = tmp_path / "run"
    holder = ("import os, signal, sys\n"
              "from fer_keras.training.run_folder import lock_run_folder\n"
              "with lock_run_folder(sys.argv[1]):\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", holder, str(out)], cwd=REPO)
    assert killed.returncode == -signal.SIGKILL
    # Its lock file is still there (nothing ran on the way out), but not its lock.
    assert out.with_name(".run.lock").exists()
    with run_folder.lock_run_folder(out) as path:
        assert path.read_text().strip() == str(os.getpid())
    assert not path.exists()


def test_a_kill_after_training_resumes_without_training_again(tiny_csv, tmp_path,
                                                               monkeypatch, capsys):
    out = tmp_path / "run"
    args = _fit_args(tiny_csv, out, "--epochs", "2")

    def killed(*args, **kwargs):
        raise RuntimeError("killed before metrics.json")

    monkeypatch.setattr(fer_results, "evaluate_splits", killed)
    with pytest.raises(RuntimeError, match="killed before"):
        fit.main(args)
    staging = run_folder.staging_folder(out)
    assert (staging / "backup" / "training_metadata.json").exists()
    history = (staging / "history.csv").read_bytes()

    monkeypatch.undo()
    capsys.readouterr()
    assert fit.main(args) == 0
    printed = capsys.readouterr().out
    assert "after epoch 2/2" in printed and "training is done" in printed
    # The same two epochs (their timings included): nothing was trained again.
    assert (out / "history.csv").read_bytes() == history
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 2
    assert not (out / "backup").exists() and not staging.exists()


def test_resuming_on_other_data_is_refused_naming_both(tiny_csv, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _fail_at_epoch(monkeypatch, 1)
    with pytest.raises(RuntimeError):
        fit.main(_fit_args(tiny_csv, out, "--epochs", "2"))
    monkeypatch.undo()
    other = write_csv(tmp_path / "other.csv", random_rows(70, seed=9) +
                      random_rows(14, seed=8, usages=("PublicTest",)))
    with pytest.raises(ValueError, match="other data") as refused:
        loop.train("baseline", data=other, output_dir=out, verbose=0,
                  overrides={"epochs": 2, "batch_size": 16})
    assert str(tiny_csv) in str(refused.value) and str(other) in str(refused.value)
    # --skip-bad-rows and --limit are part of what the run was trained on, too.
    with pytest.raises(ValueError, match="skip_bad_rows differ"):
        loop.train("baseline", data=tiny_csv, output_dir=out, verbose=0, skip_bad_rows=True,
                  overrides={"epochs": 2, "batch_size": 16})
    with pytest.raises(ValueError, match="limit differ"):
        loop.train("baseline", data=tiny_csv, output_dir=out, verbose=0, limit=20,
                  overrides={"epochs": 2, "batch_size": 16})
    config = json.loads((run_folder.staging_folder(out) / "config.json").read_text())
    assert config["data_fingerprint"].startswith("sha256:")
    assert config["skip_bad_rows"] is False


def test_a_nan_validation_loss_stops_before_the_epoch_is_checkpointed(tiny_csv, tmp_path,
                                                                     monkeypatch):
    # The zoo's ReLUs and max-pools swallow NaN pixels, so the NaN is put in the epoch's
    # logs directly, by EpochTimer, the first callback. val_accuracy stays finite, as it
    # does when NaN probabilities are argmax-ed, so ModelCheckpoint alone would save.
    original = training.EpochTimer.on_epoch_end

    def nan_validation(self, epoch, logs=None):
        original(self, epoch, logs)
        logs["val_loss"] = float("nan")

    monkeypatch.setattr(training.EpochTimer, "on_epoch_end", nan_validation)
    out = tmp_path / "run"
    with pytest.raises(training.TrainingDiverged, match="val_loss became nan at epoch 1"):
        loop.train("baseline", data=tiny_csv, output_dir=out, verbose=0,
                  overrides={"epochs": 2, "batch_size": 16})
    staging = run_folder.staging_folder(out)
    assert not (staging / "model.keras").exists()
    assert not (staging / "backup").exists()
    assert not out.exists()


def test_stop_on_nan_checks_validation_metrics_at_epoch_end():
    guard = training.StopOnNaN()
    guard.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.2, "val_accuracy": 0.3})
    for key in ("val_loss", "val_accuracy"):
        with pytest.raises(training.TrainingDiverged, match=f"{key} became inf at epoch 4"):
            guard.on_epoch_end(3, {"loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.3,
                                   key: math.inf})


def test_fit_prints_progress_within_an_epoch_when_not_on_a_terminal(tiny_csv, tmp_path,
                                                                     capsys):
    loop.train("baseline", data=tiny_csv, output_dir=tmp_path / "run", verbose=2,
              progress_seconds=1e-9, overrides={"epochs": 1, "batch_size": 16})
    lines = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith("epoch 1/1: step ")]
    # 67 training images in batches of 16: a line after each step but the last.
    assert [line.split()[3] for line in lines] == ["1/5", "2/5", "3/5", "4/5"]
    assert all("images/s" in line and " left" in line for line in lines)


def test_scoring_a_large_input_prints_progress_to_stderr(capsys):
    from fer_keras.models import get_model

    model = get_model("baseline")
    images = np.zeros((fer_results.PROGRESS_MIN_BATCHES * 2, 48, 48, 1), np.uint8)
    fer_results.predict_probabilities(model, images, batch_size=2, progress_seconds=1e-9)
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert lines[0].startswith(f"scoring: step 1/{fer_results.PROGRESS_MIN_BATCHES}")
    assert len(lines) == fer_results.PROGRESS_MIN_BATCHES - 1
    # Small inputs stay quiet.
    fer_results.predict_probabilities(model, images[:4], batch_size=2, progress_seconds=1e-9)
    assert capsys.readouterr().err == ""
