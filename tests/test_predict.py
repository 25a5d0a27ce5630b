import io
import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from PIL import Image

from fer_keras import predict
from fer_keras.data.sources import CLASS_NAMES
from fer_keras.models import get_model
from fer_keras.serving import runner
from fer_keras.serving.export import write_savedmodel
from fer_keras.vision import images, recognize

# A real photograph that matplotlib ships (its sample data), so no download is needed.
PORTRAIT = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
PORTRAIT_FACE = (150, 100, 230, 230)  # x, y, width, height, found by eye.


def drawn_face(height=120, width=100):
    """A gray, face-like drawing: oval head, two eyes, brows, a nose and a smile."""
    image = np.full((height, width), 90, np.uint8)
    center = (width // 2, height // 2)
    cv2.ellipse(image, center, (width * 2 // 5, height * 9 // 20), 0, 0, 360, 200, -1)
    for side in (-1, 1):
        eye = (center[0] + side * width // 6, center[1] - height // 10)
        cv2.circle(image, eye, max(2, width // 16), 30, -1)
        cv2.line(image, (eye[0] - width // 12, eye[1] - height // 12),
                 (eye[0] + width // 12, eye[1] - height // 12), 60, 2)
    cv2.line(image, (center[0], center[1] - height // 20), (center[0], center[1] + height // 12),
             120, 2)
    cv2.ellipse(image, (center[0], center[1] + height // 6), (width // 6, height // 16), 0, 0,
                180, 40, 2)
    return image


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder like `fit` writes: an untrained baseline and its metrics.json."""
    keras.utils.set_random_seed(3)
    folder = tmp_path_factory.mktemp("saved_models") / "baseline"
    folder.mkdir()
    get_model("baseline").save(folder / "model.keras")
    (folder / "metrics.json").write_text(json.dumps(
        {"splits": {"validation": {"accuracy": 0.4}}}))
    return folder


@pytest.fixture(scope="module")
def classifier(run_dir):
    return runner.Classifier(run_dir)


def expected_probabilities(classifier, gray):
    """What the model says for a whole gray image taken as the face, resized independently."""
    crop = cv2.resize(gray, (48, 48), interpolation=cv2.INTER_AREA)
    return classifier.model.predict(crop[None, ..., None].astype(np.float32), verbose=0)[0]


def run(paths, classifier, **kwargs):
    stream = io.StringIO()
    records = recognize.predict([str(p) for p in paths], model=classifier, output=stream,
                              **kwargs)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines == records
    return records


def test_no_detect_classifies_a_drawn_face(tmp_path, classifier):
    face = drawn_face()
    Image.fromarray(face).save(tmp_path / "face.png")
    [record] = run([tmp_path / "face.png"], classifier, detect=False)
    assert record["file"] == str(tmp_path / "face.png")
    assert record["face"] == 0 and record["box"] == [0, 0, 100, 120]
    probabilities = np.array([record["probabilities"][name] for name in CLASS_NAMES])
    np.testing.assert_allclose(probabilities, expected_probabilities(classifier, face),
                               atol=2e-6)
    assert record["class_id"] == int(np.argmax(probabilities))
    assert record["label"] == CLASS_NAMES[record["class_id"]]


def test_rgba_png_is_composited_over_white(tmp_path, classifier):
    face = drawn_face()
    rgba = np.dstack([face, face, face, np.full_like(face, 255)])
    rgba[:30, :, 3] = 0  # A transparent band (with black colour under it) at the top.
    rgba[:30, :, :3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "face_rgba.png")
    gray = images.load_gray(tmp_path / "face_rgba.png")
    expected = face.copy()
    expected[:30] = 255
    np.testing.assert_array_equal(gray, expected)
    [record] = run([tmp_path / "face_rgba.png"], classifier, detect=False)
    probabilities = np.array([record["probabilities"][name] for name in CLASS_NAMES])
    np.testing.assert_allclose(probabilities, expected_probabilities(classifier, expected),
                               atol=2e-6)


def test_colour_jpeg_becomes_bt601_gray(tmp_path):
    colour = np.zeros((40, 40, 3), np.uint8)
    colour[..., 0], colour[..., 1], colour[..., 2] = 200, 100, 50
    Image.fromarray(colour).save(tmp_path / "colour.png")
    gray = images.load_gray(tmp_path / "colour.png")
    assert gray.shape == (40, 40)
    assert abs(int(gray[0, 0]) - round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)) <= 1


def test_bad_files_get_error_records_and_the_rest_results(tmp_path, classifier):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(drawn_face()).save(folder / "a_face.png")
    buffer = io.BytesIO()
    Image.fromarray(drawn_face(240, 200)).save(buffer, "JPEG")
    (folder / "b_truncated.jpg").write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    (folder / "c_notes.jpg").write_text("this is a text file with an image suffix\n")
    Image.fromarray(drawn_face(60, 50)).convert("RGB").save(folder / "d_face.jpg")
    (folder / "e_readme.txt").write_text("skipped: not an image suffix")
    text_file = tmp_path / "notes.txt"
    text_file.write_text("named explicitly, so it is tried")
    records = run([folder, text_file, tmp_path / "missing.png"], classifier, detect=False,
                  batch_size=1)
    by_name = {Path(record["file"]).name: record for record in records}
    assert [Path(record["file"]).name for record in records] == [
        "a_face.png", "b_truncated.jpg", "c_notes.jpg", "d_face.jpg", "notes.txt",
        "missing.png"]
    assert by_name["b_truncated.jpg"]["error"].startswith("truncated or corrupt image")
    assert by_name["c_notes.jpg"]["error"].startswith("not an image")
    assert by_name["notes.txt"]["error"].startswith("not an image")
    assert by_name["missing.png"]["error"] == "no such file or folder"
    for name in ("a_face.png", "d_face.jpg"):
        assert "error" not in by_name[name]
        assert sum(by_name[name]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_batches_give_the_same_results_as_one_by_one(tmp_path, classifier):
    for index in range(5):
        Image.fromarray(drawn_face(100 + 10 * index, 90)).save(tmp_path / f"{index}.png")
    one_by_one = run([tmp_path], classifier, detect=False, batch_size=1)
    batched = run([tmp_path], classifier, detect=False, batch_size=3)
    assert [r["file"] for r in one_by_one] == [r["file"] for r in batched]
    for single, batch in zip(one_by_one, batched):
        for name in CLASS_NAMES:
            assert single["probabilities"][name] == pytest.approx(
                batch["probabilities"][name], abs=2e-6)


def test_savedmodel_export_gives_the_keras_results(tmp_path, classifier):
    Image.fromarray(drawn_face()).save(tmp_path / "face.png")
    write_savedmodel(classifier.model, tmp_path / "serving" / "1")
    served = runner.Classifier(tmp_path / "serving" / "1")
    assert served.size == (48, 48)
    [keras_record] = run([tmp_path / "face.png"], classifier, detect=False)
    [served_record] = run([tmp_path / "face.png"], served, detect=False)
    for name in CLASS_NAMES:
        assert served_record["probabilities"][name] == pytest.approx(
            keras_record["probabilities"][name], abs=1e-5)


def test_high_bit_depth_gray_is_scaled_to_8_bits_not_white(tmp_path, classifier):
    gray = np.asarray(Image.open(PORTRAIT).convert("L"))
    # Pillow decodes the first two as mode "I", the float TIFF as "F", the PNG as "I;16".
    Image.fromarray((gray.astype(np.uint16) * 257)).save(tmp_path / "gray16.pgm")
    Image.fromarray(gray.astype(np.int32) * 8421504).save(tmp_path / "gray32.tif")
    Image.fromarray(gray.astype(np.float32) / 255).save(tmp_path / "gray_float.tif")
    Image.fromarray((gray.astype(np.uint16) * 257)).save(tmp_path / "gray16.png")
    for name, mode in [("gray16.pgm", "I"), ("gray32.tif", "I"), ("gray_float.tif", "F"),
                       ("gray16.png", "I;16")]:
        assert Image.open(tmp_path / name).mode == mode
        decoded = images.load_gray(tmp_path / name)
        assert decoded.dtype == np.uint8 and decoded.shape == gray.shape
        assert np.abs(decoded.astype(int) - gray).max() <= 1, name
    # Found and classified as the 8-bit photo is.
    Image.fromarray(gray).save(tmp_path / "gray8.png")
    records = run([tmp_path / "gray8.png", tmp_path / "gray16.pgm", tmp_path / "gray32.tif"],
                  classifier)
    assert len(records) == 3 and "box" in records[0], records
    for record in records[1:]:
        assert record["box"] == records[0]["box"], record
        assert record["label"] == records[0]["label"]


def test_to_uint8_reads_the_full_scale_from_the_values():
    assert images.to_uint8(np.array([0, 128, 255], np.int32)).tolist() == [0, 128, 255]
    assert images.to_uint8(np.array([0, 32896, 65535], np.int32)).tolist() == [0, 128, 255]
    assert images.to_uint8(np.array([0.0, 0.5, 1.0], np.float32)).tolist() == [0, 128, 255]
    assert images.to_uint8(np.array([-5.0, np.nan, 2.0**31 - 1])).tolist() == [0, 0, 255]
    assert images.to_uint8(np.array([0, 257], np.uint16), full_scale=65535).tolist() == [0, 1]


def test_detects_the_face_in_a_real_photo_and_reports_faceless_images(tmp_path, classifier):
    photo = Image.open(PORTRAIT)
    photo.save(tmp_path / "portrait.jpg")
    # The same photo as an RGBA PNG, and rotated by EXIF only: both must be found too.
    rgba = photo.convert("RGBA")
    rgba.save(tmp_path / "portrait_rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the viewer rotates the stored pixels 90 degrees.
    photo.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "portrait_exif.jpg", exif=exif)
    Image.fromarray(np.full((200, 300), 128, np.uint8)).save(tmp_path / "wall.png")
    records = run([tmp_path / "portrait.jpg", tmp_path / "portrait_rgba.png",
                   tmp_path / "portrait_exif.jpg", tmp_path / "wall.png"], classifier)
    assert [Path(r["file"]).name for r in records] == [
        "portrait.jpg", "portrait_rgba.png", "portrait_exif.jpg", "wall.png"]
    for record in records[:3]:
        x, y, width, height = record["box"]
        overlap_x = min(x + width, PORTRAIT_FACE[0] + PORTRAIT_FACE[2]) - max(x, PORTRAIT_FACE[0])
        overlap_y = min(y + height, PORTRAIT_FACE[1] + PORTRAIT_FACE[3]) - max(y, PORTRAIT_FACE[1])
        assert overlap_x > 0.7 * PORTRAIT_FACE[2] and overlap_y > 0.7 * PORTRAIT_FACE[3], record
        assert record["label"] in CLASS_NAMES
    assert records[3]["faces"] == 0 and "--no-detect" in records[3]["error"]


def test_missing_haar_cascade_is_a_clear_error(tmp_path, classifier, monkeypatch):
    monkeypatch.delattr(cv2, "CascadeClassifier", raising=False)
    with pytest.raises(ValueError, match="--no-detect"):
        recognize.predict([str(tmp_path)], model=classifier, output=io.StringIO())


def test_default_model_is_the_best_run(tmp_path, run_dir):
    root = tmp_path / "saved_models"
    for name, accuracy, with_model in (("weak", 0.3, True), ("strong", 0.55, True),
                                       ("unfinished", 0.9, False)):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(
            {"splits": {"validation": {"accuracy": accuracy}}}))
        if with_model:
            (folder / "model.keras").write_bytes((run_dir / "model.keras").read_bytes())
    assert runner.find_best_model(root) == root / "strong"
    with pytest.raises(ValueError, match="fer_keras.fit EXPERIMENT.*--model"):
        runner.find_best_model(tmp_path / "nothing_here")


def test_cli_exit_codes(tmp_path, run_dir, monkeypatch, capsys):
    Image.fromarray(drawn_face()).save(tmp_path / "face.png")
    (tmp_path / "notes.txt").write_text("not an image")
    args = ["--model", str(run_dir), "--no-detect"]
    assert predict.main([str(tmp_path / "face.png"), *args]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in CLASS_NAMES
    assert predict.main([str(tmp_path / "face.png"), str(tmp_path / "notes.txt"), *args]) == 1
    assert len(capsys.readouterr().out.splitlines()) == 2
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(tmp_path / "face.png"), *args, "--batch-size", "0"])
    assert exit_info.value.code == 2
    assert "--batch-size" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # No saved_models/ here and, below, no packaged model.
    monkeypatch.setattr(runner, "packaged_model_file", lambda: None)
    assert predict.main([str(tmp_path / "face.png"), "--no-detect"]) == 2
    assert "No trained model found" in capsys.readouterr().err
