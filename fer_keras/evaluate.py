"""Score a saved model on a FER2013 split.

Usage:

    python -m fer_keras.evaluate saved_models/EXPERIMENT/model.keras [--split validation]
        [--data PATH] [--json]

Prints accuracy, macro-F1 and the per-class precision / recall table (classes in Kaggle
id order); `--json` prints the same as one JSON object instead.
"""

import argparse
import json

from fer_keras.cli import entry_point, run_command


def build_parser():
    from fer_keras.data import SPLITS

    parser = argparse.ArgumentParser(prog="python -m fer_keras.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a .keras file written by fer_keras.fit")
    parser.add_argument("--data", help="FER2013 CSV or image folder (default: $FER2013_PATH, "
                        "then data/fer2013.csv[.gz])")
    parser.add_argument("--split", default="validation", choices=SPLITS)
    parser.add_argument("--limit", type=int, help="score only the first N images of the split")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def evaluate(model_path, split="validation", data=None, limit=None, batch_size=512):
    """Loads a model and scores it; returns `fer_keras.results.score`'s dict."""
    from fer_keras.data import load_splits
    from fer_keras.models import load_model
    from fer_keras.results import predict_probabilities, score

    model = load_model(model_path)
    images, labels = load_splits(data, limit=limit)[split]
    metrics = score(labels, predict_probabilities(model, images, batch_size))
    metrics.update(model=str(model_path), split=split)
    return metrics


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        metrics = evaluate(args.model, args.split, args.data, args.limit, args.batch_size)
        if args.json:
            print(json.dumps(metrics, sort_keys=True))
        else:
            from fer_keras.results import format_report

            print(format_report(metrics, title=f"{args.model} on {args.split}"))

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
