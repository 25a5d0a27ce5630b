"""Train one named experiment on FER2013.

Usage:

    python -m fer_keras.fit baseline_deep_dropout [--data PATH] [--epochs N]
        [--batch-size N] [--learning-rate X] [--weight-decay X] [--dropout-rate X]
        [--labels fer2013|ferplus] [--label-mode majority|probability] [--labels-file F]
        [--mixing mixup|cutmix|both] [--mixing-alpha X]
        [--teachers RUN ...] [--distill-temperature X] [--distill-weight X] [--calibrate]
        [--hparams BEST.json] [--output-dir DIR] [--overwrite] [--seed N]
        [--distribute mirrored|multi-worker] [--stream]

The run folder is `saved_models/EXPERIMENT/` (or `--output-dir DIR`). A finished run there
holds `model.keras` (best epoch by validation accuracy), `history.csv`, `config.json`,
`metrics.json`, `learning_curves.png` and `confusion_matrix.png`.

A finished run (one with `metrics.json`) is never replaced by accident: fit into its folder
stops with exit status 2 unless `--overwrite` is given. Every run trains in a staging
folder beside the run folder, `DIR.partial/`, and moves into `DIR` only once all its outputs
are written, so a crash or a bad flag leaves a finished run as it was; with `--overwrite`
the old run stays in `DIR` until the new one is complete.

The staging folder is also the resume state: `backup/` (Keras `BackupAndRestore`: weights
and optimizer after the last finished epoch), `history.csv` and `config.json` (the settings
and a fingerprint of the data). Run the same command again to resume a killed run from its
last finished epoch; one killed after its last epoch only writes its outputs. Resuming with
other settings or other data (`--data`, `--limit`, `--skip-bad-rows`) is refused. One fit
at a time may use a run folder: a second one exits with status 2 (the lock is the file
`.DIR.lock` beside it, released when the first ends, even by a crash).

The same command trains on any Keras backend (`KERAS_BACKEND=tensorflow|jax|torch`); on JAX
and PyTorch the input pipeline is NumPy (`fer_keras.data.pipeline`), so TensorFlow need not be
installed. `--distribute mirrored` trains on every GPU of the machine and
`--distribute multi-worker` on several machines (`fer_keras.training.distribute`; `--batch-size` is
the global batch, split across replicas; only the chief writes the run folder).
`--stream` reads an image folder from disk a batch at a time instead of decoding it all
first, for folders larger than memory.

`--mixing` trains on mixup or CutMix batches (`fer_keras.data.mixing`); `--teachers`
distils the given runs into this one (`fer_keras.training.distill`; `python -m
fer_keras.distill` is the same with the teachers first).

On a terminal Keras shows a progress bar within each epoch; in a log there is a line per
epoch, plus one every `--progress-seconds` within it (steps, images/s, time left).
"""

import argparse

# None of these imports Keras, so `fit --help` answers at once.
from fer_keras.cli import (
    add_mixing_flags,
    command_prog,
    entry_point,
    int_at_least,
    number_in,
    run_command,
)
from fer_keras.data.protocols import PROTOCOLS
from fer_keras.training.distribute import DISTRIBUTIONS
from fer_keras.training.experiments import (
    LABEL_MODES,
    LABEL_SETS,
    MIXINGS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    list_experiments,
)
from fer_keras.training.loop import DEFAULT_ROOT, train
from fer_keras.training.run_folder import refuse_finished_run, run_folder_path
from fer_keras.training.settings import load_hparams


def build_parser():
    # The docstring's paragraphs on run folders, resuming and progress, without its usage.
    details = __doc__[__doc__.index("The run folder"):]
    parser = argparse.ArgumentParser(
        prog=command_prog("fit"), description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=details + "\nExperiments: " + ", ".join(list_experiments()))
    parser.add_argument("experiment", help="experiment name (see below)")
    parser.add_argument("--data", help="FER2013 CSV (.csv/.csv.gz) or image folder; default "
                        "$FER2013_PATH, then data/fer2013.csv[.gz]")
    parser.add_argument("--epochs", type=int_at_least(1))
    parser.add_argument("--batch-size", type=int_at_least(1))
    parser.add_argument("--learning-rate", type=number_in(0, low_open=True))
    parser.add_argument("--weight-decay", type=number_in(0))
    parser.add_argument("--dropout-rate", type=number_in(0, 1, high_open=True))
    parser.add_argument("--label-smoothing", type=number_in(0, 1, high_open=True))
    parser.add_argument("--class-weight", choices=["none", "balanced"])
    parser.add_argument("--optimizer", choices=list(OPTIMIZERS))
    parser.add_argument("--schedule", choices=list(SCHEDULES),
                        help="learning-rate schedule; cosine decays to zero over --epochs")
    parser.add_argument("--warmup-epochs", type=int_at_least(0),
                        help="linear warm-up before the cosine decay")
    parser.add_argument("--precision", choices=list(PRECISIONS),
                        help="training dtype policy; mixed_bfloat16 trains about 2x faster on "
                        "CPUs with AVX512-BF16 (evaluation and export run in float32)")
    parser.add_argument("--protocol", choices=list(PROTOCOLS),
                        help="study: train on 80%% of Training, select on the other 20%%; "
                        "kaggle: train on all of Training, select on PublicTest")
    parser.add_argument("--labels", choices=list(LABEL_SETS),
                        help="the labels to learn: fer2013 (one label per face, the CSV's) "
                        "or ferplus (FER+'s crowd votes, 8 classes with contempt; needs "
                        "--label-mode and the kaggle protocol)")
    parser.add_argument("--label-mode", choices=list(LABEL_MODES),
                        help="FER+ targets: majority (faces most voters agree on, one label "
                        "each) or probability (each face's vote distribution); validation "
                        "and test faces always use the majority rule")
    parser.add_argument("--labels-file", help="FER+ votes file (fer2013new.csv); default "
                        "$FERPLUS_PATH, then fer2013new.csv beside --data")
    add_mixing_flags(parser, MIXINGS)
    parser.add_argument("--teachers", nargs="+", metavar="RUN",
                        help="distil these run folders (their averaged, softened "
                        "probabilities mixed with the labels) into this run")
    parser.add_argument("--distill-temperature", type=number_in(0, low_open=True),
                        help="temperature that softens the teachers' probabilities "
                        "(default 2.0 with --teachers)")
    parser.add_argument("--distill-weight", type=number_in(0, 1),
                        help="share of the teachers' soft targets in the target, the rest "
                        "the label (default 0.7 with --teachers)")
    parser.add_argument("--calibrate", action="store_true",
                        help="after training, fit a temperature on the selection split and "
                        "write the calibrated model as the run folder DIR_calibrated "
                        "(python -m fer_keras.calibrate)")
    parser.add_argument("--hparams", help="JSON of hyperparameters (e.g. the tuner's "
                        "best_hparams.json); explicit flags win over it")
    parser.add_argument("--output-dir", help="default saved_models/EXPERIMENT")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished run in the output folder (it is kept "
                        "until the new run is complete)")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--limit", type=int_at_least(1), help="use at most N rows of each "
                        "split (quick checks; results are not comparable)")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="drop malformed CSV rows / unreadable images (a summary is "
                        "printed) instead of stopping at the first one")
    parser.add_argument("--distribute", choices=list(DISTRIBUTIONS), default="none",
                        help="mirrored: every GPU of this machine (tf.distribute."
                        "MirroredStrategy, or JAX DataParallel); multi-worker: several "
                        "machines (TensorFlow's MultiWorkerMirroredStrategy from TF_CONFIG); "
                        "--batch-size is the global batch")
    parser.add_argument("--cpu-devices", type=int_at_least(2),
                        help="split the CPU into N logical devices (runs --distribute "
                        "mirrored on a machine without GPUs, for tests)")
    parser.add_argument("--stream", action="store_true",
                        help="with an image folder as --data: list the files once and "
                        "decode them a batch at a time (folders larger than memory)")
    parser.add_argument("--verbose", type=int, choices=[0, 1, 2],
                        help="Keras verbosity; default: progress bar on a terminal, one "
                        "line per epoch otherwise")
    parser.add_argument("--progress-seconds", type=number_in(0, low_open=True), default=60.0,
                        help="when not on a terminal, a progress line within an epoch every "
                        "this many seconds (default 60)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    overrides = {
        "epochs": args.epochs, "batch_size": args.batch_size,
        "learning_rate": args.learning_rate, "weight_decay": args.weight_decay,
        "dropout_rate": args.dropout_rate, "label_smoothing": args.label_smoothing,
        "class_weight": args.class_weight, "optimizer": args.optimizer,
        "schedule": args.schedule, "warmup_epochs": args.warmup_epochs,
        "precision": args.precision, "protocol": args.protocol, "labels": args.labels,
        "label_mode": args.label_mode, "mixing": args.mixing,
        "mixing_alpha": args.mixing_alpha, "teachers": args.teachers,
        "distill_temperature": args.distill_temperature,
        "distill_weight": args.distill_weight,
    }

    def body():
        hparams = load_hparams(args.hparams) if args.hparams else None
        run = run_folder_path(args.output_dir or DEFAULT_ROOT / args.experiment)
        output = run.with_name(f"{run.name}_calibrated")
        if args.calibrate:
            refuse_finished_run(output, args.overwrite)  # Before hours of training.
        metrics = train(args.experiment, data=args.data, output_dir=args.output_dir, seed=args.seed,
              limit=args.limit, overrides=overrides, hparams=hparams,
              verbose="auto" if args.verbose is None else args.verbose,
              skip_bad_rows=args.skip_bad_rows, overwrite=args.overwrite,
              progress_seconds=args.progress_seconds, distribute=args.distribute,
              cpu_devices=args.cpu_devices, stream=args.stream, labels_file=args.labels_file)
        if args.calibrate and metrics is not None:
            # The accuracy layer sits above training: the command joins the two.
            from fer_keras.accuracy.calibration import calibrate_run

            calibrate_run(run, output, data=args.data, overwrite=args.overwrite,
                          command=" ".join(["python -m fer_keras.calibrate", str(run),
                                            "--output", str(output)]))
            print(f"Wrote the calibrated model to {output}")

    from fer_keras.training.recipe import TrainingDiverged  # Keras: not for `fit --help`

    # train() prints how to resume on Ctrl-C itself.
    return run_command(body, failures=(TrainingDiverged,))


if __name__ == "__main__":
    entry_point(main)
