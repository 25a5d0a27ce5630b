"""The model that ships inside the package: which run it is, and how it is chosen and copied.

`fer_keras/assets/default_model.keras` is what `predict` and `fer_keras.Recognizer` run
when no `--model` is given and no run lies under `saved_models/`, so a `pip install`ed
fer_keras classifies faces anywhere. `default_model.json` beside it says which run it
came from, its accuracies (copied from the run's `metrics.json`), the file's SHA-256 and
the rule that chose it (`RULE`):

* a single network: `metrics.json`'s "model" is not "ensemble";
* at most `MAX_PASSES_PER_FACE` (2) forward passes per face, the face and its mirror
  (`forward_passes_per_face`, 1 where absent): ten test-time views cost five times as
  much per face, which on a video decides how many times the `fer` package's faces/s we
  reach (`saved_models/video_benchmark.json`), for +0.06 points on FER+ PrivateTest
  (`fer_vgg_ferplus_ten`) and -0.75 on FER+ labels for a FER2013 net;
* trained on FER+'s crowd labels ("labels" `PACKAGED_LABELS`, "ferplus"): scored on the
  labels ten people agree on, a FER2013-trained net is 16 points behind (71.4% against
  87.25% on FER+ PrivateTest), and FER2013's own labels agree with the crowd's majority
  on only 62.8% of faces (the FER+ issue's measurements, `docs/ferplus.md`);
* calibrated: `metrics.json` has a "calibration" block (`python -m fer_keras.calibrate`;
  the temperature is inside the model, so every format gives calibrated probabilities);
* `model.keras` at most `MAX_MODEL_BYTES`, so the wheel stays small;
* of those, the highest `splits.validation.accuracy`, the run's selection split
  (`fer_keras.data.protocols`: PublicTest under the kaggle protocol, 20% of Training
  under the study protocol); ties go to the first folder name.

Until the FER+ runs landed the rule took FER2013 labels and any number of views, and
picked `fer_vgg_kaggle_tuned_long_ten` (71.52% on FER2013 PrivateTest, ten views, ECE
2.12% after calibration); users who want FER2013's 7 classes pass
`--model saved_models/fer_vgg_kaggle_tuned_long_ten` (or any FER2013 run).

`package_default_model` applies the rule and writes both files (the library behind
`python -m fer_keras.package_model`).

>>> eligibility({"model": "ensemble", "splits": {"validation": {"accuracy": 0.7}}}, 10)
'an ensemble (metrics.json model "ensemble")'
>>> eligibility({"labels": "fer2013", "splits": {"validation": {"accuracy": 0.8}}}, 10)
'trained on fer2013 labels, not ferplus'
>>> eligibility({"labels": "ferplus", "forward_passes_per_face": 10, "calibration": {},
...              "splits": {"validation": {"accuracy": 0.8}}}, 10)
'10 forward passes per face, over 2'
>>> eligibility({"labels": "ferplus", "calibration": {},
...              "splits": {"validation": {"accuracy": 0.8}}}, 10) is None
True
"""

import hashlib
import importlib.resources
import json
import math
import os
import shutil
from pathlib import Path

from fer_keras.data.labels import FERPLUS
from fer_keras.data.protocols import protocol_of
from fer_keras.data.sources import labels_of
from fer_keras.utils.files import write_atomically, write_text_atomically

ASSET_FOLDER = "assets"
MODEL_ASSET = "default_model.keras"
INFO_ASSET = "default_model.json"
MAX_MODEL_BYTES = 6_000_000
"""The largest `model.keras` the rule takes (6 MB), so the wheel stays under ~15 MB."""
EXCLUDED_MODELS = ("ensemble",)
"""`metrics.json` "model" values that are not one network."""
MAX_PASSES_PER_FACE = 2
"""The most forward passes per face the rule takes (the face and its mirror)."""
PACKAGED_LABELS = FERPLUS.name
"""The label set the packaged model is trained on: FER+'s crowd votes."""
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / ASSET_FOLDER
"""The package's own assets folder (`fer_keras/assets/`)."""

RULE = ("the single network (metrics.json model not 'ensemble') with at most "
        f"{MAX_PASSES_PER_FACE} forward passes per face, trained on {PACKAGED_LABELS} labels "
        "(FER+'s crowd votes) and calibrated (a metrics.json calibration block), whose "
        f"model.keras is at most {MAX_MODEL_BYTES:,} bytes, with the highest "
        "splits.validation.accuracy (its selection split); ties go to the first folder name")


def packaged_model_file():
    """The packaged `default_model.keras` as a `Path`, or None if this install has none."""
    model = importlib.resources.files("fer_keras") / ASSET_FOLDER / MODEL_ASSET
    if not model.is_file():
        return None
    # An ordinary install (a folder in site-packages, or the source tree) gives a Path.
    return Path(os.fspath(model))


def packaged_model_info():
    """`default_model.json` of the packaged model as a dict, or None if there is none."""
    info = importlib.resources.files("fer_keras") / ASSET_FOLDER / INFO_ASSET
    if not info.is_file():
        return None
    try:
        return json.loads(info.read_text(encoding="utf-8"))
    except ValueError:
        return None


def describe_packaged_model(info=None):
    """One line about the packaged model (for `fer-keras --version`)."""
    info = packaged_model_info() if info is None else info
    if info is None:
        return ("packaged model: none (write one with `python -m fer_keras.package_model` "
                "in a checkout)")
    scores = [f"{info['selection_split']} {100 * info['selection_accuracy']:.2f}% "
              f"(selection split)"]
    if info.get("private_test_accuracy") is not None:
        scores.insert(0, f"PrivateTest {100 * info['private_test_accuracy']:.2f}%")
    return (f"packaged model: {info['source_run']} ({info['labels']} labels; "
            f"{', '.join(scores)})")


def _accuracy(metrics, split):
    """`metrics["splits"][split]["accuracy"]` as a finite float, or None."""
    try:
        value = float(metrics["splits"][split]["accuracy"])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def eligibility(metrics, model_bytes):
    """Why a run with this `metrics.json` dict and model size is not eligible; None if it is."""
    if not isinstance(metrics, dict):
        return "metrics.json is not a JSON object"
    if metrics.get("model") in EXCLUDED_MODELS:
        return f'an ensemble (metrics.json model "{metrics["model"]}")'
    passes = metrics.get("forward_passes_per_face", 1)
    if not isinstance(passes, int) or passes > MAX_PASSES_PER_FACE:
        return f"{passes} forward passes per face, over {MAX_PASSES_PER_FACE}"
    labels = labels_of(metrics)
    if labels != PACKAGED_LABELS:
        return f"trained on {labels} labels, not {PACKAGED_LABELS}"
    if not isinstance(metrics.get("calibration"), dict):
        return "not calibrated (no metrics.json calibration block; run python -m " \
               "fer_keras.calibrate RUN --output RUN_calibrated)"
    if model_bytes > MAX_MODEL_BYTES:
        return f"model.keras is {model_bytes / 1e6:.1f} MB, over {MAX_MODEL_BYTES / 1e6:g} MB"
    if _accuracy(metrics, "validation") is None:
        return "no splits.validation.accuracy"
    return None


def choose_default_run(root):
    """The run folder under `root` that `RULE` picks, and its `metrics.json` dict.

    Returns:
        `(run_folder, metrics, skipped)`: `skipped` maps each other run folder holding a
        `metrics.json` to why it was passed over (or "lower selection accuracy").

    Raises:
        ValueError: if no run folder is eligible (naming why each was passed over).
    """
    root = Path(root)
    eligible, skipped = [], {}
    for metrics_path in sorted(root.glob("*/metrics.json")):
        run = metrics_path.parent
        model = run / "model.keras"
        if not model.is_file():
            skipped[run.name] = "no model.keras"
            continue
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            skipped[run.name] = f"unreadable metrics.json ({error})"
            continue
        reason = eligibility(metrics, model.stat().st_size)
        if reason is not None:
            skipped[run.name] = reason
            continue
        eligible.append((-_accuracy(metrics, "validation"), run.name, run, metrics))
    if not eligible:
        why = "; ".join(f"{name}: {reason}" for name, reason in skipped.items()) or "none"
        raise ValueError(f"No run under {root}/ is eligible for the packaged model ({RULE}). "
                         f"Runs passed over: {why}. Train one with `python -m fer_keras.fit "
                         f"EXPERIMENT`, or pass --root. Received: --root {root}")
    eligible.sort(key=lambda item: item[:2])
    _, _, run, metrics = eligible[0]
    for _, name, _, _ in eligible[1:]:
        skipped[name] = "lower selection accuracy"
    return run, metrics, skipped


def sha256_of(path):
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_summary(run, metrics):
    """What `default_model.json` (and `Recognizer.info`) say about a run: its name,
    network kind, protocol, label set and accuracies, from its `metrics.json` dict."""
    protocol = protocol_of(metrics)
    labels = labels_of(metrics)
    return {
        "source_run": Path(run).name,
        "source": str(run),
        "experiment": metrics.get("experiment"),
        "model": metrics.get("model"),
        "forward_passes_per_face": metrics.get("forward_passes_per_face", 1),
        "protocol": protocol.name,
        "labels": labels,
        "selection_split": metrics.get("selection_split") or protocol.selection_split,
        "selection_accuracy": _accuracy(metrics, "validation"),
        "private_test_accuracy": _accuracy(metrics, "private_test"),
    }


def package_default_model(root, output=DEFAULT_OUTPUT, overwrite=False):
    """Copies the run `RULE` picks under `root` into `output` as the packaged model.

    Writes `output/default_model.keras` (a byte copy of the run's `model.keras`) and
    `output/default_model.json` (`run_summary`, the file's `sha256` and `bytes`, `rule`).
    Each is written to a hidden file first and renamed into place.

    Args:
        root: the folder of run folders (`saved_models/`).
        output: the assets folder (made if missing).
        overwrite: replace a different packaged model already in `output`.

    Returns:
        `(info, status)`: the JSON written (or found) as a dict, and "written",
        "replaced" or "unchanged" (an identical model and JSON were there already).

    Raises:
        ValueError: if no run is eligible, or `output` holds a different packaged model
            and `overwrite` is False.
    """
    run, metrics, _ = choose_default_run(root)
    source = run / "model.keras"
    info = {**run_summary(run, metrics), "sha256": sha256_of(source),
            "bytes": source.stat().st_size, "rule": RULE}
    text = json.dumps(info, indent=2) + "\n"
    output = Path(output)
    model_path, info_path = output / MODEL_ASSET, output / INFO_ASSET
    existing = [path for path in (model_path, info_path) if path.exists()]
    status = "written"
    if existing:
        same = (model_path.is_file() and info_path.is_file()
                and info_path.read_text(encoding="utf-8") == text
                and sha256_of(model_path) == info["sha256"])
        if same:
            return info, "unchanged"
        if not overwrite:
            try:
                old = json.loads(info_path.read_text(encoding="utf-8"))["source_run"]
            except (OSError, ValueError, KeyError, TypeError):
                old = "unknown"
            raise ValueError(f"{output} already holds a different packaged model (from "
                             f"{old}; the rule now picks {run.name}). Pass --overwrite to "
                             f"replace it. Received: --output {output}")
        status = "replaced"
    output.mkdir(parents=True, exist_ok=True)
    write_atomically(model_path, lambda path: shutil.copyfile(source, path))
    write_text_atomically(info_path, text)
    return info, status
