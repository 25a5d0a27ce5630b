"""LiteRT serving: the exported TFLite files (float, float16, int8) load, score and agree."""

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import random_rows, write_csv

from fer_keras import evaluate, export, predict
from fer_keras.data.sources import CLASS_NAMES, load_splits
from fer_keras.serving import evaluation, litert, runner
from fer_keras.serving import export as serving_export
from fer_keras.vision import images, recognize

REPO = Path(__file__).resolve().parents[1]
# A small trained model that is committed (0.9 MB), so the classes it gives are decisive
# rather than the near-ties of untrained weights.
TRAINED = REPO / "saved_models" / "baseline_deep_bn" / "model.keras"
PORTRAIT = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"


def portrait_faces(count=16, seed=0):
    """Face crops `(count, 48, 48, 1)` of matplotlib's sample portrait, each shifted,
    mirrored or re-lit differently, like a batch of faces a detector would cut out."""
    gray = images.load_gray(PORTRAIT)
    rng = np.random.default_rng(seed)
    crops = []
    for index in range(count):
        dx, dy = rng.integers(-25, 26, 2)
        crop = gray[100 + dy:330 + dy, 150 + dx:380 + dx]
        crop = cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA).astype(np.float32)
        crop = np.clip(crop * rng.uniform(0.6, 1.3) + rng.uniform(-30, 30), 0, 255)
        crops.append(crop[:, ::-1] if index % 2 else crop)
    return np.asarray(crops, np.uint8)[..., None]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The committed baseline_deep_bn run exported with float, int8 and float16 TFLite."""
    if not TRAINED.is_file():
        pytest.skip(f"committed model {TRAINED} not found")
    folder = tmp_path_factory.mktemp("litert")
    run = folder / "baseline_deep_bn"
    run.mkdir()
    shutil.copyfile(TRAINED, run / "model.keras")
    # Calibration reads the training split of this CSV: real face crops, so the int8
    # ranges fit faces (noise would calibrate them for noise). Test rows are noise.
    faces = portrait_faces(42, seed=1).reshape(42, -1)
    rows = [(index % 7, " ".join(map(str, face)), "Training")
            for index, face in enumerate(faces)]
    rows += random_rows(14, seed=2, usages=("PrivateTest",))
    csv = write_csv(folder / "fer2013.csv", rows)
    result = serving_export.export(run, quantize=["int8", "float16"], data=csv)
    return {"run": run, "csv": csv, "result": result,
            "savedmodel": Path(result["savedmodel"])}


def test_quantized_files_are_written_smaller_and_recorded(exported):
    extra = exported["savedmodel"] / "assets.extra"
    sizes = {name: (extra / name).stat().st_size
             for name in ("model.tflite", "model_int8.tflite", "model_float16.tflite")}
    # int8 weights take a quarter of float32's bytes, float16 half (plus the graph).
    assert sizes["model_int8.tflite"] < 0.4 * sizes["model.tflite"]
    assert sizes["model_float16.tflite"] < 0.65 * sizes["model.tflite"]
    metadata = json.loads((extra / "export.json").read_text())
    assert metadata["quantized"]["int8"]["written"]
    assert metadata["quantized"]["int8"]["representative_split"] == "train"
    training_faces = len(load_splits(exported["csv"])["train"][1])
    assert metadata["quantized"]["int8"]["representative_images"] == training_faces
    assert metadata["quantized"]["int8"]["agreement_with_float"] >= 0.9
    assert metadata["quantized"]["float16"]["written"]
    assert set(exported["result"]["quantized"]) == {"int8", "float16"}


def test_litert_gives_the_savedmodels_classes(exported):
    import tensorflow as tf

    faces = portrait_faces()
    served = tf.saved_model.load(str(exported["savedmodel"])).signatures["serving_default"]
    expected = served(image=tf.constant(faces))["probabilities"].numpy()
    lite = litert.TFLiteClassifier(exported["savedmodel"] / "assets.extra" / "model.tflite",
                                   num_threads=2)
    assert lite.runtime == "ai-edge-litert"
    probabilities = lite(faces)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert lite.predict(faces, batch_size=5).shape == (16, 7)


@pytest.mark.parametrize("kind", ["int8", "float16"])
def test_quantized_exports_load_score_and_mostly_agree(kind, exported):
    import tensorflow as tf

    faces = portrait_faces()
    served = tf.saved_model.load(str(exported["savedmodel"])).signatures["serving_default"]
    expected = served(image=tf.constant(faces))["probabilities"].numpy()
    path = exported["savedmodel"] / "assets.extra" / f"model_{kind}.tflite"
    probabilities = litert.TFLiteClassifier(path)(faces)
    assert probabilities.shape == (16, 7) and np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.02)
    agreement = np.mean(probabilities.argmax(axis=1) == expected.argmax(axis=1))
    assert agreement >= (0.99 if kind == "float16" else 0.75), agreement

    metrics = evaluation.evaluate(path, split="private_test", data=exported["csv"])
    assert metrics["count"] == 14 and 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["runtime"] == "ai-edge-litert"
    assert metrics["file_bytes"] == path.stat().st_size


def test_evaluate_cli_scores_a_tflite_file(exported, capsys):
    path = exported["savedmodel"] / "assets.extra" / "model.tflite"
    assert evaluate.main([str(path), "--data", str(exported["csv"]), "--split",
                          "private_test", "--threads", "1", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["model"] == str(path) and metrics["count"] == 14
    assert evaluate.main([str(path), "--data", str(exported["csv"]), "--no-mirror"]) == 2
    assert "--no-mirror needs the Keras model" in capsys.readouterr().err


def test_predict_runs_tflite_files_and_picks_the_exported_one(exported, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "portrait.jpg"), cv2.imread(str(PORTRAIT)))
    direct = runner.Classifier(exported["savedmodel"] / "assets.extra" / "model.tflite")
    picked = runner.Classifier(exported["run"], litert=True)
    assert picked.path == direct.path and picked.runtime == "ai-edge-litert"
    keras_model = runner.Classifier(exported["run"])
    records = {}
    for name, model in (("tflite", direct), ("keras", keras_model)):
        [records[name]] = recognize.predict([str(tmp_path / "portrait.jpg")], model=model,
                                          output=open(tmp_path / f"{name}.jsonl", "w"))
    assert records["tflite"]["label"] == records["keras"]["label"]
    for label in CLASS_NAMES:
        assert records["tflite"]["probabilities"][label] == pytest.approx(
            records["keras"]["probabilities"][label], abs=1e-5)

    assert predict.main([str(tmp_path / "portrait.jpg"), "--model", str(exported["run"]),
                         "--litert", "--threads", "1"]) == 0
    summary = capsys.readouterr().err
    assert "faces/s in the model (ai-edge-litert" in summary and "model.tflite" in summary
    with pytest.raises(ValueError, match="--litert needs a .tflite file"):
        runner.Classifier(tmp_path, litert=True)


def test_latency_is_measured_in_a_fresh_process(exported):
    path = exported["savedmodel"] / "assets.extra" / "model.tflite"
    timed = litert.measure_latency(path, 1, calls=20, warmup=2)
    assert timed["runtime"] == "ai-edge-litert"
    assert 0 < timed["latency_ms_median"] <= timed["latency_ms_p90"]
    assert "fer_keras" not in litert.LATENCY_PROBE
    with pytest.raises(ValueError, match="num_threads"):
        litert.measure_latency(path, 0)


def test_latency_falls_back_to_builtin_kernels_when_xnnpack_fails(exported, monkeypatch):
    import subprocess

    real_run = subprocess.run

    def xnnpack_refuses(command, **kwargs):
        # As LiteRT does on some int8 files: "failed to create XNNPACK runtime", exit 1.
        if command[-1] == "xnnpack":
            return subprocess.CompletedProcess(command, 1, "", "RuntimeError: failed to "
                                               "create XNNPACK runtime")
        return real_run(command, **kwargs)

    monkeypatch.setattr(litert.subprocess, "run", xnnpack_refuses)
    path = exported["savedmodel"] / "assets.extra" / "model.tflite"
    timed = litert.measure_latency(path, 1, calls=5, warmup=1)
    assert timed["xnnpack"] is False and timed["latency_ms_median"] > 0


def test_bad_tflite_paths_and_quantize_values(tmp_path):
    with pytest.raises(ValueError, match="Expected a .tflite file"):
        litert.TFLiteClassifier(tmp_path / "model.keras")
    with pytest.raises(ValueError, match="No such TFLite file"):
        litert.TFLiteClassifier(tmp_path / "missing.tflite")
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="cannot read"):
        litert.TFLiteClassifier(tmp_path / "junk.tflite")
    with pytest.raises(ValueError, match="quantize must be one of int8, float16"):
        serving_export.convert_tflite(tmp_path, tmp_path / "x.tflite", quantize="int4")
    with pytest.raises(ValueError, match="representative images"):
        serving_export.convert_tflite(tmp_path, tmp_path / "x.tflite", quantize="int8")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"")
    with pytest.raises(ValueError, match="cannot be combined with --no-tflite"):
        serving_export.export(tmp_path / "run", tflite=False, quantize=["float16"])
    with pytest.raises(ValueError, match="quantize must be among"):
        serving_export.export(tmp_path / "run", quantize=["int4"])


def test_tf_lite_fallback_when_litert_is_missing(exported, monkeypatch):
    faces = portrait_faces(4)
    path = exported["savedmodel"] / "assets.extra" / "model.tflite"
    expected = litert.TFLiteClassifier(path)(faces)
    # A None entry in sys.modules makes `import ai_edge_litert.interpreter` fail.
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    assert litert.runtime_name() == "tf.lite (fallback)"
    fallback = litert.TFLiteClassifier(path)
    assert fallback.runtime == "tf.lite (fallback)"
    np.testing.assert_allclose(fallback(faces), expected, atol=1e-6)


def test_formats_compares_accuracy_latency_and_size(exported, tmp_path):
    from fer_keras import formats
    from fer_keras.reporting import report

    run = exported["run"]
    (run / "metrics.json").write_text(json.dumps(
        {"splits": {"private_test": {"accuracy": 0.5}}}))
    assert formats.main([str(run), "--data", str(exported["csv"]), "--calls", "5",
                         "--save", str(tmp_path / "formats.json")]) == 0
    saved = json.loads((tmp_path / "formats.json").read_text())
    rows = {row["format"]: row for row in saved["results"]}
    assert list(rows) == ["float32", "float16", "int8"]
    for row in rows.values():
        assert row["points_vs_keras"] == pytest.approx(100 * (row["accuracy"] - 0.5), abs=0.01)
        assert 0 < row["threads_1_latency_ms_median"] <= row["threads_1_latency_ms_p90"]
    assert rows["int8"]["bytes"] < rows["float16"]["bytes"] < rows["float32"]["bytes"]
    table = report.render_results_readme([], formats=saved)
    assert "## Serving formats" in table and "| `baseline_deep_bn` | int8 |" in table
    assert formats.main([str(tmp_path), "--calls", "5"]) == 2  # not a run folder


def test_export_warns_when_int8_breaks_the_model(exported, tmp_path, monkeypatch, capsys):
    # As int8 does to deep_emotion's spatial transformer (21% PrivateTest instead of 52%).
    monkeypatch.setattr(serving_export, "class_agreement", lambda *args: 0.3)
    assert export.main([str(exported["run"]), "--output", str(tmp_path / "serving"),
                        "--quantize", "int8", "--data", str(exported["csv"])]) == 0
    captured = capsys.readouterr()
    assert "int8:" in captured.out and "model_int8.tflite" in captured.out
    assert "gives the float file's class to only 30%" in captured.err
    metadata = json.loads((tmp_path / "serving" / "1" / "assets.extra" /
                           "export.json").read_text())
    assert metadata["quantized"]["int8"]["agreement_with_float"] == 0.3
    assert "float16" not in metadata["quantized"]


def test_int8_keeps_the_spatial_transformers_sampler_in_float(tmp_path):
    """Fully quantized, deep_emotion's sampler picks pixels whole pixels off and the net
    collapses (21% PrivateTest); the export keeps the sampler's ops in float."""
    committed = REPO / "saved_models" / "deep_emotion" / "model.keras"
    if not committed.is_file():
        pytest.skip(f"committed model {committed} not found")
    from fer_keras.models import load_model

    assert serving_export.float_ops_for(load_model(committed)) == serving_export.SAMPLER_FLOAT_OPS
    assert serving_export.float_ops_for(load_model(TRAINED)) is None
    run = tmp_path / "deep_emotion"
    run.mkdir()
    shutil.copyfile(committed, run / "model.keras")
    faces = portrait_faces(42, seed=1).reshape(42, -1)
    rows = [(index % 7, " ".join(map(str, face)), "Training")
            for index, face in enumerate(faces)]
    csv = write_csv(tmp_path / "fer2013.csv", rows)
    result = serving_export.export(run, quantize=["int8"], data=csv)
    extra = Path(result["savedmodel"]) / "assets.extra"
    metadata = json.loads((extra / "export.json").read_text())["quantized"]["int8"]
    assert metadata["float_ops"] == list(serving_export.SAMPLER_FLOAT_OPS)
    # The int8 file gives the float file's class on new crops of the portrait.
    crops = portrait_faces(32, seed=5)
    float_classes = litert.TFLiteClassifier(extra / "model.tflite")(crops).argmax(1)
    int8_classes = litert.TFLiteClassifier(extra / "model_int8.tflite")(crops).argmax(1)
    assert np.mean(float_classes == int8_classes) >= 0.9
