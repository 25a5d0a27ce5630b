"""The learning-rate schedule a compiled zoo model's optimizer may hold.

It lives beside the zoo, not with the training recipe that builds it
(`fer_keras.training.recipe.make_optimizer`), so that `fer_keras.models.load_model` can
restore a `.keras` file saved with its optimizer state (the checkpoints fit writes while
it trains) without importing a layer above the zoo. Registered as "fer_keras>WarmupCosine".
"""

import math

import keras


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
