"""FER-ResNet: a small pre-activation ResNet with squeeze-and-excitation, of our own design.

Residual blocks in the pre-activation order (BN -> ReLU -> conv, He et al., "Identity
Mappings in Deep Residual Networks", arXiv 1603.05027), each followed by a
squeeze-and-excitation gate (Hu et al., "Squeeze-and-Excitation Networks",
arXiv 1709.01507). Global average pooling replaces FER-VGG's flatten + hidden FC, which
spends the parameter budget (a model file of about 6 MB) on convolutions instead.

Example:

>>> model = get_model("fer_resnet", widths=(32, 64, 128, 256), blocks=(1, 1, 2, 1))
>>> model.output_shape
(None, 7)
"""

import keras
from keras import layers

from fer_keras.models.layers import classifier_head, initializer, mirror_averaged, preprocess
from fer_keras.models.registry import register_model


def squeeze_excite(x, ratio, name):
    """Reweights channels by a gate computed from their global averages."""
    channels = x.shape[-1]
    gate = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    gate = layers.Dense(max(channels // ratio, 4), activation="relu",
                        name=f"{name}_reduce")(gate)
    gate = layers.Dense(channels, activation="sigmoid", name=f"{name}_expand")(gate)
    return layers.Multiply(name=f"{name}_scale")([x, gate])


def preact_block(x, filters, stride, se_ratio, kernel_initializer, name):
    """BN-ReLU-conv3x3 twice, an SE gate, and the shortcut (a 1x1 conv when the shape
    changes, taken from the pre-activated input as in the paper)."""
    preact = layers.BatchNormalization(name=f"{name}_bn1")(x)
    preact = layers.ReLU(name=f"{name}_relu1")(preact)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                 kernel_initializer=initializer(kernel_initializer),
                                 name=f"{name}_shortcut")(preact)
    else:
        shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      kernel_initializer=initializer(kernel_initializer),
                      name=f"{name}_conv1")(preact)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    y = layers.ReLU(name=f"{name}_relu2")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                      kernel_initializer=initializer(kernel_initializer),
                      name=f"{name}_conv2")(y)
    if se_ratio:
        y = squeeze_excite(y, se_ratio, name=f"{name}_se")
    return layers.Add(name=f"{name}_add")([shortcut, y])


@register_model
def fer_resnet(input_shape=(48, 48, 1), num_classes=7, widths=(32, 64, 128, 256),
               blocks=(1, 1, 2, 1), se_ratio=8, dropout_rate=0.3,
               kernel_initializer="he_normal", mirror_average=False):
    """Builds FER-ResNet.

    A 3x3 stem conv at full resolution, then one stage per width; every stage after the
    first halves the resolution in its first block (48 -> 24 -> 12 -> 6 with four widths).

    Args:
        input_shape: raw image shape (0-255 pixels).
        num_classes: number of classes.
        widths: channels of each stage.
        blocks: residual blocks per stage (one number for all stages, or one per stage).
        se_ratio: squeeze-and-excitation reduction; 0 disables the gates.
        dropout_rate: dropout before the classifier.
        kernel_initializer: see `fer_keras.models.layers.initializer`.
        mirror_average: at inference, average each face with its mirror (`MirrorAverage`).
    """
    if isinstance(blocks, int):
        blocks = (blocks,) * len(widths)
    if len(blocks) != len(widths):
        raise ValueError(f"blocks has {len(blocks)} entries for {len(widths)} stages; give one "
                         f"per width, or a single number. Received: blocks={blocks!r}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = preprocess(inputs)
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False,
                      kernel_initializer=initializer(kernel_initializer), name="stem_conv")(x)
    for stage, (filters, count) in enumerate(zip(widths, blocks), start=1):
        for block in range(1, count + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            x = preact_block(x, filters, stride, se_ratio, kernel_initializer,
                             name=f"stage{stage}_block{block}")
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout_rate, name="head_dropout")(x)
    return mirror_averaged(inputs, classifier_head(x, num_classes), "fer_resnet",
                           mirror_average)
