"""Classify the facial expressions in ordinary photos.

Usage:

    python -m fer_keras.predict PATH [PATH ...] [--model DIR_OR_FILE] [--batch-size N]
        [--no-detect]

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
with an `error` field instead (not an image, truncated, no face found, missing), and the
other files still get results. The exit status is 0 when every file gave a result, 1 when
some gave an error record, and 2 for a usage error (no model, bad flags).

`--model` takes a run folder (holding `model.keras`), a `.keras` file or an exported
SavedModel folder (`.../serving/VERSION`). Without it, the run under `saved_models/` whose
`metrics.json` has the highest validation accuracy is used.
"""

import argparse
import json
import sys
from pathlib import Path

from fer_keras.cli import entry_point, run_command

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm")
CASCADE_FILE = "haarcascade_frontalface_default.xml"
DETECTION_MAX_SIDE = 1024
"""Photos are searched for faces at most this large (faster; boxes map back to full size)."""

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


class Classifier:
    """Class probabilities for batches of uint8 face crops, from any of our model formats.

    Args:
        path: a run folder holding `model.keras`, a `.keras` file, or a SavedModel folder
            exported by `fer_keras.export`.
    """

    def __init__(self, path):
        path = Path(path)
        self.path = path
        self._signature = None
        if path.is_dir() and (path / "saved_model.pb").is_file():
            import tensorflow as tf

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
            return
        from fer_keras.models import load_model

        if path.is_dir():
            if not (path / "model.keras").is_file():
                raise ValueError(f"{path} holds neither model.keras nor saved_model.pb. Pass a "
                                 f"run folder, a .keras file or an exported SavedModel folder. "
                                 f"Received: --model {path}")
            path = path / "model.keras"
        self.model = load_model(path)
        self.input_shape = tuple(self.model.input_shape[1:])
        if len(self.input_shape) != 3 or self.input_shape[-1] != 1:
            raise ValueError(f"Expected a model of gray images (height, width, 1). Received: "
                             f"input_shape={self.model.input_shape}")

    @property
    def size(self):
        """`(height, width)` of the crops the model takes."""
        return int(self.input_shape[0]), int(self.input_shape[1])

    def __call__(self, crops):
        """Probabilities `(batch, 7)` for uint8 crops `(batch, height, width, 1)`."""
        import numpy as np

        if self._signature is not None:
            import tensorflow as tf

            result = self._signature(image=tf.constant(crops, tf.uint8))
            return np.asarray(result["probabilities"])
        return np.asarray(self.model.predict_on_batch(crops.astype("float32")))


def load_gray(path):
    """Decodes an image file to uint8 gray `(height, width)`, as a viewer would show it.

    EXIF orientation is applied and transparency is composited over white. Gray uses the
    ITU-R BT.601 weights (Pillow's and OpenCV's), 16-bit images keep their top 8 bits.

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
            if image.mode.startswith("I;16"):
                return (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
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

    Large photos are searched at `DETECTION_MAX_SIDE`; the boxes are scaled back.
    """
    import cv2

    height, width = gray.shape
    scale = min(1.0, DETECTION_MAX_SIDE / max(height, width))
    small = gray if scale == 1.0 else cv2.resize(
        gray, (max(1, round(width * scale)), max(1, round(height * scale))),
        interpolation=cv2.INTER_AREA)
    # Equalised contrast makes the cascade far less sensitive to exposure.
    found = detector.detectMultiScale(cv2.equalizeHist(small), scaleFactor=1.1,
                                      minNeighbors=5, minSize=(24, 24))
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


def expand_paths(paths):
    """Files to classify, in order: files as given, folders searched recursively.

    Returns:
        A list whose items are image file `Path`s or, for a path that does not exist or a
        folder without images, an error record (dict), in the order of `paths`.
    """
    entries = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                entries.append({"file": str(path), "error": "folder holds no image files "
                                f"({', '.join(IMAGE_SUFFIXES)})"})
            entries.extend(found)
        elif path.is_file():
            entries.append(path)
        else:
            entries.append({"file": str(path), "error": "no such file or folder"})
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
    for index, box in enumerate(boxes):
        yield {"file": str(path), "face": index, "box": box}, crop_face(gray, box, size)


def predict(paths, model=None, batch_size=64, detect=True, output=None):
    """Classifies the faces in `paths` and writes JSON lines.

    Args:
        paths: files and folders.
        model: a `Classifier`, or a path for one; None picks `find_best_model()`.
        batch_size: faces per model call.
        detect: find faces with the Haar cascade; False takes each image as one crop.
        output: a text stream for the JSON lines (default stdout).

    Returns:
        The list of records written (dicts), in order.

    Raises:
        ValueError: for a bad batch size, no model, or no face detector (with `detect`).
    """
    import numpy as np

    from fer_keras.data import CLASS_NAMES

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer. Received: "
                         f"batch_size={batch_size!r}")
    output = output or sys.stdout
    detector = load_detector() if detect else None
    if not isinstance(model, Classifier):
        model = Classifier(model if model is not None else find_best_model())
    entries = expand_paths(paths)
    written = []
    pending = []  # (record, crop or None), in input order.

    def flush():
        crops = [crop for _, crop in pending if crop is not None]
        probabilities = iter(model(np.stack(crops)) if crops else [])
        for record, crop in pending:
            if crop is not None:
                row = next(probabilities)
                class_id = int(np.argmax(row))
                record.update(label=CLASS_NAMES[class_id], class_id=class_id,
                              probabilities={name: round(float(p), 6)
                                             for name, p in zip(CLASS_NAMES, row)})
            output.write(json.dumps(record) + "\n")
            written.append(record)
        output.flush()
        pending.clear()

    for entry in entries:
        if isinstance(entry, dict):
            pending.append((entry, None))
            continue
        for record, crop in faces_of(entry, detector, model.size):
            pending.append((record, crop))
            if sum(crop is not None for _, crop in pending) >= batch_size:
                flush()
    flush()
    return written


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m fer_keras.predict",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument("--model", help="run folder, .keras file or exported SavedModel "
                        "folder; default: the run under saved_models/ with the best "
                        "validation accuracy")
    parser.add_argument("--batch-size", type=int, default=64, help="faces per model call")
    parser.add_argument("--no-detect", action="store_true",
                        help="take each image as one face crop (no face detection)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        records = predict(args.paths, model=args.model, batch_size=args.batch_size,
                          detect=not args.no_detect)
        errors = sum("error" in record for record in records)
        faces = len(records) - errors
        print(f"{faces} face(s) classified, {errors} error record(s)", file=sys.stderr)
        return 1 if errors else 0

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
