"""predict never overwrites its inputs, checks its outputs before classifying, and names
bad inputs and sampling rates in one line (issue 26, cases 4, 9, 10 and 18)."""

import errno
import json
import os
import signal
import sys
import tempfile
from itertools import islice
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from PIL import Image

from fer_keras import predict
from fer_keras.models import get_model
from fer_keras.vision import video

REAL_VIDEO = Path(__file__).resolve().parents[2] / "shared" / "video" / "woman2.mp4"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An untrained baseline `.keras` file (the results do not matter here, only the files)."""
    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("model") / "baseline.keras"
    get_model("baseline").save(path)
    return path


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 50), np.uint8)).save(path)
    return path


def tiny_video(path, frames=12, fps=10.0, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for index in range(frames):
        writer.write(np.full((size[1], size[0], 3), 10 * index, np.uint8))
    writer.release()
    return path


def run_main(argv, capsys):
    """`predict.main(argv)`'s exit status, JSON records and stderr lines."""
    status = predict.main([str(each) for each in argv])
    captured = capsys.readouterr()
    return status, [json.loads(line) for line in captured.out.splitlines()], captured.err


def assert_one_line_error(status, records, err, *names):
    assert status == 2, err
    assert records == [], "something was classified before the output was refused"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for name in names:
        assert str(name) in lines[0], (name, err)


# Case 4: an output that is one of the inputs is refused; the input survives.

@pytest.mark.parametrize("flag", ["--csv", "--annotate"])
@pytest.mark.parametrize("how", ["same path", "symbolic link", "hard link", "in a folder"])
def test_an_output_that_is_an_input_is_refused_and_the_input_survives(
        tmp_path, photo, model_file, capsys, flag, how):
    before = photo.read_bytes()
    inputs, output = [photo], photo
    if how == "symbolic link":
        output = tmp_path / "link.csv"
        output.symlink_to(photo)
    elif how == "hard link":
        output = tmp_path / "other_name.png"
        os.link(photo, output)
    elif how == "in a folder":
        inputs = [tmp_path]  # photo.png is found in it.
    status, records, err = run_main(
        [*inputs, "--model", model_file, "--no-detect", flag, output], capsys)
    assert_one_line_error(status, records, err, flag, output, "is the input")
    assert photo.read_bytes() == before


def test_an_input_named_like_an_annotated_picture_in_the_folder_is_refused(
        tmp_path, photo, model_file, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    # Its own file, which photo.png's annotated copy would be written over.
    precious = folder / "photo.annotated.png"
    precious.write_bytes(photo.read_bytes())
    before = precious.read_bytes()
    status, records, err = run_main(
        [photo, precious, "--model", model_file, "--no-detect", "--annotate", folder], capsys)
    assert_one_line_error(status, records, err, "--annotate", precious)
    assert precious.read_bytes() == before


@pytest.mark.parametrize("csv_name", ["out", "out/photo.timeline.png", "."])
def test_csv_and_annotate_writing_the_same_place_is_refused(
        tmp_path, photo, model_file, capsys, monkeypatch, csv_name):
    monkeypatch.chdir(tmp_path)
    annotate = "out/pictures" if csv_name == "." else "out"
    status, records, err = run_main(
        [photo, "--model", model_file, "--no-detect", "--csv", csv_name,
         "--annotate", annotate], capsys)
    assert_one_line_error(status, records, err, "--csv")


def test_stdout_redirected_into_an_input_is_refused(photo, model_file, capsys, monkeypatch):
    before = photo.read_bytes()
    with open(photo, "a") as appended:
        monkeypatch.setattr(sys, "stdout", appended)
        status = predict.main([str(photo), "--model", str(model_file), "--no-detect"])
    err = capsys.readouterr().err
    assert status == 2 and "standard output is redirected into the input" in err, err
    assert len(err.strip().splitlines()) == 1 and str(photo) in err
    assert photo.read_bytes() == before


def test_csv_named_exactly_replaces_that_file_and_leaves_nothing_beside_it(
        tmp_path, photo, model_file, capsys):
    # Decision kept from before: a --csv that names an existing file (no input) replaces
    # it, as asked; the replacement is whole (written aside, then renamed over it).
    table = tmp_path / "tables" / "faces.csv"
    table.parent.mkdir()
    table.write_text("an older table\n")
    status, records, _ = run_main(
        [photo, "--model", model_file, "--no-detect", "--csv", table], capsys)
    assert status == 0 and len(records) == 1
    assert table.read_text().startswith("file,frame,time,track,face,")
    assert sorted(p.name for p in table.parent.iterdir()) == ["faces.csv"]


def test_a_second_annotate_run_does_not_read_its_own_pictures(tmp_path, model_file, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((60, 50), 120, np.uint8)).save(photos / "a.png")
    argv = [photos, "--model", model_file, "--no-detect", "--annotate", photos / "out"]
    first_status, first, _ = run_main(argv, capsys)
    assert first_status == 0 and (photos / "out" / "a.annotated.png").is_file()
    second_status, second, _ = run_main(argv, capsys)
    assert second_status == 0
    assert [record["file"] for record in second] == [record["file"] for record in first] == [
        str(photos / "a.png")]
    assert sorted(p.name for p in (photos / "out").iterdir()) == ["a.annotated.png"]


# Case 9: outputs that cannot be written are refused before anything is classified.

@pytest.mark.parametrize("flag,target,words", [
    ("--csv", "folder", "is a folder"),
    ("--csv", "under a file", "is a file, not a folder"),
    ("--annotate", "a file", "is a file, not a folder"),
    ("--annotate", "under a file", "is a file, not a folder"),
])
def test_outputs_of_the_wrong_kind_are_refused_before_classifying(
        tmp_path, photo, model_file, capsys, flag, target, words):
    existing = tmp_path / "existing"
    if target == "folder":
        existing.mkdir()
        output = existing
    else:
        existing.write_text("the user's file\n")
        output = existing if target == "a file" else existing / "more" / "faces.csv"
    status, records, err = run_main(
        [photo, "--model", model_file, "--no-detect", flag, output], capsys)
    assert_one_line_error(status, records, err, flag, output, words)
    if existing.is_file():
        assert existing.read_text() == "the user's file\n"


@pytest.mark.parametrize("flag", ["--csv", "--annotate"])
def test_a_read_only_folder_is_refused_before_classifying(
        tmp_path, photo, model_file, capsys, flag):
    if os.geteuid() == 0:
        pytest.skip("running as root, where chmod 0o555 does not stop writes (the "
                    "read-only mount test below covers the check)")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        status, records, err = run_main(
            [photo, "--model", model_file, "--no-detect", flag, locked / "out"], capsys)
    finally:
        locked.chmod(0o755)
    assert_one_line_error(status, records, err, flag, "cannot be written")


@pytest.mark.parametrize("flag", ["--csv", "--annotate"])
def test_a_read_only_mount_is_refused_before_classifying(
        tmp_path, photo, model_file, capsys, monkeypatch, flag):
    # The write check creates a file where the output goes; a read-only mount refuses it
    # with EROFS for root too, which is what this stands in for.
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(kwargs.get("dir")))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    status, records, err = run_main(
        [photo, "--model", model_file, "--no-detect", flag, tmp_path / "out"], capsys)
    assert_one_line_error(status, records, err, flag, "Read-only file system")


# Case 10: the video sampling rate.

@pytest.mark.parametrize("fps", ["1e308", "0", "-1", "nan", "inf", "1001"])
def test_an_impossible_fps_is_one_line_at_parse_time(tmp_path, model_file, capsys, fps):
    clip = tiny_video(tmp_path / "clip.mp4")
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(clip), "--model", str(model_file), "--fps", fps])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert f"argument --fps: must be a finite number in (0, 1000]. Received: '{fps}'" in err


def test_sample_frames_takes_every_frame_for_a_huge_fps_and_refuses_bad_ones(tmp_path):
    clip = tiny_video(tmp_path / "clip.mp4", frames=12)
    assert [frame.index for frame in video.sample_frames(clip, fps=1e308)] == list(range(12))
    assert [frame.index for frame in video.sample_frames(clip, fps=5)] == [0, 2, 4, 6, 8, 10]
    for bad in (float("inf"), float("nan"), 0, -2.0, "fast", True):
        with pytest.raises(ValueError, match="fps must be a positive, finite number"):
            next(video.sample_frames(clip, fps=bad))


def test_the_real_video_with_a_huge_fps(model_file, capsys):
    if not REAL_VIDEO.is_file():
        pytest.skip(f"the real test video is not at {REAL_VIDEO}")
    first = [frame.index for frame in islice(video.sample_frames(REAL_VIDEO, fps=1e308), 5)]
    assert first == [0, 1, 2, 3, 4]
    with pytest.raises(SystemExit):
        predict.main([str(REAL_VIDEO), "--model", str(model_file), "--fps", "1e308"])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--fps" in err and "1e308" in err


def test_an_impossible_rate_in_the_video_header_falls_back(tmp_path, monkeypatch):
    clip = tiny_video(tmp_path / "clip.mp4", frames=12)
    real = cv2.VideoCapture

    class OddHeader:
        """A capture whose container states an infinite rate and a NaN frame count."""

        def __init__(self, path):
            self.capture = real(path)

        def get(self, prop):
            if prop == cv2.CAP_PROP_FPS:
                return float("inf")
            if prop == cv2.CAP_PROP_FRAME_COUNT:
                return float("nan")
            return self.capture.get(prop)

        def __getattr__(self, name):
            return getattr(self.capture, name)

    monkeypatch.setattr(cv2, "VideoCapture", OddHeader)
    info = {}
    frames = list(video.sample_frames(clip, fps=5, info=info))
    assert info["fps"] == video.FALLBACK_VIDEO_FPS and info["frame_count"] == 0
    assert [frame.index for frame in frames] == [0, 5, 10]
    assert [frame.time for frame in frames] == [0.0, 0.2, 0.4]


# Case 18: inputs that exist but are no files to read are named for what they are.

def test_devices_fifos_and_stdin_are_named_for_what_they_are(tmp_path, model_file, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    folder_named_like_a_video = tmp_path / "clip.mp4"
    folder_named_like_a_video.mkdir()
    inputs = [fifo, "-", folder_named_like_a_video, tmp_path / "missing.png"]
    if Path("/dev/zero").exists():
        inputs.insert(0, "/dev/zero")

    def blocked(*args):
        raise AssertionError("a FIFO or device was opened for reading")

    # Opening the FIFO would block for ever; the alarm turns that into a failure.
    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(60)
    try:
        status, records, err = run_main([*inputs, "--model", model_file, "--no-detect"],
                                         capsys)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert status == 1 and "Traceback" not in err
    errors = {record["file"]: record["error"] for record in records}
    assert list(errors) == [str(each) for each in inputs]
    if "/dev/zero" in errors:
        assert errors["/dev/zero"] == "is a character device, not an image or video file"
    assert errors[str(fifo)] == "is a FIFO (named pipe), not an image or video file"
    assert errors["-"].startswith("`-` (standard input) is not supported; give a file path")
    assert errors[str(folder_named_like_a_video)].startswith("folder holds no image or video")
    assert errors[str(tmp_path / "missing.png")] == "no such file or folder"
