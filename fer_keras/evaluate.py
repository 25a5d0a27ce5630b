"""Score a saved model on a FER2013 split.

Usage:

    python -m fer_keras.evaluate saved_models/EXPERIMENT/model.keras [--split validation]
        [--data PATH] [--json] [--no-mirror]
    python -m fer_keras.evaluate --verify saved_models/*/model.keras
    python -m fer_keras.evaluate .../serving/1/assets.extra/model_int8.tflite
        [--split private_test] [--threads N]
    python -m fer_keras.evaluate saved_models/*/model.keras --labels ferplus \
        --split private_test [--labels-file fer2013new.csv] [--save FILE.json]
    python -m fer_keras.evaluate saved_models/*/model.keras --split private_test --unseen \
        [--save saved_models/unseen_scores.json]
    python -m fer_keras.evaluate A/model.keras B/model.keras --compare [--split private_test]
    python -m fer_keras.evaluate A B C ... --compare --save saved_models/paired_tests.json
        [--unseen]

Prints accuracy with its 95% Wilson interval (`accuracy 70.27% (95% CI 68.76-71.74)`),
macro-F1 and the per-class precision / recall table (classes in Kaggle id order); `--json`
prints the same as one JSON object instead (the interval as `accuracy_interval`).
`--verify` scores each model on the validation and PrivateTest splits and compares with
the `metrics.json` beside it, so anyone can check the committed results (exit status 1 if
any differs by more than 0.1 points). `--no-mirror` scores a model built with test-time
mirror averaging (`MirrorAverage`) on one pass per face, to show what the averaging adds.
A `.tflite` file (float, float16 or int8, from
`python -m fer_keras.export [--quantize ...]`) is run with LiteRT
(`fer_keras.serving.litert`), so the accuracy cost of quantization is measured the same
way.

`--labels ferplus` scores on FER+'s crowd labels (majority rule, kaggle splits: validation
is PublicTest) instead of FER2013's: an 8-class FER+ model on all majority faces, a 7-class
FER2013 model on the faces whose majority is one of its 7 emotions (contempt left out). It
takes several models; `--save FILE` merges each one's scores into a JSON file by run name,
which `python -m fer_keras.report` reads from `saved_models/label_scores.json`.

`--unseen` scores only the faces of the split with no exact pixel copy among the Training
rows of the FER2013 source: all Training rows, whatever the protocol, so a model trained on
any part of Training cannot have memorised them (`fer_keras.data.audit`; 288 of the 3,589
PrivateTest faces have a copy there). It says how many were left out (`left_out_copies`,
with `unseen: true`, in the JSON); `--save` keeps such a score under the split key
`SPLIT_unseen`, beside the whole split's, and the report reads it from
`saved_models/unseen_scores.json`.

`--compare` scores two models on the same faces and runs the exact McNemar test on the
faces only one of them gets right: each accuracy with its interval, the two discordant
counts, the p-value and a plain sentence saying whether the difference is beyond noise at
the 5% level. With more than two models (or `--save`), every pair is tested, each model
predicted once, and `--save FILE` merges the table into a JSON file (one entry per split,
label set and `--unseen`), which `python -m fer_keras.report` reads from
`saved_models/paired_tests.json`.

This module is the command line only; the scoring is `fer_keras.serving.evaluation`.
"""

import argparse
import json
import shlex
import sys

from fer_keras.cli import command_prog, entry_point, int_at_least, run_command
from fer_keras.data.labels import list_label_sets
from fer_keras.data.sources import SPLITS
from fer_keras.serving.evaluation import (
    check_pairs_path,
    compare,
    compare_all,
    data_for,
    evaluate,
    format_comparison,
    format_coverage,
    format_pairs,
    format_scores,
    save_pairs,
    save_scores,
    saved_entry,
    verify,
)


def build_parser():
    parser = argparse.ArgumentParser(prog=command_prog("evaluate"),
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="+", help="a .keras file written by fer_keras.fit "
                        "(several with --verify, --save or --compare), or a "
                        ".tflite file written by fer_keras.export (run with LiteRT)")
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
    parser.add_argument("--labels", default="fer2013", choices=list_label_sets(),
                        help="the labels to score on: FER2013's, or FER+'s majority labels")
    parser.add_argument("--labels-file", help="FER+ votes file (default: $FERPLUS_PATH, "
                        "then fer2013new.csv beside the data)")
    parser.add_argument("--save", help="merge the scores of each model into this JSON file "
                        "(by run name; e.g. saved_models/label_scores.json)")
    parser.add_argument("--unseen", action="store_true",
                        help="score only the faces of --split with no exact pixel copy among "
                        "the Training rows of the FER2013 source (all Training rows, "
                        "whatever the protocol), and say how many were left out")
    parser.add_argument("--coverage", action="store_true",
                        help="also print accuracy against coverage: the share of faces "
                        "answered when the least confident are called uncertain, with the "
                        "predict --min-confidence that answers it")
    parser.add_argument("--compare", action="store_true",
                        help="score two models on the same faces and test the difference "
                        "(exact McNemar test on the faces only one gets right)")
    parser.add_argument("--verify", action="store_true",
                        help="compare validation and PrivateTest accuracy with the "
                        "metrics.json beside each model (tolerance 0.1 points)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        if args.labels_file and args.labels != "ferplus":
            raise ValueError(f"--labels-file is the FER+ votes file: it goes with --labels "
                             f"ferplus. Received: labels={args.labels!r}")
        if args.verify and (args.unseen or args.compare):
            flag = "--unseen" if args.unseen else "--compare"
            raise ValueError(f"--verify compares whole splits with metrics.json: drop {flag}.")
        if args.compare and args.limit:
            raise ValueError("--compare tests whole splits: drop --limit.")
        args.data = data_for(args.model[0], args.data)
        if args.compare and len(args.model) == 2 and not args.save:
            result = compare(args.model, args.split, args.data, args.limit, args.batch_size,
                             mirror=not args.no_mirror, num_threads=args.threads,
                             labels=args.labels, labels_file=args.labels_file,
                             unseen=args.unseen)
            print(json.dumps(result, sort_keys=True) if args.json
                  else format_comparison(result))
            return 0
        if args.compare:
            if args.save:
                check_pairs_path(args.save)
            result = compare_all(args.model, args.split, args.data, args.batch_size,
                                 mirror=not args.no_mirror, num_threads=args.threads,
                                 labels=args.labels, labels_file=args.labels_file,
                                 unseen=args.unseen)
            print(json.dumps(result, sort_keys=True) if args.json else format_pairs(result))
            if args.save:
                command = shlex.join(["python", "-m", "fer_keras.evaluate",
                                      *(sys.argv[1:] if argv is None else argv)])
                print(f"Wrote {save_pairs(result, args.save, command)}")
            return 0
        if args.verify:
            rows = verify(args.model, args.data, args.batch_size)
            for model, split, before, measured, agrees in rows:
                print(f"{'ok' if agrees else 'DIFFERS':<8}{model}  {split:<13} recorded "
                      f"{before:6.2f}  measured {measured:6.2f}")
            return 0 if all(row[-1] for row in rows) else 1
        if len(args.model) > 1 and not args.save:
            raise ValueError("Give one model (or several with --save, or with --verify).")
        if args.save and args.limit:
            raise ValueError("--save keeps scores of whole splits: drop --limit.")
        saved = {}
        for model in args.model:
            metrics = evaluate(model, args.split, args.data, args.limit, args.batch_size,
                               mirror=not args.no_mirror, num_threads=args.threads,
                               labels=args.labels, labels_file=args.labels_file,
                               unseen=args.unseen)
            if args.save:
                # Saved as each model is scored, so a failure later keeps these.
                name, entry = saved_entry(model, metrics)
                saved[name] = entry
                save_scores(args.save, {name: entry})
            if args.json:
                print(json.dumps(metrics, sort_keys=True))
                continue
            how = ", one pass per face (--no-mirror)" if args.no_mirror else ""
            if "runtime" in metrics:
                how += f", {metrics['runtime']}, {metrics['file_bytes']:,} bytes"
            if args.labels != "fer2013":
                how += f", {args.labels} labels"
            if metrics.get("left_out"):
                how += f" ({metrics['left_out']} faces of classes the model lacks left out)"
            if args.unseen:
                how += (f", the {metrics['count']:,} faces with no exact copy in Training "
                        f"({metrics['left_out_copies']:,} copies left out)")
            print(format_scores(metrics, title=f"{model} on {args.split}{how}"))
            if args.coverage:
                print(format_coverage(metrics["coverage"]))
        if args.save:
            print(f"wrote the scores of {len(saved)} model(s) to {args.save}", file=sys.stderr)

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
