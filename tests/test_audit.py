import doctest
import json

import numpy as np
import pytest
from conftest import random_rows, write_csv

from fer_keras import audit
from fer_keras.data import audit as data_audit
from fer_keras.data.audit import audit_splits, find_copies, image_digests, unseen_mask


def _faces(count, seed):
    return np.random.default_rng(seed).integers(0, 256, (count, 48, 48, 1), dtype=np.uint8)


@pytest.fixture
def planted():
    """Kaggle-protocol splits with known copies.

    train: 20 faces, face 5 repeats face 3 (same label), face 7 repeats face 2 (label 6,
    not 2). public_test: 10 faces, 0 and 1 copy train 4 and 9. private_test: 10 faces,
    0 copies train 1, 1 copies train 3 (which is there twice), 2 copies train 8 with another
    label, 3 copies public_test 5.
    """
    train_x, train_y = _faces(20, 1), np.arange(20) % 7
    train_x[5], train_y[5] = train_x[3], train_y[3]
    train_x[7], train_y[7] = train_x[2], 6
    public_x, public_y = _faces(10, 2), np.arange(10) % 7
    public_x[0], public_y[0] = train_x[4], train_y[4]
    public_x[1], public_y[1] = train_x[9], train_y[9]
    private_x, private_y = _faces(10, 3), np.arange(10) % 7
    private_x[0], private_y[0] = train_x[1], train_y[1]
    private_x[1], private_y[1] = train_x[3], train_y[3]
    private_x[2], private_y[2] = train_x[8], (train_y[8] + 1) % 7
    private_x[3], private_y[3] = public_x[5], public_y[5]
    return {"train": (train_x, train_y), "validation": (public_x.copy(), public_y.copy()),
            "public_test": (public_x, public_y), "private_test": (private_x, private_y)}


def test_docstring_examples_hold():
    result = doctest.testmod(data_audit)
    assert result.attempted > 5 and result.failed == 0


def test_digests_are_of_the_pixels_whatever_the_layout():
    faces = _faces(3, 0)
    digests = image_digests(faces)
    assert digests == image_digests(faces[..., 0])
    assert len(set(digests)) == 3
    flipped = faces[:, :, ::-1]  # a strided view: its bytes must be read in C order
    assert image_digests(flipped) == image_digests(np.ascontiguousarray(flipped))
    assert image_digests(flipped) != digests
    changed = faces.copy()
    changed[1, 47, 47, 0] ^= 1
    assert image_digests(changed) == [digests[0], image_digests(changed)[1], digests[2]]
    assert image_digests(changed)[1] != digests[1]


@pytest.mark.parametrize("images, words", [
    (np.zeros((2, 48, 48), np.float32), "dtype float32"),
    (np.zeros((2, 2304), np.uint8), "shape (2, 2304)"),
    (np.zeros((2, 48, 48, 3), np.uint8), "shape (2, 48, 48, 3)"),
])
def test_digests_refuse_other_arrays_in_one_line(images, words):
    with pytest.raises(ValueError) as raised:
        image_digests(images)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_find_copies_and_unseen_mask(planted):
    train_x = planted["train"][0]
    private_x = planted["private_test"][0]
    expected = np.zeros(10, bool)
    expected[[0, 1, 2]] = True
    assert find_copies(private_x, train_x).tolist() == expected.tolist()
    assert unseen_mask(private_x, train_x).tolist() == (~expected).tolist()
    assert unseen_mask(private_x[..., 0], train_x).tolist() == (~expected).tolist()
    assert find_copies(private_x, planted["public_test"][0]).tolist() == \
        [False, False, False, True] + [False] * 6
    assert find_copies(private_x[:0], train_x).shape == (0,)
    with pytest.raises(ValueError, match="reference_images of dtype int64"):
        find_copies(private_x, train_x.astype(np.int64))


def test_audit_counts_the_planted_copies(planted):
    report = audit_splits(planted)
    assert report["aliases"] == {"validation": "public_test"}
    assert list(report["splits"]) == ["train", "public_test", "private_test"]
    assert report["splits"]["train"] == {"faces": 20, "distinct": 18, "redundant_copies": 2,
                                         "repeated_faces": 2,
                                         "repeated_with_different_labels": 1}
    assert report["splits"]["private_test"]["redundant_copies"] == 0
    assert report["copies"] == {
        "public_test": {"train": {"faces": 2, "different_label": 0, "of": 10},
                        "private_test": {"faces": 1, "different_label": 0, "of": 10}},
        "private_test": {"train": {"faces": 3, "different_label": 1, "of": 10},
                         "public_test": {"faces": 1, "different_label": 0, "of": 10}},
    }
    assert report["unseen"] == {"public_test": 8, "private_test": 7}
    assert json.loads(json.dumps(report)) == report


def test_a_copy_of_a_face_with_mixed_labels_counts_as_different(planted):
    # Train faces 2 and 7 are one face labelled 2 and 6; a test copy labelled 2 agrees with
    # one of them and not the other.
    train_x, train_y = planted["train"]
    test_x, test_y = train_x[[2]], np.array([train_y[2]])
    report = audit_splits({"train": (train_x, train_y), "private_test": (test_x, test_y)})
    assert report["copies"]["private_test"]["train"] == {"faces": 1, "different_label": 1,
                                                         "of": 1}


def test_audit_of_a_split_with_other_labels_is_no_alias(planted):
    splits = dict(planted)
    x, y = planted["public_test"]
    splits["validation"] = (x, (y + 1) % 7)
    report = audit_splits(splits, test_splits=["validation"])
    assert report["aliases"] == {}
    assert report["copies"]["validation"]["public_test"] == {"faces": 10,
                                                             "different_label": 10, "of": 10}
    assert list(report["copies"]) == ["validation"]


def test_audit_refuses_unknown_splits_and_bad_labels(planted):
    with pytest.raises(ValueError, match="test_splits=\\['test'\\]"):
        audit_splits(planted, test_splits=["test"])
    x, y = planted["train"]
    with pytest.raises(ValueError, match=r"split 'train' must be one id per face, shape "
                                         r"\(20,\). Received: labels of shape \(19,\)"):
        audit_splits({"train": (x, y[:19])})


def _planted_csv(path):
    """A Kaggle-format CSV: 84 Training, 28 PublicTest, 28 PrivateTest rows, with copies.

    Row i has label i % 7 in each usage. Training row 21 repeats row 20 (labels 0 and 6).
    PublicTest 0 (label 0) copies Training 5 (label 5). PrivateTest 0 copies Training 0
    and 1 copies Training 8 (same labels), 2 copies Training 10 (label 3) with label 2, and
    3 (label 3) copies PublicTest 1 (label 1).
    """
    training = random_rows(84, seed=1)
    public = random_rows(28, seed=2, usages=("PublicTest",))
    private = random_rows(28, seed=3, usages=("PrivateTest",))

    def copy(rows, index, source):
        rows[index] = (rows[index][0], source[1], rows[index][2])

    copy(training, 21, training[20])
    copy(public, 0, training[5])
    copy(private, 0, training[0])
    copy(private, 1, training[8])
    copy(private, 2, training[10])
    copy(private, 3, public[1])
    return write_csv(path, training + public + private)


def test_command_reports_the_planted_copies(tmp_path, capsys):
    data = _planted_csv(tmp_path / "fer2013.csv")
    output = tmp_path / "audit.json"
    assert audit.main(["--data", str(data), "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "validation    the same faces as public_test" in out
    assert "private_test: 25 of 28 faces have no exact copy in train" in out
    report = json.loads(output.read_text())
    assert report["protocol"] == "kaggle" and report["data"] == str(data)
    assert report["source_fingerprint"].startswith("sha256:")
    assert report["splits"]["train"]["redundant_copies"] == 1
    assert report["splits"]["train"]["repeated_with_different_labels"] == 1
    assert report["copies"]["private_test"] == {
        "train": {"faces": 3, "different_label": 1, "of": 28},
        "public_test": {"faces": 1, "different_label": 1, "of": 28}}
    assert report["copies"]["public_test"]["train"] == {"faces": 1, "different_label": 1,
                                                        "of": 28}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["audit.json", "cache",
                                                                 "fer2013.csv"]


def test_command_study_protocol_audits_the_validation_split(tmp_path, capsys):
    data = _planted_csv(tmp_path / "fer2013.csv")
    assert audit.main(["--data", str(data), "--protocol", "study"]) == 0
    out = capsys.readouterr().out
    assert "(study protocol)" in out and "the same faces as" not in out
    assert "validation: " in out and "public_test: 27 of 28" in out


def test_command_never_replaces_a_file_unless_told(tiny_csv, tmp_path, capsys):
    output = tmp_path / "mine.json"
    output.write_text("the user's own notes\n")
    assert audit.main(["--data", str(tiny_csv), "--output", str(output)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--overwrite" in error and str(output) in error
    assert output.read_text() == "the user's own notes\n"
    # Refused before the data is read: a missing --data is not reached.
    assert audit.main(["--data", str(tmp_path / "absent.csv"), "--output", str(output)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert audit.main(["--data", str(tiny_csv), "--output", str(output), "--overwrite"]) == 0
    report = json.loads(output.read_text())
    assert report["copies"]["private_test"]["train"] == {"faces": 0, "different_label": 0,
                                                         "of": 28}
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".partial")]


@pytest.mark.parametrize("make, words", [
    (lambda tmp_path: tmp_path / "absent" / "audit.json", "does not exist"),
    (lambda tmp_path: tmp_path, "is not a regular file"),
])
def test_command_refuses_an_output_it_cannot_write(tiny_csv, tmp_path, capsys, make, words):
    assert audit.main(["--data", str(tiny_csv), "--output", str(make(tmp_path))]) == 2
    error = capsys.readouterr().err
    assert words in error and error.count("\n") == 1


def test_command_names_a_missing_data_file(tmp_path, capsys):
    assert audit.main(["--data", str(tmp_path / "absent.csv")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: FER2013 not found") and error.count("\n") == 1
    assert "absent.csv (missing)" in error


def test_real_fer2013_copies_match_the_issue(real_data, tmp_path, capsys):
    output = tmp_path / "audit.json"
    assert audit.main(["--data", str(real_data), "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["aliases"] == {"validation": "public_test"}
    assert report["copies"]["private_test"]["train"]["faces"] == 288
    assert report["copies"]["public_test"]["train"]["faces"] == 280
    assert report["copies"]["private_test"]["public_test"]["faces"] == 44
    assert report["copies"]["private_test"]["train"]["of"] == 3589
    assert report["splits"]["train"]["faces"] == 28709
    assert report["splits"]["train"]["redundant_copies"] == 1236
    assert report["unseen"] == {"public_test": 3309, "private_test": 3301}


def test_write_without_hard_links_still_never_replaces(tmp_path, monkeypatch):
    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(data_audit.os, "link", no_links)
    report = {"copies": {}}
    written = data_audit.write_audit(report, tmp_path / "audit.json")
    assert json.loads(written.read_text()) == report
    with pytest.raises(ValueError, match="already exists; pass --overwrite"):
        data_audit.write_audit({"other": 1}, written)
    assert json.loads(written.read_text()) == report
    assert sorted(path.name for path in tmp_path.iterdir()) == ["audit.json"]


def test_a_file_that_appears_during_the_audit_is_not_replaced(tmp_path, monkeypatch):
    output = tmp_path / "audit.json"
    monkeypatch.setattr(data_audit, "check_output", lambda path, overwrite: None)
    output.write_text("written meanwhile\n")  # after the check, before the write
    with pytest.raises(ValueError, match="appeared while the audit ran"):
        data_audit.write_audit({"copies": {}}, output)
    assert output.read_text() == "written meanwhile\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["audit.json"]


# Near copies (perceptual hashes)


def _smooth_faces(count, seed):
    """Pictures with a perceptual structure: six Gaussian blobs each, on a gray ground."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:48, 0:48]
    faces = []
    for _ in range(count):
        picture = np.full((48, 48), 60.0)
        for _ in range(6):
            y, x = rng.uniform(0, 48, 2)
            width, height = rng.uniform(4, 12), rng.uniform(-80, 120)
            picture += height * np.exp(-((rows - y) ** 2 + (columns - x) ** 2)
                                       / (2 * width ** 2))
        faces.append(np.clip(picture, 0, 255).astype(np.uint8))
    return np.stack(faces)


def _jpeg(face, quality=90):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(face).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def test_near_duplicates_find_planted_near_copies_and_no_false_ones():
    from fer_keras.data import near_duplicates

    assert doctest.testmod(near_duplicates).failed == 0
    faces = _smooth_faces(300, 7)
    # Planted near copies: contrast and brightness changed, or re-encoded as JPEG.
    brighter = np.clip(0.9 * faces[:3].astype(float) + 15, 0, 255).astype(np.uint8)
    reencoded = np.stack([_jpeg(face) for face in faces[3:6]])
    everything = np.concatenate([faces, brighter, reencoded, faces[6:7]])
    pairs = near_duplicates.near_pairs(near_duplicates.perceptual_hashes(everything), 4)
    found = {(a, b) for a, b, _ in pairs}
    assert found == {(0, 300), (1, 301), (2, 302), (3, 303), (4, 304), (5, 305), (6, 306)}
    # The exact copy is at distance 0.
    assert [d for a, b, d in pairs if (a, b) == (6, 306)] == [0]


def test_near_audit_counts_test_faces_with_a_near_copy_in_training():
    from fer_keras.data.near_duplicates import audit_near

    train = _smooth_faces(40, 1)
    public = _smooth_faces(10, 2)
    private = _smooth_faces(10, 3)
    private[0] = _jpeg(train[5])  # near, same label
    private[1] = train[6]  # exact, other label
    labels = np.arange(40) % 7
    private_labels = np.arange(10) % 7
    private_labels[0], private_labels[1] = labels[5], (labels[6] + 1) % 7
    report = audit_near({"train": (train, labels), "public_test": (public, np.arange(10) % 7),
                         "private_test": (private, private_labels)}, 4)
    assert report["private_test"] == {"faces": 10, "near_or_exact": 2, "near_not_exact": 1,
                                      "other_label": 1}
    assert report["public_test"]["near_or_exact"] == 0
    assert report["cross_pairs"] == [("private_test", 0, 5, report["cross_pairs"][0][3])]


def test_command_near_copies_and_contact_sheet(tmp_path, capsys):
    data = _planted_csv(tmp_path / "fer2013.csv")
    sheet, output = tmp_path / "sheet.png", tmp_path / "audit.json"
    assert audit.main(["--data", str(data), "--near-distance", "4", "--contact-sheet",
                       str(sheet), "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "Near copies (perceptual hash within 4 of 64 bits" in out
    near = json.loads(output.read_text())["near"]
    # The exact copies planted in the CSV are near copies too (distance 0).
    assert near["private_test"]["near_or_exact"] >= 3
    assert sheet.stat().st_size > 1000
    before = sheet.read_bytes()
    assert audit.main(["--data", str(data), "--near-distance", "4", "--contact-sheet",
                       str(sheet)]) == 2
    assert sheet.read_bytes() == before
    assert audit.main(["--data", str(data), "--contact-sheet", str(tmp_path / "x.png")]) == 2
    assert "give --near-distance too" in capsys.readouterr().err
