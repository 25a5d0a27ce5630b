import json
import math

import pytest

from fer_keras import bench
from fer_keras.benchmarks import bench as benchmarks
from fer_keras.data.augmentation import Augmentation
from fer_keras.models import get_model


def test_bench_measures_one_experiment_through_fits_pipeline(monkeypatch, capsys):
    import fer_keras.training.builder

    pipelines, compiled = [], []
    real_make_dataset = fer_keras.training.builder.make_dataset
    real_compile_model = fer_keras.training.builder.compile_model

    def spy_make_dataset(*args, **kwargs):
        pipelines.append((args, kwargs))
        return real_make_dataset(*args, **kwargs)

    def spy_compile_model(model, /, **kwargs):
        compiled.append(kwargs)
        return real_compile_model(model, **kwargs)

    monkeypatch.setattr(fer_keras.training.builder, "make_dataset", spy_make_dataset)
    monkeypatch.setattr(fer_keras.training.builder, "compile_model", spy_compile_model)
    assert bench.main(["baseline_aug", "--steps", "2", "--json", "--jit-compile"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["command"] == "python -m fer_keras.bench baseline_aug --steps 2 --json " \
        "--jit-compile"

    # The training pipeline is fit's: batch 128, shuffled, with the study's augmentation.
    [(args, kwargs)] = pipelines
    assert args[2] == benchmarks.TRAIN_BATCH == 128 and kwargs["shuffle"]
    assert isinstance(kwargs["augmentation"], Augmentation)
    assert kwargs["augmentation"].policy == "study"
    assert compiled[0]["optimizer"] == "adam" and compiled[0]["learning_rate"] == 1e-3

    [row] = report["results"]
    assert row["experiment"] == "baseline_aug" and row["model"] == "baseline"
    assert row["parameters"] == get_model("baseline").count_params()
    for key in ("train_images_per_second", "inference_images_per_second",
                "latency_ms_median", "latency_ms_p90", "xla_latency_ms_median",
                "litert_threads_1_latency_ms_median", "litert_threads_2_latency_ms_p90"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["latency_ms_median"] <= row["latency_ms_p90"]
    for threads in (1, 2):
        assert (row[f"litert_threads_{threads}_latency_ms_median"]
                <= row[f"litert_threads_{threads}_latency_ms_p90"])
    assert row["litert_runtime"] == "ai-edge-litert"
    assert "ai-edge-litert" in report["method"]["litert"]
    assert "batch of 256" in report["method"]["inference"]
    assert "warm-up" in report["method"]["training"]
    assert report["environment"]["cpu_count"] >= 1

    table = benchmarks.format_table(report["results"], report["environment"], steps=2)
    assert "baseline_aug" in table and f"{row['parameters']:,}" in table
    assert "batch-1 ms" in table and "load average" in table
    assert "batch-1 ms, XLA export" in table and "ms/image, batch 256" in table
    assert "LiteRT batch-1 ms, 1 thread" in table and "LiteRT batch-1 ms, 2 threads" in table
    header, _ = benchmarks.table_rows([{key: value for key, value in row.items()
                                        if not key.startswith("litert")}])
    assert not any("LiteRT" in column for column in header)  # Old reports keep their table.


def test_unknown_experiment_fails_before_timing(capsys):
    assert bench.main(["baseline", "no_such_experiment"]) == 2
    err = capsys.readouterr().err
    assert "Valid names" in err and "measuring" not in err
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["baseline", "--steps", "0"])
    assert exit_info.value.code == 2
    assert "--steps" in capsys.readouterr().err


def test_bench_experiment_rejects_bad_steps():
    with pytest.raises(ValueError, match="steps"):
        benchmarks.bench_experiment("baseline", steps=0)


FAKE_PEER = """
import sys
known = {"baseline": (464619, 1000.0, 5000.0)}
for name in sys.argv[1:]:
    if name not in known:
        raise KeyError(name)
    params, train, infer = known[name]
    print(name, params, f"{train:.0f}", f"{infer:.0f}")
"""


def test_peer_figures_and_ratio(tmp_path):
    script = tmp_path / "peer.py"
    script.write_text(FAKE_PEER)
    peer = benchmarks.run_peer(script, "baseline")
    assert peer == {"parameters": 464619, "train_images_per_second": 1000.0,
                    "inference_images_per_second": 5000.0}
    missing = benchmarks.run_peer(script, "lenet5")
    assert "KeyError" in missing["error"] and "exit 1" in missing["error"]

    ours = {"experiment": "baseline", "model": "baseline", "augmentation": None,
            "parameters": 464619, "train_images_per_second": 1250.0,
            "inference_images_per_second": 9000.0, "latency_ms_median": 1.0,
            "latency_ms_p90": 1.5}
    row = benchmarks.add_peer(ours, peer)
    assert row["train_ratio_to_peer"] == 1.25 and row["peer_train_images_per_second"] == 1000.0
    augmented = benchmarks.add_peer(dict(ours, experiment="baseline_aug", augmentation="study"),
                                    peer)
    assert "train_ratio_to_peer" not in augmented  # the peer does not augment
    table = benchmarks.format_table([row, augmented, benchmarks.add_peer(ours, missing)])
    assert "PyTorch train img/s" in table and "1.25x" in table


def test_missing_peer_script_fails_before_timing(tmp_path, capsys):
    assert bench.main(["baseline", "--peer", str(tmp_path / "nope.py")]) == 2
    err = capsys.readouterr().err
    assert "torch_peer.py" in err and "measuring" not in err


def test_serving_process_gets_tensorflows_default_unless_asked(monkeypatch):
    import fer_keras

    assert "fer_keras" not in benchmarks.SERVING_PROBE  # A serving client never imports us.
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    monkeypatch.setattr(fer_keras, "ONEDNN_CHOSEN_BY_USER", False)
    assert "TF_ENABLE_ONEDNN_OPTS" not in benchmarks.serving_environment("default")
    assert benchmarks.serving_environment("on")["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert benchmarks.serving_environment("off")["TF_ENABLE_ONEDNN_OPTS"] == "0"
    monkeypatch.setattr(fer_keras, "ONEDNN_CHOSEN_BY_USER", True)  # The user's choice stays.
    assert benchmarks.serving_environment("default")["TF_ENABLE_ONEDNN_OPTS"] == "1"
    with pytest.raises(ValueError, match="default, on, off"):
        benchmarks.serving_environment("fast")


def test_serving_only_times_the_export_without_training(monkeypatch, capsys):
    import fer_keras.training.builder

    def no_training(*args, **kwargs):
        raise AssertionError("--serving-only must not build a training pipeline")

    monkeypatch.setattr(fer_keras.training.builder, "make_dataset", no_training)
    assert bench.main(["fer_vgg", "--serving-only", "--int8", "--steps", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [row] = report["results"]
    assert "train_images_per_second" not in row
    assert row["forward_passes"] == 2  # fer_vgg averages each face with its mirror.
    for key in ("inference_images_per_second", "latency_ms_median",
                "litert_threads_1_latency_ms_median", "litert_threads_2_latency_ms_median",
                "litert_int8_threads_2_latency_ms_median"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert "not timed" in report["method"]["training"]
    header, [cells] = benchmarks.table_rows(report["results"])
    assert "train img/s" not in header and cells[header.index("passes/face")] == "2"
    assert "LiteRT int8 batch-1 ms, 2 threads" in header and "int8" in report["method"]


def test_all_and_names_do_not_mix(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["baseline", "--all"])
    assert exit_info.value.code == 2 and "--all" in capsys.readouterr().err


def test_model_only_times_the_network_without_augmentation(monkeypatch, capsys):
    import fer_keras.training.builder

    pipelines = []
    real_make_dataset = fer_keras.training.builder.make_dataset

    def spy_make_dataset(*args, **kwargs):
        pipelines.append(kwargs)
        return real_make_dataset(*args, **kwargs)

    monkeypatch.setattr(fer_keras.training.builder, "make_dataset", spy_make_dataset)
    assert bench.main(["baseline_aug", "--model-only", "--precision", "float32",
                       "mixed_bfloat16", "--no-litert", "--steps", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Per precision: fit's pipeline (shuffled, augmented), then the network alone.
    assert [(kwargs["shuffle"], kwargs["augmentation"] is None) for kwargs in pipelines] \
        == [(True, False), (False, True)] * 2
    [row] = report["results"]
    alone = row["model_train_images_per_second_by_precision"]
    assert set(alone) == {"float32", "mixed_bfloat16"}
    assert all(math.isfinite(value) and value > 0 for value in alone.values())
    assert "without augmentation" in report["method"]["network alone"]
    header, [cells] = benchmarks.table_rows(report["results"])
    ratio = cells[header.index("bfloat16 speed-up, network alone")]
    assert ratio == f"{alone['mixed_bfloat16'] / alone['float32']:.2f}x"


def test_model_only_needs_training(capsys):
    assert bench.main(["baseline", "--model-only", "--serving-only"]) == 2
    assert "--serving-only" in capsys.readouterr().err


def test_rounds_take_turns_and_keep_each_precisions_median(monkeypatch, capsys):
    calls = []
    scripted = iter([100.0, 210.0, 300.0, 190.0, 110.0, 200.0])

    def fake_measure(settings, steps, seed, precision, model_only=False):
        calls.append(precision)
        return next(scripted), get_model("baseline")

    monkeypatch.setattr(benchmarks, "measure_training", fake_measure)
    assert bench.main(["baseline", "--precision", "float32", "mixed_bfloat16", "--rounds",
                       "3", "--no-litert", "--steps", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert calls == ["float32", "mixed_bfloat16"] * 3
    [row] = report["results"]
    assert row["train_images_per_second_rounds"] == {"float32": [100.0, 300.0, 110.0],
                                                     "mixed_bfloat16": [210.0, 190.0, 200.0]}
    assert row["train_images_per_second_by_precision"] == {"float32": 110.0,
                                                           "mixed_bfloat16": 200.0}
    assert "3 times under each precision" in report["method"]["rounds"]
    with pytest.raises(SystemExit):
        bench.main(["baseline", "--rounds", "0"])
    assert "--rounds: must be an integer >= 1" in capsys.readouterr().err
