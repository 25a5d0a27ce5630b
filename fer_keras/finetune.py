"""Fine-tune a trained model on a folder of labelled faces into a run folder that serves.

Usage:

    python -m fer_keras.finetune my_faces --from saved_models/fer_vgg_long \\
        --output runs/my_faces [--classes NAME[,NAME...]] [--group-by '^(\\w+?)_'] \\
        [--holdout 0.2] [--folds 5] [--detect | --no-detect] [--epochs 30] \\
        [--freeze-epochs 5] [--learning-rate 1e-3] [--scratch] [--overwrite]

DATA holds one subfolder per class (angry, disgust, fear, happy, sad, surprise, neutral,
matched case-insensitively, with synonyms such as happiness or fearful); a subset of the
base model's classes trains a head over just those. A folder of a class the base model
lacks is refused unless --classes lists it; the new head then has one output per folder
(the base classes found, in the base's order, then the --classes ones), recorded in the
run's config.json, which evaluate, export and predict read. Faces are found in images larger than
96x96 px unless --detect or --no-detect says otherwise. The head trains first with the
backbone frozen, then all layers at a tenth of the rate; --holdout chooses the epoch;
--folds adds K-fold cross-validation with the base model's zero-shot accuracy beside it
(each fold chooses its epoch on --holdout of its own training subjects, never on the
faces it is scored on); --scratch also trains the same network from fresh weights on the
same splits, to show what starting from the base is worth.

This module is the command line only; the recipe is `fer_keras.adapt.finetune`.
"""

import argparse
import sys

from fer_keras.cli import command_prog, entry_point, int_at_least, number_in, run_command


def build_parser():
    parser = argparse.ArgumentParser(
        prog=command_prog("finetune"), description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="folder with one subfolder of images per class")
    parser.add_argument("--from", dest="base", required=True,
                        help="base model: a .keras file or a run folder")
    parser.add_argument("--output", required=True, help="run folder to write")
    parser.add_argument("--classes", metavar="NAME[,NAME...]",
                        help="new classes (folder names, case-insensitive) the base model "
                        "lacks; the new head outputs them after the base classes found")
    parser.add_argument("--group-by", metavar="REGEX",
                        help="regular expression whose first group in a file name is the "
                        "subject id; a subject's images stay in one part of every split")
    parser.add_argument("--holdout", type=number_in(0.0, 1.0, low_open=True, high_open=True),
                        default=0.2, help="fraction of subjects held out to choose the epoch "
                        "(default 0.2)")
    parser.add_argument("--folds", type=int_at_least(2),
                        help="also run K-fold cross-validation and report each fold")
    detect = parser.add_mutually_exclusive_group()
    detect.add_argument("--detect", dest="detect", action="store_true", default=None,
                        help="find the face in every image")
    detect.add_argument("--no-detect", dest="detect", action="store_false",
                        help="take every image whole (already face crops)")
    parser.add_argument("--epochs", type=int_at_least(1), default=30,
                        help="epochs per training, frozen ones included (default 30)")
    parser.add_argument("--freeze-epochs", type=int_at_least(0), default=5,
                        help="epochs of the new head alone (default 5)")
    parser.add_argument("--learning-rate", type=number_in(0.0, low_open=True), default=1e-3,
                        help="the head's rate; all layers train at x0.1 (default 1e-3)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=32,
                        help="batch size (default 32)")
    parser.add_argument("--scratch", action="store_true",
                        help="also train the base's architecture from fresh weights on the "
                        "same splits and record its accuracy beside the fine-tuned one")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished run already in --output")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        from fer_keras.adapt.finetune import finetune

        metrics = finetune(
            args.data, args.base, args.output, holdout=args.holdout, folds=args.folds,
            group_by=args.group_by, detect=args.detect, epochs=args.epochs,
            freeze_epochs=args.freeze_epochs, learning_rate=args.learning_rate,
            batch_size=args.batch_size, overwrite=args.overwrite, new_classes=args.classes,
            scratch=args.scratch, command=" ".join(["python -m fer_keras.finetune"]
                             + (sys.argv[1:] if argv is None else list(argv))))
        print(f"classes: {', '.join(metrics['class_names'])}")
        scratch = metrics.get("scratch_holdout_accuracy")
        print(f"holdout: accuracy {metrics['holdout_accuracy']:.2f} (zero-shot "
              f"{metrics['zero_shot_holdout_accuracy']:.2f}"
              + (f", from scratch {scratch:.2f}" if scratch is not None else "") + ")")
        if "cross_validation" in metrics:
            folds, zero = metrics["cross_validation"], metrics["zero_shot_cross_validation"]
            line = (f"cross-validation: {folds['mean']:.2f} +- {folds['std']:.2f} (zero-shot "
                    f"{zero['mean']:.2f} +- {zero['std']:.2f}")
            if "scratch_cross_validation" in metrics:
                fresh = metrics["scratch_cross_validation"]
                line += f", from scratch {fresh['mean']:.2f} +- {fresh['std']:.2f}"
            print(line + ")")
        print(f"wrote {args.output}")

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
