"""`python -m fer_keras.finetune`: class folders to a fine-tuned run folder."""

import json

import conftest
import numpy as np
import pytest
from PIL import Image

from fer_keras import finetune as command
from fer_keras.adapt.finetune import (
    build_finetune_model,
    fold_splits,
    holdout_split,
    list_faces,
    load_faces,
    match_classes,
    nested_fold_splits,
    subject_ids,
)
from fer_keras.data.labels import FER2013

GROUP_BY = r"^(s\d+)_"


def _face(kind, rng):
    """A 96x96 colour picture: "bright" is light with horizontal stripes, "dark" is dark
    with vertical ones, each with noise."""
    base = 200.0 if kind == "bright" else 50.0
    picture = np.full((96, 96), base) + rng.normal(0, 12, (96, 96))
    if kind == "bright":
        picture[::8] -= 60
    else:
        picture[:, ::8] += 60
    gray = np.clip(picture, 0, 255).astype(np.uint8)
    return np.stack([gray, np.roll(gray, 1, axis=0), gray], axis=-1)


def write_faces(root, folders, subjects=6, per_subject=3, seed=0):
    """Folders of `_face` pictures ("bright" or "dark" per folder)."""
    return conftest.write_faces(root, folders, _face, subjects, per_subject, seed)


@pytest.fixture
def base_model(tmp_path):
    from fer_keras.models import get_model

    path = tmp_path / "base.keras"
    get_model("baseline").save(path)
    return path


def test_the_new_head_sits_on_a_copy_of_the_base_network(base_model):
    from fer_keras.models import load_model

    base = load_model(base_model)
    before = [weight.copy() for weight in base.get_weights()]
    model, backbone = build_finetune_model(base, 3)
    assert model.output_shape == (None, 3)
    assert backbone.output_shape == base.layers[-1].input.shape
    backbone.set_weights([weight + 1.0 for weight in backbone.get_weights()])
    assert all(np.array_equal(a, b) for a, b in zip(before, base.get_weights()))
    # Kept classes start from the base classifier's rows: the new head answers as the base
    # does over those classes (its zero-shot), a new class's output starts from scratch.
    faces = np.random.default_rng(2).random((16, 48, 48, 1)).astype("float32") * 255
    kept = [3, 5, 0]
    seeded, _ = build_finetune_model(base, 4, columns=kept)
    base_logits = np.log(np.asarray(base.predict(faces, verbose=0)))[:, kept]
    seeded_logits = np.log(np.asarray(seeded.predict(faces, verbose=0)))[:, :3]
    np.testing.assert_allclose(seeded_logits - seeded_logits.mean(axis=1, keepdims=True),
                               base_logits - base_logits.mean(axis=1, keepdims=True),
                               atol=1e-4)
    # From scratch: the same layers, none of the base's trained kernels.
    fresh, fresh_backbone = build_finetune_model(base, 3, pretrained=False)
    trained = before[:len(fresh_backbone.get_weights())]  # The base's head comes last.
    assert [w.shape for w in fresh_backbone.get_weights()] == [w.shape for w in trained]
    kernels = [(a, b) for a, b in zip(trained, fresh_backbone.get_weights()) if a.ndim > 1]
    assert kernels and not any(np.allclose(a, b) for a, b in kernels)


def test_folder_names_match_classes_with_synonyms_in_the_base_order():
    names, mapping = match_classes(["Surprised", "happiness", "ANGER"], FER2013)
    assert names == ("angry", "happy", "surprise")
    assert mapping == {"Surprised": "surprise", "happiness": "happy", "ANGER": "angry"}


def test_an_unknown_or_doubled_folder_is_refused_in_one_line():
    with pytest.raises(ValueError, match="'bored'.*angry, disgust") as error:
        match_classes(["happy", "bored"], FER2013)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="'happy' and 'Happiness'"):
        match_classes(["happy", "Happiness"], FER2013)
    with pytest.raises(ValueError, match="at least 2"):
        match_classes(["happy"], FER2013)


def test_classes_admits_new_folders_after_the_base_classes():
    names, mapping = match_classes(["Bored", "sadness", "happy", "Sleepy"], FER2013,
                                   "sleepy, BORED")
    assert names == ("happy", "sad", "sleepy", "bored")
    assert mapping == {"Bored": "bored", "sadness": "sad", "happy": "happy",
                       "Sleepy": "sleepy"}
    with pytest.raises(ValueError, match="'bored'.*--classes lists sleepy"):
        match_classes(["happy", "bored", "sleepy"], FER2013, ["sleepy"])
    with pytest.raises(ValueError, match="names 'fearful', a class the base model has \\(fear\\)"):
        match_classes(["happy", "fearful"], FER2013, ["fearful"])


def test_listing_labels_files_and_decodes_96px_colour_whole(tmp_path):
    root = write_faces(tmp_path / "data", [("sadness", "dark"), ("Happy", "bright")],
                       subjects=2, per_subject=1)
    paths, labels, names = list_faces(root, FER2013)
    assert names == ("happy", "sad")
    assert [label for label in labels] == [0, 0, 1, 1]
    faces, kept = load_faces(paths)
    assert faces.shape == (4, 48, 48, 1) and faces.dtype == np.uint8
    assert list(kept) == [0, 1, 2, 3]
    assert faces[0].mean() > faces[2].mean() + 50  # bright happy, dark sad


def test_an_image_without_a_face_is_skipped_with_a_counted_warning(tmp_path, capsys):
    import sys

    root = write_faces(tmp_path / "data", [("happy", "bright"), ("sad", "dark")],
                       subjects=1, per_subject=1)
    big = np.full((200, 200, 3), 128, np.uint8)
    Image.fromarray(big).save(root / "happy" / "s09_0.png")
    paths, _, _ = list_faces(root, FER2013)
    faces, kept = load_faces(paths, stream=sys.stderr)
    assert paths[1].endswith("s09_0.png") and list(kept) == [0, 2] and len(faces) == 2
    assert "no face found in 1 of 3 images" in capsys.readouterr().err


def test_no_subject_falls_in_two_parts_of_any_split():
    rng = np.random.default_rng(3)
    subjects = np.repeat([f"s{index}" for index in range(10)], 4)
    paths = [f"{subject}_{take}.png" for subject, take in zip(subjects, range(40))]
    groups = subject_ids(paths, GROUP_BY)
    assert list(groups) == list(subjects)
    labels = rng.integers(0, 3, 40)
    train, held = holdout_split(labels, groups, 0.2)
    assert set(groups[train]).isdisjoint(groups[held]) and len(train) + len(held) == 40
    assert 0 < len(held) < 40
    for train, test in fold_splits(labels, groups, 5):
        assert set(groups[train]).isdisjoint(groups[test])
    # Inside a fold, the epoch is chosen on subjects of its training part only.
    tested = []
    for train, selection, test in nested_fold_splits(labels, groups, 5, 0.25):
        parts = [set(groups[part]) for part in (train, selection, test)]
        assert all(parts) and parts[0].isdisjoint(parts[1] | parts[2])
        assert parts[1].isdisjoint(parts[2])
        assert len(train) + len(selection) + len(test) == 40
        tested += list(test)
    assert sorted(tested) == list(range(40))
    # A fold left with one training subject cannot also choose its epoch: one line.
    few = np.array(["a", "a", "b", "b", "c", "c"])
    with pytest.raises(ValueError, match="--folds 2 leaves fold .* use fewer --folds"):
        nested_fold_splits(np.array([0, 0, 1, 1, 0, 0]), few, 2, 0.5)
    with pytest.raises(ValueError, match="does not match the file name 'x.png'"):
        subject_ids(["x.png"], GROUP_BY)
    with pytest.raises(ValueError, match="needs a group"):
        subject_ids(paths, r"s\d+")


def _kind_the_base_calls_happy(base_model):
    """Which synthetic kind the untrained base scores higher on "happy" than on "fear"."""
    from fer_keras.models import load_model

    base = load_model(base_model)
    rng = np.random.default_rng(5)
    batch = np.stack([_face(kind, rng)[::2, ::2, :1] for kind in ("bright", "dark")])
    probabilities = np.asarray(base.predict(batch.astype(np.float32), verbose=0))
    happy_minus_fear = probabilities[:, 3] - probabilities[:, 2]
    return ("bright", "dark")[int(np.argmax(happy_minus_fear))]


def test_fine_tuning_beats_zero_shot_and_serves_its_classes(tmp_path, base_model, capsys):
    # The folders are named against the base's guess, so its zero-shot is poor by design.
    happy = _kind_the_base_calls_happy(base_model)
    fear = "dark" if happy == "bright" else "bright"
    root = write_faces(tmp_path / "data", [("happy", fear), ("fearful", happy)])
    output = tmp_path / "run"
    status = command.main([str(root), "--from", str(base_model), "--output", str(output),
                           "--group-by", GROUP_BY, "--epochs", "4", "--freeze-epochs", "2",
                           "--learning-rate", "3e-3"])
    assert status == 0
    metrics = json.loads((output / "metrics.json").read_text())
    config = json.loads((output / "config.json").read_text())
    assert config["class_names"] == ["fear", "happy"] == metrics["class_names"]
    assert config["base_model"] == str(base_model) and len(config["data_fingerprint"]) == 64
    assert metrics["holdout_accuracy"] >= 90.0
    assert metrics["zero_shot_holdout_accuracy"] <= 50.0 < metrics["holdout_accuracy"]
    # The run's classes live in its record, not in the process's label-set registry.
    from fer_keras.data.labels import label_set_of, list_label_sets

    assert list_label_sets() == ["fer2013", "ferplus"]
    assert label_set_of(output, 2).class_names == ("fear", "happy")
    for name in ("model.keras", "history.csv", "confusion_matrix.png",
                 "learning_curves.png"):
        assert (output / name).is_file(), name
    from fer_keras.models import load_model

    assert load_model(output / "model.keras").output_shape == (None, 2)

    # A finished run is never replaced without --overwrite.
    before = (output / "metrics.json").read_bytes()
    status = command.main([str(root), "--from", str(base_model), "--output", str(output)])
    assert status == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert (output / "metrics.json").read_bytes() == before


def test_folds_write_the_documented_block(tmp_path, base_model):
    root = write_faces(tmp_path / "data", [("happy", "bright"), ("sad", "dark")],
                       subjects=4, per_subject=2)
    output = tmp_path / "run"
    assert command.main([str(root), "--from", str(base_model), "--output", str(output),
                         "--group-by", GROUP_BY, "--folds", "2", "--epochs", "1",
                         "--freeze-epochs", "1", "--scratch"]) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert 0 <= metrics["scratch_holdout_accuracy"] <= 100
    assert "early stopping" in metrics["cross_validation"]["selection"]
    for key in ("cross_validation", "zero_shot_cross_validation", "scratch_cross_validation"):
        block = metrics[key]
        assert len(block["folds"]) == 2 and all(0 <= value <= 100 for value in block["folds"])
        assert block["mean"] == pytest.approx(np.mean(block["folds"]), abs=1e-3)
        assert block["std"] == pytest.approx(np.std(block["folds"], ddof=1), abs=1e-3)
    seconds = metrics["cross_validation"]["train_seconds"]
    assert len(seconds) == 2 and all(value > 0 for value in seconds)


def test_an_unknown_folder_fails_the_command_before_training(tmp_path, base_model, capsys):
    root = write_faces(tmp_path / "data", [("happy", "bright"), ("bored", "dark")],
                       subjects=1, per_subject=1)
    assert command.main([str(root), "--from", str(base_model), "--output",
                         str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "'bored'" in err and "neutral" in err
    assert not (tmp_path / "run").exists()
