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

import contextlib
import gzip
import hashlib
import os
import stat
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np

from fer_keras.data.labels import FER2013
from fer_keras.data.protocols import PROTOCOLS as PROTOCOL_RECORDS
from fer_keras.data.protocols import get_protocol
from fer_keras.utils.files import write_atomically

CLASS_NAMES = FER2013.class_names
"""Class names indexed by Kaggle label id (FER2013's label set, `fer_keras.data.labels`)."""

NUM_CLASSES = FER2013.num_classes
IMAGE_SIZE = 48
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
USAGES = ("Training", "PublicTest", "PrivateTest")
SPLITS = ("train", "validation", "public_test", "private_test")
VALIDATION_FRACTION = 0.2
SPLIT_SEED = 1337
PROTOCOLS = {name: (protocol.trains_on, protocol.selects_on)
             for name, protocol in PROTOCOL_RECORDS.items()}
"""The protocols' words (what the model trains on, the split that picks the best epoch),
by name; the records themselves are `fer_keras.data.protocols.PROTOCOLS`."""
DOWNLOAD_HINT = (
    "Download fer2013.csv from Kaggle's 'Challenges in Representation Learning: Facial "
    "Expression Recognition Challenge' (https://www.kaggle.com/c/challenges-in-representation-"
    "learning-facial-expression-recognition-challenge/data) and put it at "
    "data/fer2013.csv (or .csv.gz), or pass --data PATH, or set FER2013_PATH."
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MAX_LINE_BYTES = 64 * 1024
"""The longest CSV line read. A FER2013 row is at most about 9,250 bytes (2,304 pixel values
of up to three digits); a longer line is refused without being read into memory whole."""
QUOTE_CHARS = 80
"""At most this many characters of a bad value are quoted in an error message."""
_ROWS_PER_CHUNK = 1024
_UTF8_BOM = b"\xef\xbb\xbf"
_PIXEL_BYTES = b"0123456789 "


class DataError(ValueError):
    """Raised for a missing or malformed FER2013 source; the message names file and row."""


def _file_kind(mode):
    """What a non-regular `stat` mode is, in words ("a named pipe (FIFO)")."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refuse_special_file(path, source="--data"):
    """Raises `DataError` unless `path` is a regular file or a folder.

    Reading a device, a FIFO or a socket can block or never end (`/dev/zero`), so they
    are refused before anything is opened.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # Gone or unreadable: the reader that opens it names the problem.
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DataError(f"{source} {path} is {_file_kind(mode)}, not a file or folder. FER2013 "
                        "is read from a CSV file (plain or .gz) or an image folder; pass "
                        "--data PATH to one.")


def resolve_data_path(path: "str | os.PathLike | None" = None,
                      recorded: "tuple[str, str] | None" = None) -> Path:
    """Finds the FER2013 source.

    Args:
        path: an explicit path (CLI `--data`). When None, the `FER2013_PATH` environment
            variable is used, then `recorded`, then `data/fer2013.csv` and
            `data/fer2013.csv.gz` in the working directory.
        recorded: `(where, path)`: the data a run was trained on, as its `config.json`
            records it (`where` names that file in messages), or None.

    Returns:
        A `Path` to a regular file (the CSV) or an image folder.

    Raises:
        DataError: when nothing is found (the message lists every place searched), or
            when the path found is a device, a FIFO or a socket.
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
        if recorded is not None and recorded[1]:
            candidates.append((f"the data recorded in {recorded[0]}:", Path(recorded[1])))
        candidates += [("default", Path("data/fer2013.csv")),
                       ("default", Path("data/fer2013.csv.gz"))]
    for source, candidate in candidates:
        if candidate.exists():
            _refuse_special_file(candidate, source)
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


def source_fingerprint(path: "str | os.PathLike") -> str:
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


def _quote(raw, limit=QUOTE_CHARS):
    """`repr` of a bytes value for an error message, cut to `limit` characters."""
    text = raw[:4 * limit].decode("utf-8", "replace")
    if len(text) <= limit and len(raw) <= 4 * limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(raw):,} bytes)"


def _number(digits):
    """An ASCII digit string for a message, without leading zeros and cut when very long."""
    digits = digits.lstrip(b"0") or b"0"
    if len(digits) <= 40:
        return digits.decode("ascii")
    return f"{digits[:20].decode('ascii')}... ({len(digits):,} digits)"


def _csv_lines(path):
    """Yields `(line_number, line)` of a CSV, plain or gzip, without its line ending.

    A line is read with at most `MAX_LINE_BYTES + 1` bytes, so a file without newlines is
    never held in memory whole: a longer line is yielded as `(line_number, None)`, and the
    rest of it is skipped only if the caller asks for the next line.
    """
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise DataError(f"{path} is {_file_kind(mode)}, not a CSV file. Pass --data the "
                            f"FER2013 CSV (plain or .gz) or an image folder.")
        with open(path, "rb") as handle:
            compressed = handle.read(2) == b"\x1f\x8b"
        with (gzip.open if compressed else open)(path, "rb") as handle:
            line_number = 0
            while line := handle.readline(MAX_LINE_BYTES + 1):
                line_number += 1
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    yield line_number, None
                    while line and not line.endswith(b"\n"):
                        line = handle.readline(MAX_LINE_BYTES + 1)
                    continue
                if line_number == 1:
                    # Excel and Notepad save "UTF-8" CSVs with a byte-order mark, which
                    # would otherwise become part of the first column's name.
                    line = line.removeprefix(_UTF8_BOM)
                yield line_number, line.replace(b"\r", b"").removesuffix(b"\n")
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"Cannot read {path}: {error}. Check that the file is a complete "
                        f"(optionally gzip-compressed) CSV. {DOWNLOAD_HINT}") from error


def _is_label(text):
    # bytes.isdigit() accepts ASCII digits only; str.isdigit() would accept "²", which
    # int() then refuses.
    return text.isdigit() and len(text.lstrip(b"0")) <= 1 and int(text) < NUM_CLASSES


def _fast_pixels(text, count):
    """Decodes `count` rows of space-separated pixel values in C.

    Returns a uint8 `(count, 2304)` array, or None when any value is not a plain integer
    0-255 written in ASCII digits (the caller then judges each row with `_slow_pixels`).
    """
    if not text or text.translate(None, _PIXEL_BYTES):
        return None
    try:
        values = np.fromstring(text, dtype=np.int32, sep=" ")
    except ValueError:
        return None
    if values.size != count * NUM_PIXELS or values.min() < 0 or values.max() > 255:
        return None
    # The int32 parse wraps silently: 4294967301 (2**32 + 5) reads as 5. A value in 0-255
    # spelled without leading zeros has 1-3 digits, so when the text holds more digits than
    # the values' shortest spellings, some value was longer (wrapped, or zero-padded) and
    # the exact check of `_slow_pixels` decides.
    digits = len(text) - text.count(b" ")
    if digits != values.size + np.count_nonzero(values >= 10) + np.count_nonzero(values >= 100):
        return None
    return values.astype(np.uint8).reshape(count, NUM_PIXELS)


def _slow_pixels(field):
    """Judges one row's pixel field token by token with Python integers (no overflow).

    Returns:
        `(problem, None)` naming the first bad value, or `(None, uint8 (1, 2304) array)`.
    """
    tokens = field.split()
    if len(tokens) != NUM_PIXELS:
        return f"has {len(tokens)} pixel values, expected {NUM_PIXELS} (48x48)", None
    for position, token in enumerate(tokens):
        if not token.isdigit():
            return f"pixel {position} is {_quote(token)}, not an integer (digits 0-9)", None
        if len(token.lstrip(b"0")) > 3 or int(token) > 255:
            return f"pixel {position} is {_number(token)}, outside 0-255", None
    return None, np.array([int(token) for token in tokens], np.uint8)[None]


def _decode_pixels(fields):
    """Pixel fields to uint8 rows: `(array of the good rows, [(index, problem)])`."""
    if all(field.count(b" ") == NUM_PIXELS - 1 for field in fields):
        # Exactly 2,303 spaces in each row bounds each to 2,304 values, so the total
        # count checked by `_fast_pixels` implies every row's.
        values = _fast_pixels(b" ".join(fields), len(fields))
        if values is not None:
            return values, []
    rows, bad = [], []
    for index, field in enumerate(fields):
        row = _fast_pixels(field, 1)
        if row is None:
            problem, row = _slow_pixels(field)
            if problem is not None:
                bad.append((index, problem))
                continue
        rows.append(row)
    return (np.concatenate(rows) if rows else np.zeros((0, NUM_PIXELS), np.uint8)), bad


def parse_csv(path: "str | os.PathLike", skip_bad_rows: bool = False
              ) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
    """Parses a Kaggle-format FER2013 CSV without a per-pixel Python loop.

    Lines are read one at a time and at most `MAX_LINE_BYTES` long, and a value is quoted
    in a message at most `QUOTE_CHARS` characters long, so a wrong or hostile file costs
    neither unbounded memory nor an unbounded message.

    Args:
        path: the CSV, plain or gzip-compressed (a regular file).
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
    with contextlib.closing(_csv_lines(path)) as lines:
        return _parse_lines(path, lines, skip_bad_rows)


def _parse_lines(path, lines, skip_bad_rows):
    _, header_line = next(lines, (1, b""))
    if header_line is None:
        raise DataError(f"{path}, line 1: the line is longer than {MAX_LINE_BYTES:,} bytes, "
                        "so it is not a FER2013 header ('emotion,pixels,Usage'). Check that "
                        f"the path names the FER2013 CSV. {DOWNLOAD_HINT}")
    header = [name.strip().strip(b'"').decode("utf-8", "replace")
              for name in header_line.split(b",")]
    missing = [name for name in ("emotion", "pixels") if name not in header]
    if missing:
        raise DataError(f"{path}: header {_quote(header_line)} lacks column(s) {missing}. A "
                        f"FER2013 CSV starts with 'emotion,pixels,Usage'. {DOWNLOAD_HINT}")
    emotion, pixels = header.index("emotion"), header.index("pixels")
    usage_column = header.index("Usage") if "Usage" in header else None
    if usage_column is None:
        warnings.warn(f"{path} has no Usage column; every row is treated as Training.")
    expected_fields = _quote(",".join(header).encode())
    images, labels, usages, problems = [], [], [], []
    pending = []  # (line_number, label, usage, pixel field) of rows not decoded yet

    def refuse_or_count(line_number, problem):
        problems.append((line_number, problem))
        if not skip_bad_rows:
            raise DataError(f"{path}, line {line_number}: {problem}. Fix or remove the row, "
                            "or pass --skip-bad-rows to drop malformed rows.")

    def decode_pending():
        decoded, bad = _decode_pixels([row[3] for row in pending])
        dropped = {index for index, _ in bad}
        for index, problem in bad:
            refuse_or_count(pending[index][0], problem)
        images.append(decoded)
        labels.extend(row[1] for index, row in enumerate(pending) if index not in dropped)
        usages.extend(row[2] for index, row in enumerate(pending) if index not in dropped)
        pending.clear()

    for line_number, line in lines:
        if line is None:
            problem = (f"the line is longer than {MAX_LINE_BYTES:,} bytes (a FER2013 row "
                       "has at most about 9,250)")
        elif not line.strip():
            continue
        else:
            fields = [field.strip().strip(b'"') for field in line.split(b",")]
            problem = None
            if len(fields) != len(header):
                problem = f"has {len(fields)} fields, expected {len(header)} ({expected_fields})"
            else:
                label = fields[emotion]
                usage = fields[usage_column] if usage_column is not None else b"Training"
                usage_text = usage.decode("utf-8", "replace")
                if not _is_label(label):
                    problem = f"emotion is {_quote(label)}, expected an integer 0-6"
                elif usage_text not in USAGES:
                    problem = f"Usage is {_quote(usage)}, expected one of {list(USAGES)}"
                else:
                    pending.append((line_number, int(label), usage_text, fields[pixels]))
                    if len(pending) >= _ROWS_PER_CHUNK:
                        decode_pending()
        if problem is not None:
            if not skip_bad_rows:
                decode_pending()  # An earlier row's bad pixel value is named first.
            refuse_or_count(line_number, problem)
    decode_pending()
    if problems:
        _report_skipped(path, sorted(problems))
    if not labels:
        raise DataError(f"{path} holds no valid rows.")
    images = np.concatenate(images).reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1)
    return images, np.asarray(labels, np.int64), np.asarray(usages), problems


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
    pipeline (`fer_keras.data.pipeline.ArrayBatches`) indexes one batch at a time, so only a
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


def load_image_folder(root: "str | os.PathLike", skip_bad_rows: bool = False
                      ) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
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


def _check_cached(images, labels, usages):
    """Raises `ValueError` unless the arrays are what `_parse_csv` returns."""
    count = len(labels)
    if not (count and images.dtype == np.uint8
            and images.shape == (count, IMAGE_SIZE, IMAGE_SIZE, 1)
            and labels.shape == (count,) and labels.dtype.kind in "iu"
            and usages.shape == (count,) and usages.dtype.kind == "U"):
        raise ValueError("its arrays have unexpected shapes or types")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES or not np.isin(usages, USAGES).all():
        raise ValueError("its labels or usages are out of range")


def _read_cache(cache, path, skip_bad_rows):
    """Reads the decoded-CSV cache.

    Returns:
        `(arrays, writable)`: `arrays` is `(images, labels, usages)`, or None when the CSV
        must be parsed; `writable` says whether the parse may (re)write `cache`: not when
        something other than a cache file (a folder, a link, a FIFO) sits at its path.
    """
    try:
        mode = os.lstat(cache).st_mode
    except FileNotFoundError:
        return None, True
    except OSError:
        return None, False
    if not stat.S_ISREG(mode):
        print(f"warning: {cache} is {_file_kind(mode) if not stat.S_ISLNK(mode) else 'a link'}"
              f", not a cache file; parsing {path} without the decoded-data cache.",
              file=sys.stderr)
        return None, False
    try:
        with np.load(cache, allow_pickle=False) as stored:
            images, labels = stored["images"], stored["labels"]
            usages = stored["usages"]
            # Caches from before `skipped_rows` was stored are rebuilt, since they may
            # come from a --skip-bad-rows run.
            skipped = int(stored["skipped_rows"])
        _check_cached(images, labels, usages)
    except Exception as error:  # noqa: BLE001
        # Whatever is wrong with the cache (empty, truncated, an older layout, not an
        # .npz at all), the CSV is the truth: the cache is rebuilt from it.
        reason = str(error).splitlines()[0][:QUOTE_CHARS] if str(error) else ""
        print(f"warning: the decoded-data cache {cache} is unusable "
              f"({type(error).__name__}{': ' + reason if reason else ''}); rebuilding it "
              f"from {path}.", file=sys.stderr)
        return None, True
    if skipped and not skip_bad_rows:
        return None, True
    if skipped:
        print(f"Skipped {skipped} malformed row(s) of {path} (from the decoded cache "
              f"{cache}).", file=sys.stderr)
    return (images, labels, usages.astype(str)), True


def _write_cache(cache, images, labels, usages, skipped_rows):
    """Writes the decoded-CSV cache whole or not at all (`write_atomically`: a crash leaves
    the old cache, or none, and a hidden partial file that the next write removes)."""
    def save(path):
        with open(path, "wb") as handle:  # A file object: np.savez adds no ".npz".
            np.savez(handle, images=images, labels=labels, usages=usages,
                     skipped_rows=skipped_rows)

    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cache, save)
    except OSError:
        pass  # Caching is an optimisation; a read-only home must not stop training.


def load_fer2013(path: "str | os.PathLike | None" = None, skip_bad_rows: bool = False,
                 use_cache: bool = True) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
    """Loads FER2013 from a CSV or an image folder, caching decoded CSVs on disk.

    The cache (`~/.cache/fer_keras`, or `FER_KERAS_CACHE`) is keyed by the SHA-256 of the
    source file, so an edited file is parsed again. It also records whether malformed rows
    were dropped: a file cached by a `skip_bad_rows=True` run is parsed again without it,
    so its first bad row raises as it would without a cache. A damaged cache file (empty,
    truncated, wrong arrays) is rebuilt with a warning; it is written atomically, and
    anything at its path that is not a regular file is left alone.

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
        arrays, writable = _read_cache(cache, path, skip_bad_rows)
        if arrays is not None:
            return arrays
        if not writable:
            cache = None
    images, labels, usages, problems = _parse_csv(path, skip_bad_rows)
    if cache is not None:
        _write_cache(cache, images, labels, usages, len(problems))
    return images, labels, usages


def split_training(labels, validation_fraction=VALIDATION_FRACTION, seed=SPLIT_SEED):
    """Stratified split of the Training rows into train / validation indices.

    With the full 28,709 Training rows this gives the study's 22,967 / 5,742.
    """
    # scikit-learn is heavy and only scoring needs it.
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    train, validation = train_test_split(indices, test_size=validation_fraction,
                                         random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(validation)


def check_protocol(protocol):
    """Raises a `ValueError` naming the valid protocols unless `protocol` is one."""
    return get_protocol(protocol).name


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
    if get_protocol(protocol).validation_is_public_test:
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


def load_splits(path: "str | os.PathLike | None" = None, skip_bad_rows: bool = False,
                limit: "int | None" = None, seed: int = SPLIT_SEED, protocol: str = "study",
                stream: bool = False, labels: str = "fer2013", label_mode: "str | None" = None,
                labels_file: "str | os.PathLike | None" = None
                ) -> "dict[str, tuple[np.ndarray, np.ndarray]]":
    """Loads FER2013 and returns the four named splits.

    With `labels="ferplus"` the faces carry FER+'s crowd labels instead (see
    `fer_keras.data.ferplus.ferplus_splits`, which also adds "train_targets" and
    "fer2013_private_test"); that needs the Kaggle CSV in its original row order, the
    kaggle protocol, and the votes file (`labels_file`, `$FERPLUS_PATH`, or
    `fer2013new.csv` beside the CSV).

    Args:
        path: CSV or folder (see `resolve_data_path`).
        skip_bad_rows: see `parse_csv`.
        limit: keep at most this many rows of each split (a quick run on a slice).
        seed: seed of the stratified train/validation split.
        protocol: "study" (default) or "kaggle"; see `PROTOCOLS`.
        stream: for an image folder, list the files only: each split's `x` is then an
            `ImageFiles` that decodes a batch at a time (see `fer_keras.data.pipeline`).

    Returns:
        dict mapping "train", "validation", "public_test", "private_test" to `(x, y)`.
    """
    check_protocol(protocol)
    if labels == "ferplus":
        return _load_ferplus_splits(path, skip_bad_rows, limit, protocol, stream, label_mode,
                                    labels_file)
    if labels != FER2013.name:
        raise ValueError(f"labels must be fer2013 or ferplus. Received: labels={labels!r}")
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


def labels_of(record) -> str:
    """The label set a run's `config.json` or `metrics.json` dict records ("fer2013" for
    runs from before label sets were recorded)."""
    return (record or {}).get("labels") or FER2013.name


def splits_for_run(data, record, limit=None):
    """`load_splits` as a run was scored: its protocol and its label set.

    FER+ runs get FER+'s majority labels on every split (test labels are always the
    majority rule); the votes file is the one the run recorded where it still exists,
    else found as `fer_keras.data.ferplus.find_votes` says.
    """
    labels = labels_of(record)
    if labels == FER2013.name:
        return load_splits(data, limit=limit, protocol=get_protocol(
            (record or {}).get("protocol")).name)
    recorded = (record or {}).get("labels_file")
    labels_file = recorded if recorded and Path(recorded).is_file() else None
    return load_splits(data, limit=limit, protocol=get_protocol(
        (record or {}).get("protocol")).name, labels=labels, label_mode="majority",
        labels_file=labels_file)


def _load_ferplus_splits(path, skip_bad_rows, limit, protocol, stream, label_mode,
                         labels_file):
    """`load_splits` with FER+ labels; every refusal is one line naming the fix."""
    from fer_keras.data import ferplus

    if not get_protocol(protocol).validation_is_public_test:
        raise ValueError(f"FER+ labels select on PublicTest and score PrivateTest, as FER+ "
                         f"does: use --protocol kaggle. Received: protocol={protocol!r}")
    if label_mode not in ferplus.LABEL_MODES:
        raise ValueError(f"--label-mode must be one of {', '.join(ferplus.LABEL_MODES)} with "
                         f"FER+ labels. Received: label_mode={label_mode!r}")
    path = resolve_data_path(path)
    if stream or path.is_dir():
        raise ValueError(f"FER+ votes are matched to FER2013 rows by position, so --labels "
                         f"ferplus needs the Kaggle CSV (fer2013.csv[.gz]), not an image "
                         f"folder{' or --stream' if stream else ''}. Received: data={str(path)!r}")
    if skip_bad_rows:
        raise ValueError("--skip-bad-rows would shift FER2013 rows against the FER+ votes, "
                         "which are matched by position: fix or restore the CSV instead.")
    votes_path = ferplus.find_votes(labels_file, path)
    images, fer2013_labels, usages = load_fer2013(path)
    votes = ferplus.load_votes(votes_path, usages)
    return ferplus.ferplus_splits(images, fer2013_labels, usages, votes, label_mode, limit)


PIPELINES = ("tf.data", "numpy")
"""Input pipelines: `tf.data` (TensorFlow backend, in-memory arrays) and "numpy", the
`keras.utils.PyDataset` of `fer_keras.data.pipeline` that needs no TensorFlow."""


def default_pipeline(images=None):
    """"tf.data" on the TensorFlow backend for in-memory arrays, else "numpy"."""
    # Keras loads on first use, so a command's --help and start-up stay fast.
    import keras

    if keras.backend.backend() == "tensorflow" and (images is None
                                                    or isinstance(images, np.ndarray)):
        return "tf.data"
    return "numpy"


def make_dataset(images, labels, batch_size=128, shuffle=False, augmentation=None, seed=None,
                 one_hot=True, cache=True, pipeline=None, workers=None, drop_remainder=False,
                 num_classes=NUM_CLASSES, mixing=None):
    """Builds the input pipeline used by fit, tune and bench.

    Batches first and augments whole batches (one vectorised affine warp per batch), which
    is far cheaper on CPU than a per-image map. On the TensorFlow backend this is `tf.data`;
    on JAX and PyTorch, and for streamed `ImageFiles`, it is
    `fer_keras.data.pipeline.ArrayBatches` (a `keras.utils.PyDataset`, no TensorFlow needed).

    Args:
        images: uint8 `(N, 48, 48, 1)`, or `ImageFiles` to stream from disk.
        labels: int `(N,)` label ids, or float `(N, num_classes)` target distributions
            (FER+ votes), which are passed through as they are.
        batch_size: batch size.
        shuffle: reshuffle every epoch.
        augmentation: a callable on a float32 batch (e.g. `StudyAugmentation()`), or None.
        seed: shuffle seed.
        one_hot: yield one-hot float targets (needed for label smoothing) instead of ids.
        num_classes: the width of one-hot targets (the label set's class count).
        cache: cache the un-augmented batches in memory (`tf.data` only).
        pipeline: "tf.data" or "numpy" (see `PIPELINES`); None picks
            `default_pipeline(images)`.
        workers: threads of the "numpy" pipeline; None means 1 for arrays (2 with
            augmentation) and 4 for `ImageFiles` (decoding releases the GIL).
        drop_remainder: leave out the last, partial batch (distributed training splits
            only full batches evenly across replicas).
        mixing: a `fer_keras.data.mixing.BatchMixing` applied to each augmented batch and
            its (one-hot or distribution) targets, or None.

    Returns:
        A `tf.data.Dataset` or a `keras.utils.PyDataset` of `(float32 images 0-255,
        targets)`.
    """
    pipeline = pipeline or default_pipeline(images)
    if mixing is not None and not one_hot and np.ndim(labels) != 2:
        raise ValueError("Mixing blends targets: it needs one_hot=True or distribution "
                         "targets.")
    if pipeline not in PIPELINES:
        raise ValueError(f"Unknown input pipeline. Use one of {PIPELINES}. "
                         f"Received: pipeline={pipeline!r}")
    if pipeline == "numpy" or not isinstance(images, np.ndarray):
        from fer_keras.data.pipeline import ArrayBatches

        if workers is None:
            # A second thread keeps the NumPy warp off the training step's critical path;
            # decoding files needs more.
            workers = 4 if not isinstance(images, np.ndarray) else 2 if augmentation else 1
        return ArrayBatches(images, labels, batch_size, shuffle=shuffle,
                            augmentation=augmentation, seed=seed, one_hot=one_hot,
                            workers=workers, drop_remainder=drop_remainder,
                            num_classes=num_classes, mixing=mixing)
    # TensorFlow loads on first use (and is absent on the JAX and torch extras).
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder,
                            num_parallel_calls=autotune)

    soft = np.ndim(labels) == 2

    def to_float(x, y):
        y = tf.one_hot(y, num_classes) if one_hot and not soft else y
        return tf.cast(x, tf.float32), y

    dataset = dataset.map(to_float, num_parallel_calls=autotune)
    if cache and not shuffle:
        dataset = dataset.cache()
    if augmentation is not None:
        dataset = dataset.map(lambda x, y: (augmentation(x, training=True), y),
                              num_parallel_calls=autotune)
    if mixing is not None:
        dataset = dataset.map(mixing, num_parallel_calls=autotune)
    return dataset.prefetch(autotune)
