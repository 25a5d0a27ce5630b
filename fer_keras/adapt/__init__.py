"""Layer 6, adapt: a trained model fitted to a user's own labelled faces.

- `fer_keras.adapt.finetune`: from a folder of `CLASS/*` images to a run folder with a new
  head over those classes, with grouped holdout and K-fold splits and the base model's
  zero-shot accuracy beside the fine-tuned one.

Imports the layers below it (utils, data, models, training, vision); the command
`fer_keras.finetune` is its door.
"""
