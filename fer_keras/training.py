"""The compile step and training helpers shared by `fit` and the tuner."""

import math
import time

import keras
import numpy as np

from fer_keras.data import NUM_CLASSES

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "plateau")


@keras.saving.register_keras_serializable(package="fer_keras")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` over `warmup_steps`, then cosine decay to zero.

    Args:
        peak: the peak learning rate.
        total_steps: the length of the whole schedule, in optimizer steps.
        warmup_steps: the length of the warm-up.
    """

    def __init__(self, peak, total_steps, warmup_steps=0):
        self.peak = float(peak)
        self.total_steps = int(max(total_steps, 1))
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
        progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        progress = keras.ops.clip(progress, 0.0, 1.0)
        cosine = 0.5 * self.peak * (1.0 + keras.ops.cos(math.pi * progress))
        return keras.ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}


def make_optimizer(optimizer="adam", learning_rate=1e-3, weight_decay=0.0, schedule="constant",
                   steps_per_epoch=1, epochs=1, warmup_epochs=0):
    """Builds the optimizer named by an experiment.

    Weight decay is decoupled (`weight_decay=` of Keras optimizers), where PyTorch's Adam
    adds an L2 term to the gradient; the tuner searches it either way.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}. Received: optimizer={optimizer!r}")
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


def class_weights(labels, mode):
    """Returns `{class: weight}` for `mode="balanced"`, or None for no weighting."""
    if mode in (None, "none"):
        return None
    if mode != "balanced":
        raise ValueError(f"class_weight must be None or 'balanced'. Received: class_weight={mode!r}")
    counts = np.bincount(labels, minlength=NUM_CLASSES).astype(np.float64)
    weights = len(labels) / (NUM_CLASSES * np.maximum(counts, 1.0))
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

    The last finished epoch's backup is untouched, so a rerun with a smaller learning rate
    can start from scratch in a new output folder, or from the backup in the same one.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(
                f"Loss became {float(loss)} at epoch {getattr(self, '_epoch', 0) + 1}, batch "
                f"{batch + 1}. Training stopped; no checkpoint was written from this epoch. "
                "Lower --learning-rate (e.g. by 10x) or add --weight-decay, then rerun.")
