"""Photos and videos in, one record per face out: the library behind `python -m
fer_keras.predict` (whose docstring describes the records).

`predict` expands the inputs (`expand_paths`), finds the faces with a detector of
`fer_keras.vision.detectors` (`resolve_detector`, `detect_boxes`), classifies them in
batches with a `fer_keras.serving.runner.Classifier`, samples and tracks videos
(`predict_video`, `fer_keras.vision.video`) and draws annotated copies
(`fer_keras.vision.annotate`). `check_outputs` refuses, before any work, output paths that
would overwrite an input or cannot be written; `write_csv` writes the records as a table.
"""

import json
import os
import stat
import sys
import tempfile
from pathlib import Path

import numpy as np

from fer_keras.data.labels import FER2013
from fer_keras.serving.runner import Classifier, default_model
from fer_keras.utils.files import write_atomically
from fer_keras.utils.numbers import checked_number
from fer_keras.vision.annotate import (
    ANNOTATED_SUFFIX,
    TIMELINE_SUFFIX,
    AnnotatedVideo,
    OutputNames,
    annotate_photo,
    is_output_name,
    plot_timeline,
)
from fer_keras.vision.detectors import detector_options, get_detector
from fer_keras.vision.episodes import TrackSmoother, check_smoothing
from fer_keras.vision.faces import MIN_FACE_SIZE, crop_face
from fer_keras.vision.images import IMAGE_SUFFIXES, load_gray, load_gray_and_rgb
from fer_keras.vision.tracking import DEFAULT_DETECT_EVERY, FaceFollower, check_detect_every
from fer_keras.vision.video import (
    VIDEO_SUFFIXES,
    IoUTracker,
    Progress,
    VideoError,
    check_sampling,
    is_video,
    sample_frames,
)

STDIN_ERROR = "`-` (standard input) is not supported; give a file path (./- for a file named -)"


def input_problem(raw):
    """Why the input `raw` cannot be read, in words for its error record; None if it can.

    Only the path's metadata is looked at (`stat`): a FIFO is never opened, as reading one
    blocks until something writes to it, and `/dev/zero` would never end.
    """
    if str(raw) == "-":
        return STDIN_ERROR
    path = Path(raw)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"broken symbolic link: it points to {os.readlink(path)}, which does not exist"
        return "no such file or folder"
    except NotADirectoryError:
        return "no such file or folder (a part of the path is a file, not a folder)"
    except OSError as error:
        return f"cannot be looked at: {error.strerror or error}"
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))
    kind = next((words for test, words in kinds if test(mode)), "not a regular file")
    return f"is {kind}, not an image or video file"


def expand_paths(paths, annotate=None):
    """Files to classify, in order: files as given, folders searched recursively.

    Args:
        paths: files and folders.
        annotate: the `--annotate` folder, or None. Pictures of ours already in it
            (`fer_keras.vision.annotate.is_output_name`) are not taken from an input folder that
            holds it, so a second run does not classify the first one's annotated copies.

    Returns:
        A list whose items are image file `Path`s or, for a path that cannot be read (does
        not exist, is a device or FIFO, `-`) or a folder without images, an error record
        (dict), in the order of `paths`.
    """
    skipped_folder = Path(annotate).resolve() if annotate is not None else None
    entries = []
    for raw in paths:
        path = Path(raw)
        problem = input_problem(raw)
        if problem is not None:
            entries.append({"file": str(path), "error": problem})
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or is_video(p))
                           and not any(part.startswith(".") for part in p.relative_to(path).parts)
                           and not (skipped_folder is not None and is_output_name(p)
                                    and p.parent.resolve() == skipped_folder))
            if not found:
                entries.append({"file": str(path), "error": "folder holds no image or video "
                                f"files ({', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})"})
            entries.extend(found)
        else:
            entries.append(path)
    return entries


DEFAULT_DETECTOR = "haar"
"""The face detector `predict`, the `predict` command and `Recognizer` use unless told
otherwise: OpenCV's Haar cascade, which needs nothing beyond OpenCV. mtcnn finds more faces
and fewer false ones (docs/prediction.md, "Face detectors") but needs the mtcnn extra and
Keras's TensorFlow backend."""

def resolve_detector(detector, detect=True):
    """The face detector to use: built from a registered name, or given as one.

    Args:
        detector: a name of `fer_keras.vision.detectors.list_detectors()` ("haar",
            "mtcnn"), or a detector object (`get_detector(...)`'s: `name`, `input_mode`
            and `detect`), returned as it is.
        detect: False for no detection (each image is one face crop): returns None
            without building the detector, though a bad name is still refused.

    Returns:
        The detector, or None.

    Raises:
        ValueError: in one line, for an unknown name (listing the known ones), a detector
            whose package is not installed (naming the install), or an object that is no
            detector.
    """
    if isinstance(detector, str):
        if not detect:
            detector_options(detector)  # Refuses an unknown name at no cost.
            return None
        return get_detector(detector)
    if not all(hasattr(detector, field) for field in ("name", "input_mode", "detect")):
        raise ValueError(f"A face detector is a name ({DEFAULT_DETECTOR!r} or another of "
                         f"fer_keras.vision.detectors.list_detectors()) or an object of "
                         f"get_detector(). Received: detector of type "
                         f"{type(detector).__name__}")
    return detector if detect else None


def square_box(box, width, height):
    """`box` made square about its centre, for a crop that does not squash the face.

    The side is the box's larger one (at most the picture's smaller side); a square that
    would stick out of the `width` x `height` picture is moved inside it, so it stays
    square. A square box comes back unchanged.

    Example: MTCNN's 3:4 box `[178, 110, 173, 220]` in a 512x600 photo is
    `[155, 110, 220, 220]`.
    """
    x, y, w, h = box
    side = min(max(w, h), width, height)
    left = min(max(0, x - (side - w) // 2), width - side)
    top = min(max(0, y - (side - h) // 2), height - side)
    return [left, top, side, side]


def detect_boxes(detector, gray, rgb=None):
    """The face boxes `detector` finds, left to right, as `face_entries` takes them.

    Args:
        detector: a detector (`resolve_detector`).
        gray: the picture, uint8 `(height, width)`.
        rgb: the same picture in colour, uint8 RGB `(height, width, 3)`, or None; an
            `input_mode` "rgb" detector works on it when given (else on `gray`).

    Returns:
        `[x, y, width, height]` boxes: a detector's whose boxes are square by
        construction (its `square_boxes`; the Haar cascade searches square windows) as
        found, to the pixel; any other's made square (`square_box`).
    """
    picture = rgb if detector.input_mode == "rgb" and rgb is not None else gray
    boxes = detector.detect(picture)
    if getattr(detector, "square_boxes", False):
        return boxes
    height, width = gray.shape
    return sorted(square_box(box, width, height) for box in boxes)


def faces_of(path, detector, size):
    """Yields `(record, crop)` for each face of one file, or one `(error_record, None)`.

    `detector` is a detector (`resolve_detector`), or None to take the image as one crop.
    An "rgb" detector gets the photo in colour; the crops are cut from its gray.
    """
    try:
        if detector is not None and detector.input_mode == "rgb":
            gray, rgb = load_gray_and_rgb(path)
        else:
            gray, rgb = load_gray(path), None
    except ValueError as error:
        yield {"file": str(path), "error": str(error)}, None
        return
    height, width = gray.shape
    if detector is None:
        boxes = [[0, 0, width, height]]
    else:
        boxes = detect_boxes(detector, gray, rgb)
        if not boxes:
            yield {"file": str(path), "faces": 0,
                   "error": "no face found (if the image is already a face crop, pass "
                            "--no-detect)"}, None
            return
    yield from face_entries({"file": str(path)}, gray, boxes, size, detector is not None)


def face_entries(base, gray, boxes, size, check_size=True):
    """Yields `(record, crop)` per box, or `(skipped_record, None)` for a too-small face.

    Args:
        base: fields every record starts with (`file`, and `frame` / `time` for a video).
        gray: the picture, uint8 `(height, width)`.
        boxes: `[x, y, width, height]` boxes, in the order the records get.
        size: the model's `(height, width)`.
        check_size: report faces under `MIN_FACE_SIZE` as skipped (off for --no-detect,
            where the whole image is the face crop the user chose).
    """
    for index, box in enumerate(boxes):
        record = {**base, "face": index, "box": box}
        if check_size and min(box[2], box[3]) < MIN_FACE_SIZE:
            record["skipped"] = (f"face of {box[2]}x{box[3]} px is smaller than the "
                                 f"detector's {MIN_FACE_SIZE}x{MIN_FACE_SIZE} px minimum; "
                                 f"use a larger picture of it")
            yield record, None
        else:
            yield record, crop_face(gray, box, size)


def classify_into(records_and_crops, model, min_confidence=None):
    """Adds `label`, `class_id` and `probabilities` to each record that has a crop.

    The names are the `model`'s (`Classifier.class_names`, its label set's, in output
    order). With a `min_confidence`, each also gets `uncertain`: whether its top
    probability is below it.
    """
    class_names = model.class_names
    crops = [crop for _, crop in records_and_crops if crop is not None]
    probabilities = iter(model(np.stack(crops)) if crops else [])
    for record, crop in records_and_crops:
        if crop is not None:
            row = next(probabilities)
            class_id = int(np.argmax(row))
            record.update(label=class_names[class_id], class_id=class_id,
                          probabilities={name: round(float(p), 6)
                                         for name, p in zip(class_names, row)})
            if min_confidence is not None:
                record["uncertain"] = bool(row[class_id] < min_confidence)


def check_confidence(min_confidence):
    """Validates a `min_confidence` (None, or a finite number in [0, 1]) and returns it.

    Raises:
        ValueError: naming the bad value.
    """
    if min_confidence is None:
        return None
    return checked_number(min_confidence, "min_confidence", "a probability", low=0, high=1,
                          hint="None for no uncertain marks")


def predict(paths, model=None, batch_size=64, detect=True, output=None, every=None,
            fps=None, annotate=None, progress=sys.stderr, min_confidence=None, smooth=None,
            smooth_method="exponential", detector=DEFAULT_DETECTOR,
            detect_every=DEFAULT_DETECT_EVERY):
    """Classifies the faces in `paths` (photos and videos) and writes JSON lines.

    Args:
        paths: files and folders.
        model: a `Classifier`, or a path for one; None picks `default_model()`.
        batch_size: faces per model call for photos (a video's faces are classified
            `VIDEO_CHUNK_FRAMES` sampled frames at a time).
        detect: find faces with `detector`; False takes each image (or video frame) as
            one crop.
        output: a text stream for the JSON lines (default stdout).
        every: for videos, classify every N-th frame.
        fps: for videos, classify this many frames per second of video time (default
            `fer_keras.vision.video.DEFAULT_SAMPLE_FPS` when `every` is not given either).
        annotate: a folder for annotated copies of the inputs and video timelines (see
            `fer_keras.vision.annotate`), or None.
        progress: a stream for the per-video progress bar, or None.
        min_confidence: a probability in [0, 1], or None; with one, each classified
            face's record gets `uncertain`: whether its top probability is below it.
        smooth: for videos, smooth each track's probabilities over this many seconds
            (`predict_video`), or None.
        smooth_method: "exponential" or "window" (`fer_keras.vision.episodes`).
        detector: the face detector, a name ("haar", the default, or "mtcnn", which needs
            the mtcnn extra and TensorFlow) or a detector object (`resolve_detector`).
            Boxes not square by construction are made square (`detect_boxes`).
        detect_every: for videos, the most seconds of video between searches of the
            whole frame; faces are followed in windows about their boxes in between
            (`predict_video`). 0 searches every sampled frame whole.

    Returns:
        The list of records written (dicts), in order.

    Raises:
        ValueError: for a bad batch size or sampling, no model, an unknown or
            uninstalled face detector, or an `annotate` folder that cannot be written or
            would overwrite an input (`check_outputs`).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer. Received: "
                         f"batch_size={batch_size!r}")
    check_sampling(every, fps)
    check_confidence(min_confidence)
    check_detect_every(detect_every)
    if smooth is not None:
        check_smoothing(smooth, smooth_method)
    if annotate is not None:
        check_outputs(paths, annotate=annotate)
    output = output or sys.stdout
    # Before the model loads: an unknown or uninstalled detector is refused at no cost.
    detector = resolve_detector(detector, detect)
    if not isinstance(model, Classifier):
        model = Classifier(model if model is not None else default_model())
    names = None
    if annotate is not None:
        names = OutputNames(annotate)
    entries = expand_paths(paths, annotate)
    written = []
    pending = []  # (record, crop or None), in input order.

    def emit(record):
        output.write(json.dumps(record) + "\n")
        written.append(record)

    def flush():
        classify_into(pending, model, min_confidence)
        for record, _ in pending:
            emit(record)
        output.flush()
        pending.clear()

    for entry in entries:
        if isinstance(entry, dict):
            pending.append((entry, None))
            continue
        if is_video(entry):
            flush()
            for record in predict_video(entry, model, detector, every, fps, names, progress,
                                        min_confidence, smooth, smooth_method,
                                        detect_every):
                emit(record)
            output.flush()
            continue
        if names is not None:
            flush()
            first = len(written)
        for record, crop in faces_of(entry, detector, model.size):
            pending.append((record, crop))
            if sum(crop is not None for _, crop in pending) >= batch_size:
                flush()
        if names is not None:
            # Drawing needs this photo's labels, so its faces are classified now rather
            # than batched with the next photos'.
            flush()
            done = written[first:]
            if not any("error" in record for record in done):
                annotate_photo(entry, done, names)
    flush()
    return written


VIDEO_CHUNK_FRAMES = 16
"""Sampled frames whose faces a video classifies in one model call (a batch is many times
faster per face than one face at a time); their records, and the annotated copy's frames,
follow once the chunk is classified."""


def predict_video(path, model, detector=DEFAULT_DETECTOR, every=None, fps=None, names=None,
                  progress=sys.stderr, min_confidence=None, smooth=None,
                  smooth_method="exponential", detect_every=DEFAULT_DETECT_EVERY):
    """Yields the face records of one video, sampled frame by sampled frame.

    `detector` is a detector name or object (`resolve_detector`), or None to take each
    frame as one crop; an "rgb" detector gets each frame in RGB (OpenCV decodes BGR), the
    crops are cut from its gray. The whole frame is searched for faces at least every
    `detect_every` seconds of video time, and on every sampled frame where no face is
    being followed; in between, each face is followed in a window about its last box
    (`fer_keras.vision.tracking.FaceFollower`; 0 searches every sampled frame whole).

    Each record has `frame` (index from 0), `time` (seconds), `track` (an id that follows
    one person across frames, `fer_keras.vision.video.IoUTracker`), `face`, `box` and the
    classification (with `uncertain` given a `min_confidence`, as `classify_into`). The
    faces of `VIDEO_CHUNK_FRAMES` sampled frames are classified in one batch. With
    `smooth` (seconds), each track's probabilities are also smoothed over time
    (`fer_keras.vision.episodes.TrackSmoother`, `smooth_method`): the record gets
    `smoothed` and `smoothed_label`, which the annotated copy shows. A video that cannot
    be read gets one error record; one that stops early (truncated) gets its faces so far
    and then one error record.
    """
    # OpenCV is slow to import; it loads only once a video is read.
    import cv2

    detector = None if detector is None else resolve_detector(detector)
    follower = None if detector is None else FaceFollower(
        lambda gray, rgb: detect_boxes(detector, gray, rgb), detector,
        check_detect_every(detect_every))
    # Only the timeline needs every record of the video; without it, a count will do.
    info, tracker, records, faces = {}, IoUTracker(), [], 0
    smoother = TrackSmoother(smooth, smooth_method) if smooth else None
    annotated, bar, latest, sampled_count, stem = None, None, [], 0, None
    # Frames read but not yet classified: (frame index, BGR image or None, found or None).
    chunk, chunk_sampled = [], 0

    def finish_chunk():
        nonlocal latest, faces
        found_all = [pair for _, _, found in chunk if found is not None for pair in found]
        classify_into(found_all, model, min_confidence)
        for index, image, found in chunk:
            if found is not None:
                classified = [record for record, crop in found if crop is not None]
                if smoother is not None:
                    for record in classified:
                        smoother.update(record)
                latest = [record for record, _ in found]
                faces += len(latest)
                if names is not None:
                    records.extend(latest)
                yield from latest
            if annotated is not None:
                annotated.write(image, latest)
            bar.update(index + 1)
        chunk.clear()

    try:
        frames = sample_frames(path, every=every, fps=fps, decode_all=names is not None,
                               info=info)
        for frame in frames:
            if bar is None:
                bar = Progress(Path(path).name, info["frame_count"], progress)
                if names is not None:
                    stem = names.stem_for(path)
                    annotated = AnnotatedVideo(f"{stem}{ANNOTATED_SUFFIX}.mp4", info["fps"],
                                               (info["width"], info["height"]))
            found = None
            if frame.sampled:
                sampled_count += 1
                chunk_sampled += 1
                gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
                height, width = gray.shape
                if detector is None:
                    boxes = [[0, 0, width, height]]
                else:
                    # MTCNN was trained on RGB and finds fewer faces in OpenCV's BGR.
                    rgb = (cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
                           if detector.input_mode == "rgb" else None)
                    boxes = follower.boxes(gray, frame.time, rgb)
                base = {"file": str(path), "frame": frame.index, "time": round(frame.time, 4)}
                found = list(face_entries(base, gray, boxes, model.size, detector is not None))
                classified = [record for record, crop in found if crop is not None]
                for record, track in zip(classified, tracker.update(
                        [record["box"] for record in classified])):
                    record["track"] = track
            chunk.append((frame.index, frame.image if annotated is not None else None, found))
            if chunk_sampled >= VIDEO_CHUNK_FRAMES:
                yield from finish_chunk()
                chunk_sampled = 0
        yield from finish_chunk()
    except VideoError as error:
        yield from finish_chunk()
        yield {"file": str(path), "error": str(error),
               **({"frames_read": error.frames_read} if error.frames_read else {})}
    finally:
        if bar is not None:
            bar.close()
        if annotated is not None:
            annotated.close()
    if bar is not None and not faces:
        yield {"file": str(path), "faces": 0, "frames_sampled": sampled_count,
               "error": f"no face found in {sampled_count} sampled frame(s)"}
    if names is not None and records:
        plot_timeline(records, f"{stem}{TIMELINE_SUFFIX}", title=Path(path).name)


CSV_COLUMNS = ("file", "frame", "time", "track", "face", "x", "y", "width", "height",
               "label", "class_id")


def write_csv(records, path, class_names=FER2013.class_names):
    """Writes records as a table (pandas): one row per record, one column per probability.

    Columns: `CSV_COLUMNS`, then one per class of `class_names` (the model's label set, in
    output order), then `skipped` and `error`; fields a record lacks (`frame` for a
    photo, `label` for an error) are left empty.

    The table is written to a hidden file beside `path` and renamed over it when complete,
    so a failed write leaves `path` as it was, never half-written. A path that exists and
    is not a regular file (`/dev/stdout`) is written directly. Missing parent folders are
    made.

    Raises:
        ValueError: if the file cannot be written (with the reason).
    """
    # pandas is slow to import; only --csv needs it.
    import pandas as pd

    rows = []
    for record in records:
        row = {key: value for key, value in record.items()
               if key not in ("box", "probabilities")}
        if "box" in record:
            row.update(zip(("x", "y", "width", "height"), record["box"]))
        row.update(record.get("probabilities", {}))
        rows.append(row)
    columns = [*CSV_COLUMNS, *class_names, "skipped", "error"]
    table = pd.DataFrame(rows)
    extra = [column for column in table.columns if column not in columns]
    table = table.reindex(columns=columns + extra)
    # Integer columns with gaps would turn into floats ("3.0"); nullable ints keep "3".
    for column in ("frame", "track", "face", "x", "y", "width", "height", "class_id"):
        table[column] = table[column].astype("Int64")
    try:
        if Path(path).exists() and not Path(path).is_file():
            table.to_csv(path, index=False)
            return table
        # A --csv that is a symbolic link stays one: its target is replaced.
        Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda partial: table.to_csv(partial, index=False),
                         follow_links=True)
    except OSError as error:
        raise ValueError(f"cannot write the CSV table {path}: {error.strerror or error}. "
                         f"Pass a --csv path in a writable folder. Received: --csv {path}"
                         ) from None
    return table


def file_identity(path):
    """`(device, inode)` of an existing file, or None: two names of one file (a hard or
    symbolic link) have the same identity."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def check_writable(path, flag, folder=False):
    """Refuses an output path that cannot be written, before any work is done.

    A missing file or folder is fine when the nearest folder that exists above it is
    writable (it and its parents are made); that is tried by creating and removing a
    hidden file there, as permissions alone do not tell about read-only mounts.

    Args:
        path: the output file (or folder, with `folder`).
        flag: the option that named it (`--csv`), for the message.
        folder: whether a folder is expected rather than a file.

    Raises:
        ValueError: naming the path and what is wrong with it (a folder where a file is
            expected or the reverse, a file in the way of its parent folders, read-only).
    """
    path = Path(path)
    received = f"Received: {flag} {path}"
    try:
        if path.exists() and not (path.is_file() or path.is_dir()):
            # A device or FIFO named on purpose (/dev/stdout) is written as it is.
            if folder or not os.access(path, os.W_OK):
                raise ValueError(f"{flag} {path} is not a {'folder' if folder else 'file'} "
                                 f"that can be written; pass another path. {received}")
            return
        target = path.resolve()
        if target.is_dir() and not folder:
            raise ValueError(f"{flag} {path} is a folder; give the path of a file to write, "
                             f"such as {path / 'faces.csv'}. {received}")
        if folder and target.exists() and not target.is_dir():
            raise ValueError(f"{flag} {path} is a file, not a folder; give a folder for the "
                             f"pictures. {received}")
        if target.exists() and not os.access(target, os.W_OK):
            raise ValueError(f"{flag} {path} is not writable (read-only); pass another path. "
                             f"{received}")
        existing = target if folder else target.parent
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise ValueError(f"{flag} {path} cannot be made: {existing} is a file, not a "
                             f"folder. {received}")
        handle, probe = tempfile.mkstemp(prefix=".fer_keras-write-check-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"{flag} {path} cannot be written: {error.strerror or error} (in "
                         f"{getattr(error, 'filename', None) or path}). Pass a path in a "
                         f"writable folder. {received}") from None


def check_outputs(paths, csv=None, annotate=None, stdout=None, episodes=None):
    """Refuses outputs that would overwrite an input or each other, or cannot be written.

    Runs before anything is classified, so a bad output path costs nothing and no input
    is ever replaced: an output that is one of the inputs (by path, or as another name of
    the same file), an `--annotate` folder holding an input named like its pictures, a
    `--csv` that is the `--annotate` folder, inside it or one of its pictures, or standard
    output redirected into an input or the `--csv` file. An existing file that is no input
    and is named exactly by `--csv` is replaced, as asked.

    Args:
        paths: the inputs (files and folders), as `predict` takes them.
        csv: the `--csv` file, or None.
        annotate: the `--annotate` folder, or None.
        stdout: the stream the JSON lines go to, or None.
        episodes: the `--episodes` file, or None (checked as `--csv` is, and refused when
            it is the `--csv` file).

    Raises:
        ValueError: one line naming the output, the clash and the fix.
    """
    if episodes is not None and csv is not None and \
            Path(episodes).resolve() == Path(csv).resolve():
        raise ValueError(f"--episodes {episodes} is also the --csv file: one would replace "
                         f"the other. Pass two paths. Received: --episodes {episodes}")
    for flag, value in (("--csv", csv), ("--episodes", episodes), ("--annotate", annotate)):
        if value is not None and not str(value).strip():
            raise ValueError(f"{flag} needs a path. Received: {flag} {value!r}")
    by_path, by_identity = {}, {}
    for entry in expand_paths(paths, annotate):
        if not isinstance(entry, dict):
            by_path[entry.resolve()] = entry
            by_identity[file_identity(entry)] = entry
    by_identity.pop(None, None)

    def input_at(path):
        return by_path.get(Path(path).resolve()) or by_identity.get(file_identity(path))

    for flag, value in (("--csv", csv), ("--episodes", episodes), ("--annotate", annotate)):
        clash = None if value is None else input_at(value)
        if clash is not None:
            raise ValueError(f"{flag} {value} is the input {clash}; writing it would destroy "
                             f"it. Pass another {flag} path. Received: {flag} {value}")
    if annotate is not None:
        folder = Path(annotate).resolve()
        for entry in by_path.values():
            place = entry.absolute().parent.resolve() / entry.name
            if place.parent == folder and is_output_name(place):
                raise ValueError(f"--annotate {annotate} holds the input {entry}, named as "
                                 f"the annotated pictures written there are, so it could be "
                                 f"overwritten; pass another --annotate folder. Received: "
                                 f"--annotate {annotate}")
        for flag, value in (("--csv", csv), ("--episodes", episodes)):
            if value is None:
                continue
            table = Path(value).resolve()
            if table == folder or table in folder.parents or (
                    table.parent == folder and is_output_name(table)):
                raise ValueError(f"{flag} {value} clashes with --annotate {annotate}: one "
                                 f"would overwrite the other; pass a {flag} file outside the "
                                 f"folder's pictures. Received: {flag} {value}")
    stdout_identity = None
    try:
        # Only a regular file can be clobbered; a terminal or pipe is no one's data.
        if stdout is not None and stat.S_ISREG(os.fstat(stdout.fileno()).st_mode):
            stdout_identity = file_identity(stdout.fileno())
    except (AttributeError, OSError, ValueError):
        pass  # Not a real file (a test's capture, a closed stream).
    if stdout_identity is not None:
        if stdout_identity in by_identity:
            raise ValueError(f"standard output is redirected into the input "
                             f"{by_identity[stdout_identity]}; the JSON lines would be written "
                             f"into it. Redirect it to another file.")
        for flag, value in (("--csv", csv), ("--episodes", episodes)):
            if value is not None and file_identity(value) == stdout_identity:
                raise ValueError(f"{flag} {value} is the file standard output is redirected "
                                 f"to; the table would replace the JSON lines. Pass another "
                                 f"{flag} path. Received: {flag} {value}")
    if csv is not None:
        check_writable(csv, "--csv")
    if episodes is not None:
        check_writable(episodes, "--episodes")
    if annotate is not None:
        check_writable(annotate, "--annotate", folder=True)
