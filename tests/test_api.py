"""fer_keras.Recognizer: the Python API over the predict code path."""

import doctest
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from PIL import Image

from fer_keras import api, predict
from fer_keras.data.sources import CLASS_NAMES
from fer_keras.models import get_model
from fer_keras.serving import runner
from fer_keras.vision import recognize

PORTRAIT = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
FACE_SHAPE = (120, 100)


def drawn_face(height=FACE_SHAPE[0], width=FACE_SHAPE[1]):
    """A gray, face-like drawing: oval head, two eyes, a nose and a smile."""
    image = np.full((height, width), 90, np.uint8)
    center = (width // 2, height // 2)
    cv2.ellipse(image, center, (width * 2 // 5, height * 9 // 20), 0, 0, 360, 200, -1)
    for side in (-1, 1):
        cv2.circle(image, (center[0] + side * width // 6, center[1] - height // 10),
                   max(2, width // 16), 30, -1)
    cv2.line(image, (center[0], center[1] - height // 20),
             (center[0], center[1] + height // 12), 120, 2)
    cv2.ellipse(image, (center[0], center[1] + height // 6), (width // 6, height // 16), 0,
                0, 180, 40, 2)
    return image


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder like `fit` writes: an untrained baseline and its metrics.json."""
    keras.utils.set_random_seed(3)
    folder = tmp_path_factory.mktemp("saved_models") / "baseline"
    folder.mkdir()
    get_model("baseline").save(folder / "model.keras")
    (folder / "metrics.json").write_text(json.dumps(
        {"splits": {"validation": {"accuracy": 0.4}, "private_test": {"accuracy": 0.35}}}))
    return folder


@pytest.fixture(scope="module")
def classifier(run_dir):
    return runner.Classifier(run_dir)


@pytest.fixture(scope="module")
def crops(classifier):
    """A recognizer that takes every image as one face crop."""
    return api.Recognizer(classifier, detect=False)


def classifier_probabilities(classifier, gray):
    """The Classifier's probabilities for a whole gray picture taken as the face."""
    crop = cv2.resize(gray, (48, 48), interpolation=cv2.INTER_AREA)
    return classifier(crop[None, ..., None])[0]


def probabilities_of(face):
    return np.array([face["probabilities"][name] for name in CLASS_NAMES])


def test_a_crop_gets_the_classifiers_probabilities(crops, classifier):
    face = drawn_face()
    [record] = crops.predict(face)
    assert sorted(record) == ["box", "class_id", "face", "label", "probabilities", "uncertain"]
    assert record["box"] == [0, 0, FACE_SHAPE[1], FACE_SHAPE[0]] and record["face"] == 0
    expected = classifier_probabilities(classifier, face)
    np.testing.assert_allclose(probabilities_of(record), expected, atol=1e-6)
    assert record["class_id"] == int(np.argmax(expected))
    assert record["label"] == CLASS_NAMES[record["class_id"]]
    assert record["uncertain"] is False  # No min_confidence: nothing is uncertain.


def test_gray_rgb_and_float_layouts_give_the_same_faces(crops):
    face = drawn_face()
    [reference] = crops.predict(face)
    layouts = {"gray (H, W, 1)": face[..., None],
               "RGB": np.dstack([face] * 3),
               "float 0-1": face / 255.0,
               "float 0-255": face.astype(np.float32),
               "int64 0-255": face.astype(np.int64),
               "RGBA opaque": np.dstack([face] * 3 + [np.full_like(face, 255)])}
    for name, image in layouts.items():
        [record] = crops.predict(image)
        assert record["probabilities"] == reference["probabilities"], name


def test_colour_and_transparency_are_read_as_their_image_files_are(crops, tmp_path):
    face = drawn_face()
    rgb = np.dstack([face, np.roll(face, 7, axis=1), 255 - face])
    rgba = np.dstack([rgb, np.full_like(face, 255)])
    rgba[:30, :, 3] = 0  # A transparent band over black: white once composited.
    rgba[:30, :, :3] = 0
    for name, image, mode in (("rgb.png", rgb, "RGB"), ("rgba.png", rgba, "RGBA")):
        Image.fromarray(image, mode).save(tmp_path / name)
        [from_array] = crops.predict(image)
        [from_file] = crops.predict(tmp_path / name)
        [from_text_path] = crops.predict(str(tmp_path / name))
        assert from_array == from_file == from_text_path, name
    np.testing.assert_array_equal(api.to_gray(rgba)[:30], 255)


def test_detection_finds_the_face_of_a_photo_and_none_in_a_wall(classifier):
    recognizer = api.Recognizer(classifier)
    [face] = recognizer.predict(PORTRAIT)
    x, y, width, height = face["box"]
    assert 120 < x < 180 and 70 < y < 130 and 200 < width < 260, face["box"]
    assert recognizer.predict(np.full((200, 300), 128, np.uint8)) == []


def test_a_batch_gives_one_list_per_item_and_batches_do_not_change_results(classifier):
    recognizer = api.Recognizer(classifier, detect=False, batch_size=2)
    items = [drawn_face(), drawn_face(90, 80), drawn_face()[::-1], drawn_face(60, 60)]
    batched = recognizer.predict(items)
    assert len(batched) == 4 and all(len(faces) == 1 for faces in batched)
    for item, faces in zip(items, batched):
        [alone] = recognizer.predict(item)
        np.testing.assert_allclose(probabilities_of(faces[0]), probabilities_of(alone),
                                   atol=2e-6)
    assert recognizer.predict(tuple(items[:2]))[1] == batched[1]
    assert recognizer.predict([]) == []


def test_uncertain_marks_faces_below_the_threshold(classifier):
    face = drawn_face()
    top = float(classifier_probabilities(classifier, face).max())
    above = api.Recognizer(classifier, detect=False, min_confidence=top + 1e-4)
    below = api.Recognizer(classifier, detect=False, min_confidence=top - 1e-4)
    assert above.predict(face)[0]["uncertain"] is True
    assert below.predict(face)[0]["uncertain"] is False
    assert api.Recognizer(classifier, detect=False, min_confidence=0).predict(face)[0][
        "uncertain"] is False


@pytest.mark.parametrize("bad, words", [
    (np.zeros((48, 48, 2), np.uint8), "(height, width, 3) RGB"),
    (np.zeros((2, 48, 48, 3), np.uint8), "list(x)"),
    (np.zeros(48, np.uint8), "channels last"),
    (np.zeros((0, 48), np.uint8), "empty"),
    (np.zeros((48, 48), bool), "integers 0-255"),
    (np.full((48, 48), 300.0), "0-255"),
    (np.full((48, 48), -1), "0-255"),
    (np.full((48, 48), np.nan), "NaN"),
    (48, "of type int"),
])
def test_bad_arrays_are_one_line_value_errors(crops, bad, words):
    with pytest.raises(ValueError) as raised:
        crops.predict(bad)
    message = str(raised.value)
    assert words in message and "Received: x" in message and "\n" not in message


def test_bad_files_are_one_line_value_errors_naming_the_item(crops, tmp_path):
    (tmp_path / "notes.png").write_text("a text file with an image suffix\n")
    buffer = Image.fromarray(drawn_face())
    buffer.save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 3])
    (tmp_path / "clip.mp4").write_bytes(b"")
    cases = [(tmp_path / "notes.png", "not an image"), (tmp_path / "cut.jpg", "truncated"),
             (tmp_path / "missing.png", "no such file"), (tmp_path, "is a folder"),
             (tmp_path / "clip.mp4", "predict_video")]
    for path, words in cases:
        with pytest.raises(ValueError) as raised:
            crops.predict([drawn_face(), path])
        message = str(raised.value)
        assert words in message and "Received: x[1]=" in message, message
        assert "\n" not in message


def test_bad_settings_are_refused(classifier):
    for kwargs, words in (({"min_confidence": 1.5}, "min_confidence"),
                          ({"min_confidence": "high"}, "min_confidence"),
                          ({"batch_size": 0}, "batch_size")):
        with pytest.raises(ValueError, match=words):
            api.Recognizer(classifier, **kwargs)


def test_info_names_the_run_and_its_label_set(crops, run_dir):
    info = crops.info
    assert info["class_names"] == list(CLASS_NAMES) and info["labels"] == "fer2013"
    assert info["packaged"] is False and info["source_run"] == run_dir.name
    assert info["selection_accuracy"] == 0.4 and info["private_test_accuracy"] == 0.35


def test_video_frames_match_the_predict_records(classifier, tmp_path):
    path = tmp_path / "clip.mp4"
    portrait = cv2.resize(cv2.imread(str(PORTRAIT)), (200, 240), interpolation=cv2.INTER_AREA)
    # Over 320 px wide, so the detector skips its enlarged search for tiny faces (slow).
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (330, 260))
    for index in range(5):
        frame = np.full((260, 330, 3), 200, np.uint8)
        frame[10:250, 20 + 5 * index:220 + 5 * index] = portrait
        writer.write(frame)
    writer.release()
    recognizer = api.Recognizer(classifier, min_confidence=0.5)
    frames = list(recognizer.predict_video(path, every=2))
    records = recognize.predict_video(path, classifier, recognizer.detector, every=2,
                                      progress=None, min_confidence=0.5)
    expected = {}
    for record in records:
        expected.setdefault((record["frame"], record["time"]), []).append(api.face_dict(record))
    assert [(frame["frame"], frame["time"]) for frame in frames] == [
        (0, 0.0), (2, 0.2), (4, 0.4)]
    assert {(frame["frame"], frame["time"]): frame["faces"] for frame in frames} == expected
    assert all(face["track"] == 0 and "uncertain" in face
               for frame in frames for face in frame["faces"])
    with pytest.raises(ValueError, match="Cannot read the video .*no such file"):
        list(recognizer.predict_video(tmp_path / "missing.mp4"))
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="Received: path="):
        list(recognizer.predict_video(tmp_path / "empty.mp4"))


def test_the_cli_marks_uncertain_faces_with_min_confidence(run_dir, tmp_path, capsys):
    Image.fromarray(drawn_face()).save(tmp_path / "face.png")
    args = [str(tmp_path / "face.png"), "--model", str(run_dir), "--no-detect"]
    assert predict.main(args) == 0
    assert "uncertain" not in json.loads(capsys.readouterr().out)
    assert predict.main([*args, "--min-confidence", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["uncertain"] is True
    assert predict.main([*args, "--min-confidence", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["uncertain"] is False
    with pytest.raises(SystemExit) as exited:
        predict.main([*args, "--min-confidence", "1.5"])
    assert exited.value.code == 2 and "--min-confidence" in capsys.readouterr().err


def test_docstring_examples_hold(run_dir, tmp_path, monkeypatch):
    # The default lookup finds this folder's saved_models/ run, as in a checkout.
    shutil.copytree(run_dir, tmp_path / "saved_models" / "baseline")
    shutil.copy(PORTRAIT, tmp_path / "portrait.jpg")
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(api, extraglobs={"photo": "portrait.jpg"})
    assert result.attempted >= 10 and result.failed == 0


def test_importing_the_package_imports_no_tensorflow_and_exports_recognizer():
    code = ("import sys, fer_keras\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
            "assert 'Recognizer' in dir(fer_keras)\n"
            "from fer_keras import Recognizer\n"
            "print(Recognizer.__module__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fer_keras.api"
