"""Test-time augmentation: accuracy per view set against its serving cost, and a run
wrapped with its views written as a run folder of its own.

A view set (see `fer_keras.models.layers.VIEW_SETS`) wraps a run's network in
`TestTimeAugmentation`; nothing is retrained. `measure` scores the views on the run's
selection split (validation, or PublicTest under the kaggle protocol) and on PrivateTest;
`write_wrapped_run` writes `model.keras` (the same weights inside the wrapper, so `evaluate
--verify`, `export` and `predict` serve it with its views), `metrics.json`, `config.json`
and `confusion_matrix.png`; `merge_table` keeps a JSON table of measurements, run by run.
"""

import json
from pathlib import Path

from fer_keras.data.labels import FER2013
from fer_keras.data.protocols import protocol_of
from fer_keras.data.sources import labels_of, splits_for_run
from fer_keras.training.results import evaluate_splits, save_derived_run, source_run
from fer_keras.training.run_folder import refuse_finished_run, write_run_folder
from fer_keras.utils.files import write_text_atomically

DEFAULT_VIEWS = ("identity", "mirror", "shifts", "ten")

WRAPPED_SPLITS = ("validation", "public_test", "private_test")
"""What a wrapped run is scored on. Not the training split: ten passes over 28,709 faces
cost minutes and say nothing the source run's own Train column does not."""


def check_runs(runs, view_sets):
    """Raises a `ValueError` for an unknown view set or a run folder without a model."""
    # Lazy: the models layer imports Keras, which the tta command's --help must not.
    from fer_keras.models.layers import resolve_views

    for view_set in view_sets:
        resolve_views(view_set)
    for run in runs:
        if not (Path(run) / "model.keras").exists():
            raise ValueError(f"{run} holds no model.keras; give run folders written by "
                             "`python -m fer_keras.fit`.")


def write_wrapped_run(run, view_set, output, data=None, overwrite=False, command=None):
    """Writes `run`'s network wrapped with `view_set` as the run folder `output`.

    `command` is recorded in `config.json` as the command line that wrote it.

    Returns:
        The new run's metrics dict (model "tta", its `source`, `views`, the source's
        protocol, precision, epochs and minutes, and every split scored with the views).
    """
    # Lazy: the model zoo imports Keras, which the tta command's --help must not.
    from fer_keras.models import load_model
    from fer_keras.models.layers import forward_passes, resolve_views, wrap_with_views

    run, output = Path(run), Path(output)
    refuse_finished_run(output, overwrite)
    views = resolve_views(view_set)
    source_config, inherited = source_run(run)
    protocol = inherited["protocol"]
    splits = splits_for_run(data, source_config or inherited)
    wrapped = wrap_with_views(load_model(run / "model.keras"), views)
    scored = evaluate_splits(wrapped, splits, list(WRAPPED_SPLITS))
    shared = {}
    if "fer2013_private_test" in splits:
        # A FER+ run is also scored on FER2013's labels, over the 7 shared classes.
        shared["fer2013_private_test"] = evaluate_splits(
            wrapped, splits, ["fer2013_private_test"],
            label_set=FER2013)["fer2013_private_test"]
    metrics = {
        "experiment": output.name,
        "model": "tta",
        "source": str(run),
        "view_set": view_set,
        "views": list(views),
        "forward_passes_per_face": forward_passes(wrapped),
        "parameters": int(wrapped.count_params()),
        **inherited,
        "splits": scored,
        **shared,
    }
    config = {"experiment": output.name, "model": "tta", "source": str(run),
              "source_experiment": source_config.get("experiment"), "view_set": view_set,
              "views": list(views), "protocol": protocol, "labels": inherited["labels"],
              "labels_file": source_config.get("labels_file"), "data_path": str(data),
              "command": command}
    if source_config.get("class_names"):
        # The source run's classes, in output order (`fer_keras.data.labels.label_set_of`).
        config["class_names"] = list(source_config["class_names"])

    write_run_folder(output, lambda folder: save_derived_run(
        folder, wrapped, config, metrics, "private_test", f"{output.name}: PrivateTest"),
        overwrite)
    return metrics


def measure(run, view_sets, splits_by_protocol, data=None, progress=None):
    """Scores one run under each view set.

    Args:
        run: a run folder holding `model.keras`.
        view_sets: view set names or 'a|b|c' lists of views.
        splits_by_protocol: `{(protocol name, label set): splits}`, filled as they are
            met so that several runs load each one's splits once.
        data: the FER2013 CSV or image folder.
        progress: called as `progress(run, view_set, result)` after each view set.

    Returns:
        `{"protocol": name, "views": {view_set: {forward_passes_per_face,
        selection_accuracy, private_test_accuracy, private_test_macro_f1}}}`.
    """
    # Lazy: the model zoo imports Keras, which the tta command's --help must not.
    from fer_keras.models import load_model
    from fer_keras.models.layers import forward_passes, wrap_with_views

    run = Path(run)
    config_path = run / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    protocol = protocol_of(config).name
    key = (protocol, labels_of(config))
    if key not in splits_by_protocol:
        splits_by_protocol[key] = splits_for_run(data, config)
    splits = splits_by_protocol[key]
    model = load_model(run / "model.keras")
    results = {}
    for view_set in view_sets:
        wrapped = wrap_with_views(model, view_set)
        scored = evaluate_splits(wrapped, splits, ["validation", "private_test"])
        results[view_set] = {
            "forward_passes_per_face": forward_passes(wrapped),
            "selection_accuracy": scored["validation"]["accuracy"],
            "private_test_accuracy": scored["private_test"]["accuracy"],
            "private_test_macro_f1": scored["private_test"]["macro_f1"],
        }
        if progress is not None:
            progress(run, view_set, results[view_set])
    return {"protocol": protocol, "labels": key[1], "views": results}


def merge_table(path, table):
    """Merges `table` (`{run name: measure(...)}`) into the JSON file `path`, run by run,
    written sorted and replaced as a whole; returns the path."""
    path = Path(path)
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored.update(table)
    stored = {name: stored[name] for name in sorted(stored)}
    write_text_atomically(path, json.dumps(stored, indent=2, sort_keys=True) + "\n")
    return path
