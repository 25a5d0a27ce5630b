"""AlexNet and LeNet5 adapted to 48x48 grayscale faces (Table 1 rows H and I).

References:
    Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional Neural
    Networks", NeurIPS 2012. LeCun et al., "Gradient-based learning applied to document
    recognition", Proc. IEEE 1998.

Example:

>>> model = get_model("lenet5")
>>> model.count_params()
168971
"""

import keras
from keras import layers

from fer_keras.models.layers import classifier_head, initializer, preprocess
from fer_keras.models.registry import register_model


def _dense_stack(x, units, dropout_rate, kernel_initializer):
    for index, width in enumerate(units, start=1):
        if dropout_rate:
            x = layers.Dropout(dropout_rate, name=f"fc{index}_dropout")(x)
        x = layers.Dense(width, activation="relu",
                         kernel_initializer=initializer(kernel_initializer),
                         name=f"fc{index}")(x)
    return x


@register_model
def alexnet(input_shape=(48, 48, 1), num_classes=7, dropout_rate=0.5,
            dense_units=(1024, 1024), kernel_initializer="glorot_uniform"):
    """AlexNet with its conv widths and strides, its second max pool removed for 48x48.

    The 11x11/4 stem gives 12x12, the first pool 6x6; without the pool after conv2 the
    three 3x3 convs stay at 6x6 and the last pool leaves 3x3x256. The fully connected
    layers default to 1024 units instead of 4096, which keeps the model CPU-trainable;
    pass `dense_units=(4096, 4096)` for the original head.

    Args:
        input_shape: raw image shape.
        num_classes: number of classes.
        dropout_rate: dropout before each hidden FC, as in AlexNet.
        dense_units: hidden FC widths.
        kernel_initializer: see `fer_keras.models.layers.initializer`.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = preprocess(inputs)
    conv_specs = [(64, 11, 4, True), (192, 5, 1, False), (384, 3, 1, False),
                  (256, 3, 1, False), (256, 3, 1, True)]
    for index, (filters, kernel, stride, pool) in enumerate(conv_specs, start=1):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", activation="relu",
                          kernel_initializer=initializer(kernel_initializer),
                          name=f"conv{index}")(x)
        if pool:
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = _dense_stack(x, dense_units, dropout_rate, kernel_initializer)
    outputs = classifier_head(x, num_classes, kernel_initializer)
    return keras.Model(inputs, outputs, name="alexnet")


@register_model
def lenet5(input_shape=(48, 48, 1), num_classes=7, dropout_rate=0.0, dense_units=(120, 84),
           kernel_initializer="glorot_uniform"):
    """LeNet5 (conv 6 5x5, conv 16 5x5, FC 120, FC 84) with ReLU, max pooling, 7 outputs.

    On 48x48 the second pool leaves 9x9x16 = 1,296 features for the first FC.

    Args:
        input_shape: raw image shape.
        num_classes: number of classes.
        dropout_rate: dropout before each hidden FC (0 as in LeNet5).
        dense_units: hidden FC widths.
        kernel_initializer: see `fer_keras.models.layers.initializer`.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = preprocess(inputs)
    for index, filters in enumerate((6, 16), start=1):
        x = layers.Conv2D(filters, 5, activation="relu",
                          kernel_initializer=initializer(kernel_initializer),
                          name=f"conv{index}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = _dense_stack(x, dense_units, dropout_rate, kernel_initializer)
    outputs = classifier_head(x, num_classes, kernel_initializer)
    return keras.Model(inputs, outputs, name="lenet5")
