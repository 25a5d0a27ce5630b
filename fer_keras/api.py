"""The Python API: `Recognizer`, the facial expressions of photos, arrays and videos.

`Recognizer` runs what `python -m fer_keras.predict` runs (the same face detection, 48x48
crops and records, `fer_keras.vision.recognize`; `detector="mtcnn"` as `--detector mtcnn`)
on image files, NumPy images and videos, and returns the records instead of printing them.
Without a `model` it uses the default lookup: the best run under `saved_models/`, else the
model packaged with fer_keras.

Example (`photo` is the path of a picture with one face in it):

>>> from fer_keras import Recognizer
>>> recognizer = Recognizer(min_confidence=0.5)
>>> faces = recognizer.predict(photo)
>>> len(faces), sorted(faces[0])
(1, ['box', 'class_id', 'face', 'label', 'probabilities', 'uncertain'])
>>> faces[0]["label"] in recognizer.info["class_names"]
True
>>> faces[0]["uncertain"] == (max(faces[0]["probabilities"].values()) < 0.5)
True

A NumPy image is a picture too; a list of inputs gives a list of face lists:

>>> import numpy as np
>>> crop = np.full((48, 48, 3), 0.5)  # an RGB float image in 0-1, already a face crop
>>> [face] = Recognizer(detect=False).predict(crop)
>>> face["box"]
[0, 0, 48, 48]
>>> [len(found) for found in recognizer.predict([photo, np.zeros((300, 300), np.uint8)])]
[1, 0]
"""

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from fer_keras.serving.packaged import packaged_model_file, packaged_model_info, run_summary
from fer_keras.serving.runner import Classifier, default_model
from fer_keras.vision.episodes import (
    DEFAULT_MARGIN,
    DEFAULT_MIN_TRACK_SECONDS,
    check_smoothing,
    find_episodes,
)
from fer_keras.vision.images import load_gray, load_gray_and_rgb, to_uint8
from fer_keras.vision.recognize import (
    DEFAULT_DETECTOR,
    check_confidence,
    classify_into,
    detect_boxes,
    face_entries,
    input_problem,
    predict_video,
    resolve_detector,
)
from fer_keras.vision.tracking import DEFAULT_DETECT_EVERY, check_detect_every
from fer_keras.vision.video import check_sampling, is_video

SHAPES = "(height, width) gray, (height, width, 1) gray, (height, width, 3) RGB or " \
         "(height, width, 4) RGBA"
"""The NumPy image layouts `Recognizer.predict` takes (channels last)."""


def to_gray(image, where="x"):
    """A NumPy image as the uint8 gray picture `(height, width)` faces are found in.

    Layouts (`SHAPES`): gray `(H, W)` or `(H, W, 1)`; RGB `(H, W, 3)` (RGB order, not
    OpenCV's BGR: pass `image[..., ::-1]` for that); RGBA `(H, W, 4)`, composited over
    white as image files are. Values: uint8 (and other integer types) 0-255; floats 0-1
    when their maximum is at most 1, else 0-255. Colour becomes gray with the ITU-R BT.601
    weights, as image files do (`fer_keras.vision.images.load_gray`).

    >>> to_gray(np.array([[0.0, 0.5, 1.0]])).tolist()
    [[0, 128, 255]]
    >>> to_gray(np.zeros((2, 2, 3), np.uint8)).shape
    (2, 2)

    Raises:
        ValueError: for another shape, an empty image, a boolean or complex array, or
            values outside 0-255 (or NaN, infinite).
    """
    return to_gray_and_rgb(image, where)[0]


def to_gray_and_rgb(image, where="x"):
    """`(to_gray(image), rgb)`: `rgb` is the picture as uint8 RGB `(height, width, 3)`
    (RGBA composited over white) for a colour image, None for a gray one.

    Raises:
        ValueError: as `to_gray`.
    """
    image = np.asarray(image)
    received = f"Received: {where} with shape {image.shape} and dtype {image.dtype}"
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
        hint = (" For a batch, pass a list of images (list(x))." if image.ndim == 4 else "")
        raise ValueError(f"A NumPy image must be {SHAPES} (channels last).{hint} {received}")
    if image.size == 0:
        raise ValueError(f"The image is empty; pass a picture of at least 1x1 pixel. {received}")
    if image.dtype == bool or not (np.issubdtype(image.dtype, np.integer)
                                   or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"A NumPy image must hold integers 0-255 or floats 0-1 (or 0-255). "
                         f"{received}")
    if image.dtype != np.uint8:
        if not np.isfinite(image).all():
            raise ValueError(f"The image holds NaN or infinite values; pass finite pixel "
                             f"values. {received}")
        low, high = float(image.min()), float(image.max())
        floats = np.issubdtype(image.dtype, np.floating)
        if low < 0 or high > 255:
            raise ValueError(f"Pixel values must lie in 0-255 (or 0-1 for floats); these "
                             f"span {low:g} to {high:g}. Rescale the image. {received}")
        image = to_uint8(image, 1.0 if floats and high <= 1.0 else 255.0)
    if image.ndim == 2:
        return image, None
    if image.shape[-1] == 4:
        white = Image.new("RGBA", (image.shape[1], image.shape[0]), (255, 255, 255, 255))
        picture = Image.alpha_composite(white, Image.fromarray(image, "RGBA"))
        rgb = np.asarray(picture.convert("RGB"), dtype=np.uint8)
    else:
        rgb = np.ascontiguousarray(image)
        picture = Image.fromarray(rgb, "RGB")
    return np.asarray(picture.convert("L"), dtype=np.uint8), rgb


def read_gray(path, where="x"):
    """An image file as uint8 gray, as `predict` reads it; one-line ValueErrors."""
    return read_pictures(path, where)[0]


def read_pictures(path, where="x", colour=False):
    """`(gray, rgb)` of an image file, as `predict` reads it: `rgb` (uint8 RGB) only with
    `colour`, else None; one-line ValueErrors."""
    received = f"Received: {where}={str(path)!r}"
    problem = input_problem(path)
    if problem is None and Path(path).is_dir():
        problem = "is a folder; pass its image files (or run `python -m fer_keras.predict` on it)"
    if problem is None and is_video(Path(path)):
        problem = "is a video; use Recognizer.predict_video for videos"
    if problem is None:
        try:
            return load_gray_and_rgb(path) if colour else (load_gray(path), None)
        except ValueError as error:
            problem = " ".join(str(error).split())
    raise ValueError(f"Cannot read the image {path}: {problem}. Pass an image file or a "
                     f"NumPy image. {received}")


def face_dict(record):
    """A record of `fer_keras.vision.recognize` without the fields of its file."""
    return {key: value for key, value in record.items()
            if key not in ("file", "frame", "time")}


class Recognizer:
    """Finds faces and classifies their expressions, from Python.

    Args:
        model: a run folder, a `.keras` file, an exported SavedModel folder, a `.tflite`
            file or a loaded `fer_keras.serving.runner.Classifier`; None: the best run
            under `saved_models/`, else the packaged model
            (`fer_keras.serving.runner.default_model`).
        detect: find faces with `detector`; False takes each whole image as one face
            crop.
        min_confidence: a probability in [0, 1]: faces whose top probability is below it
            get `uncertain: True`. None marks none uncertain.
        batch_size: at most this many faces per model call.
        litert: run the TFLite file exported beside `model` with LiteRT.
        num_threads: LiteRT threads (None: the runtime's choice).
        detector: the face detector: "haar" (default, OpenCV's Haar cascade) or "mtcnn"
            (finds more faces and fewer false ones; needs `pip install "fer_keras[mtcnn]"`
            and Keras's TensorFlow backend), or a detector object of
            `fer_keras.vision.detectors.get_detector`. Boxes that are not square (MTCNN's)
            are made square about their centre.

    Example: `Recognizer(detector="mtcnn").predict("group.jpg")`.

    Raises:
        ValueError: in one line, for no model, a model file that fails to load or the
            checks, a bad `min_confidence` or `batch_size`, or an unknown or uninstalled
            face detector.
    """

    def __init__(self, model=None, detect=True, min_confidence=None, batch_size=64,
                 litert=False, num_threads=None, detector=DEFAULT_DETECTOR):
        self.min_confidence = check_confidence(min_confidence)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer. Received: "
                             f"batch_size={batch_size!r}")
        self.batch_size = batch_size
        # Before the model loads: an unknown or uninstalled detector is refused at no cost.
        self.detector = resolve_detector(detector, detect)
        if isinstance(model, Classifier):
            self.classifier = model
        else:
            self.classifier = Classifier(model if model is not None else default_model(),
                                         litert=litert, num_threads=num_threads)

    @property
    def info(self):
        """What runs: `model` (its path), `runtime`, `labels` and `class_names` (output
        order), `packaged` (whether it is the model packaged with fer_keras), and, for
        the packaged model or a run folder, `source_run`, `selection_split`,
        `selection_accuracy` and `private_test_accuracy` (from `default_model.json` or the
        run's `metrics.json`)."""
        path = Path(self.classifier.path)
        packaged = packaged_model_file()
        info = {"model": str(path), "runtime": self.classifier.runtime,
                "labels": self.classifier.label_set.name,
                "class_names": list(self.classifier.class_names),
                "packaged": packaged is not None and path.resolve() == packaged.resolve()}
        if info["packaged"]:
            info.update({key: value for key, value in (packaged_model_info() or {}).items()
                         if key not in info})
            return info
        run = path if path.is_dir() else path.parent
        metrics_path = run / "metrics.json"
        if metrics_path.is_file():
            try:
                metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                metrics = None
            if isinstance(metrics, dict):
                summary = run_summary(run, metrics)
                info.update({key: summary[key] for key in (
                    "source_run", "selection_split", "selection_accuracy",
                    "private_test_accuracy")})
        return info

    def predict(self, x):
        """The faces of one picture, or of each picture of a list.

        Args:
            x: an image file path (str or `Path`), a NumPy image (`to_gray` gives the
                layouts and value ranges), or a list (or tuple) of them.

        Returns:
            For one picture, a list of face dicts, left to right: `face` (index), `box`
            (`[x, y, width, height]` in the picture's pixels), `label`, `class_id`,
            `probabilities` (`{class name: probability}`) and `uncertain` (top probability
            below `min_confidence`). A face smaller than the detector's 24x24 px window
            has `skipped` (why) instead of a label. A picture without a face gives `[]`.
            For a list, one such list per item.

        Raises:
            ValueError: in one line naming the item, for an unreadable file, a video, a
                folder, or an array of another shape or value range.
        """
        if isinstance(x, (list, tuple)):
            return self._predict_many(list(x), "x[{}]")
        return self._predict_many([x], "x")[0]

    def _predict_many(self, items, where):
        colour = self.detector is not None and self.detector.input_mode == "rgb"
        pictures = [self._pictures(item, where.format(index), colour)
                    for index, item in enumerate(items)]
        per_image, pending = [], []
        for gray, rgb in pictures:
            height, width = gray.shape
            boxes = (detect_boxes(self.detector, gray, rgb) if self.detector is not None
                     else [[0, 0, width, height]])
            entries = list(face_entries({}, gray, boxes, self.classifier.size,
                                        self.detector is not None))
            per_image.append([record for record, _ in entries])
            for entry in entries:
                pending.append(entry)
                if sum(crop is not None for _, crop in pending) >= self.batch_size:
                    self._classify(pending)
                    pending = []
        self._classify(pending)
        return [[face_dict(record) for record in records] for records in per_image]

    def _classify(self, pending):
        # 0 marks nothing uncertain, so every classified face gets the field.
        classify_into(pending, self.classifier,
                      0.0 if self.min_confidence is None else self.min_confidence)

    @staticmethod
    def _pictures(item, where, colour):
        if isinstance(item, (str, os.PathLike)):
            return read_pictures(item, where, colour)
        if isinstance(item, np.ndarray):
            return to_gray_and_rgb(item, where)
        raise ValueError(f"Pass an image file path, a NumPy image or a list of them. "
                         f"Received: {where} of type {type(item).__name__}")

    def predict_video(self, path, fps=None, every=None, smooth=None,
                      smooth_method="exponential", detect_every=DEFAULT_DETECT_EVERY):
        """Yields the faces of a video, sampled frame by sampled frame.

        Frames are read one at a time (a long video is never held in memory) and sampled
        as `predict --fps/--every` samples them: `every` N-th frame, or `fps` frames per
        second of video (5 when neither is given).

        Args:
            path: a video file OpenCV can open.
            fps: frames per second of video to classify.
            every: classify every N-th frame instead.
            smooth: smooth each track's probabilities over this many seconds (each face
                gets `smoothed` and `smoothed_label`; `fer_keras.vision.episodes`).
            smooth_method: "exponential" (default) or "window".
            detect_every: seconds of video between searches of the whole frame; faces
                are followed in windows about their last boxes in between
                (`fer_keras.vision.tracking`; 0 searches every sampled frame whole).

        Yields:
            `{"frame": index, "time": seconds, "faces": [face dicts]}` for each sampled
            frame with a face; each face dict is as `predict`'s, with `track` (an id that
            follows one person across frames).

        Raises:
            ValueError: in one line, for a path that is no readable video, bad sampling,
                or a video that ends early (after the frames it did decode).
        """
        every, fps = check_sampling(every, fps)
        check_detect_every(detect_every)
        if smooth is not None:
            check_smoothing(smooth, smooth_method)
        problem = input_problem(path)
        if problem is None and Path(path).is_dir():
            problem = "is a folder, not a video file"
        if problem is not None:
            raise ValueError(f"Cannot read the video {path}: {problem}. Received: "
                             f"path={str(path)!r}")
        frame = None
        for record in predict_video(path, self.classifier, self.detector, every, fps,
                                    progress=None,
                                    min_confidence=(0.0 if self.min_confidence is None
                                                    else self.min_confidence),
                                    smooth=smooth, smooth_method=smooth_method,
                                    detect_every=detect_every):
            if "error" in record:
                if frame is not None:
                    yield frame
                    frame = None
                if record.get("faces") == 0:
                    return  # No face in any sampled frame: nothing to yield.
                raise ValueError(f"Cannot read the video {path}: {record['error']}. "
                                 f"Received: path={str(path)!r}")
            if frame is not None and frame["frame"] != record["frame"]:
                yield frame
                frame = None
            if frame is None:
                frame = {"frame": record["frame"], "time": record["time"], "faces": []}
            frame["faces"].append(face_dict(record))
        if frame is not None:
            yield frame

    def episodes(self, path, fps=None, every=None, smooth=1.0, smooth_method="exponential",
                 margin=DEFAULT_MARGIN, min_track_seconds=DEFAULT_MIN_TRACK_SECONDS,
                 detect_every=DEFAULT_DETECT_EVERY):
        """The episodes of a video: one dict per stretch of one label on one track.

        The video is classified as `predict_video` does (smoothed over `smooth` seconds,
        None for raw labels), then cut as `fer_keras.vision.episodes.find_episodes` says:
        `file`, `track`, `label`, `start`, `end`, `duration` (seconds), `records`,
        `peak_probability` and `mean_probability`. Tracks seen for less than
        `min_track_seconds` are left out.
        """
        records = [dict(face, file=str(path), frame=frame["frame"], time=frame["time"])
                   for frame in self.predict_video(path, fps, every, smooth, smooth_method,
                                                   detect_every)
                   for face in frame["faces"]]
        return find_episodes(records, margin=margin, min_track_seconds=min_track_seconds)
