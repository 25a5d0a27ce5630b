import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from fer_keras import export
from fer_keras.data.sources import CLASS_NAMES
from fer_keras.models import get_model, list_models
from fer_keras.serving import export as serving_export

IMAGES = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 1)).astype(np.uint8)


def _rgba_of(gray, seed=1):
    """An RGBA batch at twice the size whose `any_size` input is exactly `expected`.

    Each 2x2 block is one colour, R = G = B = gray, and fully opaque or fully transparent
    (with junk colour, which must be ignored); transparent blocks become white. So the
    gray, alpha and area-resize steps have an exact integer answer.
    """
    rng = np.random.default_rng(seed)
    opaque = rng.random(gray.shape) < 0.8
    junk = rng.integers(0, 256, gray.shape[:3] + (3,))
    rgb = np.where(opaque, np.repeat(gray, 3, axis=-1), junk)
    rgba = np.concatenate([rgb, 255 * opaque], axis=-1).astype(np.uint8)
    expected = np.where(opaque, gray, 255).astype(np.float32)
    return rgba.repeat(2, axis=1).repeat(2, axis=2), expected


RGBA, RGBA_EXPECTED = _rgba_of(IMAGES[:2].astype(np.int64))
# Every registered architecture, plus the one builder option that wraps the model in a
# layer of its own (test-time mirror averaging).
EXPORT_CASES = {**{name: (name, {}) for name in list_models()},
                "fer_vgg_mirror": ("fer_vgg", {"mirror_average": True})}
TFLITE_CHECKED = ("baseline", "deep_emotion", "dexpression")

# Runs in a fresh interpreter in which importing fer_keras is impossible, so the SavedModel
# must stand on its own (no custom layers, no registration).
RELOAD_SCRIPT = textwrap.dedent("""
    import json
    import sys
    import warnings

    sys.modules["fer_keras"] = None  # Any `import fer_keras` now raises ImportError.
    import numpy as np
    import tensorflow as tf

    folder, names = sys.argv[1], sys.argv[2:]
    images = np.load(f"{folder}/images.npy")
    rgba = np.load(f"{folder}/rgba.npy")

    def spec(tensor_spec):
        return [tensor_spec.dtype.name, tensor_spec.shape.as_list()]

    report = {}
    for name in names:
        loaded = tf.saved_model.load(f"{folder}/{name}")
        signatures = {}
        for key, function in loaded.signatures.items():
            signatures[key] = {
                "inputs": {k: spec(v) for k, v in function.structured_input_signature[1].items()},
                "outputs": {k: spec(v) for k, v in function.structured_outputs.items()},
            }
        served = loaded.signatures["serving_default"](image=tf.constant(images))
        any_size = loaded.signatures["any_size"](image=tf.constant(rgba))
        # Already 48x48 gray, `any_size` must agree with `serving_default` exactly.
        gray_any = loaded.signatures["any_size"](image=tf.constant(images))["probabilities"]
        np.save(f"{folder}/{name}.served.npy", served["probabilities"].numpy())
        np.save(f"{folder}/{name}.any_size.npy", any_size["probabilities"].numpy())
        entry = {"signatures": signatures,
                 "class_id": served["class_id"].numpy().tolist(),
                 "label": [label.decode() for label in served["label"].numpy()],
                 "labels_file": open(f"{folder}/{name}/assets/labels.txt").read().split("\\n"),
                 "gray_any_size_difference": float(np.abs(
                     gray_any.numpy() - served["probabilities"].numpy()).max())}
        tflite_path = f"{folder}/{name}.tflite"
        try:
            with open(tflite_path, "rb") as handle:
                content = handle.read()
        except FileNotFoundError:
            content = None
        if content is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                interpreter = tf.lite.Interpreter(model_content=content)
            runner = interpreter.get_signature_runner("serving_default")
            np.save(f"{folder}/{name}.tflite.npy", runner(image=images)["probabilities"])
        report[name] = entry
    report["_fer_keras_modules"] = sorted(name for name, module in sys.modules.items()
                                          if name.startswith("fer_keras") and module is not None)
    print(json.dumps(report))
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every registered architecture exported, reloaded in one fresh process, compared."""
    folder = tmp_path_factory.mktemp("exports")
    np.save(folder / "images.npy", IMAGES)
    np.save(folder / "rgba.npy", RGBA)
    keras.utils.set_random_seed(7)
    expected, expected_any, tflite = {}, {}, {}
    for name, (builder, kwargs) in EXPORT_CASES.items():
        model = get_model(builder, **kwargs)
        expected[name] = np.asarray(model(IMAGES.astype(np.float32), training=False))
        expected_any[name] = np.asarray(model(RGBA_EXPECTED, training=False))
        serving_export.write_savedmodel(model, folder / name)
        if name in TFLITE_CHECKED:
            tflite[name] = serving_export.convert_tflite(folder / name, folder / f"{name}.tflite")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(folder), *EXPORT_CASES],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {"folder": folder, "report": report, "expected": expected,
            "expected_any": expected_any, "tflite": tflite}


def test_reload_process_never_imported_fer_keras(exported):
    assert exported["report"]["_fer_keras_modules"] == []


@pytest.mark.parametrize("name", list(EXPORT_CASES))
def test_savedmodel_gives_the_keras_probabilities(name, exported):
    folder = exported["folder"]
    served = np.load(folder / f"{name}.served.npy")
    np.testing.assert_allclose(served, exported["expected"][name], rtol=0, atol=1e-5)
    entry = exported["report"][name]
    assert entry["class_id"] == np.argmax(served, axis=1).tolist()
    assert entry["label"] == [CLASS_NAMES[i] for i in entry["class_id"]]
    assert entry["labels_file"][:7] == list(CLASS_NAMES)


@pytest.mark.parametrize("name", list(EXPORT_CASES))
def test_any_size_signature_converts_colour_alpha_and_size(name, exported):
    any_size = np.load(exported["folder"] / f"{name}.any_size.npy")
    np.testing.assert_allclose(any_size, exported["expected_any"][name], rtol=0, atol=1e-5)
    assert exported["report"][name]["gray_any_size_difference"] < 1e-6


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_to_model_input_gray_alpha_and_area_resize(channels):
    import tensorflow as tf

    pixels = np.random.default_rng(channels).integers(0, 256, (2, 96, 96, channels))
    values = pixels.astype(np.float64)
    gray = values[..., :3] @ np.array([0.299, 0.587, 0.114]) if channels >= 3 \
        else values[..., 0]
    if channels in (2, 4):
        alpha = values[..., -1] / 255.0
        gray = gray * alpha + 255.0 * (1.0 - alpha)
    expected = gray.reshape(2, 48, 2, 48, 2).mean(axis=(2, 4))[..., None]
    image = tf.constant(pixels.astype(np.uint8))
    eager = serving_export.to_model_input(image)
    traced = tf.function(serving_export.to_model_input)(image)
    for result in (eager, traced):
        assert result.shape == (2, 48, 48, 1) and result.dtype == tf.float32
        np.testing.assert_allclose(np.asarray(result), expected, rtol=0, atol=1e-3)
    # Any other size works too, and stays within the pixel range.
    odd = serving_export.to_model_input(tf.constant(pixels[:, :61, :75].astype(np.uint8)))
    assert odd.shape == (2, 48, 48, 1)
    assert 0.0 <= float(tf.reduce_min(odd)) and float(tf.reduce_max(odd)) <= 255.0


@pytest.mark.parametrize("name", list(EXPORT_CASES))
def test_signature_names_dtypes_and_shapes(name, exported):
    signatures = exported["report"][name]["signatures"]
    assert set(signatures) == {"serving_default", "any_size"}
    outputs = {"probabilities": ["float32", [None, 7]], "class_id": ["int32", [None]],
               "label": ["string", [None]]}
    assert signatures["serving_default"] == {
        "inputs": {"image": ["uint8", [None, 48, 48, 1]]}, "outputs": outputs}
    assert signatures["any_size"] == {
        "inputs": {"image": ["uint8", [None, None, None, None]]}, "outputs": outputs}


@pytest.mark.parametrize("name", TFLITE_CHECKED)
def test_tflite_matches_the_keras_model(name, exported):
    written, message = exported["tflite"][name]
    assert written, message
    tflite = np.load(exported["folder"] / f"{name}.tflite.npy")
    np.testing.assert_allclose(tflite, exported["expected"][name], rtol=0, atol=1e-5)


def test_tflite_failure_is_reported_not_raised(tmp_path):
    (tmp_path / "not_a_savedmodel").mkdir()
    written, message = serving_export.convert_tflite(tmp_path / "not_a_savedmodel",
                                             tmp_path / "out.tflite")
    assert not written
    assert message.startswith("TFLite conversion failed:")
    assert not (tmp_path / "out.tflite").exists()


def test_cli_writes_tf_serving_layout_and_next_versions(tmp_path, capsys):
    run = tmp_path / "saved_models" / "lenet5"
    run.mkdir(parents=True)
    get_model("lenet5").save(run / "model.keras")
    assert export.main([str(run)]) == 0
    printed = capsys.readouterr().out
    version = run / "serving" / "1"
    assert (version / "saved_model.pb").is_file()
    assert (version / "variables").is_dir()
    assert (version / "assets" / "labels.txt").read_text().split() == list(CLASS_NAMES)
    extra = version / "assets.extra"
    assert (extra / "model.keras").read_bytes() == (run / "model.keras").read_bytes()
    assert (extra / "model.tflite").stat().st_size > 1000
    metadata = json.loads((extra / "export.json").read_text())
    assert metadata["tflite"]["written"] and metadata["class_names"] == list(CLASS_NAMES)
    assert "target=/models/fer" in printed and str(run / "serving") in printed
    # No partial folder is left behind, and TF Serving sees only numbered versions.
    assert [p.name for p in (run / "serving").iterdir()] == ["1"]

    assert export.main([str(run / "model.keras"), "--no-tflite"]) == 0
    assert serving_export.existing_versions(run / "serving") == [1, 2]
    assert not (run / "serving" / "2" / "assets.extra" / "model.tflite").exists()
    assert "not written: skipped" in capsys.readouterr().out

    assert export.main([str(run), "--version", "1"]) == 2
    assert "already exists" in capsys.readouterr().err and serving_export.next_version(
        run / "serving") == 3
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(run), "--version", "0"])
    assert exit_info.value.code == 2
    assert "--version: must be an integer >= 1" in capsys.readouterr().err


def test_cli_output_and_version_flags_and_bad_sources(tmp_path, capsys):
    model_file = tmp_path / "best.keras"
    get_model("baseline").save(model_file)
    source, default = serving_export.resolve_source(model_file)
    assert source == model_file and default == tmp_path / "best" / "serving"
    assert export.main([str(model_file), "--output", str(tmp_path / "serve"), "--version", "7",
                        "--no-tflite"]) == 0
    assert (tmp_path / "serve" / "7" / "saved_model.pb").is_file()
    capsys.readouterr()
    assert export.main([str(tmp_path / "missing")]) == 2
    assert "No such run folder" in capsys.readouterr().err
    (tmp_path / "empty_run").mkdir()
    assert export.main([str(tmp_path / "empty_run")]) == 2
    assert "without model.keras" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not a model")
    assert export.main([str(tmp_path / "notes.txt")]) == 2
    assert "Expected a run folder or a .keras file" in capsys.readouterr().err


XLA_RELOAD = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf

    sys.modules["fer_keras"] = None
    folder, name = sys.argv[1], sys.argv[2]
    served = tf.saved_model.load(f"{folder}/{name}").signatures["serving_default"]
    images = np.load(f"{folder}/images.npy")
    for size in (1, len(images)):  # two batch sizes: XLA compiles each once
        np.save(f"{folder}/{name}.{size}.npy",
                served(image=tf.constant(images[:size]))["probabilities"].numpy())
""")


@pytest.mark.parametrize("name", ["deep_emotion", "dexpression"])
def test_xla_export_serves_the_same_probabilities(name, tmp_path):
    keras.utils.set_random_seed(3)
    model = get_model(name)
    expected = np.asarray(model(IMAGES.astype(np.float32), training=False))
    serving_export.write_savedmodel(model, tmp_path / name, jit_compile=True)
    np.save(tmp_path / "images.npy", IMAGES)
    graph = (tmp_path / name / "saved_model.pb").read_bytes()
    assert b"_XlaMustCompile" in graph
    done = subprocess.run([sys.executable, "-c", XLA_RELOAD, str(tmp_path), name],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / f"{name}.1.npy"), expected[:1], atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / f"{name}.4.npy"), expected, atol=1e-5)


BAD_REQUESTS_SCRIPT = textwrap.dedent("""
    import json
    import sys

    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(sys.argv[1])
    report = []
    for signature, shape in json.loads(sys.argv[2]):
        try:
            result = loaded.signatures[signature](image=tf.zeros(shape, tf.uint8))
            report.append(["ok", list(result["probabilities"].shape)])
        except tf.errors.InvalidArgumentError as error:
            report.append(["error", error.message])
    print(json.dumps(report))
""")
BAD_REQUESTS = [
    ("serving_default", [1, 48, 48]),  # rank 3 aborted the process in oneDNN (exit 134)
    ("serving_default", [1, 40, 48, 1]),
    ("serving_default", [2, 48, 48, 3]),
    ("serving_default", [0, 48, 48, 1]),
    ("serving_default", [1, 48, 48, 1, 1]),
    ("serving_default", [2304]),
    ("any_size", [1, 48, 48]),
    ("any_size", [1, 0, 30, 1]),
    ("any_size", [1, 30, 30, 5]),
    ("any_size", [0, 30, 30, 3]),
]


def test_bad_request_shapes_raise_a_clear_error_instead_of_killing_the_process(tmp_path):
    serving_export.write_savedmodel(get_model("baseline"), tmp_path / "baseline")
    requests = BAD_REQUESTS + [("serving_default", [2, 48, 48, 1]), ("any_size", [1, 9, 7, 4])]
    done = subprocess.run([sys.executable, "-c", BAD_REQUESTS_SCRIPT, str(tmp_path / "baseline"),
                           json.dumps(requests)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for (signature, shape), (outcome, message) in zip(BAD_REQUESTS, report):
        assert outcome == "error", (signature, shape, message)
        if len(shape) <= 4:  # A fifth dimension is caught by tf.ensure_shape's own message.
            assert f"{signature} takes image as uint8" in message, message
            assert f"Received image shape:] [{' '.join(map(str, shape))}]" in message, message
        else:
            assert "not compatible with expected shape" in message, message
    assert "(batch, 48, 48, 1), batch >= 1" in report[0][1]
    assert report[-2:] == [["ok", [2, 7]], ["ok", [1, 7]]]
