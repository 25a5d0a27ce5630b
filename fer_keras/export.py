"""Export a trained model for serving: a TF Serving SavedModel, a `.keras` copy and TFLite.

Usage:

    python -m fer_keras.export saved_models/EXPERIMENT [--output DIR] [--version N]
        [--no-tflite] [--quantize int8|float16 ...] [--data FER2013.csv]
    python -m fer_keras.export path/to/model.keras

The input is a run folder written by `fer_keras.fit` (it holds `model.keras`) or a `.keras`
file. The SavedModel goes to `DIR/VERSION/`, the layout TF Serving scans: `DIR` defaults to
`RUN_FOLDER/serving` (for a `.keras` file not named `model.keras`, to
`FILE_FOLDER/FILE_STEM/serving`), and `VERSION` to one more than the highest version already
there (1 for a new folder; TF Serving reads versions as int64, so at most 2**63 - 1). A
version is written under a temporary name (`DIR/.partial-VERSION-PID/`) and renamed when
complete, so a running TF Serving never loads half a model; such a folder left by an export
that was killed is removed by the next export into `DIR` once its process is gone. Before
any work, `DIR` is checked to be a folder this user can write into, and the model to be
built, to take gray images and to output probabilities on a probe batch (a model ending in
logits is refused: `fer_keras.serving.checks`).

What one version folder holds:

| path | what |
|---|---|
| `saved_model.pb`, `variables/` | the SavedModel (written by `keras.export.ExportArchive`) |
| `assets/labels.txt` | the class names, one a line, line i = output i (the run's order) |
| `assets.extra/model.keras` | a byte copy of the exported Keras model |
| `assets.extra/model.tflite` | the `serving_default` signature as TFLite, when it converts |
| `assets.extra/model_int8.tflite` | with `--quantize int8`: post-training integer |
|  | quantization, calibrated on training-split faces |
| `assets.extra/model_float16.tflite` | with `--quantize float16`: float16 weights |
| `assets.extra/export.json` | source, versions, signatures and the TFLite outcome |

`assets.extra/` is the SavedModel folder meant for files that travel with a model without
being part of its graph; TF Serving and `tf.saved_model.load` ignore it.

Signatures (both take raw pixels; the model's own graph rescales them, as in training;
augmentation is not part of the export):

* `serving_default`: input `image`, uint8, shape `[batch, 48, 48, 1]`: grayscale face
  crops already at the training size, like FER2013 itself. This is the fast path and the
  one converted to TFLite.
* `any_size`: input `image`, uint8, shape `[batch, height, width, channels]` with 1 (gray),
  2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels and any height and width (all images of
  one request share them). In the graph, colour becomes gray with the ITU-R BT.601 weights
  (0.299 R + 0.587 G + 0.114 B, OpenCV's and Pillow's), alpha is composited over white, and
  the image is resized to 48x48 with area averaging and rounded to integers (as FER2013's
  pixels are), then classified by the `serving_default` function. Use it for face crops
  that are not yet 48x48 gray; it does not find faces (`python -m fer_keras.predict`
  does).

Both return `probabilities` (float32 `[batch, 7]`, softmax, Kaggle class order),
`class_id` (int32 `[batch]`, the argmax) and `label` (string `[batch]`, the class name).
A request of another shape (a missing or extra dimension, another size or channel count,
or an empty batch) fails with `InvalidArgumentError` naming the shape the signature takes
and the one received, before it reaches the model, whose oneDNN kernels would abort the
whole serving process on some such inputs.

Example:

>>> from fer_keras.serving.export import export
>>> result = export("saved_models/baseline_deep_dropout")
>>> result["savedmodel"]
'saved_models/baseline_deep_dropout/serving/1'
"""

import argparse
import sys
from pathlib import Path

from fer_keras.cli import command_prog, entry_point, require_tensorflow, run_command
from fer_keras.serving.export import (
    INT8_AGREEMENT_WARNING,
    QUANTIZATIONS,
    REPRESENTATIVE_COUNT,
    VERSION_MAX,
    export,
)
from fer_keras.serving.layout import ANY_SIZE_SIGNATURE, DEFAULT_SIGNATURE


def version_number(text):
    """An argparse `type` for `--version`: an integer in [1, `VERSION_MAX`]."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= VERSION_MAX:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= 1 and <= {VERSION_MAX} (TF Serving reads versions as "
            f"int64). Received: {text[:100]!r}")
    return value


version_number.__name__ = "version number"


def build_parser():
    parser = argparse.ArgumentParser(
        prog=command_prog("export"), description=__doc__.split("\n\n")[0],
        epilog="See the module docstring (python -c 'import fer_keras.export as e; "
               "help(e)') for the signatures.")
    parser.add_argument("source", help="run folder (saved_models/EXPERIMENT) or .keras file")
    parser.add_argument("--output", help="TF Serving base folder; default "
                        "RUN_FOLDER/serving")
    parser.add_argument("--version", type=version_number, help="version folder number, "
                        f"1 to {VERSION_MAX} (int64); default the next free one (1 for a "
                        f"new folder)")
    parser.add_argument("--no-tflite", action="store_true", help="skip the TFLite file")
    parser.add_argument("--jit-compile", action="store_true",
                        help="XLA-compile the forward pass: lower batch-1 latency on CPU, "
                        "but TF Serving must run with --xla_cpu_compilation_enabled=true")
    parser.add_argument("--quantize", action="append", choices=QUANTIZATIONS,
                        help="also write a quantized TFLite file (assets.extra/model_int8."
                        "tflite or model_float16.tflite); repeat for both. int8 calibrates on "
                        f"{REPRESENTATIVE_COUNT} training-split faces from --data")
    parser.add_argument("--data", help="FER2013 CSV or image folder for --quantize int8 "
                        "(default: $FER2013_PATH, then data/fer2013.csv[.gz])")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_command(lambda: _export_and_report(args))


def _export_and_report(args):
    require_tensorflow("python -m fer_keras.export (SavedModel and TFLite)")
    result = export(args.source, output=args.output, version=args.version,
                    tflite=not args.no_tflite, jit_compile=args.jit_compile,
                    quantize=args.quantize or (), data=args.data)
    print(f"SavedModel: {result['savedmodel']} (signatures {DEFAULT_SIGNATURE}: image uint8 "
          f"[batch, 48, 48, 1]; {ANY_SIZE_SIGNATURE}: image uint8 [batch, h, w, 1-4]; "
          f"outputs probabilities, class_id, label)")
    print(f"Keras copy: {result['keras']}")
    if result["tflite"]:
        print(f"TFLite:     {result['tflite']} ({result['tflite_message']})")
    else:
        print(f"TFLite:     not written: {result['tflite_message']}")
    for kind, entry in result["quantized"].items():
        label = f"{kind}:".ljust(11)
        print(f"{label} {entry['path']} ({entry['message']})" if entry["path"]
              else f"{label} not written: {entry['message']}")
        agreement = entry.get("agreement_with_float")
        if agreement is not None and agreement < INT8_AGREEMENT_WARNING:
            print(f"warning: the {kind} file gives the float file's class to only "
                  f"{100 * agreement:.0f}% of the calibration faces; quantization has "
                  f"broken this model (spatial transformers do not survive int8). Serve "
                  f"model.tflite or --quantize float16 instead.", file=sys.stderr)
    print(f"Serve with: docker run -p 8501:8501 --mount type=bind,"
          f"source={Path(result['serving_dir']).resolve()},target=/models/fer "
          f"-e MODEL_NAME=fer tensorflow/serving")


if __name__ == "__main__":
    entry_point(main)
