"""Hostile or damaged data (issue 26, cases 5, 6, 7, 13): refused in one line or rebuilt.

Overflowing and non-ASCII values are refused rather than wrapped or crashing; huge lines,
devices and FIFOs are refused without being read whole (or at all); a damaged decoded-data
cache is rebuilt, atomically, and nothing but a cache file is ever replaced.
"""

import os
import signal
import subprocess
import time
import zipfile

import numpy as np
import pytest
from conftest import random_rows, write_csv

from fer_keras import fit
from fer_keras.data import sources as data
from fer_keras.data.sources import DataError


class _Hung(BaseException):
    """Raised by the alarm in `_deadline`; a BaseException so no `except` swallows it."""


class _deadline:
    """Fails the test instead of hanging when the body runs past `seconds`."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        def ring(signum, frame):
            raise _Hung(f"still running after {self.seconds} s")

        self.previous = signal.signal(signal.SIGALRM, ring)
        signal.alarm(self.seconds)

    def __exit__(self, *exc_info):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.previous)


def _csv_with(tmp_path, bad_row, name="bad.csv", count=4):
    """A CSV of `count` good rows with `bad_row` as line 4 (after the header, 2 rows)."""
    rows = random_rows(count, seed=11)
    rows.insert(2, bad_row)
    return write_csv(tmp_path / name, rows)


def _pixels(*head):
    """A pixel field whose first values are `head`, the rest 1."""
    return " ".join([*map(str, head)] + ["1"] * (48 * 48 - len(head)))


def _one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[:2000]
    assert "Traceback" not in err
    return lines[0]


# Case 5: a value that overflows int32 (or int64) is refused, never wrapped into 0-255.

@pytest.mark.parametrize("value", [2 ** 32 + 5, 2 ** 64 + 5, 2 ** 32 * 10 ** 30 + 200])
def test_overflowing_pixel_is_refused_not_wrapped(tmp_path, value):
    path = _csv_with(tmp_path, (3, _pixels(7, value), "Training"))
    with pytest.raises(DataError) as error:
        data.parse_csv(path)
    text = str(error.value)
    assert "bad.csv" in text and "line 4" in text
    assert f"pixel 1 is {value}, outside 0-255" in text


def test_overflowing_values_are_skipped_and_counted(tmp_path, capsys):
    rows = random_rows(5, seed=12)
    rows.insert(1, (3, _pixels(2 ** 32 + 5), "Training"))
    rows.insert(3, (2 ** 32 + 3, _pixels(), "Training"))
    images, labels, _ = data.parse_csv(write_csv(tmp_path / "bad.csv", rows),
                                       skip_bad_rows=True)
    assert len(images) == 5 and list(labels) == [row[0] for row in random_rows(5, seed=12)]
    assert "Skipped 2 malformed row(s)" in capsys.readouterr().err


def test_zero_padded_and_spaced_values_still_parse(tmp_path):
    # The overflow check sends unusual spellings to the exact (slow) path; they must still
    # decode to the same values.
    plain = [(3, _pixels(7, 255, 0), "Training")] + random_rows(2, seed=13)
    padded = [("03", _pixels("007", "000255", "0").replace("1 1", "1  1", 5), "Training")]
    padded += random_rows(2, seed=13)
    expected = data.parse_csv(write_csv(tmp_path / "plain.csv", plain))
    got = data.parse_csv(write_csv(tmp_path / "padded.csv", padded))
    for want, have in zip(expected, got):
        np.testing.assert_array_equal(want, have)
    assert got[0][0, 0, :3, 0].tolist() == [7, 255, 0]


# Case 6: bounded reading, short quotes, special files refused before reading.

def test_sparse_file_without_newline_is_refused_quickly(tmp_path, capsys):
    big = tmp_path / "big.csv"
    subprocess.run(["truncate", "-s", "50M", str(big)], check=True)
    started = time.monotonic()
    with _deadline(60):
        status = fit.main(["baseline", "--data", str(big), "--output-dir",
                           str(tmp_path / "run"), "--verbose", "0"])
    assert status == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "big.csv" in line and "line 1" in line and "longer than" in line
    assert len(line) < 1000
    assert time.monotonic() - started < 30


def test_huge_data_line_is_refused_or_skipped(tmp_path, capsys):
    path = write_csv(tmp_path / "spaces.csv", random_rows(3, seed=14))
    with open(path, "ab") as handle:
        handle.write(b"3," + b" " * (50 << 20))  # 50 MB, no newline
    with pytest.raises(DataError) as error:
        data.parse_csv(path)
    text = str(error.value)
    assert "spaces.csv, line 5" in text and "longer than" in text and len(text) < 1000
    images, _, _ = data.parse_csv(path, skip_bad_rows=True)
    assert len(images) == 3
    err = capsys.readouterr().err
    assert "Skipped 1 malformed row(s)" in err and len(err) < 2000


@pytest.mark.parametrize("column", ["label", "pixel", "usage"])
def test_long_bad_value_is_quoted_short(tmp_path, column):
    junk = "x" * 20000
    row = {"label": (junk, _pixels(), "Training"),
           "pixel": (3, _pixels(junk), "Training"),
           "usage": (3, _pixels(), junk)}[column]
    with pytest.raises(DataError) as error:
        data.parse_csv(_csv_with(tmp_path, row))
    text = str(error.value)
    assert "bad.csv, line 4" in text and "xxxxxxxxxx" in text
    assert len(text) < 500, text[:1000]


def test_long_header_is_quoted_short(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("label," + "y" * 30000 + "\n1,2\n")
    with pytest.raises(DataError, match="lacks column") as error:
        data.parse_csv(path)
    assert len(str(error.value)) < 1000


def test_dev_zero_is_refused_in_one_line(tmp_path, capsys):
    with _deadline(60):
        status = fit.main(["baseline", "--data", "/dev/zero", "--output-dir",
                           str(tmp_path / "run"), "--verbose", "0"])
    assert status == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "/dev/zero" in line and "character device" in line
    assert not (tmp_path / "run").exists()


def test_fifo_and_folder_are_refused_before_reading(tmp_path, capsys):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with _deadline(30):
        with pytest.raises(DataError, match="pipe.csv is a named pipe"):
            data.resolve_data_path(fifo)
        with pytest.raises(DataError, match="pipe.csv is a named pipe"):
            data.parse_csv(fifo)
        with pytest.raises(DataError, match="pipe.csv is a named pipe"):
            data.load_fer2013(fifo)
        status = fit.main(["baseline", "--data", str(fifo), "--output-dir",
                           str(tmp_path / "run"), "--verbose", "0"])
    assert status == 2
    assert "named pipe (FIFO)" in _one_error_line(capsys.readouterr().err)
    with pytest.raises(DataError, match="is a folder, not a CSV file"):
        data.parse_csv(tmp_path)


# Case 7: a damaged decoded-data cache is rebuilt, atomically; nothing else is replaced.

def _cached(tmp_path):
    """A tiny CSV loaded once, so its cache exists: `(csv, cache file, arrays)`."""
    path = write_csv(tmp_path / "fer.csv", random_rows(14, seed=15, usages=("Training",
                                                                          "PublicTest")))
    arrays = data.load_fer2013(path)
    (cache,) = (tmp_path / "cache").glob("*.npz")
    return path, cache, arrays


def _write_npz(path, **arrays):
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


DAMAGES = {
    "empty": lambda cache: cache.write_bytes(b""),
    "truncated": lambda cache: cache.write_bytes(cache.read_bytes()[:len(cache.read_bytes())
                                                                     // 2]),
    "garbage": lambda cache: cache.write_bytes(b"PK\x03\x04" + b"\x00" * 100),
    "wrong_shapes": lambda cache: _write_npz(
        cache, images=np.zeros((2, 10), np.uint8), labels=np.zeros(2, np.int64),
        usages=np.array(["Training"] * 2), skipped_rows=0),
    "bad_labels": lambda cache: _write_npz(
        cache, images=np.zeros((14, 48, 48, 1), np.uint8), labels=np.full(14, 9),
        usages=np.array(["Training"] * 14), skipped_rows=0),
    "missing_array": lambda cache: _write_npz(cache, images=np.zeros((1, 48, 48, 1),
                                                                     np.uint8)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_cache_is_rebuilt_with_one_warning(tmp_path, capsys, damage):
    path, cache, fresh = _cached(tmp_path)
    DAMAGES[damage](cache)
    capsys.readouterr()
    loaded = data.load_fer2013(path)
    for want, got in zip(fresh, loaded):
        np.testing.assert_array_equal(want, got)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and str(cache) in err[0]
    assert "rebuilding" in err[0]
    # Rebuilt: the next load reads it without a word, and nothing else is left behind.
    with np.load(cache) as stored:
        np.testing.assert_array_equal(stored["images"], fresh[0])
    data.load_fer2013(path)
    assert capsys.readouterr().err == ""
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name]


def test_cache_write_interrupted_leaves_no_partial_file(tmp_path, monkeypatch):
    path, cache, _ = _cached(tmp_path)
    before = cache.read_bytes()
    cache.write_bytes(before[:100])  # damaged, so the next load rewrites it
    damaged = cache.read_bytes()

    def crash_midway(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(data.np, "savez", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        data.load_fer2013(path)
    monkeypatch.undo()
    # The old file is intact (not half of a new one) and no partial file is left over.
    assert cache.read_bytes() == damaged
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name]


def test_stale_partial_files_of_dead_processes_are_removed(tmp_path):
    path, cache, _ = _cached(tmp_path)
    stale = cache.with_name(f".{cache.name}.999999999.0badc0de.partial")
    stale.write_bytes(b"half")
    live = cache.with_name(f".{cache.name}.{os.getppid()}.0badc0de.partial")
    live.write_bytes(b"being written")
    mine = cache.parent / "notes.txt"
    mine.write_bytes(b"user file")
    cache.write_bytes(b"")
    data.load_fer2013(path)
    assert not stale.exists()
    assert live.read_bytes() == b"being written" and mine.read_bytes() == b"user file"
    with zipfile.ZipFile(cache) as archive:
        assert archive.testzip() is None


def test_link_at_the_cache_path_is_left_alone(tmp_path, capsys):
    path, cache, fresh = _cached(tmp_path)
    precious = tmp_path / "precious.bin"
    precious.write_bytes(b"the user's own bytes")
    cache.unlink()
    cache.symlink_to(precious)
    loaded = data.load_fer2013(path)
    np.testing.assert_array_equal(loaded[0], fresh[0])
    assert cache.is_symlink() and precious.read_bytes() == b"the user's own bytes"
    err = capsys.readouterr().err
    assert "a link, not a cache file" in err and "Traceback" not in err


# Case 13: non-ASCII digits ("²" passes str.isdigit, int() refuses it) get one line.

@pytest.mark.parametrize("digit", ["\u00b2", "\u0663", "\uff13"])  # ², Arabic-Indic 3, fullwidth 3
@pytest.mark.parametrize("column", ["emotion", "pixel"])
def test_non_ascii_digit_names_file_row_and_value(tmp_path, digit, column):
    row = (digit, _pixels(), "Training") if column == "emotion" else \
        (3, _pixels(5, digit), "Training")
    path = _csv_with(tmp_path, row)
    with pytest.raises(DataError) as error:
        data.parse_csv(path)
    text = str(error.value)
    assert "bad.csv" in text and "line 4" in text and repr(digit) in text
    expected = f"emotion is {digit!r}" if column == "emotion" else f"pixel 1 is {digit!r}"
    assert expected in text


def test_non_ascii_digit_rows_are_skipped_and_counted(tmp_path, capsys):
    rows = random_rows(5, seed=16)
    rows.insert(1, ("\u00b2", _pixels(), "Training"))
    rows.insert(3, (3, _pixels("\u00b2"), "Training"))
    path = write_csv(tmp_path / "bad.csv", rows)
    images, _, _ = data.load_fer2013(path, skip_bad_rows=True)
    assert len(images) == 5
    assert "Skipped 2 malformed row(s)" in capsys.readouterr().err


def test_fit_names_the_non_ascii_digit_in_one_line(tmp_path, capsys):
    path = _csv_with(tmp_path, ("\u00b2", _pixels(), "Training"))
    status = fit.main(["baseline", "--data", str(path), "--output-dir",
                       str(tmp_path / "run"), "--verbose", "0"])
    assert status == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "bad.csv, line 4" in line and "emotion is '\u00b2'" in line
