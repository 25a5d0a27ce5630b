"""Temperature scaling: calibrated class probabilities from a trained model's own.

`TemperatureScaling` takes the probabilities a zoo model outputs (its softmax, or the mean
of its views' softmaxes inside `TestTimeAugmentation`) and returns
`softmax(log(clip(p, 1e-7, 1)) / T)` (Guo et al., "On Calibration of Modern Neural
Networks", ICML 2017, arXiv 1706.04599). A temperature above 1 softens overconfident
probabilities, one below 1 sharpens underconfident ones; any `T > 0` keeps the order of the
classes, so the predicted class (and the accuracy) never changes. `calibrated` puts the
layer after a model, so `.keras`, SavedModel and TFLite files all serve the calibrated
probabilities; `fer_keras.accuracy.calibration` fits `T` on a run's selection split.

Example:

>>> model = get_model("baseline")
>>> calibrated(model, temperature=1.7).output_shape
(None, 7)
"""

import math

import keras
from keras import layers, ops

from fer_keras.models.layers import graph_inputs

PACKAGE = "fer_keras"

PROBABILITY_FLOOR = 1e-7
"""Probabilities are clipped to at least this before their log is taken (float32 softmax
outputs can be exactly 0); `fer_keras.accuracy.calibration` uses the same floor, so the
temperature it fits is the one this layer applies."""

LAYER_NAME = "temperature_scaling"
"""The name `calibrated` gives the layer (and how `temperature_of` finds it)."""


@keras.saving.register_keras_serializable(package=PACKAGE)
class TemperatureScaling(layers.Layer):
    """Rescales class probabilities by a temperature: `softmax(log(clip(p)) / T)`.

    The temperature is part of the layer's config (a float, no weight), so a saved model
    carries it and the layer has nothing to train. Computed in float32 whatever the model's
    policy, as the zoo's outputs are.

    Args:
        temperature: `T > 0`; 1 returns the input's probabilities (up to the 1e-7 floor).

    Example:

    >>> TemperatureScaling(2.0)(np.array([[0.8, 0.2]])).numpy().round(3)
    array([[0.667, 0.333]], dtype=float32)
    """

    def __init__(self, temperature=1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        try:
            value = float(temperature)
        except (TypeError, ValueError):
            value = float("nan")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"temperature must be a finite number > 0 (it divides the "
                             f"log-probabilities). Received: temperature={temperature!r}")
        self.temperature = value

    def call(self, probabilities):
        probabilities = ops.cast(probabilities, "float32")
        logits = ops.log(ops.clip(probabilities, PROBABILITY_FLOOR, 1.0))
        return ops.softmax(logits / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def calibrated(model, temperature, name=None):
    """`model` followed by a `TemperatureScaling(temperature)` layer, as one Keras model.

    The new layer takes `model`'s output tensor, so `model`'s own layers (a `MirrorAverage`
    or `TestTimeAugmentation` wrapper included) stay the model's top-level layers and
    `fer_keras.models.layers.forward_passes` still counts its views. Weights are shared
    with `model`, not copied.

    Args:
        model: a Keras functional model from images to class probabilities.
        temperature: `T > 0`.
        name: the new model's name (default: `model`'s).

    Raises:
        ValueError: for a model that already ends in temperature scaling (calibrate the
            model it scales instead), or a bad temperature.
    """
    if temperature_of(model) is not None:
        raise ValueError(f"Model {model.name!r} already ends in temperature scaling (T = "
                         f"{temperature_of(model):g}); calibrate the model it was built from "
                         f"instead. Received: temperature={temperature!r}")
    scaled = TemperatureScaling(temperature, name=LAYER_NAME)(model.outputs[0])
    return keras.Model(graph_inputs(model), scaled, name=name or model.name)


def temperature_of(model):
    """The temperature of `model`'s `TemperatureScaling` layer, or None if it has none."""
    for layer in model.layers:
        if isinstance(layer, TemperatureScaling):
            return layer.temperature
    return None
