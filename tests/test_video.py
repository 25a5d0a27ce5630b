"""Prediction on videos and annotated pictures, on a short clip built from a real photo."""

import io
import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest

from fer_keras import predict
from fer_keras.data.sources import CLASS_NAMES
from fer_keras.models import get_model
from fer_keras.serving import runner
from fer_keras.vision import faces, recognize, video

PORTRAIT = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
FPS = 10
FRAMES = 30
SIZE = (560, 320)  # width, height


def two_people(index):
    """Frame `index` of the clip: two copies of the portrait drifting towards each other."""
    half = cv2.resize(cv2.imread(str(PORTRAIT)), (256, 300), interpolation=cv2.INTER_AREA)
    frame = np.full((SIZE[1], SIZE[0], 3), 200, np.uint8)
    frame[10:310, 10 + index:266 + index] = half
    frame[10:310, 290 - index // 2:546 - index // 2] = half
    return frame


def write_video(path, frames, fourcc="mp4v", size=SIZE):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, size)
    assert writer.isOpened()
    for index in range(frames):
        writer.write(two_people(index))
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 3-second, 10 fps MPEG-4 clip of two people, written with OpenCV's own writer."""
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", FRAMES)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("model") / "baseline.keras"
    get_model("baseline").save(path)
    return runner.Classifier(path)


def run(paths, classifier, **kwargs):
    stream = io.StringIO()
    records = recognize.predict([str(p) for p in paths], model=classifier, output=stream,
                              progress=None, **kwargs)
    assert [json.loads(line) for line in stream.getvalue().splitlines()] == records
    return records


def test_every_nth_frame_with_times_tracks_and_boxes(clip, classifier):
    # Every sampled frame searched whole: the boxes follow the drift to the pixel.
    records = run([clip], classifier, every=5, detect_every=0)
    frames = [0, 5, 10, 15, 20, 25]
    assert [record["frame"] for record in records] == [f for f in frames for _ in (0, 1)]
    assert [record["time"] for record in records] == [f / FPS for f in frames for _ in (0, 1)]
    # Left person first in every frame, and each keeps one track id while both move.
    assert [record["face"] for record in records] == [0, 1] * len(frames)
    assert [record["track"] for record in records] == [0, 1] * len(frames)
    for record in records:
        x, y, width, height = record["box"]
        assert 90 <= width <= 140 and 50 <= y <= 80, record
        assert record["label"] in CLASS_NAMES and record["file"] == str(clip)
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    left = [record["box"][0] for record in records if record["track"] == 0]
    right = [record["box"][0] for record in records if record["track"] == 1]
    assert left == sorted(left) and right == sorted(right, reverse=True)  # the drift


def test_followed_faces_match_whole_frame_searches(clip, classifier, monkeypatch):
    searches = []
    real = recognize.detect_boxes
    monkeypatch.setattr(recognize, "detect_boxes",
                        lambda *args: searches.append(1) or real(*args))
    whole = run([clip], classifier, every=1, detect_every=0)
    assert len(searches) == FRAMES
    searches.clear()
    followed = run([clip], classifier, every=1, detect_every=1.0)
    # The whole frame at 0 s, 1 s and 2 s; windows about the two faces in between.
    assert len(searches) == 3
    assert [(r["frame"], r["face"], r["track"]) for r in followed] == \
        [(r["frame"], r["face"], r["track"]) for r in whole]
    for one, other in zip(followed, whole):
        (x, y, w, h), (ox, oy, ow, oh) = one["box"], other["box"]
        # The same centre to a few pixels; the size of the last whole-frame search.
        assert abs((x + w / 2) - (ox + ow / 2)) <= 4 and abs((y + h / 2) - (oy + oh / 2)) <= 4
        assert abs(w - ow) <= 0.1 * ow, (one["box"], other["box"])


def test_a_face_lost_in_its_window_is_dropped_then_found_again(clip, classifier, monkeypatch):
    from fer_keras.vision import detectors

    monkeypatch.setattr(detectors.HaarDetector, "detect_near", lambda self, image, side: [])
    records = run([clip], classifier, every=1, detect_every=5.0)
    # No window finds a face, so each frame after a whole-frame search is one without a
    # followed face, which makes the next frame search whole again: faces every other frame.
    assert sorted({record["frame"] for record in records}) == list(range(0, FRAMES, 2))
    with pytest.raises(ValueError, match="detect_every"):
        run([clip], classifier, detect_every=-1)


def test_fps_sampling_picks_frames_by_video_time(clip, classifier):
    records = run([clip], classifier, fps=4)
    # At 4 of the clip's 10 frames per second: the first frame of each 0.25 s bucket.
    expected = [0, 3, 5, 8, 10, 13, 15, 18, 20, 23, 25, 28]
    assert sorted({record["frame"] for record in records}) == expected
    assert len(records) == 2 * len(expected)
    every_frame = [frame.index for frame in video.sample_frames(clip, fps=100)]
    assert every_frame == list(range(FRAMES))
    with pytest.raises(ValueError, match="not both"):
        run([clip], classifier, every=2, fps=3)
    with pytest.raises(ValueError, match="every must be a positive"):
        run([clip], classifier, every=0)


def test_csv_annotated_video_and_timeline(clip, classifier, tmp_path, capsys):
    table_path, folder = tmp_path / "out.csv", tmp_path / "pictures"
    assert predict.main([str(clip), "--model", str(classifier.path), "--every", "10",
                         "--csv", str(table_path), "--annotate", str(folder)]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    # The progress bar ends at the last frame, with the time left.
    assert f"frame {FRAMES}/{FRAMES} (100%)" in captured.err and "left" in captured.err
    assert "6 face(s) classified" in captured.err and "faces/s" in captured.err

    table = pd.read_csv(table_path)
    assert len(table) == len(records) == 6
    assert table["frame"].tolist() == [0, 0, 10, 10, 20, 20]
    assert table["time"].tolist() == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    assert table["track"].tolist() == [0, 1] * 3
    assert table["label"].tolist() == [record["label"] for record in records]
    assert table["x"].tolist() == [record["box"][0] for record in records]
    np.testing.assert_allclose(table[list(CLASS_NAMES)].sum(axis=1), 1.0, atol=1e-4)

    annotated = cv2.VideoCapture(str(folder / "clip.annotated.mp4"))
    assert annotated.get(cv2.CAP_PROP_FRAME_COUNT) == FRAMES
    ok, first = annotated.read()
    annotated.release()
    assert ok and first.shape == (SIZE[1], SIZE[0], 3)
    # Boxes and labels were drawn: the annotated frame differs from the source around
    # the first face, and not in the empty bottom-right corner.
    x, y, width, height = records[0]["box"]
    difference = np.abs(first.astype(int) - two_people(0).astype(int)).sum(axis=-1)
    assert difference[y:y + height, x:x + width].max() > 100
    assert difference[-8:, -8:].max() < 40  # only codec noise there
    timeline = cv2.imread(str(folder / "clip.timeline.png"))
    assert timeline is not None and timeline.shape[0] > 200


def test_bad_videos_get_one_error_record_and_the_rest_run(clip, classifier, tmp_path):
    (tmp_path / "notes.mp4").write_text("a text file with a video suffix\n")
    empty = cv2.VideoWriter(str(tmp_path / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"),
                            FPS, SIZE)
    empty.release()
    whole = write_video(tmp_path / "whole.avi", 20, fourcc="MJPG").read_bytes()
    (tmp_path / "truncated.avi").write_bytes(whole[:len(whole) // 2])
    records = run([tmp_path / "notes.mp4", tmp_path / "empty.avi", tmp_path / "truncated.avi",
                   clip], classifier, every=10)
    errors = [record for record in records if "error" in record]
    assert [Path(record["file"]).name for record in errors] == [
        "notes.mp4", "empty.avi", "truncated.avi"]
    assert errors[0]["error"].startswith("not a video OpenCV can read")
    assert errors[1]["error"].startswith(("not a video OpenCV can read", "video has zero"))
    assert errors[2]["error"].startswith("truncated or corrupt video: decoded")
    assert 0 < errors[2]["frames_read"] < 20
    # The truncated video's decoded frames still gave faces, before its error record.
    truncated_faces = [record for record in records
                       if record["file"].endswith("truncated.avi") and "label" in record]
    assert truncated_faces and records.index(truncated_faces[-1]) < records.index(errors[2])
    assert [record["frame"] for record in records if record["file"] == str(clip)] == [
        0, 0, 10, 10, 20, 20]


def test_a_video_without_faces_gets_one_error_record(classifier, tmp_path):
    writer = cv2.VideoWriter(str(tmp_path / "wall.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                             FPS, (64, 48))
    for _ in range(10):
        writer.write(np.full((48, 64, 3), 128, np.uint8))
    writer.release()
    [record] = run([tmp_path / "wall.mp4"], classifier, every=3)
    assert record["error"] == "no face found in 4 sampled frame(s)"
    assert record["faces"] == 0 and record["frames_sampled"] == 4


def test_photo_faces_keep_order_small_ones_are_skipped_and_drawn(classifier, tmp_path):
    portrait = cv2.imread(str(PORTRAIT))
    half = cv2.resize(portrait, (256, 300), interpolation=cv2.INTER_AREA)
    group = np.full((320, 560, 3), 200, np.uint8)
    group[10:310, 290:546] = half
    group[10:310, 10:266] = half
    cv2.imwrite(str(tmp_path / "group.png"), group)
    # The portrait 40 px wide: its face is about 19 px, under the cascade's 24 px window.
    small = np.full((160, 200, 3), 128, np.uint8)
    small[20:67, 30:70] = cv2.resize(portrait, (40, 47), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp_path / "small.png"), small)
    folder = tmp_path / "pictures"
    records = run([tmp_path / "group.png", tmp_path / "small.png"], classifier,
                  annotate=folder)

    group_records = [record for record in records if record["file"].endswith("group.png")]
    assert [record["face"] for record in group_records] == [0, 1]
    assert group_records[0]["box"][0] < 150 < 300 < group_records[1]["box"][0]
    [skipped] = [record for record in records if record["file"].endswith("small.png")]
    assert "label" not in skipped and "error" not in skipped
    assert "smaller than the detector's 24x24 px minimum" in skipped["skipped"]
    assert max(skipped["box"][2:]) < faces.MIN_FACE_SIZE
    drawn = cv2.imread(str(folder / "group.annotated.png"))
    assert drawn.shape == group.shape and np.abs(drawn.astype(int) - group).max() > 100
    assert (folder / "small.annotated.png").is_file()


def test_iou_tracker_keeps_ids_through_misses_and_reorders():
    tracker = video.IoUTracker(threshold=0.3, max_missed=1)
    assert tracker.update([[0, 0, 10, 10], [50, 0, 10, 10]]) == [0, 1]
    # Listed in the other order, each box still finds its own track.
    assert tracker.update([[52, 1, 10, 10], [1, 0, 10, 10]]) == [1, 0]
    assert tracker.update([[53, 1, 10, 10]]) == [1]  # track 0 missed once
    assert tracker.update([[2, 0, 10, 10], [54, 1, 10, 10]]) == [0, 1]
    assert tracker.update([[54, 1, 10, 10]]) == [1]
    assert tracker.update([[54, 1, 10, 10]]) == [1]
    assert tracker.update([[2, 0, 10, 10]]) == [2]  # missed twice: a new person
    assert video.iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / 150)
    with pytest.raises(ValueError, match="threshold"):
        video.IoUTracker(threshold=0)


def test_frames_are_read_one_at_a_time(clip, monkeypatch):
    reads = []
    real = cv2.VideoCapture

    class Counting:
        def __init__(self, path):
            self.capture = real(path)

        def read(self):
            reads.append("read")
            return self.capture.read()

        def grab(self):
            reads.append("grab")
            return self.capture.grab()

        def __getattr__(self, name):
            return getattr(self.capture, name)

    monkeypatch.setattr(cv2, "VideoCapture", Counting)
    frames = video.sample_frames(clip, every=10)
    first = next(frames)
    # A generator: one frame decoded so far, not the whole video.
    assert first.index == 0 and reads == ["read"]
    assert [frame.index for frame in frames] == [10, 20]
    # Frames that are not sampled are skipped without being decoded into images (the
    # fourth read is the one that finds the end).
    assert reads.count("read") == 4 and reads.count("grab") == FRAMES - 3


def test_smooth_and_episodes_on_a_clip(clip, classifier, tmp_path, capsys):
    episodes_path, folder = tmp_path / "episodes.csv", tmp_path / "pictures"
    assert predict.main([str(clip), "--model", str(classifier.path), "--every", "2",
                         "--smooth", "0.5", "--episodes", str(episodes_path),
                         "--annotate", str(folder)]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert all(set(record["smoothed"]) == set(CLASS_NAMES) for record in records)
    assert all(record["smoothed_label"] in CLASS_NAMES for record in records)
    # The first record of a track is its own smoothed value.
    first = records[0]
    assert first["smoothed"] == pytest.approx(first["probabilities"], abs=1e-6)
    table = pd.read_csv(episodes_path)
    assert set(table["track"]) == {0, 1}
    for track, rows in table.groupby("track"):
        # Episodes of a track follow each other and cover its records.
        assert rows["records"].sum() == sum(r["track"] == track for r in records)
        assert (rows["start"].iloc[1:].to_numpy() > rows["end"].iloc[:-1].to_numpy()).all()
    assert "episode(s) written to" in captured.err
    assert cv2.imread(str(folder / "clip.timeline.png")) is not None


def test_episodes_and_csv_must_be_two_files(clip, classifier, tmp_path, capsys):
    table = tmp_path / "out.csv"
    assert predict.main([str(clip), "--model", str(classifier.path), "--csv", str(table),
                         "--episodes", str(table)]) == 2
    assert "is also the --csv file" in capsys.readouterr().err
    assert predict.main([str(clip), "--model", str(classifier.path), "--episodes",
                         str(clip)]) == 2
    assert "would destroy it" in capsys.readouterr().err
    assert not table.exists()


def test_the_real_video_is_one_person_in_its_episodes(tmp_path, capsys):
    """../shared/video/woman2.mp4 (one woman's face): every episode is of one track, and the
    short tracks the Haar cascade makes up elsewhere in the frame are left out."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "video" / "woman2.mp4"
    if not path.exists():
        pytest.skip(f"the shared video is not at {path}")
    keras.utils.set_random_seed(3)
    model = tmp_path / "baseline.keras"
    get_model("baseline").save(model)
    episodes_path = tmp_path / "episodes.csv"
    assert predict.main([str(path), "--model", str(model), "--fps", "5", "--smooth", "1",
                         "--episodes", str(episodes_path), "--no-progress"]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    table = pd.read_csv(episodes_path)
    assert table["track"].nunique() == 1
    [track] = table["track"].unique()
    # That track is the woman's: it holds most of the records and spans the video.
    assert sum(r.get("track") == track for r in records) > 0.8 * len(records)
    assert table["end"].max() - table["start"].min() > 10


def test_the_api_gives_smoothed_faces_and_episodes(clip, classifier):
    from fer_keras.api import Recognizer

    recognizer = Recognizer(classifier)
    frames = list(recognizer.predict_video(clip, every=5, smooth=0.5))
    assert all("smoothed_label" in face for frame in frames for face in frame["faces"])
    found = recognizer.episodes(clip, every=5, smooth=0.5, min_track_seconds=0)
    assert {row["track"] for row in found} == {0, 1}
    assert all(row["file"] == str(clip) for row in found)
    with pytest.raises(ValueError, match="--smooth takes a positive number"):
        next(recognizer.predict_video(clip, smooth=-1))
