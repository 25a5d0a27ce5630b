import gzip

import numpy as np
import pytest
from conftest import random_rows, write_csv

from fer_keras.data import sources as data
from fer_keras.data.augmentation import Augmentation
from fer_keras.data.sources import DataError


def test_parses_plain_and_gzip_csv(tmp_path):
    rows = random_rows(10, seed=5, usages=("Training", "PublicTest", "PrivateTest"))
    plain = write_csv(tmp_path / "a.csv", rows)
    packed = write_csv(tmp_path / "b.csv.gz", rows, compress=True)
    images, labels, usages = data.parse_csv(plain)
    images_gz, labels_gz, usages_gz = data.parse_csv(packed)
    assert images.shape == (10, 48, 48, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, images_gz)
    np.testing.assert_array_equal(labels, [i % 7 for i in range(10)])
    assert list(usages[:3]) == ["Training", "PublicTest", "PrivateTest"]
    first = np.array(rows[0][1].split(), dtype=np.uint8).reshape(48, 48)
    np.testing.assert_array_equal(images[0, :, :, 0], first)


def test_windows_line_endings_and_quoted_pixels(tmp_path):
    rows = random_rows(3, seed=6)
    text = "emotion,pixels,Usage\r\n" + "".join(f'{label},"{p}",{u}\r\n' for label, p, u in rows)
    path = tmp_path / "crlf.csv"
    path.write_text(text)
    images, labels, _ = data.parse_csv(path)
    assert images.shape == (3, 48, 48, 1)


@pytest.mark.parametrize("compress", [False, True])
def test_utf8_byte_order_mark_is_accepted(tmp_path, compress):
    # Excel's "CSV UTF-8" and Notepad write a byte-order mark before the header.
    rows = random_rows(3, seed=7)
    plain = write_csv(tmp_path / "plain.csv", rows)
    marked = write_csv(tmp_path / ("marked.csv.gz" if compress else "marked.csv"), rows,
                       header="\ufeffemotion,pixels,Usage", compress=compress)
    with (gzip.open if compress else open)(marked, "rb") as handle:
        assert handle.read(3) == b"\xef\xbb\xbf"
    images, labels, usages = data.parse_csv(marked)
    expected = data.parse_csv(plain)
    for got, want in zip((images, labels, usages), expected):
        np.testing.assert_array_equal(got, want)


BAD_ROWS = {
    "short": ("3", " ".join(["1"] * 2000), "Training", "2000 pixel values"),
    "text": ("3", " ".join(["1"] * 2303 + ["x7"]), "Training", "pixel 2303 is 'x7'"),
    "range": ("3", " ".join(["1"] * 2303 + ["300"]), "Training", "outside 0-255"),
    "negative": ("3", " ".join(["-1"] + ["1"] * 2303), "Training", "pixel 0 is '-1'"),
    "label": ("7", " ".join(["1"] * 2304), "Training", "emotion is '7'"),
    "usage": ("3", " ".join(["1"] * 2304), "Testing", "Usage is 'Testing'"),
}


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_bad_row_names_file_line_and_problem(kind, tmp_path):
    label, pixels, usage, message = BAD_ROWS[kind]
    rows = random_rows(4, seed=7)
    rows.insert(2, (label, pixels, usage))
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError) as error:
        data.parse_csv(path)
    text = str(error.value)
    assert "bad.csv" in text and "line 4" in text and message in text
    assert "--skip-bad-rows" in text


def test_skip_bad_rows_reports_counts(tmp_path, capsys):
    rows = random_rows(5, seed=8)
    rows.insert(1, BAD_ROWS["short"][:3])
    rows.insert(3, BAD_ROWS["range"][:3])
    path = write_csv(tmp_path / "bad.csv", rows)
    images, labels, _ = data.parse_csv(path, skip_bad_rows=True)
    assert len(images) == 5
    err = capsys.readouterr().err
    assert "Skipped 2 malformed row(s)" in err


def test_missing_column_and_truncated_gzip(tmp_path):
    path = tmp_path / "wrong.csv"
    path.write_text("label,image\n1,2\n")
    with pytest.raises(DataError, match="lacks column"):
        data.parse_csv(path)
    packed = write_csv(tmp_path / "cut.csv.gz", random_rows(5), compress=True)
    packed.write_bytes(packed.read_bytes()[:-200])
    with pytest.raises(DataError, match="Cannot read"):
        data.parse_csv(packed)


def test_missing_file_lists_every_place_searched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FER2013_PATH", raising=False)
    with pytest.raises(DataError) as error:
        data.resolve_data_path()
    text = str(error.value)
    for expected in ("FER2013_PATH", "data/fer2013.csv", "data/fer2013.csv.gz", "kaggle"):
        assert expected in text
    monkeypatch.setenv("FER2013_PATH", str(tmp_path / "nowhere.csv"))
    with pytest.raises(DataError, match="nowhere.csv"):
        data.resolve_data_path()
    with pytest.raises(DataError, match="--data"):
        data.resolve_data_path(tmp_path / "given.csv")


def test_default_location_and_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FER2013_PATH", raising=False)
    (tmp_path / "data").mkdir()
    path = write_csv(tmp_path / "data" / "fer2013.csv.gz", random_rows(14), compress=True)
    first = data.load_fer2013()
    assert list((tmp_path / "cache").glob("*.npz"))
    second = data.load_fer2013()
    np.testing.assert_array_equal(first[0], second[0])
    # A changed file is parsed again: the cache is keyed by content.
    write_csv(path, random_rows(7, seed=9), compress=True)
    assert len(data.load_fer2013()[0]) == 7


def _write_png(path, value=128, size=(48, 48), channels=None):
    import cv2

    shape = size if channels is None else size + (channels,)
    image = np.full(shape, value, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def test_image_folder_maps_class_names_to_kaggle_ids(tmp_path):
    _write_png(tmp_path / "train" / "neutral" / "Training_1.png", 10)
    _write_png(tmp_path / "train" / "happy" / "Training_2.jpg", 20, size=(64, 64), channels=3)
    _write_png(tmp_path / "test" / "sad" / "PublicTest_3.png", 30)
    _write_png(tmp_path / "test" / "angry" / "PrivateTest_4.png", 40)
    images, labels, usages = data.load_fer2013(tmp_path)
    found = dict(zip(labels.tolist(), usages.tolist()))
    assert found == {6: "Training", 3: "Training", 4: "PublicTest", 0: "PrivateTest"}
    assert images.shape == (4, 48, 48, 1)


def test_unreadable_image_is_named(tmp_path, capsys):
    _write_png(tmp_path / "train" / "fear" / "ok.png")
    broken = tmp_path / "train" / "fear" / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        data.load_image_folder(tmp_path)
    images, _, _ = data.load_image_folder(tmp_path, skip_bad_rows=True)
    assert len(images) == 1
    assert "Skipped 1" in capsys.readouterr().err


def test_unknown_class_folder(tmp_path):
    _write_png(tmp_path / "train" / "contempt" / "x.png")
    with pytest.raises(DataError, match="contempt"):
        data.load_image_folder(tmp_path)


def test_splits_are_stratified_and_disjoint(tiny_csv):
    splits = data.load_splits(tiny_csv)
    sizes = {name: len(split[1]) for name, split in splits.items()}
    assert sizes == {"train": 67, "validation": 17, "public_test": 28, "private_test": 28}
    assert set(np.bincount(splits["validation"][1], minlength=7)) <= {2, 3}


def test_real_split_sizes_match_the_study(real_data):
    splits = data.load_splits(real_data)
    assert len(splits["train"][1]) == 22967
    assert len(splits["validation"][1]) == 5742
    assert len(splits["public_test"][1]) == 3589
    assert len(splits["private_test"][1]) == 3589
    assert np.bincount(splits["train"][1])[3] == pytest.approx(5772, abs=2)


@pytest.mark.parametrize("policy", ["study", "combined"])
def test_augmentation_eager_and_in_dataset_map(policy):
    import tensorflow as tf

    augment = Augmentation(policy)
    batch = np.random.default_rng(0).integers(0, 256, (16, 48, 48, 1)).astype("float32")
    eager = augment(batch).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(batch).map(augment)))
    assert eager.shape == mapped.shape == batch.shape
    assert not np.allclose(eager, batch)
    assert eager.min() >= 0 and eager.max() <= 255
    np.testing.assert_array_equal(augment(batch, training=False), batch)


def test_study_policy_picks_one_transform_per_image():
    augment = Augmentation("study", max_rotation=0.0, max_shift=0.0, crop_area=(1.0, 1.0),
                           aspect_ratio=(1.0, 1.0))
    # With rotation, shift and crop disabled only the flip can change an image.
    batch = np.tile(np.arange(48, dtype="float32")[None, None, :, None], (64, 48, 1, 1))
    out = augment(batch).numpy()
    flipped = np.all(np.isclose(out, batch[:, :, ::-1]), axis=(1, 2, 3))
    same = np.all(np.isclose(out, batch), axis=(1, 2, 3))
    assert np.all(flipped | same) and 3 <= flipped.sum() <= 20


def test_unknown_policy():
    with pytest.raises(ValueError, match="policy"):
        Augmentation("mixup")


def test_make_dataset_batches_one_hot():
    images = np.zeros((10, 48, 48, 1), np.uint8)
    labels = np.arange(10) % 7
    x, y = next(iter(data.make_dataset(images, labels, batch_size=4)))
    assert x.shape == (4, 48, 48, 1) and x.dtype.name == "float32"
    np.testing.assert_array_equal(np.argmax(y, axis=1), labels[:4])


def test_cache_of_a_skip_bad_rows_run_does_not_hide_bad_rows(tmp_path, capsys):
    rows = random_rows(6, seed=4)
    rows.insert(2, BAD_ROWS["short"][:3])
    path = write_csv(tmp_path / "bad.csv", rows)
    assert len(data.load_fer2013(path, skip_bad_rows=True)[0]) == 6
    assert list((tmp_path / "cache").glob("*.npz"))
    # Without the flag the cached decode is not used: the bad row is named, as uncached.
    with pytest.raises(DataError, match="line 4.*--skip-bad-rows"):
        data.load_fer2013(path)
    # With it again, the cache serves and says that rows were dropped.
    capsys.readouterr()
    assert len(data.load_fer2013(path, skip_bad_rows=True)[0]) == 6
    assert "Skipped 1 malformed row(s)" in capsys.readouterr().err


def test_source_fingerprint_follows_content(tmp_path):
    path = write_csv(tmp_path / "a.csv", random_rows(3, seed=1))
    first = data.source_fingerprint(path)
    assert first.startswith("sha256:") and data.source_fingerprint(path) == first
    write_csv(path, random_rows(3, seed=2))
    assert data.source_fingerprint(path) != first
