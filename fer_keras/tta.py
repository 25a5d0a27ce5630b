"""Measure what test-time augmentation buys: accuracy per view set against its serving cost.

Usage:

    python -m fer_keras.tta saved_models/fer_vgg_long [RUN ...] \\
        [--views identity mirror shifts ten] [--data PATH] [--save saved_models/tta.json]

For every run it scores the bare network ("identity", one pass per face) and the same
weights wrapped in `TestTimeAugmentation` with each view set (see
`fer_keras.models.layers.VIEW_SETS`), on the run's selection split (validation, or
PublicTest under the kaggle protocol) and on PrivateTest, and prints the forward passes per
face beside each. Nothing is retrained. `--save` writes the table as JSON, which
`python -m fer_keras.report` shows; an existing file is merged run by run, so measuring a
new run keeps the others.

With `--output DIR` (one run, one view set) the wrapped model is also written as a run
folder of its own, like `ensemble` and `rebalance` write theirs: `model.keras` (the same
weights inside a `TestTimeAugmentation` layer, so `evaluate --verify`, `export` and
`predict` serve it with its views), `metrics.json` (every split, the forward passes per
face), `config.json` (the source run and the command) and `confusion_matrix.png`:

    python -m fer_keras.tta saved_models/fer_vgg_kaggle --views ten \\
        --output saved_models/fer_vgg_kaggle_ten

This module is the command line only; scoring and writing are `fer_keras.accuracy.tta`.
"""

import argparse
import sys
from pathlib import Path

from fer_keras.accuracy.tta import (
    DEFAULT_VIEWS,
    check_runs,
    measure,
    merge_table,
    write_wrapped_run,
)
from fer_keras.cli import command_prog, entry_point, run_command
from fer_keras.data.sources import resolve_data_path


def build_parser():
    parser = argparse.ArgumentParser(
        prog=command_prog("tta"), description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders holding model.keras")
    parser.add_argument("--views", nargs="+", default=list(DEFAULT_VIEWS),
                        help="view sets (identity, mirror, shifts, ten) or 'a|b|c' lists of "
                        "views such as 'identity|shift:2,0'")
    parser.add_argument("--data", help="FER2013 CSV or image folder")
    parser.add_argument("--save", help="write/merge the results into this JSON file")
    parser.add_argument("--output", help="with one RUN and one view set: write the wrapped "
                        "model as a run folder here (e.g. saved_models/RUN_ten)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished run folder already in --output")
    return parser


def print_measurement(run, view_set, result):
    print(f"{run.name:>24} {view_set:>10}: {result['forward_passes_per_face']:>2} "
          f"passes/face, selection {100 * result['selection_accuracy']:.2f}, "
          f"PrivateTest {100 * result['private_test_accuracy']:.2f}", flush=True)


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        if args.output and (len(args.runs) != 1 or len(args.views) != 1):
            raise ValueError(f"--output writes one run folder: give one RUN and one view set "
                             f"(e.g. --views ten). Received: {len(args.runs)} run(s), views "
                             f"{args.views}")
        check_runs(args.runs, args.views)
        data = resolve_data_path(args.data)
        if args.output:
            metrics = write_wrapped_run(
                args.runs[0], args.views[0], args.output, data, args.overwrite,
                command=" ".join(["python -m fer_keras.tta"] + sys.argv[1:]))
            splits = metrics["splits"]
            print(f"{Path(args.runs[0]).name} with views {args.views[0]} "
                  f"({metrics['forward_passes_per_face']} passes per face): selection "
                  f"{100 * splits['validation']['accuracy']:.2f}, PrivateTest "
                  f"{100 * splits['private_test']['accuracy']:.2f}; wrote {args.output}")
            return
        splits_by_protocol = {}
        table = {Path(run).name: measure(run, args.views, splits_by_protocol, data,
                                         progress=print_measurement)
                 for run in args.runs}
        if args.save:
            print(f"wrote {merge_table(args.save, table)}", file=sys.stderr)

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
