"""Face detectors by name, behind one interface: `get_detector(name, **options).detect(image)`.

* `"haar"`: OpenCV's frontal-face Haar cascade (`fer_keras.vision.faces`, unchanged: the
  same boxes `detect_faces` gives, tiny-face search included). Works on gray.
* `"mtcnn"`: the MTCNN cascade of three CNNs (Zhang et al., "Joint Face Detection and
  Alignment using Multi-task Cascaded Convolutional Networks", IEEE SPL 2016) from the
  `mtcnn` package (PyPI, MIT licence; `pip install "fer_keras[mtcnn]"`), whose wheel carries
  its weights, so nothing is downloaded at run time. Works on RGB, runs on TensorFlow (it
  needs Keras's TensorFlow backend) on the CPU.

Every detector's `detect` takes a uint8 picture, gray `(height, width)` or RGB
`(height, width, 3)`, converts it to what it works on (`input_mode` says which it prefers,
so a caller holding both passes that one), and returns `[x, y, width, height]` boxes of
ints inside the picture, sorted left to right. `square_boxes` says whether those boxes are
square by construction (others are made square before a face is cut out). A detector may
also have `detect_near(image, side)`: faces of about `side` px in a small window, which
`fer_keras.vision.tracking.FaceFollower` uses to follow a face between whole-frame
searches (without it, the window goes through `detect`).

Example:

>>> list_detectors()
['haar', 'mtcnn']
>>> detector = get_detector("mtcnn", confidence=0.95)
>>> detector.detect(rgb)
[[148, 76, 63, 85], [131, 197, 79, 107]]
"""

import importlib.util
import inspect
import math

import numpy as np

from fer_keras.utils.backend import require_tensorflow
from fer_keras.vision.faces import (
    DETECTION_MAX_SIDE,
    MIN_FACE_SIZE,
    detect_faces,
    load_detector,
)

MTCNN_EXTRA = 'pip install "fer_keras[mtcnn]"'
"""What installs the mtcnn detector's package (pinned in setup.cfg's `mtcnn` extra)."""

_DETECTORS = {}


def register_detector(name):
    """A class decorator that makes the detector class available as `get_detector(name)`.

    Raises:
        ValueError: if a detector of that name is registered already.
    """
    def register(cls):
        if name in _DETECTORS:
            raise ValueError(f"A face detector named {name!r} is registered already "
                             f"({_DETECTORS[name].__qualname__}); pick another name. "
                             f"Received: name={name!r}")
        cls.name = name
        _DETECTORS[name] = cls
        return cls

    return register


def list_detectors():
    """The registered detector names, sorted: `['haar', 'mtcnn']`."""
    return sorted(_DETECTORS)


def detector_options(name):
    """The options `get_detector(name, ...)` takes, with their defaults: `{"confidence": 0.9,
    ...}` for mtcnn, `{}` for haar."""
    cls = _detector_class(name)
    return {option.name: option.default
            for option in inspect.signature(cls.__init__).parameters.values()
            if option.name != "self"}


def get_detector(name, **options):
    """Builds the detector `name` with its `options` (see each class for them).

    Example: `get_detector("mtcnn", confidence=0.95).detect(rgb)`.

    Raises:
        ValueError: for an unknown name or option (listing the valid ones), a bad option
            value, or a detector whose package is not installed (naming the install).
    """
    cls = _detector_class(name)
    known = detector_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"The {name!r} face detector has no option {unknown[0]!r}; its "
                         f"options are: {', '.join(known) or 'none'}. "
                         f"Received: {unknown[0]}={options[unknown[0]]!r}")
    return cls(**options)


def _detector_class(name):
    if name not in _DETECTORS:
        raise ValueError(f"Unknown face detector. Use one of {', '.join(list_detectors())}. "
                         f"Received: detector={name!r}")
    return _DETECTORS[name]


def as_uint8_picture(image):
    """`image` as a uint8 array `(height, width)` or `(height, width, 3)`.

    A `(height, width, 1)` array becomes `(height, width)`.

    Raises:
        ValueError: for another dtype or shape, or an empty picture.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3
                                                           and image.shape[2] == 3)):
        raise ValueError(f"A face detector takes a uint8 picture, gray (height, width) or RGB "
                         f"(height, width, 3); convert it first. Received: dtype={image.dtype},"
                         f" shape={image.shape}")
    if image.size == 0:
        raise ValueError(f"A face detector needs a picture of at least 1x1 pixels. Received: "
                         f"shape={image.shape}")
    return image


def to_gray(image):
    """A uint8 picture as gray `(height, width)`: RGB by the ITU-R BT.601 weights (as
    `fer_keras.vision.images.load_gray` and OpenCV do)."""
    image = as_uint8_picture(image)
    if image.ndim == 2:
        return image
    # OpenCV is slow to import; it loads only once faces are searched for.
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def to_rgb(image):
    """A uint8 picture as RGB `(height, width, 3)`: gray is repeated in each channel."""
    image = as_uint8_picture(image)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def clip_boxes(boxes, width, height):
    """`[x, y, w, h]` boxes as ints cut to a `width` x `height` picture, sorted left to right;
    boxes left with no area are dropped.

    Example: `clip_boxes([[-5, 10, 20, 20.4]], 12, 100)` is `[[0, 10, 12, 20]]`.
    """
    clipped = []
    for x, y, w, h in boxes:
        left, top = max(0, int(round(x))), max(0, int(round(y)))
        right, bottom = min(width, int(round(x + w))), min(height, int(round(y + h)))
        if right > left and bottom > top:
            clipped.append([left, top, right - left, bottom - top])
    return sorted(clipped)


@register_detector("haar")
class HaarDetector:
    """OpenCV's frontal-face Haar cascade (Viola and Jones, CVPR 2001), as `predict` uses it:
    `fer_keras.vision.faces.detect_faces`, with its shrinking of large photos and its search
    for faces under 24x24 px in small pictures (those boxes come back too).

    Example: `get_detector("haar").detect(gray)`.
    """

    input_mode = "gray"
    square_boxes = True
    """The cascade's boxes are square already (others are made square for cropping)."""

    def __init__(self):
        self.cascade = load_detector()

    def detect(self, image):
        """Face boxes `[x, y, width, height]` in `image` (uint8 gray or RGB), left to right."""
        gray = to_gray(image)
        return clip_boxes(detect_faces(self.cascade, gray), gray.shape[1], gray.shape[0])

    def detect_near(self, image, side):
        """Face boxes of about `side` px (0.6-1.6 times) in a small `image`: the window
        search of `fer_keras.vision.tracking.FaceFollower`, a few cascade scales only."""
        # OpenCV is slow to import; it loads only once faces are searched for.
        import cv2

        gray = to_gray(image)
        least = max(MIN_FACE_SIZE, int(side * 0.6))
        most = max(least + 1, int(math.ceil(side * 1.6)))
        if min(gray.shape) < least:
            return []
        found = self.cascade.detectMultiScale(cv2.equalizeHist(gray), scaleFactor=1.1,
                                              minNeighbors=4, minSize=(least, least),
                                              maxSize=(most, most))
        boxes = [[int(x), int(y), int(w), int(h)] for x, y, w, h in
                 (found if len(found) else [])]
        return clip_boxes(boxes, gray.shape[1], gray.shape[0])

    def __repr__(self):
        return "HaarDetector()"


MTCNN_CONFIDENCE = 0.9
"""The mtcnn detector's default confidence: the least score of MTCNN's last stage (ONet) a
face needs. The package's own default is 0.8; 0.9 drops the doubtful faces a classifier of
expressions would only mislabel."""


@register_detector("mtcnn")
class MTCNNDetector:
    """MTCNN (Zhang et al. 2016) from the `mtcnn` package: three CNNs (proposal, refinement,
    output), on TensorFlow's CPU.

    Args:
        confidence: the least ONet score a face needs, in (0, 1] (default
            `MTCNN_CONFIDENCE`, 0.9).
        min_face_size: the smallest face searched for, in pixels of the searched picture
            (mtcnn's default, 20). Smaller finds smaller faces, more slowly.
        max_side: pictures larger than this are searched shrunk to it (boxes map back to
            full size), as the Haar detector does (`DETECTION_MAX_SIDE`, 1024).

    Example: `get_detector("mtcnn", confidence=0.95).detect(rgb)`.

    Raises:
        ValueError: for an option out of range, the mtcnn package or TensorFlow missing, or
            a Keras backend other than TensorFlow.
    """

    input_mode = "rgb"
    square_boxes = False

    def __init__(self, confidence=MTCNN_CONFIDENCE, min_face_size=20,
                 max_side=DETECTION_MAX_SIDE):
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) \
                or not 0 < confidence <= 1:
            raise ValueError(f"The mtcnn detector's confidence is a number in (0, 1] (default "
                             f"{MTCNN_CONFIDENCE}). Received: confidence={confidence!r}")
        for option, value, least in (("min_face_size", min_face_size, 4),
                                     ("max_side", max_side, 12)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"The mtcnn detector's {option} is an integer >= {least}. "
                                 f"Received: {option}={value!r}")
        self.confidence = float(confidence)
        self.min_face_size = min_face_size
        self.max_side = max_side
        self.model = _load_mtcnn()

    def detect(self, image):
        """Face boxes `[x, y, width, height]` in `image` (uint8 RGB, or gray), left to right.

        A BGR picture (OpenCV's order) must be converted to RGB first: MTCNN was trained on
        RGB and finds fewer faces in BGR.
        """
        rgb = to_rgb(image)
        height, width = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        searched = rgb
        if scale < 1.0:
            # OpenCV is slow to import; it loads only once a large photo is shrunk.
            import cv2

            searched = cv2.resize(rgb, (max(1, round(width * scale)),
                                        max(1, round(height * scale))),
                                  interpolation=cv2.INTER_AREA)
        if min(searched.shape[:2]) < 12:
            return []  # Below MTCNN's 12x12 input window: no face can be found.
        found = self.model.detect_faces(searched, threshold_onet=self.confidence,
                                        min_face_size=self.min_face_size)
        boxes = [[value / scale for value in face["box"]] for face in found
                 if float(face["confidence"]) >= self.confidence]
        return clip_boxes(boxes, width, height)

    def __repr__(self):
        return (f"MTCNNDetector(confidence={self.confidence}, "
                f"min_face_size={self.min_face_size}, max_side={self.max_side})")


def _load_mtcnn():
    """mtcnn's `MTCNN()` on the CPU, or a one-line `ValueError` saying what is missing."""
    if importlib.util.find_spec("mtcnn") is None:
        raise ValueError(f"The mtcnn face detector needs the mtcnn package, which is not "
                         f"installed: {MTCNN_EXTRA} (or use the haar detector). "
                         f"Received: detector='mtcnn'")
    # mtcnn's networks are tf.keras models that call .numpy() on their outputs, so they
    # need TensorFlow and Keras's TensorFlow backend.
    require_tensorflow("The mtcnn face detector")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"The mtcnn face detector runs only on Keras's TensorFlow backend "
                         f"(mtcnn's networks return TensorFlow tensors); set "
                         f"KERAS_BACKEND=tensorflow or use the haar detector. Received: "
                         f"Keras backend {keras.backend.backend()!r}")
    from mtcnn import MTCNN

    return MTCNN(stages="face_and_landmarks_detection", device="CPU:0")
