"""The study's hand-made CNNs (Table 1 rows A-G).

One generic builder, `simple_cnn`, stacks `conv -> [batch norm] -> ReLU -> max pool ->
[dropout]` blocks and a fully connected head; the named variants only choose widths.
Kernel sizes are 3x3 with "same" padding (the study gives none; this is the usual reading).

Reference: B. Chesley, "Deep Learning Approaches for Facial Expression Recognition (FER) on
the FER2013 Dataset", UF ECE course report.

Example:

>>> model = get_model("baseline_deep", dropout_rate=0.4)
>>> model.output_shape
(None, 7)
"""

import keras
from keras import layers

from fer_keras.models.layers import classifier_head, initializer, preprocess
from fer_keras.models.registry import register_model


def conv_block(x, filters, batch_norm, dropout_rate, kernel_initializer, name):
    """conv 3x3 -> [BN] -> ReLU -> max pool 2 -> [dropout]."""
    x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm,
                      kernel_initializer=initializer(kernel_initializer),
                      name=f"{name}_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    if dropout_rate:
        x = layers.Dropout(dropout_rate, name=f"{name}_dropout")(x)
    return x


def simple_cnn(conv_filters, dense_units, input_shape=(48, 48, 1), num_classes=7,
               dropout_rate=0.0, batch_norm=False, kernel_initializer="glorot_uniform",
               name="simple_cnn"):
    """Builds a plain CNN of conv blocks and a fully connected head.

    Args:
        conv_filters: output channels of each conv block; each block halves the resolution.
        dense_units: widths of the hidden fully connected layers (ReLU).
        input_shape: raw image shape; pixels are 0-255.
        num_classes: number of output classes.
        dropout_rate: dropout after every conv block (0 disables it).
        batch_norm: batch normalisation after every convolution.
        kernel_initializer: "study_normal" (N(0, 0.05)), "orthogonal" or a Keras name.
        name: model name.

    Returns:
        A Functional `keras.Model` that outputs class probabilities.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = preprocess(inputs)
    for index, filters in enumerate(conv_filters, start=1):
        x = conv_block(x, filters, batch_norm, dropout_rate, kernel_initializer,
                       name=f"block{index}")
    x = layers.Flatten(name="flatten")(x)
    for index, units in enumerate(dense_units, start=1):
        x = layers.Dense(units, activation="relu",
                         kernel_initializer=initializer(kernel_initializer),
                         name=f"fc{index}")(x)
    outputs = classifier_head(x, num_classes, kernel_initializer)
    return keras.Model(inputs, outputs, name=name)


@register_model(forwards_to=simple_cnn)
def baseline(dropout_rate=0.0, **kwargs):
    """Rows A-D: conv 10 -> conv 32, FC 100, FC 7 (dropout 0.4 in rows C and D)."""
    return simple_cnn((10, 32), (100,), dropout_rate=dropout_rate, name="baseline", **kwargs)


@register_model(forwards_to=simple_cnn)
def baseline_deep(dropout_rate=0.0, batch_norm=False, **kwargs):
    """Rows E-F: conv 10, 32, 64, 128, FC 100, FC 7, with dropout (E) or batch norm (F)."""
    return simple_cnn((10, 32, 64, 128), (100,), dropout_rate=dropout_rate,
                      batch_norm=batch_norm, name="baseline_deep", **kwargs)


@register_model(forwards_to=simple_cnn)
def deepest(dropout_rate=0.0, batch_norm=True, **kwargs):
    """Row G: conv 10, 32, 64, 128, 128 each with batch norm; FC 64 -> 32 -> 7.

    After five halvings 48x48 is 1x1x128, the study's "128 input neurons".
    """
    return simple_cnn((10, 32, 64, 128, 128), (64, 32), dropout_rate=dropout_rate,
                      batch_norm=batch_norm, name="deepest", **kwargs)
