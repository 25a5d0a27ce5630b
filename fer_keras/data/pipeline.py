"""The input pipeline that needs no TensorFlow: `keras.utils.PyDataset` batches.

On the TensorFlow backend `fer_keras.data.sources.make_dataset` builds a `tf.data` pipeline; on
JAX and PyTorch (and for a streamed image folder on any backend) it builds `ArrayBatches`,
which slices NumPy arrays, or decodes image files, one batch at a time and augments the
whole batch with `Augmentation.apply_numpy`. Both give the same batches: float32 images
0-255 and one-hot float targets (or label ids), reshuffled every epoch.

Example:

>>> batches = ArrayBatches(images, labels, batch_size=128, shuffle=True, seed=0,
...                        augmentation=Augmentation("study"))
>>> model.fit(batches, epochs=2)
"""

import math

import keras
import numpy as np

from fer_keras.data.labels import FER2013


class ArrayBatches(keras.utils.PyDataset):
    """Batches of `(float32 images, targets)` from an image array or an `ImageFiles` list.

    The batch order is a permutation drawn from `(seed, epoch)` and each batch's
    augmentation from `(seed, epoch, batch)`, so a run is reproducible whatever the
    number of worker threads and whichever batch a thread takes first.

    Args:
        images: uint8 `(N, 48, 48, 1)` array, or any object with `len()` whose
            `images[indices]` returns such an array (`fer_keras.data.sources.ImageFiles` decodes
            the files there, so a folder streams from disk).
        labels: int `(N,)` label ids, or float `(N, num_classes)` target distributions.
        batch_size: images per batch (the last one may be smaller).
        shuffle: reshuffle every epoch.
        augmentation: an `Augmentation` (its `apply_numpy` is used), or None.
        seed: seed of the order and the augmentation; None draws one.
        one_hot: one-hot float targets (needed for label smoothing) instead of ids.
        workers: threads preparing batches ahead of the model (decoding releases the GIL).
        drop_remainder: leave out the last, partial batch.
        num_classes: the width of one-hot targets (the label set's class count).
        mixing: a `fer_keras.data.mixing.BatchMixing` for each batch and its targets, or None.
    """

    def __init__(self, images, labels, batch_size=128, shuffle=False, augmentation=None,
                 seed=None, one_hot=True, workers=1, drop_remainder=False,
                 num_classes=FER2013.num_classes, mixing=None):
        super().__init__(workers=workers, use_multiprocessing=False,
                         max_queue_size=max(10, 2 * workers))
        if len(images) != len(labels):
            raise ValueError(f"images and labels differ in length. Received: "
                             f"{len(images)} images and {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.augmentation = augmentation
        self.seed = int(np.random.SeedSequence().entropy % (2 ** 32)) if seed is None \
            else int(seed)
        self.one_hot = one_hot
        self.drop_remainder = drop_remainder
        self.num_classes = int(num_classes)
        self.mixing = mixing
        self.epoch = 0
        self._order = self._permutation()

    def _permutation(self):
        if not self.shuffle:
            return np.arange(len(self.labels))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))

    def __len__(self):
        if self.drop_remainder:
            return len(self.labels) // self.batch_size
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            # Python's sequence protocol (`iter`, `for`) stops at IndexError.
            raise IndexError(f"batch {index} of {len(self)}")
        rows = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        rows = np.sort(rows) if not self.shuffle else rows
        x = np.asarray(self.images[rows], np.float32)
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            x = self.augmentation.apply_numpy(x, rng)
        y = self.labels[rows]
        if self.one_hot and y.ndim == 1:
            y = np.eye(self.num_classes, dtype=np.float32)[y]
        elif y.ndim == 2:
            # Target distributions (FER+ votes) are already one row per image.
            y = y.astype(np.float32)
        if self.mixing is not None:
            # Its own stream, so adding mixing leaves the augmentation draws as they were.
            x, y = self.mixing.apply_numpy(x, y, np.random.default_rng(
                [self.seed, self.epoch, index, 1]))
        return x, y

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._permutation()
