"""Mixup and CutMix: training batches whose images and targets are mixed in pairs.

Each batch is paired with itself in reverse order (the batch is already shuffled, so the
pairs are random) and one proportion `lam` is drawn from Beta(alpha, alpha) per batch:

* mixup (Zhang et al. 2018): `x = lam * x + (1 - lam) * x_pair`, targets alike;
* CutMix (Yun et al. 2019): a box covering about `1 - lam` of the image is pasted from the
  pair, and the targets are mixed by the share of pixels each image keeps;
* both: each batch is one or the other, with even odds.

As `fer_keras.data.augmentation`, the same arithmetic runs in TensorFlow (`__call__`, in
the `tf.data` pipeline) and NumPy (`apply_numpy`, in the `PyDataset` pipeline of the JAX
and PyTorch backends). Targets must be one-hot or distributions (float `(batch, classes)`).

Example:

>>> mix = BatchMixing("mixup", alpha=0.4)
>>> x, y = mix.apply_numpy(np.zeros([8, 48, 48, 1], "float32"), np.eye(7)[[0] * 8],
...                        np.random.default_rng(0))
"""

import numpy as np

MODES = ("mixup", "cutmix", "both")


class BatchMixing:
    """Mixes each training batch with itself reversed (see the module docstring).

    Args:
        mode: "mixup", "cutmix" or "both".
        alpha: the Beta(alpha, alpha) parameter; small values mix little most of the time.
        seed: optional op seed (TensorFlow).
    """

    def __init__(self, mode="mixup", alpha=1.0, seed=None):
        if mode not in MODES:
            raise ValueError(f"Unknown mixing. Use one of {', '.join(MODES)}. "
                             f"Received: mixing={mode!r}")
        if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
                and np.isfinite(alpha) and alpha > 0):
            raise ValueError(f"mixing_alpha must be a finite number > 0. Received: "
                             f"mixing_alpha={alpha!r}")
        self.mode, self.alpha, self.seed = mode, float(alpha), seed

    def get_config(self):
        return {"mode": self.mode, "alpha": self.alpha, "seed": self.seed}

    @staticmethod
    def box(height, width, lam, center_y, center_x):
        """The CutMix box `(top, bottom, left, right)` of about `(1 - lam)` of the image
        around a centre, clipped to the image (NumPy or scalar arithmetic)."""
        ratio = np.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        top = int(np.clip(center_y - cut_h // 2, 0, height))
        bottom = int(np.clip(center_y + cut_h // 2, 0, height))
        left = int(np.clip(center_x - cut_w // 2, 0, width))
        right = int(np.clip(center_x + cut_w // 2, 0, width))
        return top, bottom, left, right

    def apply_numpy(self, images, targets, rng):
        """Mixes a float32 NumPy batch and its float targets, drawing from `rng`."""
        images = np.asarray(images, np.float32)
        targets = np.asarray(targets, np.float32)
        if targets.ndim != 2:
            raise ValueError(f"Mixing needs one-hot or distribution targets (batch, classes). "
                             f"Received: targets of shape {targets.shape}")
        lam = float(rng.beta(self.alpha, self.alpha))
        mode = self.mode if self.mode != "both" else ("mixup" if rng.random() < 0.5
                                                      else "cutmix")
        pair_x, pair_y = images[::-1], targets[::-1]
        if mode == "mixup":
            return (lam * images + (1 - lam) * pair_x,
                    (lam * targets + (1 - lam) * pair_y).astype(np.float32))
        height, width = images.shape[1:3]
        top, bottom, left, right = self.box(height, width, lam, rng.integers(height),
                                            rng.integers(width))
        mixed = images.copy()
        mixed[:, top:bottom, left:right] = pair_x[:, top:bottom, left:right]
        kept = 1.0 - (bottom - top) * (right - left) / (height * width)
        return mixed, (kept * targets + (1 - kept) * pair_y).astype(np.float32)

    def __call__(self, images, targets):
        """Mixes a float batch and its float targets in TensorFlow (inside `tf.data`)."""
        # TensorFlow loads on first use (and is absent on the JAX and torch extras).
        import tensorflow as tf

        images = tf.convert_to_tensor(images, tf.float32)
        targets = tf.cast(targets, tf.float32)
        first = tf.random.gamma([], self.alpha, seed=self.seed)
        second = tf.random.gamma([], self.alpha, seed=self.seed)
        lam = first / (first + second)
        pair_x, pair_y = tf.reverse(images, [0]), tf.reverse(targets, [0])

        def mixup():
            return lam * images + (1 - lam) * pair_x, lam * targets + (1 - lam) * pair_y

        def cutmix():
            shape = tf.shape(images)
            height, width = shape[1], shape[2]
            ratio = tf.sqrt(1.0 - lam)
            half_h = tf.cast(tf.cast(height, tf.float32) * ratio, tf.int32) // 2
            half_w = tf.cast(tf.cast(width, tf.float32) * ratio, tf.int32) // 2
            center_y = tf.random.uniform([], 0, height, tf.int32, seed=self.seed)
            center_x = tf.random.uniform([], 0, width, tf.int32, seed=self.seed)
            top = tf.clip_by_value(center_y - half_h, 0, height)
            bottom = tf.clip_by_value(center_y + half_h, 0, height)
            left = tf.clip_by_value(center_x - half_w, 0, width)
            right = tf.clip_by_value(center_x + half_w, 0, width)
            rows, columns = tf.range(height), tf.range(width)
            inside = (((rows >= top) & (rows < bottom))[:, None]
                      & ((columns >= left) & (columns < right))[None, :])
            mask = tf.cast(inside, tf.float32)[None, :, :, None]
            area = tf.cast((bottom - top) * (right - left), tf.float32)
            kept = 1.0 - area / tf.cast(height * width, tf.float32)
            return (images * (1 - mask) + pair_x * mask,
                    kept * targets + (1 - kept) * pair_y)

        if self.mode == "mixup":
            return mixup()
        if self.mode == "cutmix":
            return cutmix()
        return tf.cond(tf.random.uniform([], seed=self.seed) < 0.5, mixup, cutmix)
