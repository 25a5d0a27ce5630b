"""Raise the rare classes of a trained run by post-hoc logit adjustment, tuned on its
selection split.

Usage:

    python -m fer_keras.rebalance saved_models/fer_vgg_long \\
        --output saved_models/fer_vgg_long_balanced [--tau X] [--max-drop 0.25] \\
        [--data PATH] [--overwrite]

FER2013 is imbalanced (disgust is 1.5% of Training), so a network trained on it under-calls
the rare classes. Logit adjustment (`fer_keras.models.layers.LogitAdjustment`) divides each
probability by the class's training frequency to the power `tau` and renormalises. Without
`--tau`, `tau` is chosen on the run's selection split (validation, or PublicTest under the
kaggle protocol): the value of 0, 0.05, ..., 1 with the best macro-F1 among those that lose
at most `--max-drop` accuracy points there. PrivateTest plays no part in the choice.

Writes a normal run folder (`model.keras` = the run's network + the adjustment layer,
`config.json`, `metrics.json` with the sweep, `confusion_matrix.png` and `tau_sweep.png`)
that `evaluate --verify`, `export`, `predict` and `report` take. Nothing is retrained.

This module is the command line only; the adjustment, the sweep and the run folder are
`fer_keras.accuracy.rebalance`.
"""

import argparse
import sys

from fer_keras.accuracy.rebalance import rebalance
from fer_keras.cli import command_prog, entry_point, number_in, run_command


def build_parser():
    parser = argparse.ArgumentParser(
        prog=command_prog("rebalance"), description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder holding model.keras and config.json")
    parser.add_argument("--output", required=True, help="run folder to write")
    parser.add_argument("--tau", type=number_in(0.0, 2.0),
                        help="adjustment strength in [0, 2]; default: chosen on the run's "
                        "selection split")
    parser.add_argument("--max-drop", type=number_in(0.0, 100.0), default=0.25,
                        help="accuracy points the choice of tau may give up on the selection "
                        "split (default 0.25)")
    parser.add_argument("--data", help="FER2013 CSV or image folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished run already in --output")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        metrics = rebalance(args.run, args.output, tau=args.tau, max_drop=args.max_drop,
                            data=args.data, overwrite=args.overwrite,
                            command=" ".join(["python -m fer_keras.rebalance"]
                                             + sys.argv[1:]))
        splits = metrics["splits"]
        for split in ("validation", "private_test"):
            result = splits[split]
            print(f"{split}: accuracy {100 * result['accuracy']:.2f}, macro-F1 "
                  f"{100 * result['macro_f1']:.2f}, disgust recall "
                  f"{100 * result['per_class']['disgust']['recall']:.1f}")
        print(f"tau = {metrics['tau']:g}; wrote {args.output}")

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
