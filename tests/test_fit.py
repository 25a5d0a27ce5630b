import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from fer_keras import fit
from fer_keras.evaluate import main as evaluate_main
from fer_keras.models import list_models
from fer_keras.training import loop, resume, run_folder
from fer_keras.training import settings as training_settings
from fer_keras.training.experiments import STUDY_EXPERIMENTS, get_experiment, list_experiments

REPO = Path(__file__).resolve().parents[1]
RUN_FILES = {"model.keras", "history.csv", "config.json", "metrics.json",
             "learning_curves.png", "confusion_matrix.png"}


def test_thirteen_study_rows_are_registered_experiments():
    assert len(STUDY_EXPERIMENTS) == 13
    assert [get_experiment(name).study.row for name in STUDY_EXPERIMENTS] == list("ABCDEFGHIJKLM")
    for name in list_experiments():
        assert get_experiment(name).model in list_models()


def test_unknown_experiment_lists_valid_names():
    with pytest.raises(ValueError, match="Valid names: baseline, baseline_aug"):
        get_experiment("baseline_typo")


def test_flags_override_hparams_override_experiment():
    settings = training_settings.resolve_settings(
        "baseline_deep_dropout",
        overrides={"learning_rate": 0.01, "epochs": None},
        hparams={"learning_rate": 0.002, "dropout_rate": 0.25, "weight_decay": 1e-4})
    assert settings["learning_rate"] == 0.01
    assert settings["epochs"] == get_experiment("baseline_deep_dropout").epochs
    assert settings["model_kwargs"] == {"dropout_rate": 0.25}
    assert settings["weight_decay"] == 1e-4
    with pytest.raises(ValueError, match="neither a training setting"):
        training_settings.resolve_settings("baseline", overrides={"momentum": 0.9})


def test_fit_writes_every_output_and_evaluate_reads_it(tiny_csv, tmp_path, capsys):
    out = tmp_path / "run"
    metrics = loop.train("baseline_dropout_aug", data=tiny_csv, output_dir=out,
                        overrides={"epochs": 2, "batch_size": 16}, verbose=0)
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    assert not (out / "backup").exists()
    # The staging folder moved into place, and the lock file went with the process's lock.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "fer2013.csv", "run"]
    assert metrics["epochs_run"] == 2
    assert set(metrics["splits"]) == {"train", "validation", "public_test", "private_test"}
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["splits"]["validation"]["count"] == 17
    assert len(stored["splits"]["validation"]["confusion_matrix"]) == 7
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 2 and config["augmentation"] == "study"
    capsys.readouterr()
    assert evaluate_main([str(out / "model.keras"), "--data", str(tiny_csv), "--json",
                          "--split", "validation"]) == 0
    printed = json.loads(capsys.readouterr().out)
    best = stored["splits"]["validation"]["accuracy"]
    assert printed["accuracy"] == pytest.approx(best, abs=1e-6)

    # --verify rescores validation and PrivateTest against metrics.json, and catches a
    # recorded number that the model does not reproduce.
    model = str(out / "model.keras")
    assert evaluate_main(["--verify", model, "--data", str(tiny_csv)]) == 0
    assert capsys.readouterr().out.count("ok ") == 2
    # The run folder itself is taken too (its model.keras, beside its metrics.json).
    assert evaluate_main(["--verify", str(out), "--data", str(tiny_csv)]) == 0
    assert capsys.readouterr().out.count("ok ") == 2
    stored["splits"]["private_test"]["accuracy"] += 0.01
    (out / "metrics.json").write_text(json.dumps(stored))
    assert evaluate_main(["--verify", model, "--data", str(tiny_csv)]) == 1
    assert "DIFFERS" in capsys.readouterr().out
    assert evaluate_main([model, model]) == 2


def test_nan_loss_stops_with_a_clear_message(tiny_csv, tmp_path):
    from fer_keras.training.recipe import TrainingDiverged

    # 1e38 is a valid learning rate (finite, positive); Adam steps of that size overflow
    # float32 weights within a few batches, and the loss becomes NaN.
    with pytest.raises(TrainingDiverged, match="Lower --learning-rate"):
        loop.train("baseline", data=tiny_csv, output_dir=tmp_path / "nan",
                  overrides={"epochs": 3, "batch_size": 8, "learning_rate": 1e38}, verbose=0)



def test_cli_ends_a_diverged_run_with_status_1(tiny_csv, tmp_path, capsys):
    status = fit.main(["baseline", "--data", str(tiny_csv), "--output-dir",
                       str(tmp_path / "nan"), "--epochs", "2", "--batch-size", "8",
                       "--learning-rate", "1e38", "--verbose", "0"])
    assert status == 1
    assert "error:" in capsys.readouterr().err


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    missing = tmp_path / "missing.csv"
    assert fit.main(["baseline", "--data", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: FER2013 not found") and "missing.csv" in err
    assert fit.main(["no_such_experiment", "--data", str(missing)]) == 2
    assert "Valid names" in capsys.readouterr().err


def _run_fit(args, env):
    return subprocess.Popen([sys.executable, "-m", "fer_keras.fit", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_run_resumes_from_last_finished_epoch(tiny_csv, tmp_path):
    out = tmp_path / "resume"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    args = ["baseline", "--data", str(tiny_csv), "--epochs", "30", "--batch-size", "8",
            "--output-dir", str(out), "--verbose", "0"]
    first = _run_fit(args, env)
    # An unfinished run lives in the staging folder beside the run folder.
    metadata = run_folder.staging_folder(out) / "backup" / "training_metadata.json"
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None:
        if metadata.exists() and json.loads(metadata.read_text() or '{"epoch": 0}')["epoch"] >= 2:
            break
        time.sleep(0.2)
    assert first.poll() is None, "the run finished before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait()
    done = json.loads(metadata.read_text())["epoch"]
    second = _run_fit(args, env)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output
    assert f"after epoch {done}/30" in output
    epochs = np.loadtxt(out / "history.csv", delimiter=",", skiprows=1, usecols=0)
    np.testing.assert_array_equal(epochs, np.arange(30))
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 30


def test_resume_refuses_different_settings(tiny_csv, tmp_path):
    out = tmp_path / "guard"
    (out / "backup").mkdir(parents=True)
    (out / "backup" / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    (out / "config.json").write_text(json.dumps({"learning_rate": 0.5}))
    with pytest.raises(ValueError, match="different settings"):
        loop.train("baseline", data=tiny_csv, output_dir=out, overrides={"epochs": 2})


def test_end_to_end_fit_on_real_rows(real_data, tmp_path):
    out = tmp_path / "real"
    metrics = loop.train("baseline", data=real_data, output_dir=out, limit=400,
                        overrides={"epochs": 2}, verbose=0)
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    assert metrics["splits"]["validation"]["count"] == 400
    assert metrics["train_images_per_second"] > 0


def test_torn_backup_falls_back_to_the_previous_copy(tmp_path):
    import h5py

    backup = tmp_path / "backup"
    backup.mkdir()
    with h5py.File(backup / "latest.weights.h5.bkp", "w") as handle:
        handle["w"] = np.arange(3)
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n torn in the middle")
    (backup / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    (backup / "training_metadata.json.bkp").write_text('{"epoch": 2, "batch": 0}')
    resume._recover_torn_backup(backup)
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2
    with h5py.File(backup / "latest.weights.h5", "r") as handle:
        np.testing.assert_array_equal(handle["w"][()], np.arange(3))
    (backup / "latest.weights.h5").write_bytes(b"torn again")
    (backup / "latest.weights.h5.bkp").unlink()
    with pytest.raises(ValueError, match="Delete"):
        resume._recover_torn_backup(backup)


def test_evaluate_no_mirror_scores_the_wrapped_network_alone(tiny_csv, tmp_path, capsys):
    from fer_keras.data.sources import load_splits
    from fer_keras.models import get_model
    from fer_keras.training.results import predict_probabilities, score

    keras.utils.set_random_seed(11)
    model = get_model("fer_vgg", widths=(4, 8, 8, 8), dense_units=8, mirror_average=True)
    path = tmp_path / "mirror.keras"
    model.save(path)
    images, labels = load_splits(tiny_csv)["validation"]
    body = model.get_layer("mirror_average").model
    expected = {True: score(labels, predict_probabilities(model, images))["accuracy"],
                False: score(labels, predict_probabilities(body, images))["accuracy"]}
    for flags, mirror in (([], True), (["--no-mirror"], False)):
        capsys.readouterr()
        assert evaluate_main([str(path), "--data", str(tiny_csv), "--json", *flags]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["accuracy"] == pytest.approx(expected[mirror], abs=1e-9)
    plain = tmp_path / "plain.keras"
    get_model("baseline").save(plain)
    assert evaluate_main([str(plain), "--data", str(tiny_csv), "--no-mirror"]) == 2
    assert "no MirrorAverage layer" in capsys.readouterr().err
