"""Post-hoc logit adjustment of a trained run towards the rare classes, tuned on its
selection split.

FER2013 is imbalanced (disgust is 1.5% of Training), so a network trained on it under-calls
the rare classes. Logit adjustment (`fer_keras.models.layers.LogitAdjustment`) divides each
probability by the class's training frequency to the power `tau` and renormalises. Without
a given `tau`, `choose_tau` picks it on the run's selection split (validation, or PublicTest
under the kaggle protocol): the value of `TAUS` with the best macro-F1 among those that lose
at most `max_drop` accuracy points there. PrivateTest plays no part in the choice.

`rebalance` writes a normal run folder (`model.keras` = the run's network + the adjustment
layer, `config.json`, `metrics.json` with the sweep, `confusion_matrix.png` and
`tau_sweep.png`). Nothing is retrained.
"""

from pathlib import Path

import numpy as np

from fer_keras.data.labels import FER2013, label_set_of
from fer_keras.data.sources import load_splits, resolve_data_path
from fer_keras.training.results import (
    _pyplot,
    evaluate_splits,
    predict_probabilities,
    save_derived_run,
    score,
    source_run,
)
from fer_keras.training.run_folder import refuse_finished_run, write_run_folder

TAUS = tuple(round(0.05 * step, 2) for step in range(21))


def adjust(probabilities, prior, tau):
    """NumPy twin of `LogitAdjustment`, for the sweep."""
    logits = np.log(np.maximum(probabilities, 1e-12)) - tau * np.log(prior)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def choose_tau(labels, probabilities, prior, max_drop=0.25, taus=TAUS):
    """Sweeps `taus` on one split; returns `(best tau, [(tau, accuracy, macro_f1), ...])`.

    The best tau has the highest macro-F1 among those whose accuracy is within `max_drop`
    points of tau = 0 (ties go to the smaller tau).
    """
    sweep = []
    for tau in taus:
        scored = score(labels, adjust(probabilities, prior, tau))
        sweep.append((float(tau), scored["accuracy"], scored["macro_f1"]))
    base = score(labels, probabilities)["accuracy"]
    allowed = [row for row in sweep if 100 * (base - row[1]) <= max_drop + 1e-9]
    best = max(allowed, key=lambda row: (row[2], -row[0]))
    return best[0], sweep


def plot_sweep(sweep, tau, path, title=""):
    """Plots accuracy and macro-F1 against tau, the chosen tau marked, into `path`."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    taus = [row[0] for row in sweep]
    axis.plot(taus, [100 * row[1] for row in sweep], marker="o", label="accuracy")
    axis.plot(taus, [100 * row[2] for row in sweep], marker="o", label="macro-F1")
    axis.axvline(tau, color="gray", linestyle="--", label=f"chosen tau = {tau:g}")
    axis.set_xlabel("tau (logit adjustment strength)")
    axis.set_ylabel("% on the selection split")
    axis.set_title(title)
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def rebalance(run, output, tau=None, max_drop=0.25, data=None, overwrite=False,
              command=None):
    """Builds, scores and writes the adjusted run folder; returns its metrics dict.

    `command` is recorded in `config.json` as the command line that wrote it.
    """
    # Lazy: Keras and the model zoo, which the rebalance command's --help must not import.
    import keras

    from fer_keras.models import load_model
    from fer_keras.models.layers import LogitAdjustment, graph_inputs

    run, output = Path(run), Path(output)
    refuse_finished_run(output, overwrite)
    if not (run / "model.keras").exists():
        raise ValueError(f"{run} holds no model.keras; give a run folder written by "
                         "`python -m fer_keras.fit`.")
    source_config, inherited = source_run(run)
    protocol = inherited["protocol"]
    data_path = resolve_data_path(data)
    splits = load_splits(data_path, protocol=protocol)
    network = load_model(run / "model.keras")
    labels = label_set_of(run, int(network.output_shape[-1]), where=str(run / "model.keras"))
    if labels.class_names != FER2013.class_names:
        # The prior and the scores below come from FER2013's labels, by class id.
        raise ValueError(f"rebalance adjusts a model of FER2013's 7 classes in their order "
                         f"with FER2013's class frequencies; {run} outputs "
                         f"{', '.join(labels.class_names)} ({labels.name}). Pass a run "
                         f"trained on FER2013's labels. Received: run={str(run)!r}")
    counts = np.bincount(splits["train"][1], minlength=labels.num_classes).astype("float64")
    prior = counts / counts.sum()
    sweep = None
    if tau is None:
        selection = predict_probabilities(network, splits["validation"][0])
        tau, sweep = choose_tau(splits["validation"][1], selection, prior, max_drop)
    image = keras.Input(shape=network.input_shape[1:], name="image")
    wrapped = keras.Model(graph_inputs(network), network.outputs[0], name="network")
    adjusted = LogitAdjustment(prior, tau, name="probabilities")(wrapped(image))
    model = keras.Model(image, adjusted, name=output.name)
    scored = evaluate_splits(model, splits)
    metrics = {
        "experiment": output.name,
        "model": "rebalanced",
        "source": str(run),
        "tau": tau,
        "max_drop_points": max_drop,
        "prior": prior.round(6).tolist(),
        "sweep": None if sweep is None else [
            {"tau": t, "accuracy": a, "macro_f1": f} for t, a, f in sweep],
        "parameters": int(model.count_params()),
        **inherited,
        "splits": scored,
    }
    config = {"experiment": output.name, "model": "rebalanced", "source": str(run),
              "source_experiment": source_config.get("experiment"), "tau": tau,
              "max_drop_points": max_drop, "protocol": protocol,
              "data_path": str(data_path), "command": command}

    def write(folder):
        save_derived_run(folder, model, config, metrics, "validation",
                         f"{output.name}: selection split")
        if sweep is not None:
            plot_sweep(sweep, tau, folder / "tau_sweep.png",
                       title=f"{run.name}: logit adjustment")

    write_run_folder(output, write, overwrite)
    return metrics
