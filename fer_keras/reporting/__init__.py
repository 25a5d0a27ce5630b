"""Layer 8, reporting: the results tables of the README, `saved_models/README.md` and the
pages under `docs/`, generated from the committed run folders and saved benchmarks.

- `fer_keras.reporting.report`: reads the runs and the saved JSON files once and renders
  every generated block (`python -m fer_keras.report` is the command).

May import every library layer below it (utils, data, models, training, tuning, serving,
vision, accuracy, benchmarks), never a command module; `fer_keras.report` is its door.
"""
