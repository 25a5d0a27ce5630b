"""Score a saved model on a FER2013 split.

Usage:

    python -m fer_keras.evaluate saved_models/EXPERIMENT/model.keras [--split validation]
        [--data PATH] [--json] [--no-mirror]
    python -m fer_keras.evaluate --verify saved_models/*/model.keras
    python -m fer_keras.evaluate .../serving/1/assets.extra/model_int8.tflite
        [--split private_test] [--threads N]

Prints accuracy, macro-F1 and the per-class precision / recall table (classes in Kaggle
id order); `--json` prints the same as one JSON object instead. `--verify` scores each
model on the validation and PrivateTest splits and compares with the `metrics.json` beside
it, so anyone can check the committed results (exit status 1 if any differs by more than
0.1 points). `--no-mirror` scores a model built with test-time mirror averaging
(`MirrorAverage`) on one pass per face, to show what the averaging adds. A `.tflite` file
(float, float16 or int8, from `python -m fer_keras.export [--quantize ...]`) is run with
LiteRT (`fer_keras.litert`), so the accuracy cost of quantization is measured the same way.
"""

import argparse
import json

from fer_keras.cli import entry_point, run_command


def build_parser():
    from fer_keras.cli import int_at_least
    from fer_keras.data import SPLITS

    parser = argparse.ArgumentParser(prog="python -m fer_keras.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="+", help="a .keras file written by fer_keras.fit "
                        "(several with --verify), or a .tflite file written by "
                        "fer_keras.export (run with LiteRT)")
    parser.add_argument("--data", help="FER2013 CSV or image folder (default: $FER2013_PATH, "
                        "then data/fer2013.csv[.gz])")
    parser.add_argument("--split", default="validation", choices=SPLITS)
    parser.add_argument("--limit", type=int_at_least(1),
                        help="score only the first N images of the split")
    parser.add_argument("--batch-size", type=int_at_least(1), default=512)
    parser.add_argument("--threads", type=int_at_least(1),
                        help="LiteRT threads for a .tflite model (default: the runtime's)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--no-mirror", action="store_true",
                        help="score the network inside a MirrorAverage layer alone (one "
                        "pass per face instead of the average with its mirror)")
    parser.add_argument("--verify", action="store_true",
                        help="compare validation and PrivateTest accuracy with the "
                        "metrics.json beside each model (tolerance 0.1 points)")
    return parser


VERIFIED_SPLITS = ("validation", "private_test")
TOLERANCE_POINTS = 0.1


def verify(model_paths, data=None, batch_size=512):
    """Rescores committed models and compares with their `metrics.json`.

    Returns:
        A list of `(model, split, recorded %, measured %, agrees)` rows, `agrees` meaning
        within `TOLERANCE_POINTS`.
    """
    from pathlib import Path

    from fer_keras.data import load_splits
    from fer_keras.models import check_class_probabilities, load_model
    from fer_keras.results import evaluate_splits

    recorded = {}
    for path in map(Path, model_paths):
        metrics_path = path.with_name("metrics.json")
        if not path.is_file() or not metrics_path.is_file():
            raise ValueError(f"{path}: --verify needs the model file and the metrics.json "
                             f"that fit wrote beside it ({metrics_path}).")
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("limit"):
            raise ValueError(f"{metrics_path} comes from a --limit run; its numbers are for "
                             "a slice of the data and cannot be verified on the full splits.")
        recorded[path] = (metrics["splits"], metrics.get("protocol", "study"))
    loaded = {}
    rows = []
    for path, (scored, protocol) in recorded.items():
        # Each run is rescored under its own protocol (its "validation" is PublicTest
        # under the kaggle protocol); the data are decoded once.
        if protocol not in loaded:
            loaded[protocol] = load_splits(data, protocol=protocol)
        model = load_model(path)
        check_class_probabilities(model.output_shape, path)
        measured = evaluate_splits(model, loaded[protocol], VERIFIED_SPLITS,
                                   batch_size)
        for split in VERIFIED_SPLITS:
            before = 100 * scored[split]["accuracy"]
            now = 100 * measured[split]["accuracy"]
            rows.append((str(path), split, before, now,
                         abs(now - before) <= TOLERANCE_POINTS))
    return rows


def without_mirror(model, model_path):
    """The network inside `model`'s `MirrorAverage` layer (ValueError if it has none)."""
    from fer_keras.models import MirrorAverage

    wrapped = [layer.model for layer in model.layers if isinstance(layer, MirrorAverage)]
    if not wrapped:
        raise ValueError(f"{model_path} has no MirrorAverage layer, so it already scores "
                         "one pass per face; drop --no-mirror.")
    return wrapped[0]


def evaluate(model_path, split="validation", data=None, limit=None, batch_size=512,
             mirror=True, num_threads=None):
    """Loads a model and scores it; returns `fer_keras.results.score`'s dict.

    `mirror=False` scores the network inside a `MirrorAverage` layer alone. A `.tflite`
    file (float or quantized, from `fer_keras.export`) is run with LiteRT on
    `num_threads` threads, and the dict also gets `runtime` and `file_bytes`.
    """
    from pathlib import Path

    from fer_keras.data import load_splits
    from fer_keras.results import predict_probabilities, score

    extra = {}
    if Path(model_path).suffix == ".tflite":
        from fer_keras.litert import TFLiteClassifier

        if not mirror:
            raise ValueError(f"--no-mirror needs the Keras model: a .tflite file is one "
                             f"fixed graph. Score the run's model.keras instead. Received: "
                             f"{model_path}")
        model = TFLiteClassifier(model_path, num_threads=num_threads)
        extra = {"runtime": model.runtime, "file_bytes": Path(model_path).stat().st_size}
        images, labels = load_splits(data, limit=limit)[split]
        probabilities = model.predict(images, batch_size=min(batch_size, 256))
    else:
        from fer_keras.models import check_class_probabilities, load_model

        model = load_model(model_path)
        check_class_probabilities(model.output_shape, model_path)
        if not mirror:
            model = without_mirror(model, model_path)
        images, labels = load_splits(data, limit=limit)[split]
        probabilities = predict_probabilities(model, images, batch_size)
    metrics = score(labels, probabilities)
    metrics.update(model=str(model_path), split=split, **extra)
    return metrics


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        if args.verify:
            rows = verify(args.model, args.data, args.batch_size)
            for model, split, before, measured, agrees in rows:
                print(f"{'ok' if agrees else 'DIFFERS':<8}{model}  {split:<13} recorded "
                      f"{before:6.2f}  measured {measured:6.2f}")
            return 0 if all(row[-1] for row in rows) else 1
        if len(args.model) > 1:
            raise ValueError("Give one model (or use --verify for several).")
        metrics = evaluate(args.model[0], args.split, args.data, args.limit, args.batch_size,
                           mirror=not args.no_mirror, num_threads=args.threads)
        if args.json:
            print(json.dumps(metrics, sort_keys=True))
        else:
            from fer_keras.results import format_report

            how = ", one pass per face (--no-mirror)" if args.no_mirror else ""
            if "runtime" in metrics:
                how += f", {metrics['runtime']}, {metrics['file_bytes']:,} bytes"
            print(format_report(metrics, title=f"{args.model[0]} on {args.split}{how}"))

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
