"""Pictures of `predict`'s results: boxed and labelled photos, videos and a timeline plot.

`python -m fer_keras.predict ... --annotate DIR` writes, for each input:

* a photo: `DIR/NAME.annotated.png`, the photo (in colour, EXIF-rotated) with a box around
  each face and its top label and probability above it;
* a video: `DIR/NAME.annotated.mp4`, a copy of the video with the boxes, labels and track
  ids of the latest sampled frame drawn on every frame, and `DIR/NAME.timeline.png`, the
  probability of each class over time, one panel per track.

Faces reported as skipped (too small) get a thin gray box and no label.
"""

from pathlib import Path

from fer_keras.training.results import _pyplot
from fer_keras.vision.images import load_colour

ANNOTATED_SUFFIX = ".annotated"
TIMELINE_SUFFIX = ".timeline.png"
OUTPUT_ENDINGS = (f"{ANNOTATED_SUFFIX}.png", f"{ANNOTATED_SUFFIX}.mp4", TIMELINE_SUFFIX)
"""How the name of every file written into the --annotate folder ends."""
VIDEO_FOURCC = "mp4v"
"""MPEG-4 Part 2: every OpenCV build can write it without extra codecs."""

TRACK_COLOURS = ((46, 204, 113), (52, 152, 219), (231, 76, 60), (241, 196, 15),
                 (155, 89, 182), (26, 188, 156), (230, 126, 34), (149, 165, 166))
"""BGR colours, one per track id (cycled), so a person keeps a colour through a video."""

MAX_TIMELINE_TRACKS = 6
"""The timeline shows the tracks with the most sampled frames, at most this many panels."""


def is_output_name(path):
    """Whether `path`'s name is one that `--annotate` writes (see `OUTPUT_ENDINGS`)."""
    return Path(path).name.lower().endswith(OUTPUT_ENDINGS)


class OutputNames:
    """Unique output paths in one folder, so two inputs named alike do not overwrite.

    Raises:
        ValueError: if the folder cannot be made (a file is in the way, no permission).
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"cannot make the --annotate folder {self.folder}: "
                             f"{error.strerror or error}. Pass a writable folder. "
                             f"Received: --annotate {self.folder}") from None
        self.used = set()

    def stem_for(self, source):
        """A stem for outputs of `source`: its name, with `-2`, `-3` ... when taken."""
        stem, number = Path(source).stem, 1
        candidate = stem
        while candidate in self.used:
            number += 1
            candidate = f"{stem}-{number}"
        self.used.add(candidate)
        return self.folder / candidate


def draw_faces(image, records):
    """Draws each record's box and label on a BGR image, in place.

    Args:
        image: uint8 BGR `(height, width, 3)`.
        records: face records of this picture (`box`, and `label` / `probabilities` /
            `track`, or `skipped`).
    """
    # OpenCV draws and writes the pictures; it loads only when one is written.
    import cv2

    height, width = image.shape[:2]
    thickness = max(1, round(max(height, width) / 400))
    for record in records:
        if "box" not in record:
            continue
        x, y, w, h = record["box"]
        if "label" not in record:
            cv2.rectangle(image, (x, y), (x + w, y + h), (160, 160, 160), 1)
            continue
        track = record.get("track")
        colour = TRACK_COLOURS[(track or record.get("face", 0)) % len(TRACK_COLOURS)]
        cv2.rectangle(image, (x, y), (x + w, y + h), colour, thickness)
        # Smoothed over time (predict --smooth), a video shows the smoothed label.
        label = record.get("smoothed_label", record["label"])
        probability = record.get("smoothed", record["probabilities"])[label]
        text = f"{label} {100 * probability:.0f}%"
        if track is not None:
            text = f"#{track} {text}"
        scale = max(0.4, min(1.5, w / 160))
        (text_width, text_height), baseline = cv2.getTextSize(
            text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        # The label sits above the box, or inside its top when the box touches the edge.
        top = y - text_height - baseline - 2 if y - text_height - baseline - 2 >= 0 else y
        cv2.rectangle(image, (x, top), (x + text_width + 4, top + text_height + baseline + 2),
                      colour, -1)
        cv2.putText(image, text, (x + 2, top + text_height + 1), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return image


def annotate_photo(path, records, names):
    """Writes `DIR/NAME.annotated.png` for one photo's face records; returns its path."""
    # OpenCV draws and writes the pictures; it loads only when one is written.
    import cv2

    image = draw_faces(load_colour(path), records)
    output = Path(str(names.stem_for(path)) + ANNOTATED_SUFFIX + ".png")
    # imwrite reports a failed write (disk full, folder gone) by returning False only.
    if not cv2.imwrite(str(output), image):
        raise ValueError(f"OpenCV could not write {output}; pass another --annotate folder. "
                         f"Received: --annotate {names.folder}")
    return output


class AnnotatedVideo:
    """Writes an annotated copy of a video one frame at a time.

    Args:
        path: the `.mp4` file to write.
        fps: the source video's frame rate.
        size: `(width, height)` of its frames.
    """

    def __init__(self, path, fps, size):
        # OpenCV draws and writes the pictures; it loads only when one is written.
        import cv2

        self.path = Path(path)
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*VIDEO_FOURCC),
                                      float(fps), tuple(int(side) for side in size))
        if not self.writer.isOpened():
            raise ValueError(f"OpenCV cannot write {self.path} with the {VIDEO_FOURCC} codec; "
                             f"pass another --annotate folder. Received: {self.path}")
        self.frames = 0

    def write(self, image, records):
        """Draws `records` (the latest sampled frame's faces) on a frame and writes it."""
        self.writer.write(draw_faces(image, records))
        self.frames += 1

    def close(self):
        self.writer.release()


def plot_timeline(records, path, title=""):
    """Emotion probabilities over time per track, from one video's face records.

    Args:
        records: the video's classified face records (`track`, `time`, `probabilities`).
        path: the `.png` to write.
        title: the figure title (the video's name).

    Returns:
        The path, or None when there is no classified face to plot.
    """
    by_track = {}
    for record in records:
        if "probabilities" in record and record.get("track") is not None:
            by_track.setdefault(record["track"], []).append(record)
    if not by_track:
        return None
    shown = sorted(sorted(by_track, key=lambda track: -len(by_track[track]))
                   [:MAX_TIMELINE_TRACKS])
    # The records' probabilities are keyed by class name, in the model's output order.
    class_names = list(by_track[shown[0]][0]["probabilities"])
    plt = _pyplot()
    figure, axes = plt.subplots(len(shown), 1, figsize=(9, 1.0 + 2.2 * len(shown)),
                                sharex=True, squeeze=False)
    for axis, track in zip(axes[:, 0], shown):
        rows = by_track[track]
        times = [row["time"] for row in rows]
        smoothed = all("smoothed" in row for row in rows)
        for index, name in enumerate(class_names):
            colour = f"C{index}"
            # With smoothing, raw probabilities are thin and faint, smoothed ones bold.
            axis.plot(times, [row["probabilities"][name] for row in rows],
                      label=None if smoothed else name, color=colour,
                      alpha=0.35 if smoothed else 1.0, linewidth=0.8 if smoothed else 1.5,
                      marker="." if len(rows) < 30 else None)
            if smoothed:
                axis.plot(times, [row["smoothed"][name] for row in rows], color=colour,
                          label=name, linewidth=2.0)
        axis.set_ylim(0, 1)
        axis.set_ylabel(f"track {track}\nprobability")
        axis.grid(alpha=0.3)
    axes[0, 0].legend(ncol=len(class_names), fontsize="small", loc="lower left",
                      bbox_to_anchor=(0, 1.02))
    axes[-1, 0].set_xlabel("time (s)")
    if any("smoothed" in row for rows in by_track.values() for row in rows):
        title = f"{title}: smoothed (bold) and raw (faint)" if title else \
            "smoothed (bold) and raw (faint)"
    if title:
        figure.suptitle(title, y=0.995)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
