"""FER+ crowd labels: the majority rule and vote distributions on hand-made votes, votes
refused when they are not aligned with FER2013, and an 8-class label set round-tripping
through fit -> run folder -> evaluate / export / predict on tiny data."""

import json

import numpy as np
import pytest
from conftest import random_rows, write_csv

from fer_keras.data import ferplus
from fer_keras.data.labels import FER2013, FERPLUS

NEUTRAL, HAPPY, CONTEMPT, UNKNOWN, NF = 0, 1, 7, 8, 9


def votes_of(**counts):
    """One face's 10 vote counts from column names (`happiness=6, unknown=2`)."""
    row = np.zeros(len(ferplus.VOTE_COLUMNS), np.int64)
    for name, count in counts.items():
        row[ferplus.VOTE_COLUMNS.index(name)] = count
    return row


def test_majority_rule_on_a_hand_made_votes_table():
    table = np.stack([
        votes_of(neutral=10),                                  # all agree
        votes_of(happiness=6, surprise=4),                     # 6 of 10
        votes_of(happiness=5, surprise=5),                     # a tie: no majority
        votes_of(happiness=3, neutral=1, sadness=1, anger=1,   # single votes dropped:
                 disgust=1, fear=1, contempt=1, surprise=1),   # 3 of 3 left
        votes_of(happiness=4, surprise=3, neutral=3),          # 4 of 10: no majority
        votes_of(unknown=7, neutral=3),                        # unknown wins: dropped
        votes_of(NF=9, happiness=1),                           # not a face: dropped
        votes_of(contempt=6, neutral=4),                       # FER+'s eighth class
        votes_of(),                                            # no votes at all
    ])
    assert ferplus.majority_labels(table).tolist() == [NEUTRAL, HAPPY, -1, HAPPY, -1, -1, -1,
                                                       CONTEMPT, -1]


def test_probability_targets_are_the_emotion_votes_without_single_ones():
    table = np.stack([votes_of(happiness=6, surprise=3, neutral=1),
                      votes_of(unknown=6, happiness=4),      # mostly unknown: dropped
                      votes_of(NF=1, happiness=2, fear=2)])   # a single NF vote is dropped
    targets, kept = ferplus.probability_targets(table)
    assert kept.tolist() == [True, False, True]
    np.testing.assert_allclose(targets[0, [HAPPY, 2]], [6 / 9, 3 / 9])
    assert targets[0, NEUTRAL] == 0 and targets.shape == (3, FERPLUS.num_classes)
    np.testing.assert_allclose(targets[2, [HAPPY, 6]], [0.5, 0.5])
    np.testing.assert_allclose(targets[kept].sum(axis=1), 1.0, rtol=1e-6)


def write_votes(path, usages, votes, header=ferplus.HEADER):
    lines = [",".join(header)] + [
        ",".join([usage, f"fer{i:07d}.png", *map(str, row)])
        for i, (usage, row) in enumerate(zip(usages, votes))]
    path.write_text("\n".join(lines) + "\n")
    return path


def crowd_votes(usages):
    """Votes whose majority cycles through FER+'s 8 classes, one face in 9 unlabelled."""
    votes = []
    for index in range(len(usages)):
        row = np.zeros(len(ferplus.VOTE_COLUMNS), np.int64)
        row[index % 9] = 7  # index % 9 == 8: unknown wins
        row[(index + 1) % 8] += 3
        votes.append(row)
    return np.asarray(votes)


USAGES = ["Training"] * 84 + ["PublicTest"] * 28 + ["PrivateTest"] * 28


@pytest.fixture
def crowd(tmp_path):
    """A tiny FER2013 CSV (the `tiny_csv` layout) and its FER+ votes file beside it."""
    rows = random_rows(84, seed=1) + random_rows(28, seed=2, usages=("PublicTest",)) + \
        random_rows(28, seed=3, usages=("PrivateTest",))
    data = write_csv(tmp_path / "fer2013.csv", rows)
    votes = crowd_votes(USAGES)
    write_votes(tmp_path / ferplus.VOTES_FILE_NAME, USAGES, votes)
    return data, votes


def test_shifted_shortened_or_damaged_votes_are_refused_in_one_line(tmp_path):
    votes = crowd_votes(USAGES)
    shorter = write_votes(tmp_path / "short.csv", USAGES[:-1], votes[:-1])
    with pytest.raises(ValueError, match=r"has 139 rows but the FER2013 source has 140"):
        ferplus.load_votes(shorter, USAGES)
    # One row lost at the top and one added at the end: the count agrees, Usage does not.
    shifted = write_votes(tmp_path / "shifted.csv", USAGES[1:] + ["PrivateTest"],
                          np.roll(votes, -1, axis=0))
    with pytest.raises(ValueError, match=r"not aligned .* first at data row 84 "
                                         r"\('PublicTest' there, 'Training' in FER2013\)"):
        ferplus.load_votes(shifted, USAGES)
    damaged = write_votes(tmp_path / "damaged.csv", USAGES, votes)
    text = damaged.read_text().splitlines()
    text[5] = text[5].replace(",7,", ",seven,", 1)
    damaged.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"damaged.csv, line 6: a vote count must be a whole "
                                         r"number .* Received: 'seven'"):
        ferplus.load_votes(damaged, USAGES)
    renamed = write_votes(tmp_path / "renamed.csv", USAGES, votes,
                          header=("Usage", "Image name") + tuple("abcdefghij"))
    with pytest.raises(ValueError, match="is not a FER\\+ votes file: its header must be"):
        ferplus.load_votes(renamed, USAGES)
    assert ferplus.load_votes(write_votes(tmp_path / "good.csv", USAGES, votes),
                              USAGES).tolist() == votes.tolist()


def test_a_missing_votes_file_names_every_place_looked_at(tmp_path, monkeypatch):
    monkeypatch.delenv(ferplus.VOTES_ENV, raising=False)
    with pytest.raises(ValueError, match=r"not found; looked at .*fer2013new.csv\. .* pass "
                                         r"--labels-file PATH, set \$FERPLUS_PATH"):
        ferplus.find_votes(None, tmp_path / "fer2013.csv")
    monkeypatch.setenv(ferplus.VOTES_ENV, str(tmp_path / "elsewhere.csv"))
    (tmp_path / "elsewhere.csv").write_text("x")
    assert ferplus.find_votes(None, tmp_path / "fer2013.csv") == tmp_path / "elsewhere.csv"


def test_ferplus_splits_keep_majority_faces_and_train_on_the_mode(crowd):
    from fer_keras.data.sources import load_splits

    data, votes = crowd
    majority = ferplus.majority_labels(votes)
    usages = np.asarray(USAGES)
    for mode in ferplus.LABEL_MODES:
        splits = load_splits(data, protocol="kaggle", labels="ferplus", label_mode=mode)
        assert splits["private_test"][1].tolist() == \
            majority[(usages == "PrivateTest") & (majority >= 0)].tolist()
        assert splits["validation"][1].tolist() == splits["public_test"][1].tolist()
        assert len(splits["fer2013_private_test"][1]) == 28
        targets = splits["train_targets"][1]
        assert targets.ndim == (2 if mode == "probability" else 1)
    with pytest.raises(ValueError, match="use --protocol kaggle"):
        load_splits(data, protocol="study", labels="ferplus", label_mode="majority")
    with pytest.raises(ValueError, match="--label-mode must be one of majority, probability"):
        load_splits(data, protocol="kaggle", labels="ferplus", label_mode="mean")


def test_seven_class_scores_on_ferplus_labels_leave_contempt_out():
    from fer_keras.training.results import score_on

    ferplus_truth = np.array([FERPLUS.class_names.index(name) for name in
                              ("happy", "contempt", "neutral", "sad")])
    seven = np.eye(7)[[FER2013.class_names.index(name) for name in
                       ("happy", "happy", "neutral", "angry")]]
    scored = score_on(ferplus_truth, FERPLUS, seven)
    assert scored["left_out"] == 1 and scored["count"] == 3
    assert scored["accuracy"] == pytest.approx(2 / 3)
    # And an 8-class model on FER2013's labels: contempt's column is left out.
    eight = np.full((2, 8), 0.01)
    eight[0, CONTEMPT], eight[0, HAPPY] = 0.9, 0.09
    eight[1, NEUTRAL] = 0.5
    fer2013_truth = [FER2013.class_names.index("happy"), FER2013.class_names.index("neutral")]
    assert score_on(fer2013_truth, FER2013, eight)["accuracy"] == 1.0


def test_an_eight_class_run_round_trips_through_evaluate_export_and_predict(
        crowd, tmp_path, capsys):
    from PIL import Image

    from fer_keras import evaluate, export, fit, predict

    data, votes = crowd
    run = tmp_path / "runs" / "crowd"
    assert fit.main(["baseline", "--data", str(data), "--labels", "ferplus", "--label-mode",
                     "probability", "--protocol", "kaggle", "--epochs", "1",
                     "--batch-size", "32", "--output-dir", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert config["class_names"] == list(FERPLUS.class_names)
    assert config["labels"] == "ferplus" and config["label_mode"] == "probability"
    assert config["labels_fingerprint"].startswith("sha256:")
    assert metrics["splits"]["private_test"]["class_order"] == list(FERPLUS.class_names)
    majority_private = int(((ferplus.majority_labels(votes) >= 0)
                            & (np.asarray(USAGES) == "PrivateTest")).sum())
    assert metrics["splits"]["private_test"]["count"] == majority_private
    assert metrics["fer2013_private_test"]["count"] == 28
    assert metrics["fer2013_private_test"]["class_order"] == list(FER2013.class_names)
    capsys.readouterr()

    # evaluate, on FER+ labels and on FER2013's, and --verify against metrics.json (--data
    # given: $FER2013_PATH, set in CI, would otherwise win over the run's recorded data).
    model = str(run / "model.keras")
    assert evaluate.main([model, "--data", str(data), "--labels", "ferplus",
                          "--split", "private_test",
                          "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["accuracy"] == pytest.approx(metrics["splits"]["private_test"]["accuracy"])
    assert scored["count"] == majority_private
    assert evaluate.main([model, "--data", str(data), "--split", "private_test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(
        metrics["fer2013_private_test"]["accuracy"])
    assert evaluate.main(["--verify", model, "--data", str(data)]) == 0
    assert capsys.readouterr().out.count("ok") == 2

    # --save keeps each run's score by name, and refuses a file that is not its own.
    saved = tmp_path / "label_scores.json"
    assert evaluate.main([model, "--data", str(data), "--labels", "ferplus",
                          "--split", "private_test",
                          "--save", str(saved)]) == 0
    entry = json.loads(saved.read_text())["scores"]["ferplus"]["private_test"]["crowd"]
    assert entry["accuracy"] == pytest.approx(scored["accuracy"])
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    assert evaluate.main([model, "--data", str(data), "--labels", "ferplus",
                          "--split", "private_test",
                          "--save", str(notes)]) == 2
    assert "is not a scores file written by evaluate --save" in capsys.readouterr().err
    assert notes.read_text() == '{"mine": 1}'

    # Test-time views and ensembles score FER+ runs on FER+ labels, and on FER2013's 7.
    from fer_keras import ensemble, tta

    viewed = tmp_path / "runs" / "crowd_mirror"
    assert tta.main([str(run), "--views", "mirror", "--output", str(viewed),
                     "--data", str(data)]) == 0
    for folder in (viewed,):
        derived = json.loads((folder / "metrics.json").read_text())
        assert derived["labels"] == "ferplus"
        assert derived["splits"]["private_test"]["count"] == majority_private
        assert derived["fer2013_private_test"]["count"] == 28
    both = tmp_path / "runs" / "crowd_ensemble"
    assert ensemble.main([str(run), str(viewed), "--output", str(both),
                          "--data", str(data)]) == 0
    joined = json.loads((both / "metrics.json").read_text())
    assert joined["labels"] == "ferplus"
    assert joined["splits"]["private_test"]["class_order"] == list(FERPLUS.class_names)
    assert joined["fer2013_private_test"]["class_order"] == list(FER2013.class_names)
    assert evaluate.main(["--verify", str(both / "model.keras"),
                          str(viewed / "model.keras"), "--data", str(data)]) == 0
    capsys.readouterr()

    # export: the signature and labels.txt name FER+'s 8 classes.
    assert export.main([str(run), "--no-tflite"]) == 0
    labels_txt = run / "serving" / "1" / "assets" / "labels.txt"
    assert labels_txt.read_text().split() == list(FERPLUS.class_names)

    # predict: every record has 8 probabilities, contempt among them.
    face = tmp_path / "face.png"
    Image.fromarray(np.full((60, 60), 128, np.uint8)).save(face)
    capsys.readouterr()
    assert predict.main([str(face), "--model", str(run), "--no-detect"]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert list(record["probabilities"]) == list(FERPLUS.class_names)
    assert record["label"] in FERPLUS.class_names


def test_labels_file_without_ferplus_labels_is_refused(tiny_csv, tmp_path, capsys):
    from fer_keras import evaluate, fit

    assert fit.main(["baseline", "--data", str(tiny_csv), "--labels-file",
                     str(tmp_path / "v.csv"), "--epochs", "1",
                     "--output-dir", str(tmp_path / "run")]) == 2
    assert "--labels-file is the FER+ votes file" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert evaluate.main([str(tmp_path / "m.keras"), "--labels-file", "v.csv"]) == 2
    assert "--labels-file is the FER+ votes file" in capsys.readouterr().err


def test_committed_seven_class_runs_score_on_ferplus_majority_labels(real_data):
    """The real votes: a committed FER2013 run is scored on the PrivateTest faces whose FER+
    majority is one of its 7 classes (3,153 majority faces, 16 of them contempt)."""
    from fer_keras.data.sources import load_splits
    from fer_keras.serving.evaluation import evaluate

    votes_file = real_data.parent / ferplus.VOTES_FILE_NAME
    if not votes_file.exists():
        pytest.skip(f"FER+ votes not found at {votes_file}")
    splits = load_splits(real_data, protocol="kaggle", labels="ferplus",
                         label_mode="majority")
    assert len(splits["private_test"][1]) == 3153
    scored = evaluate("saved_models/fer_vgg_kaggle/model.keras", "private_test", real_data,
                      labels="ferplus")
    contempt = int((splits["private_test"][1] == CONTEMPT).sum())
    assert scored["left_out"] == contempt and scored["count"] == 3153 - contempt
    assert scored["class_order"] == list(FER2013.class_names)
    assert 0.6 < scored["accuracy"] < 0.8
