"""Calibrate a trained run's probabilities by temperature scaling, fitted on its selection
split.

Usage:

    python -m fer_keras.calibrate saved_models/fer_vgg_kaggle_tuned_long_s4 \\
        --output saved_models/fer_vgg_kaggle_tuned_long_s4_calibrated [--data PATH] \\
        [--overwrite]

A network's top probability is often not the chance it is right (label smoothing and
averaged test-time views make it too low, long training too high). Temperature scaling
divides the log of the run's output probabilities by one number T > 0 and takes the
softmax again, `softmax(log(p) / T)`; T is the one of least negative log-likelihood on the
run's selection split (validation, or PublicTest under the kaggle protocol). PrivateTest
plays no part in the choice. T > 0 keeps the order of the classes, so every prediction and
accuracy stays as it was; only the probabilities change.

Writes a normal run folder (`model.keras` = the run's model + a `TemperatureScaling`
layer, so `evaluate --verify`, `export` and `predict` serve calibrated probabilities;
`config.json`; `metrics.json` with `calibration`: T and the ECE, negative log-likelihood
and Brier score before and after, on the selection split and PrivateTest;
`confusion_matrix.png` and `reliability.png`). Nothing is retrained.

A run written by `finetune` has no FER2013 split of its classes: its T is fitted on its
own holdout faces, rebuilt from the class folder it recorded (or `--data FOLDER`; the
files must be the ones it was fine-tuned on), and the scores before and after are
measured on those same faces, the only ones held out.

This module is the command line only; the measures, the fit and the run folder are
`fer_keras.accuracy.calibration` (`fer_keras.adapt.finetune` for a fine-tuned run).
"""

import argparse
import sys

from fer_keras.accuracy.calibration import SPLIT_TITLES, calibrate_run
from fer_keras.cli import command_prog, entry_point, run_command


def build_parser():
    parser = argparse.ArgumentParser(
        prog=command_prog("calibrate"), description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder holding model.keras and config.json")
    parser.add_argument("--output", required=True, help="run folder to write (e.g. "
                        "saved_models/RUN_calibrated)")
    parser.add_argument("--data", help="FER2013 CSV or image folder (default: $FER2013_PATH, "
                        "then the data the run recorded, then data/fer2013.csv[.gz]); for a "
                        "fine-tuned run, its class folder (default: the one it recorded)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished run already in --output")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        from fer_keras.adapt.finetune import calibrate_finetuned_run, is_finetuned_run

        command = " ".join(["python -m fer_keras.calibrate"] + sys.argv[1:])
        calibrate = calibrate_finetuned_run if is_finetuned_run(args.run) else calibrate_run
        metrics = calibrate(args.run, args.output, data=args.data, overwrite=args.overwrite,
                            command=command)
        calibration = metrics["calibration"]
        for split, before in calibration["before"].items():
            after = calibration["after"][split]
            print(f"{SPLIT_TITLES.get(split, split)}: ECE {100 * before['ece']:.2f}% -> "
                  f"{100 * after['ece']:.2f}%, NLL {before['nll']:.4f} -> "
                  f"{after['nll']:.4f}, Brier {before['brier']:.4f} -> "
                  f"{after['brier']:.4f}, accuracy "
                  f"{100 * metrics['splits'][split]['accuracy']:.2f} (unchanged)")
        print(f"T = {calibration['temperature']:.4f} (fitted on "
              f"{SPLIT_TITLES.get(calibration['selection_split'], calibration['selection_split'])}"
              f"); wrote {args.output}")

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
