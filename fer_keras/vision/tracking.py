"""Following faces through a video without searching every whole frame.

Searching a whole frame for faces is most of what `predict` spends on a video (OpenCV's
Haar cascade took 34 of 60 s on a 464-frame clip; the classifier 17). A face moves little
from one frame to the next, so `FaceFollower` searches the whole frame only now and then
and, in between, looks for each face it follows in a small window around its last box:

- the whole frame is searched on the first sampled frame, whenever no face is being
  followed, and at least every `detect_every` seconds of video time (so a face that comes
  into view is found within that time);
- in between, each followed face is searched for in a square window `WINDOW_FACTOR` times
  its side about its last box, shrunk so the face is about `WINDOW_FACE_SIDE` px, and only
  at scales near its size (the detector's `detect_near`; one without it gets the window
  through `detect`); the found box that overlaps the expected one most (IoU >=
  `MIN_FOLLOW_IOU`) gives its new centre; its size stays that of the last whole-frame
  search (see `FaceFollower.find_near`). A face not found again is dropped until the next
  whole-frame search: it is never carried forward unseen.

`detect_every=0` searches every sampled frame whole (what `predict` did before).

>>> follower = FaceFollower(get_detector("haar"), detect_every=1.0)
>>> boxes = follower.boxes(gray, time=0.0)      # whole frame: the first frame
>>> boxes = follower.boxes(next_gray, time=0.04)  # windows about the faces just found
"""


from fer_keras.utils.numbers import checked_number
from fer_keras.vision.video import iou

DEFAULT_DETECT_EVERY = 1.0
"""Seconds of video between whole-frame searches when faces are being followed."""

WINDOW_FACTOR = 1.6
"""A followed face is searched for in a square this many times its last side."""

WINDOW_FACE_SIDE = 48
"""The window is shrunk (never enlarged) so the followed face is about this many pixels."""

MIN_FOLLOW_IOU = 0.3
"""The least overlap with a face's last box that a box found in its window needs."""


def check_detect_every(detect_every):
    """Validates `--detect-every` (a finite number of seconds >= 0) and returns it as float.

    Raises:
        ValueError: naming the bad value.
    """
    return checked_number(detect_every, "detect_every", "a number of seconds", low=0,
                          hint="0 searches every sampled frame whole")


class FaceFollower:
    """Face boxes frame after frame: whole-frame searches now and then, windows between.

    Args:
        detect: `detect(gray, rgb)` -> boxes `[x, y, w, h]` of the whole frame (as
            `fer_keras.vision.recognize.detect_boxes` gives them, square or made square).
        detector: the detector object, whose `detect_near` (or `detect`) searches windows.
        detect_every: seconds of video between whole-frame searches (0: every frame).

    Attributes:
        whole_frame_searches, window_searches: how often each kind of search ran.
    """

    def __init__(self, detect, detector, detect_every=DEFAULT_DETECT_EVERY):
        self.detect = detect
        self.detector = detector
        self.detect_every = check_detect_every(detect_every)
        self.followed = []
        self.last_search = None
        self.whole_frame_searches = 0
        self.window_searches = 0

    def boxes(self, gray, time, rgb=None):
        """The face boxes of the next sampled frame (uint8 gray; `rgb` for an "rgb"
        detector), at `time` seconds into the video."""
        due = (self.detect_every == 0 or not self.followed or self.last_search is None
               or time - self.last_search >= self.detect_every or time < self.last_search)
        if due:
            found = [list(box) for box in self.detect(gray, rgb)]
            self.whole_frame_searches += 1
            self.last_search = time
            self.followed = [(box, box[2:]) for box in found]
            return found
        picture = rgb if getattr(self.detector, "input_mode", "gray") == "rgb" \
            and rgb is not None else gray
        followed = []
        for box, size in self.followed:
            again = self.find_near(picture, box, size)
            if again is not None and all(iou(again, other) < 0.5 for other, _ in followed):
                followed.append((again, size))
        self.followed = sorted(followed)
        return [list(box) for box, _ in self.followed]

    def find_near(self, picture, box, size):
        """`box`'s face searched for in a window about it: a box of `size` (the face's
        `[width, height]` at the last whole-frame search) about the centre found, or None
        when not found.

        Only the centre is taken from the window: the cascade's boxes in a shrunk window
        come out a few percent larger, and a size taken from each frame's window would
        grow frame after frame. The next whole-frame search takes the face's new size.
        """
        # OpenCV is slow to import; it loads only once a window is searched.
        import cv2

        self.window_searches += 1
        height, width = picture.shape[:2]
        x, y, w, h = box
        side = max(w, h)
        half = int(round(side * WINDOW_FACTOR / 2))
        cx, cy = x + w / 2, y + h / 2
        left, top = max(0, int(cx - half)), max(0, int(cy - half))
        right, bottom = min(width, int(cx + half)), min(height, int(cy + half))
        if right - left < 12 or bottom - top < 12:
            return None
        window = picture[top:bottom, left:right]
        scale = min(1.0, WINDOW_FACE_SIDE / side)
        if scale < 1.0:
            window = cv2.resize(window, (max(1, round((right - left) * scale)),
                                         max(1, round((bottom - top) * scale))),
                                interpolation=cv2.INTER_AREA)
        near = getattr(self.detector, "detect_near", None)
        found = near(window, side * scale) if near is not None else self.detector.detect(window)
        expected = [(x - left) * scale, (y - top) * scale, w * scale, h * scale]
        best, best_overlap = None, MIN_FOLLOW_IOU
        for candidate in found:
            overlap = iou(candidate, expected)
            if overlap >= best_overlap:
                best, best_overlap = candidate, overlap
        if best is None:
            return None
        bx, by, bw, bh = best
        centre_x, centre_y = left + (bx + bw / 2) / scale, top + (by + bh / 2) / scale
        new_w, new_h = min(size[0], width), min(size[1], height)
        new_x = min(max(0, int(round(centre_x - new_w / 2))), width - new_w)
        new_y = min(max(0, int(round(centre_y - new_h / 2))), height - new_h)
        return [new_x, new_y, new_w, new_h]
