"""Compare a trained run's TFLite files: accuracy, LiteRT batch-1 latency and size.

Usage:

    python -m fer_keras.formats saved_models/EXPERIMENT [...] [--split private_test]
        [--data PATH] [--calls 200] [--save saved_models/formats.json]

For each run folder, the model is exported (`fer_keras.serving.export.export`, into a temporary
folder; nothing is written into the run folder) as float32, float16 and int8 TFLite files
(int8 calibrated on `REPRESENTATIVE_COUNT` training-split faces). Each file is scored on
the split with LiteRT (`python -m fer_keras.evaluate FILE.tflite` does the same), and timed
at batch 1 with 1 and 2 threads in a fresh process (`fer_keras.serving.litert.measure_latency`).
The Keras model's own accuracy on the split comes from the run's `metrics.json`, so the
cost of each format is a difference in points. `--save` writes the JSON that
`python -m fer_keras.report` turns into the "Serving formats" table.

Other processes slow every latency; the load average is recorded beside the figures.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from fer_keras.cli import command_prog, entry_point, run_command
from fer_keras.data.sources import SPLITS
from fer_keras.serving.formats import (
    FORMATS_FILE,
    compare_formats,
    formats_table,
    recorded_keras_accuracy,
)
from fer_keras.serving.litert import runtime_name


def build_parser():
    parser = argparse.ArgumentParser(prog=command_prog("formats"),
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_FOLDER",
                        help="run folders (saved_models/EXPERIMENT)")
    parser.add_argument("--split", default="private_test", choices=SPLITS)
    parser.add_argument("--data", help="FER2013 CSV or image folder (default: "
                        "$FER2013_PATH, then data/fer2013.csv[.gz])")
    parser.add_argument("--calls", type=int, default=200,
                        help="timed batch-1 calls per thread count (default 200)")
    parser.add_argument("--save", metavar="PATH",
                        help=f"write the JSON here (saved_models/{FORMATS_FILE} feeds the "
                        f"report)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        if args.calls < 1:
            raise ValueError(f"--calls must be a positive integer. Received: "
                             f"calls={args.calls}")
        # Every run is checked before the first slow export, so a bad one fails at once.
        for run in args.runs:
            recorded_keras_accuracy(run, args.split)
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        results = []
        for run in args.runs:
            print(f"measuring {run} ...", file=sys.stderr, flush=True)
            results.extend(compare_formats(run, args.split, args.data, args.calls))
        command = " ".join(["python -m fer_keras.formats",
                            *(argv if argv is not None else sys.argv[1:])])
        report = {"command": command, "runtime": runtime_name(), "calls": args.calls,
                  "load_average": load, "results": results}
        if args.save:
            Path(args.save).parent.mkdir(parents=True, exist_ok=True)
            Path(args.save).write_text(json.dumps(report, indent=2) + "\n")
        print(formats_table(report))

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
