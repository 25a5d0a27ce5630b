import keras
import numpy as np
import pytest

from fer_keras.models import get_model, list_models, load_model, register_model
from fer_keras.models.layers import all_layers

INPUT = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 1)).astype("float32")
TARGETS = keras.utils.to_categorical([0, 3], 7)
# The smallest gradient that counts as "receiving a gradient": one Adam step at 1e-2 moves
# a weight whose largest gradient entry is 1e-8 by about 1e-3, far beyond np.allclose.
GRADIENT_FLOOR = 1e-8


@pytest.mark.parametrize("name", list_models())
def test_builds_with_probabilities(name):
    model = get_model(name)
    output = np.asarray(model(INPUT, training=False))
    assert output.shape == (2, 7)
    assert not np.isnan(output).any()
    np.testing.assert_allclose(output.sum(axis=1), 1.0, atol=1e-5)
    assert model.layers[-1].name == "probabilities"


def _receiving_gradients(model, images, targets):
    """Indices into `model.trainable_weights` of the weights that get a non-zero loss
    gradient from this batch."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = keras.losses.categorical_crossentropy(targets, model(images, training=True))
        loss = keras.ops.mean(loss)
    gradients = tape.gradient(loss, model.trainable_weights)
    return [index for index, gradient in enumerate(gradients)
            if gradient is not None
            and np.abs(keras.ops.convert_to_numpy(gradient)).max() > GRADIENT_FLOOR]


def _unmoved_weights(model, step):
    """Paths of the weights that receive a gradient but that `step()` left unchanged."""
    receiving = _receiving_gradients(model, INPUT, TARGETS)
    assert receiving, "no weight receives a gradient"
    before = [keras.ops.convert_to_numpy(weight).copy() for weight in model.trainable_weights]
    step()
    after = [keras.ops.convert_to_numpy(weight) for weight in model.trainable_weights]
    return [model.trainable_weights[index].path for index in receiving
            if np.allclose(before[index], after[index])]


# The train steps of alexnet and dexpression_wide are in the slow lane (conftest.py).
@pytest.mark.parametrize("name", list_models())
def test_train_step_changes_weights(name):
    model = get_model(name)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    assert _unmoved_weights(model, lambda: model.train_on_batch(INPUT, TARGETS)) == []


def test_train_step_check_names_a_weight_that_did_not_move():
    model = get_model("baseline")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    frozen = model.get_layer("fc1").kernel
    kept = keras.ops.convert_to_numpy(frozen).copy()

    def step_that_skips_one_weight():
        model.train_on_batch(INPUT, TARGETS)
        frozen.assign(kept)

    assert _unmoved_weights(model, step_that_skips_one_weight) == [frozen.path]


@pytest.mark.parametrize("name", list_models())
def test_keras_save_and_reload(name, tmp_path):
    model = get_model(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = load_model(path)
    np.testing.assert_allclose(model.predict(INPUT, verbose=0),
                               reloaded.predict(INPUT, verbose=0), atol=1e-6)


def _conv(k, c_in, c_out, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


def _dense(n_in, n_out):
    return n_in * n_out + n_out


# Parameter counts worked out by hand from the study's layer lists (3x3 convs, 2x2 pools).
HAND_COUNTS = {
    # conv 10, conv 32 -> 12x12x32 -> FC 100 -> FC 7.
    "baseline": _conv(3, 1, 10) + _conv(3, 10, 32) + _dense(12 * 12 * 32, 100) + _dense(100, 7),
    # conv 10, 32, 64, 128 -> 3x3x128 -> FC 100 -> FC 7.
    "baseline_deep": _conv(3, 1, 10) + _conv(3, 10, 32) + _conv(3, 32, 64) + _conv(3, 64, 128)
    + _dense(3 * 3 * 128, 100) + _dense(100, 7),
    # Five bias-free convs, each with BN (4 numbers per channel), 1x1x128 -> 64 -> 32 -> 7.
    "deepest": sum(_conv(3, a, b, bias=False) + 4 * b
                   for a, b in [(1, 10), (10, 32), (32, 64), (64, 128), (128, 128)])
    + _dense(128, 64) + _dense(64, 32) + _dense(32, 7),
    # conv 6 5x5 -> 22x22 -> conv 16 5x5 -> 9x9x16 -> 120 -> 84 -> 7.
    "lenet5": _conv(5, 1, 6) + _conv(5, 6, 16) + _dense(9 * 9 * 16, 120) + _dense(120, 84)
    + _dense(84, 7),
    # Localisation 8/10 convs + FC 32 + FC 6; backbone of four 10-channel convs, BN, FC 50, 7.
    "deep_emotion": _conv(7, 1, 8) + _conv(5, 8, 10) + _dense(640, 32) + _dense(32, 6)
    + _conv(3, 1, 10) + 3 * _conv(3, 10, 10) + 4 * 10 + _dense(810, 50) + _dense(50, 7),
    # Stem 7x7x64; each FeatEx: 1x1 96, 3x3 208, 1x1 64 (272 out); 3x3x272 -> 7.
    "dexpression": _conv(7, 1, 64) + _conv(1, 64, 96) + _conv(3, 96, 208) + _conv(1, 64, 64)
    + _conv(1, 272, 96) + _conv(3, 96, 208) + _conv(1, 272, 64) + _dense(3 * 3 * 272, 7),
}


@pytest.mark.parametrize("name", sorted(HAND_COUNTS))
def test_parameter_counts_match_hand_count(name):
    assert get_model(name).count_params() == HAND_COUNTS[name]


def test_dexpression_shapes_follow_the_paper_table():
    model = get_model("dexpression", normalization="batch_norm")
    assert model.get_layer("norm1_bn").output.shape[1:] == (12, 12, 64)
    assert model.get_layer("featex1_pool_b").output.shape[1:] == (6, 6, 272)
    assert model.get_layer("featex2_pool_b").output.shape[1:] == (3, 3, 272)
    wide = get_model("dexpression_wide")
    assert wide.get_layer("featex1_concat").output.shape[-1] == 272 + 128
    assert wide.get_layer("featex2_concat").output.shape[-1] == 272 + 128


def test_registry_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        register_model(lambda **kwargs: None, name="baseline")
    with pytest.raises(ValueError, match="Valid names: .*deep_emotion"):
        get_model("resnet9000")


def test_study_initialisers_are_options():
    model = get_model("baseline", kernel_initializer="study_normal")
    kernel = model.get_layer("block1_conv").get_weights()[0]
    assert 0.02 < kernel.std() < 0.08
    with pytest.raises(ValueError, match="kernel_initializer"):
        get_model("baseline", kernel_initializer="no_such_init")
    orthogonal = get_model("lenet5", kernel_initializer="orthogonal").get_layer("fc2")
    weights = orthogonal.get_weights()[0]  # 120 x 84: columns are orthonormal.
    np.testing.assert_allclose(weights.T @ weights, np.eye(84), atol=1e-4)


def test_fer_vgg_takes_a_conv_count_per_stage():
    model = get_model("fer_vgg", widths=(8, 16, 16, 32), convs_per_stage=(1, 2, 2, 3))
    conv_names = [layer.name for layer in model.layers if "_conv" in layer.name]
    assert conv_names == ["stage1_conv1", "stage2_conv1", "stage2_conv2", "stage3_conv1",
                          "stage3_conv2", "stage4_conv1", "stage4_conv2", "stage4_conv3"]
    assert model.get_layer("stage4_pool").output.shape[1:] == (3, 3, 32)
    with pytest.raises(ValueError, match="convs_per_stage has 3 entries for 4 stages"):
        get_model("fer_vgg", widths=(8, 16, 16, 32), convs_per_stage=(1, 2, 2))


def test_mirror_average_averages_face_and_mirror_at_inference_only(tmp_path):
    keras.utils.set_random_seed(5)
    model = get_model("fer_vgg", widths=(8, 16, 16, 32), mirror_average=True)
    body = model.get_layer("mirror_average").model
    names = [layer.name for layer in all_layers(model)]
    assert names[:2] == ["image", "mirror_average"] and "fc1_dropout" in names
    images = np.random.default_rng(5).integers(0, 256, (3, 48, 48, 1)).astype("float32")
    mirrored = images[:, :, ::-1]
    expected = 0.5 * (np.asarray(body(images, training=False))
                      + np.asarray(body(mirrored, training=False)))
    inferred = np.asarray(model(images, training=False))
    np.testing.assert_allclose(inferred, expected, atol=1e-6)
    # A mirrored face gets the same answer, which the plain body does not guarantee.
    np.testing.assert_allclose(np.asarray(model(mirrored, training=False)), inferred, atol=1e-6)
    assert np.abs(np.asarray(body(images, training=False)) - inferred).max() > 1e-4
    # Training runs the body alone: with dropout off, the same output as the body's.
    plain = get_model("fer_vgg", widths=(8, 16, 16, 32), mirror_average=True, dropout_rate=0.0,
                      stage_dropout_rate=0.0)
    np.testing.assert_allclose(
        np.asarray(plain(images, training=True)),
        np.asarray(plain.get_layer("mirror_average").model(images, training=True)), atol=1e-6)
    model.save(tmp_path / "mirror.keras")
    reloaded = keras.models.load_model(tmp_path / "mirror.keras")
    np.testing.assert_allclose(np.asarray(reloaded(images, training=False)), inferred, atol=1e-6)


def test_check_class_probabilities_accepts_one_output_of_a_label_set():
    import tensorflow as tf

    from fer_keras.models import check_class_probabilities

    assert check_class_probabilities(get_model("baseline").output_shape, "m") == (None, 7)
    assert check_class_probabilities(tf.TensorShape([None, 7]), "m") == (None, 7)
    assert check_class_probabilities((np.int32(1), np.int64(7)), "m") == (1, 7)
    assert check_class_probabilities((None, 8), "m") == (None, 8)  # FER+
    for shape in [(None, 10), (None, 48, 48, 7), [(None, 7), (None, 7)],
                  tf.TensorShape(None), tf.TensorShape([None])]:
        with pytest.raises(ValueError, match=r"does not output class probabilities of a "
                                             r"known label set.*7 \(fer2013\) or 8"):
            check_class_probabilities(shape, "m")


def test_truncated_or_damaged_keras_file_is_reported_as_such(tmp_path):
    import zipfile

    complete = tmp_path / "model.keras"
    get_model("baseline").save(complete)
    content = complete.read_bytes()
    cut = tmp_path / "cut.keras"
    cut.write_bytes(content[:len(content) // 2])  # a full disk or an interrupted copy
    with pytest.raises(ValueError) as error:
        load_model(cut)
    message = str(error.value)
    assert message.startswith(f"{cut} is truncated or damaged") and "not found" not in message
    assert "Re-train it with `python -m fer_keras.fit" in message and "download" in message
    # An archive whose end is intact but whose weights are corrupt.
    flipped = tmp_path / "flipped.keras"
    with zipfile.ZipFile(complete) as archive:
        weights = archive.getinfo("model.weights.h5")
    start = weights.header_offset + 30 + len(weights.filename) + len(weights.extra) + 1000
    flipped.write_bytes(content[:start] + bytes(b ^ 0xFF for b in content[start:start + 64])
                        + content[start + 64:])
    with pytest.raises(ValueError, match=f"{flipped} is truncated or damaged: its member "
                                         f"model.weights.h5 fails the CRC check"):
        load_model(flipped)


def test_evaluate_predict_and_export_refuse_a_ten_class_model(tmp_path, tiny_csv, capsys):
    from PIL import Image

    from fer_keras import evaluate, export, predict

    path = tmp_path / "ten.keras"
    get_model("baseline", num_classes=10).save(path)
    face = tmp_path / "face.png"
    Image.fromarray(INPUT[0, ..., 0].astype(np.uint8)).save(face)
    for main, argv in [(evaluate.main, [str(path), "--data", str(tiny_csv)]),
                       (predict.main, [str(face), "--model", str(path), "--no-detect"]),
                       (export.main, [str(path), "--no-tflite"])]:
        assert main(argv) == 2, main.__module__
        error = capsys.readouterr().err
        assert f"{path} does not output class probabilities of a known label set" in error, error
        assert "Received: output_shape=(None, 10)" in error, error
    assert not (tmp_path / "ten").exists()  # export wrote nothing
