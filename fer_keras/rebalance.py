"""Raise the rare classes of a trained run by post-hoc logit adjustment, tuned on its
selection split.

Usage:

    python -m fer_keras.rebalance saved_models/fer_vgg_long \\
        --output saved_models/fer_vgg_long_balanced [--tau X] [--max-drop 0.25] \\
        [--data PATH] [--overwrite]

FER2013 is imbalanced (disgust is 1.5% of Training), so a network trained on it under-calls
the rare classes. Logit adjustment (`fer_keras.models.layers.LogitAdjustment`) divides each
probability by the class's training frequency to the power `tau` and renormalises. Without
`--tau`, `tau` is chosen on the run's selection split (validation, or PublicTest under the
kaggle protocol): the value of 0, 0.05, ..., 1 with the best macro-F1 among those that lose
at most `--max-drop` accuracy points there. PrivateTest plays no part in the choice.

Writes a normal run folder (`model.keras` = the run's network + the adjustment layer,
`config.json`, `metrics.json` with the sweep, `confusion_matrix.png` and `tau_sweep.png`)
that `evaluate --verify`, `export`, `predict` and `report` take. Nothing is retrained.
"""

import argparse
import sys
from pathlib import Path

from fer_keras.cli import command_prog, entry_point, run_command

TAUS = tuple(round(0.05 * step, 2) for step in range(21))


def build_parser():
    from fer_keras.cli import number_in

    parser = argparse.ArgumentParser(
        prog=command_prog("rebalance"), description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder holding model.keras and config.json")
    parser.add_argument("--output", required=True, help="run folder to write")
    parser.add_argument("--tau", type=number_in(0.0, 2.0),
                        help="adjustment strength in [0, 2]; default: chosen on the run's "
                        "selection split")
    parser.add_argument("--max-drop", type=number_in(0.0, 100.0), default=0.25,
                        help="accuracy points the choice of tau may give up on the selection "
                        "split (default 0.25)")
    parser.add_argument("--data", help="FER2013 CSV or image folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished run already in --output")
    return parser


def adjust(probabilities, prior, tau):
    """NumPy twin of `LogitAdjustment`, for the sweep."""
    import numpy as np

    logits = np.log(np.maximum(probabilities, 1e-12)) - tau * np.log(prior)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def choose_tau(labels, probabilities, prior, max_drop=0.25, taus=TAUS):
    """Sweeps `taus` on one split; returns `(best tau, [(tau, accuracy, macro_f1), ...])`.

    The best tau has the highest macro-F1 among those whose accuracy is within `max_drop`
    points of tau = 0 (ties go to the smaller tau).
    """
    from fer_keras.training.results import score

    sweep = []
    for tau in taus:
        scored = score(labels, adjust(probabilities, prior, tau))
        sweep.append((float(tau), scored["accuracy"], scored["macro_f1"]))
    base = score(labels, probabilities)["accuracy"]
    allowed = [row for row in sweep if 100 * (base - row[1]) <= max_drop + 1e-9]
    best = max(allowed, key=lambda row: (row[2], -row[0]))
    return best[0], sweep


def plot_sweep(sweep, tau, path, title=""):
    from fer_keras.training.results import _pyplot

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


def rebalance(run, output, tau=None, max_drop=0.25, data=None, overwrite=False):
    """Builds, scores and writes the adjusted run folder; returns its metrics dict."""
    import keras
    import numpy as np

    from fer_keras.data.sources import NUM_CLASSES, load_splits, resolve_data_path
    from fer_keras.training.run_folder import refuse_finished_run, write_run_folder
    from fer_keras.models import load_model
    from fer_keras.models.layers import LogitAdjustment
    from fer_keras.training.results import (evaluate_splits, predict_probabilities, save_derived_run,
                                   source_run)

    run, output = Path(run), Path(output)
    refuse_finished_run(output, overwrite)
    if not (run / "model.keras").exists():
        raise ValueError(f"{run} holds no model.keras; give a run folder written by "
                         "`python -m fer_keras.fit`.")
    source_config, inherited = source_run(run)
    protocol = inherited["protocol"]
    data_path = resolve_data_path(data)
    splits = load_splits(data_path, protocol=protocol)
    counts = np.bincount(splits["train"][1], minlength=NUM_CLASSES).astype("float64")
    prior = counts / counts.sum()
    network = load_model(run / "model.keras")
    sweep = None
    if tau is None:
        selection = predict_probabilities(network, splits["validation"][0])
        tau, sweep = choose_tau(splits["validation"][1], selection, prior, max_drop)
    image = keras.Input(shape=network.input_shape[1:], name="image")
    wrapped = keras.Model(network.inputs, network.outputs[0], name="network")
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
              "data_path": str(data_path),
              "command": " ".join(["python -m fer_keras.rebalance"] + sys.argv[1:])}
    def write(folder):
        save_derived_run(folder, model, config, metrics, "validation",
                         f"{output.name}: selection split")
        if sweep is not None:
            plot_sweep(sweep, tau, folder / "tau_sweep.png",
                       title=f"{run.name}: logit adjustment")

    write_run_folder(output, write, overwrite)
    return metrics


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        metrics = rebalance(args.run, args.output, tau=args.tau, max_drop=args.max_drop,
                            data=args.data, overwrite=args.overwrite)
        splits = metrics["splits"]
        for split in ("validation", "private_test"):
            result = splits[split]
            print(f"{split}: accuracy {100 * result['accuracy']:.2f}, macro-F1 "
                  f"{100 * result['macro_f1']:.2f}, disgust recall "
                  f"{100 * result['per_class']['disgust']['recall']:.1f}")
        print(f"tau = {metrics['tau']:g}; wrote {args.output}")

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
