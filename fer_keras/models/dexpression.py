"""DeXpression and its wide-FeatEx variant (Table 1 rows J and K).

Reference: Burkert, Trier, Afzal, Dengel, Liwicki, "DeXpression: Deep Convolutional Neural
Network for Expression Recognition", arXiv 1509.05371.

On 48x48 input the stem gives 12x12x64, FeatEx 1 gives 6x6x272 and FeatEx 2 3x3x272.

Example:

>>> model = get_model("dexpression", normalization="batch_norm")
>>> model.get_layer("featex2_concat").output.shape
(None, 6, 6, 272)
"""

import keras
from keras import layers

from fer_keras.models.layers import classifier_head, initializer, normalization, preprocess
from fer_keras.models.registry import register_model


def featex_block(x, reduce_filters=96, conv_filters=208, pool_proj_filters=64,
                 extra_conv_filters=0, extra_pool_filters=0, kernel_initializer="glorot_uniform",
                 name="featex"):
    """One parallel feature-extraction (FeatEx) block.

    Two paths: 1x1 reduce -> 3x3 conv, and 3x3/1 max pool -> 1x1 projection; their outputs
    are concatenated and pooled 3x3/2. The wide variant adds a 5x5 conv beside the 3x3 conv
    (`extra_conv_filters`) and a 3x3 conv beside the 1x1 projection (`extra_pool_filters`).

    Args:
        x: input tensor.
        reduce_filters: channels of the 1x1 reduction (Conv2a / Conv3a).
        conv_filters: channels of the 3x3 conv (Conv2b / Conv3b).
        pool_proj_filters: channels of the 1x1 conv after the pool (Conv2c / Conv3c).
        extra_conv_filters: channels of a parallel 5x5 conv on the reduction; 0 for none.
        extra_pool_filters: channels of a parallel 3x3 conv on the pool; 0 for none.
        kernel_initializer: see `fer_keras.models.layers.initializer`.
        name: layer name prefix.

    Returns:
        The pooled concatenation.
    """

    def conv(tensor, filters, kernel, suffix):
        return layers.Conv2D(filters, kernel, padding="same", activation="relu",
                             kernel_initializer=initializer(kernel_initializer),
                             name=f"{name}_{suffix}")(tensor)

    reduced = conv(x, reduce_filters, 1, "conv_a")
    branches = [conv(reduced, conv_filters, 3, "conv_b")]
    if extra_conv_filters:
        branches.append(conv(reduced, extra_conv_filters, 5, "conv_b_wide"))
    pooled = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool_a")(x)
    branches.append(conv(pooled, pool_proj_filters, 1, "conv_c"))
    if extra_pool_filters:
        branches.append(conv(pooled, extra_pool_filters, 3, "conv_c_wide"))
    x = layers.Concatenate(name=f"{name}_concat")(branches)
    return layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool_b")(x)


def dexpression_net(input_shape=(48, 48, 1), num_classes=7, normalization_kind="lrn",
                    dropout_rate=0.0, wide=False, kernel_initializer="glorot_uniform",
                    name="dexpression"):
    """Builds DeXpression: 7x7/2 stem, max pool, LRN, two FeatEx blocks, Dense(7).

    Args:
        input_shape: raw image shape.
        num_classes: number of classes.
        normalization_kind: "lrn" (as the paper), "batch_norm" (the common substitute)
            or "none", applied after the stem pool.
        dropout_rate: dropout before the classifier (a free choice; the paper has none).
        wide: add the study's parallel 128-channel convs (row K).
        kernel_initializer: see `fer_keras.models.layers.initializer`.
        name: model name.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = preprocess(inputs)
    x = layers.Conv2D(64, 7, strides=2, padding="same", activation="relu",
                      kernel_initializer=initializer(kernel_initializer), name="conv1")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = normalization(x, normalization_kind, name="norm1")
    extra = 128 if wide else 0
    x = featex_block(x, extra_conv_filters=extra, kernel_initializer=kernel_initializer,
                     name="featex1")
    x = featex_block(x, extra_pool_filters=extra, kernel_initializer=kernel_initializer,
                     name="featex2")
    x = layers.Flatten(name="flatten")(x)
    if dropout_rate:
        x = layers.Dropout(dropout_rate, name="head_dropout")(x)
    outputs = classifier_head(x, num_classes, kernel_initializer)
    return keras.Model(inputs, outputs, name=name)


@register_model(forwards_to=dexpression_net)
def dexpression(normalization="lrn", **kwargs):
    """Row J: DeXpression with LRN (or `normalization="batch_norm"`)."""
    return dexpression_net(normalization_kind=normalization, name="dexpression", **kwargs)


@register_model(forwards_to=dexpression_net)
def dexpression_wide(normalization="lrn", **kwargs):
    """Row K: DeXpression with a 128-channel 5x5 conv beside Conv2b and a 128-channel 3x3
    conv beside Conv3c."""
    return dexpression_net(normalization_kind=normalization, wide=True,
                           name="dexpression_wide", **kwargs)
