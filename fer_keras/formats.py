"""Compare a trained run's TFLite files: accuracy, LiteRT batch-1 latency and size.

Usage:

    python -m fer_keras.formats saved_models/EXPERIMENT [...] [--split private_test]
        [--data PATH] [--calls 200] [--save saved_models/formats.json]

For each run folder, the model is exported (`fer_keras.export.export`, into a temporary
folder; nothing is written into the run folder) as float32, float16 and int8 TFLite files
(int8 calibrated on `REPRESENTATIVE_COUNT` training-split faces). Each file is scored on
the split with LiteRT (`python -m fer_keras.evaluate FILE.tflite` does the same), and timed
at batch 1 with 1 and 2 threads in a fresh process (`fer_keras.serving.litert.measure_latency`).
The Keras model's own accuracy on the split comes from the run's `metrics.json`, so the
cost of each format is a difference in points. `--save` writes the JSON that
`python -m fer_keras.report` turns into the "Serving formats" table.

Other processes slow every latency; the load average is recorded beside the figures.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from fer_keras.cli import command_prog, entry_point, run_command

FORMATS = (("float32", "model.tflite"), ("float16", "model_float16.tflite"),
           ("int8", "model_int8.tflite"))
FORMATS_FILE = "formats.json"


def recorded_keras_accuracy(run_folder, split):
    """The Keras model's accuracy on `split` that a run folder's `metrics.json` records.

    Raises:
        ValueError: for an unknown split, a folder without `model.keras` or
            `metrics.json`, or a `metrics.json` without `splits.SPLIT.accuracy` (the
            message names the file and the missing key).
    """
    from fer_keras.data.sources import SPLITS
    from fer_keras.evaluate import recorded_accuracies

    run_folder = Path(run_folder)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}. Received: split={split!r}")
    metrics_path = run_folder / "metrics.json"
    if not (run_folder / "model.keras").is_file() or not metrics_path.is_file():
        raise ValueError(f"{run_folder} needs model.keras and metrics.json (a run folder "
                         f"written by `python -m fer_keras.fit`). Received: {run_folder}")
    return recorded_accuracies(metrics_path, [split])[1][split]


def compare_formats(run_folder, split="private_test", data=None, calls=200):
    """Exports one run as float32, float16 and int8 TFLite and scores and times each.

    Args:
        run_folder: a run folder holding `model.keras` and `metrics.json`.
        split: the split to score (a key of `fer_keras.data.sources.SPLITS`).
        data: FER2013 CSV or folder (default: $FER2013_PATH, then data/fer2013.csv[.gz]).
        calls: timed batch-1 calls per thread count.

    Returns:
        A list of JSON-ready rows, one per format: experiment, format, accuracy,
        keras_accuracy, points_vs_keras, bytes, runtime, xnnpack and
        `threads_T_latency_ms_median` / `_p90` for T in 1, 2.

    Raises:
        ValueError: for a folder without `model.keras`, or a `metrics.json` that does not
            record the split's accuracy (`splits.SPLIT.accuracy`).
    """
    from fer_keras.evaluate import evaluate
    from fer_keras.export import export
    from fer_keras.serving.litert import LATENCY_THREADS, measure_latency

    run_folder = Path(run_folder)
    keras_accuracy = recorded_keras_accuracy(run_folder, split)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fer_formats_") as folder:
        result = export(run_folder, output=folder, version=1, quantize=["int8", "float16"],
                        data=data)
        extra = Path(result["savedmodel"]) / "assets.extra"
        for name, file_name in FORMATS:
            path = extra / file_name
            if not path.is_file():
                rows.append({"experiment": run_folder.name, "format": name,
                             "error": "not written (the converter refused the model)"})
                continue
            scored = evaluate(path, split=split, data=data)
            row = {"experiment": run_folder.name, "format": name, "split": split,
                   "accuracy": round(scored["accuracy"], 6),
                   "keras_accuracy": round(keras_accuracy, 6),
                   "points_vs_keras": round(100 * (scored["accuracy"] - keras_accuracy), 2),
                   "bytes": path.stat().st_size, "runtime": scored["runtime"]}
            for threads in LATENCY_THREADS:
                timed = measure_latency(path, threads, calls=calls, warmup=20)
                row["xnnpack"] = timed["xnnpack"]
                row[f"threads_{threads}_latency_ms_median"] = timed["latency_ms_median"]
                row[f"threads_{threads}_latency_ms_p90"] = timed["latency_ms_p90"]
            rows.append(row)
    return rows


def formats_table(report):
    """A saved comparison as Markdown: what was measured, then one row per file."""
    split = next((row["split"] for row in report["results"] if "split" in row), "")
    load = " ".join(f"{value:.2f}" for value in report.get("load_average") or []) or "unknown"
    lines = [f"Each run exported by `python -m fer_keras.export --quantize int8 --quantize "
             f"float16` and scored on {split} with LiteRT ({report.get('runtime', '')}); "
             f"batch-1 latency is the median (p90) of {report.get('calls', '')} single-image "
             f"calls in a fresh process. Load average {load} when the run started (other "
             f"jobs on the machine slow the latencies). Points: the file's accuracy minus "
             f"the Keras model's from `metrics.json`.", "",
             "| experiment | format | accuracy | points vs Keras | size (MB) | "
             "LiteRT ms, 1 thread | LiteRT ms, 2 threads |", "|---|---|---|---|---|---|---|"]
    for row in report["results"]:
        if "error" in row:
            lines.append(f"| `{row['experiment']}` | {row['format']} | {row['error']} |"
                         f" | | | |")
            continue
        latency = [f"{row[f'threads_{t}_latency_ms_median']:.2f} "
                   f"({row[f'threads_{t}_latency_ms_p90']:.2f})" for t in (1, 2)]
        note = "" if row.get("xnnpack", True) else " (no XNNPACK)"
        lines.append(f"| `{row['experiment']}` | {row['format']} | "
                     f"{100 * row['accuracy']:.2f} | {row['points_vs_keras']:+.2f} | "
                     f"{row['bytes'] / 1e6:.2f} | {latency[0]}{note} | {latency[1]}{note} |")
    return "\n".join(lines)


def build_parser():
    from fer_keras.data.sources import SPLITS

    parser = argparse.ArgumentParser(prog=command_prog("formats"),
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_FOLDER",
                        help="run folders (saved_models/EXPERIMENT)")
    parser.add_argument("--split", default="private_test", choices=SPLITS)
    parser.add_argument("--data", help="FER2013 CSV or image folder (default: "
                        "$FER2013_PATH, then data/fer2013.csv[.gz])")
    parser.add_argument("--calls", type=int, default=200,
                        help="timed batch-1 calls per thread count (default 200)")
    parser.add_argument("--save", metavar="PATH",
                        help=f"write the JSON here (saved_models/{FORMATS_FILE} feeds the "
                        f"report)")
    return parser


def main(argv=None):
    from fer_keras.serving.litert import runtime_name

    args = build_parser().parse_args(argv)

    def body():
        if args.calls < 1:
            raise ValueError(f"--calls must be a positive integer. Received: "
                             f"calls={args.calls}")
        # Every run is checked before the first slow export, so a bad one fails at once.
        for run in args.runs:
            recorded_keras_accuracy(run, args.split)
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        results = []
        for run in args.runs:
            print(f"measuring {run} ...", file=sys.stderr, flush=True)
            results.extend(compare_formats(run, args.split, args.data, args.calls))
        command = " ".join(["python -m fer_keras.formats",
                            *(argv if argv is not None else sys.argv[1:])])
        report = {"command": command, "runtime": runtime_name(), "calls": args.calls,
                  "load_average": load, "results": results}
        if args.save:
            Path(args.save).parent.mkdir(parents=True, exist_ok=True)
            Path(args.save).write_text(json.dumps(report, indent=2) + "\n")
        print(formats_table(report))

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
