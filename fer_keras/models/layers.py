"""Layers with math of their own, written in `keras.ops` so they run on any backend.

* `LocalResponseNormalization`: AlexNet/Caffe cross-channel LRN.
* `SpatialTransformer`: warps an image with a per-sample 2x3 affine theta using a bilinear
  sampler whose gradients reach theta (Jaderberg et al., 2015, arXiv 1506.02025).
* `TestTimeAugmentation`: trains the wrapped model as it is and, at inference, averages its
  probabilities over several views of each face (mirror, small shifts); `MirrorAverage`
  is its two-view form (the face and its mirror).

Shared helpers used by every builder (`preprocess`, `classifier_head`, `initializer`) live
here too, so all models normalise inputs and emit probabilities the same way.
"""

import keras
import numpy as np
from keras import layers, ops

PACKAGE = "fer_keras"


@keras.saving.register_keras_serializable(package=PACKAGE)
class LocalResponseNormalization(layers.Layer):
    """Cross-channel local response normalisation (Krizhevsky et al., 2012).

    `y = x / (k + alpha / size * sum_{window} x^2) ** beta`, the window spanning `size`
    neighbouring channels (the Caffe convention, which divides alpha by the size).

    Args:
        size: number of channels in the window (odd).
        alpha: scale.
        beta: exponent.
        k: offset.
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"size must be a positive odd integer. Received: size={size}")
        self.size = size
        self.alpha = alpha
        self.beta = beta
        self.k = k

    def build(self, input_shape):
        # The window sum over channels as one product with a band matrix of ones:
        # band[i, j] = 1 where |i - j| <= size // 2 (a constant, not a weight).
        channels = input_shape[-1]
        positions = np.arange(channels)
        self._band = (np.abs(positions[:, None] - positions[None, :]) <= self.size // 2
                      ).astype("float32")

    def call(self, inputs):
        band = ops.cast(self._band, inputs.dtype)
        window_sum = ops.matmul(ops.square(inputs), band)
        scale = self.k + (self.alpha / self.size) * window_sum
        return inputs / ops.power(scale, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, alpha=self.alpha, beta=self.beta, k=self.k)
        return config


def affine_grid_sample(images, theta):
    """Samples `images` at an affine grid, bilinearly, with zeros outside the image.

    Coordinates are normalised to [-1, 1] with pixel centres at `(2i + 1) / size - 1`
    (PyTorch's `align_corners=False`), so theta `[1, 0, 0, 0, 1, 0]` returns the input.
    Written with gathers and arithmetic only, so the gradient flows to theta.

    Args:
        images: `(batch, height, width, channels)` float tensor.
        theta: `(batch, 6)` rows `[a, b, tx, c, d, ty]`: source x = a*x + b*y + tx,
            source y = c*x + d*y + ty for each output location (x, y).

    Returns:
        The warped images, same shape as `images`.
    """
    shape = ops.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    dtype = images.dtype
    height_f = ops.cast(height, dtype)
    width_f = ops.cast(width, dtype)
    ys = (2.0 * ops.cast(ops.arange(height), dtype) + 1.0) / height_f - 1.0
    xs = (2.0 * ops.cast(ops.arange(width), dtype) + 1.0) / width_f - 1.0
    grid_y, grid_x = ops.meshgrid(ys, xs, indexing="ij")
    grid_x = ops.reshape(grid_x, (1, -1))
    grid_y = ops.reshape(grid_y, (1, -1))
    theta = ops.cast(theta, dtype)
    source_x = theta[:, 0:1] * grid_x + theta[:, 1:2] * grid_y + theta[:, 2:3]
    source_y = theta[:, 3:4] * grid_x + theta[:, 4:5] * grid_y + theta[:, 5:6]
    # Back to pixel units; pixel i spans [i - 0.5, i + 0.5].
    pixel_x = ((source_x + 1.0) * width_f - 1.0) / 2.0
    pixel_y = ((source_y + 1.0) * height_f - 1.0) / 2.0
    x0 = ops.floor(pixel_x)
    y0 = ops.floor(pixel_y)
    weight_x1 = pixel_x - x0
    weight_y1 = pixel_y - y0
    # One gather instead of four: each pixel of `quads` holds its own value and those of its
    # right, lower and lower-right neighbours, so the corner (x0, y0) fetches all four
    # corners. Two zero pixels on every side stand for "outside the image": corners are
    # clipped to [-2, size], where every clipped corner lands on padding and reads zero.
    padded = ops.pad(images, [[0, 0], [2, 2], [2, 2], [0, 0]])
    quads = ops.concatenate([padded[:, :-1, :-1], padded[:, :-1, 1:],
                             padded[:, 1:, :-1], padded[:, 1:, 1:]], axis=-1)
    index_x = ops.cast(ops.clip(x0, -2.0, width_f), "int32") + 2
    index_y = ops.cast(ops.clip(y0, -2.0, height_f), "int32") + 2
    index = index_y * (width + 3) + index_x
    flat = ops.reshape(quads, (batch, -1, 4 * channels))
    values = ops.take_along_axis(flat, ops.expand_dims(index, -1), axis=1)
    values = ops.reshape(values, (batch, -1, 4, channels))
    weight_x0, weight_y0 = 1.0 - weight_x1, 1.0 - weight_y1
    weights = ops.stack([weight_x0 * weight_y0, weight_x1 * weight_y0,
                         weight_x0 * weight_y1, weight_x1 * weight_y1], axis=-1)
    output = ops.sum(values * ops.expand_dims(weights, -1), axis=2)
    return ops.reshape(output, shape)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SpatialTransformer(layers.Layer):
    """Applies a predicted affine transform to an image (the sampler of an STN).

    Called on `[images, theta]`, where theta is the `(batch, 6)` output of a localisation
    network. The localisation head that predicts theta is built with ordinary layers by the
    model (see `identity_theta_initializers`), so its weights are plain Dense weights.

    Example:

    >>> theta = layers.Dense(6, **identity_theta_initializers())(features)
    >>> warped = SpatialTransformer()([images, theta])
    """

    def call(self, inputs):
        images, theta = inputs
        return affine_grid_sample(images, theta)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def parse_view(view):
    """Turns a view name into `(mirror, dx, dy)`.

    Names: "identity", "mirror", "shift:DX,DY" (move the face DX pixels right and DY down,
    zeros entering at the edges as in training's augmentation) and "mirror_shift:DX,DY".
    """
    name, _, offsets = str(view).partition(":")
    if name in ("identity", "mirror") and not offsets:
        return name == "mirror", 0, 0
    if name in ("shift", "mirror_shift"):
        try:
            dx, dy = (int(value) for value in offsets.split(","))
        except ValueError:
            dx = dy = None
        if dx is not None and max(abs(dx), abs(dy)) < 24:
            return name == "mirror_shift", dx, dy
    raise ValueError(f"Unknown test-time view {view!r}. Use 'identity', 'mirror', "
                     f"'shift:DX,DY' or 'mirror_shift:DX,DY' with integer pixel offsets "
                     f"below 24. Received: view={view!r}")


VIEW_SETS = {
    "mirror": ("identity", "mirror"),
    "shifts": ("identity", "mirror", "shift:2,0", "shift:-2,0", "shift:0,2", "shift:0,-2"),
    "ten": ("identity", "mirror", "shift:2,2", "shift:-2,2", "shift:2,-2", "shift:-2,-2",
            "mirror_shift:2,2", "mirror_shift:-2,2", "mirror_shift:2,-2",
            "mirror_shift:-2,-2"),
}
"""Named view lists: "ten" is a ten-crop in spirit (the face, its mirror, and both shifted
toward the four corners), done by shifting so the network keeps its 48x48 input."""


def resolve_views(views):
    """Checks views: a set name ("mirror", "shifts", "ten"), a list of names, or "a|b|c"."""
    if isinstance(views, str):
        views = VIEW_SETS.get(views, views.split("|"))
    views = tuple(views)
    if not views:
        raise ValueError("Give at least one test-time view. Received: views=()")
    for view in views:
        parse_view(view)
    return views


def apply_view(images, view):
    """Applies one view (see `parse_view`) to a `(batch, H, W, C)` batch with `keras.ops`."""
    mirror, dx, dy = parse_view(view)
    if mirror:
        images = ops.flip(images, axis=2)
    if dx or dy:
        height, width = images.shape[1], images.shape[2]
        pad_x, pad_y = abs(dx), abs(dy)
        padded = ops.pad(images, [[0, 0], [pad_y, pad_y], [pad_x, pad_x], [0, 0]])
        top = pad_y - dy
        left = pad_x - dx
        images = padded[:, top:top + height, left:left + width, :]
    return images


@keras.saving.register_keras_serializable(package=PACKAGE)
class TestTimeAugmentation(layers.Layer):
    """Averages `model`'s probabilities over several views of each face, at inference only.

    In training (`model.fit`) it is exactly `model`, so training costs nothing more, while
    evaluation and serving pay one forward pass per view. Any zoo model (or any Keras model
    from images to probabilities) can be wrapped, trained or not.

    Args:
        model: a Keras model from `(batch, H, W, C)` images to class probabilities.
        views: view names or a set name (see `VIEW_SETS`, `parse_view`); "identity" alone
            gives the plain model.

    Example:

    >>> wrapped = TestTimeAugmentation(model, views="shifts")
    """

    def __init__(self, model, views=("identity", "mirror"), **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.views = resolve_views(views)

    def call(self, inputs, training=None):
        if training:
            return self.model(inputs, training=True)
        outputs = [self.model(apply_view(inputs, view), training=False) for view in self.views]
        return ops.mean(ops.stack(outputs, axis=0), axis=0)

    def compute_output_shape(self, input_shape):
        return self.model.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "views": list(self.views),
                "model": keras.saving.serialize_keras_object(self.model)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MirrorAverage(TestTimeAugmentation):
    """`TestTimeAugmentation` with the face and its left-right mirror (2 passes per face).

    Faces are nearly symmetric and the training data are flipped at random, so the mirrored
    view is a second, nearly independent guess of the same expression. Kept as its own
    class so models saved before the general wrapper existed still load.
    """

    def __init__(self, model, **kwargs):
        kwargs.pop("views", None)
        super().__init__(model, views=("identity", "mirror"), **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("views")
        return config


def mirror_averaged(inputs, outputs, name, mirror_average=True):
    """The builders' last step: `keras.Model(inputs, outputs, name=name)`, wrapped in a
    `MirrorAverage` layer when `mirror_average` (the bare network is then `NAME_body`)."""
    if not mirror_average:
        return keras.Model(inputs, outputs, name=name)
    body = keras.Model(inputs, outputs, name=f"{name}_body")
    image = keras.Input(shape=inputs.shape[1:], name="image")
    return keras.Model(image, MirrorAverage(body, name="mirror_average")(image), name=name)


def wrap_with_views(model, views):
    """A model that averages `model` (unwrapped first if it already averages views) over
    `views`; `views` of ("identity",) returns the bare network."""
    inner = unwrap_views(model)
    views = resolve_views(views)
    if views == ("identity",):
        return inner
    image = keras.Input(shape=inner.input_shape[1:], name="image")
    wrapper = TestTimeAugmentation(inner, views=views, name="test_time_augmentation")
    return keras.Model(image, wrapper(image), name=model.name)


def unwrap_views(model):
    """The network inside `model`'s `TestTimeAugmentation` layer, or `model` if none."""
    for layer in model.layers:
        if isinstance(layer, TestTimeAugmentation):
            return layer.model
    return model


def forward_passes(model):
    """Forward passes of the network per face at inference (1 without test-time views)."""
    for layer in model.layers:
        if isinstance(layer, TestTimeAugmentation):
            return len(layer.views)
    return 1


@keras.saving.register_keras_serializable(package=PACKAGE)
class LogitAdjustment(layers.Layer):
    """Post-hoc logit adjustment for imbalanced classes (Menon et al., "Long-tail learning
    via logit adjustment", arXiv 2007.07314).

    Takes class probabilities and returns `softmax(log p - tau * log prior)`: classes rarer
    in training are raised in proportion to how rare they were. `tau=0` is the identity;
    `tau=1` undoes the training prior entirely.

    Args:
        prior: training-set class frequencies (sum to 1).
        tau: adjustment strength.
    """

    def __init__(self, prior, tau=1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        prior = np.asarray(prior, dtype="float64")
        if prior.ndim != 1 or (prior <= 0).any():
            raise ValueError(f"prior must be positive class frequencies. Received: "
                             f"prior={prior.tolist()}")
        self.prior = [float(value) for value in prior / prior.sum()]
        self.tau = float(tau)

    def call(self, probabilities):
        shift = self.tau * np.log(np.asarray(self.prior, dtype="float32"))
        logits = ops.log(ops.maximum(ops.cast(probabilities, "float32"), 1e-12)) - shift
        return ops.softmax(logits, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "prior": self.prior, "tau": self.tau}


def all_layers(model):
    """Every layer of `model`, descending into nested models (such as `MirrorAverage`'s)."""
    for layer in model.layers:
        yield layer
        inner = layer.model if isinstance(layer, TestTimeAugmentation) else layer
        if isinstance(inner, keras.Model):
            yield from all_layers(inner)


def identity_theta_initializers():
    """Initialisers for the last localisation Dense: zero weights, identity bias."""
    return {
        "kernel_initializer": "zeros",
        "bias_initializer": keras.initializers.Constant([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
    }


INITIALIZERS = {
    # The study's two choices, plus Keras' defaults for everything else.
    "study_normal": lambda: keras.initializers.RandomNormal(mean=0.0, stddev=0.05),
    "orthogonal": lambda: keras.initializers.Orthogonal(),
}


def initializer(name):
    """Resolves a kernel initializer name ("study_normal", "orthogonal", or any Keras name)."""
    if name in INITIALIZERS:
        return INITIALIZERS[name]()
    try:
        return keras.initializers.get(name)
    except ValueError as error:
        raise ValueError(f"Unknown kernel_initializer. Use 'study_normal' (N(0, 0.05)), "
                         f"'orthogonal' or a Keras initializer name. Received: "
                         f"kernel_initializer={name!r}") from error


def preprocess(inputs):
    """Maps raw 0-255 pixels to [-1, 1] inside the graph, so saved models need no wrapper.

    Zero-centred inputs matter for the study's plain (no batch norm) nets: with [0, 1]
    inputs the deep dropout net sat at the majority class for its first epochs.
    """
    return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)


def classifier_head(x, num_classes, kernel_initializer="glorot_uniform"):
    """The shared output layer: float32 softmax probabilities named "probabilities"."""
    return layers.Dense(num_classes, activation="softmax", dtype="float32",
                        kernel_initializer=initializer(kernel_initializer),
                        name="probabilities")(x)


def normalization(x, kind, name):
    """Applies "batch_norm", "lrn" or nothing ("none"/None) to `x`."""
    if kind in (None, "none"):
        return x
    if kind == "batch_norm":
        return layers.BatchNormalization(name=f"{name}_bn")(x)
    if kind == "lrn":
        return LocalResponseNormalization(name=f"{name}_lrn")(x)
    raise ValueError(f"normalization must be 'batch_norm', 'lrn' or 'none'. "
                     f"Received: normalization={kind!r}")


def graph_inputs(model):
    """`model`'s input tensor, or its list of inputs when it has several: what a new
    `keras.Model` over its graph should take, so that it is called with a bare batch."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs
