"""A trained run's TFLite files compared: accuracy, LiteRT batch-1 latency and size.

The library behind `python -m fer_keras.formats`: `compare_formats` exports one run as
float32, float16 and int8 TFLite (into a temporary folder), scores each file with
`fer_keras.serving.evaluation.evaluate` and times it with
`fer_keras.serving.litert.measure_latency`; `formats_table` renders a saved comparison
as the report's "Serving formats" table.
"""

import tempfile
from pathlib import Path

from fer_keras.data.sources import SPLITS
from fer_keras.serving.evaluation import evaluate, recorded_accuracies
from fer_keras.serving.export import export, quantized_tflite_name
from fer_keras.serving.layout import EXTRA_FOLDER, KERAS_FILE, TFLITE_FILE
from fer_keras.serving.litert import LATENCY_THREADS, measure_latency

FORMATS = (("float32", TFLITE_FILE), ("float16", quantized_tflite_name("float16")),
           ("int8", quantized_tflite_name("int8")))
FORMATS_FILE = "formats.json"


def recorded_keras_accuracy(run_folder, split):
    """The Keras model's accuracy on `split` that a run folder's `metrics.json` records.

    Raises:
        ValueError: for an unknown split, a folder without `model.keras` or
            `metrics.json`, or a `metrics.json` without `splits.SPLIT.accuracy` (the
            message names the file and the missing key).
    """
    run_folder = Path(run_folder)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}. Received: split={split!r}")
    metrics_path = run_folder / "metrics.json"
    if not (run_folder / KERAS_FILE).is_file() or not metrics_path.is_file():
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
    run_folder = Path(run_folder)
    keras_accuracy = recorded_keras_accuracy(run_folder, split)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fer_formats_") as folder:
        result = export(run_folder, output=folder, version=1, quantize=["int8", "float16"],
                        data=data)
        extra = Path(result["savedmodel"]) / EXTRA_FOLDER
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
                   f"({row[f'threads_{t}_latency_ms_p90']:.2f})" for t in LATENCY_THREADS]
        note = "" if row.get("xnnpack", True) else " (no XNNPACK)"
        lines.append(f"| `{row['experiment']}` | {row['format']} | "
                     f"{100 * row['accuracy']:.2f} | {row['points_vs_keras']:+.2f} | "
                     f"{row['bytes'] / 1e6:.2f} | {latency[0]}{note} | {latency[1]}{note} |")
    return "\n".join(lines)
