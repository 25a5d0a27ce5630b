"""Batch-wise image augmentation for both input pipelines.

Every transform used by the study is affine, so each image's transform is built as one 3x3
matrix and a whole batch is warped at once. That is much cheaper on CPU than mapping a
chain of per-image ops. The same matrices drive two warps:

* `Augmentation.__call__`, TensorFlow's `ImageProjectiveTransformV3`, inside the `tf.data`
  pipeline of the TensorFlow backend;
* `Augmentation.apply_numpy`, a NumPy bilinear warp with the same conventions, in the
  `keras.utils.PyDataset` pipeline that JAX and PyTorch backends train on without
  TensorFlow (`fer_keras.data.sources.ArrayBatches`).

Policies:

* "study": per image, one transform chosen uniformly among
  random affine (rotation up to 10 degrees and shift up to 10%), horizontal flip (p=0.5),
  random resized crop back to 48x48 (area 50-100%, aspect 3/4-4/3), rotation up to 10
  degrees. This is the study's `RandomChoice` block.
* "combined": every image gets all of them at once (flip p=0.5, rotation up to
  `max_rotation` degrees, zoom, shift), the usual recipe of the stronger FER nets.

Example:

>>> augment = Augmentation("study")
>>> batch = augment(tf.zeros([8, 48, 48, 1]))
>>> batch = augment.apply_numpy(np.zeros([8, 48, 48, 1], "float32"), np.random.default_rng(0))
"""

import math

import numpy as np

POLICIES = ("study", "combined")


class Augmentation:
    """A reusable, configurable augmentation block for float image batches.

    Args:
        policy: "study" or "combined" (see the module docstring).
        max_rotation: largest rotation, in degrees.
        max_shift: largest shift, as a fraction of the image side.
        crop_area: `(min, max)` fraction of the area kept by a random resized crop.
        aspect_ratio: `(min, max)` width/height ratio of a random resized crop.
        zoom: `(min, max)` scale of the "combined" policy.
        seed: optional op seed.
    """

    def __init__(self, policy="study", max_rotation=10.0, max_shift=0.1, crop_area=(0.5, 1.0),
                 aspect_ratio=(3 / 4, 4 / 3), zoom=(0.9, 1.1), seed=None):
        if policy not in POLICIES:
            raise ValueError(f"Unknown augmentation policy. Use one of {POLICIES}. "
                             f"Received: policy={policy!r}")
        self.policy = policy
        self.max_rotation = float(max_rotation)
        self.max_shift = float(max_shift)
        self.crop_area = tuple(crop_area)
        self.aspect_ratio = tuple(aspect_ratio)
        self.zoom = tuple(zoom)
        self.seed = seed

    def get_config(self):
        return {"policy": self.policy, "max_rotation": self.max_rotation,
                "max_shift": self.max_shift, "crop_area": list(self.crop_area),
                "aspect_ratio": list(self.aspect_ratio),
                "zoom": list(self.zoom), "seed": self.seed}

    def _uniform(self, batch, low, high):
        # TensorFlow loads on first use (and is absent on the JAX and torch extras).
        import tensorflow as tf

        return tf.random.uniform([batch], low, high, seed=self.seed)

    def matrices(self, batch, height, width):
        """Per-image 3x3 matrices mapping output pixel coordinates to input coordinates."""
        # TensorFlow loads on first use (and is absent on the JAX and torch extras).
        import tensorflow as tf

        def choose(count):
            return tf.random.uniform([batch], 0, count, dtype=tf.int32, seed=self.seed)

        return self._matrices(tf, batch, tf.cast(tf.stack([width, height]), tf.float32),
                              lambda low, high: self._uniform(batch, low, high), choose,
                              lambda options, choice: tf.gather(options, choice, batch_dims=1))

    def matrices_numpy(self, batch, height, width, rng):
        """`matrices` in NumPy, drawing from `rng` (a `numpy.random.Generator`)."""
        size = np.asarray([width, height], np.float32)
        return self._matrices(
            np, batch, size,
            lambda low, high: rng.uniform(low, high, batch).astype(np.float32),
            lambda count: rng.integers(0, count, batch),
            lambda options, choice: options[np.arange(batch), choice])

    def _matrices(self, xp, batch, size, uniform, choose, gather):
        # `xp` is `tf` or `np`: both spell these operations the same way.
        center_x = (size[0] - 1.0) / 2.0
        center_y = (size[1] - 1.0) / 2.0
        radians = math.radians(self.max_rotation)
        one = xp.ones([batch], "float32")
        zero = xp.zeros([batch], "float32")

        def about_center(scale_x, scale_y, angle, shift_x, shift_y):
            # Input = R * S * (output - center) + center + shift.
            cos, sin = xp.cos(angle), xp.sin(angle)
            a, b = cos * scale_x, -sin * scale_y
            c, d = sin * scale_x, cos * scale_y
            tx = center_x + shift_x - a * center_x - b * center_y
            ty = center_y + shift_y - c * center_x - d * center_y
            return xp.stack([a, b, tx, c, d, ty, zero, zero, one], axis=1)

        flip = xp.where(uniform(0.0, 1.0) < 0.5, -1.0, 1.0)
        angle = uniform(-radians, radians)
        shift_x = uniform(-self.max_shift, self.max_shift) * size[0]
        shift_y = uniform(-self.max_shift, self.max_shift) * size[1]
        if self.policy == "combined":
            scale = 1.0 / uniform(self.zoom[0], self.zoom[1])
            return about_center(flip * scale, scale, angle, shift_x, shift_y)
        # Random resized crop: keep `area` of the image at aspect `ratio`, anywhere inside.
        area = uniform(self.crop_area[0], self.crop_area[1])
        ratio = xp.exp(uniform(math.log(self.aspect_ratio[0]), math.log(self.aspect_ratio[1])))
        crop_w = xp.minimum(xp.sqrt(area * ratio), 1.0)
        crop_h = xp.minimum(xp.sqrt(area / ratio), 1.0)
        crop_shift_x = uniform(-1.0, 1.0) * (1.0 - crop_w) / 2.0 * size[0]
        crop_shift_y = uniform(-1.0, 1.0) * (1.0 - crop_h) / 2.0 * size[1]
        options = xp.stack([
            about_center(one, one, angle, shift_x, shift_y),         # random affine
            about_center(flip, one, zero, zero, zero),               # horizontal flip
            about_center(crop_w, crop_h, zero, crop_shift_x, crop_shift_y),  # resized crop
            about_center(one, one, angle, zero, zero),               # rotation
        ], axis=1)
        return gather(options, choose(4))

    def __call__(self, images, training=True):
        """Augments a float batch `(batch, height, width, channels)`; identity if not training."""
        # TensorFlow loads on first use (and is absent on the JAX and torch extras).
        import tensorflow as tf

        if not training:
            return images
        images = tf.convert_to_tensor(images, tf.float32)
        shape = tf.shape(images)
        matrices = self.matrices(shape[0], shape[1], shape[2])
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=matrices[:, :8], output_shape=shape[1:3],
            fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")

    def apply_numpy(self, images, rng):
        """Augments a float32 NumPy batch `(batch, height, width, channels)` without TensorFlow.

        The warp is `warp_bilinear` (TensorFlow's bilinear, constant-zero fill), so both
        pipelines train on the same distribution of images.

        Args:
            images: float32 array `(batch, height, width, channels)`.
            rng: a `numpy.random.Generator` (the pipeline's, so runs are reproducible).
        """
        images = np.asarray(images, np.float32)
        batch, height, width = images.shape[:3]
        matrices = self.matrices_numpy(batch, height, width, rng)
        return warp_bilinear(images, matrices)


def warp_bilinear(images, matrices):
    """Warps each image by its 3x3 matrix (output pixel -> input pixel), bilinear, zero fill.

    The NumPy twin of `ImageProjectiveTransformV3(interpolation="BILINEAR",
    fill_mode="CONSTANT", fill_value=0)`: each of the four neighbours of a sample that
    falls outside the image reads 0.

    Args:
        images: float32 `(batch, height, width, channels)`.
        matrices: `(batch, 9)` row-major 3x3 matrices, as `Augmentation.matrices` builds.

    Returns:
        float32 array of the same shape.
    """
    batch, height, width, channels = images.shape
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float32),
                             np.arange(width, dtype=np.float32), indexing="ij")
    m = np.asarray(matrices, np.float32).reshape(batch, 9, 1, 1)
    divisor = m[:, 6] * cols + m[:, 7] * rows + 1.0
    x = (m[:, 0] * cols + m[:, 1] * rows + m[:, 2]) / divisor
    y = (m[:, 3] * cols + m[:, 4] * rows + m[:, 5]) / divisor
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    image_index = np.arange(batch)[:, None, None]
    padded = np.zeros((batch, height + 2, width + 2, channels), np.float32)
    padded[:, 1:-1, 1:-1] = images

    def sample(ys, xs):
        # Neighbours outside the image read the zero border of `padded`.
        inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
        ys = np.where(inside, ys + 1, 0)
        xs = np.where(inside, xs + 1, 0)
        return padded[image_index, ys, xs]

    top = sample(y0, x0) * (1.0 - fx) + sample(y0, x0 + 1) * fx
    bottom = sample(y0 + 1, x0) * (1.0 - fx) + sample(y0 + 1, x0 + 1) * fx
    return (top * (1.0 - fy) + bottom * fy).astype(np.float32)
