"""Distillation targets and runs, and mixup / CutMix batches."""

import doctest
import json

import numpy as np
import pytest

from fer_keras.data import mixing
from fer_keras.data.mixing import BatchMixing
from fer_keras.training import distill
from fer_keras.training.distill import distillation_targets, temper


def test_the_module_examples_run():
    assert doctest.testmod(distill).failed == 0


def test_temper_is_the_renormalised_power():
    p = np.array([[0.6, 0.3, 0.1]])
    expected = p ** 0.5 / (p ** 0.5).sum()
    np.testing.assert_allclose(temper(p, 2.0), expected)
    np.testing.assert_allclose(temper(p, 1.0), p)
    # A huge temperature flattens, a tiny one picks the top class.
    np.testing.assert_allclose(temper(p, 1e6), np.full((1, 3), 1 / 3), atol=1e-5)
    np.testing.assert_allclose(temper(p, 1e-3), [[1.0, 0.0, 0.0]], atol=1e-6)


def test_one_teacher_at_temperature_1_and_weight_1_gives_its_own_targets():
    teacher = np.random.default_rng(0).dirichlet(np.ones(7), size=5)
    targets = distillation_targets([teacher], np.arange(5), 7, temperature=1.0, weight=1.0)
    np.testing.assert_allclose(targets, teacher, rtol=1e-6)
    # Weight 0 gives the hard labels back.
    hard = distillation_targets([teacher], np.arange(5), 7, temperature=3.0, weight=0.0)
    np.testing.assert_array_equal(hard, np.eye(7)[np.arange(5)])


def test_targets_average_teachers_then_temper_then_mix():
    a = np.array([[0.8, 0.1, 0.1]])
    b = np.array([[0.4, 0.4, 0.2]])
    targets = distillation_targets([a, b], np.array([2]), 3, temperature=2.0, weight=0.75)
    mean = np.array([0.6, 0.25, 0.15])
    soft = mean ** 0.5 / (mean ** 0.5).sum()
    np.testing.assert_allclose(targets[0], 0.75 * soft + 0.25 * np.array([0, 0, 1]),
                               rtol=1e-6)
    assert targets.dtype == np.float32 and targets.sum() == pytest.approx(1.0)


def test_the_distillation_loss_is_the_hand_computed_cross_entropy():
    import keras

    teacher = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    student = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]], np.float32)
    targets = distillation_targets([teacher], np.array([0, 1]), 3, 2.0, 0.5)
    loss = keras.losses.CategoricalCrossentropy()(targets, student)
    by_hand = -np.mean(np.sum(targets * np.log(student), axis=1))
    assert float(loss) == pytest.approx(by_hand, rel=1e-5)


def test_distribution_labels_take_the_hard_labels_place():
    votes = np.array([[0.5, 0.5, 0.0]])
    teacher = np.array([[0.0, 0.0, 1.0]])
    targets = distillation_targets([teacher], votes, 3, 1.0, 0.5)
    np.testing.assert_allclose(targets, [[0.25, 0.25, 0.5]])


def test_teacher_probabilities_are_cached_by_fingerprint(tmp_path, monkeypatch):
    cache = tmp_path / "teacher_targets.npz"
    stored = np.full((1, 4, 7), 1 / 7, np.float32)
    images = np.zeros((4, 48, 48, 1), np.uint8)
    np.savez(cache, key=np.array(["run", "sha256:a", distill._faces_digest(images)]),
             probabilities=stored)
    got = distill.teacher_probabilities(["run"], images, cache=cache,
                                        fingerprints={"run": "sha256:a"})
    np.testing.assert_array_equal(got[0], stored[0])
    # As many faces but other pixels (another --data at the same --limit): not this cache.
    with pytest.raises(ValueError, match="Model file not found"):
        distill.teacher_probabilities(["run"], images + 1, cache=cache,
                                      fingerprints={"run": "sha256:a"})
    # Another fingerprint is not this cache: the teacher must predict (here: no model).
    with pytest.raises(Exception):
        distill.teacher_probabilities(["missing_run"], images, cache=cache,
                                      fingerprints={"missing_run": "sha256:b"})


def run_folder(path, protocol="study", labels=None):
    path.mkdir(parents=True)
    (path / "model.keras").write_bytes(b"not checked here")
    config = {"protocol": protocol}
    if labels:
        config["labels"] = labels
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_teachers_of_another_protocol_or_label_set_are_refused(tmp_path):
    settings = {"protocol": "study", "labels": "fer2013"}
    good = run_folder(tmp_path / "good")
    assert list(distill.check_teachers([str(good)], settings)) == [str(good)]
    with pytest.raises(ValueError, match="under the kaggle protocol and the student uses "
                                         "study"):
        distill.check_teachers([str(run_folder(tmp_path / "k", "kaggle"))], settings)
    with pytest.raises(ValueError, match="trained on ferplus labels"):
        distill.check_teachers([str(run_folder(tmp_path / "f", labels="ferplus"))], settings)
    with pytest.raises(ValueError, match="holds no model.keras"):
        distill.check_teachers([str(tmp_path / "nothing")], settings)


def test_distillation_flags_need_teachers(tiny_csv, tmp_path, capsys):
    from fer_keras import fit

    assert fit.main(["baseline", "--data", str(tiny_csv), "--distill-weight", "0.5",
                     "--output-dir", str(tmp_path / "run")]) == 2
    assert "--distill-weight goes with --teachers" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_distilled_run_records_its_teachers_and_trains(tiny_csv, tmp_path):
    from fer_keras import distill as command
    from fer_keras import fit

    teacher = tmp_path / "teacher"
    assert fit.main(["baseline", "--data", str(tiny_csv), "--epochs", "1",
                     "--output-dir", str(teacher)]) == 0
    student = tmp_path / "student"
    assert command.main([str(teacher), "--experiment", "baseline", "--output", str(student),
                         "--data", str(tiny_csv), "--epochs", "1", "--temperature", "3",
                         "--weight", "0.6", "--mixing", "cutmix"]) == 0
    config = json.loads((student / "config.json").read_text())
    assert config["teachers"] == [str(teacher)]
    assert config["distill_temperature"] == 3.0 and config["distill_weight"] == 0.6
    assert config["mixing"] == "cutmix"
    assert config["teacher_fingerprints"][str(teacher)].startswith("sha256:")
    assert (student / "metrics.json").is_file()
    assert not (student / distill.CACHE_FILE).exists()


# Mixup and CutMix


def batch(size=8):
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (size, 48, 48, 1)).astype(np.float32)
    targets = np.eye(7, dtype=np.float32)[rng.integers(0, 7, size)]
    return images, targets


def test_the_mixing_module_examples_run():
    assert doctest.testmod(mixing).failed == 0


def test_mixup_blends_each_image_with_its_pair_in_the_targets_proportion():
    images, targets = batch()
    mixed, mixed_targets = BatchMixing("mixup", 0.4).apply_numpy(
        images, targets, np.random.default_rng(3))
    lam = float(np.random.default_rng(3).beta(0.4, 0.4))
    np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[::-1], rtol=1e-5)
    np.testing.assert_allclose(mixed_targets, lam * targets + (1 - lam) * targets[::-1],
                               rtol=1e-5)


def test_cutmix_targets_follow_the_pasted_area():
    images, targets = batch()
    mixed, mixed_targets = BatchMixing("cutmix", 1.0).apply_numpy(
        images, targets, np.random.default_rng(5))
    pasted = np.any(mixed != images, axis=(0, 3))
    share = pasted.mean()
    assert 0 < share < 1
    expected = (1 - share) * targets + share * targets[::-1]
    np.testing.assert_allclose(mixed_targets, expected, atol=1e-6)
    np.testing.assert_allclose(mixed_targets.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("mode", ["mixup", "cutmix", "both"])
def test_tensorflow_mixing_keeps_shapes_and_target_sums(mode):
    images, targets = batch()
    mixed, mixed_targets = BatchMixing(mode, 1.0, seed=0)(images, targets)
    assert tuple(mixed.shape) == images.shape
    np.testing.assert_allclose(np.asarray(mixed_targets).sum(axis=1), 1.0, rtol=1e-5)
    if mode == "cutmix":
        share = np.any(np.asarray(mixed) != images, axis=(0, 3)).mean()
        np.testing.assert_allclose(mixed_targets, (1 - share) * targets
                                   + share * targets[::-1], atol=1e-5)


def test_bad_mixing_is_refused_in_one_line():
    with pytest.raises(ValueError, match="Unknown mixing"):
        BatchMixing("blend")
    with pytest.raises(ValueError, match="mixing_alpha must be"):
        BatchMixing("mixup", 0)
    with pytest.raises(ValueError, match="Mixing needs one-hot"):
        BatchMixing("mixup").apply_numpy(*batch()[:1], np.zeros(8), np.random.default_rng())
