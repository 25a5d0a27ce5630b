"""Classify the facial expressions in ordinary photos and videos.

Usage:

    python -m fer_keras.predict PATH [PATH ...] [--model DIR_OR_FILE] [--batch-size N]
        [--no-detect] [--litert] [--threads N] [--every N | --fps X] [--csv PATH]
        [--annotate DIR] [--no-progress]

Videos (.mp4, .avi, .mov, .mkv, .webm and the other `fer_keras.vision.video.VIDEO_SUFFIXES`,
anything OpenCV opens) are read one frame at a time; every N-th frame (`--every`) or X
frames per second of video (`--fps`, default 5) are classified, and each face record gets
`frame`, `time` (seconds) and `track` (an id that follows one person across frames). A
face smaller than the detector's 24x24 px window gets a record with `skipped` instead of a
label. `--csv` writes the records as a table too; `--annotate DIR` writes boxed and
labelled copies of the inputs and a timeline plot per video (`fer_keras.vision.annotate`).

PATH is an image file or a folder (searched recursively for .png, .jpg, .jpeg, .bmp, .gif,
.webp, .tif, .tiff and .pgm files). Any size, gray or colour; transparency is composited
over white and EXIF orientation is applied, as a photo viewer shows the picture. Faces are
found with the frontal-face Haar cascade that OpenCV ships
(`haarcascade_frontalface_default.xml`, nothing is downloaded), cut out, turned gray and
resized to 48x48 (area averaging, as the FER2013 image-folder loader does), then classified
in batches. With `--no-detect` each image is taken as one face crop.

Output: one JSON object a line on stdout, in input order, one per face:

    {"file": "a.jpg", "face": 0, "box": [x, y, width, height], "label": "happy",
     "class_id": 3, "probabilities": {"angry": 0.01, ..., "neutral": 0.02}}

`box` is in pixels of the (EXIF-rotated) image. A file that cannot be used gets one record
with an `error` field instead (not an image, truncated, no face found, missing, a device or
FIFO, `-`), and the other files still get results. The exit status is 0 when every file
gave a result, 1 when some gave an error record, and 2 for a usage error (no model, bad
flags, an output path that is an input or cannot be written: outputs are checked before
anything is classified).

`--model` takes a run folder (holding `model.keras`), a `.keras` file, an exported
SavedModel folder (`.../serving/VERSION`) or a `.tflite` file (run with LiteRT; `--litert`
picks the one exported beside a SavedModel or run folder). Without it, the run under
`saved_models/` whose `metrics.json` has the highest validation accuracy is used. The
summary line on stderr gives faces/s, end to end and inside the model.
"""

import argparse
import json
import sys
from pathlib import Path

from fer_keras.cli import command_prog, entry_point, run_command
from fer_keras.vision.video import VIDEO_SUFFIXES, iou, is_video

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm")
CASCADE_FILE = "haarcascade_frontalface_default.xml"
DETECTION_MAX_SIDE = 1024
"""Photos are searched for faces at most this large (faster; boxes map back to full size)."""

MIN_FACE_SIZE = 24
"""The Haar cascade's window (24x24 px): faces smaller than this in the picture's own pixels
are reported with a `skipped` field, not classified."""

SMALL_FACE_SEARCH_MAX_SIDE = 320
"""Pictures up to this size are also searched enlarged 2x for faces below `MIN_FACE_SIZE`
(down to half of it), so those are reported as skipped instead of being missed without a
word. Larger pictures skip that search: enlarged, it would cost several times the main one."""

DEFAULT_ROOT = Path("saved_models")


def find_best_model(root=DEFAULT_ROOT):
    """The run folder under `root` with the highest `splits.validation.accuracy`.

    Args:
        root: the folder holding run folders (`saved_models/`).

    Returns:
        The run folder (it holds `model.keras`).

    Raises:
        ValueError: if no run folder has both `metrics.json` and `model.keras`.
    """
    root = Path(root)
    best, best_accuracy = None, -1.0
    for metrics_path in sorted(root.glob("*/metrics.json")):
        if not (metrics_path.parent / "model.keras").is_file():
            continue
        try:
            accuracy = float(json.loads(metrics_path.read_text())
                             ["splits"]["validation"]["accuracy"])
        except (OSError, ValueError, KeyError, TypeError):
            print(f"warning: skipping {metrics_path}: no splits.validation.accuracy",
                  file=sys.stderr)
            continue
        if accuracy > best_accuracy:
            best, best_accuracy = metrics_path.parent, accuracy
    if best is None:
        raise ValueError(f"No trained model found: no run folder under {root}/ has both "
                         f"metrics.json and model.keras. Train one with `python -m "
                         f"fer_keras.fit EXPERIMENT`, or pass --model DIR_OR_FILE.")
    return best


def find_exported_tflite(path):
    """The float TFLite file of an export: in a SavedModel folder, or a run folder's newest.

    Raises:
        ValueError: if there is none (with the export command that writes one).
    """
    from fer_keras.export import TFLITE_FILE, existing_versions

    path = Path(path)
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        versions = existing_versions(path / "serving")
        if versions:
            path = path / "serving" / str(versions[-1])
    candidate = path / "assets.extra" / TFLITE_FILE
    if not candidate.is_file():
        raise ValueError(f"--litert needs a .tflite file, or a SavedModel or run folder with "
                         f"an exported {candidate.relative_to(path)}; none at {candidate}. "
                         f"Export with `python -m fer_keras.export RUN_FOLDER`, or pass the "
                         f".tflite file as --model. Received: --model {path}")
    return candidate


class Classifier:
    """Class probabilities for batches of uint8 face crops, from any of our model formats.

    Args:
        path: a run folder holding `model.keras`, a `.keras` file, a SavedModel folder
            exported by `fer_keras.export`, or a `.tflite` file (run with LiteRT).
        litert: run the TFLite file exported beside a SavedModel folder
            (`assets.extra/model.tflite`), or beside a run folder's newest export
            (`serving/VERSION/`), with LiteRT instead of TensorFlow.
        num_threads: LiteRT threads (None: the runtime's choice).
    """

    def __init__(self, path, litert=False, num_threads=None):
        path = Path(path)
        self.path = path
        self._signature = None
        self._lite = None
        if litert and path.suffix != ".tflite":
            path = self.path = find_exported_tflite(path)
        if path.suffix == ".tflite":
            from fer_keras.serving.litert import TFLiteClassifier

            self._lite = TFLiteClassifier(path, num_threads=num_threads)
            self.input_shape = self._lite.input_shape
            self.runtime = self._lite.runtime
            return
        self.runtime = "tensorflow"
        if path.is_dir() and (path / "saved_model.pb").is_file():
            from fer_keras.cli import require_tensorflow

            require_tensorflow(f"Loading the SavedModel {path}")
            import tensorflow as tf

            from fer_keras.models import check_class_probabilities

            loaded = tf.saved_model.load(str(path))
            if "serving_default" not in loaded.signatures:
                raise ValueError(f"{path} has no serving_default signature; export it with "
                                 f"`python -m fer_keras.export`. Received: --model {path}")
            self._loaded = loaded  # Keeps the variables alive.
            self._signature = loaded.signatures["serving_default"]
            spec = self._signature.structured_input_signature[1]
            if "image" not in spec:
                raise ValueError(f"{path}'s serving_default has no 'image' input; export it "
                                 f"with `python -m fer_keras.export`. Received: {sorted(spec)}")
            self.input_shape = tuple(spec["image"].shape[1:])
            outputs = self._signature.structured_outputs
            check_class_probabilities(outputs["probabilities"].shape
                                      if "probabilities" in outputs else sorted(outputs), path)
            from fer_keras.serving.checks import check_probabilities, image_size, probe_faces

            # One small batch shows whether the outputs are probabilities, not logits.
            check_probabilities(self._probabilities(probe_faces(image_size(
                self.input_shape, path))), path)
            return
        from fer_keras.serving.checks import check_keras_model
        from fer_keras.models import load_model

        if path.is_dir():
            if not (path / "model.keras").is_file():
                raise ValueError(f"{path} holds neither model.keras nor saved_model.pb. Pass a "
                                 f"run folder, a .keras file or an exported SavedModel folder. "
                                 f"Received: --model {path}")
            path = path / "model.keras"
        import keras

        # A .keras file runs on whichever Keras backend is active (KERAS_BACKEND).
        self.runtime = f"keras {keras.backend.backend()}"
        self.model = load_model(path)
        # Built, gray input, 7 outputs, and probabilities on a probe batch (not logits).
        self.input_shape = check_keras_model(self.model, path)

    @property
    def size(self):
        """`(height, width)` of the crops the model takes: a size the model leaves open
        (a fully convolutional `(None, None, 1)`) is FER2013's 48."""
        from fer_keras.serving.checks import image_size

        return image_size(self.input_shape, self.path)

    model_seconds = 0.0
    """Seconds spent inside model calls so far (for the faces/s summary)."""
    faces_classified = 0

    def __call__(self, crops):
        """Probabilities `(batch, 7)` for uint8 crops `(batch, height, width, 1)`."""
        import time

        start = time.perf_counter()
        probabilities = self._probabilities(crops)
        self.model_seconds += time.perf_counter() - start
        self.faces_classified += len(crops)
        return probabilities

    def _probabilities(self, crops):
        import numpy as np

        if self._lite is not None:
            return self._lite(crops)
        if self._signature is not None:
            import tensorflow as tf

            result = self._signature(image=tf.constant(crops, tf.uint8))
            return np.asarray(result["probabilities"])
        return np.asarray(self.model.predict_on_batch(crops.astype("float32")))


FULL_SCALES = (255, 65535, 2**31 - 1)
"""The white levels of 8-bit, 16-bit and signed 32-bit integer gray images."""


def to_uint8(pixels, full_scale=None):
    """Scales a gray image of more than 8 bits (Pillow modes "I", "I;16", "F") to uint8.

    Pillow's own `convert("L")` clips such values at 255, so a 16-bit PGM or a 32-bit TIFF
    would decode as an all-white image. Here the image's full scale becomes 255.

    Args:
        pixels: integer or float array.
        full_scale: the value that is white, when the format states it (65535 for Pillow's
            16-bit modes). None reads it from the values, as Pillow's mode "I" holds 16-bit
            PGMs and 32-bit TIFFs alike: 1.0 for floats within 0-1, else the smallest of
            `FULL_SCALES` that holds the image's maximum.

    Returns:
        uint8 array of the same shape; values below 0 (and NaN) become black.
    """
    import numpy as np

    values = np.nan_to_num(np.asarray(pixels, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if full_scale is None:
        top = float(values.max(initial=0.0))
        if np.issubdtype(np.asarray(pixels).dtype, np.floating) and top <= 1.0:
            full_scale = 1.0
        else:
            full_scale = next((scale for scale in FULL_SCALES if top <= scale), top)
    return np.round(np.clip(values, 0.0, full_scale) * (255.0 / full_scale)).astype(np.uint8)


def load_gray(path):
    """Decodes an image file to uint8 gray `(height, width)`, as a viewer would show it.

    EXIF orientation is applied and transparency is composited over white. Gray uses the
    ITU-R BT.601 weights (Pillow's and OpenCV's). Gray of more than 8 bits (16-bit PGM and
    PNG, 32-bit integer or float TIFF) is scaled to 8 bits by `to_uint8`.

    Raises:
        ValueError: if the file is not an image or is truncated or corrupt.
    """
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            # load() decodes every byte, so a truncated file fails here, not later.
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I", "F") or image.mode.startswith("I;16"):
                return to_uint8(np.asarray(image),
                                65535 if image.mode.startswith("I;16") else None)
            if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
                    image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(white, rgba)
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ValueError("not an image (no known image format)") from None
    except Image.DecompressionBombError as error:
        raise ValueError(f"image too large to decode safely: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Pillow reports truncated and corrupt data as OSError, SyntaxError or ValueError.
        raise ValueError(f"truncated or corrupt image: {error}") from None


def load_detector():
    """The OpenCV frontal-face Haar cascade shipped in opencv-python-headless.

    Raises:
        ValueError: if this OpenCV build has no cascade detector or no cascade file.
    """
    import cv2

    fix = ("Install an OpenCV that ships it (`pip install \"opencv-python-headless>=4.8,<5\"`)"
           ", or pass --no-detect for images that are already face crops.")
    if not hasattr(cv2, "CascadeClassifier"):
        raise ValueError(f"OpenCV {cv2.__version__} has no Haar cascade face detector "
                         f"(cv2.CascadeClassifier; OpenCV 5 moved it out of the main "
                         f"package). {fix}")
    cascade_path = Path(getattr(cv2.data, "haarcascades", "")) / CASCADE_FILE
    if not cascade_path.is_file():
        raise ValueError(f"OpenCV {cv2.__version__} does not ship {CASCADE_FILE} (looked at "
                         f"{cascade_path}). {fix}")
    cascade = cv2.CascadeClassifier(str(cascade_path))
    if cascade.empty():
        raise ValueError(f"OpenCV could not read {cascade_path}. {fix}")
    return cascade


def detect_faces(detector, gray):
    """Face boxes `[x, y, width, height]` in `gray`'s pixels, left to right.

    Large photos are searched at `DETECTION_MAX_SIDE`; the boxes are scaled back. Small
    pictures (`SMALL_FACE_SEARCH_MAX_SIDE`) are also searched enlarged for faces under
    `MIN_FACE_SIZE`, which come back too (the caller reports them as skipped).
    """
    height, width = gray.shape
    boxes = _cascade_boxes(detector, gray, min(1.0, DETECTION_MAX_SIDE / max(height, width)))
    if max(height, width) <= SMALL_FACE_SEARCH_MAX_SIDE:
        # Finer scale steps and bicubic enlarging: at this size the cascade only just
        # resolves a face, and the defaults miss most of them.
        tiny = _cascade_boxes(detector, gray, 2.0, max_size=2 * MIN_FACE_SIZE - 1,
                              scale_factor=1.05, min_neighbors=4)
        boxes += [box for box in tiny if all(iou(box, other) == 0.0 for other in boxes)]
    return sorted(boxes)


def _cascade_boxes(detector, gray, scale, max_size=None, scale_factor=1.1, min_neighbors=5):
    """The cascade's boxes on `gray` resized by `scale`, in `gray`'s pixels."""
    import cv2

    height, width = gray.shape
    small = gray if scale == 1.0 else cv2.resize(
        gray, (max(1, round(width * scale)), max(1, round(height * scale))),
        interpolation=cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC)
    # Equalised contrast makes the cascade far less sensitive to exposure.
    limit = {} if max_size is None else {"maxSize": (max_size, max_size)}
    found = detector.detectMultiScale(cv2.equalizeHist(small), scaleFactor=scale_factor,
                                      minNeighbors=min_neighbors, minSize=(24, 24), **limit)
    boxes = []
    for x, y, w, h in (found if len(found) else []):
        left, top = int(round(x / scale)), int(round(y / scale))
        right = min(width, int(round((x + w) / scale)))
        bottom = min(height, int(round((y + h) / scale)))
        boxes.append([left, top, right - left, bottom - top])
    return sorted(boxes)


def crop_face(gray, box, size=(48, 48)):
    """Cuts `box` out of `gray` and resizes it to `size` (area averaging): `(h, w, 1)` uint8."""
    import cv2

    x, y, w, h = box
    crop = gray[y:y + h, x:x + w]
    if crop.shape != tuple(size):
        crop = cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return crop[..., None]


STDIN_ERROR = "`-` (standard input) is not supported; give a file path (./- for a file named -)"


def input_problem(raw):
    """Why the input `raw` cannot be read, in words for its error record; None if it can.

    Only the path's metadata is looked at (`stat`): a FIFO is never opened, as reading one
    blocks until something writes to it, and `/dev/zero` would never end.
    """
    import os
    import stat

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
    from fer_keras.vision.annotate import is_output_name

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


def faces_of(path, detector, size):
    """Yields `(record, crop)` for each face of one file, or one `(error_record, None)`."""
    try:
        gray = load_gray(path)
    except ValueError as error:
        yield {"file": str(path), "error": str(error)}, None
        return
    height, width = gray.shape
    if detector is None:
        boxes = [[0, 0, width, height]]
    else:
        boxes = detect_faces(detector, gray)
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


def classify_into(records_and_crops, model):
    """Adds `label`, `class_id` and `probabilities` to each record that has a crop."""
    import numpy as np

    from fer_keras.data.sources import CLASS_NAMES

    crops = [crop for _, crop in records_and_crops if crop is not None]
    probabilities = iter(model(np.stack(crops)) if crops else [])
    for record, crop in records_and_crops:
        if crop is not None:
            row = next(probabilities)
            class_id = int(np.argmax(row))
            record.update(label=CLASS_NAMES[class_id], class_id=class_id,
                          probabilities={name: round(float(p), 6)
                                         for name, p in zip(CLASS_NAMES, row)})


def predict(paths, model=None, batch_size=64, detect=True, output=None, every=None,
            fps=None, annotate=None, progress=sys.stderr):
    """Classifies the faces in `paths` (photos and videos) and writes JSON lines.

    Args:
        paths: files and folders.
        model: a `Classifier`, or a path for one; None picks `find_best_model()`.
        batch_size: faces per model call (photos; a video's faces are classified frame by
            frame, so its annotated copy can be drawn as it is read).
        detect: find faces with the Haar cascade; False takes each image (or video frame)
            as one crop.
        output: a text stream for the JSON lines (default stdout).
        every: for videos, classify every N-th frame.
        fps: for videos, classify this many frames per second of video time (default
            `fer_keras.vision.video.DEFAULT_SAMPLE_FPS` when `every` is not given either).
        annotate: a folder for annotated copies of the inputs and video timelines (see
            `fer_keras.vision.annotate`), or None.
        progress: a stream for the per-video progress bar, or None.

    Returns:
        The list of records written (dicts), in order.

    Raises:
        ValueError: for a bad batch size or sampling, no model, no face detector (with
            `detect`), or an `annotate` folder that cannot be written or would overwrite an
            input (`check_outputs`).
    """
    from fer_keras.vision.video import check_sampling

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer. Received: "
                         f"batch_size={batch_size!r}")
    check_sampling(every, fps)
    if annotate is not None:
        check_outputs(paths, annotate=annotate)
    output = output or sys.stdout
    detector = load_detector() if detect else None
    if not isinstance(model, Classifier):
        model = Classifier(model if model is not None else find_best_model())
    names = None
    if annotate is not None:
        from fer_keras.vision.annotate import OutputNames

        names = OutputNames(annotate)
    entries = expand_paths(paths, annotate)
    written = []
    pending = []  # (record, crop or None), in input order.

    def emit(record):
        output.write(json.dumps(record) + "\n")
        written.append(record)

    def flush():
        classify_into(pending, model)
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
            for record in predict_video(entry, model, detector, every, fps, names, progress):
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
                from fer_keras.vision.annotate import annotate_photo

                annotate_photo(entry, done, names)
    flush()
    return written


def predict_video(path, model, detector, every=None, fps=None, names=None,
                  progress=sys.stderr):
    """Yields the face records of one video, sampled frame by sampled frame.

    Each record has `frame` (index from 0), `time` (seconds), `track` (an id that follows
    one person across frames, `fer_keras.vision.video.IoUTracker`), `face`, `box` and the
    classification. A video that cannot be read gets one error record; one that stops
    early (truncated) gets its faces so far and then one error record.
    """
    import cv2

    from fer_keras.vision.video import IoUTracker, Progress, VideoError, sample_frames

    # Only the timeline needs every record of the video; without it, a count will do.
    info, tracker, records, faces = {}, IoUTracker(), [], 0
    annotated, bar, latest, sampled_count, stem = None, None, [], 0, None
    try:
        frames = sample_frames(path, every=every, fps=fps, decode_all=names is not None,
                               info=info)
        for frame in frames:
            if bar is None:
                bar = Progress(Path(path).name, info["frame_count"], progress)
                if names is not None:
                    from fer_keras.vision.annotate import ANNOTATED_SUFFIX, AnnotatedVideo

                    stem = names.stem_for(path)
                    annotated = AnnotatedVideo(f"{stem}{ANNOTATED_SUFFIX}.mp4", info["fps"],
                                               (info["width"], info["height"]))
            if frame.sampled:
                sampled_count += 1
                gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
                height, width = gray.shape
                boxes = (detect_faces(detector, gray) if detector is not None
                         else [[0, 0, width, height]])
                base = {"file": str(path), "frame": frame.index, "time": round(frame.time, 4)}
                found = list(face_entries(base, gray, boxes, model.size, detector is not None))
                classified = [record for record, crop in found if crop is not None]
                for record, track in zip(classified, tracker.update(
                        [record["box"] for record in classified])):
                    record["track"] = track
                classify_into(found, model)
                latest = [record for record, _ in found]
                faces += len(latest)
                if names is not None:
                    records.extend(latest)
                yield from latest
            if annotated is not None:
                annotated.write(frame.image, latest)
            bar.update(frame.index + 1)
    except VideoError as error:
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
        from fer_keras.vision.annotate import TIMELINE_SUFFIX, plot_timeline

        plot_timeline(records, f"{stem}{TIMELINE_SUFFIX}", title=Path(path).name)


CSV_COLUMNS = ("file", "frame", "time", "track", "face", "x", "y", "width", "height",
               "label", "class_id")


def write_csv(records, path):
    """Writes records as a table (pandas): one row per record, one column per probability.

    Columns: `CSV_COLUMNS`, then one per class (Kaggle order), then `skipped` and `error`;
    fields a record lacks (`frame` for a photo, `label` for an error) are left empty.

    The table is written to a hidden file beside `path` and renamed over it when complete,
    so a failed write leaves `path` as it was, never half-written. A path that exists and
    is not a regular file (`/dev/stdout`) is written directly. Missing parent folders are
    made.

    Raises:
        ValueError: if the file cannot be written (with the reason).
    """
    import os

    import pandas as pd

    from fer_keras.data.sources import CLASS_NAMES

    rows = []
    for record in records:
        row = {key: value for key, value in record.items()
               if key not in ("box", "probabilities")}
        if "box" in record:
            row.update(zip(("x", "y", "width", "height"), record["box"]))
        row.update(record.get("probabilities", {}))
        rows.append(row)
    columns = [*CSV_COLUMNS, *CLASS_NAMES, "skipped", "error"]
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
        # The link's target is what gets replaced, so a --csv that is a symbolic link
        # stays one.
        target = Path(path).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        try:
            table.to_csv(partial, index=False)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    except OSError as error:
        raise ValueError(f"cannot write the CSV table {path}: {error.strerror or error}. "
                         f"Pass a --csv path in a writable folder. Received: --csv {path}"
                         ) from None
    return table


def file_identity(path):
    """`(device, inode)` of an existing file, or None: two names of one file (a hard or
    symbolic link) have the same identity."""
    import os

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
    import os
    import tempfile

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


def check_outputs(paths, csv=None, annotate=None, stdout=None):
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

    Raises:
        ValueError: one line naming the output, the clash and the fix.
    """
    import os
    import stat

    from fer_keras.vision.annotate import is_output_name

    for flag, value in (("--csv", csv), ("--annotate", annotate)):
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

    for flag, value in (("--csv", csv), ("--annotate", annotate)):
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
        if csv is not None:
            table = Path(csv).resolve()
            if table == folder or table in folder.parents or (
                    table.parent == folder and is_output_name(table)):
                raise ValueError(f"--csv {csv} clashes with --annotate {annotate}: one would "
                                 f"overwrite the other; pass a --csv file outside the folder's "
                                 f"pictures. Received: --csv {csv}")
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
        if csv is not None and file_identity(csv) == stdout_identity:
            raise ValueError(f"--csv {csv} is the file standard output is redirected to; the "
                             f"table would replace the JSON lines. Pass another --csv path. "
                             f"Received: --csv {csv}")
    if csv is not None:
        check_writable(csv, "--csv")
    if annotate is not None:
        check_writable(annotate, "--annotate", folder=True)


def build_parser():
    from fer_keras.cli import int_at_least, number_in
    from fer_keras.vision.video import DEFAULT_SAMPLE_FPS, MAX_SAMPLE_FPS

    parser = argparse.ArgumentParser(prog=command_prog("predict"),
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="image or video files, or folders of them")
    parser.add_argument("--model", help="run folder, .keras file, exported SavedModel "
                        "folder or .tflite file; default: the run under saved_models/ with "
                        "the best validation accuracy")
    parser.add_argument("--litert", action="store_true",
                        help="run the TFLite file exported beside the --model SavedModel "
                        "(or the run folder's newest export) with LiteRT")
    parser.add_argument("--threads", type=int_at_least(1),
                        help="LiteRT threads for a .tflite model (default: the runtime's)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=64,
                        help="faces per model call")
    parser.add_argument("--no-detect", action="store_true",
                        help="take each image as one face crop (no face detection)")
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--every", type=int_at_least(1), metavar="N",
                          help="videos: classify every N-th frame")
    sampling.add_argument("--fps", type=number_in(0, MAX_SAMPLE_FPS, low_open=True),
                          metavar="X",
                          help=f"videos: classify X frames per second of video (default "
                          f"{DEFAULT_SAMPLE_FPS:g} when --every is not given; at most "
                          f"{MAX_SAMPLE_FPS:g}: at or above the video's own rate every "
                          f"frame is classified)")
    parser.add_argument("--csv", metavar="PATH",
                        help="also write the records as a CSV table (one row per record; "
                        "an existing file of that name is replaced, an input never)")
    parser.add_argument("--annotate", metavar="DIR",
                        help="write annotated copies (photos: NAME.annotated.png; videos: "
                        "NAME.annotated.mp4 and a NAME.timeline.png plot) into DIR")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar for videos")
    return parser


def main(argv=None):
    import time

    args = build_parser().parse_args(argv)

    def body():
        # Before the model loads: a bad output path is refused at no cost, and no input
        # can be overwritten by an output.
        check_outputs(args.paths, csv=args.csv, annotate=args.annotate, stdout=sys.stdout)
        start = time.perf_counter()
        model = Classifier(args.model if args.model is not None else find_best_model(),
                           litert=args.litert, num_threads=args.threads)
        records = predict(args.paths, model=model, batch_size=args.batch_size,
                          detect=not args.no_detect, every=args.every, fps=args.fps,
                          annotate=args.annotate,
                          progress=None if args.no_progress else sys.stderr)
        seconds = time.perf_counter() - start
        if args.csv is not None:
            write_csv(records, args.csv)
        errors = sum("error" in record for record in records)
        skipped = sum("skipped" in record for record in records)
        faces = len(records) - errors - skipped
        rate = model.faces_classified / model.model_seconds if model.model_seconds else 0.0
        print(f"{faces} face(s) classified, {skipped} skipped (too small), {errors} error "
              f"record(s); {seconds:.1f} s, {faces / seconds:.1f} faces/s end to end, "
              f"{rate:.0f} faces/s in the model ({model.runtime}: {model.path})",
              file=sys.stderr)
        return 1 if errors else 0

    return run_command(body)

if __name__ == "__main__":
    entry_point(main)
