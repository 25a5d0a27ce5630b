"""The accuracy toolkit: precision and protocol settings, test-time views and ensembles."""

import json

import keras
import numpy as np
import pytest

from fer_keras import ensemble
from fer_keras.accuracy.ensemble import build_ensemble, rank_subsets
from fer_keras.data import sources as fer_data
from fer_keras.models import MirrorAverage, get_model, load_model
from fer_keras.models import layers as zoo_layers
from fer_keras.models.layers import apply_view, forward_passes, wrap_with_views
from fer_keras.training import loop
from fer_keras.training.experiments import STUDY_EXPERIMENTS, get_experiment, list_experiments
from fer_keras.training.recipe import precision_policy

IMAGES = np.random.default_rng(3).integers(0, 256, (5, 48, 48, 1)).astype("float32")


def test_study_rows_keep_the_study_protocol_in_float32():
    for name in STUDY_EXPERIMENTS:
        experiment = get_experiment(name)
        assert (experiment.protocol, experiment.precision) == ("study", "float32")
    kaggle = [name for name in list_experiments() if get_experiment(name).protocol == "kaggle"]
    assert kaggle and all(get_experiment(name).precision == "mixed_bfloat16" for name in kaggle)


def test_precision_policy_is_restored_and_checked():
    before = keras.mixed_precision.global_policy().name
    with precision_policy("mixed_bfloat16"):
        model = get_model("baseline")
        assert model.get_layer("block1_conv").compute_dtype == "bfloat16"
    assert keras.mixed_precision.global_policy().name == before
    assert model.get_layer("probabilities").compute_dtype == "float32"
    with pytest.raises(ValueError, match="precision must be one of"):
        with precision_policy("float8"):
            pass


def test_kaggle_protocol_splits_on_tiny_data(tiny_csv):
    study = fer_data.load_splits(tiny_csv)
    kaggle = fer_data.load_splits(tiny_csv, protocol="kaggle")
    assert len(kaggle["train"][1]) == len(study["train"][1]) + len(study["validation"][1]) == 84
    np.testing.assert_array_equal(kaggle["validation"][0], kaggle["public_test"][0])
    with pytest.raises(ValueError, match="Unknown protocol"):
        fer_data.load_splits(tiny_csv, protocol="imagenet")


def test_kaggle_protocol_split_sizes_and_no_overlap_on_real_data(real_data):
    images, labels, usages = fer_data.load_fer2013(real_data)
    index = fer_data.split_indices(labels, usages, protocol="kaggle")
    sizes = {name: len(rows) for name, rows in index.items()}
    assert sizes == {"train": 28709, "validation": 3589, "public_test": 3589,
                     "private_test": 3589}
    assert not set(index["train"]) & set(index["public_test"])
    assert not set(index["train"]) & set(index["private_test"])
    assert not set(index["public_test"]) & set(index["private_test"])
    study = fer_data.split_indices(labels, usages, protocol="study")
    assert (len(study["train"]), len(study["validation"])) == (22967, 5742)


def test_bfloat16_fit_on_real_rows_reloads_and_scores(real_data, tmp_path):
    out = tmp_path / "bf16"
    metrics = loop.train("fer_vgg_kaggle", data=real_data, output_dir=out, limit=256,
                        overrides={"epochs": 1, "warmup_epochs": 0}, verbose=0)
    config = json.loads((out / "config.json").read_text())
    assert (config["precision"], config["protocol"]) == ("mixed_bfloat16", "kaggle")
    assert (metrics["precision"], metrics["protocol"]) == ("mixed_bfloat16", "kaggle")
    assert metrics["selection_split"] == "public_test"
    # The file keeps the training policy; loading runs it in float32 unless asked not to.
    as_trained = load_model(out / "model.keras", dtype_policy=None)
    assert as_trained.get_layer("mirror_average").model.get_layer(
        "stage2_conv1").compute_dtype == "bfloat16"
    model = load_model(out / "model.keras")
    assert model.get_layer("mirror_average").model.get_layer(
        "stage2_conv1").compute_dtype == "float32"
    splits = fer_data.load_splits(real_data, protocol="kaggle", limit=256)
    x_test = splits["private_test"][0].astype("float32")
    float32 = model.predict(x_test, verbose=0)
    bfloat16 = as_trained.predict(x_test, verbose=0)
    accuracy = metrics["splits"]["private_test"]["accuracy"]
    labels = splits["private_test"][1]
    assert abs(np.mean(float32.argmax(1) == labels) - accuracy) < 1e-9
    # bfloat16 inference moves probabilities by rounding only.
    assert np.abs(float32 - bfloat16).max() < 0.05


def test_identity_view_alone_equals_the_plain_model():
    network = get_model("fer_vgg", widths=(8, 16, 16, 32))
    image = keras.Input((48, 48, 1))
    views = zoo_layers.TestTimeAugmentation(network, views=["identity"])
    wrapped = keras.Model(image, views(image))
    np.testing.assert_allclose(wrapped.predict(IMAGES, verbose=0),
                               network.predict(IMAGES, verbose=0), atol=1e-6)
    assert wrap_with_views(wrapped, ("identity",)) is network


def test_views_shift_and_mirror_pixels():
    shifted = np.asarray(apply_view(IMAGES, "shift:2,-1"))
    np.testing.assert_array_equal(shifted[:, :47, 2:], IMAGES[:, 1:, :46])
    assert shifted[:, :, :2].max() == 0 and shifted[:, 47].max() == 0
    mirrored = np.asarray(apply_view(IMAGES, "mirror_shift:0,1"))
    np.testing.assert_array_equal(mirrored[:, 1:], IMAGES[:, :47, ::-1])
    with pytest.raises(ValueError, match="Unknown test-time view"):
        apply_view(IMAGES, "rotate:10")


def test_view_sets_average_every_view_and_count_passes(tmp_path):
    model = get_model("fer_vgg", widths=(8, 16, 16, 32), mirror_average=True)
    body = model.get_layer("mirror_average").model
    ten = wrap_with_views(model, "ten")
    assert forward_passes(model) == 2 and forward_passes(ten) == 10
    views = ten.get_layer("test_time_augmentation").views
    expected = np.mean([body.predict(np.asarray(apply_view(IMAGES, view)), verbose=0)
                        for view in views], axis=0)
    np.testing.assert_allclose(ten.predict(IMAGES, verbose=0), expected, atol=1e-5)
    ten.save(tmp_path / "ten.keras")
    np.testing.assert_allclose(load_model(tmp_path / "ten.keras").predict(IMAGES, verbose=0),
                               expected, atol=1e-5)
    # The mirror pair through the general wrapper is MirrorAverage.
    np.testing.assert_allclose(wrap_with_views(model, "mirror").predict(IMAGES, verbose=0),
                               model.predict(IMAGES, verbose=0), atol=1e-6)
    assert isinstance(model.get_layer("mirror_average"), MirrorAverage)


def test_ensemble_of_two_equals_the_mean_of_their_probabilities():
    first = get_model("baseline")
    second = get_model("fer_vgg", widths=(8, 16, 16, 32), mirror_average=True)
    combined = build_ensemble([first, second])
    expected = 0.5 * (first.predict(IMAGES, verbose=0) + second.predict(IMAGES, verbose=0))
    np.testing.assert_allclose(combined.predict(IMAGES, verbose=0), expected, atol=1e-6)


def test_ensemble_command_writes_a_run_folder_and_refuses_to_overwrite(tiny_csv, tmp_path,
                                                                        capsys):
    runs = []
    for index, name in enumerate(("baseline", "lenet5")):
        run = tmp_path / name
        loop.train(name, data=tiny_csv, output_dir=run, overrides={"epochs": 1}, verbose=0)
        runs.append(str(run))
    out = tmp_path / "ensemble"
    args = runs + ["--output", str(out), "--data", str(tiny_csv)]
    assert ensemble.main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["members"] == runs and metrics["forward_passes_per_face"] == 2
    model = load_model(out / "model.keras")
    members = [load_model(f"{run}/model.keras") for run in runs]
    x_test, y_test = fer_data.load_splits(tiny_csv)["private_test"]
    expected = np.mean([m.predict(x_test.astype("float32"), verbose=0) for m in members], 0)
    assert metrics["splits"]["private_test"]["accuracy"] == pytest.approx(
        np.mean(expected.argmax(1) == y_test))
    np.testing.assert_allclose(model.predict(x_test.astype("float32"), verbose=0), expected,
                               atol=1e-6)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert ensemble.main(args) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert ensemble.main([runs[0], "--output", str(tmp_path / "one")]) == 2


def test_rank_subsets_finds_the_pair_that_beats_every_member():
    labels = np.array([0, 1, 2, 0])
    one_hot = np.eye(3)
    # Each candidate is right on two of the four faces; candidates 0 and 2 are sure where
    # they are right and unsure where they are wrong, so together they get all four.
    # Candidate 1 makes candidate 0's mistakes, and the triple ties on face 2.
    first = np.array([one_hot[0], one_hot[1], one_hot[0] * 0.6 + 0.2, one_hot[1] * 0.6 + 0.2])
    second = np.array([one_hot[0], one_hot[1], one_hot[0], one_hot[1]]) * 0.4 + 0.2
    third = np.array([one_hot[1] * 0.6 + 0.2, one_hot[0] * 0.6 + 0.2, one_hot[2], one_hot[0]])
    ranked = rank_subsets(labels, [first, second, third])
    assert len(ranked) == 4  # three pairs and the triple
    assert ranked[0] == ((0, 2), 1.0)
    assert [accuracy for _, accuracy in ranked] == sorted(
        (accuracy for _, accuracy in ranked), reverse=True)
    with pytest.raises(ValueError, match="at least 2 candidates"):
        rank_subsets(labels, [first])


def test_ensemble_select_keeps_the_best_subset_on_the_selection_split(tiny_csv, tmp_path):
    runs = []
    for name, seed in (("baseline", 0), ("lenet5", 0), ("baseline", 1)):
        run = tmp_path / f"{name}_{seed}"
        loop.train(name, data=tiny_csv, output_dir=run, overrides={"epochs": 1}, seed=seed,
                  verbose=0)
        runs.append(str(run))
    out = tmp_path / "selected"
    assert ensemble.main(runs + ["--select", "--output", str(out), "--data",
                                 str(tiny_csv)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    selection = metrics["member_selection"]
    assert selection["split"] == metrics["selection_split"] == "validation"
    assert set(selection["candidates"]) == set(runs) and selection["subsets_scored"] == 4
    assert metrics["members"] == selection["best"][0]["members"]
    assert metrics["splits"]["validation"]["accuracy"] == pytest.approx(
        selection["best"][0]["accuracy"])
    x_val, y_val = fer_data.load_splits(tiny_csv)["validation"]
    for subset in selection["best"]:
        members = [load_model(f"{run}/model.keras") for run in subset["members"]]
        mean = np.mean([m.predict(x_val.astype("float32"), verbose=0) for m in members], 0)
        assert subset["accuracy"] == pytest.approx(np.mean(mean.argmax(1) == y_val))


def test_logit_adjustment_layer_matches_numpy_and_raises_rare_classes(tmp_path):
    from fer_keras.accuracy.rebalance import adjust
    from fer_keras.models.layers import LogitAdjustment

    prior = np.array([0.14, 0.015, 0.14, 0.25, 0.17, 0.11, 0.175])
    probabilities = np.random.default_rng(0).dirichlet(np.ones(7), size=6).astype("float32")
    layer = LogitAdjustment(prior, tau=0.5)
    adjusted = np.asarray(layer(probabilities))
    np.testing.assert_allclose(adjusted, adjust(probabilities, prior, 0.5), atol=1e-5)
    np.testing.assert_allclose(adjusted.sum(1), 1.0, atol=1e-5)
    assert (adjusted[:, 1] > probabilities[:, 1]).all()  # disgust, the rarest, goes up.
    np.testing.assert_allclose(np.asarray(LogitAdjustment(prior, tau=0.0)(probabilities)),
                               probabilities, atol=1e-5)
    with pytest.raises(ValueError, match="prior must be positive"):
        LogitAdjustment([0.5, 0.0, 0.5])


def test_choose_tau_keeps_within_the_allowed_accuracy_drop():
    from fer_keras.accuracy.rebalance import choose_tau

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, 400)
    probabilities = rng.dirichlet(np.ones(7), size=400)
    probabilities[np.arange(400), labels] += 0.3
    probabilities /= probabilities.sum(1, keepdims=True)
    prior = np.bincount(labels, minlength=7) / 400
    tau, sweep = choose_tau(labels, probabilities, prior, max_drop=0.0)
    base = sweep[0][1]
    chosen = next(row for row in sweep if row[0] == tau)
    assert chosen[1] >= base - 1e-12
    assert chosen[2] == max(row[2] for row in sweep if row[1] >= base - 1e-12)


def test_rebalance_command_writes_a_run_folder_that_scores_as_recorded(tiny_csv, tmp_path):
    from fer_keras import rebalance

    run = tmp_path / "baseline"
    loop.train("baseline", data=tiny_csv, output_dir=run, overrides={"epochs": 1}, verbose=0)
    out = tmp_path / "balanced"
    assert rebalance.main([str(run), "--output", str(out), "--data", str(tiny_csv)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "rebalanced" and 0.0 <= metrics["tau"] <= 1.0
    assert (out / "tau_sweep.png").exists()
    model = load_model(out / "model.keras")
    x_test, y_test = fer_data.load_splits(tiny_csv)["private_test"]
    predicted = model.predict(x_test.astype("float32"), verbose=0).argmax(1)
    assert metrics["splits"]["private_test"]["accuracy"] == pytest.approx(
        np.mean(predicted == y_test))
    assert rebalance.main([str(run), "--output", str(out), "--data", str(tiny_csv)]) == 2


def test_tta_output_writes_a_run_folder_with_its_views(tiny_csv, tmp_path, capsys):
    from fer_keras import tta
    from fer_keras.reporting import report

    run = tmp_path / "baseline"
    loop.train("baseline", data=tiny_csv, output_dir=run, overrides={"epochs": 1}, verbose=0)
    out = tmp_path / "baseline_shifts"
    args = [str(run), "--views", "shifts", "--output", str(out), "--data", str(tiny_csv)]
    assert tta.main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "tta" and metrics["forward_passes_per_face"] == 6
    assert metrics["source"] == str(run) and "train" not in metrics["splits"]
    model = load_model(out / "model.keras")
    assert forward_passes(model) == 6
    bare = load_model(run / "model.keras")
    x_test, y_test = fer_data.load_splits(tiny_csv)["private_test"]
    x_test = x_test.astype("float32")
    expected = wrap_with_views(bare, "shifts").predict(x_test, verbose=0)
    np.testing.assert_allclose(model.predict(x_test, verbose=0), expected, atol=1e-5)
    assert metrics["splits"]["private_test"]["accuracy"] == pytest.approx(
        np.mean(expected.argmax(1) == y_test))
    # The report lists it as a run derived from its source.
    [row] = [cells for name, metrics, config in report.load_runs(tmp_path)
             for cells in [report._row(name, metrics, config, "")] if name == out.name]
    assert "= `baseline` + test-time views shifts (6 passes/face)" in row[1]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert tta.main(args) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert tta.main([str(run), "--views", "mirror", "ten", "--output",
                     str(tmp_path / "two")]) == 2
    assert "one view set" in capsys.readouterr().err


def test_identical_splits_are_predicted_once(monkeypatch):
    from fer_keras.training import results

    rng = np.random.default_rng(0)
    public = rng.integers(0, 256, (6, 48, 48, 1), dtype=np.uint8)
    private = rng.integers(0, 256, (6, 48, 48, 1), dtype=np.uint8)
    labels = np.arange(6) % 7
    # As under the kaggle protocol: "validation" holds PublicTest's images (a copy).
    splits = {"validation": (public.copy(), labels), "public_test": (public, labels),
              "private_test": (private, labels),
              "train": (np.zeros((0, 48, 48, 1), np.uint8), np.zeros(0, int))}
    calls = []
    real = results.predict_probabilities
    monkeypatch.setattr(results, "predict_probabilities",
                        lambda model, images, *args: calls.append(len(images))
                        or real(model, images, *args))
    model = get_model("baseline")
    scored = results.split_probabilities(model, splits)
    assert calls == [6, 6] and sorted(scored) == ["private_test", "public_test", "validation"]
    np.testing.assert_array_equal(scored["validation"], scored["public_test"])
    assert not np.allclose(scored["public_test"], scored["private_test"])


def test_the_tta_table_is_merged_without_touching_files_beside_it(tmp_path):
    from fer_keras.accuracy.tta import merge_table

    table = tmp_path / "tta.json"
    mine = tmp_path / "tta.tmp"
    mine.write_text("a user's own file")
    merge_table(table, {"b_run": {"views": {}}})
    merge_table(table, {"a_run": {"views": {}}})
    assert list(json.loads(table.read_text())) == ["a_run", "b_run"]
    assert mine.read_text() == "a user's own file"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tta.json", "tta.tmp"]
