"""Any backend, several devices, several workers (issue 11).

The backend and distribution runs are subprocesses: the Keras backend is fixed when Keras
is imported, and TensorFlow's devices and collectives when TensorFlow starts. They train
on a small slice of the real FER2013 when it is present (written to `tmp_path`, never to
the repository), else on random pixels.
"""

import csv
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, random_rows, write_csv

from fer_keras.data import sources as fer_data
from fer_keras.data.augmentation import Augmentation, warp_bilinear
from fer_keras.data.pipeline import ArrayBatches
from fer_keras.training import loop

SUBPROCESS_TIMEOUT = 300
LOSS_TOLERANCE = 1e-3
"""Largest difference in an epoch's training loss between a distributed run and a
single-device run on the same data, seed and global batch. They compute the same sums in
another order (float32 all-reduce), so they agree to about 1e-6 here."""


@pytest.fixture(scope="module")
def slice_csv(tmp_path_factory):
    """A 200-row FER2013 CSV (160 Training, 20 PublicTest, 20 PrivateTest): real rows
    when the shared file is present, else random pixels."""
    path = tmp_path_factory.mktemp("slice") / "slice.csv"
    real = Path(os.environ.get("FER2013_PATH", REPO.parent / "shared/data/fer2013.csv.gz"))
    if not real.exists():
        rows = random_rows(160, seed=1) + random_rows(20, seed=2, usages=("PublicTest",)) \
            + random_rows(20, seed=3, usages=("PrivateTest",))
        return write_csv(path, rows)
    images, labels, usages = fer_data.load_fer2013(real, use_cache=False)
    rows = []
    for usage, count in (("Training", 160), ("PublicTest", 20), ("PrivateTest", 20)):
        for index in np.flatnonzero(usages == usage)[:count]:
            rows.append((int(labels[index]), " ".join(map(str, images[index].ravel())), usage))
    return write_csv(path, rows)


def _run(args, env=None, cwd=None):
    full_env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    full_env.update(env or {})
    return subprocess.run([sys.executable, *args], env=full_env, cwd=cwd, text=True,
                          capture_output=True, timeout=SUBPROCESS_TIMEOUT)


def _losses(run_dir):
    with open(Path(run_dir) / "history.csv", newline="") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- The NumPy input pipeline -------------------------------------------------------------

@pytest.mark.parametrize("policy", ["study", "combined"])
def test_numpy_warp_matches_tensorflows(policy):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 48, 48, 1)).astype("float32")
    matrices = Augmentation(policy).matrices_numpy(32, 48, 48, rng)
    expected = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=matrices[:, :8].astype("float32"), output_shape=[48, 48],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT").numpy()
    np.testing.assert_allclose(warp_bilinear(images, matrices), expected, atol=1e-3)
    assert not np.allclose(expected, images)


def test_array_batches_reproducible_reshuffled_and_complete():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1) * np.ones((1, 48, 48, 1), np.uint8)
    labels = np.arange(10) % 7

    def epoch(batches):
        return [batches[i] for i in range(len(batches))]

    first = ArrayBatches(images, labels, 4, shuffle=True, seed=3,
                         augmentation=Augmentation("combined"))
    again = ArrayBatches(images, labels, 4, shuffle=True, seed=3,
                         augmentation=Augmentation("combined"))
    one, two = epoch(first), epoch(again)
    assert len(one) == 3 and one[-1][0].shape == (2, 48, 48, 1)
    for (x1, y1), (x2, y2) in zip(one, two):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    order = np.concatenate([np.argmax(y, axis=1) for _, y in one])
    first.on_epoch_end()
    reshuffled = np.concatenate([np.argmax(y, axis=1) for _, y in epoch(first)])
    assert sorted(order) == sorted(labels) and not np.array_equal(order, reshuffled)
    plain = ArrayBatches(images, labels, 4, drop_remainder=True)
    assert len(plain) == 2 and list(np.argmax(plain[1][1], axis=1)) == list(labels[4:8])


def test_make_dataset_picks_the_pipeline_by_backend_and_source(tmp_path):
    import keras
    import tensorflow as tf

    images = np.zeros((6, 48, 48, 1), np.uint8)
    labels = np.arange(6) % 7
    assert keras.backend.backend() == "tensorflow"
    assert isinstance(fer_data.make_dataset(images, labels, 4), tf.data.Dataset)
    numpy_batches = fer_data.make_dataset(images, labels, 4, pipeline="numpy")
    assert isinstance(numpy_batches, ArrayBatches)
    x, y = numpy_batches[0]
    assert x.shape == (4, 48, 48, 1) and x.dtype == np.float32 and y.shape == (4, 7)
    with pytest.raises(ValueError, match="pipeline"):
        fer_data.make_dataset(images, labels, 4, pipeline="torch.utils.data")


# --- Any backend --------------------------------------------------------------------------

BACKEND_SCRIPT = """
import sys
from fer_keras import evaluate, export, fit, predict
data, out, face = sys.argv[1:4]
assert fit.main(["baseline_aug", "--data", data, "--epochs", "1", "--batch-size", "64",
                 "--output-dir", out, "--verbose", "0"]) == 0
assert evaluate.main([out + "/model.keras", "--data", data, "--json"]) == 0
assert predict.main([face, "--model", out, "--no-detect"]) == 0
print("export status", export.main([out, "--no-tflite"]))
"""

IMPORT_SCRIPT = """
import sys
from fer_keras import evaluate, fit, predict, tune
from fer_keras.data import augmentation
from fer_keras.training import distribute
from fer_keras.data import pipeline
for command in (evaluate, fit, predict, tune):
    command.build_parser()
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_fit_evaluate_predict_without_tensorflow(backend, slice_csv, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed: pip install -e '.[{backend}]'")
    import cv2

    # A `tensorflow` package that fails to import stands in for an install without it.
    hidden = tmp_path / "no_tensorflow" / "tensorflow"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(
        "raise ModuleNotFoundError('tensorflow is hidden by this test', name='tensorflow')\n")
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.random.default_rng(0).integers(0, 256, (48, 48), np.uint8))
    out = tmp_path / "run"
    result = _run(["-c", BACKEND_SCRIPT, str(slice_csv), str(out), str(face)],
                  env={"KERAS_BACKEND": backend,
                       "PYTHONPATH": f"{hidden.parent}{os.pathsep}{REPO}",
                       "FER_KERAS_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == backend and metrics["splits"]["validation"]["count"] == 32
    assert json.loads((out / "config.json").read_text())["backend"] == backend
    assert '"accuracy"' in result.stdout and '"label"' in result.stdout
    assert f"keras {backend}" in result.stderr + result.stdout
    assert "export status 2" in result.stdout
    assert 'pip install -e ".[cpu]"' in result.stderr


def test_no_module_imports_tensorflow_on_other_backends():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed: pip install -e '.[jax]'")
    # With TensorFlow installed, importing the commands and building their parsers on
    # JAX must not load it (a .[jax] install has none).
    result = _run(["-c", IMPORT_SCRIPT], env={"KERAS_BACKEND": "jax"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tensorflow imported: False" in result.stdout


# --- Several devices, several workers -----------------------------------------------------

def test_mirrored_on_two_logical_cpus_matches_one_device(slice_csv, tmp_path):

    mirrored = _run(["-m", "fer_keras.fit", "baseline", "--data", str(slice_csv), "--epochs",
                     "1", "--batch-size", "32", "--verbose", "0", "--output-dir",
                     str(tmp_path / "mirrored"), "--distribute", "mirrored", "--cpu-devices",
                     "2"], env={"TF_ENABLE_ONEDNN_OPTS": "0",
                                "FER_KERAS_CACHE": str(tmp_path / "cache")})
    assert mirrored.returncode == 0, mirrored.stderr[-3000:]
    loop.train("baseline", data=slice_csv, output_dir=tmp_path / "single", verbose=0,
              overrides={"epochs": 1, "batch_size": 32})
    config = json.loads((tmp_path / "mirrored" / "config.json").read_text())
    assert config["distribute"] == "mirrored" and config["replicas"] == 2
    np.testing.assert_allclose(_losses(tmp_path / "mirrored"), _losses(tmp_path / "single"),
                               atol=LOSS_TOLERANCE)


JAX_PARALLEL_SCRIPT = """
import sys
from fer_keras.training import loop
data, out = sys.argv[1:3]
try:
    loop.train("baseline", data=data, output_dir=out + "/refused", distribute="multi-worker")
except ValueError as error:
    print("refused:", error)
common = dict(data=data, verbose=0, overrides={"epochs": 1, "batch_size": 32})
loop.train("baseline", output_dir=out + "/parallel", distribute="mirrored", cpu_devices=2,
          **common)
loop.train("baseline", output_dir=out + "/single", **common)
"""


def test_jax_data_parallel_on_two_cpu_devices_matches_one_device(slice_csv, tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed: pip install -e '.[jax]'")
    result = _run(["-c", JAX_PARALLEL_SCRIPT, str(slice_csv), str(tmp_path)],
                  env={"KERAS_BACKEND": "jax", "FER_KERAS_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "refused: --distribute multi-worker runs on TensorFlow" in result.stdout
    assert not (tmp_path / "refused").exists()
    config = json.loads((tmp_path / "parallel" / "config.json").read_text())
    assert config["backend"] == "jax" and config["replicas"] == 2
    np.testing.assert_allclose(_losses(tmp_path / "parallel"), _losses(tmp_path / "single"),
                               atol=LOSS_TOLERANCE)


def test_two_workers_on_loopback_train_one_model(slice_csv, tmp_path):

    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    out = tmp_path / "run"
    args = [sys.executable, "-m", "fer_keras.fit", "baseline", "--data", str(slice_csv),
            "--epochs", "2", "--batch-size", "32", "--verbose", "0", "--output-dir",
            str(out), "--distribute", "multi-worker"]
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=tf_config, FER_KERAS_CACHE=str(tmp_path / "cache"))
        workers.append(subprocess.Popen(args, env=env, text=True, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE))
    try:
        outputs = [worker.communicate(timeout=SUBPROCESS_TIMEOUT) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    # The chief wrote the run folder; the other worker left nothing behind.
    assert (out / "metrics.json").is_file() and (out / "model.keras").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("run")) == ["run"]
    assert json.loads((out / "config.json").read_text())["replicas"] == 2
    loop.train("baseline", data=slice_csv, output_dir=tmp_path / "single", verbose=0,
              overrides={"epochs": 2, "batch_size": 32})
    np.testing.assert_allclose(_losses(out), _losses(tmp_path / "single"), atol=LOSS_TOLERANCE)


def test_distribute_refusals(slice_csv, tmp_path, monkeypatch):

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        loop.train("baseline", data=slice_csv, output_dir=tmp_path / "a",
                  distribute="multi-worker")
    with pytest.raises(ValueError, match="Unknown distribution"):
        loop.train("baseline", data=slice_csv, output_dir=tmp_path / "b", distribute="ring")
    with pytest.raises(ValueError, match="--stream reads an image folder"):
        loop.train("baseline", data=slice_csv, output_dir=tmp_path / "c", stream=True)
    # Split CPU devices break TensorFlow's oneDNN convolutions under MirroredStrategy.
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    with pytest.raises(ValueError, match="TF_ENABLE_ONEDNN_OPTS=0"):
        loop.train("baseline", data=slice_csv, output_dir=tmp_path / "d",
                  distribute="mirrored", cpu_devices=2)
    assert not any(tmp_path.glob("[abcd]*"))


# --- Streaming an image folder ------------------------------------------------------------

@pytest.fixture
def face_folder(tmp_path):
    """An image folder in the Kaggle layout: 5 random faces per class in train/, 2 in test/."""
    import cv2

    rng = np.random.default_rng(5)
    root = tmp_path / "faces"
    for name in fer_data.CLASS_NAMES:
        for part, files in (("train", [f"Training_{index}" for index in range(5)]),
                            ("test", ["PublicTest_0", "PrivateTest_0"])):
            (root / part / name).mkdir(parents=True)
            for stem in files:
                cv2.imwrite(str(root / part / name / f"{stem}.png"),
                            rng.integers(0, 256, (48, 48), np.uint8))
    return root


def test_streamed_splits_decode_to_the_in_memory_ones(face_folder):
    loaded = fer_data.load_splits(face_folder)
    streamed = fer_data.load_splits(face_folder, stream=True)
    for name, (images, labels) in loaded.items():
        files, streamed_labels = streamed[name]
        assert isinstance(files, fer_data.ImageFiles) and len(files) == len(images)
        np.testing.assert_array_equal(streamed_labels, labels)
        np.testing.assert_array_equal(files[np.arange(len(files))], images)
    batches = fer_data.make_dataset(*streamed["train"], batch_size=8)
    assert isinstance(batches, ArrayBatches) and batches[0][0].shape == (8, 48, 48, 1)


def test_fit_streams_an_image_folder(face_folder, tmp_path):

    metrics = loop.train("baseline_aug", data=face_folder, output_dir=tmp_path / "run",
                        verbose=0, stream=True, overrides={"epochs": 1, "batch_size": 8})
    assert metrics["splits"]["validation"]["count"] == 7
    assert metrics["splits"]["private_test"]["count"] == 7
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["stream"] is True and config["data_fingerprint"].startswith("files-sha256:")


# --- bench --backend and --stream-folder --------------------------------------------------

def test_bench_backend_rows_and_missing_backends(monkeypatch):
    from fer_keras.benchmarks import throughput

    row = throughput.measure_backend("baseline", steps=1)
    assert row["backend"] == "tensorflow" and row["pipeline"] == "tf.data"
    assert row["train_images_per_second"] > 0 and "tensorflow" in row["versions"]
    monkeypatch.setattr(throughput.importlib.util, "find_spec", lambda name: None)
    rows = throughput.compare_backends("baseline", ["jax", "torch"], steps=1)
    assert [r["backend"] for r in rows] == ["jax", "torch"]
    assert all("not installed" in r["error"] for r in rows)
    table = throughput.format_backends([row] + rows)
    assert "tf.data" in table and "pip install -e '.[torch]'" in table
    with pytest.raises(ValueError, match="Unknown backend"):
        throughput.compare_backends("baseline", ["mxnet"])


def test_bench_stream_folder_writes_and_compares_both_paths(tiny_csv, tmp_path):
    from fer_keras.benchmarks import throughput

    folder = tmp_path / "folder"
    assert throughput.write_image_folder(tiny_csv, folder) == 140
    images, labels, usages = fer_data.load_image_folder(folder)
    assert images.shape == (140, 48, 48, 1) and (usages == "PrivateTest").sum() == 28
    result = throughput.compare_pipelines(folder, "baseline_aug", batches=2, train_steps=1,
                                          batch_size=8)
    assert result["images"] == 140
    for path in ("in_memory", "streamed"):
        assert result[path]["pipeline_images_per_second"] > 0
        assert result[path]["train_images_per_second"] > 0
    assert "streamed" in throughput.format_pipelines(result)
