"""Near-duplicate faces: pairs whose perceptual hashes differ in a few bits.

`fer_keras.data.audit` finds exact pixel copies. The same photo re-encoded, brightened or
shifted by a pixel is not an exact copy but is still the same face; a perceptual hash
survives such changes. Here each 48x48 face is averaged down to 16x16 (3x3 blocks), its 2-D
DCT taken, and the 8x8 lowest frequencies but the constant term compared with their median:
64 bits (the usual pHash, at FER2013's size). Two faces whose hashes differ in at most
`max_distance` bits are a near pair. Pairs are found without comparing every face with
every other: split into `max_distance + 1` chunks, two hashes that close agree exactly on
at least one chunk (the pigeonhole principle), so only faces sharing a chunk are compared.

The threshold is a judgement: `contact_sheet` draws matched pairs side by side so a person
can check it by eye (see the audit command's `--contact-sheet`).

Example:

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> faces = rng.integers(0, 256, (3, 48, 48)).astype(np.uint8)
>>> faces[2] = np.clip(faces[0].astype(int) + 12, 0, 255)  # face 0, brighter
>>> [(int(a), int(b)) for a, b, _ in near_pairs(perceptual_hashes(faces), 4)]
[(0, 2)]
"""

import numpy as np

HASH_BITS = 64
DEFAULT_MAX_DISTANCE = 4
"""Bits two hashes may differ in for a near pair (of 64)."""


def _dct_matrix(size):
    """The orthonormal DCT-II matrix of `size` points."""
    k = np.arange(size)[:, None]
    n = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2 / size)
    matrix[0] /= np.sqrt(2)
    return matrix


def perceptual_hashes(images):
    """64-bit perceptual hashes (uint64 `(N,)`) of uint8 `(N, 48, 48[, 1])` faces."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    if images.ndim != 3 or images.shape[1:] != (48, 48):
        raise ValueError(f"perceptual_hashes takes (N, 48, 48) faces. Received: shape "
                         f"{images.shape}")
    small = images.astype(np.float64).reshape(len(images), 16, 3, 16, 3).mean(axis=(2, 4))
    dct = _dct_matrix(16)
    frequencies = dct @ small @ dct.T
    low = frequencies[:, :8, :8].reshape(len(images), 64)[:, 1:]  # Without the DC term.
    bits = low > np.median(low, axis=1, keepdims=True)
    # 63 bits from the comparisons; the top bit stays 0.
    weights = (np.uint64(1) << np.arange(63, dtype=np.uint64))
    return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def hamming(a, b):
    """Bits that differ between uint64 hashes (elementwise)."""
    x = np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))
    count = np.zeros(x.shape, np.int64)
    for shift in range(HASH_BITS):
        count += ((x >> np.uint64(shift)) & np.uint64(1)).astype(np.int64)
    return count


def near_pairs(hashes, max_distance=DEFAULT_MAX_DISTANCE):
    """Pairs `(i, j, distance)` with `i < j` whose hashes differ in at most `max_distance`
    bits, sorted; exact copies (distance 0) included."""
    hashes = np.asarray(hashes, np.uint64)
    if not 0 <= int(max_distance) < 16:
        raise ValueError(f"max_distance must be 0-15 bits. Received: {max_distance!r}")
    chunks = int(max_distance) + 1
    edges = np.linspace(0, HASH_BITS, chunks + 1).astype(int)
    found = set()
    for low, high in zip(edges[:-1], edges[1:]):
        mask = np.uint64((1 << (high - low)) - 1)
        keys = (hashes >> np.uint64(low)) & mask
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts, ends):
            if end - start < 2:
                continue
            members = order[start:end]
            distances = hamming(hashes[members][:, None], hashes[members][None, :])
            rows, columns = np.nonzero(np.triu(distances <= max_distance, k=1))
            for row, column in zip(rows, columns):
                a, b = sorted((int(members[row]), int(members[column])))
                found.add((a, b, int(distances[row, column])))
    return sorted(found)


def contact_sheet(images, pairs, path, labels=None, names=None, columns=4, title=""):
    """Draws near pairs side by side (with their distance and labels) into a PNG.

    Args:
        images: uint8 `(N, 48, 48[, 1])`, the faces the pairs index.
        pairs: `(i, j, distance)` tuples (at most a few dozen make a readable sheet).
        path: the `.png` to write.
        labels: optional class name of each face, shown under it.
        names: optional short name of each face (its split and row), shown above it.
        columns: pairs per row.
    """
    # matplotlib is heavy and only this picture needs it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    rows = max(1, -(-len(pairs) // columns))
    figure, axes = plt.subplots(rows, columns * 2, figsize=(columns * 2 * 1.3, rows * 1.6),
                                squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for index, (a, b, distance) in enumerate(pairs):
        row, column = divmod(index, columns)
        for side, face in enumerate((a, b)):
            axis = axes[row, 2 * column + side]
            axis.imshow(images[face], cmap="gray", vmin=0, vmax=255)
            top = names[face] if names is not None else str(face)
            bottom = labels[face] if labels is not None else ""
            axis.set_title(f"{top}\n{bottom}" + (f" d={distance}" if side else ""),
                           fontsize=6)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def audit_near(splits, max_distance=DEFAULT_MAX_DISTANCE, train="train",
               test_splits=("public_test", "private_test")):
    """Near copies across and inside FER2013's splits.

    Args:
        splits: a `load_splits` dict (`{name: (images, labels)}`).
        max_distance: the hash distance of a near pair.
        train: the split the test faces are compared with.
        test_splits: the splits whose faces are looked up in `train`.

    Returns:
        A JSON-ready dict: `max_distance`; per test split, `faces`, the faces with a near
        or exact copy in `train` (`near_or_exact`), those whose closest such copy is not
        exact (`near_not_exact`), and those with a copy of another label (`other_label`);
        `within`, the near pairs inside each split that are not exact copies; and
        `cross_pairs`, every `(test split, test row, train row, distance)` near pair that
        is not an exact copy (for a contact sheet).
    """
    names = [train, *test_splits]
    images = np.concatenate([np.asarray(splits[name][0]) for name in names])
    labels = np.concatenate([np.asarray(splits[name][1]) for name in names])
    owner = np.concatenate([np.full(len(splits[name][1]), index) for index, name in
                            enumerate(names)])
    start = np.cumsum([0] + [len(splits[name][1]) for name in names])
    flat = images.reshape(len(images), -1)
    pairs = near_pairs(perceptual_hashes(images), max_distance)
    report = {"max_distance": int(max_distance), "hash": "64-bit DCT hash of the 16x16 mean",
              "within": {name: 0 for name in names}}
    found = {}  # test face -> [has an exact copy, has a copy of another label]
    cross = []
    for a, b, distance in pairs:
        exact = distance == 0 and np.array_equal(flat[a], flat[b])
        if owner[a] == owner[b]:
            if not exact:
                report["within"][names[owner[a]]] += 1
            continue
        if 0 not in (owner[a], owner[b]):
            continue  # Between two test splits: not counted here.
        test, reference = (b, a) if owner[a] == 0 else (a, b)
        flags = found.setdefault(test, [False, False])
        flags[0] |= bool(exact)
        flags[1] |= bool(labels[test] != labels[reference])
        if not exact:
            split = names[owner[test]]
            cross.append((split, int(test - start[owner[test]]), int(reference), distance))
    for index, name in enumerate(names[1:], start=1):
        mine = [flags for face, flags in found.items() if owner[face] == index]
        report[name] = {"faces": int(start[index + 1] - start[index]),
                        "near_or_exact": len(mine),
                        "near_not_exact": sum(not exact for exact, _ in mine),
                        "other_label": sum(other for _, other in mine)}
    report["cross_pairs"] = cross
    return report
