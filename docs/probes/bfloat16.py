"""Probes of fer_vgg_kaggle's bfloat16 training speed-up on this CPU (issue 14).

Not part of the package: one-off measurements behind the notes on why the chosen net gains
about 1.5x from mixed_bfloat16 and not the 1.8x the issue asks for. Each prints images/s
(or ms per step) under float32 and mixed_bfloat16; run them on an idle machine.

    python docs/probes/bfloat16.py stages   # each stage alone, ms per training step
    python docs/probes/bfloat16.py bn       # batch norm kept in bfloat16 inside
    python docs/probes/bfloat16.py xla      # training compiled with jit_compile=True
    python docs/probes/bfloat16.py batch    # batch 256 instead of 128
"""

import argparse
import time

import keras
import numpy as np
from keras import ops


class BFloat16BatchNorm(keras.layers.BatchNormalization):
    """Batch norm that keeps bfloat16 inputs in bfloat16 (Keras' upcasts to float32)."""

    def call(self, inputs, training=None, mask=None):
        if keras.backend.standardize_dtype(inputs.dtype) != "bfloat16":
            return super().call(inputs, training=training, mask=mask)
        dtype = inputs.dtype
        if training and self.trainable:
            mean = ops.mean(inputs, self._reduction_axes)
            variance = ops.mean(ops.square(inputs - mean), self._reduction_axes)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum
                                    + ops.cast(mean, "float32") * (1 - momentum))
            self.moving_variance.assign(self.moving_variance * momentum
                                        + ops.cast(variance, "float32") * (1 - momentum))
        else:
            mean = ops.cast(self.moving_mean, dtype)
            variance = ops.cast(self.moving_variance, dtype)
        scale = ops.rsqrt(variance + ops.cast(self.epsilon, dtype)) * ops.cast(self.gamma, dtype)
        return inputs * scale + (ops.cast(self.beta, dtype) - mean * scale)


def pipeline_rates(label, steps=40):
    """fit's pipeline and the network alone, as `bench --model-only` times them."""
    from fer_keras.bench import measure_training
    from fer_keras.fit import resolve_settings

    settings = resolve_settings("fer_vgg_kaggle")
    for precision in ("float32", "mixed_bfloat16"):
        for model_only in (False, True):
            rate, _ = measure_training(settings, steps, 0, precision, model_only=model_only)
            where = "network alone" if model_only else "fit's pipeline"
            print(f"{label}, {precision}, {where}: {rate:.1f} img/s", flush=True)


def probe_bn():
    pipeline_rates("Keras BatchNormalization")
    keras.layers.BatchNormalization = BFloat16BatchNorm  # fer_vgg builds through keras.layers
    pipeline_rates("bfloat16 batch norm")


def probe_xla():
    compile_model = keras.Model.compile

    def compile_with_xla(self, *args, **kwargs):
        return compile_model(self, *args, **dict(kwargs, jit_compile=True))

    keras.Model.compile = compile_with_xla
    pipeline_rates("jit_compile=True")


def probe_batch():
    import fer_keras.bench as bench

    bench.TRAIN_BATCH = 256
    pipeline_rates("batch 256", steps=20)


def probe_stages():
    from fer_keras.models.vgg import vgg_stage

    # fer_vgg_kaggle's stages: input shape, filters, convolutions.
    stages = [((48, 48, 1), 32, 1), ((24, 24, 32), 64, 2), ((12, 12, 64), 128, 2),
              ((6, 6, 128), 256, 2)]
    rng = np.random.default_rng(0)
    for shape, filters, convs in stages:
        x = rng.normal(size=(128, *shape)).astype("float32")
        y = rng.integers(0, 7, 128)
        milliseconds = []
        for policy in ("float32", "mixed_bfloat16"):
            keras.mixed_precision.set_global_policy(policy)
            inputs = keras.Input(shape)
            h = vgg_stage(inputs, filters, convs, 0.0, "he_normal", "stage")
            h = keras.layers.GlobalAveragePooling2D()(h)
            outputs = keras.layers.Dense(7, activation="softmax", dtype="float32")(h)
            model = keras.Model(inputs, outputs)
            model.compile("adamw", "sparse_categorical_crossentropy")
            for _ in range(5):
                model.train_on_batch(x, y)
            times = []
            for _ in range(25):
                start = time.perf_counter()
                model.train_on_batch(x, y)
                times.append(time.perf_counter() - start)
            milliseconds.append(1000 * float(np.median(times)))
            keras.backend.clear_session()
        keras.mixed_precision.set_global_policy("float32")
        print(f"stage {shape} -> {filters} x{convs}: float32 {milliseconds[0]:.1f} ms, "
              f"bfloat16 {milliseconds[1]:.1f} ms per step of 128 "
              f"({milliseconds[0] / milliseconds[1]:.2f}x)", flush=True)


PROBES = {"stages": probe_stages, "bn": probe_bn, "xla": probe_xla, "batch": probe_batch}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", choices=sorted(PROBES))
    PROBES[parser.parse_args().probe]()
