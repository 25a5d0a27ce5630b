"""Distil committed runs into one student: a normal run trained on the teachers' soft targets.

Usage:

    python -m fer_keras.distill TEACHER [TEACHER ...] --experiment STUDENT --output DIR
        [--temperature X] [--weight X] [--data PATH] [--epochs N] [--seed N]
        [--precision float32|mixed_bfloat16] [--mixing mixup|cutmix|both] [--limit N]
        [--overwrite]

The teachers (run folders: single nets, test-time-view runs, ensembles) predict every
training face once; their averaged probabilities, softened by `--temperature` (default
2.0), are mixed with the hard labels, `--weight` (default 0.7) being the teachers' share,
and the student experiment is trained on those targets under its own recipe and protocol
(the teachers' must match). The student is a normal run folder (`fit`'s outputs, resumable
the same way); its `config.json` records the teachers, their model fingerprints, the
temperature and the weight. The same run is `python -m fer_keras.fit STUDENT --teachers
TEACHER ... --output-dir DIR`; the library is `fer_keras.training.distill`.

Example:

    python -m fer_keras.distill saved_models/ensemble_long3_ten \\
        --experiment fer_vgg_kaggle_tuned --output saved_models/fer_vgg_distilled
"""

import argparse

from fer_keras.cli import (
    add_mixing_flags,
    command_prog,
    entry_point,
    int_at_least,
    number_in,
    run_command,
)
from fer_keras.training.experiments import MIXINGS, PRECISIONS, list_experiments
from fer_keras.training.loop import train


def build_parser():
    parser = argparse.ArgumentParser(
        prog=command_prog("distill"), description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teachers", nargs="+", metavar="TEACHER",
                        help="run folders (or their model.keras) to learn from")
    parser.add_argument("--experiment", required=True, choices=list_experiments(),
                        metavar="STUDENT", help="the student's experiment (its network and "
                        "recipe)")
    parser.add_argument("--output", required=True, help="the student's run folder")
    parser.add_argument("--temperature", type=number_in(0, low_open=True),
                        help="softens the teachers' probabilities (default 2.0)")
    parser.add_argument("--weight", type=number_in(0, 1),
                        help="the teachers' share of the target, the rest the label "
                        "(default 0.7)")
    add_mixing_flags(parser, MIXINGS)
    parser.add_argument("--data", help="FER2013 CSV (default: $FER2013_PATH, then "
                        "data/fer2013.csv[.gz])")
    parser.add_argument("--epochs", type=int_at_least(1))
    parser.add_argument("--precision", choices=list(PRECISIONS))
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--limit", type=int_at_least(1),
                        help="use at most N rows of each split (quick checks)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished run in --output")
    parser.add_argument("--verbose", type=int, choices=[0, 1, 2])
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    overrides = {"teachers": args.teachers, "distill_temperature": args.temperature,
                 "distill_weight": args.weight, "epochs": args.epochs,
                 "precision": args.precision, "mixing": args.mixing,
                 "mixing_alpha": args.mixing_alpha}

    def body():
        train(args.experiment, data=args.data, output_dir=args.output, seed=args.seed,
              limit=args.limit, overrides=overrides, overwrite=args.overwrite,
              verbose="auto" if args.verbose is None else args.verbose)

    from fer_keras.training.recipe import TrainingDiverged  # Keras: not for `--help`

    return run_command(body, failures=(TrainingDiverged,))


if __name__ == "__main__":
    entry_point(main)
