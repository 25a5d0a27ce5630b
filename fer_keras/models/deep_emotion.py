"""Deep Emotion: a small CNN behind a spatial transformer (Table 1 rows L and M).

Reference: Minaee and Abdolrashidi, "Deep-Emotion: Facial Expression Recognition Using
Attentional Convolutional Network", arXiv 1902.01019; Jaderberg et al., "Spatial Transformer
Networks", NeurIPS 2015.

Unlike the public PyTorch port, dropout here is an ordinary Keras layer, so it is off at
inference.

Example:

>>> model = get_model("deep_emotion")
>>> model.count_params()
66897
"""

import keras
from keras import layers

from fer_keras.models.layers import (
    SpatialTransformer,
    classifier_head,
    identity_theta_initializers,
    initializer,
    preprocess,
)
from fer_keras.models.registry import register_model


def localization_net(x, filters=(8, 10), kernel_sizes=(7, 5), dense_units=32,
                     kernel_initializer="glorot_uniform", name="stn"):
    """Predicts a 2x3 affine theta (as 6 numbers), initialised to the identity.

    conv -> max pool 2 -> ReLU, twice (valid padding), then FC + ReLU and a zero-weight FC
    with bias [1, 0, 0, 0, 1, 0].
    """
    for index, (width, kernel) in enumerate(zip(filters, kernel_sizes), start=1):
        x = layers.Conv2D(width, kernel, kernel_initializer=initializer(kernel_initializer),
                          name=f"{name}_conv{index}")(x)
        x = layers.MaxPooling2D(2, name=f"{name}_pool{index}")(x)
        x = layers.ReLU(name=f"{name}_relu{index}")(x)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(dense_units, activation="relu",
                     kernel_initializer=initializer(kernel_initializer), name=f"{name}_fc1")(x)
    return layers.Dense(6, name=f"{name}_theta", **identity_theta_initializers())(x)


def backbone(x, kernel_initializer="glorot_uniform", name="backbone"):
    """Four 3x3 valid convs of 10 channels with two pools: 48x48 -> 9x9x10."""

    def conv(tensor, index):
        return layers.Conv2D(10, 3, kernel_initializer=initializer(kernel_initializer),
                             name=f"{name}_conv{index}")(tensor)

    x = layers.ReLU(name=f"{name}_relu1")(conv(x, 1))
    x = layers.MaxPooling2D(2, name=f"{name}_pool2")(conv(x, 2))
    x = layers.ReLU(name=f"{name}_relu2")(x)
    x = layers.ReLU(name=f"{name}_relu3")(conv(x, 3))
    x = layers.BatchNormalization(name=f"{name}_bn4")(conv(x, 4))
    x = layers.MaxPooling2D(2, name=f"{name}_pool4")(x)
    return layers.ReLU(name=f"{name}_relu4")(x)


def deep_emotion_net(input_shape=(48, 48, 1), num_classes=7, dropout_rate=0.5,
                     transformers=(((8, 10), (7, 5)),), dense_units=50,
                     kernel_initializer="glorot_uniform", name="deep_emotion"):
    """Builds Deep Emotion with one or more parallel spatial transformers.

    Each transformer warps the (rescaled) input; each warped image runs through its own
    backbone, and the flattened features are concatenated before the FC layers.

    Args:
        input_shape: raw image shape.
        num_classes: number of classes.
        dropout_rate: dropout on the backbone features before FC 50.
        transformers: one `(filters, kernel_sizes)` pair per localisation network.
        dense_units: width of the hidden FC.
        kernel_initializer: see `fer_keras.models.layers.initializer`.
        name: model name.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    image = preprocess(inputs)
    features = []
    for index, (filters, kernel_sizes) in enumerate(transformers, start=1):
        prefix = "stn" if index == 1 else f"stn{index}"
        theta = localization_net(image, filters, kernel_sizes,
                                 kernel_initializer=kernel_initializer, name=prefix)
        warped = SpatialTransformer(name=f"{prefix}_sampler")([image, theta])
        trunk = "backbone" if index == 1 else f"backbone{index}"
        x = backbone(warped, kernel_initializer=kernel_initializer, name=trunk)
        features.append(layers.Flatten(name=f"{trunk}_flatten")(x))
    x = features[0] if len(features) == 1 else layers.Concatenate(name="concat")(features)
    if dropout_rate:
        x = layers.Dropout(dropout_rate, name="dropout")(x)
    x = layers.Dense(dense_units, activation="relu",
                     kernel_initializer=initializer(kernel_initializer), name="fc1")(x)
    outputs = classifier_head(x, num_classes, kernel_initializer)
    return keras.Model(inputs, outputs, name=name)


@register_model(forwards_to=deep_emotion_net)
def deep_emotion(**kwargs):
    """Row L: one spatial transformer (localisation convs 8 and 10, kernels 7 and 5)."""
    return deep_emotion_net(name="deep_emotion", **kwargs)


@register_model(forwards_to=deep_emotion_net)
def deep_emotion_wide(**kwargs):
    """Row M: a second, parallel transformer with convs of 24 and 32 channels, kernels 5
    and 3."""
    return deep_emotion_net(transformers=(((8, 10), (7, 5)), ((24, 32), (5, 3))),
                            name="deep_emotion_wide", **kwargs)
