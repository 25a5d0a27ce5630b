import keras
import numpy as np
import pytest
from keras import layers

from fer_keras.models import LocalResponseNormalization, SpatialTransformer, get_model
from fer_keras.models.layers import affine_grid_sample

IDENTITY = np.array([[1, 0, 0, 0, 1, 0]], "float32")


def test_identity_theta_reproduces_the_input():
    images = np.random.default_rng(0).random((3, 48, 48, 2)).astype("float32")
    warped = affine_grid_sample(images, np.repeat(IDENTITY, 3, axis=0))
    np.testing.assert_allclose(np.asarray(warped), images, atol=1e-5)


def test_translation_moves_pixels_and_fills_zeros():
    images = np.zeros((1, 8, 8, 1), "float32")
    images[0, 3, 4, 0] = 1.0
    # Sampling at x + 2/8 * 2 (a 2-pixel shift in normalised units) moves content left.
    theta = np.array([[1, 0, 0.5, 0, 1, 0]], "float32")
    warped = np.asarray(affine_grid_sample(images, theta))[0, :, :, 0]
    assert warped[3, 2] == pytest.approx(1.0)
    assert warped[:, 6:].sum() == 0.0  # Sampled beyond the right edge: zeros.


def test_half_pixel_shift_interpolates_bilinearly():
    images = np.zeros((1, 4, 4, 1), "float32")
    images[0, :, 1, 0] = 1.0
    theta = np.array([[1, 0, 0.25, 0, 1, 0]], "float32")  # Half a pixel to the right.
    warped = np.asarray(affine_grid_sample(images, theta))[0, 0, :, 0]
    np.testing.assert_allclose(warped, [0.5, 0.5, 0.0, 0.0], atol=1e-6)


def test_gradient_reaches_theta():
    import tensorflow as tf

    images = tf.constant(np.random.default_rng(1).random((2, 16, 16, 1)), tf.float32)
    theta = tf.Variable(np.repeat(IDENTITY, 2, axis=0))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(affine_grid_sample(images, theta) * images[..., ::-1, :])
    gradient = tape.gradient(loss, theta).numpy()
    assert np.abs(gradient).sum() > 1e-3


def test_training_step_updates_the_localisation_network():
    model = get_model("deep_emotion")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    head = model.get_layer("stn_theta")
    first = model.get_layer("stn_conv1")
    before = [w.copy() for w in head.get_weights() + first.get_weights()]
    images = np.random.default_rng(2).integers(0, 256, (8, 48, 48, 1)).astype("float32")
    targets = keras.utils.to_categorical(np.arange(8) % 7, 7)
    for _ in range(2):
        model.train_on_batch(images, targets)
    after = head.get_weights() + first.get_weights()
    assert not np.allclose(before[0], after[0]), "theta kernel did not move"
    assert not np.allclose(before[2], after[2]), "localisation conv did not move"


def test_spatial_transformer_serialises():
    inputs = keras.Input((8, 8, 1))
    theta = layers.Dense(6, kernel_initializer="zeros",
                         bias_initializer=keras.initializers.Constant(IDENTITY[0]))(
        layers.Flatten()(inputs))
    model = keras.Model(inputs, SpatialTransformer(name="sampler")([inputs, theta]))
    clone = keras.Model.from_config(model.get_config())
    assert isinstance(clone.get_layer("sampler"), SpatialTransformer)


def _lrn_reference(x, size, alpha, beta, k):
    channels = x.shape[-1]
    out = np.empty_like(x)
    for c in range(channels):
        lo, hi = max(0, c - size // 2), min(channels, c + size // 2 + 1)
        out[..., c] = x[..., c] / (k + alpha / size * (x[..., lo:hi] ** 2).sum(-1)) ** beta
    return out


def test_lrn_matches_the_caffe_formula():
    x = np.random.default_rng(3).normal(size=(2, 3, 3, 9)).astype("float32") * 4
    layer = LocalResponseNormalization(size=5, alpha=0.1, beta=0.75, k=2.0)
    np.testing.assert_allclose(np.asarray(layer(x)), _lrn_reference(x, 5, 0.1, 0.75, 2.0),
                               rtol=1e-5)
    assert LocalResponseNormalization.from_config(layer.get_config()).alpha == 0.1


def test_lrn_rejects_even_sizes():
    with pytest.raises(ValueError, match="size"):
        LocalResponseNormalization(size=4)


def _bilinear_reference(images, theta):
    """Loop-by-loop bilinear sampling with zeros outside (align_corners=False)."""
    batch, height, width, channels = images.shape
    output = np.zeros_like(images)
    for b in range(batch):
        a, bb, tx, c, d, ty = theta[b]
        for i in range(height):
            for j in range(width):
                x = (2 * j + 1) / width - 1
                y = (2 * i + 1) / height - 1
                px = ((a * x + bb * y + tx + 1) * width - 1) / 2
                py = ((c * x + d * y + ty + 1) * height - 1) / 2
                x0, y0 = int(np.floor(px)), int(np.floor(py))
                for cy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
                    for cx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
                        if 0 <= cx < width and 0 <= cy < height:
                            output[b, i, j] += wx * wy * images[b, cy, cx]
    return output


def test_sampler_matches_a_loop_reference_inside_at_edges_and_far_outside():
    rng = np.random.default_rng(3)
    images = rng.uniform(-1, 1, (5, 9, 7, 2)).astype("float32")
    theta = np.array([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                      [0.7, -0.5, 0.2, 0.4, 0.9, -0.3],     # rotation, scale and shift
                      [1.3, 0.0, 0.9, 0.0, 1.2, -0.8],      # half the grid past the edges
                      [1.2, 0.0, -1.7, 0.0, 1.1, 1.6],      # far past the left and lower edges
                      [0.1, 0.0, 3.5, 0.0, 0.1, -4.0]],     # entirely outside: zeros
                     dtype="float32")
    expected = _bilinear_reference(images.astype("float64"), theta.astype("float64"))
    warped = np.asarray(affine_grid_sample(images, theta))
    np.testing.assert_allclose(warped, expected, atol=1e-5)
    assert np.all(warped[4] == 0.0)
