"""predict, evaluate and export refuse models they cannot read correctly, with one line
(issue 26, cases 11, 12 and 15): an unbuilt Sequential, an input of another kind, a model
ending in logits, an empty split, and a metrics.json without the scores formats needs."""

import json
import warnings

import keras
import numpy as np
import pytest
from conftest import random_rows, write_csv
from keras import layers
from PIL import Image

from fer_keras import evaluate, export, formats, predict
from fer_keras.serving import checks as model_checks
from fer_keras.serving import export as serving_export
from fer_keras.serving import formats as serving_formats
from fer_keras.serving import runner


def one_line_error(status, captured, *needles):
    """Asserts exit status 2 and a single `error:` line on stderr holding every needle."""
    err = captured.err
    assert status == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def small_model(input_shape=(48, 48, 1), activation="softmax", outputs=7):
    inputs = keras.Input(input_shape)
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3)(x))
    return keras.Model(inputs, layers.Dense(outputs, activation=activation)(x))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Model files: a good one, and one of each kind the commands must refuse or adapt to."""
    keras.utils.set_random_seed(5)
    folder = tmp_path_factory.mktemp("models")
    paths = {}

    def save(name, model):
        paths[name] = folder / f"{name}.keras"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns that the Sequential is unbuilt.
            model.save(paths[name])

    save("good", small_model())
    save("unbuilt", keras.Sequential([layers.Flatten(), layers.Dense(7, activation="softmax")]))
    save("any_size", small_model((None, None, 1)))
    save("colour", small_model((48, 48, 3)))
    save("large", small_model((64, 64, 1)))
    save("logits", small_model(activation=None))
    save("sigmoid", small_model(activation="sigmoid"))
    return paths


@pytest.fixture
def face(tmp_path):
    path = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48), np.uint8)).save(path)
    return path


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_unbuilt_sequential_is_one_line(command, models, face, tiny_csv, tmp_path, capsys):
    path = models["unbuilt"]
    argv = {"predict": (predict.main, [str(face), "--model", str(path), "--no-detect"]),
            "evaluate": (evaluate.main, [str(path), "--data", str(tiny_csv)]),
            "export": (export.main, [str(path), "--no-tflite", "--output",
                                     str(tmp_path / "serving")])}
    main, args = argv[command]
    one_line_error(main(args), capsys.readouterr(), f"{path} has no input shape: it was "
                   "saved before being built; build it")
    assert not (tmp_path / "serving").exists()


def test_open_input_size_is_fed_48x48_faces(models, face, capsys):
    classifier = runner.Classifier(models["any_size"])
    assert classifier.size == (48, 48)
    assert predict.main([str(face), "--model", str(models["any_size"]), "--no-detect"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["box"] == [0, 0, 48, 48]
    assert abs(sum(record["probabilities"].values()) - 1) < 1e-4


def test_colour_and_other_size_models_are_refused_where_they_cannot_work(
        models, face, tiny_csv, capsys):
    colour = models["colour"]
    one_line_error(predict.main([str(face), "--model", str(colour), "--no-detect"]),
                   capsys.readouterr(), str(colour), "(48, 48, 3)", "(48, 48, 1)")
    # predict resizes each crop to the model's own size; evaluate has 48x48 faces only.
    large = models["large"]
    assert runner.Classifier(large).size == (64, 64)
    one_line_error(evaluate.main([str(large), "--data", str(tiny_csv)]), capsys.readouterr(),
                   str(large), "(64, 64, 1)", "(48, 48, 1)")


def test_export_refuses_an_open_input_size_before_writing(models, tmp_path, capsys):
    one_line_error(export.main([str(models["any_size"]), "--no-tflite", "--output",
                                str(tmp_path / "serving")]), capsys.readouterr(),
                   str(models["any_size"]), "(None, None, 1)", "not fully fixed", "(48, 48, 1)")
    assert not (tmp_path / "serving").exists()


@pytest.mark.parametrize("kind, problem", [("logits", "negative values"),
                                           ("sigmoid", "rows summing to")])
@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_a_model_without_softmax_is_refused(command, kind, problem, models, face, tiny_csv,
                                            tmp_path, capsys):
    path = models[kind]
    argv = {"predict": (predict.main, [str(face), "--model", str(path), "--no-detect"]),
            "evaluate": (evaluate.main, [str(path), "--data", str(tiny_csv)]),
            "export": (export.main, [str(path), "--no-tflite", "--output",
                                     str(tmp_path / "serving")])}
    main, args = argv[command]
    status = main(args)
    captured = capsys.readouterr()
    assert "probabilities" not in captured.out  # no record printed with nonsense in it
    one_line_error(status, captured, f"{path} does not output probabilities", problem,
                   "softmax")
    assert not (tmp_path / "serving").exists()


@pytest.fixture(scope="module")
def logits_exports(models, tmp_path_factory):
    """A SavedModel and a TFLite file of the logits model, written around export's check
    (as an export from before it would have been)."""
    folder = tmp_path_factory.mktemp("logits_export")
    savedmodel = serving_export.write_savedmodel(keras.saving.load_model(models["logits"]),
                                         folder / "1")
    written, message = serving_export.convert_tflite(savedmodel, folder / "logits.tflite")
    assert written, message
    return savedmodel, folder / "logits.tflite"


def test_logits_savedmodel_and_tflite_are_refused(logits_exports, face, tiny_csv, capsys):
    savedmodel, tflite = logits_exports
    for path in (savedmodel, tflite):
        one_line_error(predict.main([str(face), "--model", str(path), "--no-detect"]),
                       capsys.readouterr(), f"{path} does not output probabilities")
    one_line_error(evaluate.main([str(tflite), "--data", str(tiny_csv)]), capsys.readouterr(),
                   f"{tflite} does not output probabilities")


def test_good_model_passes_every_check(models, face, tiny_csv, tmp_path, capsys):
    path = models["good"]
    assert predict.main([str(face), "--model", str(path), "--no-detect"]) == 0
    assert evaluate.main([str(path), "--data", str(tiny_csv), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["count"] > 0


def test_check_probabilities_tolerates_rounding_only():
    rows = np.full((4, 7), 1 / 7)
    assert model_checks.check_probabilities(rows, "m").shape == (4, 7)
    # An int8 file's probabilities come in steps of 1/256.
    model_checks.check_probabilities(np.round(rows * 256) / 256, "m")
    for bad, problem in [(rows * 2, "rows summing to 2"),
                         (np.tile([-0.1, 1.1, 0, 0, 0, 0, 0], (4, 1)), "negative values"),
                         (np.where(np.eye(7)[:4] > 0, np.nan, rows), "NaN")]:
        with pytest.raises(ValueError, match=problem):
            model_checks.check_probabilities(bad, "m")


@pytest.fixture
def train_only_csv(tmp_path):
    return write_csv(tmp_path / "train_only.csv", random_rows(70))


def test_empty_split_is_one_line(models, train_only_csv, capsys):
    line = one_line_error(evaluate.main([str(models["good"]), "--split", "private_test",
                                         "--data", str(train_only_csv)]), capsys.readouterr(),
                          f"The split private_test is empty in {train_only_csv}",
                          "it holds only: Training (70 rows)", "PrivateTest")
    assert "PublicTest" not in line.split("holds only:")[1].split(")")[0]


def test_verify_refuses_an_empty_split_and_metrics_without_scores(models, train_only_csv,
                                                                  tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(models["good"].read_bytes())
    (run / "metrics.json").write_text(json.dumps(
        {"splits": {"validation": {"accuracy": 0.3}, "private_test": {"accuracy": 0.3}}}))
    one_line_error(evaluate.main(["--verify", str(run / "model.keras"), "--data",
                                  str(train_only_csv)]), capsys.readouterr(),
                   "The split private_test is empty")
    (run / "metrics.json").write_text("{}")
    one_line_error(evaluate.main(["--verify", str(run / "model.keras"), "--data",
                                  str(train_only_csv)]), capsys.readouterr(),
                   f"{run / 'metrics.json'} lacks the key 'splits'")


@pytest.mark.parametrize("metrics, missing", [
    ({}, "'splits'"), ([1, 2], "'splits'"), ({"splits": []}, "'splits'"),
    ({"splits": {"validation": {"accuracy": 0.4}}}, "'splits.private_test'"),
    ({"splits": {"private_test": {}}}, "'splits.private_test.accuracy'"),
    ({"splits": {"private_test": {"accuracy": "high"}}}, "'splits.private_test.accuracy'"),
])
def test_formats_names_the_file_and_the_missing_key(metrics, missing, models, tmp_path,
                                                    monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(models["good"].read_bytes())
    (run / "metrics.json").write_text(json.dumps(metrics))
    # Nothing slow starts for a run that cannot be compared.
    monkeypatch.setattr(serving_formats, "export", lambda *a, **k: pytest.fail("export started"))
    one_line_error(formats.main([str(run)]), capsys.readouterr(),
                   f"{run / 'metrics.json'} lacks the key {missing}")


def test_formats_names_a_metrics_file_that_is_not_json(models, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(models["good"].read_bytes())
    (run / "metrics.json").write_text("{not json")
    one_line_error(formats.main([str(run)]), capsys.readouterr(),
                   f"{run / 'metrics.json'} cannot be read as JSON")


def test_a_model_saved_with_a_one_element_input_list_loads_to_take_a_bare_batch(tmp_path):
    # keras.Model([image], ...) records its input as a list, and Keras then warns at every
    # call with a batch ("The structure of `inputs` doesn't match"): the packaged model of
    # 0.1.0 is such a file. load_model gives the same graph around the bare input.
    from fer_keras.models import load_model

    image = keras.Input((48, 48, 1), name="image")
    listed = keras.Model([image], keras.layers.Dense(7, activation="softmax")(
        keras.layers.Flatten()(image)))
    path = tmp_path / "listed.keras"
    listed.save(path)
    batch = np.random.default_rng(0).random((3, 48, 48, 1)).astype("float32")
    loaded = load_model(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        called = keras.ops.convert_to_numpy(loaded(batch))
        predicted = loaded.predict(batch, verbose=0)
    expected = keras.ops.convert_to_numpy(listed.predict(batch, verbose=0))
    np.testing.assert_allclose(called, expected, atol=1e-6)
    np.testing.assert_allclose(predicted, expected, atol=1e-6)
