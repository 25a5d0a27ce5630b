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
"""

import argparse
import json
import sys
from pathlib import Path

from fer_keras.cli import command_prog, entry_point, run_command

DEFAULT_VIEWS = ("identity", "mirror", "shifts", "ten")


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


def write_wrapped_run(run, view_set, output, data=None, overwrite=False):
    """Writes `run`'s network wrapped with `view_set` as the run folder `output`.

    Returns:
        The new run's metrics dict (model "tta", its `source`, `views`, the source's
        protocol, precision, epochs and minutes, and every split scored with the views).
    """
    from fer_keras.data.sources import load_splits
    from fer_keras.training.run_folder import refuse_finished_run, write_run_folder
    from fer_keras.models import load_model
    from fer_keras.models.layers import forward_passes, resolve_views, wrap_with_views
    from fer_keras.training.results import evaluate_splits, save_derived_run, source_run

    run, output = Path(run), Path(output)
    refuse_finished_run(output, overwrite)
    views = resolve_views(view_set)
    source_config, inherited = source_run(run)
    protocol = inherited["protocol"]
    splits = load_splits(data, protocol=protocol)
    wrapped = wrap_with_views(load_model(run / "model.keras"), views)
    # Not the training split: ten passes over 28,709 faces cost minutes and say nothing
    # the source run's own Train column does not.
    scored = evaluate_splits(wrapped, splits, ["validation", "public_test", "private_test"])
    metrics = {
        "experiment": output.name,
        "model": "tta",
        "source": str(run),
        "view_set": view_set,
        "views": list(views),
        "forward_passes_per_face": forward_passes(wrapped),
        "parameters": int(wrapped.count_params()),
        **inherited,
        "splits": scored,
    }
    config = {"experiment": output.name, "model": "tta", "source": str(run),
              "source_experiment": source_config.get("experiment"), "view_set": view_set,
              "views": list(views), "protocol": protocol, "data_path": str(data),
              "command": " ".join(["python -m fer_keras.tta"] + sys.argv[1:])}

    write_run_folder(output, lambda folder: save_derived_run(
        folder, wrapped, config, metrics, "private_test", f"{output.name}: PrivateTest"),
        overwrite)
    return metrics


def measure(run, view_sets, splits_by_protocol, data=None):
    """Scores one run under each view set; returns `{view_set: {...}}`."""
    from fer_keras.data.sources import load_splits
    from fer_keras.models import load_model
    from fer_keras.models.layers import forward_passes, wrap_with_views
    from fer_keras.training.results import evaluate_splits

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
        from fer_keras.data.sources import resolve_data_path
        from fer_keras.models.layers import resolve_views

        if args.output and (len(args.runs) != 1 or len(args.views) != 1):
            raise ValueError(f"--output writes one run folder: give one RUN and one view set "
                             f"(e.g. --views ten). Received: {len(args.runs)} run(s), views "
                             f"{args.views}")
        for view_set in args.views:
            resolve_views(view_set)
        for run in args.runs:
            if not (Path(run) / "model.keras").exists():
                raise ValueError(f"{run} holds no model.keras; give run folders written by "
                                 "`python -m fer_keras.fit`.")
        data = resolve_data_path(args.data)
        if args.output:
            metrics = write_wrapped_run(args.runs[0], args.views[0], args.output, data,
                                        args.overwrite)
            splits = metrics["splits"]
            print(f"{Path(args.runs[0]).name} with views {args.views[0]} "
                  f"({metrics['forward_passes_per_face']} passes per face): selection "
                  f"{100 * splits['validation']['accuracy']:.2f}, PrivateTest "
                  f"{100 * splits['private_test']['accuracy']:.2f}; wrote {args.output}")
            return
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
