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
"""

import argparse
import json
import sys
from pathlib import Path

from fer_keras.cli import entry_point, run_command

DEFAULT_VIEWS = ("identity", "mirror", "shifts", "ten")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m fer_keras.tta", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders holding model.keras")
    parser.add_argument("--views", nargs="+", default=list(DEFAULT_VIEWS),
                        help="view sets (identity, mirror, shifts, ten) or 'a|b|c' lists of "
                        "views such as 'identity|shift:2,0'")
    parser.add_argument("--data", help="FER2013 CSV or image folder")
    parser.add_argument("--save", help="write/merge the results into this JSON file")
    return parser


def measure(run, view_sets, splits_by_protocol, data=None):
    """Scores one run under each view set; returns `{view_set: {...}}`."""
    from fer_keras.data import load_splits
    from fer_keras.models import load_model
    from fer_keras.models.layers import forward_passes, wrap_with_views
    from fer_keras.results import evaluate_splits

    run = Path(run)
    model_path = run / "model.keras"
    config_path = run / "config.json"
    protocol = json.loads(config_path.read_text()).get("protocol", "study") \
        if config_path.exists() else "study"
    if protocol not in splits_by_protocol:
        splits_by_protocol[protocol] = load_splits(data, protocol=protocol)
    splits = splits_by_protocol[protocol]
    model = load_model(model_path)
    results = {}
    for view_set in view_sets:
        wrapped = wrap_with_views(model, view_set)
        scored = evaluate_splits(wrapped, splits, ["validation", "private_test"])
        results[view_set] = {
            "forward_passes_per_face": forward_passes(wrapped),
            "selection_accuracy": scored["validation"]["accuracy"],
            "private_test_accuracy": scored["private_test"]["accuracy"],
            "private_test_macro_f1": scored["private_test"]["macro_f1"],
        }
        print(f"{run.name:>24} {view_set:>10}: {results[view_set]['forward_passes_per_face']:>2} "
              f"passes/face, selection {100 * results[view_set]['selection_accuracy']:.2f}, "
              f"PrivateTest {100 * results[view_set]['private_test_accuracy']:.2f}", flush=True)
    return {"protocol": protocol, "views": results}


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        from fer_keras.data import resolve_data_path
        from fer_keras.models.layers import resolve_views

        for view_set in args.views:
            resolve_views(view_set)
        for run in args.runs:
            if not (Path(run) / "model.keras").exists():
                raise ValueError(f"{run} holds no model.keras; give run folders written by "
                                 "`python -m fer_keras.fit`.")
        data = resolve_data_path(args.data)
        splits_by_protocol = {}
        table = {Path(run).name: measure(run, args.views, splits_by_protocol, data)
                 for run in args.runs}
        if args.save:
            path = Path(args.save)
            stored = json.loads(path.read_text()) if path.exists() else {}
            stored.update(table)
            stored = {name: stored[name] for name in sorted(stored)}
            partial = path.with_suffix(".tmp")
            partial.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
            partial.replace(path)
            print(f"wrote {path}", file=sys.stderr)

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
