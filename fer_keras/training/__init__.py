"""Layer 3, training: the experiments table, settings and their checks, the run-folder
transaction, compiling (optimizer, schedule, precision), callbacks, distribution, and the
scores and plots a run folder holds.

Imports `fer_keras.utils`, `fer_keras.data` and `fer_keras.models`. The public names of
`fer_keras.training.recipe` are reachable here too (`fer_keras.training.compile_model`),
loaded on first use so that importing a settings or run-folder module does not import Keras.
"""

_RECIPE_NAMES = ('precision_policy', 'WarmupCosine', 'make_optimizer', 'compile_model',
                 'class_weights', 'EpochTimer', 'TrainingDiverged', 'StopOnNaN', 'ProgressLog')


def __getattr__(name):
    if name in _RECIPE_NAMES:
        from fer_keras.training import recipe

        return getattr(recipe, name)
    raise AttributeError(f"module 'fer_keras.training' has no attribute {name!r}")
