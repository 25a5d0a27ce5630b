"""Layer 6, accuracy: what raises a trained run's accuracy without training it again.

- `fer_keras.accuracy.ensemble`: average several runs in one Keras model, optionally
  choosing the subset of candidates most accurate on the selection split.
- `fer_keras.accuracy.tta`: score runs under test-time view sets, and write a run wrapped
  with its views as a run folder.
- `fer_keras.accuracy.rebalance`: post-hoc logit adjustment towards the rare classes, its
  strength tuned on the selection split.

Each writes an ordinary run folder through `fer_keras.training.run_folder`. Imports the
layers below it (utils, data, models, training); the commands `fer_keras.ensemble`,
`fer_keras.tta` and `fer_keras.rebalance` are its doors.
"""
