"""Average the probabilities of several committed runs in one Keras model.

Usage:

    python -m fer_keras.ensemble saved_models/fer_vgg_long saved_models/fer_vgg \\
        --output saved_models/ensemble_vgg [--data PATH] [--overwrite]
    python -m fer_keras.ensemble RUN RUN RUN ... --select --output saved_models/NAME

Each RUN is a run folder (or its `model.keras`). The ensemble is an ordinary Keras model
(one input, the members side by side, a mean of their probabilities), so `evaluate
--verify`, `export` and `predict` take it like any other. The output folder is a normal run
folder: `model.keras`, `config.json` (members and the command), `metrics.json` (every
split, the members' own scores, the forward passes per face) and `confusion_matrix.png`.
Nothing is trained, so rerunning the command rebuilds the same model.

With `--select`, the RUNs are candidates: each is predicted once on the selection split,
every subset of two or more is scored there from the mean of its members' probabilities, and
the most accurate subset (the smallest on a tie) becomes the ensemble. The test split plays
no part in the choice; `metrics.json` records the candidates and the best subsets.

Protocol: when every member used the study protocol, the ensemble is scored as they were
(validation split cut from Training). When any member trained on all of Training (kaggle
protocol), the study's validation rows are no longer unseen, so the ensemble uses the
kaggle protocol: it is "selected" on PublicTest and PrivateTest is the clean figure.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fer_keras.cli import command_prog, entry_point, run_command

MAX_CANDIDATES = 12
"""`--select` scores every subset of the candidates: 4,083 of them for 12."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog=command_prog("ensemble"), description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="run folders (or model.keras files) to average; at least two")
    parser.add_argument("--output", required=True,
                        help="run folder to write, e.g. saved_models/ensemble_vgg")
    parser.add_argument("--data", help="FER2013 CSV or image folder (default "
                        "$FER2013_PATH, then data/fer2013.csv[.gz])")
    parser.add_argument("--select", action="store_true",
                        help="treat the RUNs as candidates and keep the subset (two or more) "
                             "most accurate on the selection split (PublicTest under the "
                             "kaggle protocol); at most %d candidates" % MAX_CANDIDATES)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished ensemble already in --output")
    return parser


def _member_paths(runs):
    paths = []
    for run in runs:
        path = Path(run)
        model_path = path / "model.keras" if path.is_dir() else path
        if not model_path.exists():
            raise ValueError(f"No model at {model_path}. Give run folders holding model.keras "
                             f"(train one with `python -m fer_keras.fit EXPERIMENT`). "
                             f"Received: {run}")
        paths.append(model_path)
    if len(paths) < 2:
        raise ValueError(f"An ensemble needs at least two runs. Received: {list(runs)}")
    if len(set(p.resolve() for p in paths)) != len(paths):
        raise ValueError(f"A run is listed twice. Received: {list(runs)}")
    return paths


def _member_protocol(model_path):
    config_path = model_path.with_name("config.json")
    if config_path.exists():
        return json.loads(config_path.read_text()).get("protocol", "study")
    return "study"


def build_ensemble(members, name="ensemble"):
    """One Keras model averaging the probabilities of `members` (Keras models).

    Each member is wrapped under a unique name (`member1`, ...), so two runs of the same
    architecture sit side by side; weights are shared with the given models, not copied.
    """
    import keras

    if len(members) < 2:
        raise ValueError(f"An ensemble needs at least two members. Received: {len(members)}")
    image = keras.Input(shape=members[0].input_shape[1:], name="image")
    outputs = []
    for index, member in enumerate(members, start=1):
        if tuple(member.input_shape[1:]) != tuple(image.shape[1:]):
            raise ValueError(f"Member {index} takes inputs of shape {member.input_shape}, "
                             f"member 1 takes {members[0].input_shape}; all must match.")
        renamed = keras.Model(member.inputs, member.outputs[0], name=f"member{index}")
        outputs.append(renamed(image))
    average = keras.layers.Average(name="probabilities", dtype="float32")(outputs)
    return keras.Model(image, average, name=name)


def rank_subsets(labels, probabilities, min_members=2):
    """Every subset of candidates, best first, by accuracy of their mean probabilities.

    Args:
        labels: the selection split's labels, shape `(n,)`.
        probabilities: one `(n, classes)` array per candidate.
        min_members: the smallest subset considered.

    Returns:
        A list of `(indices, accuracy)`, indices a sorted tuple into `probabilities`,
        ordered by accuracy (highest first), then size (smallest first), then indices.
    """
    from itertools import combinations

    count = len(probabilities)
    if count < min_members:
        raise ValueError(f"Selection needs at least {min_members} candidates. "
                         f"Received: {count}")
    labels = np.asarray(labels)
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probabilities])
    ranked = []
    for size in range(min_members, count + 1):
        for indices in combinations(range(count), size):
            # The mean and the sum have the same argmax; summing is cheaper.
            predicted = stacked[list(indices)].sum(axis=0).argmax(axis=1)
            ranked.append((indices, float(np.mean(predicted == labels))))
    ranked.sort(key=lambda item: (-item[1], len(item[0]), item[0]))
    return ranked


def make_ensemble(runs, output, data=None, overwrite=False, select=False):
    """Builds, scores and writes an ensemble run folder; returns its metrics dict.

    With `select`, `runs` are candidates and the subset most accurate on the selection
    split becomes the ensemble (see `rank_subsets`).
    """
    from fer_keras.data.sources import load_splits, resolve_data_path
    from fer_keras.training.run_folder import refuse_finished_run, write_run_folder
    from fer_keras.models import load_model
    from fer_keras.models.layers import forward_passes
    from fer_keras.training.results import save_derived_run, score, split_probabilities

    output = Path(output)
    refuse_finished_run(output, overwrite)
    paths = _member_paths(runs)
    if select and len(paths) > MAX_CANDIDATES:
        raise ValueError(f"--select takes at most {MAX_CANDIDATES} candidates (it scores "
                         f"every subset). Received: {len(paths)}")
    protocols = {str(path): _member_protocol(path) for path in paths}
    protocol = "kaggle" if "kaggle" in protocols.values() else "study"
    selection_split = "public_test" if protocol == "kaggle" else "validation"
    data_path = resolve_data_path(data)
    members = [load_model(path) for path in paths]
    splits = load_splits(data_path, protocol=protocol)
    # Probabilities already computed for each member, by split (the selection split's, after
    # --select), so they are not predicted again.
    known = [None] * len(members)
    selection = None
    if select:
        candidates = [split_probabilities(member, splits, [selection_split])[selection_split]
                      for member in members]
        ranked = rank_subsets(splits[selection_split][1], candidates)
        chosen = list(ranked[0][0])
        selection = {
            "split": selection_split,
            "candidates": {str(path.parent): score(splits[selection_split][1], p)["accuracy"]
                           for path, p in zip(paths, candidates)},
            "subsets_scored": len(ranked),
            "best": [{"members": [str(paths[i].parent) for i in indices],
                      "accuracy": accuracy} for indices, accuracy in ranked[:10]]}
        known = [{selection_split: candidates[i]} for i in chosen]
        paths = [paths[i] for i in chosen]
        members = [members[i] for i in chosen]
        protocols = {str(path): protocols[str(path)] for path in paths}
    ensemble = build_ensemble(members, name=output.name)
    # Each member predicts each split once; the ensemble's scores come from the mean of
    # those probabilities, which is what its Average layer computes (`evaluate --verify`
    # scores the written model itself).
    names = ["validation", "public_test", "private_test"]
    member_probabilities = [split_probabilities(member, splits, names, known=already)
                            for member, already in zip(members, known)]
    member_scores = {
        str(path.parent): {split: score(splits[split][1], probabilities)["accuracy"]
                           for split, probabilities in by_split.items()}
        for path, by_split in zip(paths, member_probabilities)}
    scored = {split: score(splits[split][1], np.mean(
                  [by_split[split] for by_split in member_probabilities], axis=0))
              for split in member_probabilities[0]}
    metrics = {
        "experiment": output.name,
        "model": "ensemble",
        "members": [str(path.parent) for path in paths],
        "member_accuracy": member_scores,
        "parameters": int(ensemble.count_params()),
        "forward_passes_per_face": sum(forward_passes(member) for member in members),
        "protocol": protocol,
        "precision": "float32",
        "selection_split": selection_split,
        "train_minutes": 0.0,
        "splits": scored,
    }
    if selection:
        metrics["member_selection"] = selection
    config = {"experiment": output.name, "model": "ensemble",
              "members": metrics["members"], "member_protocols": protocols,
              "protocol": protocol, "data_path": str(data_path),
              "command": " ".join(["python -m fer_keras.ensemble"] + sys.argv[1:])}
    write_run_folder(output, lambda folder: save_derived_run(
        folder, ensemble, config, metrics, "private_test", f"{output.name}: PrivateTest"),
        overwrite)
    return metrics


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        metrics = make_ensemble(args.runs, args.output, data=args.data,
                                overwrite=args.overwrite, select=args.select)
        selection = metrics.get("member_selection")
        if selection:
            print(f"selected {len(metrics['members'])} of {len(selection['candidates'])} "
                  f"candidates on {selection['split']} ({selection['subsets_scored']} subsets "
                  f"scored)")
        for member, scores in metrics["member_accuracy"].items():
            print(f"member {member}: PublicTest {100 * scores['public_test']:.2f}, "
                  f"PrivateTest {100 * scores['private_test']:.2f}")
        splits = metrics["splits"]
        print(f"ensemble of {len(metrics['members'])} ({metrics['protocol']} protocol, "
              f"{metrics['forward_passes_per_face']} forward passes per face): PublicTest "
              f"{100 * splits['public_test']['accuracy']:.2f}, PrivateTest "
              f"{100 * splits['private_test']['accuracy']:.2f}; wrote {args.output}")

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
