"""Faces found in a picture: OpenCV's frontal-face Haar cascade, and 48x48 gray crops.

The cascade ships with OpenCV (`haarcascade_frontalface_default.xml`, nothing is
downloaded). Large photos are searched shrunk, small ones also enlarged for faces under
the cascade's 24x24 px window (`MIN_FACE_SIZE`), which are reported rather than missed.
"""

from pathlib import Path

from fer_keras.vision.video import iou

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


def load_detector():
    """The OpenCV frontal-face Haar cascade shipped in opencv-python-headless.

    Raises:
        ValueError: if this OpenCV build has no cascade detector or no cascade file.
    """
    # OpenCV is slow to import; it loads only once faces are searched for.
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
    # OpenCV is slow to import; it loads only once faces are searched for.
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
    # OpenCV is slow to import; it loads only once faces are cut out.
    import cv2

    x, y, w, h = box
    crop = gray[y:y + h, x:x + w]
    if crop.shape != tuple(size):
        crop = cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return crop[..., None]
