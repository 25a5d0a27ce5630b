"""The compile step and training helpers shared by `fit` and the tuner."""

import contextlib
import math
import sys
import time

import keras
import numpy as np

from fer_keras.data.sources import NUM_CLASSES
from fer_keras.models.schedules import WarmupCosine
from fer_keras.training.experiments import OPTIMIZERS, PRECISIONS, SCHEDULES  # noqa: F401


@contextlib.contextmanager
def precision_policy(precision="float32"):
    """Sets Keras' global dtype policy for the models built inside the block, then restores it.

    Every zoo model's classifier is a float32 softmax (`classifier_head`), so probabilities
    and the loss stay float32 under a mixed policy. Under "mixed_float16", `compile` wraps
    the optimizer in Keras' loss scaling by itself.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}. "
                         f"Received: precision={precision!r}")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def make_optimizer(optimizer="adam", learning_rate=1e-3, weight_decay=0.0, schedule="constant",
                   steps_per_epoch=1, epochs=1, warmup_epochs=0):
    """Builds the optimizer named by an experiment.

    Weight decay is decoupled (`weight_decay=` of Keras optimizers), where PyTorch's Adam
    adds an L2 term to the gradient; the tuner searches it either way.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}. "
                         f"Received: optimizer={optimizer!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}. Received: schedule={schedule!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive. Received: learning_rate={learning_rate}")
    rate = learning_rate
    if schedule == "cosine":
        rate = WarmupCosine(learning_rate, steps_per_epoch * epochs,
                            steps_per_epoch * warmup_epochs)
    decay = weight_decay or None
    if optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9, nesterov=True, weight_decay=decay)
    if optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=weight_decay)
    return keras.optimizers.Adam(rate, weight_decay=decay)


def compile_model(model, /, optimizer="adam", learning_rate=1e-3, weight_decay=0.0,
                  schedule="constant", steps_per_epoch=1, epochs=1, warmup_epochs=0,
                  label_smoothing=0.0, **unused):
    """Compiles a zoo model exactly as `fit` does: one-hot cross-entropy on probabilities.

    Extra keyword arguments (other experiment fields) are accepted and ignored, so callers
    can pass a whole resolved settings dict.
    """
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate, weight_decay, schedule,
                                 steps_per_epoch, epochs, warmup_epochs),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )
    return model


def class_weights(labels, mode, num_classes=NUM_CLASSES):
    """Returns `{class: weight}` for `mode="balanced"`, or None for no weighting.

    `labels` are int ids or `(N, num_classes)` target distributions; `num_classes` is the
    label set's class count (FER2013's 7 by default)."""
    if mode in (None, "none"):
        return None
    if mode != "balanced":
        raise ValueError(f"class_weight must be None or 'balanced'. "
                         f"Received: class_weight={mode!r}")
    labels = np.asarray(labels)
    if labels.ndim == 2:
        # Target distributions (FER+ votes): a face counts for each class by its share.
        counts = labels.sum(axis=0).astype(np.float64)
    else:
        counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1.0))
    return {index: float(weight) for index, weight in enumerate(weights)}


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` and `train_images_per_second` to each epoch's logs.

    It must come before loggers in the callback list, since they read the same logs dict.
    """

    def __init__(self, num_images):
        super().__init__()
        self.num_images = num_images
        self._start = None
        self._train_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_seconds = None

    def on_test_begin(self, logs=None):
        # Validation time is excluded from the training throughput.
        if self._start is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self._start is None:
            return
        total = time.perf_counter() - self._start
        train = self._train_seconds if self._train_seconds is not None else total
        logs["epoch_seconds"] = total
        logs["train_images_per_second"] = self.num_images / max(train, 1e-9)


class TrainingDiverged(RuntimeError):
    """Raised when the loss becomes NaN or infinite."""


class StopOnNaN(keras.callbacks.Callback):
    """Aborts training at the first NaN/inf loss, before any checkpoint of bad weights.

    It checks the training loss after every batch, and `val_loss` / `val_accuracy` at the
    end of each epoch. It must come before `ModelCheckpoint` and `BackupAndRestore` in the
    callback list: they run at the same epoch end, in list order, and a NaN validation loss
    can come with a finite accuracy (the argmax of NaN probabilities is class 0), which
    `ModelCheckpoint` would otherwise save as the best epoch.

    The last finished epoch's backup is untouched, so a rerun with a smaller learning rate
    can start from scratch in a new output folder, or from the backup in the same one.
    """

    ADVICE = "Lower --learning-rate (e.g. by 10x) or add --weight-decay, then rerun."

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(
                f"Loss became {float(loss)} at epoch {getattr(self, '_epoch', 0) + 1}, batch "
                f"{batch + 1}. Training stopped; no checkpoint was written from this epoch. "
                + self.ADVICE)

    def on_epoch_end(self, epoch, logs=None):
        for key in ("loss", "val_loss", "val_accuracy"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                raise TrainingDiverged(
                    f"{key} became {float(value)} at epoch {epoch + 1}. Training stopped; no "
                    f"checkpoint or backup was written from this epoch. " + self.ADVICE)


class ProgressLog(keras.callbacks.Callback):
    """A line of progress within an epoch (or a long `predict`) for logs and CI.

    Keras' progress bar shows steps and time left only on a terminal; redirected to a file,
    `fit` prints one line per epoch, and a 5-minute epoch looks like a hang. This prints
    "epoch 3/36: step 120/180 (67%), 1,234 images/s, about 0:45 left ..." every
    `every_seconds` and/or every `every_steps` batches, whichever comes first.

    Args:
        num_images: images per epoch (or per prediction), for images/s.
        batch_size: images per step.
        every_seconds: seconds between lines; None for none by time.
        every_steps: steps between lines; None for none by count.
        stream: where to print; None means stdout (`predict` callers pass stderr, so a
            JSON result on stdout stays clean).
        label: the first word of a prediction's lines (e.g. "scoring").
    """

    def __init__(self, num_images, batch_size, every_seconds=60.0, every_steps=None,
                 stream=None, label="predicting"):
        super().__init__()
        self.num_images = int(num_images)
        self.batch_size = int(batch_size)
        self.every_seconds = every_seconds
        self.every_steps = every_steps
        self.stream = stream
        self.label = label
        self._epoch = None

    def _start(self):
        self._begin = self._last = time.perf_counter()
        self._last_step = 0

    def _total_steps(self):
        return (self.params or {}).get("steps") or math.ceil(self.num_images / self.batch_size)

    def _maybe_print(self, batch, prefix, logs):
        steps_done = batch + 1
        now = time.perf_counter()
        due_by_time = self.every_seconds is not None and now - self._last >= self.every_seconds
        due_by_count = self.every_steps is not None \
            and steps_done - self._last_step >= self.every_steps
        total = self._total_steps()
        if not (due_by_time or due_by_count) or steps_done >= total:
            return
        self._last, self._last_step = now, steps_done
        elapsed = max(now - self._begin, 1e-9)
        images = min(steps_done * self.batch_size, self.num_images)
        left = int(round(elapsed / steps_done * (total - steps_done)))
        line = (f"{prefix}: step {steps_done}/{total} ({100 * steps_done // total}%), "
                f"{images / elapsed:,.0f} images/s, about {left // 60}:{left % 60:02d} left")
        shown = [f"{key} {float(value):.4f}" for key, value in (logs or {}).items()
                 if key in ("loss", "accuracy")]
        if shown:
            line += "; " + ", ".join(shown)
        print(line, file=self.stream or sys.stdout, flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._start()

    def on_train_batch_end(self, batch, logs=None):
        epochs = (self.params or {}).get("epochs", "?")
        self._maybe_print(batch, f"epoch {self._epoch + 1}/{epochs}", logs)

    def on_predict_begin(self, logs=None):
        self._start()

    def on_predict_batch_end(self, batch, logs=None):
        self._maybe_print(batch, self.label, None)
