"""Measure the face detectors on annotated photos: recall, precision, false positives, ms/photo.

Usage:

    python -m fer_keras.detectors --photos ../shared/photos [--detectors haar mtcnn]
        [--iou 0.3] [--repeats 3] [--confidence 0.9] [--save FILE.json] [--overwrite]

Prints a Markdown table, one row per detector: recall and precision at IoU >= `--iou`
against the boxes of the folder's `faces.xml` (greedy one-to-one matching by IoU), the
boxes found in the folder's photos that `faces.xml` does not list (photos without faces,
such as `dogs.jpg`), and milliseconds per photo of detection alone, wall clock and CPU
time (photos decoded before timing; the median of `--repeats` after a warm-up). Without
`--detectors`, every detector that loads here is measured (mtcnn needs
`pip install "fer_keras[mtcnn]"`). `--save` writes the rows, per-photo boxes and times, the
command and the machine as JSON; it refuses an existing file unless `--overwrite`. How it
is measured: `fer_keras.benchmarks.detectors`.
"""

import argparse
import shlex
import sys

from fer_keras.benchmarks.detectors import (
    IOU_THRESHOLD,
    REPEATS,
    check_save_path,
    compare_detectors,
    format_table,
    save_results,
)
from fer_keras.cli import (
    add_save_flags,
    command_prog,
    entry_point,
    int_at_least,
    number_in,
    run_command,
)
from fer_keras.vision.detectors import MTCNN_CONFIDENCE, list_detectors


def build_parser():
    parser = argparse.ArgumentParser(prog=command_prog("detectors"),
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", required=True,
                        help="folder with faces.xml (imglab face boxes) and its photos; "
                        "photos it does not list count as photos without faces")
    parser.add_argument("--detectors", nargs="+", choices=list_detectors(),
                        help="detectors to measure (default: every one that loads here)")
    parser.add_argument("--iou", type=number_in(0, 1, low_open=True), default=IOU_THRESHOLD,
                        help=f"least IoU of a match (default {IOU_THRESHOLD})")
    parser.add_argument("--repeats", type=int_at_least(1), default=REPEATS,
                        help=f"timed detections of each photo after the warm-up (default "
                        f"{REPEATS})")
    parser.add_argument("--confidence", type=number_in(0, 1, low_open=True),
                        help="least score of a face, for the detectors that take one "
                        f"(mtcnn; default: the detector's own, {MTCNN_CONFIDENCE})")
    add_save_flags(parser)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)

    def body():
        if args.save is not None:
            check_save_path(args.save, args.overwrite)
        options = {} if args.confidence is None else {"confidence": args.confidence}
        rows = compare_detectors(args.photos, args.detectors, args.iou, args.repeats, options)
        print(format_table(rows))
        if args.save is not None:
            command = shlex.join(["python", "-m", "fer_keras.detectors", *argv])
            save_results(rows, args.save, command, overwrite=args.overwrite)
            print(f"Wrote {args.save}")

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
