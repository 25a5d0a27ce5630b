"""Training images/s of one experiment on this process's Keras backend, as one JSON line.

`python -m fer_keras.bench --backend` runs this command once per backend
(`fer_keras.benchmarks.throughput.compare_backends`).
"""

import argparse
import json

from fer_keras.benchmarks.throughput import measure_backend
from fer_keras.cli import command_prog, entry_point, int_at_least


def build_parser():
    parser = argparse.ArgumentParser(
        prog=command_prog("throughput"),
        description="Training images/s of one experiment on this process's Keras backend "
        "(KERAS_BACKEND), as one JSON line; python -m fer_keras.bench --backend runs it.")
    parser.add_argument("experiment")
    parser.add_argument("--steps", type=int_at_least(1), default=20)
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    print(json.dumps(measure_backend(args.experiment, args.steps, args.seed)))
    return 0


if __name__ == "__main__":
    entry_point(main)
