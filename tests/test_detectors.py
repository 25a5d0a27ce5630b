import importlib.util
import io
import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from PIL import Image

from fer_keras import api, predict
from fer_keras import detectors as command
from fer_keras.benchmarks.detectors import (
    compare_detectors,
    format_table,
    load_photos,
    match_boxes,
    read_annotations,
)
from fer_keras.models import get_model
from fer_keras.serving.runner import Classifier
from fer_keras.vision import detectors, recognize
from fer_keras.vision.detectors import clip_boxes, get_detector, list_detectors, to_gray
from fer_keras.vision.faces import crop_face, detect_faces, load_detector
from fer_keras.vision.images import load_colour, load_gray, load_gray_and_rgb, load_rgb
from fer_keras.vision.video import iou

REPO = Path(__file__).resolve().parents[1]
SHARED_PHOTOS = REPO.parent / "shared" / "photos"
HAS_MTCNN = importlib.util.find_spec("mtcnn") is not None
NEEDS_MTCNN = pytest.mark.skipif(not HAS_MTCNN, reason='mtcnn is not installed (pip install '
                                 '"fer_keras[mtcnn]"); the mtcnn detector is not tested')
MTCNN_RUNS = pytest.mark.skipif(
    not HAS_MTCNN or keras.backend.backend() != "tensorflow",
    reason='mtcnn needs its package (pip install "fer_keras[mtcnn]") and Keras\'s TensorFlow '
           'backend; predicting with --detector mtcnn is not tested')
# A real photograph that matplotlib ships (its sample data): one face, about 230 px square.
PORTRAIT = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture
def shared_photos():
    """The shared annotated photos (../shared/photos); skips when absent."""
    if not (SHARED_PHOTOS / "faces.xml").is_file():
        pytest.skip(f"annotated photos not found at {SHARED_PHOTOS}; the detector "
                    f"measurement on real photos is not run")
    return SHARED_PHOTOS


def write_folder(folder, listed=(("a.png", (0, 0, 0), [[2, 3, 10, 12]]),), unlisted=("b.png",),
                 size=(64, 48)):
    """A photo folder: gray pictures, faces.xml listing `listed` (name, colour, boxes)."""
    folder.mkdir(exist_ok=True)
    lines = ["<?xml version='1.0'?>", "<dataset><images>"]
    for name, colour, boxes in listed:
        Image.new("RGB", size, colour).save(folder / name)
        lines.append(f"<image file='{name}' width='{size[0]}' height='{size[1]}'>")
        lines += [f"<box top='{y}' left='{x}' width='{w}' height='{h}'/>"
                  for x, y, w, h in boxes]
        lines.append("</image>")
    lines.append("</images></dataset>")
    (folder / "faces.xml").write_text("\n".join(lines))
    for name in unlisted:
        Image.new("RGB", size, (200, 200, 200)).save(folder / name)
    return folder


def test_iou_matching_is_one_to_one_greedy_and_inclusive_at_the_threshold():
    truth = [[0, 0, 10, 10]]
    # IoU 30/100 = 0.3 exactly: a match at 0.3, none just above it.
    assert match_boxes([[0, 0, 10, 3]], truth, 0.3) == [(0, 0, 0.3)]
    assert match_boxes([[0, 0, 10, 3]], truth, 0.31) == []
    # Two boxes on one face: the better one takes it, the other is left unmatched.
    assert match_boxes([[0, 0, 10, 5], [0, 0, 10, 10]], truth, 0.3) == [(1, 0, 1.0)]
    # Best pair first: box 1 is face 0 exactly (1.0), so box 0 (0.5 with both) takes face 1.
    found = [[0, 0, 10, 10], [0, 0, 10, 5]]
    faces = [[0, 0, 10, 5], [0, 5, 10, 5]]
    assert [(f, t) for f, t, _ in match_boxes(found, faces, 0.3)] == [(1, 0), (0, 1)]
    # Greedy, not optimal: box 0 takes face 0 (IoU 0.53) before box 1 (0.43) can, so face
    # 1 (0.37 with box 0) is left, although box 1 -> face 0, box 0 -> face 1 would pair both.
    found, faces = [[1, 0, 16, 10], [-4, 0, 10, 10]], [[0, 0, 10, 10], [10, 0, 10, 10]]
    assert [(f, t) for f, t, _ in match_boxes(found, faces, 0.3)] == [(0, 0)]
    assert match_boxes([], truth) == [] and match_boxes([[50, 50, 5, 5]], truth) == []


def test_boxes_are_clipped_to_the_picture_as_ints_and_sorted():
    # Cut at the left and right edges, rounded; boxes outside the picture are dropped.
    assert clip_boxes([[30, 0, 5, 5], [-5, 10, 20, 20.4], [200, 200, 9, 9]], 12, 100) == [
        [0, 10, 12, 20]]
    assert clip_boxes([[8, 1, 10, 10], [1, 2, 3, 4]], 12, 100) == [[1, 2, 3, 4], [8, 1, 4, 10]]


def test_registry_lists_both_and_refuses_bad_names_options_and_pictures(monkeypatch):
    assert list_detectors() == ["haar", "mtcnn"]
    with pytest.raises(ValueError, match=r"Use one of haar, mtcnn\. Received: detector='hog'"):
        get_detector("hog")
    with pytest.raises(ValueError, match=r"no option 'confidence'; its options are: none"):
        get_detector("haar", confidence=0.5)
    with pytest.raises(ValueError, match=r"confidence is a number in \(0, 1\] .*=1.5"):
        get_detector("mtcnn", confidence=1.5)
    with pytest.raises(ValueError, match=r"min_face_size is an integer >= 4"):
        get_detector("mtcnn", min_face_size=2.5)
    with pytest.raises(ValueError, match="registered already"):
        detectors.register_detector("haar")(type("Other", (), {}))
    with pytest.raises(ValueError, match=r"uint8 picture.*dtype=float32, shape=\(4, 4\)"):
        to_gray(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"shape=\(4, 4, 2\)"):
        to_gray(np.zeros((4, 4, 2), np.uint8))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "mtcnn"
                        else real_find_spec(name, *args))
    with pytest.raises(ValueError, match=r'not installed: pip install "fer_keras\[mtcnn\]"'):
        get_detector("mtcnn")


def test_haar_returns_a_list_of_boxes_on_gray_and_rgb():
    haar = get_detector("haar")
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (90, 120), dtype=np.uint8)
    assert haar.detect(gray) == []
    assert haar.detect(np.zeros((90, 120, 3), np.uint8)) == []
    assert haar.name == "haar" and haar.input_mode == "gray"
    boxes = haar.detect(np.repeat(gray[..., None], 3, axis=2))
    assert isinstance(boxes, list) and boxes == haar.detect(gray)


def test_a_synthetic_folder_scores_a_detector_that_finds_nothing(tmp_path):
    folder = write_folder(tmp_path / "photos")
    photos = load_photos(folder)
    assert [(photo["file"], photo["boxes"]) for photo in photos] == [
        ("a.png", [[2, 3, 10, 12]]), ("b.png", [])]
    assert photos[0]["rgb"].shape == (48, 64, 3) and photos[0]["gray"].shape == (48, 64)
    [row] = compare_detectors(folder, ["haar"], iou_threshold=0.5, repeats=2, progress=None)
    assert (row["faces"], row["found"], row["matched"], row["recall"], row["precision"],
            row["false_positives_without_faces"]) == (1, 0, 0, 0.0, None, 0)
    assert row["photos_without_faces"] == ["b.png"]
    assert row["ms_per_photo"] > 0 and row["cpu_ms_per_photo"] >= 0
    table = format_table([row])
    assert "recall (IoU >= 0.5)" in table and "(b.png)" in table
    assert "| haar | defaults | 0.000 (0/1) | n/a (0/0) | 0 |" in table


def test_without_mtcnn_the_default_list_measures_haar_and_says_why(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "mtcnn"
                        else real_find_spec(name, *args))
    progress = io.StringIO()
    rows = compare_detectors(write_folder(tmp_path / "photos"), repeats=1, progress=progress)
    assert [row["detector"] for row in rows] == ["haar"]
    assert 'left out mtcnn: The mtcnn face detector needs the mtcnn package' in \
        progress.getvalue()
    with pytest.raises(ValueError, match=r'pip install "fer_keras\[mtcnn\]"'):
        compare_detectors(tmp_path / "photos", ["haar", "mtcnn"], repeats=1, progress=None)


def test_bad_folders_and_settings_are_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"photo folder .*nowhere not found; pass --photos"):
        load_photos(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="has no faces.xml"):
        load_photos(tmp_path)
    folder = write_folder(tmp_path / "sized")
    (folder / "faces.xml").write_text((folder / "faces.xml").read_text().replace(
        "width='64'", "width='65'"))
    with pytest.raises(ValueError, match=r"a.png is 64x48 px, but faces.xml gives 65x48"):
        load_photos(folder)
    (folder / "a.png").unlink()
    with pytest.raises(ValueError, match=r"lists a.png, which is not in"):
        load_photos(folder)
    with pytest.raises(ValueError, match=r"lacks an integer"):
        (folder / "faces.xml").write_text("<images><image file='a.png'><box top='1'/>"
                                          "</image></images>")
        read_annotations(folder / "faces.xml")
    with pytest.raises(ValueError, match=r"iou=0"):
        compare_detectors(folder, ["haar"], iou_threshold=0)
    with pytest.raises(ValueError, match=r"No detector of haar takes the option 'confidence'"):
        compare_detectors(folder, ["haar"], options={"confidence": 0.9})


def test_command_saves_json_and_refuses_to_overwrite_it(tmp_path, capsys):
    folder = write_folder(tmp_path / "photos")
    saved = tmp_path / "out" / "detectors.json"
    argv = ["--photos", str(folder), "--detectors", "haar", "--repeats", "1",
            "--save", str(saved)]
    assert command.main(argv) == 0
    out = capsys.readouterr().out
    assert "| haar | defaults |" in out and f"Wrote {saved}" in out
    document = json.loads(saved.read_text())
    assert document["command"].startswith("python -m fer_keras.detectors --photos ")
    assert document["machine"]["cores"] >= 1 and "detection only" in document["scope"]
    assert [row["detector"] for row in document["detectors"]] == ["haar"]
    before = saved.read_bytes()
    assert command.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --save {saved} exists; pass --overwrite to replace it, or another "
                   f"path. Received: --save {saved}")
    assert saved.read_bytes() == before
    assert command.main([*argv, "--overwrite"]) == 0


def test_command_names_a_missing_photo_folder_in_one_line(tmp_path, capsys):
    assert command.main(["--photos", str(tmp_path / "gone"), "--detectors", "haar"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"photo folder {tmp_path / 'gone'} not found" in err[0]


def test_haar_wrapper_gives_the_boxes_of_faces_py_on_real_photos(shared_photos):
    haar, cascade = get_detector("haar"), load_detector()
    for photo in load_photos(shared_photos):
        assert haar.detect(photo["rgb"]) == haar.detect(photo["gray"]) == \
            detect_faces(cascade, photo["gray"]), photo["file"]


def test_command_measures_haar_on_the_shared_photos(shared_photos, capsys):
    assert command.main(["--photos", str(shared_photos), "--detectors", "haar",
                         "--repeats", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| haar")]
    assert len(rows) == 1
    recall = float(rows[0].split("|")[3].split()[0])
    assert 0.0 <= recall <= 1.0 and "/18)" in rows[0]


@NEEDS_MTCNN
def test_mtcnn_finds_faces_in_rgb_and_gray_and_none_in_a_blank_picture(shared_photos):
    mtcnn = get_detector("mtcnn")
    assert (mtcnn.name, mtcnn.input_mode, mtcnn.confidence) == ("mtcnn", "rgb", 0.9)
    photo = next(photo for photo in load_photos(shared_photos)
                 if photo["file"] == "2008_001009.jpg")
    for picture in (photo["rgb"], photo["gray"]):
        found = mtcnn.detect(picture)
        assert len(match_boxes(found, photo["boxes"], 0.3)) == 2 == len(found)
        assert all(isinstance(value, int) for box in found for value in box)
    assert mtcnn.detect(np.zeros((120, 160, 3), np.uint8)) == []
    assert mtcnn.detect(np.zeros((8, 8), np.uint8)) == []
    # Shrunk to max_side, the faces still come back in the photo's own pixels.
    shrunk = get_detector("mtcnn", max_side=240).detect(photo["rgb"])
    assert len(match_boxes(shrunk, photo["boxes"], 0.3)) == 2


@NEEDS_MTCNN
def test_command_compares_both_detectors_on_the_shared_photos(shared_photos, capsys):
    assert command.main(["--photos", str(shared_photos), "--detectors", "haar", "mtcnn",
                         "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split("|")[1].strip(): line.split("|") for line in lines[2:]}
    assert set(rows) == {"haar", "mtcnn"}
    for cells in rows.values():
        assert 0.0 <= float(cells[3].split()[0]) <= 1.0
    assert "confidence=0.9" in rows["mtcnn"][2]


def without_mtcnn(monkeypatch):
    """Makes the mtcnn package look absent, as on an install without the extra."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "mtcnn"
                        else real_find_spec(name, *args))


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
    return Classifier(run_dir)


class SpyDetector:
    """A detector that finds the boxes it is given and keeps the pictures it was shown."""

    def __init__(self, boxes, input_mode="rgb", name="spy"):
        self.boxes, self.input_mode, self.name, self.pictures = boxes, input_mode, name, []

    def detect(self, image):
        self.pictures.append(np.array(image))
        return [list(box) for box in self.boxes]


def predict_records(paths, classifier, **kwargs):
    """`recognize.predict`'s records for `paths`, with what it wrote checked against them."""
    stream = io.StringIO()
    records = recognize.predict([str(path) for path in paths], model=classifier, output=stream,
                                progress=None, **kwargs)
    assert [json.loads(line) for line in stream.getvalue().splitlines()] == records
    return records


def test_square_box_centres_a_square_on_the_box_and_keeps_it_inside():
    square = recognize.square_box
    # MTCNN's 3:4 face box of the portrait: the side is the height, about the same centre.
    assert square([178, 110, 173, 220], 512, 600) == [155, 110, 220, 220]
    assert square([10, 20, 40, 30], 512, 600) == [10, 15, 40, 40]
    # At an edge the square moves inside rather than being cut (which would squash again).
    assert square([0, 5, 30, 40], 100, 100) == [0, 5, 40, 40]
    assert square([80, 70, 20, 30], 100, 100) == [70, 70, 30, 30]
    # A box longer than the picture is short gets the picture's smaller side, centred.
    assert square([10, 0, 30, 50], 60, 40) == [5, 0, 40, 40]
    # Square boxes come back as they are.
    for box in ([149, 100, 231, 231], [0, 0, 24, 24], [488, 576, 24, 24]):
        assert square(box, 512, 600) == box


def test_load_rgb_is_the_colour_of_load_gray_with_the_same_orientation_and_alpha(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 40
    rgba = np.dstack([rgb, np.full((20, 30), 255, np.uint8)])
    rgba[:5, :, 3] = 0  # A transparent band: white in both pictures.
    image = Image.fromarray(rgba, "RGBA")
    exif = image.getexif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees clockwise to view.
    image.save(tmp_path / "rotated.png", exif=exif)
    gray, colour = load_gray_and_rgb(tmp_path / "rotated.png")
    assert colour.shape == (30, 20, 3) and colour.dtype == np.uint8
    np.testing.assert_array_equal(gray, load_gray(tmp_path / "rotated.png"))
    np.testing.assert_array_equal(colour, load_rgb(tmp_path / "rotated.png"))
    np.testing.assert_array_equal(load_colour(tmp_path / "rotated.png"), colour[..., ::-1])
    assert colour[0, -1].tolist() == [255, 255, 255] and colour[0, 0].tolist() == [200, 0, 40]
    assert gray[0, 0] == round(0.299 * 200 + 0.114 * 40)
    Image.fromarray(np.full((4, 5), 40000, np.uint16)).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "deep.png")[..., 1],
                                  load_gray(tmp_path / "deep.png"))
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    with pytest.raises(ValueError, match="not an image"):
        load_rgb(tmp_path / "bad.png")


def test_an_rgb_detector_sees_the_photo_in_colour_and_its_boxes_are_made_square(classifier):
    spy = SpyDetector([[100, 90, 60, 80], [0, 5, 30, 40]])
    records = predict_records([PORTRAIT], classifier, detector=spy)
    gray, rgb = load_gray(PORTRAIT), load_rgb(PORTRAIT)
    [picture] = spy.pictures
    np.testing.assert_array_equal(picture, rgb)
    assert [record["box"] for record in records] == [[0, 5, 40, 40], [90, 90, 80, 80]]
    # The crops are cut from the gray picture, square, so the face is not squashed.
    expected = classifier(np.stack([crop_face(gray, record["box"]) for record in records]))
    for record, row in zip(records, expected):
        np.testing.assert_allclose(list(record["probabilities"].values()), row, atol=1e-6)
    # A gray detector gets the gray picture.
    gray_spy = SpyDetector([[100, 90, 60, 60]], input_mode="gray")
    [record] = predict_records([PORTRAIT], classifier, detector=gray_spy)
    np.testing.assert_array_equal(gray_spy.pictures[0], gray)
    assert record["box"] == [100, 90, 60, 60]


def test_an_rgb_detector_gets_video_frames_in_rgb_not_opencvs_bgr(classifier, tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(3):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[..., 0] = 30  # Blue in OpenCV's BGR.
        frame[..., 2] = rng.integers(150, 250)  # Red.
        writer.write(frame)
    writer.release()
    capture, decoded = cv2.VideoCapture(str(path)), []
    while (frame := capture.read()[1]) is not None:
        decoded.append(frame)
    capture.release()
    spy = SpyDetector([[10, 4, 30, 40]])
    records = list(recognize.predict_video(path, classifier, spy, every=1, progress=None,
                                           detect_every=0))
    assert len(spy.pictures) == len(decoded) == 3
    for picture, frame in zip(spy.pictures, decoded):
        np.testing.assert_array_equal(picture, frame[..., ::-1])
        assert picture[0, 0, 0] > picture[0, 0, 2]  # Red first.
    assert [record["box"] for record in records] == [[5, 4, 40, 40]] * 3


def test_haar_gives_the_records_of_the_default_call_with_the_cascades_boxes(classifier):
    default = predict_records([PORTRAIT], classifier)
    assert predict_records([PORTRAIT], classifier, detector="haar") == default
    assert [record["box"] for record in default] == \
        detect_faces(load_detector(), load_gray(PORTRAIT)) == [[149, 100, 231, 231]]
    recognizer = api.Recognizer(classifier)
    assert recognizer.detector.name == "haar"
    assert [face["box"] for face in recognizer.predict(PORTRAIT)] == [[149, 100, 231, 231]]


def test_haar_boxes_a_pixel_off_square_are_kept_as_the_cascade_gives_them(classifier,
                                                                          tmp_path):
    # Enlarged past DETECTION_MAX_SIDE, the photo is searched shrunk and the cascade's boxes
    # come back scaled up, a pixel off square (540x541 here): they must not be moved.
    large = tmp_path / "large.png"
    Image.fromarray(cv2.resize(load_gray(PORTRAIT), None, fx=2.3, fy=2.3,
                               interpolation=cv2.INTER_CUBIC)).save(large)
    expected = detect_faces(load_detector(), load_gray(large))
    assert any(box[2] != box[3] for box in expected)
    assert [record["box"] for record in predict_records([large], classifier)] == expected


def test_an_unknown_detector_is_one_line_and_exit_2_before_the_model_loads(
        tmp_path, capsys, run_dir):
    # The model does not exist: the detector is refused before it would be looked for.
    for argv in ([str(PORTRAIT), "--model", str(tmp_path / "missing"), "--detector", "hog"],
                 [str(PORTRAIT), "--no-detect", "--detector", "hog"]):
        assert predict.main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == ("error: Unknown face detector. Use one of haar, mtcnn. "
                                "Received: detector='hog'\n")
    with pytest.raises(ValueError, match=r"Use one of haar, mtcnn\. Received: detector='hog'"):
        api.Recognizer(tmp_path / "missing", detector="hog")
    with pytest.raises(ValueError, match="Received: detector of type int"):
        recognize.predict([str(PORTRAIT)], model=run_dir, detector=3)


def test_without_the_extra_mtcnn_is_one_line_and_no_detect_still_works(
        tmp_path, capsys, monkeypatch, run_dir):
    without_mtcnn(monkeypatch)
    assert predict.main([str(PORTRAIT), "--model", str(tmp_path / "missing"),
                         "--detector", "mtcnn"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: The mtcnn face detector needs")
    assert 'pip install "fer_keras[mtcnn]"' in err
    with pytest.raises(ValueError, match=r'not installed: pip install "fer_keras\[mtcnn\]"'):
        api.Recognizer(run_dir, detector="mtcnn")
    # --no-detect builds no detector, so it needs no extra.
    assert predict.main([str(PORTRAIT), "--model", str(run_dir), "--no-detect",
                         "--detector", "mtcnn"]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["box"] == [0, 0, 512, 600]
    assert api.Recognizer(run_dir, detect=False, detector="mtcnn").detector is None


@MTCNN_RUNS
def test_predict_with_mtcnn_finds_the_portraits_face_in_a_square_box(run_dir, capsys):
    assert predict.main([str(PORTRAIT), "--model", str(run_dir), "--detector", "mtcnn"]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    x, y, width, height = record["box"]
    assert width == height and width > 150
    # The same face the cascade finds (its box: [149, 100, 231, 231]).
    assert iou(record["box"], [149, 100, 231, 231]) > 0.6
    assert "label" in record


@MTCNN_RUNS
def test_the_recognizer_takes_mtcnn_for_files_arrays_and_videos(classifier, tmp_path):
    recognizer = api.Recognizer(classifier, detector="mtcnn")
    assert recognizer.detector.name == "mtcnn"
    [face] = recognizer.predict(PORTRAIT)
    assert face["box"][2] == face["box"][3] and "label" in face
    rgb = load_rgb(PORTRAIT)
    [from_array] = recognizer.predict(rgb)
    assert from_array == face
    path = tmp_path / "clip.avi"
    small = cv2.resize(rgb[..., ::-1], (256, 300), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 300))
    for _ in range(2):
        writer.write(small)
    writer.release()
    frames = list(recognizer.predict_video(path, every=1))
    assert [frame["frame"] for frame in frames] == [0, 1]
    for frame in frames:
        [video_face] = frame["faces"]
        assert video_face["box"][2] == video_face["box"][3] > 60
        assert video_face["track"] == 0
