import gzip
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "fer2013.csv.gz"


@pytest.fixture(autouse=True)
def seed():
    """Every test starts from the same Python, NumPy and backend seeds."""
    import keras

    keras.utils.set_random_seed(1234)
    return 1234


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Decoded-CSV caches of tiny test files go to the test's own folder."""
    if "FER_KERAS_TEST_SHARED_CACHE" not in os.environ:
        monkeypatch.setenv("FER_KERAS_CACHE", str(tmp_path / "cache"))


def write_csv(path, rows, header="emotion,pixels,Usage", compress=False):
    """Writes Kaggle-format rows `(label, pixels_string, usage)` to `path`."""
    text = header + "\n" + "".join(f"{label},{pixels},{usage}\n" for label, pixels, usage in rows)
    if compress:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def random_rows(count, seed=0, usages=("Training",)):
    """Random-pixel rows in the Kaggle format: every class present, cycling usages."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        pixels = " ".join(map(str, rng.integers(0, 256, 48 * 48)))
        rows.append((index % 7, pixels, usages[index % len(usages)]))
    return rows


@pytest.fixture
def tiny_csv(tmp_path):
    """A 140-row synthetic FER2013 CSV with all three usages."""
    rows = random_rows(84, seed=1) + random_rows(28, seed=2, usages=("PublicTest",)) + \
        random_rows(28, seed=3, usages=("PrivateTest",))
    return write_csv(tmp_path / "fer2013.csv", rows)


@pytest.fixture
def real_data():
    """The shared FER2013 file (FER2013_PATH or ../shared/data); skips when absent."""
    path = Path(os.environ.get("FER2013_PATH", SHARED_DATA))
    if not path.exists():
        pytest.skip(f"real FER2013 not found at {path}; set FER2013_PATH to run this test")
    return path
