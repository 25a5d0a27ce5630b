"""Training settings: an experiment merged with hyperparameter files and flags, and every
check on them (ranges and choices), done before any file is read or written.

Used by `fit`, the tuner, `bench` and `throughput` alike.
"""

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fer_keras.data.augmentation import POLICIES
from fer_keras.data.protocols import PROTOCOLS
from fer_keras.training.experiments import (
    DISTILL_DEFAULTS,
    LABEL_MODES,
    LABEL_SETS,
    MIXINGS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    TRAINING_KEYS,
    get_experiment,
)
from fer_keras.utils.numbers import describe_range, in_range

SETTING_RANGES = {
    # setting: (integer?, low, high, low_open, high_open), as `describe_range` reads them
    "epochs": (True, 1, None, False, False),
    "batch_size": (True, 1, None, False, False),
    "warmup_epochs": (True, 0, None, False, False),
    "learning_rate": (False, 0, None, True, False),
    "weight_decay": (False, 0, None, False, False),
    "label_smoothing": (False, 0, 1, False, True),
    "mixing_alpha": (False, 0, None, True, False),
}
DISTILL_RANGES = {
    "distill_temperature": (False, 0, None, True, False),
    "distill_weight": (False, 0, 1, False, False),
}
"""Ranges of the distillation settings, which are set only on runs with teachers."""
"""Allowed values of the numeric training settings, whether they come from a flag, an
--hparams file or the experiment table. Any builder argument named `*dropout_rate` must be
in [0, 1)."""


def resolve_settings(experiment_name: str, overrides: Mapping[str, Any] | None = None,
                     hparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merges an experiment with hyperparameter files and flags (flags win).

    Args:
        experiment_name: a registered experiment.
        overrides: dict of experiment fields or `dropout_rate`/model kwargs; None values are
            dropped so the experiment's defaults stay.
        hparams: dict of the same keys (e.g. a tuner's best trial), applied first.

    Returns:
        A JSON-ready dict: experiment, model, model_kwargs and the training fields.
    """
    # The zoo imports Keras; settings are imported by `fit --help`, which must not.
    from fer_keras.models.registry import builder_accepts

    experiment = get_experiment(experiment_name)
    settings = {key: getattr(experiment, key) for key in TRAINING_KEYS}
    settings.update(experiment=experiment.name, model=experiment.model,
                    model_kwargs=dict(experiment.model_kwargs))
    for source in (hparams or {}, overrides or {}):
        for key, value in source.items():
            if value is None:
                continue
            if key in TRAINING_KEYS:
                settings[key] = value
            elif key in ("experiment", "model"):
                continue
            elif key == "model_kwargs":
                settings["model_kwargs"].update(value)
            elif builder_accepts(experiment.model, key):
                settings["model_kwargs"][key] = value
            else:
                raise ValueError(f"{key!r} is neither a training setting "
                                 f"({', '.join(TRAINING_KEYS)}) nor an argument of model "
                                 f"{experiment.model!r}. Received: {key}={value!r}")
    if settings["class_weight"] == "none":
        settings["class_weight"] = None
    if settings["mixing"] == "none":
        settings["mixing"] = None
    settings["teachers"] = [str(teacher) for teacher in settings["teachers"] or ()]
    if settings["teachers"]:
        for key, default in DISTILL_DEFAULTS.items():
            if settings[key] is None:
                settings[key] = default
    if settings["labels"] == "fer2013" and not any(
            source.get("label_mode") is not None for source in (hparams or {}, overrides or {})):
        # `--labels fer2013` on a FER+ experiment: its label mode goes with its labels.
        settings["label_mode"] = None
    return settings


def setting_choices() -> dict[str, tuple]:
    """The allowed values of the categorical training settings (None: the feature is off)."""
    return {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "precision": PRECISIONS,
            "protocol": tuple(PROTOCOLS), "augmentation": (None, *POLICIES),
            "class_weight": (None, "balanced"), "labels": LABEL_SETS,
            "label_mode": (None, *LABEL_MODES), "mixing": (None, *MIXINGS)}


def check_settings(settings: Mapping[str, Any], seed: Any = 0, limit: Any = None) -> None:
    """Raises a `ValueError` naming the first bad setting and what it may be.

    Categorical settings (optimizer, schedule, precision, protocol, augmentation,
    class_weight, labels, label_mode) must be one of `setting_choices()`; numeric ones lie
    in `SETTING_RANGES`; a FER+ run names its label mode and a FER2013 run none.

    Args:
        settings: a `resolve_settings` dict.
        seed: must be an integer >= 0 (NumPy's seeds are unsigned).
        limit: None, or an integer >= 1.
    """
    for key, allowed in setting_choices().items():
        value = settings.get(key)
        if value not in allowed:
            shown = ", ".join("none" if each is None else str(each) for each in allowed)
            raise ValueError(f"{key} (--{key.replace('_', '-')}) must be one of {shown}. "
                             f"Received: {key}={value!r}")
    if (settings.get("labels") == "ferplus") != (settings.get("label_mode") is not None):
        raise ValueError(
            "--label-mode (majority or probability) goes with --labels ferplus, and only with "
            f"it. Received: labels={settings.get('labels')!r}, "
            f"label_mode={settings.get('label_mode')!r}")
    teachers = settings.get("teachers") or []
    if not teachers:
        given = [key for key in DISTILL_RANGES if settings.get(key) is not None]
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')} goes with --teachers (the runs "
                             f"to distil from). Received: {given[0]}={settings[given[0]]!r}, "
                             f"teachers=[]")
    checks = [(key, settings.get(key), *bounds) for key, bounds in SETTING_RANGES.items()]
    if teachers:
        checks += [(key, settings.get(key), *bounds) for key, bounds in DISTILL_RANGES.items()]
    checks += [(key, value, False, 0, 1, False, True)
               for key, value in settings["model_kwargs"].items()
               if key.endswith("dropout_rate") and value is not None]
    checks.append(("seed", seed, True, 0, None, False, False))
    if limit is not None:
        checks.append(("limit", limit, True, 1, None, False, False))
    for key, value, integer, low, high, low_open, high_open in checks:
        whole = isinstance(value, int) and not isinstance(value, bool)
        if (integer and not whole) or not in_range(value, low, high, low_open, high_open):
            kind = "an integer" if integer else "a finite number"
            raise ValueError(
                f"{key} (--{key.replace('_', '-')}) must be {kind} "
                f"{describe_range(low, high, low_open, high_open)}. Received: {key}={value!r}")


def load_hparams(path: str | os.PathLike) -> dict[str, Any]:
    """The settings dict of an `--hparams` JSON file: an object of settings, or the tuner's
    `best_hparams.json` (its "hyperparameters" object). ValueError in one line otherwise."""
    hparams_path = Path(path)
    if not hparams_path.is_file():
        raise ValueError(f"--hparams file not found: {hparams_path}" if not
                         hparams_path.exists() else
                         f"--hparams {hparams_path} is not a regular file")
    try:
        hparams = json.loads(hparams_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"--hparams {hparams_path} is not valid JSON: {error}") from error
    if isinstance(hparams, dict) and "hyperparameters" in hparams:
        hparams = hparams["hyperparameters"]
    if not isinstance(hparams, dict):
        raise ValueError(
            f"--hparams {hparams_path} must hold a JSON object of settings (e.g. "
            f'{{"learning_rate": 0.001}}, or the tuner\'s best_hparams.json). '
            f"Received: {json.dumps(hparams)[:80]}")
    return hparams
