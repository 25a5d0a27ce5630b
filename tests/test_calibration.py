"""Calibrated probabilities: the measures, the temperature fit, the layer, its exports and
the calibrate command."""

import json
import math

import keras
import numpy as np
import pytest

from fer_keras.accuracy import calibration
from fer_keras.accuracy.calibration import (
    brier_score,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability,
    temperature_scale,
)
from fer_keras.models import calibration as layers_calibration
from fer_keras.models import get_model, load_model
from fer_keras.models.calibration import TemperatureScaling, calibrated, temperature_of

LABELS = np.array([0, 1, 2, 0])
PROBABILITIES = np.array([[0.6, 0.3, 0.1],     # right, confidence 0.6
                          [0.2, 0.7, 0.1],     # right, 0.7
                          [0.5, 0.4, 0.1],     # wrong (says 0), 0.5
                          [0.25, 0.25, 0.5]])  # wrong (says 2), 0.5


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _planted(count=20000, temperature=3.0, seed=0):
    """Labels drawn from softmax(z), and the overconfident probabilities softmax(T z)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, (count, 7))
    true = _softmax(logits)
    labels = (rng.random((count, 1)) > np.cumsum(true, axis=1)).sum(axis=1)
    return labels, logits, _softmax(temperature * logits)


def test_measures_on_a_hand_computed_case():
    # Two bins: (0, 0.5] holds the two wrong faces at confidence 0.5 (gap 0.5 each),
    # (0.5, 1] the two right ones at 0.6 and 0.7 (mean 0.65, accuracy 1, gap 0.35).
    rows = reliability(LABELS, PROBABILITIES, bins=2)
    assert [row["count"] for row in rows] == [2, 2]
    assert rows[0]["confidence"] == pytest.approx(0.5) and rows[0]["accuracy"] == 0.0
    assert rows[1]["confidence"] == pytest.approx(0.65) and rows[1]["accuracy"] == 1.0
    assert expected_calibration_error(LABELS, PROBABILITIES, bins=2) == pytest.approx(0.425)
    assert negative_log_likelihood(LABELS, PROBABILITIES) == pytest.approx(
        -(math.log(0.6) + math.log(0.7) + math.log(0.1) + math.log(0.25)) / 4)
    # (0.16 + 0.09 + 0.01) + (0.04 + 0.09 + 0.01) + (0.25 + 0.16 + 0.81)
    # + (0.5625 + 0.0625 + 0.25), over 4 faces.
    assert brier_score(LABELS, PROBABILITIES) == pytest.approx(2.495 / 4)
    # 15 bins: 0.5 falls in (7/15, 8/15], 0.6 in (8/15, 9/15], 0.7 in (10/15, 11/15].
    counts = [row["count"] for row in reliability(LABELS, PROBABILITIES)]
    assert counts[7] == 2 and counts[8] == 1 and counts[10] == 1 and sum(counts) == 4


def test_a_sure_and_right_model_scores_zero_and_a_sure_and_wrong_one_the_worst():
    right = np.eye(3)[[0, 1, 2]]
    assert expected_calibration_error([0, 1, 2], right) == 0.0
    assert negative_log_likelihood([0, 1, 2], right) == 0.0
    assert brier_score([0, 1, 2], right) == 0.0
    assert expected_calibration_error([1, 2, 0], right) == 1.0
    assert brier_score([1, 2, 0], right) == 2.0
    assert negative_log_likelihood([1, 2, 0], right) == pytest.approx(-math.log(1e-12))


@pytest.mark.parametrize("call, message", [
    (lambda: brier_score([0, 1], PROBABILITIES), "one class id per row"),
    (lambda: brier_score([0, 1, 3, 0], PROBABILITIES), r"in \[0, 3\)"),
    (lambda: reliability(LABELS, PROBABILITIES, bins=0), "bins must be an integer >= 1"),
    (lambda: temperature_scale(PROBABILITIES, 0.0), "temperature must be"),
    (lambda: fit_temperature(LABELS, PROBABILITIES, bracket=(2, 1)), "bracket"),
    (lambda: TemperatureScaling(-1.0), "temperature must be"),
])
def test_bad_input_is_one_line_naming_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_fit_temperature_recovers_a_planted_temperature():
    labels, logits, overconfident = _planted(temperature=3.0)
    from_probabilities = fit_temperature(labels, overconfident)
    assert from_probabilities == pytest.approx(3.0, abs=0.15)
    assert fit_temperature(labels, 3.0 * logits) == pytest.approx(3.0, abs=0.15)
    # Deterministic, and about 1 for probabilities that are calibrated already.
    assert fit_temperature(labels, overconfident) == from_probabilities
    assert fit_temperature(labels, _softmax(logits)) == pytest.approx(1.0, abs=0.05)
    # Underconfident probabilities (softmax(z / 2)) are sharpened: T about 1/2.
    assert fit_temperature(labels, _softmax(logits / 2.0)) == pytest.approx(0.5, abs=0.03)


def test_calibration_keeps_every_prediction_and_lowers_nll_on_held_out_faces():
    labels, _, overconfident = _planted(count=6000, temperature=2.5, seed=1)
    fit, held_out = slice(0, 3000), slice(3000, None)
    temperature = fit_temperature(labels[fit], overconfident[fit])
    scaled = temperature_scale(overconfident[held_out], temperature)
    np.testing.assert_array_equal(scaled.argmax(axis=1),
                                  overconfident[held_out].argmax(axis=1))
    before, after = overconfident[held_out], scaled
    assert negative_log_likelihood(labels[held_out], after) < \
        negative_log_likelihood(labels[held_out], before) - 0.1
    # On 3,000 faces and 15 bins, sampling alone leaves an ECE of about 0.035 (that of the
    # true probabilities softmax(z) on them).
    assert expected_calibration_error(labels[held_out], after) < 0.05
    assert expected_calibration_error(labels[held_out], before) > 0.2
    assert brier_score(labels[held_out], after) < brier_score(labels[held_out], before)


def test_the_layer_matches_its_numpy_twin_and_uses_the_same_floor():
    assert calibration.PROBABILITY_FLOOR == layers_calibration.PROBABILITY_FLOOR
    probabilities = np.array([[0.7, 0.2, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25]], np.float32)
    for temperature in (0.4, 1.0, 2.5):
        layer = TemperatureScaling(temperature)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(probabilities)),
                                   temperature_scale(probabilities, temperature), atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(TemperatureScaling(2.0)(
        np.array([[0.8, 0.2]], np.float32))), [[2 / 3, 1 / 3]], atol=1e-6)


def test_calibrated_model_round_trips_through_save_and_load(tmp_path):
    network = get_model("baseline")
    model = calibrated(network, 0.5, name="baseline_calibrated")
    assert temperature_of(model) == 0.5 and temperature_of(network) is None
    images = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1)).astype("float32")
    expected = np.asarray(model(images, training=False))
    bare = np.asarray(network(images, training=False))
    np.testing.assert_allclose(expected, temperature_scale(bare, 0.5), atol=1e-5)
    assert np.abs(expected - bare).max() > 1e-3
    model.save(tmp_path / "model.keras")
    for loaded in (keras.models.load_model(tmp_path / "model.keras"),
                   load_model(tmp_path / "model.keras")):
        assert temperature_of(loaded) == 0.5
        np.testing.assert_allclose(np.asarray(loaded(images, training=False)), expected,
                                   atol=1e-6)
    with pytest.raises(ValueError, match="already ends in temperature scaling"):
        calibrated(model, 2.0)


def test_savedmodel_and_tflite_serve_the_calibrated_probabilities(tmp_path):
    from fer_keras.serving import export as serving_export
    from fer_keras.serving.runner import Classifier

    network = get_model("baseline")
    model = calibrated(network, 0.25)
    model.save(tmp_path / "model.keras")
    images = np.random.default_rng(2).integers(0, 256, (5, 48, 48, 1)).astype(np.uint8)
    expected = np.asarray(model(images.astype("float32"), training=False))
    assert np.abs(expected - np.asarray(network(images.astype("float32")))).max() > 1e-3
    result = serving_export.export(tmp_path / "model.keras", output=tmp_path / "serving")
    assert result["tflite"], result["tflite_message"]
    for path in (result["savedmodel"], result["tflite"]):
        np.testing.assert_allclose(Classifier(path)(images), expected, rtol=0, atol=1e-4)


def test_a_finished_calibrated_run_can_be_replaced_with_overwrite(tmp_path):
    from fer_keras.training.run_folder import refuse_finished_run

    folder = tmp_path / "run_calibrated"
    folder.mkdir()
    for name in ("model.keras", "config.json", "metrics.json", "confusion_matrix.png",
                 "reliability.png"):
        (folder / name).write_text("{}")
    with pytest.raises(ValueError):
        refuse_finished_run(folder, overwrite=False)
    refuse_finished_run(folder, overwrite=True)


def test_calibrate_command_writes_a_run_folder_that_verifies(tiny_csv, tmp_path, capsys):
    from fer_keras import calibrate, evaluate, fit
    from fer_keras.data.sources import load_splits
    from fer_keras.training.results import predict_probabilities

    run = tmp_path / "baseline"
    assert fit.main(["baseline", "--data", str(tiny_csv), "--epochs", "1", "--protocol",
                     "kaggle", "--output-dir", str(run), "--verbose", "0"]) == 0
    out = tmp_path / "baseline_calibrated"
    args = [str(run), "--output", str(out), "--data", str(tiny_csv)]
    assert calibrate.main(args) == 0
    assert "T = " in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert metrics["model"] == config["model"] == "calibrated"
    assert metrics["source"] == str(run) and metrics["protocol"] == "kaggle"
    assert (out / "reliability.png").stat().st_size > 0
    assert (out / "confusion_matrix.png").exists()
    record = metrics["calibration"]
    assert record["selection_split"] == "public_test"
    assert sorted(record["before"]) == sorted(record["after"]) == ["private_test",
                                                                    "public_test"]
    # The temperature is the one fitted on PublicTest (the kaggle selection split) from the
    # source model's probabilities, and least NLL there means no worse than T = 1.
    splits = load_splits(tiny_csv, protocol="kaggle")
    source = load_model(run / "model.keras")
    public_images, public_labels = splits["public_test"]
    assert record["temperature"] == pytest.approx(fit_temperature(
        public_labels, predict_probabilities(source, public_images)), rel=1e-4)
    assert record["after"]["public_test"]["nll"] <= record["before"]["public_test"]["nll"]
    # The written model is the source followed by the layer; predictions are unchanged.
    model = load_model(out / "model.keras")
    assert temperature_of(model) == pytest.approx(record["temperature"])
    private_images, private_labels = splits["private_test"]
    source_probabilities = predict_probabilities(source, private_images)
    probabilities = predict_probabilities(model, private_images)
    np.testing.assert_allclose(probabilities, temperature_scale(
        source_probabilities, record["temperature"]), atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(1), source_probabilities.argmax(1))
    assert metrics["splits"]["private_test"]["accuracy"] == pytest.approx(
        np.mean(source_probabilities.argmax(1) == private_labels))
    assert record["before"]["private_test"]["nll"] == pytest.approx(
        negative_log_likelihood(private_labels, source_probabilities), abs=1e-4)
    assert record["after"]["private_test"]["ece"] == pytest.approx(
        expected_calibration_error(private_labels, probabilities), abs=1e-4)
    assert evaluate.main(["--verify", str(out / "model.keras"), "--data",
                          str(tiny_csv)]) == 0
    verified = capsys.readouterr().out.splitlines()
    assert len(verified) == 2 and all(line.startswith("ok") for line in verified)
    # A second run without --overwrite leaves the finished one as it was.
    written = {path.name: path.read_bytes() for path in out.iterdir()}
    assert calibrate.main(args) == 2
    assert str(out) in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == written
    assert calibrate.main([str(out), "--output", str(tmp_path / "twice"), "--data",
                           str(tiny_csv)]) == 2
    assert "already calibrated" in capsys.readouterr().err


def test_fit_calibrate_writes_the_calibrated_run_beside_it(tiny_csv, tmp_path, capsys):
    from fer_keras import fit

    run = tmp_path / "runs" / "baseline"
    assert fit.main(["baseline", "--data", str(tiny_csv), "--epochs", "1",
                     "--output-dir", str(run), "--calibrate"]) == 0
    calibrated = run.with_name("baseline_calibrated")
    metrics = json.loads((calibrated / "metrics.json").read_text())
    assert metrics["model"] == "calibrated" and metrics["calibration"]["temperature"] > 0
    assert "Wrote the calibrated model to" in capsys.readouterr().out
    # A calibrated folder that cannot be replaced is refused before training starts: the
    # finished run stays byte for byte (with --overwrite it would be retrained first).
    (calibrated / "notes.txt").write_text("mine")
    before = (run / "model.keras").read_bytes()
    assert fit.main(["baseline", "--data", str(tiny_csv), "--epochs", "1",
                     "--output-dir", str(run), "--calibrate", "--overwrite"]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert (run / "model.keras").read_bytes() == before
