"""FER2013 loading, splitting and the `tf.data` input pipeline.

Two sources are understood:

* the Kaggle CSV (`emotion,pixels,Usage`, plain or gzip-compressed), and
* the common image-folder copy (`train/<class>/*.jpg|png`, `test/<class>/*`).

Every loader returns raw uint8 pixels of shape `(N, 48, 48, 1)` and Kaggle label ids
(0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral). Models normalise
inside their own graph, so nothing here rescales pixels.

Example:

>>> from fer_keras import data
>>> splits = data.load_splits("data/fer2013.csv.gz")
>>> x, y = splits["train"]
>>> x.shape, x.dtype
((22967, 48, 48, 1), dtype('uint8'))
"""

import gzip
import hashlib
import os
import sys
import warnings
from pathlib import Path

import numpy as np

CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""Class names indexed by Kaggle label id."""

NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 48
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
USAGES = ("Training", "PublicTest", "PrivateTest")
SPLITS = ("train", "validation", "public_test", "private_test")
VALIDATION_FRACTION = 0.2
SPLIT_SEED = 1337
PROTOCOLS = {
    # protocol: (what the model trains on, the split that picks the best epoch)
    "study": ("80% of Training (stratified)", "the other 20% of Training"),
    "kaggle": ("all of Training", "PublicTest"),
}
"""The two evaluation protocols. Under both, PrivateTest is never trained or selected on.

"study" is the course study's: 22,967 training faces and a 5,742-face validation split
cut from Training. "kaggle" is the one the published FER2013 records use: all 28,709
Training faces, the best epoch picked on PublicTest, PrivateTest reported. Under "kaggle"
the "validation" split *is* PublicTest, so a run's validation and public_test scores match.
"""
DOWNLOAD_HINT = (
    "Download fer2013.csv from Kaggle's 'Challenges in Representation Learning: Facial "
    "Expression Recognition Challenge' (https://www.kaggle.com/c/challenges-in-representation-"
    "learning-facial-expression-recognition-challenge/data) and put it at "
    "data/fer2013.csv (or .csv.gz), or pass --data PATH, or set FER2013_PATH."
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """Raised for a missing or malformed FER2013 source; the message names file and row."""


def resolve_data_path(path=None):
    """Finds the FER2013 source.

    Args:
        path: an explicit path (CLI `--data`). When None, the `FER2013_PATH` environment
            variable is used, then `data/fer2013.csv` and `data/fer2013.csv.gz` in the
            working directory.

    Returns:
        A `Path` to a CSV file or an image folder.

    Raises:
        DataError: when nothing is found; the message lists every place searched.
    """
    tried = []
    if path is not None:
        candidates = [("--data", Path(path))]
    else:
        candidates = []
        env = os.environ.get("FER2013_PATH")
        if env:
            candidates.append(("FER2013_PATH", Path(env)))
        else:
            tried.append("FER2013_PATH (not set)")
        candidates += [("default", Path("data/fer2013.csv")),
                       ("default", Path("data/fer2013.csv.gz"))]
    for source, candidate in candidates:
        if candidate.exists():
            return candidate
        tried.append(f"{source} {candidate} (missing)")
    raise DataError("FER2013 not found. Looked at: " + "; ".join(tried) + ". " + DOWNLOAD_HINT)


def _cache_path(path, digest):
    root = Path(os.environ.get("FER_KERAS_CACHE", Path.home() / ".cache" / "fer_keras"))
    return root / f"{Path(path).name}.{digest[:16]}.npz"


_DIGESTS = {}


def _file_digest(path):
    # The cache and fit's data fingerprint both need the digest of a 300 MB file; it is
    # computed once per process, and again when the file is replaced or modified (as
    # Python's own .pyc check, by size and times).
    status = os.stat(path)
    key = (str(Path(path).resolve()), status.st_ino, status.st_size, status.st_mtime_ns,
           status.st_ctime_ns)
    if key not in _DIGESTS:
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                hasher.update(block)
        _DIGESTS[key] = hasher.hexdigest()
    return _DIGESTS[key]


def source_fingerprint(path):
    """A string that changes when the FER2013 source's content does.

    For a CSV it is the file's SHA-256 (the one the decoded-CSV cache is keyed by); for an
    image folder, a SHA-256 over every file's relative path and size (reading 35,000 images
    to hash them would cost more than decoding them). `fit` records it in `config.json`
    and refuses to resume an unfinished run on other data.
    """
    path = Path(path)
    if not path.is_dir():
        return "sha256:" + _file_digest(path)
    hasher = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        hasher.update(f"{file.relative_to(path).as_posix()}\0{file.stat().st_size}\n".encode())
    return "files-sha256:" + hasher.hexdigest()


def _read_bytes(path):
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"Cannot read {path}: {error}. Check that the file is a complete "
                        f"(optionally gzip-compressed) CSV. {DOWNLOAD_HINT}") from error


def _pixel_problem(field):
    """Says what is wrong with one row's pixel field, or returns None."""
    tokens = field.split()
    if len(tokens) != NUM_PIXELS:
        return f"has {len(tokens)} pixel values, expected {NUM_PIXELS} (48x48)"
    for position, token in enumerate(tokens):
        if not token.isdigit():
            return f"pixel {position} is {token!r}, not an integer"
        if int(token) > 255:
            return f"pixel {position} is {int(token)}, outside 0-255"
    return None


def parse_csv(path, skip_bad_rows=False):
    """Parses a Kaggle-format FER2013 CSV without a per-pixel Python loop.

    Args:
        path: the CSV, plain or gzip-compressed.
        skip_bad_rows: when False (default) the first malformed row raises `DataError`
            naming the file, the row (1-based line number) and the problem. When True, bad
            rows are dropped and a summary of how many and why is printed to stderr.

    Returns:
        `(images, labels, usages)`: uint8 `(N, 48, 48, 1)`, int64 `(N,)` Kaggle ids and a
        string array of Usage values. Usage defaults to "Training" when the column is absent.
    """
    images, labels, usages, _ = _parse_csv(path, skip_bad_rows)
    return images, labels, usages


def _parse_csv(path, skip_bad_rows):
    """`parse_csv`, also returning the `(line, problem)` pairs of the rows it dropped."""
    # Excel and Notepad save "UTF-8" CSVs with a byte-order mark, which would otherwise
    # become part of the first column's name.
    raw = _read_bytes(path).removeprefix(b"\xef\xbb\xbf").replace(b"\r", b"")
    lines = raw.split(b"\n")
    header = [name.strip().strip(b'"').decode("utf-8", "replace") for name in lines[0].split(b",")]
    missing = [name for name in ("emotion", "pixels") if name not in header]
    if missing:
        raise DataError(f"{path}: header {header} lacks column(s) {missing}. A FER2013 CSV "
                        f"starts with 'emotion,pixels,Usage'. {DOWNLOAD_HINT}")
    column = {name: header.index(name) for name in header}
    has_usage = "Usage" in column
    if not has_usage:
        warnings.warn(f"{path} has no Usage column; every row is treated as Training.")
    labels, usages, pixel_fields, problems = [], [], [], []
    for line_number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [field.strip().strip(b'"') for field in line.split(b",")]
        problem = None
        if len(fields) != len(header):
            problem = f"has {len(fields)} fields, expected {len(header)} ({','.join(header)})"
        else:
            label_text = fields[column["emotion"]].decode("utf-8", "replace")
            usage = fields[column["Usage"]].decode("utf-8", "replace") if has_usage else "Training"
            if not label_text.isdigit() or int(label_text) >= NUM_CLASSES:
                problem = f"emotion is {label_text!r}, expected an integer 0-6"
            elif usage not in USAGES:
                problem = f"Usage is {usage!r}, expected one of {list(USAGES)}"
            elif fields[column["pixels"]].count(b" ") != NUM_PIXELS - 1:
                problem = _pixel_problem(fields[column["pixels"]].decode("utf-8", "replace"))
        if problem is None:
            labels.append(int(label_text))
            usages.append(usage)
            pixel_fields.append(fields[column["pixels"]])
        else:
            problems.append((line_number, problem))
            if not skip_bad_rows:
                raise DataError(f"{path}, line {line_number}: {problem}. Fix or remove the "
                                "row, or pass --skip-bad-rows to drop malformed rows.")
    values = _parse_integers(b" ".join(pixel_fields))
    if values is None or values.size != len(pixel_fields) * NUM_PIXELS \
            or values.min(initial=0) < 0 or values.max(initial=0) > 255:
        # Slow path: find the rows whose tokens are not all integers 0-255.
        keep = []
        for index, field in enumerate(pixel_fields):
            problem = _pixel_problem(field.decode("utf-8", "replace"))
            if problem is None:
                keep.append(index)
                continue
            line_number = _line_number_of(lines, field)
            if not skip_bad_rows:
                raise DataError(f"{path}, line {line_number}: {problem}. Fix or remove the "
                                "row, or pass --skip-bad-rows to drop malformed rows.")
            problems.append((line_number, problem))
        pixel_fields = [pixel_fields[i] for i in keep]
        labels = [labels[i] for i in keep]
        usages = [usages[i] for i in keep]
        values = _parse_integers(b" ".join(pixel_fields))
    if problems:
        _report_skipped(path, problems)
    if not labels:
        raise DataError(f"{path} holds no valid rows.")
    images = values.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1)
    return images, np.asarray(labels, np.int64), np.asarray(usages), problems


def _parse_integers(text):
    """Space-separated integers to int32 in C; None when a token is not an integer."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return np.fromstring(text.decode("ascii", "replace"), dtype=np.int32, sep=" ")
    except ValueError:
        return None


def _line_number_of(lines, field):
    for line_number, line in enumerate(lines[1:], start=2):
        if field in line:
            return line_number
    return "?"


def _report_skipped(source, problems):
    reasons = {}
    for _, problem in problems:
        key = problem.split(" is ")[0] if " is " in problem else problem.split(",")[0]
        reasons[key] = reasons.get(key, 0) + 1
    print(f"Skipped {len(problems)} malformed row(s) of {source}:", file=sys.stderr)
    for reason, count in sorted(reasons.items()):
        print(f"  {count} x {reason}", file=sys.stderr)
    for where, problem in problems[:10]:
        print(f"  e.g. line/file {where}: {problem}", file=sys.stderr)


def _decode_image(path):
    import cv2  # Imported lazily: only the folder loader and prediction need OpenCV.

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DataError(f"{path}: unreadable image (not an image, or truncated). "
                        "Remove it or pass --skip-bad-rows.")
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
        image = cv2.resize(image, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    return image


def list_image_folder(root):
    """Lists the image-folder copy of FER2013 without decoding a file.

    The layout is `load_image_folder`'s. Listing is cheap (no image is opened), so a
    folder of a million faces can be split and streamed (`ImageFiles`).

    Args:
        root: the folder holding `train/` (and `test/`).

    Returns:
        `(paths, labels, usages)`: string `(N,)` file paths, int64 `(N,)` Kaggle ids and a
        string array of Usage values, in a stable (sorted) order.
    """
    root = Path(root)
    if not (root / "train").is_dir():
        raise DataError(f"{root} is a folder without a train/ subfolder. Expected "
                        "train/<class>/*.png|jpg (and test/<class>/*). " + DOWNLOAD_HINT)
    paths, labels, usages = [], [], []
    for part in ("train", "test"):
        part_dir = root / part
        if not part_dir.is_dir():
            continue
        for class_dir in sorted(p for p in part_dir.iterdir() if p.is_dir()):
            if class_dir.name.lower() not in CLASS_NAMES:
                raise DataError(f"{class_dir}: unknown class folder {class_dir.name!r}; "
                                f"expected one of {sorted(CLASS_NAMES)}.")
            label = CLASS_NAMES.index(class_dir.name.lower())
            for file in sorted(class_dir.iterdir()):
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                paths.append(str(file))
                labels.append(label)
                if part == "train":
                    usages.append("Training")
                elif file.name.startswith("PrivateTest"):
                    usages.append("PrivateTest")
                else:
                    usages.append("PublicTest")
    if not paths:
        raise DataError(f"{root}: no images found under train/<class>/.")
    return np.asarray(paths), np.asarray(labels, np.int64), np.asarray(usages)


class ImageFiles:
    """Image files that decode when indexed: a streamed stand-in for a uint8 image array.

    `files[indices]` decodes those files (grayscale, 48x48) into a uint8
    `(len(indices), 48, 48, 1)` array; `len(files)` is the number of files. The input
    pipeline (`fer_keras.pipeline.ArrayBatches`) indexes one batch at a time, so only a
    batch of faces is in memory at once.

    Args:
        paths: the file paths (e.g. from `list_image_folder`).
        skip_bad_rows: decode an unreadable file as a black face (counted in
            `self.unreadable`) instead of raising `DataError`.
    """

    def __init__(self, paths, skip_bad_rows=False):
        self.paths = np.asarray(paths)
        self.skip_bad_rows = skip_bad_rows
        self.unreadable = 0

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, indices):
        if isinstance(indices, slice):
            return ImageFiles(self.paths[indices], self.skip_bad_rows)
        batch = np.zeros((len(indices), IMAGE_SIZE, IMAGE_SIZE, 1), np.uint8)
        for slot, path in enumerate(self.paths[np.asarray(indices)]):
            try:
                batch[slot, ..., 0] = _decode_image(path)
            except DataError:
                if not self.skip_bad_rows:
                    raise
                self.unreadable += 1
        return batch

    def subset(self, rows):
        """The files at `rows` (an index array), still undecoded."""
        return ImageFiles(self.paths[rows], self.skip_bad_rows)


def load_image_folder(root, skip_bad_rows=False):
    """Loads the image-folder copy of FER2013.

    Expects `root/train/<class>/*` and optionally `root/test/<class>/*`, with class folders
    named angry, disgust, fear, happy, neutral, sad, surprise. Files in `test/` whose names
    start with "PrivateTest" become PrivateTest; the rest of `test/` is PublicTest.

    Args:
        root: the folder holding `train/` (and `test/`).
        skip_bad_rows: drop unreadable images (printing a summary) instead of raising.

    Returns:
        `(images, labels, usages)` as `parse_csv` returns them.
    """
    paths, all_labels, all_usages = list_image_folder(root)
    images, keep, problems = [], [], []
    for index, file in enumerate(paths):
        try:
            images.append(_decode_image(file))
        except DataError as error:
            if not skip_bad_rows:
                raise
            problems.append((str(file), str(error).split(": ", 1)[1]))
            continue
        keep.append(index)
    if problems:
        _report_skipped(root, problems)
    if not images:
        raise DataError(f"{root}: no readable images under train/<class>/.")
    stacked = np.stack(images).astype(np.uint8)[..., None]
    return stacked, all_labels[keep], all_usages[keep]


def load_fer2013(path=None, skip_bad_rows=False, use_cache=True):
    """Loads FER2013 from a CSV or an image folder, caching decoded CSVs on disk.

    The cache (`~/.cache/fer_keras`, or `FER_KERAS_CACHE`) is keyed by the SHA-256 of the
    source file, so an edited file is parsed again. It also records whether malformed rows
    were dropped: a file cached by a `skip_bad_rows=True` run is parsed again without it,
    so its first bad row raises as it would without a cache.

    Args:
        path: CSV or folder; None resolves it as `resolve_data_path` does.
        skip_bad_rows: see `parse_csv`.
        use_cache: read and write the decoded-array cache.

    Returns:
        `(images, labels, usages)`.
    """
    path = resolve_data_path(path)
    if path.is_dir():
        return load_image_folder(path, skip_bad_rows=skip_bad_rows)
    cache = None
    if use_cache:
        cache = _cache_path(path, _file_digest(path))
        if cache.exists():
            try:
                with np.load(cache) as stored:
                    # Caches from before `skipped_rows` was stored are rebuilt, since they
                    # may come from a --skip-bad-rows run.
                    skipped = int(stored["skipped_rows"])
                    if skip_bad_rows or skipped == 0:
                        if skipped:
                            print(f"Skipped {skipped} malformed row(s) of {path} (from the "
                                  f"decoded cache {cache}).", file=sys.stderr)
                        return stored["images"], stored["labels"], stored["usages"].astype(str)
            except (OSError, ValueError, KeyError):
                pass  # A damaged or older cache is rebuilt below.
    images, labels, usages, problems = _parse_csv(path, skip_bad_rows)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_suffix(".tmp.npz")
            np.savez(partial, images=images, labels=labels, usages=usages,
                     skipped_rows=len(problems))
            partial.replace(cache)
        except OSError:
            pass  # Caching is an optimisation; a read-only home must not stop training.
    return images, labels, usages


def split_training(labels, validation_fraction=VALIDATION_FRACTION, seed=SPLIT_SEED):
    """Stratified split of the Training rows into train / validation indices.

    With the full 28,709 Training rows this gives the study's 22,967 / 5,742.
    """
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    train, validation = train_test_split(indices, test_size=validation_fraction,
                                         random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(validation)


def check_protocol(protocol):
    """Raises a `ValueError` naming the valid protocols unless `protocol` is one."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol. Use one of {', '.join(PROTOCOLS)}. "
                         f"Received: protocol={protocol!r}")
    return protocol


def split_indices(labels, usages, protocol="study", seed=SPLIT_SEED):
    """Row indices of the four named splits under `protocol` (see `PROTOCOLS`).

    Args:
        labels: int `(N,)` label ids of the whole source.
        usages: string `(N,)` Usage values.
        protocol: "study" or "kaggle".
        seed: seed of the study protocol's stratified train/validation split.

    Returns:
        dict mapping "train", "validation", "public_test", "private_test" to sorted row
        indices. Under "kaggle", "validation" and "public_test" are the same rows.
    """
    check_protocol(protocol)
    training = np.flatnonzero(usages == "Training")
    public_test = np.flatnonzero(usages == "PublicTest")
    private_test = np.flatnonzero(usages == "PrivateTest")
    if protocol == "kaggle":
        if not len(training) or not len(public_test):
            raise DataError("The kaggle protocol needs Training rows to train on and "
                            f"PublicTest rows to select on; this source has {len(training)} "
                            f"and {len(public_test)}. Use --protocol study instead.")
        return {"train": training, "validation": public_test, "public_test": public_test,
                "private_test": private_test}
    if len(training) < 2:
        raise DataError("FER2013 source has fewer than 2 Training rows; cannot split.")
    train_idx, val_idx = split_training(labels[training], seed=seed)
    return {"train": training[train_idx], "validation": training[val_idx],
            "public_test": public_test, "private_test": private_test}


def load_splits(path=None, skip_bad_rows=False, limit=None, seed=SPLIT_SEED, protocol="study",
                stream=False):
    """Loads FER2013 and returns the four named splits.

    Args:
        path: CSV or folder (see `resolve_data_path`).
        skip_bad_rows: see `parse_csv`.
        limit: keep at most this many rows of each split (a quick run on a slice).
        seed: seed of the stratified train/validation split.
        protocol: "study" (default) or "kaggle"; see `PROTOCOLS`.
        stream: for an image folder, list the files only: each split's `x` is then an
            `ImageFiles` that decodes a batch at a time (see `fer_keras.pipeline`).

    Returns:
        dict mapping "train", "validation", "public_test", "private_test" to `(x, y)`.
    """
    check_protocol(protocol)
    if stream:
        path = resolve_data_path(path)
        if not path.is_dir():
            raise ValueError(f"--stream reads an image folder (train/<class>/*); a CSV is "
                             f"parsed into memory anyway. Drop --stream, or pass a folder. "
                             f"Received: data={str(path)!r}")
        paths, labels, usages = list_image_folder(path)
        images = ImageFiles(paths, skip_bad_rows=skip_bad_rows)
        index = split_indices(labels, usages, protocol=protocol, seed=seed)
        return {name: (images.subset(rows[:limit] if limit is not None else rows),
                       labels[rows[:limit] if limit is not None else rows])
                for name, rows in index.items()}
    images, labels, usages = load_fer2013(path, skip_bad_rows=skip_bad_rows)
    index = split_indices(labels, usages, protocol=protocol, seed=seed)
    splits = {}
    for name, rows in index.items():
        if limit is not None:
            rows = rows[:limit]
        splits[name] = (images[rows], labels[rows])
    return splits


PIPELINES = ("tf.data", "numpy")
"""Input pipelines: `tf.data` (TensorFlow backend, in-memory arrays) and "numpy", the
`keras.utils.PyDataset` of `fer_keras.pipeline` that needs no TensorFlow."""


def default_pipeline(images=None):
    """"tf.data" on the TensorFlow backend for in-memory arrays, else "numpy"."""
    import keras

    if keras.backend.backend() == "tensorflow" and (images is None
                                                    or isinstance(images, np.ndarray)):
        return "tf.data"
    return "numpy"


def make_dataset(images, labels, batch_size=128, shuffle=False, augmentation=None, seed=None,
                 one_hot=True, cache=True, pipeline=None, workers=None, drop_remainder=False):
    """Builds the input pipeline used by fit, tune and bench.

    Batches first and augments whole batches (one vectorised affine warp per batch), which
    is far cheaper on CPU than a per-image map. On the TensorFlow backend this is `tf.data`;
    on JAX and PyTorch, and for streamed `ImageFiles`, it is
    `fer_keras.pipeline.ArrayBatches` (a `keras.utils.PyDataset`, no TensorFlow needed).

    Args:
        images: uint8 `(N, 48, 48, 1)`, or `ImageFiles` to stream from disk.
        labels: int `(N,)` Kaggle ids.
        batch_size: batch size.
        shuffle: reshuffle every epoch.
        augmentation: a callable on a float32 batch (e.g. `StudyAugmentation()`), or None.
        seed: shuffle seed.
        one_hot: yield one-hot float targets (needed for label smoothing) instead of ids.
        cache: cache the un-augmented batches in memory (`tf.data` only).
        pipeline: "tf.data" or "numpy" (see `PIPELINES`); None picks
            `default_pipeline(images)`.
        workers: threads of the "numpy" pipeline; None means 1 for arrays (2 with
            augmentation) and 4 for `ImageFiles` (decoding releases the GIL).
        drop_remainder: leave out the last, partial batch (distributed training splits
            only full batches evenly across replicas).

    Returns:
        A `tf.data.Dataset` or a `keras.utils.PyDataset` of `(float32 images 0-255,
        targets)`.
    """
    pipeline = pipeline or default_pipeline(images)
    if pipeline not in PIPELINES:
        raise ValueError(f"Unknown input pipeline. Use one of {PIPELINES}. "
                         f"Received: pipeline={pipeline!r}")
    if pipeline == "numpy" or not isinstance(images, np.ndarray):
        from fer_keras.pipeline import ArrayBatches

        if workers is None:
            # A second thread keeps the NumPy warp off the training step's critical path;
            # decoding files needs more.
            workers = 4 if not isinstance(images, np.ndarray) else 2 if augmentation else 1
        return ArrayBatches(images, labels, batch_size, shuffle=shuffle,
                            augmentation=augmentation, seed=seed, one_hot=one_hot,
                            workers=workers, drop_remainder=drop_remainder)
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder,
                            num_parallel_calls=autotune)

    def to_float(x, y):
        y = tf.one_hot(y, NUM_CLASSES) if one_hot else y
        return tf.cast(x, tf.float32), y

    dataset = dataset.map(to_float, num_parallel_calls=autotune)
    if cache and not shuffle:
        dataset = dataset.cache()
    if augmentation is not None:
        dataset = dataset.map(lambda x, y: (augmentation(x, training=True), y),
                              num_parallel_calls=autotune)
    return dataset.prefetch(autotune)
