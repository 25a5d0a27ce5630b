"""Batch-wise image augmentation for the `tf.data` pipeline.

Every transform used by the study is affine, so each image's transform is built as one 3x3
matrix and a whole batch is warped by a single `ImageProjectiveTransformV3` call. That is
much cheaper on CPU than mapping a chain of per-image ops.

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
"""

import math

import tensorflow as tf

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
        return tf.random.uniform([batch], low, high, seed=self.seed)

    def matrices(self, batch, height, width):
        """Per-image 3x3 matrices mapping output pixel coordinates to input coordinates."""
        size = tf.cast(tf.stack([width, height]), tf.float32)
        center_x = (size[0] - 1.0) / 2.0
        center_y = (size[1] - 1.0) / 2.0
        radians = math.radians(self.max_rotation)
        one = tf.ones([batch])
        zero = tf.zeros([batch])

        def about_center(scale_x, scale_y, angle, shift_x, shift_y):
            # Input = R * S * (output - center) + center + shift.
            cos, sin = tf.cos(angle), tf.sin(angle)
            a, b = cos * scale_x, -sin * scale_y
            c, d = sin * scale_x, cos * scale_y
            tx = center_x + shift_x - a * center_x - b * center_y
            ty = center_y + shift_y - c * center_x - d * center_y
            return tf.stack([a, b, tx, c, d, ty, zero, zero, one], axis=1)

        flip = tf.where(self._uniform(batch, 0.0, 1.0) < 0.5, -1.0, 1.0)
        angle = self._uniform(batch, -radians, radians)
        shift_x = self._uniform(batch, -self.max_shift, self.max_shift) * size[0]
        shift_y = self._uniform(batch, -self.max_shift, self.max_shift) * size[1]
        if self.policy == "combined":
            scale = 1.0 / self._uniform(batch, self.zoom[0], self.zoom[1])
            return about_center(flip * scale, scale, angle, shift_x, shift_y)
        # Random resized crop: keep `area` of the image at aspect `ratio`, anywhere inside.
        area = self._uniform(batch, self.crop_area[0], self.crop_area[1])
        ratio = tf.exp(self._uniform(batch, math.log(self.aspect_ratio[0]),
                                     math.log(self.aspect_ratio[1])))
        crop_w = tf.minimum(tf.sqrt(area * ratio), 1.0)
        crop_h = tf.minimum(tf.sqrt(area / ratio), 1.0)
        crop_shift_x = self._uniform(batch, -1.0, 1.0) * (1.0 - crop_w) / 2.0 * size[0]
        crop_shift_y = self._uniform(batch, -1.0, 1.0) * (1.0 - crop_h) / 2.0 * size[1]
        options = tf.stack([
            about_center(one, one, angle, shift_x, shift_y),         # random affine
            about_center(flip, one, zero, zero, zero),               # horizontal flip
            about_center(crop_w, crop_h, zero, crop_shift_x, crop_shift_y),  # resized crop
            about_center(one, one, angle, zero, zero),               # rotation
        ], axis=1)
        choice = tf.random.uniform([batch], 0, 4, dtype=tf.int32, seed=self.seed)
        return tf.gather(options, choice, batch_dims=1)

    def __call__(self, images, training=True):
        """Augments a float batch `(batch, height, width, channels)`; identity if not training."""
        if not training:
            return images
        images = tf.convert_to_tensor(images, tf.float32)
        shape = tf.shape(images)
        matrices = self.matrices(shape[0], shape[1], shape[2])
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=matrices[:, :8], output_shape=shape[1:3],
            fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
