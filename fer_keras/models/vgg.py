"""FER-VGG: a compact VGG-style network of our own design, stronger than the study's rows.

Stages of two `conv 3x3 -> batch norm -> ReLU` layers, each stage ending in a 2x2 max pool
and spatial dropout, then a flattened 3x3 map, one hidden FC and the classifier. It follows
the recipe of the VGG variants that lead single-network FER2013 results (Khaireddin and
Chen, "Facial Emotion Recognition: State of the Art Performance on FER2013",
arXiv 2105.03588), scaled down so it trains on a CPU in about an hour.

Example:

>>> model = get_model("fer_vgg", widths=(32, 64, 128, 256))
>>> model.output_shape
(None, 7)
"""

import keras
from keras import layers

from fer_keras.models.layers import classifier_head, initializer, mirror_averaged, preprocess
from fer_keras.models.registry import register_model


def vgg_stage(x, filters, convs, dropout_rate, kernel_initializer, name):
    """`convs` x (conv 3x3 -> BN -> ReLU), then max pool 2 and spatial dropout."""
    for index in range(1, convs + 1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                          kernel_initializer=initializer(kernel_initializer),
                          name=f"{name}_conv{index}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{index}")(x)
        x = layers.ReLU(name=f"{name}_relu{index}")(x)
    x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    if dropout_rate:
        x = layers.SpatialDropout2D(dropout_rate, name=f"{name}_dropout")(x)
    return x


@register_model
def fer_vgg(input_shape=(48, 48, 1), num_classes=7, widths=(32, 64, 128, 256),
            convs_per_stage=2, dense_units=256, dropout_rate=0.3, stage_dropout_rate=0.1,
            kernel_initializer="he_normal", mirror_average=False):
    """Builds FER-VGG.

    Args:
        input_shape: raw image shape (0-255 pixels).
        num_classes: number of classes.
        widths: channels of each stage; four stages take 48x48 to 3x3.
        convs_per_stage: conv layers per stage: one number for every stage, or one per
            stage (e.g. `(1, 2, 2, 2)` for a single conv at full resolution).
        dense_units: width of the hidden FC layer.
        dropout_rate: dropout before the hidden FC and before the classifier.
        stage_dropout_rate: spatial dropout after each stage's pool.
        kernel_initializer: see `fer_keras.models.layers.initializer`.
        mirror_average: at inference, average the probabilities of each face and its
            left-right mirror (`MirrorAverage`); training is unchanged.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = preprocess(inputs)
    if isinstance(convs_per_stage, int):
        convs_per_stage = (convs_per_stage,) * len(widths)
    if len(convs_per_stage) != len(widths):
        raise ValueError(f"convs_per_stage has {len(convs_per_stage)} entries for "
                         f"{len(widths)} stages; give one per width, or a single number.")
    for index, (filters, convs) in enumerate(zip(widths, convs_per_stage), start=1):
        x = vgg_stage(x, filters, convs, stage_dropout_rate, kernel_initializer,
                      name=f"stage{index}")
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout_rate, name="fc1_dropout")(x)
    x = layers.Dense(dense_units, use_bias=False,
                     kernel_initializer=initializer(kernel_initializer), name="fc1")(x)
    x = layers.BatchNormalization(name="fc1_bn")(x)
    x = layers.ReLU(name="fc1_relu")(x)
    x = layers.Dropout(dropout_rate, name="head_dropout")(x)
    return mirror_averaged(inputs, classifier_head(x, num_classes), "fer_vgg", mirror_average)
