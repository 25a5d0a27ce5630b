"""The packaged default model: the rule that picks it, the command that copies it, the
default lookup that falls back on it, and the wheel that ships it."""

import doctest
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fer_keras import __version__, console, package_model
from fer_keras.serving import packaged, runner

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "fer_keras" / "assets"
WHEEL_LIMIT_BYTES = 15_000_000


def fake_run(root, name, accuracy, model_bytes=1000, private=0.5, **fields):
    """A run folder with a metrics.json and a model.keras of `model_bytes` bytes (sparse;
    the rule reads sizes and copies bytes, it never loads the model)."""
    folder = root / name
    folder.mkdir(parents=True)
    metrics = {"splits": {"validation": {"accuracy": accuracy},
                          "private_test": {"accuracy": private}}, **fields}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if model_bytes is not None:
        with open(folder / "model.keras", "wb") as handle:
            handle.write(name.encode())
            handle.truncate(model_bytes)
    return folder


ELIGIBLE = {"labels": "ferplus", "calibration": {"bins": 15}}
"""What a run needs besides size and accuracy: FER+ labels and a calibration block."""


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "saved_models"
    fake_run(root, "small_calibrated", 0.70, model="calibrated", protocol="kaggle",
             selection_split="public_test", private=0.71, forward_passes_per_face=2,
             **ELIGIBLE)
    fake_run(root, "plain", 0.65, model="fer_vgg", **ELIGIBLE)
    fake_run(root, "at_the_limit", 0.69, model_bytes=packaged.MAX_MODEL_BYTES, **ELIGIBLE)
    fake_run(root, "ensemble_best", 0.75, model="ensemble", **ELIGIBLE)
    fake_run(root, "fer2013_best", 0.80, model="fer_vgg", calibration={})
    fake_run(root, "uncalibrated", 0.78, model="fer_vgg", labels="ferplus")
    fake_run(root, "ten_views", 0.79, model="tta", forward_passes_per_face=10, **ELIGIBLE)
    fake_run(root, "too_big", 0.72, model_bytes=packaged.MAX_MODEL_BYTES + 1, **ELIGIBLE)
    fake_run(root, "unfinished", 0.90, model_bytes=None)
    return root


def test_the_rule_picks_the_best_small_calibrated_ferplus_network(runs):
    run, metrics, skipped = packaged.choose_default_run(runs)
    assert run == runs / "small_calibrated" and metrics["model"] == "calibrated"
    assert skipped["ensemble_best"].startswith("an ensemble")
    assert skipped["fer2013_best"] == "trained on fer2013 labels, not ferplus"
    assert skipped["uncalibrated"].startswith("not calibrated")
    assert skipped["ten_views"] == "10 forward passes per face, over 2"
    assert skipped["too_big"].startswith("model.keras is 6.0 MB, over 6 MB")
    assert skipped["unfinished"] == "no model.keras"
    # Exactly at the limit is allowed; it only lost on accuracy.
    assert skipped["at_the_limit"] == skipped["plain"] == "lower selection accuracy"


def test_no_eligible_run_is_a_one_line_error(tmp_path):
    fake_run(tmp_path, "ensemble_only", 0.75, model="ensemble")
    with pytest.raises(ValueError) as raised:
        packaged.choose_default_run(tmp_path)
    message = str(raised.value)
    assert "ensemble_only: an ensemble" in message and "--root" in message
    assert "\n" not in message


def test_packaging_writes_the_model_and_its_record_and_keeps_an_identical_one(runs, tmp_path):
    output = tmp_path / "assets"
    info, status = packaged.package_default_model(runs, output)
    assert status == "written"
    source = runs / "small_calibrated" / "model.keras"
    copied = output / packaged.MODEL_ASSET
    assert copied.read_bytes() == source.read_bytes()
    record = json.loads((output / packaged.INFO_ASSET).read_text())
    assert record == info
    assert record["source_run"] == "small_calibrated" and record["model"] == "calibrated"
    assert record["selection_split"] == "public_test" and record["protocol"] == "kaggle"
    assert (record["selection_accuracy"], record["private_test_accuracy"]) == (0.70, 0.71)
    assert record["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["bytes"] == 1000 and record["labels"] == "ferplus"
    assert record["rule"] == packaged.RULE
    stamp = copied.stat().st_mtime_ns
    assert packaged.package_default_model(runs, output)[1] == "unchanged"
    assert copied.stat().st_mtime_ns == stamp
    assert not [path for path in output.iterdir() if path.name.startswith(".")]


def test_a_different_packaged_model_is_replaced_only_with_overwrite(runs, tmp_path, capsys):
    output = tmp_path / "assets"
    args = ["--root", str(runs), "--output", str(output)]
    assert package_model.main(args) == 0
    assert "written" in capsys.readouterr().out
    fake_run(runs, "newer", 0.705, model="fer_vgg", **ELIGIBLE)
    before = {path.name: path.read_bytes() for path in output.iterdir()}
    assert package_model.main(args) == 2
    error = capsys.readouterr().err
    assert "from small_calibrated; the rule now picks newer" in error and "--overwrite" in error
    assert {path.name: path.read_bytes() for path in output.iterdir()} == before
    assert package_model.main([*args, "--overwrite"]) == 0
    assert "replaced" in capsys.readouterr().out
    assert json.loads((output / packaged.INFO_ASSET).read_text())["source_run"] == "newer"
    assert package_model.main(args) == 0
    assert "unchanged" in capsys.readouterr().out


def test_the_packaged_asset_is_what_the_rule_picks_now():
    info = json.loads((ASSETS / packaged.INFO_ASSET).read_text())
    model = ASSETS / packaged.MODEL_ASSET
    assert model.stat().st_size == info["bytes"] <= packaged.MAX_MODEL_BYTES
    assert packaged.sha256_of(model) == info["sha256"]
    run, metrics, _ = packaged.choose_default_run(REPO / "saved_models")
    assert info["source_run"] == run.name, (
        "the packaged model is stale; refresh it with "
        "`python -m fer_keras.package_model --overwrite`")
    assert packaged.sha256_of(run / "model.keras") == info["sha256"]
    assert info["selection_accuracy"] == metrics["splits"]["validation"]["accuracy"]
    assert info["private_test_accuracy"] == metrics["splits"]["private_test"]["accuracy"]
    assert packaged.packaged_model_file() == model
    assert packaged.packaged_model_info() == info


def test_the_default_lookup_falls_back_on_the_packaged_model(runs, tmp_path, monkeypatch):
    # A run under saved_models/ comes first, chosen as before (any run, best validation).
    assert runner.default_model(runs) == runner.find_best_model(runs) == runs / "fer2013_best"
    empty = tmp_path / "nothing_here"
    assert runner.default_model(empty) == ASSETS / packaged.MODEL_ASSET
    monkeypatch.setattr(runner, "packaged_model_file", lambda: None)
    with pytest.raises(ValueError) as raised:
        runner.default_model(empty)
    message = str(raised.value)
    assert message.startswith("No trained model found") and "\n" not in message
    assert "--model DIR_OR_FILE" in message and "packaged model" in message


def test_version_names_the_packaged_model(capsys, monkeypatch):
    assert console.main(["--version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    info = packaged.packaged_model_info()
    assert lines[0] == f"fer_keras {__version__}"
    assert lines[1].startswith(f"packaged model: {info['source_run']} (ferplus labels; ")
    assert f"PrivateTest {100 * info['private_test_accuracy']:.2f}%" in lines[1]
    assert f"{100 * info['selection_accuracy']:.2f}% (selection split)" in lines[1]
    monkeypatch.setattr(packaged, "packaged_model_info", lambda: None)
    assert console.main(["--version"]) == 0
    assert "packaged model: none" in capsys.readouterr().out


def test_docstring_examples_hold():
    result = doctest.testmod(packaged)
    assert result.attempted >= 3 and result.failed == 0


def _source_copy(destination):
    """The files a wheel is built from, copied so the build writes nothing in the checkout."""
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, destination / name)
    shutil.copytree(REPO / "fer_keras", destination / "fer_keras",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    return destination


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    source = _source_copy(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                           "--no-build-isolation", "--no-index", "-w", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    [built] = out.glob("fer_keras-*.whl")
    return built


def test_the_wheel_holds_the_packaged_model_and_stays_small(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "fer_keras/assets/default_model.keras" in names
    assert "fer_keras/assets/default_model.json" in names
    assert "fer_keras/api.py" in names
    assert wheel.stat().st_size <= WHEEL_LIMIT_BYTES, f"{wheel.stat().st_size:,} bytes"


def test_the_installed_wheel_predicts_from_an_empty_folder(wheel, tmp_path):
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", str(wheel), "--no-deps",
                           "--no-index", "--target", str(target)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    code = f"""
import importlib.resources, json, sys
import numpy as np
import fer_keras
assert fer_keras.__file__.startswith({str(target)!r}), fer_keras.__file__
model = importlib.resources.files("fer_keras") / "assets" / "default_model.keras"
assert model.is_file(), model
from fer_keras import Recognizer
face = np.full((96, 96), 120, np.uint8)
face[30:40, 25:40] = face[30:40, 56:71] = 30
face[65:70, 35:61] = 60
recognizer = Recognizer(detect=False, min_confidence=0.5)
[found] = recognizer.predict(face)
print(json.dumps({{"found": found, "info": recognizer.info, "model": str(model)}}))
"""
    environment = {**os.environ, "PYTHONPATH": str(target), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", code], cwd=empty, env=environment,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = json.loads((ASSETS / packaged.INFO_ASSET).read_text())
    assert result["info"]["packaged"] is True
    assert result["info"]["model"] == result["model"]
    assert result["model"].startswith(str(target))
    assert result["info"]["source_run"] == expected["source_run"]
    assert result["found"]["label"] in result["info"]["class_names"]
    assert sum(result["found"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert isinstance(result["found"]["uncertain"], bool)
