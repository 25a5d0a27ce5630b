"""Average the probabilities of several committed runs in one Keras model.

Usage:

    python -m fer_keras.ensemble saved_models/fer_vgg_long saved_models/fer_vgg \\
        --output saved_models/ensemble_vgg [--data PATH] [--overwrite]
    python -m fer_keras.ensemble RUN RUN RUN ... --select --output saved_models/NAME

Each RUN is a run folder (or its `model.keras`). The ensemble is an ordinary Keras model
(one input, the members side by side, a mean of their probabilities), so `evaluate
--verify`, `export` and `predict` take it like any other. The output folder is a normal run
folder: `model.keras`, `config.json` (members and the command), `metrics.json` (every
split, the members' own scores, the forward passes per face) and `confusion_matrix.png`.
Nothing is trained, so rerunning the command rebuilds the same model.

With `--select`, the RUNs are candidates: each is predicted once on the selection split,
every subset of two or more is scored there from the mean of its members' probabilities, and
the most accurate subset (the smallest on a tie) becomes the ensemble. The test split plays
no part in the choice; `metrics.json` records the candidates and the best subsets.

Protocol: when every member used the study protocol, the ensemble is scored as they were
(validation split cut from Training). When any member trained on all of Training (kaggle
protocol), the study's validation rows are no longer unseen, so the ensemble uses the
kaggle protocol: it is "selected" on PublicTest and PrivateTest is the clean figure.

This module is the command line only; building, scoring and writing the ensemble is
`fer_keras.accuracy.ensemble`.
"""

import argparse
import sys

from fer_keras.accuracy.ensemble import MAX_CANDIDATES, make_ensemble
from fer_keras.cli import command_prog, entry_point, run_command


def build_parser():
    parser = argparse.ArgumentParser(
        prog=command_prog("ensemble"), description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="run folders (or model.keras files) to average; at least two")
    parser.add_argument("--output", required=True,
                        help="run folder to write, e.g. saved_models/ensemble_vgg")
    parser.add_argument("--data", help="FER2013 CSV or image folder (default "
                        "$FER2013_PATH, then data/fer2013.csv[.gz])")
    parser.add_argument("--select", action="store_true",
                        help="treat the RUNs as candidates and keep the subset (two or more) "
                             "most accurate on the selection split (PublicTest under the "
                             "kaggle protocol); at most %d candidates" % MAX_CANDIDATES)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished ensemble already in --output")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        metrics = make_ensemble(
            args.runs, args.output, data=args.data, overwrite=args.overwrite,
            select=args.select,
            command=" ".join(["python -m fer_keras.ensemble"] + sys.argv[1:]))
        selection = metrics.get("member_selection")
        if selection:
            print(f"selected {len(metrics['members'])} of {len(selection['candidates'])} "
                  f"candidates on {selection['split']} ({selection['subsets_scored']} subsets "
                  f"scored)")
        for member, scores in metrics["member_accuracy"].items():
            print(f"member {member}: PublicTest {100 * scores['public_test']:.2f}, "
                  f"PrivateTest {100 * scores['private_test']:.2f}")
        splits = metrics["splits"]
        print(f"ensemble of {len(metrics['members'])} ({metrics['protocol']} protocol, "
              f"{metrics['forward_passes_per_face']} forward passes per face): PublicTest "
              f"{100 * splits['public_test']['accuracy']:.2f}, PrivateTest "
              f"{100 * splits['private_test']['accuracy']:.2f}; wrote {args.output}")

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
