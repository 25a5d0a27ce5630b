"""Calibrated probabilities: how far a run's confidence is from its accuracy, and a run
rescaled by one temperature fitted on its selection split, written as a run folder of its
own.

The measures (NumPy only) take Kaggle label ids `(n,)` and probabilities `(n, classes)`:
`expected_calibration_error` (top-label ECE over equal-width confidence bins),
`negative_log_likelihood`, `brier_score` (the multi-class Brier score) and `reliability`
(each bin's mean confidence, accuracy and count).

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017,
arXiv 1706.04599) divides a model's log-probabilities by one scalar `T > 0` and takes the
softmax again: `softmax(log(p) / T)`. The zoo's models output probabilities, many of them
the mean of several views' (`MirrorAverage`, `TestTimeAugmentation`), so the log of the
final output is what is rescaled. `fit_temperature` picks the `T` of least negative
log-likelihood on one split; `T > 0` keeps the order of the classes, so the predicted class
and every accuracy stay as they were.

`calibrate_run` fits `T` on a run's selection split (validation, or PublicTest under the
kaggle protocol; PrivateTest plays no part) and writes `model.keras` (the run's model
followed by `fer_keras.models.calibration.TemperatureScaling`, so `evaluate --verify`,
`export` and `predict` serve the calibrated probabilities), `metrics.json` (every split and
the calibration before and after on the selection split and PrivateTest), `config.json`,
`confusion_matrix.png` and `reliability.png`. Nothing is retrained.

Example:

>>> temperature = fit_temperature(labels, probabilities)
>>> expected_calibration_error(labels, temperature_scale(probabilities, temperature))
0.01...
"""

import math
from pathlib import Path

import numpy as np

from fer_keras.data.labels import FER2013, get_label_set, label_set_of, list_label_sets
from fer_keras.data.protocols import get_protocol
from fer_keras.data.sources import labels_of, resolve_data_path, splits_for_run
from fer_keras.training.results import (
    _pyplot,
    save_derived_run,
    score,
    score_on,
    source_run,
    split_probabilities,
)
from fer_keras.training.run_folder import refuse_finished_run, write_run_folder

BINS = 15
"""Equal-width confidence bins of the ECE and the reliability diagram (Guo et al.'s 15)."""

PROBABILITY_FLOOR = 1e-7
"""Probabilities are clipped to at least this before their log is taken. The same floor as
`fer_keras.models.calibration.PROBABILITY_FLOOR` (kept here too so that this module loads
without Keras), so the fitted temperature is the one the layer applies."""

LOG_FLOOR = 1e-12
"""The smallest probability of the true class `negative_log_likelihood` takes the log of
(a float32 softmax can round it to exactly 0)."""

TEMPERATURE_BRACKET = (0.05, 20.0)
"""The temperatures `fit_temperature` searches between."""

CALIBRATED_SPLITS = ("validation", "public_test", "private_test")
"""What a calibrated run is scored on, as `fer_keras.accuracy.tta` scores its runs: not the
training split, whose score the source run already records."""

SUM_TOLERANCE = 1e-3
"""How far from 1 rows may sum and still be read as probabilities by `fit_temperature`."""


def _checked(labels, probabilities):
    """`(labels, probabilities)` as int64 `(n,)` and float64 `(n, classes)` arrays.

    Raises:
        ValueError: for mismatched lengths, no rows, or labels outside the classes.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] == 0:
        raise ValueError(f"probabilities must be a (faces, classes) array with at least one "
                         f"face. Received: shape={probabilities.shape}")
    if labels.shape != (probabilities.shape[0],):
        raise ValueError(f"labels must hold one class id per row of probabilities "
                         f"({probabilities.shape[0]}). Received: labels shape={labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 \
            or labels.max() >= probabilities.shape[1]:
        raise ValueError(f"labels must be integer class ids in [0, {probabilities.shape[1]}). "
                         f"Received: labels from {labels.min()} to {labels.max()} "
                         f"({labels.dtype})")
    return labels.astype(np.int64), probabilities


def _check_bins(bins):
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1. Received: bins={bins!r}")
    return int(bins)


def reliability(labels, probabilities, bins=BINS):
    """The reliability diagram's figures: faces binned by confidence (their top
    probability) into `bins` equal-width bins `(lower, upper]` (the first also takes 0).

    Returns:
        One dict per bin, lowest first: `lower`, `upper`, `count`, and the bin's mean
        `confidence` and `accuracy` (None for an empty bin).

    Example:

    >>> reliability([0, 1], [[0.9, 0.1], [0.7, 0.3]], bins=2)[1]
    {'lower': 0.5, 'upper': 1.0, 'count': 2, 'confidence': 0.8, 'accuracy': 0.5}
    """
    labels, probabilities = _checked(labels, probabilities)
    bins = _check_bins(bins)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    rows = []
    for position in range(bins):
        chosen = index == position
        count = int(chosen.sum())
        rows.append({"lower": position / bins, "upper": (position + 1) / bins,
                     "count": count,
                     "confidence": float(confidence[chosen].mean()) if count else None,
                     "accuracy": float(correct[chosen].mean()) if count else None})
    return rows


def expected_calibration_error(labels, probabilities, bins=BINS):
    """Top-label expected calibration error: the mean over faces of the gap between
    confidence and accuracy of their bin, `sum_b (n_b / n) |accuracy_b - confidence_b|`,
    over `bins` equal-width bins (see `reliability`).

    Example:

    >>> expected_calibration_error([0, 1], [[0.9, 0.1], [0.7, 0.3]], bins=2)
    0.3
    """
    rows = reliability(labels, probabilities, bins)
    total = sum(row["count"] for row in rows)
    return float(sum(row["count"] * abs(row["accuracy"] - row["confidence"])
                     for row in rows if row["count"]) / total)


def negative_log_likelihood(labels, probabilities):
    """The mean of `-log p(true class)` over faces (natural log; the true class's
    probability floored at `LOG_FLOOR`).

    Example:

    >>> negative_log_likelihood([0], [[0.5, 0.5]])  # log 2
    0.693...
    """
    labels, probabilities = _checked(labels, probabilities)
    true = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(true, LOG_FLOOR))))


def brier_score(labels, probabilities):
    """The multi-class Brier score: the mean over faces of the sum over classes of
    `(p_k - [k is the true class])^2`; 0 is perfect, 2 the worst.

    Example:

    >>> brier_score([0], [[0.5, 0.5]])  # (0.5 - 1)^2 + 0.5^2
    0.5
    """
    labels, probabilities = _checked(labels, probabilities)
    one_hot = np.eye(probabilities.shape[1])[labels]
    return float(np.mean(np.sum((probabilities - one_hot) ** 2, axis=1)))


def calibration_scores(labels, probabilities, bins=BINS):
    """`{"ece", "nll", "brier"}` of one split's probabilities (see the measures above)."""
    return {"ece": expected_calibration_error(labels, probabilities, bins),
            "nll": negative_log_likelihood(labels, probabilities),
            "brier": brier_score(labels, probabilities)}


def _is_probabilities(scores):
    return bool(np.all(scores >= 0) and np.all(scores <= 1 + SUM_TOLERANCE)
                and np.all(np.abs(scores.sum(axis=1) - 1) <= SUM_TOLERANCE))


def _logits(scores, from_probabilities):
    """Float64 logits of probabilities (their floored log) or of logits (as they are)."""
    scores = np.asarray(scores, dtype=np.float64)
    if from_probabilities is None:
        from_probabilities = _is_probabilities(scores)
    if from_probabilities:
        return np.log(np.clip(scores, PROBABILITY_FLOOR, 1.0))
    return scores


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def temperature_scale(scores, temperature, from_probabilities=None):
    """NumPy twin of `TemperatureScaling`: `softmax(logits / T)`, in float64.

    Args:
        scores: probabilities `(n, classes)` (their floored log is taken, as the layer
            does) or logits.
        temperature: `T > 0`.
        from_probabilities: whether `scores` are probabilities; None tells from the values
            (non-negative rows that sum to 1 are probabilities).
    """
    if not (isinstance(temperature, (int, float, np.floating)) and math.isfinite(temperature)
            and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0. Received: "
                         f"temperature={temperature!r}")
    return np.exp(_log_softmax(_logits(scores, from_probabilities) / float(temperature)))


def fit_temperature(labels, logits_or_probabilities, from_probabilities=None,
                    bracket=TEMPERATURE_BRACKET, tolerance=1e-6):
    """The temperature `T` of least negative log-likelihood of `softmax(logits / T)`.

    The log-likelihood is concave in `1 / T`, so it has one minimum over `log T`, which
    a golden-section search over `bracket` finds to `tolerance` (in `log T`): the same
    inputs always give the same `T`. A minimum beyond the bracket returns its end (a model
    right on every face keeps gaining as `T` falls).

    Args:
        labels: class ids `(n,)`.
        logits_or_probabilities: `(n, classes)`; probabilities are turned into logits by
            their log (floored at `PROBABILITY_FLOOR`), as `TemperatureScaling` does.
        from_probabilities: whether the scores are probabilities; None tells from the
            values (see `temperature_scale`).
        bracket: `(lowest, highest)` temperatures searched, both > 0.
        tolerance: width in `log T` at which the search stops.

    Returns:
        `T` as a float.

    Example:

    >>> fit_temperature(labels, softmax(3 * logits))  # labels drawn from softmax(logits)
    3.0...
    """
    labels, _ = _checked(labels, logits_or_probabilities)
    low, high = (float(value) for value in bracket)
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"bracket must be two temperatures 0 < low < high. Received: "
                         f"bracket={bracket!r}")
    logits = _logits(logits_or_probabilities, from_probabilities)
    if not np.all(np.isfinite(logits)):
        raise ValueError("logits_or_probabilities holds NaN or infinite values; fit the "
                         "temperature on a model's finite outputs.")
    rows = np.arange(len(labels))

    def loss(log_temperature):
        return -float(np.mean(_log_softmax(logits / math.exp(log_temperature))[rows, labels]))

    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = math.log(low), math.log(high)
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    loss_c, loss_d = loss(c), loss(d)
    while b - a > tolerance:
        if loss_c <= loss_d:
            b, d, loss_d = d, c, loss_c
            c = b - ratio * (b - a)
            loss_c = loss(c)
        else:
            a, c, loss_c = c, d, loss_d
            d = a + ratio * (b - a)
            loss_d = loss(d)
    return float(math.exp((a + b) / 2.0))


def plot_reliability(diagrams, path, title=""):
    """Reliability diagrams, before and after calibration, one panel per split.

    Args:
        diagrams: `{panel title: {"before": rows, "after": rows, "ece_before": float,
            "ece_after": float}}`, rows as `reliability` returns them.
        path: the PNG to write.
        title: the figure's title.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(diagrams), figsize=(5 * len(diagrams), 4.5),
                                squeeze=False)
    for axis, (panel, diagram) in zip(axes[0], diagrams.items()):
        rows = diagram["before"]
        width = rows[0]["upper"] - rows[0]["lower"]
        for offset, key, colour in ((-width / 4, "before", "tab:red"),
                                    (width / 4, "after", "tab:blue")):
            filled = [row for row in diagram[key] if row["count"]]
            axis.bar([(row["lower"] + row["upper"]) / 2 + offset for row in filled],
                     [row["accuracy"] for row in filled], width=width / 2, color=colour,
                     alpha=0.7, label=f"{key}: ECE {100 * diagram[f'ece_{key}']:.2f}%")
        axis.plot([0, 1], [0, 1], color="gray", linestyle="--", label="calibrated")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence (top probability)")
        axis.set_ylabel("accuracy in the bin")
        axis.set_title(panel)
        axis.legend(loc="upper left")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


SPLIT_TITLES = {"validation": "validation", "public_test": "PublicTest",
                "private_test": "PrivateTest"}


def calibrate_run(run, output, data=None, overwrite=False, command=None):
    """Writes `run`'s model followed by temperature scaling as the run folder `output`.

    The temperature is fitted on the run's selection split (see `fit_temperature`). Every
    split is predicted once by the source model; the calibrated probabilities are its
    `TemperatureScaling` layer applied to those (what the written model computes, which
    `evaluate --verify` checks), and the predicted class of every face is checked to be
    unchanged.

    Args:
        run: a run folder holding `model.keras` (a `fit`, `tta`, `rebalance` or
            `ensemble` run).
        output: the run folder to write.
        data: the FER2013 CSV or image folder (default: `$FER2013_PATH`, then the data
            the run's `config.json` records, then `data/fer2013.csv[.gz]`).
        overwrite: replace a finished run already in `output`.
        command: recorded in `config.json` as the command line that wrote it.

    Returns:
        The new run's metrics dict: model "calibrated", its `source`, `calibration`
        (`temperature`, `selection_split`, `bins`, and `before` / `after` / `reliability`
        by split, for the selection split and PrivateTest), the source's protocol, label
        set, precision, epochs and minutes, and every split scored.

    Raises:
        ValueError: for a run without a model, an already calibrated run, an empty
            selection split, or an output that holds a finished run (without `overwrite`).
    """
    # Lazy: Keras and the model zoo, which the calibrate command's --help must not import.
    import keras

    from fer_keras.models import load_model
    from fer_keras.models.calibration import LAYER_NAME, calibrated, temperature_of
    from fer_keras.models.layers import forward_passes

    run, output = Path(run), Path(output)
    refuse_finished_run(output, overwrite)
    if not (run / "model.keras").exists():
        raise ValueError(f"{run} holds no model.keras; give a run folder written by "
                         f"`python -m fer_keras.fit` (or tta, rebalance, ensemble).")
    source_config, inherited = source_run(run)
    protocol = get_protocol(inherited["protocol"])
    selection = protocol.selection_split
    data_labels = labels_of(source_config or inherited)
    if data_labels not in list_label_sets():
        # A fine-tuned run's classes are its own folder's, which no FER2013 split labels.
        classes = ", ".join(source_config.get("class_names") or [])
        raise ValueError(f"calibrate fits T on the FER2013 or FER+ splits of a run's label "
                         f"set; {run} records labels={data_labels!r} ({classes}), which "
                         f"those splits do not label. Calibrate a run trained on FER2013 or "
                         f"FER+ labels, or a fine-tuned run with `python -m "
                         f"fer_keras.calibrate` (on its holdout faces). Received: "
                         f"run={str(run)!r}")
    data_path = resolve_data_path(data, recorded=(str(run / "config.json"),
                                                  source_config.get("data_path")))
    splits = splits_for_run(data_path, source_config or inherited)
    if not len(splits[selection][1]):
        raise ValueError(f"The selection split {selection} is empty in {data_path}, so there "
                         f"is nothing to fit the temperature on. Pass --data with the FER2013 "
                         f"file the run was trained on.")
    source = load_model(run / "model.keras")
    # The run's recorded classes, checked against its outputs and its data's label set.
    model_set = label_set_of(run, source.output_shape[-1], str(run / "model.keras"))
    if model_set.class_names != get_label_set(data_labels).class_names:
        raise ValueError(f"{run} outputs {', '.join(model_set.class_names)}, not the "
                         f"classes of its {data_labels} labels in their order, so its "
                         f"splits cannot score it. Calibrate a run trained on them. "
                         f"Received: run={str(run)!r}")
    if temperature_of(source) is not None:
        raise ValueError(f"{run} is already calibrated (T = {temperature_of(source):g}); "
                         f"calibrate the run it was made from instead.")
    names = list(CALIBRATED_SPLITS) + (["fer2013_private_test"]
                                       if "fer2013_private_test" in splits else [])
    before = split_probabilities(source, splits, names)
    temperature = fit_temperature(splits[selection][1], before[selection],
                                  from_probabilities=True)
    model = calibrated(source, temperature, name=output.name)
    layer = model.get_layer(LAYER_NAME)
    after = {name: keras.ops.convert_to_numpy(layer(probabilities))
             for name, probabilities in before.items()}
    images = splits[selection][0]
    if isinstance(images, np.ndarray):
        # The written model is the source's graph with the layer after it; a few faces
        # through the whole model confirm that the scores below are its own.
        direct = model.predict(images[:32].astype("float32"), verbose=0)
        if not np.allclose(direct, after[selection][:32], atol=1e-4):
            raise RuntimeError(f"The calibrated model of {run} does not reproduce its layer "
                               f"applied to the source's probabilities (largest difference "
                               f"{np.abs(direct - after[selection][:32]).max():.3g}).")
    for name in before:
        changed = int(np.sum(before[name].argmax(axis=1) != after[name].argmax(axis=1)))
        if changed:
            raise RuntimeError(f"Temperature scaling (T = {temperature:g}) changed the "
                               f"predicted class of {changed} faces of {name}; it must keep "
                               f"every prediction.")
    scored = {name: score(splits[name][1], after[name], model_set.class_names)
              for name in after if name != "fer2013_private_test"}
    shared = {}
    if "fer2013_private_test" in after:
        # A FER+ run is also scored on FER2013's labels, over the 7 shared classes.
        shared["fer2013_private_test"] = score_on(
            splits["fer2013_private_test"][1], FER2013, after["fer2013_private_test"],
            model_set)
    measured = list(dict.fromkeys([selection, "private_test"]))
    measured = [name for name in measured if name in after]
    calibration = {
        "method": "temperature scaling",
        "temperature": temperature,
        "selection_split": selection,
        "bins": BINS,
        "bracket": list(TEMPERATURE_BRACKET),
        "before": {name: calibration_scores(splits[name][1], before[name])
                   for name in measured},
        "after": {name: calibration_scores(splits[name][1], after[name])
                  for name in measured},
        "reliability": {name: {"before": reliability(splits[name][1], before[name]),
                               "after": reliability(splits[name][1], after[name])}
                        for name in measured},
    }
    metrics = {
        "experiment": output.name,
        "model": "calibrated",
        "source": str(run),
        "forward_passes_per_face": forward_passes(model),
        "parameters": int(model.count_params()),
        **inherited,
        "calibration": calibration,
        "splits": scored,
        **shared,
    }
    config = {"experiment": output.name, "model": "calibrated", "source": str(run),
              "source_experiment": source_config.get("experiment"),
              "temperature": temperature, "selection_split": selection,
              "protocol": protocol.name, "labels": inherited["labels"],
              "labels_file": source_config.get("labels_file"), "data_path": str(data_path),
              "command": command}
    diagrams = {
        f"{SPLIT_TITLES.get(name, name)}{' (fits T)' if name == selection else ''}": {
            "before": calibration["reliability"][name]["before"],
            "after": calibration["reliability"][name]["after"],
            "ece_before": calibration["before"][name]["ece"],
            "ece_after": calibration["after"][name]["ece"]}
        for name in measured}

    def write(folder):
        save_derived_run(folder, model, config, metrics, "private_test",
                         f"{output.name}: PrivateTest")
        plot_reliability(diagrams, folder / "reliability.png",
                         title=f"{run.name}: temperature scaling, T = {temperature:.3f}")

    write_run_folder(output, write, overwrite)
    return metrics
