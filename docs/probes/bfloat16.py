"""Probes of fer_vgg_kaggle's bfloat16 training speed-up on this CPU (issue 14).

Not part of the package: one-off measurements behind the notes on why the chosen net gains
about 1.5x from mixed_bfloat16 and not the 1.8x the issue asks for. Each prints images/s
(or ms per step) under float32 and mixed_bfloat16; run them on an idle machine.

    python docs/probes/bfloat16.py stages   # each stage alone, ms per training step
    python docs/probes/bfloat16.py bn       # batch norm kept in bfloat16 inside
    python docs/probes/bfloat16.py xla      # training compiled with jit_compile=True
    python docs/probes/bfloat16.py batch    # batch 256 instead of 128
    python docs/probes/bfloat16.py onednn [--save FILE.json]
                                            # oneDNN's own time per convolution and pass

`onednn` trains the network alone in a child process per policy with `ONEDNN_VERBOSE=
profile_exec`, oneDNN's per-primitive timer, and adds up the timed steps' primitive times by
layer and by pass (forward, gradient of the input, gradient of the weights). It separates
what the convolution kernels gain from what the rest of the step costs.
"""

import argparse
import collections
import json
import os
import subprocess
import sys
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
    from fer_keras.benchmarks.bench import measure_training
    from fer_keras.training.settings import resolve_settings

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
    import fer_keras.benchmarks.bench as bench

    bench.TRAIN_BATCH = 256
    pipeline_rates("batch 256", steps=20)


def median_step_ms(model, x, y, steps, before_timing=None):
    """Median ms of `steps` training steps on one batch, after 5 untimed warm-up steps;
    `before_timing` is called between the two."""
    for _ in range(5):
        model.train_on_batch(x, y)
    if before_timing:
        before_timing()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


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
            milliseconds.append(median_step_ms(model, x, y, steps=25))
            keras.backend.clear_session()
        keras.mixed_precision.set_global_policy("float32")
        print(f"stage {shape} -> {filters} x{convs}: float32 {milliseconds[0]:.1f} ms, "
              f"bfloat16 {milliseconds[1]:.1f} ms per step of 128 "
              f"({milliseconds[0] / milliseconds[1]:.2f}x)", flush=True)


ONEDNN_STEPS = 20
TIMED_MARK = "== timed steps =="
PASSES = {"forward_training": "forward", "backward_data": "input gradient",
          "backward_weights": "weight gradient"}


def onednn_child(policy):
    """Trains fer_vgg_kaggle's network on one random batch; the parent reads oneDNN's log."""
    from fer_keras.models import get_model
    from fer_keras.training.recipe import compile_model, precision_policy
    from fer_keras.training.settings import resolve_settings

    settings = resolve_settings("fer_vgg_kaggle")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (128, 48, 48, 1)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 7, 128), 7)  # label smoothing: one-hot
    with precision_policy(policy):
        model = get_model(settings["model"], **settings["model_kwargs"])
        compile_model(model, steps_per_epoch=100, **settings)
    step_ms = median_step_ms(model, x, y, ONEDNN_STEPS,
                             before_timing=lambda: print(TIMED_MARK, flush=True))
    print(f"step_ms {step_ms:.2f}", flush=True)


def onednn_times(log):
    """ms per step by (layer, pass) for convolutions and by primitive kind for the rest,
    the median step time, and the oneDNN implementation that ran each (layer, pass)."""
    times = collections.defaultdict(float)
    kernels = {}
    step_ms = None
    for line in log.split(TIMED_MARK, 1)[1].splitlines():
        if line.startswith("step_ms "):
            step_ms = float(line.split()[1])
        if not line.startswith("onednn_verbose,v1,primitive,exec,"):
            continue
        fields = line.split(",")
        kind, propagation, problem, ms = fields[5], fields[7], fields[-2], float(fields[-1])
        if kind == "convolution":
            # e.g. mb128_ic64oc64_ih24oh24...: channels in and out, input height
            channels = problem.split("_")[1]
            size = problem.split("_ih")[1].split("oh")[0]
            key = (f"conv {channels.replace('ic', '').replace('oc', ' -> ')} at {size}x{size}",
                   PASSES.get(propagation, propagation))
        else:
            key = ("other oneDNN", kind)
        times[key] += ms / ONEDNN_STEPS
        kernels[key] = fields[6]
    return step_ms, times, kernels


def probe_onednn(save=None):
    results = {}
    for policy in ("float32", "mixed_bfloat16"):
        env = dict(os.environ, ONEDNN_VERBOSE="profile_exec", TF_CPP_MIN_LOG_LEVEL="2")
        child = subprocess.run([sys.executable, __file__, "_onednn_child", policy], env=env,
                               capture_output=True, text=True, check=True)
        results[policy] = onednn_times(child.stdout)
    (f32_step, f32, f32_kernels), (bf16_step, bf16, bf16_kernels) = (
        results["float32"], results["mixed_bfloat16"])

    def ratio(keys):
        return sum(f32[key] for key in keys) / sum(bf16[key] for key in keys)

    rows = []
    print(f"{'layer':26s} {'pass':16s} {'float32 ms':>10s} {'bfloat16 ms':>11s} {'speed-up':>8s}")
    for key in sorted(f32, key=lambda key: -f32[key]):
        print(f"{key[0]:26s} {key[1]:16s} {f32[key]:10.2f} {bf16.get(key, 0):11.2f} "
              f"{f32[key] / bf16[key] if bf16.get(key) else float('nan'):8.2f}x")
        rows.append({"layer": key[0], "pass": key[1], "float32_ms": round(f32[key], 3),
                     "bfloat16_ms": round(bf16.get(key, 0), 3),
                     "float32_kernel": f32_kernels[key], "bfloat16_kernel": bf16_kernels.get(key)})
    convs = [key for key in f32 if key[0].startswith("conv")]
    summary = {
        "step_ms": {"float32": f32_step, "mixed_bfloat16": bf16_step},
        "step_speedup": round(f32_step / bf16_step, 3),
        "convolutions_speedup": round(ratio(convs), 3),
        "convolution_ms": {policy: round(sum(times[key] for key in convs), 2)
                           for policy, times in (("float32", f32), ("mixed_bfloat16", bf16))},
        "speedup_by_pass": {name: round(ratio([key for key in convs if key[1] == name]), 3)
                            for name in PASSES.values()},
        "speedup_by_layer": {layer: round(ratio([key for key in convs if key[0] == layer]), 3)
                             for layer in sorted({key[0] for key in convs})},
    }
    print(f"training step (median of {ONEDNN_STEPS}, oneDNN's timer on): float32 "
          f"{f32_step:.1f} ms, bfloat16 {bf16_step:.1f} ms ({summary['step_speedup']:.2f}x)")
    print(f"all convolutions, oneDNN's time: {summary['convolution_ms']['float32']:.1f} -> "
          f"{summary['convolution_ms']['mixed_bfloat16']:.1f} ms "
          f"({summary['convolutions_speedup']:.2f}x)")
    for name, value in summary["speedup_by_pass"].items():
        print(f"  {name}: {value:.2f}x")
    if save:
        with open(save, "w") as file:
            json.dump({**summary, "rows": rows, "command": "python " + " ".join(sys.argv)},
                      file, indent=1)
        print(f"saved {save}")


PROBES = {"stages": probe_stages, "bn": probe_bn, "xla": probe_xla, "batch": probe_batch,
          "onednn": probe_onednn}

if __name__ == "__main__":
    if sys.argv[1:2] == ["_onednn_child"]:
        onednn_child(sys.argv[2])
        sys.exit()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", choices=sorted(PROBES))
    parser.add_argument("--save", help="onednn: also write the figures to this JSON file")
    args = parser.parse_args()
    PROBES[args.probe](**({"save": args.save} if args.probe == "onednn" else {}))
