"""A model's classes are the ones its run records: a run fine-tuned over 3 of FER2013's
classes, or over a new one, is named by its `config.json` wherever it is loaded, and a
record that disagrees with the model's outputs is refused."""

import json

import conftest
import numpy as np
import pytest

from fer_keras import finetune as command
from fer_keras.data import labels

SUBSET = ("happy", "sad", "surprise")
GROUP_BY = r"^(s\d+)_"


def _noise(level, rng):
    """A 96x96 colour noise picture about grey `level`."""
    return np.clip(rng.normal(level, 20, (96, 96, 3)), 0, 255).astype(np.uint8)


def write_faces(root, folders, subjects=3, per_subject=2, seed=0):
    """Folders of `_noise` pictures, light or dark per folder."""
    return conftest.write_faces(root, folders, _noise, subjects, per_subject, seed)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    from fer_keras.models import get_model

    path = tmp_path_factory.mktemp("base") / "base.keras"
    get_model("baseline").save(path)
    return path


@pytest.fixture(scope="module")
def subset_run(tmp_path_factory, base_model):
    """A run fine-tuned (1 epoch) on folders of 3 of FER2013's 7 classes."""
    root = tmp_path_factory.mktemp("subset")
    data = write_faces(root / "data", [("Surprised", 200), ("happy", 60),
                                       ("sadness", 200)], subjects=3, per_subject=2)
    before = labels.list_label_sets()
    assert command.main([str(data), "--from", str(base_model), "--output",
                         str(root / "run"), "--group-by", GROUP_BY, "--epochs", "1",
                         "--freeze-epochs", "1"]) == 0
    # Nothing is registered in the process: what names the classes is the run's record.
    assert labels.list_label_sets() == before == ["fer2013", "ferplus"]
    return root / "run"


def _write_run(folder, model, config):
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_committed_runs_keep_their_label_sets():
    # FER+ runs record their class names; older FER2013 runs record nothing and fall
    # back on their output count; a bare name that is no path does too.
    assert labels.label_set_of("saved_models/fer_vgg_ferplus", 8) is labels.FERPLUS
    assert labels.label_set_of("saved_models/baseline/model.keras", 7) is labels.FER2013
    assert labels.label_set_of("no/such/model.keras", 8) is labels.FERPLUS
    with pytest.raises(ValueError, match="has 5 outputs, which matches no known"):
        labels.label_set_of("no/such/model.keras", 5)


def test_a_subset_run_is_served_with_its_three_names_in_order(subset_run, tiny_csv):
    from fer_keras.serving.evaluation import evaluate
    from fer_keras.serving.runner import Classifier

    config = json.loads((subset_run / "config.json").read_text())
    assert config["class_names"] == list(SUBSET)
    for path in (subset_run, subset_run / "model.keras"):
        classifier = Classifier(path)
        assert classifier.class_names == SUBSET, path
        assert classifier.label_set.name == "fer2013:happy+sad+surprise"
    # Scored on FER2013's labels: only the faces of its 3 classes, named as the run names
    # them (a 7-class name table would put "angry" first).
    from fer_keras.data.sources import load_splits

    scores = evaluate(subset_run, data=tiny_csv)
    assert list(scores["per_class"]) == list(SUBSET) == scores["class_order"]
    truth = load_splits(tiny_csv)["validation"][1]
    ids = [labels.FER2013.class_names.index(name) for name in SUBSET]
    assert scores["count"] == int(np.isin(truth, ids).sum()) > 0
    assert scores["left_out"] == len(truth) - scores["count"] > 0
    assert [scores["per_class"][name]["support"] for name in SUBSET] == [
        int((truth == index).sum()) for index in ids]


@pytest.mark.slow
def test_a_subset_run_exports_its_names(subset_run):
    import tensorflow as tf

    from fer_keras.serving.export import export
    from fer_keras.serving.runner import Classifier

    result = export(subset_run, tflite=False)
    savedmodel = subset_run / "serving" / "1"
    assert result["savedmodel"] == str(savedmodel)
    assert (savedmodel / "assets" / "labels.txt").read_text().split() == list(SUBSET)
    metadata = json.loads((savedmodel / "assets.extra" / "export.json").read_text())
    assert metadata["class_names"] == list(SUBSET)
    classifier = Classifier(savedmodel)
    assert classifier.class_names == SUBSET
    assert Classifier(savedmodel / "assets.extra" / "model.keras").class_names == SUBSET
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 1), dtype=np.uint8)
    outputs = tf.saved_model.load(str(savedmodel)).signatures["serving_default"](
        image=tf.constant(faces))
    names = [name.decode() for name in outputs["label"].numpy()]
    assert names == [SUBSET[index] for index in outputs["class_id"].numpy()]


def test_a_record_that_disagrees_with_the_outputs_is_refused_in_one_line(tmp_path):
    from fer_keras.models import get_model
    from fer_keras.serving.runner import Classifier

    run = _write_run(tmp_path / "run", get_model("baseline"),
                     {"class_names": list(SUBSET), "labels": "mine"})
    with pytest.raises(ValueError) as error:
        labels.label_set_of(run, 7)
    message = str(error.value)
    assert "\n" not in message
    assert str(run / "config.json") in message
    assert "records 3 classes (happy, sad, surprise)" in message and "7 outputs" in message
    assert "fix class_names" in message
    with pytest.raises(ValueError, match="records 3 classes .* 7 outputs"):
        Classifier(run)
    with pytest.raises(ValueError, match="distinct names"):
        labels.label_set_of(_write_run(tmp_path / "twice", get_model("baseline"),
                                       {"class_names": ["happy", "happy"]}), 2)


def test_an_unregistered_label_set_name_without_class_names_is_refused(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"labels": "mine"}))
    with pytest.raises(ValueError, match="labels='mine', which is no registered"):
        labels.label_set_of(folder, 3)


def test_a_new_class_gets_an_output_of_the_new_head(tmp_path, base_model, tiny_csv):
    from fer_keras.serving.evaluation import evaluate
    from fer_keras.serving.runner import Classifier

    data = write_faces(tmp_path / "data", [("happy", 200), ("Bored", 60),
                                           ("sad", 200)], subjects=3, per_subject=2)
    run = tmp_path / "run"
    assert command.main([str(data), "--from", str(base_model), "--output", str(run),
                         "--classes", "bored", "--group-by", GROUP_BY, "--epochs", "1",
                         "--freeze-epochs", "1"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["class_names"] == ["happy", "sad", "bored"]
    assert config["new_classes"] == ["bored"]
    assert Classifier(run).class_names == ("happy", "sad", "bored")
    # On FER2013's labels it is scored on the classes the two share.
    assert list(evaluate(run, data=tiny_csv)["per_class"]) == ["happy", "sad"]


def test_an_unknown_folder_is_refused_unless_listed_in_classes(tmp_path, base_model,
                                                              capsys):
    data = write_faces(tmp_path / "data", [("happy", 200), ("bored", 60)],
                       subjects=1, per_subject=1)
    run = tmp_path / "run"
    for extra, expected in [
            ([], "Class folder 'bored' matches no class of the base model (angry, disgust, "
                 "fear, happy, sad, surprise, neutral); rename it to one of those, or add "
                 "it to --classes"),
            (["--classes", "confused"], "--classes lists confused"),
            (["--classes", "bored,sleepy"], "--classes names sleepy, but DATA has no "
                                            "folder"),
            (["--classes", "bored,Happiness"], "a class the base model has (happy)"),
            (["--classes", "bored,,x"], "none empty")]:
        assert command.main([str(data), "--from", str(base_model), "--output", str(run),
                             *extra]) == 2, extra
        err = capsys.readouterr().err
        assert any(line.startswith("error: ") and expected in line
                   for line in err.splitlines()), (extra, err)
        assert not run.exists()


def test_seven_classes_that_are_not_fer2013s_keep_their_recorded_names(tmp_path):
    from fer_keras.models import get_model
    from fer_keras.serving.runner import Classifier

    # Seven of FER+'s eight, in FER+'s order: the output count alone would say FER2013.
    seven = list(labels.FERPLUS.class_names[:7])
    run = _write_run(tmp_path / "run", get_model("baseline"),
                     {"class_names": seven, "labels": "ferplus:seven"})
    classifier = Classifier(run / "model.keras")
    assert list(classifier.class_names) == seven != list(labels.FER2013.class_names)
    assert classifier.label_set.name == "ferplus:seven"


def test_a_fine_tuned_run_is_calibrated_on_its_own_holdout(subset_run, tmp_path, capsys):
    from fer_keras import calibrate
    from fer_keras.adapt.finetune import holdout_faces
    from fer_keras.models import load_model
    from fer_keras.models.calibration import temperature_of

    output = tmp_path / "calibrated"
    assert calibrate.main([str(subset_run), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "holdout: ECE" in printed and "(unchanged)" in printed
    assert "(fitted on holdout)" in printed
    metrics = json.loads((output / "metrics.json").read_text())
    block = metrics["calibration"]
    assert block["selection_split"] == "holdout" and block["temperature"] > 0
    before, after = block["before"]["holdout"], block["after"]["holdout"]
    assert after["nll"] <= before["nll"] + 1e-9
    source = json.loads((subset_run / "metrics.json").read_text())
    assert metrics["holdout_accuracy"] == pytest.approx(source["holdout_accuracy"], abs=1e-3)
    model = load_model(output / "model.keras")
    assert temperature_of(model) == pytest.approx(block["temperature"])
    assert labels.label_set_of(output, 3).class_names == SUBSET
    assert (output / "reliability.png").is_file()
    # The written model gives the calibrated probabilities the scores were taken from.
    config = json.loads((subset_run / "config.json").read_text())
    images, truth = holdout_faces(config, (48, 48))
    direct = model.predict(images.astype("float32"), verbose=0)
    assert (direct.argmax(axis=1) == truth).mean() * 100 == pytest.approx(
        metrics["holdout_accuracy"], abs=1e-3)
    # Calibrated twice: refused, pointing at the source.
    assert calibrate.main([str(output), "--output", str(tmp_path / "twice")]) == 2
    assert "already calibrated" in capsys.readouterr().err


def test_calibrating_a_fine_tuned_run_refuses_a_changed_folder(subset_run, tmp_path, capsys):
    import shutil

    from fer_keras import calibrate

    config = json.loads((subset_run / "config.json").read_text())
    changed = tmp_path / "data"
    shutil.copytree(config["data"], changed)
    extra = changed / "happy" / "s09_0.png"
    shutil.copy(next((changed / "happy").iterdir()), extra)
    assert calibrate.main([str(subset_run), "--output", str(tmp_path / "out"), "--data",
                           str(changed)]) == 2
    err = capsys.readouterr().err
    assert "data_fingerprint differs" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_report_lists_fine_tuned_runs_in_their_own_table(subset_run, tmp_path):
    import shutil

    from fer_keras import calibrate
    from fer_keras.reporting.report import load_inputs, render_results_readme

    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(subset_run, root / "mine")
    assert calibrate.main([str(root / "mine"), "--output", str(root / "mine_cal")]) == 0
    inputs = load_inputs(root, tmp_path / "no_tuning")
    assert [name for name, _, _ in inputs.finetuned] == ["mine", "mine_cal"]
    assert inputs.runs == []  # Not FER2013-split runs: never in the main tables.
    text = render_results_readme(inputs.runs, finetuned=inputs.finetuned)
    rows = [line for line in text.splitlines() if line.startswith("| [mine")]
    metrics = json.loads((root / "mine" / "metrics.json").read_text())
    temperature = json.loads((root / "mine_cal" / "metrics.json").read_text())[
        "calibration"]["temperature"]
    assert len(rows) == 2 and "happy, sad, surprise" in rows[0]
    assert f"| {metrics['holdout_accuracy']:.2f} |" in rows[0]
    assert rows[1].rstrip().endswith(f"| {temperature:.3f} |")
