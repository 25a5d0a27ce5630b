"""Copy the best small single-network run into the package, as the model predict runs by default.

Usage:

    python -m fer_keras.package_model [--root saved_models] [--output fer_keras/assets]
        [--overwrite]

Writes `default_model.keras` (a copy of the chosen run's `model.keras`) and
`default_model.json` (the run it came from, its PrivateTest and selection-split accuracy
from the run's `metrics.json`, the file's SHA-256 and the rule) into the package's assets
folder, which `setup.cfg` ships as package data. The rule: the single network (not an
ensemble) with at most 2 forward passes per face (no ten-view runs), trained on FER+'s
crowd labels and calibrated, whose `model.keras` is at most 6 MB, with the best accuracy
on its selection split (`splits.validation`); why each condition, in
`fer_keras.serving.packaged`.

An identical packaged model is left as it is; a different one is replaced only with
`--overwrite`.

This module is the command line only; the rule is `fer_keras.serving.packaged`.
"""

import argparse

from fer_keras.cli import command_prog, entry_point, run_command
from fer_keras.serving.packaged import DEFAULT_OUTPUT, package_default_model
from fer_keras.training.loop import DEFAULT_ROOT


def build_parser():
    parser = argparse.ArgumentParser(
        prog=command_prog("package_model"), description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__[__doc__.index("Writes `default_model"):])
    parser.add_argument("--root", default=str(DEFAULT_ROOT),
                        help="the folder of run folders (default: %(default)s)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help="the assets folder to write (default: the package's own, "
                        "fer_keras/assets)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a different packaged model already there")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        info, status = package_default_model(args.root, args.output, args.overwrite)
        private = info["private_test_accuracy"]
        print(f"{status} {args.output}: {info['source_run']} ({info['model']}, "
              f"{info['bytes'] / 1e6:.2f} MB, {info['selection_split']} "
              f"{100 * info['selection_accuracy']:.2f}% (selection split)"
              + (f", PrivateTest {100 * private:.2f}%" if private is not None else "")
              + f"; sha256 {info['sha256'][:12]}...)")

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
