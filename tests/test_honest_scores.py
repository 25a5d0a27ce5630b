"""Honest test scores (issue 24): `evaluate --unseen` leaves out exactly the test faces that
copy a Training row, every accuracy evaluate prints carries its Wilson interval,
`--compare` runs the exact McNemar test on per-face correctness, and the report shows the
unseen column and the PrivateTest interval.

The data are tiny and generated: three PrivateTest faces are planted copies of Training
rows (one of them a row of the study protocol's validation split, which is still a Training
row) and one copies a PublicTest face, which is no reason to leave it out. The labels are
chosen from two untrained models' predictions, so every unseen face is right for at least
one model and every planted copy is wrong for both: a wrong selection changes an accuracy.
"""

import json
import types

import numpy as np
import pytest
from conftest import random_rows, write_csv

from fer_keras import evaluate
from fer_keras.data import ferplus
from fer_keras.data.sources import split_training
from fer_keras.serving.evaluation import (
    accuracy_text,
    comparison_sentence,
    model_fingerprint,
    save_scores,
)
from fer_keras.utils.stats import mcnemar, wilson_interval

COPIES = (0, 9, 17)
"""PrivateTest faces (positions in the split) planted as copies of Training rows."""
PUBLIC_COPY = 21
"""A PrivateTest face planted as a copy of a PublicTest face: it stays."""


def _faces(rows):
    return np.stack([np.array(pixels.split(), np.uint8).reshape(48, 48, 1)
                     for _, pixels, _ in rows])


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    """A CSV with planted copies, two saved untrained models, and the expected scores."""
    import keras

    from fer_keras.models import get_model
    from fer_keras.serving.runner import Classifier

    folder = tmp_path_factory.mktemp("honest")
    training = random_rows(84, seed=1)
    public = random_rows(28, seed=2, usages=("PublicTest",))
    private = random_rows(28, seed=3, usages=("PrivateTest",))
    train_rows, validation_rows = split_training(np.array([row[0] for row in training]))
    for position, source in zip(COPIES, (train_rows[0], validation_rows[0], train_rows[5])):
        private[position] = (private[position][0], training[source][1], "PrivateTest")
    private[PUBLIC_COPY] = (private[PUBLIC_COPY][0], public[2][1], "PrivateTest")

    models, predictions = [], []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        path = folder / f"model_{seed}" / "model.keras"
        path.parent.mkdir()
        get_model("baseline").save(path)
        models.append(path)
        predictions.append(Classifier(path, purpose="evaluate").predict(
            _faces(private)).argmax(axis=1))
    predicted_a, predicted_b = predictions
    unseen = np.ones(len(private), bool)
    unseen[list(COPIES)] = False
    # Unseen faces: A's prediction at even positions, B's at odd ones. Copies: a class
    # neither model predicts there.
    labels = np.where(np.arange(len(private)) % 2 == 0, predicted_a, predicted_b)
    for position in COPIES:
        labels[position] = next(label for label in range(7)
                                if label not in (predicted_a[position], predicted_b[position]))
    private = [(int(label), pixels, usage) for label, (_, pixels, usage)
               in zip(labels, private)]
    data = write_csv(folder / "fer2013.csv", training + public + private)
    correct_a, correct_b = predicted_a == labels, predicted_b == labels
    return types.SimpleNamespace(data=data, models=[str(path) for path in models],
                                 unseen=unseen, correct=(correct_a, correct_b),
                                 usages=[row[2] for row in training + public + private])


def _json(capsys, argv):
    assert evaluate.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_unseen_leaves_out_exactly_the_copies_of_training_rows(honest, capsys):
    assert not (honest.correct[0][list(COPIES)] | honest.correct[1][list(COPIES)]).any()
    for model, correct in zip(honest.models, honest.correct):
        scored = _json(capsys, [model, "--split", "private_test", "--data", str(honest.data),
                                "--unseen", "--json"])
        assert scored["unseen"] is True and scored["left_out_copies"] == len(COPIES)
        assert scored["count"] == 28 - len(COPIES)
        assert scored["accuracy"] == pytest.approx(correct[honest.unseen].mean())
        whole = _json(capsys, [model, "--split", "private_test", "--data", str(honest.data),
                               "--json"])
        assert "unseen" not in whole and whole["count"] == 28
        assert whole["accuracy"] == pytest.approx(correct.mean())


def test_every_accuracy_carries_its_wilson_interval_in_text_and_json(honest, capsys):
    model, correct = honest.models[0], honest.correct[0][honest.unseen]
    argv = [model, "--split", "private_test", "--data", str(honest.data), "--unseen"]
    scored = _json(capsys, argv + ["--json"])
    interval = wilson_interval(int(correct.sum()), len(correct))
    assert scored["accuracy_interval"] == pytest.approx(list(interval))
    assert evaluate.main(argv) == 0
    text = capsys.readouterr().out
    low, high = (100 * bound for bound in interval)
    assert f"accuracy {100 * correct.mean():.2f}% (95% CI {low:.2f}-{high:.2f})" in text
    assert f"the {len(correct)} faces with no exact copy in Training (3 copies left out)" \
        in text


def test_unseen_works_with_ferplus_labels(honest, tmp_path, capsys):
    # Every face's crowd votes say neutral: all 28 PrivateTest faces are majority faces.
    votes = tmp_path / "votes.csv"
    rows = [",".join([usage, f"fer{index:07d}.png", "10", *["0"] * 9])
            for index, usage in enumerate(honest.usages)]
    votes.write_text(",".join(ferplus.HEADER) + "\n" + "\n".join(rows) + "\n")
    scored = _json(capsys, [honest.models[0], "--split", "private_test", "--data",
                            str(honest.data), "--labels", "ferplus", "--labels-file",
                            str(votes), "--unseen", "--json"])
    assert scored["labels"] == "ferplus" and scored["left_out_copies"] == len(COPIES)
    assert scored["count"] == 28 - len(COPIES) and len(scored["accuracy_interval"]) == 2


def test_unseen_refuses_a_split_cut_from_training(honest, capsys):
    assert evaluate.main([honest.models[0], "--split", "validation", "--data",
                          str(honest.data), "--unseen"]) == 2
    assert "--unseen leaves no face of the split validation" in capsys.readouterr().err


def test_save_keeps_an_unseen_score_beside_the_whole_split(honest, tmp_path, capsys):
    saved = tmp_path / "scores.json"
    base = [honest.models[0], "--split", "private_test", "--data", str(honest.data),
            "--save", str(saved)]
    assert evaluate.main(base) == 0 and evaluate.main(base + ["--unseen"]) == 0
    by_split = json.loads(saved.read_text())["scores"]["fer2013"]
    assert by_split["private_test"]["model_1"]["count"] == 28
    entry = by_split["private_test_unseen"]["model_1"]
    assert entry["count"] == 28 - len(COPIES) and entry["left_out_copies"] == len(COPIES)
    assert entry["unseen"] is True and len(entry["accuracy_interval"]) == 2


def test_compare_counts_the_discordant_faces_of_the_two_models(honest, capsys):
    argv = [*honest.models, "--compare", "--split", "private_test", "--data",
            str(honest.data), "--unseen"]
    result = _json(capsys, argv + ["--json"])
    correct_a, correct_b = (each[honest.unseen] for each in honest.correct)
    expected = mcnemar(correct_a, correct_b)
    assert expected["n01"] + expected["n10"] > 0  # else the data test nothing
    assert (result["n01"], result["n10"]) == (expected["n01"], expected["n10"])
    assert result["p_value"] == pytest.approx(expected["p_value"])
    assert result["count"] == 28 - len(COPIES) and result["left_out_copies"] == len(COPIES)
    assert [model["accuracy"] for model in result["models"]] == pytest.approx(
        [correct_a.mean(), correct_b.mean()])
    assert evaluate.main(argv) == 0
    text = capsys.readouterr().out
    assert (f"discordant faces: {expected['n10']} only A right, {expected['n01']} only B "
            f"right") in text
    assert "A  " + accuracy_text(correct_a.mean(), wilson_interval(
        int(correct_a.sum()), len(correct_a))) in text
    assert comparison_sentence(result) in text


def test_compare_refuses_one_model_a_repeated_one_and_a_foreign_save(honest, tmp_path,
                                                                       capsys):
    assert evaluate.main([honest.models[0], "--compare", "--data", str(honest.data)]) == 2
    assert "give at least two" in capsys.readouterr().err
    assert evaluate.main([honest.models[0], honest.models[0], honest.models[1], "--compare",
                          "--data", str(honest.data)]) == 2
    assert "given a model twice" in capsys.readouterr().err
    foreign = tmp_path / "notes.json"
    foreign.write_text('{"mine": 1}')
    assert evaluate.main([*honest.models, "--compare", "--data", str(honest.data),
                          "--save", str(foreign)]) == 2
    assert "not a paired-tests file" in capsys.readouterr().err
    assert foreign.read_text() == '{"mine": 1}'


def test_compare_save_tests_every_pair_and_the_report_shows_them(honest, tmp_path, capsys):
    import shutil

    from fer_keras.reporting.report import (
        PAIRED_FILE,
        load_inputs,
        render_results_readme,
    )

    root = tmp_path / "runs"
    root.mkdir()
    models = []
    for index, model in enumerate(honest.models + [honest.models[0]]):
        # A third run: a copy of the first, so one pair has no discordant face at all.
        folder = root / f"run{index}"
        folder.mkdir()
        shutil.copy(model, folder / "model.keras")
        models.append(str(folder / "model.keras"))
    saved = root / PAIRED_FILE
    assert evaluate.main([*models, "--compare", "--split", "private_test", "--data",
                          str(honest.data), "--unseen", "--save", str(saved)]) == 0
    printed = capsys.readouterr().out
    test = json.loads(saved.read_text())["tests"][0]
    assert test["unseen"] and test["count"] == 28 - len(COPIES)
    assert [(pair["a"], pair["b"]) for pair in test["pairs"]] == [(0, 1), (0, 2), (1, 2)]
    correct_a, correct_b = (each[honest.unseen] for each in honest.correct)
    expected = mcnemar(correct_a, correct_b)
    first = test["pairs"][0]
    assert (first["n01"], first["n10"]) == (expected["n01"], expected["n10"])
    assert first["significant"] == (expected["p_value"] < 0.05)
    same = test["pairs"][1]
    assert (same["n01"], same["n10"], same["p_value"]) == (0, 0, 1.0)
    assert not same["significant"] and "[0] vs [2]: +0.00 points" in printed
    # Saved again on the whole split: a second entry, the unseen one kept.
    assert evaluate.main([*models[:2], "--compare", "--split", "private_test", "--data",
                          str(honest.data), "--save", str(saved)]) == 0
    assert [entry["unseen"] for entry in json.loads(saved.read_text())["tests"]] == [
        False, True]
    text = render_results_readme([], paired=load_inputs(root, tmp_path / "t").paired)
    assert "## Paired tests of the top runs" in text
    assert "| 0 vs 2 | +0.00 | 0 / 0 | 1 | not significant |" in text
    # A model that changed since it was tested is marked stale.
    shutil.copy(honest.models[1], root / "run0" / "model.keras")
    text = render_results_readme([], paired=load_inputs(root, tmp_path / "t").paired)
    assert "run0 (stale: the model changed since)" in text


def test_comparison_sentence_reads_noise_significance_and_ties():
    result = {"better": "b", "difference_points": 0.42, "p_value": 0.31, "n01": 60,
              "n10": 45}
    assert comparison_sentence(result) == ("B is more accurate by 0.42 points; p = 0.31, so "
                                           "the difference is within noise at the 5% level.")
    result.update(better="a", difference_points=-1.5, p_value=0.04996)
    # Never printed as "p = 0.05" while it is below the level.
    assert comparison_sentence(result) == ("A is more accurate by 1.50 points; p = 0.04996, "
                                           "so the difference is significant at the 5% level.")
    result.update(better=None, difference_points=0.0, p_value=1.0, n10=60)
    assert "equally accurate" in comparison_sentence(result)


def test_report_shows_the_unseen_column_and_the_private_test_interval(tmp_path):
    from fer_keras import report
    from fer_keras.reporting import report as reporting

    runs = tmp_path / "runs"
    confusion = (np.eye(7, dtype=int) * 9 + 1).tolist()
    split = {"accuracy": 0.5, "macro_f1": 0.4, "count": 70, "confusion_matrix": confusion,
             "per_class": {name: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 10}
                           for name in ("angry", "disgust", "fear", "happy", "sad",
                                        "surprise", "neutral")}}
    for name in ("baseline", "deep_emotion", "lenet5"):
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.json").write_text(json.dumps(
            {"best_epoch": 1, "epochs_run": 2, "splits": {
                "train": split, "validation": split, "private_test": split}}))
        (runs / name / "model.keras").write_bytes(name.encode())
    entry = {"accuracy": 0.48, "macro_f1": 0.4, "count": 64, "labels": "fer2013",
             "split": "private_test_unseen", "left_out": 0}
    save_scores(runs / reporting.UNSEEN_SCORES_FILE, {
        "baseline": dict(entry, model_fingerprint=model_fingerprint(
            runs / "baseline" / "model.keras")),
        "deep_emotion": dict(entry, model_fingerprint="sha256:another model")})
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    assert report.main(["--root", str(runs), "--readme", str(readme)]) == 0
    page = (runs / "README.md").read_text()
    header = reporting.HEADER
    low, high = wilson_interval(35, 70)
    cells = {}
    for line in page.splitlines():
        for name in ("baseline", "deep_emotion", "lenet5"):
            if line.startswith("| ") and f"| `{name}` |" in line:
                cells[name] = line.strip("| ").split(" | ")
    for name, unseen in (("baseline", "48.00"), ("deep_emotion", "stale"), ("lenet5", "")):
        assert len(cells[name]) == len(header)
        assert cells[name][header.index("PrivateTest")] == f"50.00 ±{50 * (high - low):.1f}"
        assert cells[name][header.index("PrivateTest unseen")] == unseen
    assert "PrivateTest unseen is the accuracy on the 3,301 PrivateTest faces" in page
    assert "| PrivateTest unseen |" in readme.read_text()
    assert report.main(["--root", str(runs), "--readme", str(readme), "--check"]) == 0


def test_coverage_answers_the_most_confident_faces_first():
    import doctest

    from fer_keras.serving import evaluation

    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for test in finder.find(evaluation.coverage_table):
        runner.run(test)
    assert runner.failures == 0
    rows = evaluation.coverage_table([1, 1, 0, 0, 1], [0.9, 0.8, 0.7, 0.3, 0.2],
                                     (1.0, 0.8, 0.4))
    assert [row["answered"] for row in rows] == [5, 4, 2]
    assert [row["accuracy"] for row in rows] == [0.6, 0.5, 1.0]
    assert [row["min_confidence"] for row in rows] == [0.2, 0.3, 0.8]
    table = evaluation.format_coverage(rows)
    assert "| 80% | 0.300 | 50.00 | 4 |" in table
