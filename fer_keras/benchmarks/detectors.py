"""Face detectors measured against hand-drawn face boxes (`python -m fer_keras.detectors`).

The photo folder holds an imglab annotation file, `faces.xml` (dlib's format: one
`<image file=... width=... height=...>` per photo, one `<box top left width height>` per
face), and the photos. A photo in the folder that `faces.xml` does not list is taken as one
with no human face (`dogs.jpg` in `../shared/photos`): whatever is found there is a false
positive.

For each detector (`fer_keras.vision.detectors`):

* recall and precision on the annotated photos: its boxes are matched one to one to the
  annotated ones, greedily by IoU, best pair first (`match_boxes`); a match needs IoU at
  least the threshold (0.3 by default, as face boxes are drawn tighter or looser by each
  annotator and detector);
* false positives: the boxes it finds in the photos without faces;
* milliseconds per photo of detection alone: the photos are decoded before the clock
  starts, and each detector gets the form it works on (`input_mode`: gray for haar, RGB for
  mtcnn). After one untimed pass over every photo (warm-up: the first call builds
  TensorFlow's kernels), each photo is detected `repeats` times, the detectors taking turns
  round by round (`time_detectors`); its time is the median, and ms/photo is the mean of
  those medians over all photos, with and without faces. Wall-clock time and the process's
  CPU time (all its threads) are both given: on a shared machine the wall time also holds
  the waits for a core.

Example:

>>> rows = compare_detectors("../shared/photos", ["haar", "mtcnn"], iou_threshold=0.3)
>>> print(format_table(rows))
"""

import json
import os
import platform
import statistics
import sys
import time
import xml.etree.ElementTree as ElementTree
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fer_keras.utils.files import write_text_atomically
from fer_keras.vision.detectors import detector_options, get_detector, list_detectors
from fer_keras.vision.images import IMAGE_SUFFIXES, load_gray
from fer_keras.vision.recognize import check_writable
from fer_keras.vision.video import iou

ANNOTATIONS = "faces.xml"
IOU_THRESHOLD = 0.3
REPEATS = 3


def match_boxes(found, truths, iou_threshold=IOU_THRESHOLD):
    """Pairs found boxes with true ones, one to one, greedily by IoU (best pair first).

    Args:
        found: `[x, y, w, h]` boxes a detector gave.
        truths: the annotated `[x, y, w, h]` boxes.
        iou_threshold: the least IoU a pair needs.

    Returns:
        `(found_index, truth_index, iou)` tuples, best first.

    Example: `match_boxes([[0, 0, 10, 10], [0, 0, 12, 12]], [[0, 0, 12, 12]])` is
    `[(1, 0, 1.0)]`: the exact box takes the face, the other is left a false positive.
    """
    pairs = sorted(((iou(box, truth), found_index, truth_index)
                    for found_index, box in enumerate(found)
                    for truth_index, truth in enumerate(truths)),
                   key=lambda pair: (-pair[0], pair[1], pair[2]))
    used_found, used_truths, matches = set(), set(), []
    for overlap, found_index, truth_index in pairs:
        if overlap < iou_threshold:
            break
        if found_index not in used_found and truth_index not in used_truths:
            used_found.add(found_index)
            used_truths.add(truth_index)
            matches.append((found_index, truth_index, overlap))
    return matches


def read_annotations(path):
    """`{file name: {"boxes": [[x, y, w, h], ...], "size": (width, height) or None}}` from an
    imglab `faces.xml`.

    Raises:
        ValueError: if the file is not imglab XML or a box lacks a coordinate.
    """
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as error:
        raise ValueError(f"{path} is not readable imglab XML ({error}); give a folder whose "
                         f"{ANNOTATIONS} is dlib's imglab format. Received: {path}") from None
    photos = {}
    for image in root.iter("image"):
        boxes = []
        for box in image.iter("box"):
            try:
                boxes.append([int(box.attrib[key]) for key in ("left", "top", "width",
                                                               "height")])
            except (KeyError, ValueError):
                raise ValueError(f"{path}: a box of {image.get('file')} lacks an integer "
                                 f"left, top, width or height; fix the file. Received: "
                                 f"{box.attrib}") from None
        size = (int(image.get("width")), int(image.get("height"))) \
            if image.get("width") and image.get("height") else None
        photos[image.get("file")] = {"boxes": boxes, "size": size}
    return photos


def load_photos(folder):
    """The folder's photos, decoded once: a list of dicts with `file`, `gray` (uint8
    `(h, w)`, as `predict` decodes it), `rgb` (uint8 `(h, w, 3)`) and `boxes` (the annotated
    faces; `[]` for a photo `faces.xml` does not list), annotated photos first.

    Raises:
        ValueError: naming the folder or file, if the folder or its `faces.xml` is missing,
            a listed photo is missing or not of the size `faces.xml` gives.
    """
    folder = Path(folder)
    received = f"Received: --photos {folder}"
    if not folder.is_dir():
        raise ValueError(f"photo folder {folder} not found; pass --photos with the folder "
                         f"that holds {ANNOTATIONS} and its photos (../shared/photos). "
                         f"{received}")
    if not (folder / ANNOTATIONS).is_file():
        raise ValueError(f"{folder} has no {ANNOTATIONS} (the annotated face boxes); pass "
                         f"--photos with the folder that holds it. {received}")
    annotations = read_annotations(folder / ANNOTATIONS)
    unlisted = sorted(path.name for path in folder.iterdir()
                      if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
                      and path.name not in annotations)
    photos = []
    for name in [*annotations, *unlisted]:
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{folder / ANNOTATIONS} lists {name}, which is not in {folder}; "
                             f"restore it or drop it from the file. {received}")
        gray = load_gray(path)
        with Image.open(path) as image:
            rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.uint8)
        size = annotations.get(name, {}).get("size")
        if size is not None and size != (gray.shape[1], gray.shape[0]):
            raise ValueError(f"{path} is {gray.shape[1]}x{gray.shape[0]} px, but "
                             f"{ANNOTATIONS} gives {size[0]}x{size[1]}: its boxes would not "
                             f"fit; use the photo the file was drawn on. {received}")
        photos.append({"file": name, "gray": gray, "rgb": rgb,
                       "boxes": annotations.get(name, {}).get("boxes", []),
                       "annotated": name in annotations})
    if not any(photo["annotated"] for photo in photos):
        raise ValueError(f"{folder / ANNOTATIONS} lists no photo; nothing to measure. "
                         f"{received}")
    return photos


def time_detectors(detectors, photos, repeats=REPEATS):
    """Each detector's boxes and median seconds on each photo (detection alone).

    Every detector first detects every photo once, untimed (warm-up). Then come `repeats`
    rounds; in each, every detector in turn detects every photo. Taking turns spreads the
    load of a shared machine evenly over the detectors.

    Returns:
        One list per detector, one `(boxes, median_seconds, median_cpu_seconds)` per
        photo: wall-clock time, and the CPU time of this process's threads, all of them
        (less sensitive than wall time to other work on a shared machine).
    """
    images = [[photo[detector.input_mode] for photo in photos] for detector in detectors]
    for detector, pictures in zip(detectors, images):
        for picture in pictures:
            detector.detect(picture)
    times = [[[] for _ in photos] for _ in detectors]
    cpu_times = [[[] for _ in photos] for _ in detectors]
    boxes = [[None] * len(photos) for _ in detectors]
    for _ in range(repeats):
        for index, (detector, pictures) in enumerate(zip(detectors, images)):
            for photo_index, picture in enumerate(pictures):
                start, cpu_start = time.perf_counter(), time.process_time()
                boxes[index][photo_index] = detector.detect(picture)
                cpu_times[index][photo_index].append(time.process_time() - cpu_start)
                times[index][photo_index].append(time.perf_counter() - start)
    return [[(found, statistics.median(seconds), statistics.median(cpu_seconds))
             for found, seconds, cpu_seconds in zip(*triple)]
            for triple in zip(boxes, times, cpu_times)]


def score_detector(detector, photos, timed, iou_threshold=IOU_THRESHOLD):
    """Recall, precision, false positives and ms/photo of one detector (module docstring),
    from its `time_detectors` list `timed`.

    Returns:
        A dict: `detector`, `settings` (its options), `faces`, `found`, `matched`,
        `recall`, `precision` (None when it found nothing on the annotated photos),
        `false_positives_without_faces`, `photos_without_faces`, `ms_per_photo`,
        `cpu_ms_per_photo`, and `photos` (per photo: `file`, `annotated`, `faces`, `found`,
        `matched`, `boxes`, `ms`, `cpu_ms`).
    """
    per_photo = []
    for photo, (found, seconds, cpu_seconds) in zip(photos, timed):
        matched = len(match_boxes(found, photo["boxes"], iou_threshold))
        per_photo.append({"file": photo["file"], "annotated": photo["annotated"],
                          "faces": len(photo["boxes"]), "found": len(found),
                          "matched": matched, "boxes": found,
                          "ms": round(1000 * seconds, 2),
                          "cpu_ms": round(1000 * cpu_seconds, 2)})
    annotated = [row for row in per_photo if row["annotated"]]
    faces = sum(row["faces"] for row in annotated)
    found = sum(row["found"] for row in annotated)
    matched = sum(row["matched"] for row in annotated)
    return {"detector": detector.name, "settings": _settings_of(detector),
            "faces": faces, "found": found, "matched": matched,
            "recall": matched / faces if faces else None,
            "precision": matched / found if found else None,
            "false_positives_without_faces": sum(row["found"] for row in per_photo
                                                 if not row["annotated"]),
            "photos_without_faces": [row["file"] for row in per_photo if not row["annotated"]],
            "ms_per_photo": round(statistics.fmean(row["ms"] for row in per_photo), 1),
            "cpu_ms_per_photo": round(statistics.fmean(row["cpu_ms"] for row in per_photo),
                                      1),
            "photos": per_photo}


def _settings_of(detector):
    return {option: getattr(detector, option)
            for option in detector_options(detector.name) if hasattr(detector, option)}


def compare_detectors(folder, names=None, iou_threshold=IOU_THRESHOLD, repeats=REPEATS,
                      options=None, progress=sys.stderr):
    """Measures each detector of `names` on the photos of `folder`, one after the other.

    Args:
        folder: the photo folder (see the module docstring).
        names: detector names; None measures every registered one that loads here and says
            on `progress` which are left out and why (a package not installed).
        iou_threshold: the least IoU of a match, in (0, 1].
        repeats: timed detections of each photo, at least 1.
        options: `{option: value}` passed to each detector that has the option (such as
            `confidence` for mtcnn); None keeps each one's defaults.
        progress: where a line per detector goes (None for none).

    Returns:
        A list of `score_detector` dicts, in the order of `names`.

    Raises:
        ValueError: for a bad threshold or repeat count, an unknown or unloadable named
            detector, an option no detector takes, or a bad photo folder.
    """
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)) \
            or not 0 < iou_threshold <= 1:
        raise ValueError(f"The IoU threshold of a match is a number in (0, 1]. Received: "
                         f"iou={iou_threshold!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats is an integer >= 1. Received: repeats={repeats!r}")
    options = dict(options or {})
    chosen = list_detectors() if names is None else list(dict.fromkeys(names))
    for option in options:
        if not any(option in detector_options(name) for name in chosen):
            raise ValueError(f"No detector of {', '.join(chosen)} takes the option {option!r}; "
                             f"drop it. Received: {option}={options[option]!r}")
    photos = load_photos(folder)
    detectors = []
    for name in chosen:
        kwargs = {key: value for key, value in options.items()
                  if key in detector_options(name)}
        try:
            detectors.append(get_detector(name, **kwargs))
        except ValueError as error:
            if names is not None:
                raise
            _say(progress, f"left out {name}: {error}")
    _say(progress, f"measuring {', '.join(map(repr, detectors)) or 'no detector'} on "
                   f"{len(photos)} photos: a warm-up, then {repeats} round(s) ...")
    timings = time_detectors(detectors, photos, repeats)
    rows = [score_detector(detector, photos, timed, iou_threshold)
            for detector, timed in zip(detectors, timings)]
    for row in rows:
        row["iou_threshold"] = iou_threshold
        row["repeats"] = repeats
    return rows


def _say(progress, line):
    if progress is not None:
        print(line, file=progress, flush=True)


def format_table(rows):
    """The rows of `compare_detectors` as a Markdown table, one line per detector."""
    if not rows:
        return "(no detector measured)"
    threshold = rows[0]["iou_threshold"]
    negatives = ", ".join(rows[0]["photos_without_faces"]) or "none"
    lines = [f"| detector | settings | recall (IoU >= {threshold:g}) | precision | "
             f"false positives on photos without faces ({negatives}) | ms/photo | "
             f"CPU ms/photo |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        settings = ", ".join(f"{key}={value:g}" if isinstance(value, float)
                             else f"{key}={value}" for key, value in row["settings"].items())
        lines.append(f"| {row['detector']} | {settings or 'defaults'} | "
                     f"{_ratio(row['recall'], row['matched'], row['faces'])} | "
                     f"{_ratio(row['precision'], row['matched'], row['found'])} | "
                     f"{row['false_positives_without_faces']} | {row['ms_per_photo']:.1f} | "
                     f"{row['cpu_ms_per_photo']:.1f} |")
    return "\n".join(lines)


def _ratio(value, numerator, denominator):
    return "n/a (0/0)" if value is None else f"{value:.3f} ({numerator}/{denominator})"


def describe_machine():
    """The CPU model (from /proc/cpuinfo where there is one), the cores this process may
    use, and the versions of the packages the detectors run on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {}
    for package in ("opencv-python-headless", "mtcnn", "tensorflow-cpu", "tensorflow",
                    "keras"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": cores, "python": platform.python_version(),
            "versions": versions}


def check_save_path(path, overwrite=False):
    """Refuses a `--save` path before anything is measured: an existing file unless
    `overwrite`, or a place that cannot be written.

    Raises:
        ValueError: naming the path and the fix.
    """
    if Path(path).exists() and Path(path).is_file() and not overwrite:
        raise ValueError(f"--save {path} exists; pass --overwrite to replace it, or another "
                         f"path. Received: --save {path}")
    check_writable(path, "--save")


def save_results(rows, path, command=None, overwrite=False):
    """Writes the rows, the command and the machine (`describe_machine`) as JSON to `path`,
    through a hidden file renamed over it, so a failed write leaves no half file.

    Raises:
        ValueError: as `check_save_path`, or if the file cannot be written.
    """
    check_save_path(path, overwrite)
    Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)
    document = {"command": command, "machine": describe_machine(),
                "scope": "detection only: photos decoded before timing; ms/photo (wall clock) "
                         "and cpu_ms/photo (this process's CPU time, all threads) are means "
                         "over photos of each photo's median over repeats, after a warm-up",
                "detectors": rows}
    try:
        write_text_atomically(path, json.dumps(document, indent=2) + "\n",
                              exclusive=not overwrite, follow_links=True)
    except FileExistsError:
        raise ValueError(f"--save {path} appeared while the detectors ran; pass --overwrite "
                         f"to replace it, or another path. Received: --save {path}") from None
    except OSError as error:
        raise ValueError(f"cannot write --save {path}: {error.strerror or error}. Pass a path "
                         f"in a writable folder. Received: --save {path}") from None
