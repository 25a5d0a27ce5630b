"""Classify the facial expressions in ordinary photos and videos.

Usage:

    python -m fer_keras.predict PATH [PATH ...] [--model DIR_OR_FILE] [--batch-size N]
        [--detector haar|mtcnn] [--no-detect] [--litert] [--threads N] [--every N | --fps X]
        [--detect-every SECONDS]
        [--csv PATH] [--annotate DIR] [--min-confidence P] [--smooth SECONDS]
        [--smooth-method exponential|window] [--episodes PATH] [--min-track-seconds S]
        [--no-progress]

Videos (.mp4, .avi, .mov, .mkv, .webm and the other `fer_keras.vision.video.VIDEO_SUFFIXES`,
anything OpenCV opens) are read one frame at a time; every N-th frame (`--every`) or X
frames per second of video (`--fps`, default 5) are classified, and each face record gets
`frame`, `time` (seconds) and `track` (an id that follows one person across frames). A
face smaller than the detector's 24x24 px window gets a record with `skipped` instead of a
label. The whole frame is searched for faces at least every `--detect-every` seconds of
video (default 1), and on any sampled frame where no face is being followed; in between,
each face is searched for only in a window 1.6 times its size about its last box, at scales
near its size (`fer_keras.vision.tracking`), several times faster than a whole frame. A
face not found there is dropped until the next whole-frame search, never carried forward
unseen; `--detect-every 0` searches every sampled frame whole. `--csv` writes the records
as a table too; `--annotate DIR` writes boxed and
labelled copies of the inputs and a timeline plot per video (`fer_keras.vision.annotate`).
`--smooth SECONDS` smooths each track's probabilities over time, causally (an exponential
moving average with that time constant, or `--smooth-method window`: the mean of the last
SECONDS); the record keeps its raw `probabilities` and `label` and gets `smoothed` and
`smoothed_label`, the annotated video shows the smoothed label and the timeline both.
`--episodes PATH` writes one CSV row per stretch of one label on one track (file, track,
label, start, end, duration, records, peak and mean probability of that label; smoothed
labels with `--smooth`): a new label must lead the current one by 0.1 to start an episode,
a one-record flicker joins the stretch before it, and tracks seen for less than
`--min-track-seconds` (default 0.5 s, typically false detections) are left out and counted
(`fer_keras.vision.episodes`).

PATH is an image file or a folder (searched recursively for .png, .jpg, .jpeg, .bmp, .gif,
.webp, .tif, .tiff and .pgm files). Any size, gray or colour; transparency is composited
over white and EXIF orientation is applied, as a photo viewer shows the picture. Faces are
found with the frontal-face Haar cascade that OpenCV ships
(`haarcascade_frontalface_default.xml`, nothing is downloaded; `--detector haar`, the
default) or with MTCNN (`--detector mtcnn`: it finds more faces and fewer false ones, but
needs `pip install "fer_keras[mtcnn]"` and Keras's TensorFlow backend; it gets the photo in
colour, and its boxes, taller than wide, are made square about their centre), cut out of
the gray picture and resized to 48x48 (area averaging, as the FER2013 image-folder loader
does), then classified in batches. With `--no-detect` each image is taken as one face
crop.

Output: one JSON object a line on stdout, in input order, one per face:

    {"file": "a.jpg", "face": 0, "box": [x, y, width, height], "label": "happy",
     "class_id": 1, "probabilities": {"neutral": 0.02, "happy": 0.91, ..., "contempt": 0.0}}

`box` is in pixels of the (EXIF-rotated) image. With `--min-confidence P` each face's
record also gets `"uncertain"`: true when its top probability is below P. A file that
cannot be used gets one record with an `error` field instead (not an image, truncated, no
face found, missing, a device or FIFO, `-`), and the other files still get results. The
exit status is 0 when every file gave a result, 1 when some gave an error record, and 2
for a usage error (no model, bad flags, an output path that is an input or cannot be
written: outputs are checked before anything is classified).

`--model` takes a run folder (holding `model.keras`), a `.keras` file, an exported
SavedModel folder (`.../serving/VERSION`) or a `.tflite` file (run with LiteRT; `--litert`
picks the one exported beside a SavedModel or run folder). Without it, the run under
`saved_models/` whose `metrics.json` has the highest validation accuracy is used, else the
model packaged with fer_keras (`fer_keras/assets/default_model.keras`). The
summary line on stderr gives faces/s, end to end and inside the model.
"""

import argparse
import sys
import time

from fer_keras.cli import command_prog, entry_point, int_at_least, number_in, run_command
from fer_keras.serving.runner import Classifier, default_model
from fer_keras.vision.detectors import MTCNN_EXTRA, list_detectors
from fer_keras.vision.episodes import (
    DEFAULT_MIN_TRACK_SECONDS,
    SMOOTHING_METHODS,
    find_episodes,
    write_episodes_csv,
)
from fer_keras.vision.recognize import (
    DEFAULT_DETECTOR,
    check_outputs,
    predict,
    resolve_detector,
    write_csv,
)
from fer_keras.vision.tracking import DEFAULT_DETECT_EVERY
from fer_keras.vision.video import DEFAULT_SAMPLE_FPS, MAX_SAMPLE_FPS


def build_parser():
    parser = argparse.ArgumentParser(prog=command_prog("predict"),
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="image or video files, or folders of them")
    parser.add_argument("--model", help="run folder, .keras file, exported SavedModel "
                        "folder or .tflite file; default: the run under saved_models/ with "
                        "the best validation accuracy, else the packaged model")
    parser.add_argument("--litert", action="store_true",
                        help="run the TFLite file exported beside the --model SavedModel "
                        "(or the run folder's newest export) with LiteRT")
    parser.add_argument("--threads", type=int_at_least(1),
                        help="LiteRT threads for a .tflite model (default: the runtime's)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=64,
                        help="faces per model call")
    # Not argparse choices: an unknown name gets the registry's one-line error.
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, metavar="NAME",
                        help=f"face detector: {' or '.join(list_detectors())} (default "
                        f"{DEFAULT_DETECTOR}: OpenCV's Haar cascade). mtcnn finds more faces "
                        f"and fewer false ones, but needs the mtcnn extra ({MTCNN_EXTRA}) "
                        f"and TensorFlow as the Keras backend")
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
    parser.add_argument("--detect-every", type=number_in(0), default=DEFAULT_DETECT_EVERY,
                        metavar="SECONDS",
                        help="videos: search the whole frame for faces at least this often "
                        "(seconds of video; default %(default)g), following each face in a "
                        "window about its last box in between; 0: every sampled frame")
    parser.add_argument("--csv", metavar="PATH",
                        help="also write the records as a CSV table (one row per record; "
                        "an existing file of that name is replaced, an input never)")
    parser.add_argument("--annotate", metavar="DIR",
                        help="write annotated copies (photos: NAME.annotated.png; videos: "
                        "NAME.annotated.mp4 and a NAME.timeline.png plot) into DIR")
    parser.add_argument("--min-confidence", type=number_in(0, 1), metavar="P",
                        help="mark each face whose top probability is below P with "
                        '"uncertain": true (the others false)')
    parser.add_argument("--smooth", type=number_in(0, low_open=True), metavar="SECONDS",
                        help="videos: smooth each face track's probabilities over this "
                        "many seconds (records get \"smoothed\" and \"smoothed_label\"; "
                        "the annotated video shows the smoothed label)")
    parser.add_argument("--smooth-method", choices=list(SMOOTHING_METHODS),
                        default="exponential",
                        help="exponential: moving average with time constant SECONDS "
                        "(default); window: mean of the last SECONDS")
    parser.add_argument("--episodes", metavar="PATH",
                        help="videos: write one CSV row per stretch of one label on one "
                        "track (track, label, start, end, duration, peak and mean "
                        "probability); smoothed labels when --smooth is given")
    parser.add_argument("--min-track-seconds", type=number_in(0),
                        default=DEFAULT_MIN_TRACK_SECONDS, metavar="SECONDS",
                        help="tracks seen for less than this are left out of --episodes "
                        f"(typically false detections; default {DEFAULT_MIN_TRACK_SECONDS:g})")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar for videos")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        # Before the model loads: a bad output path is refused at no cost, and no input
        # can be overwritten by an output.
        check_outputs(args.paths, csv=args.csv, annotate=args.annotate, stdout=sys.stdout,
                      episodes=args.episodes)
        start = time.perf_counter()
        # Before the model loads too: an unknown detector or a missing extra is one line.
        detector = resolve_detector(args.detector, detect=not args.no_detect)
        model = Classifier(args.model if args.model is not None else default_model(),
                           litert=args.litert, num_threads=args.threads)
        records = predict(args.paths, model=model, batch_size=args.batch_size,
                          detect=not args.no_detect,
                          detector=args.detector if detector is None else detector,
                          every=args.every, fps=args.fps,
                          annotate=args.annotate,
                          progress=None if args.no_progress else sys.stderr,
                          min_confidence=args.min_confidence, smooth=args.smooth,
                          smooth_method=args.smooth_method,
                          detect_every=args.detect_every)
        seconds = time.perf_counter() - start
        if args.csv is not None:
            write_csv(records, args.csv, model.class_names)
        if args.episodes is not None:
            dropped = []
            found = find_episodes(records, min_track_seconds=args.min_track_seconds,
                                  dropped=dropped)
            write_episodes_csv(found, args.episodes)
            print(f"{len(found)} episode(s) written to {args.episodes}"
                  + (f"; {len(dropped)} track(s) seen for under {args.min_track_seconds:g} s "
                     f"left out" if dropped else ""), file=sys.stderr)
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
