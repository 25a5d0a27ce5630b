"""Ensembles of committed runs: one Keras model averaging its members' probabilities.

The ensemble is an ordinary Keras model (one input, the members side by side, a mean of
their probabilities), written as a normal run folder: `model.keras`, `config.json` (members
and the command), `metrics.json` (every split, the members' own scores, the forward passes
per face) and `confusion_matrix.png`. Nothing is trained, so building it again gives the
same model.

With `select`, the runs are candidates: each is predicted once on the selection split,
every subset of two or more is scored there from the mean of its members' probabilities,
and the most accurate subset (the smallest on a tie) becomes the ensemble. The test split
plays no part in the choice.

Protocol: when every member used the study protocol, the ensemble is scored as they were
(validation split cut from Training). When any member trained on all of Training (kaggle
protocol), the study's validation rows are no longer unseen, so the ensemble uses that
member's protocol: it is "selected" on PublicTest and PrivateTest is the clean figure.
"""

import json
from itertools import combinations
from pathlib import Path

import numpy as np

from fer_keras.data.labels import FER2013
from fer_keras.data.protocols import protocol_of
from fer_keras.data.sources import labels_of, resolve_data_path, splits_for_run
from fer_keras.training.results import save_derived_run, score, score_on, split_probabilities
from fer_keras.training.run_folder import refuse_finished_run, write_run_folder

MAX_CANDIDATES = 12
"""`select` scores every subset of the candidates: 4,083 of them for 12."""

SCORED_SPLITS = ("validation", "public_test", "private_test")


def member_paths(runs):
    """The `model.keras` of each run folder (or model file) in `runs`.

    Raises:
        ValueError: for a missing model, fewer than two runs, or a run listed twice.
    """
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


def member_config(model_path):
    """The `config.json` of the run holding `model_path` (empty if none)."""
    config_path = Path(model_path).with_name("config.json")
    return json.loads(config_path.read_text()) if config_path.exists() else {}


def member_protocol(model_path):
    """The `Protocol` the run holding `model_path` recorded (the default if none)."""
    return protocol_of(member_config(model_path))


def shared_labels(paths):
    """`(label set name, config of a member)` the members all trained on.

    Raises:
        ValueError: naming each member's label set, when they differ (their outputs mean
            different classes, so their probabilities cannot be averaged).
    """
    configs = {str(path.parent): member_config(path) for path in paths}
    labels = {member: labels_of(config) for member, config in configs.items()}
    if len(set(labels.values())) > 1:
        listed = ", ".join(f"{member} ({name})" for member, name in labels.items())
        raise ValueError(f"Ensemble members must share a label set (their outputs are "
                         f"averaged class by class). Received: {listed}")
    first = next(iter(configs))
    return labels[first], configs[first]


def shared_protocol(protocols):
    """The `Protocol` an ensemble of members trained under `protocols` is scored under.

    A member whose "validation" split is PublicTest trained on all of Training, so the
    study's validation rows are not unseen by it: its protocol wins. Otherwise the members'
    own (the study's).
    """
    for protocol in protocols:
        if protocol.validation_is_public_test:
            return protocol
    return protocols[0]


def build_ensemble(members, name="ensemble"):
    """One Keras model averaging the probabilities of `members` (Keras models).

    Each member is wrapped under a unique name (`member1`, ...), so two runs of the same
    architecture sit side by side; weights are shared with the given models, not copied.
    """
    # Lazy: the ensemble command's --help must not import Keras.
    import keras

    from fer_keras.models.layers import graph_inputs

    if len(members) < 2:
        raise ValueError(f"An ensemble needs at least two members. Received: {len(members)}")
    image = keras.Input(shape=members[0].input_shape[1:], name="image")
    outputs = []
    for index, member in enumerate(members, start=1):
        if tuple(member.input_shape[1:]) != tuple(image.shape[1:]):
            raise ValueError(f"Member {index} takes inputs of shape {member.input_shape}, "
                             f"member 1 takes {members[0].input_shape}; all must match.")
        renamed = keras.Model(graph_inputs(member), member.outputs[0], name=f"member{index}")
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


def make_ensemble(runs, output, data=None, overwrite=False, select=False, command=None):
    """Builds, scores and writes an ensemble run folder; returns its metrics dict.

    With `select`, `runs` are candidates and the subset most accurate on the selection
    split becomes the ensemble (see `rank_subsets`). `command` is recorded in
    `config.json` as the command line that built it.
    """
    # Lazy: the model zoo imports Keras, which the ensemble command's --help must not.
    from fer_keras.models import load_model
    from fer_keras.models.layers import forward_passes

    output = Path(output)
    refuse_finished_run(output, overwrite)
    paths = member_paths(runs)
    if select and len(paths) > MAX_CANDIDATES:
        raise ValueError(f"--select takes at most {MAX_CANDIDATES} candidates (it scores "
                         f"every subset). Received: {len(paths)}")
    protocols = {str(path): member_protocol(path) for path in paths}
    protocol = shared_protocol(list(protocols.values()))
    selection_split = protocol.selection_split
    data_path = resolve_data_path(data)
    labels, labelled = shared_labels(paths)
    members = [load_model(path) for path in paths]
    splits = splits_for_run(data_path, {**labelled, "protocol": protocol.name})
    # A FER+ ensemble is also scored on FER2013's labels, over the 7 shared classes.
    scored_splits = list(SCORED_SPLITS) + (["fer2013_private_test"]
                                           if "fer2013_private_test" in splits else [])
    # Probabilities already computed for each member, by split (the selection split's, after
    # selecting), so they are not predicted again.
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
    member_probabilities = [split_probabilities(member, splits, scored_splits,
                                                known=already)
                            for member, already in zip(members, known)]
    shared = {}
    for by_split in member_probabilities:
        shared_probabilities = by_split.pop("fer2013_private_test", None)
        if shared_probabilities is not None:
            shared.setdefault("fer2013_private_test", []).append(shared_probabilities)
    member_scores = {
        str(path.parent): {split: score(splits[split][1], probabilities)["accuracy"]
                           for split, probabilities in by_split.items()}
        for path, by_split in zip(paths, member_probabilities)}
    scored = {split: score(splits[split][1], np.mean(
                  [by_split[split] for by_split in member_probabilities], axis=0))
              for split in member_probabilities[0]}
    extra = {name: score_on(splits[name][1], FER2013, np.mean(probabilities, axis=0))
             for name, probabilities in shared.items()}
    metrics = {
        "experiment": output.name,
        "model": "ensemble",
        "members": [str(path.parent) for path in paths],
        "member_accuracy": member_scores,
        "parameters": int(ensemble.count_params()),
        "forward_passes_per_face": sum(forward_passes(member) for member in members),
        "protocol": protocol.name,
        "labels": labels,
        "precision": "float32",
        "selection_split": selection_split,
        "train_minutes": 0.0,
        "splits": scored,
        **extra,
    }
    if selection:
        metrics["member_selection"] = selection
    config = {"experiment": output.name, "model": "ensemble",
              "members": metrics["members"],
              "member_protocols": {path: each.name for path, each in protocols.items()},
              "protocol": protocol.name, "labels": labels,
              "labels_file": labelled.get("labels_file"), "data_path": str(data_path),
              "command": command}
    write_run_folder(output, lambda folder: save_derived_run(
        folder, ensemble, config, metrics, "private_test", f"{output.name}: PrivateTest"),
        overwrite)
    return metrics
