"""One builder of the compiled model and its training inputs, used by fit, the tuner, bench
and throughput, so that each trains exactly what `python -m fer_keras.fit` trains.

The order is fixed: the experiment's precision policy (and the distribution's scope) ->
`get_model(settings["model"], **settings["model_kwargs"])` -> `compile_model` ->
`prepare_model` for the distribution -> `Augmentation(settings["augmentation"])` ->
`make_dataset` -> `class_weights`.

Example:

>>> settings = resolve_settings("baseline")
>>> setup = build_for_training(settings, x_train, y_train, seed=0)
>>> setup.model.fit(setup.train_data, epochs=2, shuffle=False,
...                 class_weight=setup.class_weight)
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from fer_keras.data.augmentation import Augmentation
from fer_keras.data.labels import get_label_set
from fer_keras.data.mixing import BatchMixing
from fer_keras.data.sources import make_dataset
from fer_keras.models import get_model
from fer_keras.training.distribute import Distribution, prepare_model
from fer_keras.training.recipe import class_weights, compile_model, precision_policy


@dataclasses.dataclass
class TrainingSetup:
    """What `build_for_training` returns.

    Attributes:
        model: the zoo model, built under the experiment's precision policy (and the
            distribution's scope) and compiled as `fit` compiles it.
        train_data: the training pipeline from `fer_keras.data.sources.make_dataset`
            (a `tf.data.Dataset` or a `keras.utils.PyDataset`), batched, augmented and
            shuffled as `fit` feeds it.
        class_weight: `{class: weight}` for `class_weight="balanced"`, else None; pass it
            to `model.fit(class_weight=...)`.
        augmentation: the `Augmentation` the pipeline applies, or None.
        steps_per_epoch: optimizer steps per epoch the schedule was compiled for.
    """

    model: keras.Model
    train_data: Any
    class_weight: dict[int, float] | None
    augmentation: Augmentation | None
    steps_per_epoch: int


def num_classes_of(settings: Mapping[str, Any]) -> int:
    """Outputs of the model of `settings`: its label set's class count."""
    return get_label_set(settings.get("labels", "fer2013")).num_classes


def default_steps_per_epoch(num_images: int, batch_size: int, drop_remainder: bool = False) -> int:
    """Optimizer steps in one epoch: whole batches only with `drop_remainder`."""
    if drop_remainder:
        return num_images // batch_size
    return math.ceil(num_images / batch_size)


def build_model(settings: Mapping[str, Any], *, steps_per_epoch: int,
                distribution: Distribution | None = None) -> keras.Model:
    """The compiled zoo model of resolved `settings` (`resolve_settings`).

    Built under `settings["precision"]` and, with a `distribution`, inside its scope and
    prepared for it (`fer_keras.training.distribute.prepare_model`).
    """
    distribution = distribution or Distribution()
    with precision_policy(settings["precision"]), distribution.scope():
        model = get_model(settings["model"], num_classes=num_classes_of(settings),
                          **settings["model_kwargs"])
        compile_model(model, steps_per_epoch=steps_per_epoch, **settings)
        prepare_model(model, distribution)
    return model


def build_inputs(settings: Mapping[str, Any], x_train: Any, y_train: np.ndarray, *,
                 seed: int | None, drop_remainder: bool = False, shuffle: bool = True,
                 pipeline: str | None = None
                 ) -> tuple[Any, dict[int, float] | None, Augmentation | None]:
    """The training inputs of resolved `settings`: `(train_data, class_weight, augmentation)`.

    `x_train` is uint8 images (or `ImageFiles`), `y_train` label ids or target
    distributions (FER+ votes, distillation); `seed` is the shuffle seed; mixup / CutMix
    (`settings["mixing"]`) mixes the augmented batches; `pipeline` is passed to
    `make_dataset` (None picks the backend's).
    """
    augmentation = Augmentation(settings["augmentation"]) if settings["augmentation"] else None
    mixing = (BatchMixing(settings["mixing"], settings.get("mixing_alpha", 1.0))
              if settings.get("mixing") else None)
    train_data = make_dataset(x_train, y_train, int(settings["batch_size"]), shuffle=shuffle,
                              augmentation=augmentation, seed=seed, pipeline=pipeline,
                              drop_remainder=drop_remainder,
                              num_classes=num_classes_of(settings), mixing=mixing)
    weights = class_weights(y_train, settings["class_weight"], num_classes_of(settings))
    return train_data, weights, augmentation


def build_for_training(settings: Mapping[str, Any], x_train: Any, y_train: np.ndarray, *,
                       seed: int | None, steps_per_epoch: int | None = None,
                       distribution: Distribution | None = None, drop_remainder: bool = False,
                       shuffle: bool = True, pipeline: str | None = None) -> TrainingSetup:
    """Builds the compiled model of resolved `settings` and its training inputs.

    Args:
        settings: a resolved settings dict (`fer_keras.training.settings.resolve_settings`);
            its "precision", "model", "model_kwargs", the compile fields, "augmentation",
            "batch_size" and "class_weight" are used.
        x_train: uint8 `(N, 48, 48, 1)` images, or `ImageFiles` to stream.
        y_train: int `(N,)` label ids, or `(N, classes)` target distributions.
        seed: shuffle seed of the pipeline (set Keras' global seed first, as `fit` does,
            for reproducible weights).
        steps_per_epoch: steps the learning-rate schedule spans per epoch; default the
            batches in one epoch of `x_train` (whole batches only with `drop_remainder`).
        distribution: a `fer_keras.training.distribute.Distribution`; None trains on one
            device.
        drop_remainder: leave out each epoch's last, partial batch.
        shuffle: reshuffle the pipeline every epoch.
        pipeline: "tf.data" or "numpy" for `make_dataset`; None picks the backend's.

    Returns:
        A `TrainingSetup(model, train_data, class_weight, augmentation, steps_per_epoch)`.
    """
    if steps_per_epoch is None:
        steps_per_epoch = default_steps_per_epoch(len(x_train), int(settings["batch_size"]),
                                                  drop_remainder)
    model = build_model(settings, steps_per_epoch=steps_per_epoch, distribution=distribution)
    train_data, weights, augmentation = build_inputs(
        settings, x_train, y_train, seed=seed, drop_remainder=drop_remainder, shuffle=shuffle,
        pipeline=pipeline)
    return TrainingSetup(model=model, train_data=train_data, class_weight=weights,
                         augmentation=augmentation, steps_per_epoch=int(steps_per_epoch))
