"""The tuner on the distillation temperature and weight: teachers predicted once per search,
each trial trained on its own targets."""

import json

import keras_tuner
import numpy as np
import pytest

from fer_keras.training import distill
from fer_keras.tuning import jobs as tune_jobs
from fer_keras.tuning import search as tune_search
from fer_keras.tuning.hypermodel import FERHyperModel

DISTILL_JOB = """
experiment = "baseline"
tuner = "random"
teachers = [{teachers}]

[search_space.distill_temperature]
min = 1.0
max = 4.0

[search_space.distill_weight]
min = 0.3
max = 0.9
step = 0.3

[budget]
max_trials = 2
epochs = 1
"""


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    for name in tune_search.DISTRIBUTED_ENV:
        monkeypatch.delenv(name, raising=False)


def _teacher_probabilities(count, seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.random((count, 7)) + 0.05
    return [raw / raw.sum(axis=1, keepdims=True)]


def test_each_trial_trains_on_the_targets_of_its_own_temperature_and_weight():
    teachers = _teacher_probabilities(5)
    labels = np.array([0, 1, 2, 3, 4])
    space = {"distill_temperature": {"min": 1.0, "max": 4.0},
             "distill_weight": {"min": 0.3, "max": 0.9, "step": 0.3}}
    hypermodel = FERHyperModel("baseline", space, teacher_probabilities=teachers)
    hp = keras_tuner.HyperParameters()
    hypermodel.sample(hp)
    hp.values.update(distill_temperature=3.0, distill_weight=0.6)
    expected = distill.distillation_targets(teachers, labels, 7, 3.0, 0.6)
    np.testing.assert_allclose(hypermodel.targets(hp, labels), expected)
    hp.values.update(distill_temperature=1.0, distill_weight=0.9)
    assert not np.allclose(hypermodel.targets(hp, labels), expected)
    # Not searched: the defaults (T 2, weight 0.7); without teachers: the hard labels.
    fixed = FERHyperModel("baseline", {"learning_rate": {"min": 1e-4, "max": 1e-2}},
                          teacher_probabilities=teachers)
    np.testing.assert_allclose(fixed.targets(keras_tuner.HyperParameters(), labels),
                               distill.distillation_targets(teachers, labels, 7, 2.0, 0.7))
    plain = FERHyperModel("baseline", {"learning_rate": {"min": 1e-4, "max": 1e-2}})
    assert plain.targets(keras_tuner.HyperParameters(), labels) is labels
    with pytest.raises(ValueError, match="cover 5 faces and the trial trains on 4"):
        hypermodel.targets(hp, labels[:4])


@pytest.mark.parametrize("text, message", [
    (DISTILL_JOB.replace("teachers = [{teachers}]\n", ""),
     "search_space.distill_temperature needs teachers"),
    (DISTILL_JOB.replace("[{teachers}]", '"a"'), "teachers must be a list of run folders"),
    (DISTILL_JOB.replace("{teachers}", '"a", "a"'), "teachers lists a run twice"),
    (DISTILL_JOB.replace("{teachers}", '"a"').replace("max = 0.9", "max = 1.5"),
     r"search_space.distill_weight: the teachers' share of the target must lie in \[0, 1\]"),
    (DISTILL_JOB.replace("{teachers}", '"a"').replace("min = 1.0", "min = 0.0"),
     "search_space.distill_temperature.min must be positive"),
])
def test_bad_distillation_jobs_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "job.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as caught:
        tune_jobs.load_job(path)
    assert str(caught.value).startswith(str(path))


def test_a_distillation_search_predicts_the_teachers_once_and_resumes(tiny_csv, tmp_path,
                                                                    monkeypatch):
    from fer_keras import fit

    teacher = tmp_path / "teacher"
    assert fit.main(["baseline", "--data", str(tiny_csv), "--epochs", "1",
                     "--output-dir", str(teacher)]) == 0
    job = tmp_path / "distilled.toml"
    job.write_text(DISTILL_JOB.replace("{teachers}", json.dumps(str(teacher))))
    predicted = []
    real = distill.teacher_probabilities

    def counted(*args, **kwargs):
        predicted.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(distill, "teacher_probabilities", counted)
    summary = tune_search.run_job(job, data=tiny_csv, verbose=0)
    assert summary["completed_trials"] == 2 and len(predicted) == 1
    runs = tmp_path / "runs" / "distilled"
    assert (runs / tune_search.TEACHER_CACHE).is_file()
    rows = summary["trials"]
    assert all(1.0 <= row["distill_temperature"] <= 4.0 for row in rows)
    assert all(min(abs(row["distill_weight"] - step) for step in (0.3, 0.6, 0.9)) < 1e-9
               for row in rows)
    best = json.loads((tmp_path / "results" / "distilled" / "best_hparams.json").read_text())
    assert set(best["hyperparameters"]) == {"distill_temperature", "distill_weight"}
    assert f"--teachers {teacher} --hparams" in best["train_with"]
    # Run again: the cache is part of the search state (not a foreign file), the teachers
    # are not loaded to predict again, and nothing is trained twice.
    import fer_keras.models

    def no_loading(*args, **kwargs):
        raise AssertionError("a teacher was loaded again")

    monkeypatch.setattr(fer_keras.models, "load_model", no_loading)
    again = tune_search.run_job(job, data=tiny_csv, verbose=0)
    monkeypatch.undo()
    record = json.loads((runs / tune_search.JOB_RECORD).read_text())
    assert record["teachers"] == [str(teacher)]
    assert [row["trial_id"] for row in again["trials"]] == [row["trial_id"] for row in rows]
    # The best trial's file trains a distilled run with fit, as the summary says.
    assert fit.main(["baseline", "--data", str(tiny_csv), "--epochs", "1", "--teachers",
                     str(teacher), "--hparams",
                     str(tmp_path / "results" / "distilled" / "best_hparams.json"),
                     "--output-dir", str(tmp_path / "student")]) == 0
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["distill_weight"] == best["hyperparameters"]["distill_weight"]


def test_the_committed_distillation_job_loads_and_names_committed_teachers():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    job = tune_jobs.load_job(repo / "tuning" / "fer_vgg_kaggle_distill.toml")
    assert set(job.search_space) == {"distill_temperature", "distill_weight"}
    for teacher in job.teachers:
        assert (repo / teacher / "config.json").is_file(), teacher
