"""Videos for `python -m fer_keras.predict`: frame sampling, face tracks, progress.

A video is read one frame at a time with OpenCV (`cv2.VideoCapture`, any format its FFmpeg
build opens), so a long video is never held in memory. `sample_frames` picks the frames
to classify (every N-th frame, or X frames per second of video time), `IoUTracker` gives
each face a `track` id that stays the same while it stays roughly in place, and
`Progress` writes a one-line progress bar with the time left.

Example:

>>> for frame in sample_frames("clip.mp4", fps=2):
...     print(frame.index, frame.time, frame.image.shape, frame.sampled)
"""

import math
import sys
import time
from dataclasses import dataclass

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                  ".flv", ".3gp")
DEFAULT_SAMPLE_FPS = 5.0
"""Frames classified per second of video when neither `--every` nor `--fps` is given."""

MAX_SAMPLE_FPS = 1000.0
"""The largest `--fps` taken: above a video's own rate every frame is classified anyway."""

FALLBACK_VIDEO_FPS = 25.0
VIDEO_FPS_RANGE = (1e-3, 1e6)
"""Frame rates a container may state; outside it (or none) `FALLBACK_VIDEO_FPS` is used,
so frame times stay finite numbers."""


def is_video(path):
    """Whether `path` has a video file suffix (see `VIDEO_SUFFIXES`)."""
    return str(path).lower().endswith(VIDEO_SUFFIXES)


def check_sampling(every=None, fps=None):
    """Validates `--every` / `--fps` (at most one, positive) and returns them.

    Raises:
        ValueError: naming the bad value.
    """
    if every is not None and fps is not None:
        raise ValueError(f"Pass --every or --fps, not both. Received: every={every}, "
                         f"fps={fps}")
    if every is not None and (not isinstance(every, int) or isinstance(every, bool)
                              or every < 1):
        raise ValueError(f"every must be a positive whole number of frames. Received: "
                         f"every={every!r}")
    if fps is not None:
        try:
            valid = math.isfinite(float(fps)) and float(fps) > 0
        except (TypeError, ValueError):
            valid = False
        if not valid or isinstance(fps, bool):
            raise ValueError(f"fps must be a positive, finite number of frames per second. "
                             f"Received: fps={fps!r}")
        fps = float(fps)
    return every, fps


@dataclass
class Frame:
    """One decoded frame: its index, time in seconds, BGR pixels, and whether it is sampled."""

    index: int
    time: float
    image: object
    sampled: bool


class VideoError(ValueError):
    """A video that cannot be read, or stops early; `frames_read` says how far it got."""

    def __init__(self, message, frames_read=0):
        super().__init__(message)
        self.frames_read = frames_read


def open_video(path):
    """Opens a video and returns `(capture, fps, frame_count)`.

    `frame_count` is the container's own count (0 when it does not say, or states an
    impossible one), and `fps` falls back to 25 when the container gives none (some streams
    do not) or one outside `VIDEO_FPS_RANGE`.

    Raises:
        VideoError: if OpenCV cannot open the file as a video.
    """
    # OpenCV loads only where images or videos are decoded.
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise VideoError("not a video OpenCV can read (not a video, an empty video, or one "
                         "truncated before its index)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    # A damaged or odd header can state NaN, infinity or 1e300; times and buckets computed
    # from such a rate would overflow, so it counts as no rate at all.
    if not (math.isfinite(fps) and VIDEO_FPS_RANGE[0] <= fps <= VIDEO_FPS_RANGE[1]):
        fps = FALLBACK_VIDEO_FPS
    count = int(count) if math.isfinite(count) and 0 < count < 2**53 else 0
    return capture, float(fps), count


def sample_frames(path, every=None, fps=None, decode_all=False, info=None):
    """Yields the frames of a video one at a time, marking the sampled ones.

    Without `decode_all`, frames that are not sampled are skipped without being
    converted (`grab()` only), and only sampled frames are yielded.

    Args:
        path: the video file.
        every: sample every N-th frame (0, N, 2N, ...).
        fps: sample this many frames per second of video time (frame 0 first; every frame
            when `fps` is at least the video's rate). Default `DEFAULT_SAMPLE_FPS`.
        decode_all: yield every frame (unsampled ones too, for an annotated copy).
        info: a dict to fill with the video's `fps`, `frame_count`, `width`, `height`
            once it is open.

    Yields:
        `Frame`s in order.

    Raises:
        VideoError: for a file that cannot be opened, a video with zero frames, or one
            that ends before the frame count its container gives (truncated).
    """
    # OpenCV loads only where images or videos are decoded.
    import cv2

    every, fps = check_sampling(every, fps)
    if every is None and fps is None:
        fps = DEFAULT_SAMPLE_FPS
    capture, video_fps, count = open_video(path)
    if info is not None:
        info.update(fps=video_fps, frame_count=count,
                    width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                    height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    index, last_bucket = 0, -1
    # Sampling at or above the video's own rate takes every frame; `index * fps` is not
    # computed then, as for a huge `fps` (1e308) it overflows to infinity.
    every_frame = fps is not None and fps >= video_fps
    try:
        while True:
            if every is not None:
                sampled = index % every == 0
            else:
                # Sampling on the integer bucket of index * fps / video_fps keeps the
                # spacing exact over long videos, where adding 1/fps would drift.
                bucket = index if every_frame else int(index * fps / video_fps + 1e-9)
                sampled, last_bucket = bucket != last_bucket, bucket
            if sampled or decode_all:
                ok, image = capture.read()
            else:
                ok, image = capture.grab(), None
            if not ok:
                break
            if sampled or decode_all:
                yield Frame(index, index / video_fps, image, sampled)
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise VideoError("video has zero frames (OpenCV opened it but decoded none)")
    # Containers that only store a duration give an estimated count that can be off by a
    # frame or two, so only a clear shortfall counts as truncation.
    if count and index < count - max(2, 0.01 * count):
        raise VideoError(f"truncated or corrupt video: decoded {index} of the {count} frames "
                         f"its header announces", frames_read=index)


def iou(first, second):
    """Intersection over union of two `[x, y, width, height]` boxes."""
    left, top = max(first[0], second[0]), max(first[1], second[1])
    right = min(first[0] + first[2], second[0] + second[2])
    bottom = min(first[1] + first[3], second[1] + second[3])
    overlap = max(0, right - left) * max(0, bottom - top)
    union = first[2] * first[3] + second[2] * second[3] - overlap
    return overlap / union if union > 0 else 0.0


class IoUTracker:
    """Stable ids for faces across sampled frames, by box overlap (IoU).

    Each frame's boxes are matched greedily, best overlap first, to the tracks seen in the
    last `max_missed + 1` sampled frames; a box overlapping no track by at least
    `threshold` starts a new track. Ids count from 0 in order of appearance.

    Args:
        threshold: the least IoU that continues a track.
        max_missed: sampled frames a track may go unseen (the detector misses a face now
            and then) and still be continued.
    """

    def __init__(self, threshold=0.3, max_missed=2):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1]. Received: threshold={threshold}")
        self.threshold = threshold
        self.max_missed = max_missed
        self.tracks = {}  # id -> (last box, sampled frames since it was seen)
        self.next_id = 0

    def update(self, boxes):
        """Returns a track id for each box of the next sampled frame, in the boxes' order."""
        pairs = sorted(((iou(box, last), track, position)
                        for position, box in enumerate(boxes)
                        for track, (last, _) in self.tracks.items()), reverse=True)
        ids, taken = [None] * len(boxes), set()
        for overlap, track, position in pairs:
            if overlap < self.threshold:
                break
            if ids[position] is None and track not in taken:
                ids[position] = track
                taken.add(track)
        for position, track in enumerate(ids):
            if track is None:
                ids[position] = track = self.next_id
                self.next_id += 1
        # Unseen tracks age by one frame; those gone too long are forgotten.
        aged = {track: (box, missed + 1) for track, (box, missed) in self.tracks.items()
                if track not in ids and missed < self.max_missed}
        aged.update({track: (list(box), 0) for track, box in zip(ids, boxes)})
        self.tracks = aged
        return ids


class Progress:
    """A one-line progress bar on a terminal stream: frames done, percent, time left.

    Args:
        label: the line's prefix (the file name).
        total: frames expected (0 when unknown: no percent or time left).
        stream: where to write (default stderr); None writes nothing.
        interval: least seconds between redraws.
    """

    def __init__(self, label, total, stream=sys.stderr, interval=0.5):
        self.label, self.total, self.stream, self.interval = label, total, stream, interval
        self.start = time.perf_counter()
        self.last_draw = -interval
        self.done = 0

    def line(self):
        """The current progress text."""
        elapsed = time.perf_counter() - self.start
        if not self.total:
            return f"{self.label}: frame {self.done}, {elapsed:.0f} s"
        fraction = min(1.0, self.done / self.total)
        bar = "#" * int(20 * fraction)
        left = elapsed / fraction - elapsed if fraction > 0 else float("nan")
        left_text = "?" if left != left else f"{left:.0f} s"
        return (f"{self.label}: [{bar:<20}] frame {self.done}/{self.total} "
                f"({100 * fraction:.0f}%), {elapsed:.0f} s elapsed, ~{left_text} left")

    def update(self, frames_done):
        """Records progress, redrawing at most every `interval` seconds."""
        self.done = frames_done
        now = time.perf_counter() - self.start
        if self.stream is not None and now - self.last_draw >= self.interval:
            self.last_draw = now
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def close(self):
        """Draws the final state and ends the line."""
        if self.stream is not None:
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()
