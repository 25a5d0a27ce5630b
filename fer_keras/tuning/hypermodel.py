"""The tuner's view of a named experiment: a `keras_tuner.HyperModel` over the model zoo.

`FERHyperModel(experiment)` samples the training settings the study tuned by hand,
`learning_rate` (log scale), `weight_decay` (zero or a log-spaced value) and `dropout_rate`,
and then builds and compiles the model exactly as `python -m fer_keras.fit` does: the
settings are merged by `fer_keras.training.settings.resolve_settings`, and the model (under
the experiment's precision policy) and its training inputs come from the one builder fit
uses, `fer_keras.training.builder`. Hyperparameter names are the names `fit` accepts, so the
best trial's values can be passed to `fit --hparams` as they are.

Every hyperparameter defaults to the experiment's own value, so
`build(keras_tuner.HyperParameters())` is the untuned experiment.

Example:

>>> hypermodel = FERHyperModel("deep_emotion")
>>> hp = keras_tuner.HyperParameters()
>>> model = hypermodel.build(hp)
>>> hp.values
{'learning_rate': 0.005, 'weight_decay': 0.001, 'dropout_rate': 0.5}
"""

import math

import keras
import keras_tuner

from fer_keras.data.sources import make_dataset
from fer_keras.models import get_model
from fer_keras.models.layers import all_layers
from fer_keras.training.builder import build_inputs, build_model, num_classes_of
from fer_keras.training.distill import distillation_targets
from fer_keras.training.experiments import DISTILL_DEFAULTS, get_experiment
from fer_keras.training.recipe import StopOnNaN, TrainingDiverged
from fer_keras.training.settings import resolve_settings

SEARCHABLE = ("learning_rate", "weight_decay", "dropout_rate", "distill_temperature",
              "distill_weight")
"""Hyperparameters the tuner can search: `fit`'s names for them (the distillation ones
need a job with `teachers`)."""

DISTILL_SEARCHABLE = ("distill_temperature", "distill_weight")

SPEC_KEYS = {
    "learning_rate": ("min", "max"),
    "weight_decay": ("min", "max", "steps_per_decade", "allow_zero"),
    "dropout_rate": ("min", "max", "step"),
    "distill_temperature": ("min", "max"),
    "distill_weight": ("min", "max", "step"),
}
"""Keys of each hyperparameter's search-space table; min and max are required."""


def default_search_space(experiment):
    """A search space around an experiment's own settings (used when none is given).

    Args:
        experiment: an `Experiment` from `fer_keras.training.experiments`.

    Returns:
        A dict in the format `check_search_space` accepts.
    """
    return {
        "learning_rate": {"min": experiment.learning_rate / 10,
                          "max": experiment.learning_rate * 10},
        "weight_decay": {"min": 1e-5, "max": 1e-1},
        "dropout_rate": {"min": 0.0, "max": 0.7, "step": 0.1},
    }


MAX_WEIGHT_DECAY_CHOICES = 1000
"""The most weight-decay values a search space may list (a sanity bound on the grid)."""


def _number(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} must be a number. Received: {where}={value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    # TOML writes nan and inf as plain floats; Keras Tuner would only fail on them at the
    # first trial (and an infinite weight-decay bound would never end its grid).
    if not math.isfinite(number):
        raise ValueError(f"{where} must be a finite number, not nan or inf. "
                         f"Received: {where}={value!r}")
    return number


def check_search_space(search_space):
    """Validates a search space and fills in the optional keys.

    Args:
        search_space: `{name: {"min": x, "max": y, ...}}` for names in `SEARCHABLE`;
            `weight_decay` also takes `steps_per_decade` (log-spaced values per factor of
            ten, default 1) and `allow_zero` (default True); `dropout_rate` takes `step`
            (default: continuous).

    Returns:
        The normalised dict (floats, every optional key present).

    Raises:
        ValueError: naming the offending key as `search_space.NAME.KEY`: a bound that is
            not a finite number (nan, inf), min not below max, a log-scale min <= 0, a
            dropout rate outside [0, 1), a bad step or weight-decay grid.
    """
    if not isinstance(search_space, dict) or not search_space:
        raise ValueError("search_space must be a table with at least one of "
                         f"{', '.join(SEARCHABLE)}. Received: search_space={search_space!r}")
    checked = {}
    for name, spec in search_space.items():
        where = f"search_space.{name}"
        if name not in SPEC_KEYS:
            raise ValueError(f"{where} is not a searchable hyperparameter; use one of "
                             f"{', '.join(SEARCHABLE)}. Received: {name!r}")
        if not isinstance(spec, dict):
            raise ValueError(f"{where} must be a table such as {{min = ..., max = ...}}. "
                             f"Received: {where}={spec!r}")
        for key in spec:
            if key not in SPEC_KEYS[name]:
                raise ValueError(f"{where}.{key} is not a known key; {where} takes "
                                 f"{', '.join(SPEC_KEYS[name])}. Received: {key!r}")
        for key in ("min", "max"):
            if key not in spec:
                raise ValueError(f"{where}.{key} is missing; {where} needs min and max.")
        low = _number(spec["min"], f"{where}.min")
        high = _number(spec["max"], f"{where}.max")
        if low >= high:
            raise ValueError(f"{where}: min must be smaller than max (an inverted or empty "
                             f"range). Received: min={spec['min']!r}, max={spec['max']!r}")
        out = {"min": low, "max": high}
        if name in ("learning_rate", "weight_decay", "distill_temperature") and low <= 0:
            raise ValueError(f"{where}.min must be positive: the range is searched on a log "
                             + ("scale (zero is added by allow_zero). " if name == "weight_decay"
                                else "scale. ") + f"Received: {where}.min={spec['min']!r}")
        if name == "dropout_rate" and (low < 0 or high >= 1):
            raise ValueError(f"{where}: dropout rates must lie in [0, 1). "
                             f"Received: min={spec['min']!r}, max={spec['max']!r}")
        if name == "distill_weight" and (low < 0 or high > 1):
            raise ValueError(f"{where}: the teachers' share of the target must lie in "
                             f"[0, 1]. Received: min={spec['min']!r}, max={spec['max']!r}")
        if name == "weight_decay":
            steps = spec.get("steps_per_decade", 1)
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ValueError(f"{where}.steps_per_decade must be a positive integer. "
                                 f"Received: {where}.steps_per_decade={steps!r}")
            allow_zero = spec.get("allow_zero", True)
            if not isinstance(allow_zero, bool):
                raise ValueError(f"{where}.allow_zero must be true or false. "
                                 f"Received: {where}.allow_zero={allow_zero!r}")
            choices = math.log10(high / low) * steps
            if choices > MAX_WEIGHT_DECAY_CHOICES:
                raise ValueError(f"{where}.steps_per_decade gives about {choices:.3g} values "
                                 f"between min and max, more than "
                                 f"{MAX_WEIGHT_DECAY_CHOICES}; use fewer steps per decade. "
                                 f"Received: {where}.steps_per_decade={steps!r}")
            out.update(steps_per_decade=steps, allow_zero=allow_zero)
        if name in ("dropout_rate", "distill_weight"):
            out["step"] = None
            if spec.get("step") is not None:
                step = _number(spec["step"], f"{where}.step")
                if not 0 < step <= high - low:
                    raise ValueError(f"{where}.step must be positive and at most max - min. "
                                     f"Received: {where}.step={spec['step']!r}")
                out["step"] = step
        checked[name] = out
    return checked


def weight_decay_values(spec, include=None):
    """The weight-decay choices of a search space: optional zero, then a log-spaced grid.

    Args:
        spec: the checked `weight_decay` table (min, max, steps_per_decade, allow_zero).
        include: a value that must be among the choices (the experiment's own).

    Returns:
        A sorted list of floats, rounded to three significant digits.
    """
    ratio = 10.0 ** (1.0 / spec["steps_per_decade"])
    values = []
    value = spec["min"]
    while value <= spec["max"] * (1 + 1e-9):
        values.append(float(f"{value:.3g}"))
        value *= ratio
    if values[-1] < spec["max"] * (1 - 1e-9):
        values.append(float(f"{spec['max']:.3g}"))
    if spec["allow_zero"]:
        values.insert(0, 0.0)
    if include is not None and include not in values:
        values = sorted(values + [float(include)])
    return values


def default_dropout_rate(experiment):
    """The dropout rate an experiment trains with.

    The experiment's `model_kwargs` win; otherwise it is the builder's own default, read
    from the `Dropout` layers of the default model, since thin variants such as
    `deep_emotion(**kwargs)` do not show their generic builder's default in the signature.
    """
    if "dropout_rate" in experiment.model_kwargs:
        return float(experiment.model_kwargs["dropout_rate"])
    model = get_model(experiment.model, **experiment.model_kwargs)
    rates = [layer.rate for layer in all_layers(model)
             if isinstance(layer, keras.layers.Dropout)]
    return float(max(rates, default=0.0))


class FERHyperModel(keras_tuner.HyperModel):
    """Searches learning rate, weight decay and dropout of one named experiment.

    Args:
        experiment_name: a name from `fer_keras.training.experiments.list_experiments()`.
        search_space: `{name: {"min": ..., "max": ...}}` (see `check_search_space`);
            hyperparameters left out keep the experiment's value. None searches all three
            around the experiment's settings (`default_search_space`).
        steps_per_epoch: optimizer steps per epoch (only the "cosine" schedule needs it).
        epochs: the schedule length in epochs; default the experiment's `epochs`.
        seed: shuffle seed of the training pipeline built by `fit`.
        verbose: Keras verbosity of `fit` where the caller passes none. (Keras Tuner ties
            its per-trial display to a `verbose` given to `search`, so a job that wants the
            display but quiet epochs sets it here.)

    Example:

    >>> hypermodel = FERHyperModel("dexpression", {"learning_rate": {"min": 1e-5,
    ...                                                               "max": 1e-3}})
    >>> tuner = keras_tuner.RandomSearch(hypermodel, objective="val_accuracy",
    ...                                  max_trials=4, directory="/tmp/search")
    >>> tuner.search(x_train, y_train, validation_data=(x_val, y_val), epochs=5)
    """

    def __init__(self, experiment_name, search_space=None, steps_per_epoch=1, epochs=None,
                 seed=None, verbose="auto", teacher_probabilities=None, **kwargs):
        super().__init__(name=experiment_name, **kwargs)
        self.experiment = get_experiment(experiment_name)
        self.search_space = check_search_space(
            default_search_space(self.experiment) if search_space is None else search_space)
        # Each teacher's probabilities on the training faces, in the order `fit` gets them.
        self.teacher_probabilities = teacher_probabilities
        self.settings = resolve_settings(experiment_name)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs or self.experiment.epochs)
        self.seed = seed
        self.verbose = verbose
        self.defaults = {"learning_rate": float(self.experiment.learning_rate),
                         "weight_decay": float(self.experiment.weight_decay)}
        if "dropout_rate" in self.search_space:
            self.defaults["dropout_rate"] = default_dropout_rate(self.experiment)
        if teacher_probabilities is not None or any(name in self.search_space
                                                   for name in DISTILL_SEARCHABLE):
            for name, value in DISTILL_DEFAULTS.items():
                self.defaults[name] = float(getattr(self.experiment, name) or value)

    def sample(self, hp):
        """Registers the search space in `hp` and returns the sampled values by name."""
        values = {}
        space = self.search_space
        if "learning_rate" in space:
            values["learning_rate"] = hp.Float(
                "learning_rate", space["learning_rate"]["min"], space["learning_rate"]["max"],
                sampling="log", default=self.defaults["learning_rate"])
        if "weight_decay" in space:
            values["weight_decay"] = hp.Choice(
                "weight_decay",
                weight_decay_values(space["weight_decay"], self.defaults["weight_decay"]),
                default=self.defaults["weight_decay"])
        if "dropout_rate" in space:
            spec = space["dropout_rate"]
            values["dropout_rate"] = hp.Float("dropout_rate", spec["min"], spec["max"],
                                              step=spec["step"],
                                              default=self.defaults["dropout_rate"])
        if "distill_temperature" in space:
            spec = space["distill_temperature"]
            values["distill_temperature"] = hp.Float(
                "distill_temperature", spec["min"], spec["max"], sampling="log",
                default=min(max(self.defaults["distill_temperature"], spec["min"]),
                            spec["max"]))
        if "distill_weight" in space:
            spec = space["distill_weight"]
            values["distill_weight"] = hp.Float(
                "distill_weight", spec["min"], spec["max"], step=spec["step"],
                default=min(max(self.defaults["distill_weight"], spec["min"]), spec["max"]))
        return values

    def targets(self, hp, labels):
        """The training targets of a trial: the hard `labels`, or with teachers the
        distillation targets at the trial's temperature and weight (the experiment's, or
        `DISTILL_DEFAULTS`, where they are not searched)."""
        if self.teacher_probabilities is None:
            searched = [name for name in DISTILL_SEARCHABLE if name in self.search_space]
            if searched:
                raise ValueError(f"search_space.{searched[0]} needs teachers: give the job "
                                 f"`teachers = [\"saved_models/RUN\", ...]`.")
            return labels
        if len(self.teacher_probabilities[0]) != len(labels):
            raise ValueError(f"The teachers' probabilities cover "
                             f"{len(self.teacher_probabilities[0]):,} faces and the trial "
                             f"trains on {len(labels):,}; predict them on the same faces.")
        values = {name: hp.values.get(name, self.defaults[name])
                  for name in DISTILL_SEARCHABLE}
        return distillation_targets(self.teacher_probabilities, labels,
                                    num_classes_of(self.settings),
                                    values["distill_temperature"], values["distill_weight"])

    def build(self, hp):
        settings = resolve_settings(self.experiment.name, hparams=self.sample(hp))
        # The schedule spans the search's longest training, not the experiment's epochs.
        settings["epochs"] = self.epochs
        # Trials train under the experiment's dtype policy, as its fit does.
        return build_model(settings, steps_per_epoch=self.steps_per_epoch)

    def fit(self, hp, model, x, y=None, validation_data=None, callbacks=None, **kwargs):
        """Trains a built model as `fit` does and returns its `History`.

        Raw arrays (`x` uint8 images, `y` label ids, `validation_data=(images, labels)`)
        go through the experiment's input pipeline (batch size, augmentation, class
        weights; `tf.data` on TensorFlow, the NumPy `PyDataset` on JAX and PyTorch);
        datasets are used as given. `callbacks` (the tuner's own, which report
        each epoch to the oracle) and the other keyword arguments (`epochs`,
        `initial_epoch`, `verbose`) are forwarded to `model.fit`.

        Raises:
            keras_tuner.errors.FailedTrialError: when the loss becomes NaN, so the tuner
                records a failed trial and moves on.
        """
        if y is not None:
            x, weights, _ = build_inputs(self.settings, x, self.targets(hp, y),
                                         seed=self.seed)
            kwargs.setdefault("class_weight", weights)
        if isinstance(validation_data, tuple) and len(validation_data) == 2:
            validation_data = make_dataset(*validation_data, 512,
                                           num_classes=num_classes_of(self.settings))
        callbacks = [StopOnNaN()] + list(callbacks or [])
        kwargs.setdefault("verbose", self.verbose)
        kwargs.setdefault("shuffle", False)  # The pipeline shuffles; Keras cannot.
        try:
            return model.fit(x, validation_data=validation_data, callbacks=callbacks, **kwargs)
        except TrainingDiverged as error:
            raise keras_tuner.errors.FailedTrialError(str(error)) from error


def steps_per_epoch(num_images, batch_size):
    """Optimizer steps in one epoch of `num_images` at `batch_size`."""
    return max(1, math.ceil(num_images / batch_size))
