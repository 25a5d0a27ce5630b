"""Training on several devices or machines with the backends' own distribution engines.

`fit --distribute` picks one:

* "mirrored": every device of this machine holds a replica and each step splits the
  batch across them. TensorFlow: `tf.distribute.MirroredStrategy` over the GPUs (or the
  logical CPU devices when there is no GPU); JAX: `keras.distribution.DataParallel` over
  `keras.distribution.list_devices()`.
* "multi-worker": the same across machines, on TensorFlow:
  `tf.distribute.MultiWorkerMirroredStrategy`, configured from the `TF_CONFIG` environment
  variable each worker is started with. (On JAX it is refused: Keras' multi-process
  `DataParallel` expects each process to feed only its shard of the batch, which the
  NumPy pipeline does not do yet.)

`--batch-size` is the global batch: each of N replicas computes 1/N of it and the gradient
is the mean over the whole global batch, so one step is the same optimisation on one device
or on eight (tested to agree with one device to 1e-3 in the loss), and the
experiment's learning rate applies unchanged. No learning rate is rescaled behind the
user's back: who raises the global batch to fill more devices should raise
`--learning-rate` in proportion (the linear scaling rule of Goyal et al., 2017, "Accurate,
Large Minibatch SGD") and add `--warmup-epochs`.

Only the chief (TensorFlow's "chief" task, or worker 0 when there is none) writes the run
folder. Every other worker trains in its own folder beside it,
`DIR.worker-K.partial/`, which holds its `BackupAndRestore` state (so a restarted cluster
resumes every worker from the same epoch) and is removed once training ends.

Example:

>>> distribution = setup_distribution("mirrored")
>>> with distribution.scope():
...     model = get_model("baseline")
...     compile_model(model)
"""

import contextlib
import dataclasses
import json
import os

import numpy as np

# Keras, TensorFlow and JAX are imported inside the functions that use them: `fit --help`
# imports this module without Keras, and only one of TensorFlow and JAX may be installed.

DISTRIBUTIONS = ("none", "mirrored", "multi-worker")


@dataclasses.dataclass
class Distribution:
    """What `fit` needs to know about how it trains.

    Attributes:
        name: one of `DISTRIBUTIONS`.
        replicas: replicas training in sync (1 without distribution).
        is_chief: whether this process writes the run folder.
        worker: this worker's index (0 for the chief and without distribution).
        devices: the device names of this process's replicas.
        strategy: the `tf.distribute.Strategy`, or None.
        even_batches: whether every batch must split evenly across the replicas (JAX);
            `tf.distribute` splits a partial batch by itself.
    """

    name: str = "none"
    replicas: int = 1
    is_chief: bool = True
    worker: int = 0
    devices: tuple = ()
    strategy: object = None
    even_batches: bool = False

    def scope(self):
        """The context that model building and `compile` run in."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def finish(self):
        """Ends JAX's global data parallelism, so scoring afterwards runs on one device."""
        if self.strategy is None and self.name != "none":
            import keras

            keras.distribution.set_distribution(None)

    def describe(self):
        if self.name == "none":
            return "one device"
        role = "chief" if self.is_chief else f"worker {self.worker}"
        return (f"{self.name}, {self.replicas} replica(s) in sync ({role}; this process: "
                f"{', '.join(self.devices)})")


def prepare_model(model, distribution):
    """Builds a compiled model's optimizer, loss and metric state for its strategy.

    Keras 3 (3.15 here) builds that state in `fit` from the mean of the replicas' first
    batch (`strategy.reduce` in `_maybe_symbolic_build`), which fails under
    `MultiWorkerMirroredStrategy` (it cannot convert the `PerReplica` batch) and under
    `MirroredStrategy` whenever that batch splits unevenly. Building it here from one
    zero batch of the model's input shape makes that step unnecessary, so it is skipped.
    Without a `tf.distribute` strategy nothing changes.
    """
    if distribution.strategy is None:
        return model
    batch = (np.zeros((1, *model.input_shape[1:]), "float32"),
             np.zeros((1, *model.output_shape[1:]), "float32"))
    with distribution.scope():
        model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    if distribution.name == "multi-worker":
        # Across workers Keras averages each step's logs with `strategy.reduce("MEAN", v,
        # axis=0)`, which fails on the scalars the steps return ("Invalid reduction
        # dimension 0 for input with 0 dimensions", tensorflow/tensorflow#72388); logs of
        # shape (1,) average to the same scalar.
        model.train_step = _vector_logs(model.train_step)
        model.test_step = _vector_logs(model.test_step)
    return model


def _vector_logs(step):
    # Keras loads on first use, so a command's --help and start-up stay fast.
    import keras

    def wrapped(data):
        return keras.tree.map_structure(
            lambda value: keras.ops.reshape(value, (1,)) if len(value.shape) == 0 else value,
            step(data))

    return wrapped


def split_cpu(count):
    """Splits the CPU into `count` logical devices, for running --distribute without GPUs.

    TensorFlow: `tf.config.set_logical_device_configuration`, which must run before
    TensorFlow initialises its devices. JAX: `XLA_FLAGS=--xla_force_host_platform_device_count`,
    read when JAX first initialises its CPU backend.
    """
    # Keras loads on first use, so a command's --help and start-up stay fast.
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0":
            # Seen with TensorFlow 2.21: under MirroredStrategy on split CPU devices the
            # oneDNN convolutions of the second replica fail ("input depth must be evenly
            # divisible by filter depth"). The flag is read when TensorFlow loads.
            raise ValueError("--cpu-devices needs TensorFlow's oneDNN kernels off, which "
                             "must be chosen before TensorFlow loads: run with "
                             "TF_ENABLE_ONEDNN_OPTS=0 in the environment. Received: "
                             f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}")
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
        except RuntimeError as error:
            raise ValueError(f"--cpu-devices must be set before TensorFlow starts its "
                             f"devices ({error}). Received: cpu_devices={count}") from None
    elif backend == "jax":
        flag = f"--xla_force_host_platform_device_count={count}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
        import jax

        found = len(jax.devices("cpu"))
        if found != count:
            raise ValueError(f"JAX started with {found} CPU device(s) before --cpu-devices "
                             f"could apply; set XLA_FLAGS={flag} in the environment instead. "
                             f"Received: cpu_devices={count}")
    else:
        raise ValueError(f"--cpu-devices works on the tensorflow and jax backends. Received: "
                         f"KERAS_BACKEND={backend}")


def setup_distribution(name="none", cpu_devices=None):
    """Starts the distribution engine named `name` for this process.

    Call it before any model or tensor is made: `MultiWorkerMirroredStrategy` has to
    configure TensorFlow's collectives at start-up.

    Args:
        name: one of `DISTRIBUTIONS` (None means "none").
        cpu_devices: split the CPU into this many logical devices first (`split_cpu`).

    Returns:
        A `Distribution`.

    Raises:
        ValueError: for an unknown name, a backend without that engine (PyTorch), or
            "multi-worker" without its cluster configuration.
    """
    # Keras loads on first use, so a command's --help and start-up stay fast.
    import keras

    name = name or "none"
    if name not in DISTRIBUTIONS:
        raise ValueError(f"Unknown distribution. Use one of {', '.join(DISTRIBUTIONS)}. "
                         f"Received: distribute={name!r}")
    if cpu_devices:
        split_cpu(cpu_devices)
    if name == "none":
        return Distribution()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_distribution(name)
    if backend == "jax":
        return _jax_distribution(name)
    raise ValueError(f"--distribute {name} runs on the tensorflow (tf.distribute) and jax "
                     f"(keras.distribution) backends. Use KERAS_BACKEND=tensorflow or jax, or "
                     f"drop --distribute. Received: KERAS_BACKEND={backend}")


def _tensorflow_distribution(name):
    # TensorFlow loads on first use (and is absent on the JAX and torch extras).
    import tensorflow as tf

    if name == "mirrored":
        # Without GPUs, MirroredStrategy would use one CPU device even when the CPU is
        # split into several logical ones (`split_cpu`); name them all instead.
        devices = [device.name for device in tf.config.list_logical_devices("GPU")] \
            or [device.name for device in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        return Distribution(name, strategy.num_replicas_in_sync, True, 0, tuple(devices),
                            strategy)
    config = os.environ.get("TF_CONFIG")
    if not config:
        raise ValueError("--distribute multi-worker reads the cluster from the TF_CONFIG "
                         "environment variable, which is not set. Set it on every worker, "
                         "e.g. TF_CONFIG='{\"cluster\": {\"worker\": [\"host1:12345\", "
                         "\"host2:12345\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}' "
                         "(see docs/training.md). Received: TF_CONFIG=None")
    try:
        cluster = json.loads(config)
        task_type = cluster["task"]["type"]
        task_id = int(cluster["task"]["index"])
        roles = cluster["cluster"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG must be JSON with 'cluster' and 'task' ({{'type', "
                         f"'index'}}): {error}. Received: TF_CONFIG={config!r}") from None
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0
                                        and "chief" not in roles)
    worker = 0 if is_chief else task_id + (1 if "chief" in roles else 0)
    devices = strategy.extended.worker_devices
    return Distribution(name, strategy.num_replicas_in_sync, is_chief, worker,
                        tuple(devices), strategy)


def _jax_distribution(name):
    # JAX is optional (the jax extra).
    import jax
    import keras

    if name == "multi-worker":
        raise ValueError("--distribute multi-worker runs on TensorFlow "
                         "(MultiWorkerMirroredStrategy); on JAX, use --distribute mirrored "
                         "on one machine, or KERAS_BACKEND=tensorflow for a cluster. "
                         "Received: KERAS_BACKEND=jax")
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return Distribution(name, len(devices), True, 0,
                        tuple(str(device) for device in jax.local_devices()),
                        even_batches=True)
