"""FER+ crowd labels for FER2013's faces (Barsoum et al. 2016, arXiv:1608.01041).

FER+ (github.com/microsoft/FERPlus, MIT licence) asked ten people per face; its
`fer2013new.csv` has one line per row of `fer2013.csv`, in the same order:
`Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF`.
Rows are matched by position and checked (same count, the same `Usage` on every row).

Two targets, as in the paper (`LABEL_MODES`):

* `majority`: votes of 1 are dropped; a face is kept if its top count holds more than half
  of the remaining votes (unknown and not-a-face included) and is an emotion. A tie for the
  top never holds more than half, so ties are dropped.
* `probability`: the distribution over the 8 emotions of the votes left after dropping
  votes of 1; faces with no emotion vote left, or whose remaining votes are mostly unknown /
  not-a-face, are dropped.

Whatever the training mode, validation and test faces are labelled by the majority rule.

>>> votes = np.array([[6, 0, 0, 0, 0, 0, 0, 0, 4, 0],   # neutral 6 of 10
...                   [5, 5, 0, 0, 0, 0, 0, 0, 0, 0],   # a tie
...                   [0, 0, 0, 0, 0, 0, 0, 0, 3, 7]])  # mostly not a face
>>> majority_labels(votes).tolist()
[0, -1, -1]
"""

import csv
import os
from pathlib import Path

import numpy as np

from fer_keras.data.labels import FERPLUS

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                "contempt", "unknown", "NF")
"""The vote columns of `fer2013new.csv`: FER+'s 8 emotions (`FERPLUS` order), then unknown
and not-a-face."""
HEADER = ("Usage", "Image name") + VOTE_COLUMNS
LABEL_MODES = ("majority", "probability")
VOTES_FILE_NAME = "fer2013new.csv"
VOTES_ENV = "FERPLUS_PATH"
MAX_VOTES = 1000
"""No face has more votes than this (FER+ has 10 or so); more is a damaged file."""


def find_votes(path=None, data_path=None):
    """The FER+ votes file: `path` (`--labels-file`), else `$FERPLUS_PATH`, else
    `fer2013new.csv` beside the FER2013 source.

    Raises:
        ValueError: in one line naming every place looked at and how to give the file.
    """
    if path is not None:
        candidates = [Path(path)]
    else:
        candidates = [Path(os.environ[VOTES_ENV])] if os.environ.get(VOTES_ENV) else []
        if data_path is not None:
            candidates.append(Path(data_path).parent / VOTES_FILE_NAME)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(each) for each in candidates) or "nowhere (no data path)"
    if path is not None and Path(path).exists():
        raise ValueError(f"--labels-file {path} is not a regular file; give FER+'s "
                         f"{VOTES_FILE_NAME}.")
    raise ValueError(f"FER+ votes file ({VOTES_FILE_NAME}) not found; looked at {looked}. "
                     f"Download it from github.com/microsoft/FERPlus and pass --labels-file "
                     f"PATH, set ${VOTES_ENV}, or put it beside the FER2013 CSV.")


def _vote_count(text, path, line_number):
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_VOTES:
        raise ValueError(f"{path}, line {line_number}: a vote count must be a whole number "
                         f"0-{MAX_VOTES}. Received: {text[:80]!r}")
    return int(text)


def load_votes(path, usages):
    """Reads the votes file as int `(N, 10)` counts, checked row by row against FER2013.

    Args:
        path: `fer2013new.csv`.
        usages: string `(N,)` `Usage` of each FER2013 row, in file order.

    Raises:
        ValueError: in one line, when the header, a count, the row count or any row's
            `Usage` does not match.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = tuple(next(reader, ()))
            if header != HEADER:
                raise ValueError(f"{path} is not a FER+ votes file: its header must be "
                                 f"{','.join(HEADER)}. Received: {','.join(header)[:120]!r}")
            votes, file_usages = [], []
            for line_number, row in enumerate(reader, start=2):
                if len(row) != len(HEADER):
                    raise ValueError(f"{path}, line {line_number}: expected {len(HEADER)} "
                                     f"fields, found {len(row)}.")
                file_usages.append(row[0])
                votes.append([_vote_count(text, path, line_number) for text in row[2:]])
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not a text CSV ({error.reason} at byte "
                         f"{error.start}); give FER+'s {VOTES_FILE_NAME}.") from error
    usages = np.asarray(usages)
    if len(votes) != len(usages):
        raise ValueError(f"{path} has {len(votes):,} rows but the FER2013 source has "
                         f"{len(usages):,}: FER+ votes are matched by position, so both must "
                         f"be the complete files in their original order.")
    file_usages = np.asarray(file_usages)
    mismatched = np.flatnonzero(file_usages != usages)
    if len(mismatched):
        first = int(mismatched[0])
        raise ValueError(f"{path} is not aligned with the FER2013 source: {len(mismatched):,} "
                         f"rows differ in Usage, the first at data row {first + 1} "
                         f"({str(file_usages[first])!r} there, {str(usages[first])!r} in "
                         f"FER2013). Use the unshuffled files.")
    return np.asarray(votes, np.int64).reshape(len(usages), len(VOTE_COLUMNS))


def _kept_votes(votes):
    """Counts after dropping single votes (one person's outlier opinion)."""
    votes = np.asarray(votes, np.int64)
    return np.where(votes <= 1, 0, votes)


def majority_labels(votes):
    """FER+ majority labels: int `(N,)` class ids in `FERPLUS` order, -1 where dropped."""
    votes = _kept_votes(votes)
    top = votes.argmax(axis=1)
    kept = (votes.max(axis=1) * 2 > votes.sum(axis=1)) & (top < FERPLUS.num_classes)
    return np.where(kept, top, -1)


def probability_targets(votes):
    """FER+ vote distributions: float32 `(N, 8)` and the bool `(N,)` mask of kept faces."""
    votes = _kept_votes(votes).astype(np.float64)
    emotions = votes[:, :FERPLUS.num_classes]
    emotion_total = emotions.sum(axis=1)
    kept = (emotion_total > 0) & (votes[:, FERPLUS.num_classes:].sum(axis=1) * 2
                                  <= votes.sum(axis=1))
    targets = emotions / np.maximum(emotion_total, 1.0)[:, None]
    return targets.astype(np.float32), kept


def training_targets(mode, votes):
    """`(kept mask, targets)` of FER+ training faces under `mode`: int ids (majority) or
    float32 `(N, 8)` distributions (probability)."""
    if mode == "majority":
        labels = majority_labels(votes)
        return labels >= 0, labels
    if mode == "probability":
        targets, kept = probability_targets(votes)
        return kept, targets
    raise ValueError(f"FER+ label mode must be one of {', '.join(LABEL_MODES)}. "
                     f"Received: label_mode={mode!r}")


def label_counts(votes, usages):
    """Faces kept per `Usage` under each mode (for docs and checks)."""
    majority = majority_labels(votes)
    _, probability_kept = probability_targets(votes)
    usages = np.asarray(usages)
    return {usage: {"rows": int((usages == usage).sum()),
                    "majority": int((majority[usages == usage] >= 0).sum()),
                    "probability": int(probability_kept[usages == usage].sum())}
            for usage in ("Training", "PublicTest", "PrivateTest")}


SCORED_SPLITS = ("train", "validation", "public_test", "private_test")
"""Splits labelled by the majority rule; "train_targets" (probability mode) and
"fer2013_private_test" are extra entries of `ferplus_splits`."""


def ferplus_splits(images, fer2013_labels, usages, votes, mode, limit=None):
    """The kaggle protocol's splits with FER+ labels.

    Args:
        images: uint8 `(N, 48, 48, 1)` of the whole FER2013 source, in file order.
        fer2013_labels: int `(N,)` FER2013 ids.
        usages: string `(N,)` Usage values.
        votes: int `(N, 10)` from `load_votes`.
        mode: "majority" or "probability": the training targets.
        limit: keep at most this many rows of each split (before dropping faces).

    Returns:
        dict of `(x, y)`: "train", "validation" (= "public_test"), "public_test" and
        "private_test" with FER+ majority ids (faces the rule drops are left out);
        "train_targets", the faces and targets to train on under `mode` (majority ids or
        `(n, 8)` distributions); "fer2013_private_test", every PrivateTest face with its
        FER2013 id (to score the 7 classes the two label sets share).
    """
    usages = np.asarray(usages)
    majority = majority_labels(votes)
    kept, targets = training_targets(mode, votes)

    def rows_of(usage):
        rows = np.flatnonzero(usages == usage)
        return rows if limit is None else rows[:limit]

    def majority_split(rows):
        rows = rows[majority[rows] >= 0]
        return images[rows], majority[rows]

    training, public_test, private_test = (rows_of(usage) for usage in
                                           ("Training", "PublicTest", "PrivateTest"))
    train_rows = training[kept[training]]
    validation = majority_split(public_test)
    return {"train": majority_split(training), "validation": validation,
            "public_test": validation, "private_test": majority_split(private_test),
            "train_targets": (images[train_rows], targets[train_rows]),
            "fer2013_private_test": (images[private_test], np.asarray(fer2013_labels)[
                private_test])}
