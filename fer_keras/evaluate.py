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
LiteRT (`fer_keras.serving.litert`), so the accuracy cost of quantization is measured the same way.
"""

import argparse
import json

from fer_keras.cli import command_prog, entry_point, run_command


def build_parser():
    from fer_keras.cli import int_at_least
    from fer_keras.data.sources import SPLITS

    parser = argparse.ArgumentParser(prog=command_prog("evaluate"),
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
USAGE_OF_SPLIT = {"train": "Training", "validation": "Training", "public_test": "PublicTest",
                  "private_test": "PrivateTest"}
"""The FER2013 `Usage` whose rows make up each split (under the study protocol)."""


def split_of(splits, split, data=None):
    """`(images, labels)` of one split of a `load_splits` dict, refusing an empty one.

    Raises:
        ValueError: naming the source and the `Usage` values it does hold, when the split
            has no rows (a CSV of Training rows alone has no private_test).
    """
    images, labels = splits[split]
    if len(labels):
        return images, labels
    import numpy as np

    from fer_keras.data.sources import load_fer2013, resolve_data_path

    path = resolve_data_path(data)
    # Only on this error path: the source is decoded again (from its cache) to say what
    # it holds.
    names, counts = np.unique(load_fer2013(path)[2], return_counts=True)
    held = ", ".join(f"{name} ({count:,} rows)" for name, count in zip(names, counts))
    raise ValueError(f"The split {split} is empty in {path} (it holds only: "
                     f"{held or 'no rows'}); {split} is read from its "
                     f"{USAGE_OF_SPLIT[split]} rows. Pass --data with a FER2013 file that has "
                     f"{USAGE_OF_SPLIT[split]} rows, or another --split.")


def recorded_accuracies(metrics_path, splits):
    """The metrics.json of a run and the accuracy it records for each of `splits`.

    Returns:
        `(metrics, {split: accuracy})`.

    Raises:
        ValueError: naming the file and the missing key, for a file that is not JSON, not
            an object, or lacks `splits.SPLIT.accuracy` for one of `splits`.
    """
    from pathlib import Path

    fix = ("Pass a run folder written by `python -m fer_keras.fit`, whose metrics.json "
           "records splits.SPLIT.accuracy")
    try:
        metrics = json.loads(Path(metrics_path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{metrics_path} cannot be read as JSON ({error}). {fix}.") from None
    recorded = metrics.get("splits") if isinstance(metrics, dict) else None
    if not isinstance(recorded, dict):
        raise ValueError(f"{metrics_path} lacks the key 'splits' (the scores fit records). "
                         f"{fix}. Received: {json.dumps(metrics)[:200]}")
    accuracies = {}
    for split in splits:
        if split not in recorded:
            raise ValueError(f"{metrics_path} lacks the key 'splits.{split}': it has no {split} "
                             f"score to compare with. Pass a --split among "
                             f"{', '.join(recorded) or 'none'}, or a run that scored {split}. "
                             f"Received: split={split!r}")
        entry = recorded[split]
        accuracy = entry.get("accuracy") if isinstance(entry, dict) else None
        if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)):
            raise ValueError(f"{metrics_path} lacks the key 'splits.{split}.accuracy' (a "
                             f"number). {fix}. Received: {entry!r:.200}")
        accuracies[split] = float(accuracy)
    return metrics, accuracies


def verify(model_paths, data=None, batch_size=512):
    """Rescores committed models and compares with their `metrics.json`.

    Returns:
        A list of `(model, split, recorded %, measured %, agrees)` rows, `agrees` meaning
        within `TOLERANCE_POINTS`.
    """
    from pathlib import Path

    from fer_keras.data.sources import load_splits
    from fer_keras.serving.checks import check_keras_model
    from fer_keras.models import load_model
    from fer_keras.training.results import evaluate_splits

    recorded = {}
    for path in map(Path, model_paths):
        metrics_path = path.with_name("metrics.json")
        if not path.is_file() or not metrics_path.is_file():
            raise ValueError(f"{path}: --verify needs the model file and the metrics.json "
                             f"that fit wrote beside it ({metrics_path}).")
        metrics, accuracies = recorded_accuracies(metrics_path, VERIFIED_SPLITS)
        if metrics.get("limit"):
            raise ValueError(f"{metrics_path} comes from a --limit run; its numbers are for "
                             "a slice of the data and cannot be verified on the full splits.")
        recorded[path] = (accuracies, metrics.get("protocol", "study"))
    loaded = {}
    rows = []
    for path, (scored, protocol) in recorded.items():
        # Each run is rescored under its own protocol (its "validation" is PublicTest
        # under the kaggle protocol); the data are decoded once.
        if protocol not in loaded:
            loaded[protocol] = load_splits(data, protocol=protocol)
            for split in VERIFIED_SPLITS:
                split_of(loaded[protocol], split, data)
        model = load_model(path)
        check_keras_model(model, path, "evaluate")
        measured = evaluate_splits(model, loaded[protocol], VERIFIED_SPLITS,
                                   batch_size)
        for split in VERIFIED_SPLITS:
            before = 100 * scored[split]
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
    """Loads a model and scores it; returns `fer_keras.training.results.score`'s dict.

    `mirror=False` scores the network inside a `MirrorAverage` layer alone. A `.tflite`
    file (float or quantized, from `fer_keras.export`) is run with LiteRT on
    `num_threads` threads, and the dict also gets `runtime` and `file_bytes`.
    """
    from pathlib import Path

    from fer_keras.data.sources import load_splits
    from fer_keras.training.results import predict_probabilities, score

    extra = {}
    if Path(model_path).suffix == ".tflite":
        from fer_keras.serving.litert import TFLiteClassifier

        if not mirror:
            raise ValueError(f"--no-mirror needs the Keras model: a .tflite file is one "
                             f"fixed graph. Score the run's model.keras instead. Received: "
                             f"{model_path}")
        from fer_keras.serving.checks import check_takes_faces

        model = TFLiteClassifier(model_path, num_threads=num_threads)
        check_takes_faces(model.input_shape, model_path)
        extra = {"runtime": model.runtime, "file_bytes": Path(model_path).stat().st_size}
        images, labels = split_of(load_splits(data, limit=limit), split, data)
        probabilities = model.predict(images, batch_size=min(batch_size, 256))
    else:
        from fer_keras.serving.checks import check_keras_model
        from fer_keras.models import load_model

        model = load_model(model_path)
        check_keras_model(model, model_path, "evaluate")
        if not mirror:
            model = without_mirror(model, model_path)
        images, labels = split_of(load_splits(data, limit=limit), split, data)
        probabilities = predict_probabilities(model, images, batch_size)
    metrics = score(labels, probabilities)
    metrics.update(model=str(model_path), split=split, **extra)
    return metrics


def data_for(model_path, data=None):
    """The data to score `model_path` on: `data` (`--data`), else `$FER2013_PATH`, else the
    file the model's run folder recorded in its `config.json` (so `evaluate RUN/model.keras`
    right after `fit --data PATH` needs no flag), else the defaults; see
    `fer_keras.data.sources.resolve_data_path`. Says on stderr when the run's record chose it."""
    import os
    import sys
    from pathlib import Path

    from fer_keras.data.sources import resolve_data_path

    if data is not None or os.environ.get("FER2013_PATH"):
        return data
    config_path = Path(model_path).with_name("config.json")
    recorded = None
    try:
        config = json.loads(config_path.read_text())
        if isinstance(config, dict) and isinstance(config.get("data_path"), str):
            recorded = config["data_path"]
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    path = resolve_data_path(None, recorded=None if recorded is None else
                             (str(config_path), recorded))
    if recorded is not None and path == Path(recorded):
        print(f"Scoring on {path}, the data {config_path} records (pass --data for other "
              f"data).", file=sys.stderr)
    return path


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        args.data = data_for(args.model[0], args.data)
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
            from fer_keras.training.results import format_report

            how = ", one pass per face (--no-mirror)" if args.no_mirror else ""
            if "runtime" in metrics:
                how += f", {metrics['runtime']}, {metrics['file_bytes']:,} bytes"
            print(format_report(metrics, title=f"{args.model[0]} on {args.split}{how}"))

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
