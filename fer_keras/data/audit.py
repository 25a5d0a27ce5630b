"""Exact-duplicate audit of FER2013: test faces whose very pixels are also in another split.

FER2013 was gathered by image search, and some faces appear more than once: inside
Training, and across Training, PublicTest and PrivateTest. A test face that is an exact
pixel copy of a training face measures memory, not recognition, and a copy that carries a
different label cannot be classified right both times. This module finds the copies (by
the SHA-1 of each face's 2,304 bytes), counts them per pair of splits, and gives the mask
of the test faces no training face copies, the "de-duplicated" subset to score on.

Only exact copies are found: a face shifted by a pixel or re-encoded is not one.

Example:

>>> import numpy as np
>>> train = np.zeros((3, 48, 48), np.uint8)
>>> train[1] = 1  # faces 0 and 2 are copies of each other
>>> test = np.stack([train[1], np.full((48, 48), 7, np.uint8)])
>>> find_copies(test, train).tolist()
[True, False]
>>> unseen_mask(test, train).tolist()
[False, True]
"""

import collections
import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np

from fer_keras.data.sources import (
    IMAGE_SIZE,
    load_splits,
    resolve_data_path,
    source_fingerprint,
)
from fer_keras.utils.files import write_text_atomically

TRAINING_SPLIT = "train"
"""The split the model learns from; by default every other split is audited against it."""
USAGE_SPLITS = ("train", "public_test", "private_test")
"""The splits named after the CSV's Usage values; "validation" is cut from one of them (or,
under the kaggle protocol, is PublicTest itself)."""


def _as_rows(images, name="images"):
    """`images` as a C-contiguous uint8 `(N, 2304)` array; other shapes and dtypes refused."""
    array = np.asarray(images)
    shape = array.shape
    if not (array.ndim in (3, 4) and shape[1:3] == (IMAGE_SIZE, IMAGE_SIZE)
            and (array.ndim == 3 or shape[3] == 1)):
        raise ValueError(f"{name} must be FER2013 faces of shape (N, 48, 48) or "
                         f"(N, 48, 48, 1), as the loader returns them. Received: {name} of "
                         f"shape {shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"{name} must be the raw uint8 pixels (0-255) the loader returns, "
                         f"not rescaled or float copies, or exact copies are missed. "
                         f"Received: {name} of dtype {array.dtype}")
    return np.ascontiguousarray(array.reshape(len(array), IMAGE_SIZE * IMAGE_SIZE))


def image_digests(images) -> "list[str]":
    """The SHA-1 hex digest of each face's pixel bytes.

    `(N, 48, 48)` and `(N, 48, 48, 1)` give the same digests, so equal digests mean equal
    pixels whichever shape a caller holds.

    Args:
        images: uint8 `(N, 48, 48)` or `(N, 48, 48, 1)`.

    Returns:
        A list of N 40-character hex strings.

    Raises:
        ValueError: for another shape or dtype.

    Example:

    >>> faces = np.zeros((2, 48, 48, 1), np.uint8)
    >>> digests = image_digests(faces)
    >>> digests[0] == digests[1], len(digests[0])
    (True, 40)
    """
    return _digests(_as_rows(images))


def _digests(rows):
    # SHA-1 names content here, it guards nothing: FIPS builds allow it only so declared.
    return [hashlib.sha1(row.tobytes(), usedforsecurity=False).hexdigest() for row in rows]


def find_copies(test_images, reference_images) -> np.ndarray:
    """For each test face, whether an exact pixel copy of it is among `reference_images`.

    Args:
        test_images: uint8 `(N, 48, 48)` or `(N, 48, 48, 1)`.
        reference_images: uint8 `(M, 48, 48)` or `(M, 48, 48, 1)`, e.g. the training faces.

    Returns:
        A bool array of shape `(N,)`.

    Example:

    >>> faces = np.repeat(np.arange(3, dtype=np.uint8), 48 * 48).reshape(3, 48, 48)
    >>> find_copies(faces, faces[[2]]).tolist()
    [False, False, True]
    """
    test = _digests(_as_rows(test_images, "test_images"))
    reference = set(_digests(_as_rows(reference_images, "reference_images")))
    return np.array([digest in reference for digest in test], bool)


def unseen_mask(test_images, training_images) -> np.ndarray:
    """True where a test face has no exact copy among the training faces.

    Scoring on `x[mask]` gives the accuracy on the de-duplicated test set, the faces a
    model cannot have memorised.

    Args:
        test_images: uint8 `(N, 48, 48)` or `(N, 48, 48, 1)`.
        training_images: uint8 `(M, 48, 48)` or `(M, 48, 48, 1)`.

    Returns:
        A bool array of shape `(N,)`, `~find_copies(test_images, training_images)`.

    Example:

    >>> faces = np.repeat(np.arange(2, dtype=np.uint8), 48 * 48).reshape(2, 48, 48)
    >>> unseen_mask(faces, faces[:1]).tolist()
    [False, True]
    """
    return ~find_copies(test_images, training_images)


def _labels_of(labels, count, name):
    array = np.asarray(labels)
    if array.shape != (count,):
        raise ValueError(f"The labels of split {name!r} must be one id per face, shape "
                         f"({count},). Received: labels of shape {array.shape}")
    return array.tolist()


def _split_summary(digests, labels):
    """Faces, distinct faces and the copies inside one split."""
    labels_by_digest = collections.defaultdict(set)
    counts = collections.Counter(digests)
    for digest, label in zip(digests, labels):
        labels_by_digest[digest].add(label)
    repeated = [digest for digest, count in counts.items() if count > 1]
    return {
        "faces": len(digests),
        "distinct": len(counts),
        "redundant_copies": len(digests) - len(counts),
        "repeated_faces": len(repeated),
        "repeated_with_different_labels": sum(len(labels_by_digest[digest]) > 1
                                              for digest in repeated),
    }


def audit_splits(splits: "dict[str, tuple]", test_splits: "list[str] | None" = None) -> dict:
    """Counts the exact copies across and inside FER2013's splits.

    Two splits holding the same faces with the same labels in the same order (under the
    kaggle protocol "validation" is PublicTest) are one split: it keeps the name of the
    CSV's own split ("public_test"), and the other name is recorded under "aliases" and left
    out of the comparisons.

    Args:
        splits: split name to `(images, labels)`, as `fer_keras.data.load_splits` returns
            it ("train", "validation", "public_test", "private_test"). Under the kaggle
            protocol "train" is all of Training; under the study protocol it is 80% of it
            and "validation" the other 20%.
        test_splits: the splits to audit against the others; None means every split but
            "train".

    Returns:
        A JSON-serialisable dict:
        `splits`: per split, `faces`, `distinct`, `redundant_copies` (faces minus distinct
        faces), `repeated_faces` (distinct faces present more than once) and
        `repeated_with_different_labels` (of those, the ones whose copies disagree);
        `copies`: per test split, per other split, `faces` (test faces with at least one
        exact copy there), `different_label` (of those, the ones with a copy labelled
        otherwise) and `of` (the test split's faces);
        `unseen`: per test split, the faces without a copy in "train" (when "train" is
        given);
        `aliases`: a split name to the name of the split it repeats.

    Raises:
        ValueError: for an unknown name in `test_splits`, or images or labels of the
            wrong shape.

    Example:

    >>> faces = np.repeat(np.arange(4, dtype=np.uint8), 48 * 48).reshape(4, 48, 48)
    >>> report = audit_splits({"train": (faces[[0, 1, 1]], np.array([0, 3, 3])),
    ...                        "private_test": (faces[[1, 2]], np.array([4, 5]))})
    >>> report["copies"]["private_test"]["train"]
    {'faces': 1, 'different_label': 1, 'of': 2}
    >>> report["splits"]["train"]["redundant_copies"], report["unseen"]["private_test"]
    (1, 1)
    """
    digests, labels, aliases = {}, {}, {}
    for name, (images, split_labels) in splits.items():
        digests[name] = _digests(_as_rows(images, f"the images of split {name!r}"))
        labels[name] = _labels_of(split_labels, len(digests[name]), name)
    # A repeated split goes by the name of the file's own split (kaggle's "validation" is
    # "public_test"), else by its first name.
    names = sorted(digests, key=lambda name: (name not in USAGE_SPLITS, list(digests).index(name)))
    for position, name in enumerate(names):
        same = next((kept for kept in names[:position] if kept not in aliases
                     and digests[kept] == digests[name] and labels[kept] == labels[name]), None)
        if same is not None:
            aliases[name] = same
    for name in aliases:
        del digests[name], labels[name]
    if test_splits is None:
        test_splits = [name for name in splits if name != TRAINING_SPLIT]
    unknown = [name for name in test_splits if name not in splits]
    if unknown:
        raise ValueError(f"test_splits must name given splits ({', '.join(splits)}); "
                         f"{', '.join(map(repr, unknown))} is not one. "
                         f"Received: test_splits={list(test_splits)!r}")
    test_splits = list(dict.fromkeys(aliases.get(name, name) for name in test_splits))

    labels_by_digest = {}
    for name in digests:
        found = collections.defaultdict(set)
        for digest, label in zip(digests[name], labels[name]):
            found[digest].add(label)
        labels_by_digest[name] = found
    copies, unseen = {}, {}
    for test in test_splits:
        copies[test] = {}
        for other in digests:
            if other == test:
                continue
            present = labels_by_digest[other]
            with_copy = different = 0
            for digest, label in zip(digests[test], labels[test]):
                if digest in present:
                    with_copy += 1
                    different += bool(present[digest] - {label})
            copies[test][other] = {"faces": with_copy, "different_label": different,
                                   "of": len(digests[test])}
        if TRAINING_SPLIT in copies[test]:
            unseen[test] = len(digests[test]) - copies[test][TRAINING_SPLIT]["faces"]
    return {
        "splits": {name: _split_summary(digests[name], labels[name]) for name in digests},
        "copies": copies,
        "unseen": unseen,
        "aliases": aliases,
    }


def format_audit(report: dict, title: str = "") -> str:
    """A plain-text table of an `audit_splits` report, as `python -m fer_keras.audit`
    prints it."""
    lines = [title] if title else []
    lines.append(f"{'split':<14}{'faces':>8}{'distinct':>10}{'redundant':>11}"
                 f"{'repeated':>10}{'mixed labels':>14}")
    for name, row in report["splits"].items():
        lines.append(f"{name:<14}{row['faces']:>8,}{row['distinct']:>10,}"
                     f"{row['redundant_copies']:>11,}{row['repeated_faces']:>10,}"
                     f"{row['repeated_with_different_labels']:>14,}")
    for name, same in report["aliases"].items():
        lines.append(f"{name:<14}the same faces as {same}")
    lines.append("")
    lines.append(f"{'test split':<14}{'copy in':<14}{'faces':>8}{'of':>8}{'share':>8}"
                 f"{'other label':>13}")
    for test, others in report["copies"].items():
        for other, row in others.items():
            share = 100 * row["faces"] / row["of"] if row["of"] else 0.0
            lines.append(f"{test:<14}{other:<14}{row['faces']:>8,}{row['of']:>8,}"
                         f"{share:>7.2f}%{row['different_label']:>13,}")
    for test, count in report["unseen"].items():
        total = report["splits"][test]["faces"]
        lines.append(f"{test}: {count:,} of {total:,} faces have no exact copy in "
                     f"{TRAINING_SPLIT} (the de-duplicated subset)")
    near = report.get("near")
    if near:
        lines.append("")
        lines.append(f"Near copies (perceptual hash within {near['max_distance']} of 64 bits; "
                     f"exact ones included):")
        for name, row in near.items():
            if isinstance(row, dict) and "near_or_exact" in row:
                lines.append(f"{name}: {row['near_or_exact']:,} of {row['faces']:,} faces have "
                             f"a near or exact copy in {TRAINING_SPLIT} ({row['near_not_exact']:,}"
                             f" only a near one; {row['other_label']:,} with a copy of another "
                             f"label)")
        within = ", ".join(f"{name} {count:,}" for name, count in near["within"].items())
        lines.append(f"near (not exact) pairs inside each split: {within}")
        if near.get("contact_sheet"):
            lines.append(f"contact sheet of near pairs: {near['contact_sheet']}")
    return "\n".join(lines)


def write_audit(report: dict, path: "str | os.PathLike", overwrite: bool = False) -> Path:
    """Writes `report` as JSON to `path`, refusing to replace a file unless `overwrite`.

    The JSON goes to a temporary file beside `path` first, then takes its name (with
    `os.link`, which fails if a file appeared there meanwhile, or `os.replace` when
    `overwrite`), so `path` is never left half written and nothing else is ever removed.

    Raises:
        ValueError: when `path` exists and `overwrite` is False, is not a regular file, or
            its folder is missing or cannot be written.
    """
    path = Path(path)
    check_output(path, overwrite)
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    try:
        write_text_atomically(path, text, exclusive=not overwrite)
    except FileExistsError:
        raise ValueError(f"--output {path} appeared while the audit ran; pass --overwrite "
                         f"to replace it, or choose another --output.") from None
    except OSError as error:
        raise ValueError(f"Cannot write --output {path}: {error.strerror or error}. Choose "
                         f"a writable --output path.") from None
    return path


def check_output(path: "str | os.PathLike", overwrite: bool = False) -> None:
    """Raises a one-line `ValueError` unless `write_audit(..., path, overwrite)` may write.

    A command calls it before loading any data, so a wrong `--output` fails at once.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"The folder of --output {path} does not exist; create it or choose "
                         f"another --output. Received: output={str(path)!r}")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise ValueError(f"Cannot check --output {path}: {error.strerror or error}.") from None
    if not stat.S_ISREG(mode) and not stat.S_ISLNK(mode):
        raise ValueError(f"--output {path} exists and is not a regular file; choose another "
                         f"--output. Received: output={str(path)!r}")
    if not overwrite:
        raise ValueError(f"--output {path} already exists; pass --overwrite to replace it, "
                         f"or choose another --output. Received: output={str(path)!r}")


def audit_source(path: "str | os.PathLike | None" = None, protocol: str = "kaggle",
                 near_distance: "int | None" = None, contact_sheet: "str | None" = None) -> dict:
    """Loads FER2013 as `load_splits` does and audits its splits.

    Args:
        path: the CSV or image folder (see `fer_keras.data.resolve_data_path`).
        protocol: "kaggle" ("train" is all of Training, the default here because it is the
            set every model trains on under it) or "study" ("train" is 80% of Training).
        near_distance: also look for near copies, at this perceptual-hash distance
            (`fer_keras.data.near_duplicates.audit_near`; None: exact copies only).
        contact_sheet: with `near_distance`, a PNG of up to 32 near (not exact) pairs
            between test faces and training faces, drawn at random with a fixed seed, to
            check the threshold by eye.

    Returns:
        `audit_splits`'s report, plus the settings that trace it back: `data` (the path),
        `source_fingerprint` and `protocol`; with `near_distance`, `near` too.
    """
    path = resolve_data_path(path)
    splits = load_splits(path, protocol=protocol)
    report = audit_splits(splits)
    if near_distance is not None:
        from fer_keras.data import near_duplicates

        report["near"] = near_duplicates.audit_near(splits, near_distance)
        if contact_sheet is not None:
            pairs = report["near"]["cross_pairs"]
            chosen = np.random.default_rng(0).permutation(len(pairs))[:32]
            test_images = {name: np.asarray(splits[name][0]) for name in
                           ("public_test", "private_test")}
            faces, names, drawn = [], [], []
            for index in sorted(chosen):
                split, row, reference, distance = pairs[index]
                faces += [np.asarray(splits["train"][0][reference]), test_images[split][row]]
                names += [f"train {reference}", f"{split} {row}"]
                drawn.append((len(faces) - 2, len(faces) - 1, distance))
            near_duplicates.contact_sheet(
                np.stack(faces) if faces else np.zeros((0, 48, 48), np.uint8), drawn,
                contact_sheet, names=names,
                title=f"near copies at hash distance <= {near_distance} (not exact)")
            report["near"]["contact_sheet"] = str(contact_sheet)
    report.update({"data": str(path), "source_fingerprint": source_fingerprint(path),
                   "protocol": protocol})
    return report
