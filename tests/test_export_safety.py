"""export checks where it writes before doing any work, cleans up after exports that were
killed, and takes only versions TF Serving can read (issue 26, cases 9, 16 and 17)."""

import errno
import os
import subprocess
import sys
import tempfile

import keras
import pytest
from keras import layers

from fer_keras import export
from fer_keras.serving import export as serving_export

MAX = 2**63 - 1


def one_line_error(status, captured, *needles):
    err = captured.err
    assert status == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((48, 48, 1))
    x = layers.Flatten()(layers.Rescaling(1 / 255.0)(inputs))
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    keras.Model(inputs, layers.Dense(7, activation="softmax")(x)).save(path)
    return path


@pytest.fixture
def no_conversion(monkeypatch):
    """Fails the test if the export gets as far as writing the SavedModel."""
    def refuse(*args, **kwargs):
        pytest.fail("the export started converting before refusing its output folder")

    monkeypatch.setattr(serving_export, "write_savedmodel", refuse)
    monkeypatch.setattr(serving_export, "representative_images", refuse)


def test_output_that_is_a_file_is_refused_and_kept(model_file, tmp_path, no_conversion,
                                                   capsys):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"the user's own file\n")
    one_line_error(export.main([str(model_file), "--output", str(notes), "--quantize", "int8"]),
                   capsys.readouterr(), f"The export folder {notes} exists and is not a "
                   "folder", "Pass --output a folder")
    one_line_error(export.main([str(model_file), "--output", str(notes / "serving")]),
                   capsys.readouterr(), f"{notes / 'serving'} cannot be created: {notes} is "
                   "not a folder")
    assert notes.read_bytes() == b"the user's own file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _unwritable_folder(tmp_path):
    """A folder no file can be created in, even for root, or None."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        tempfile.NamedTemporaryFile(dir=locked).close()
    except OSError:
        return locked
    # Root ignores permission bits; sysfs refuses new files to everyone.
    try:
        tempfile.NamedTemporaryFile(dir="/sys").close()
    except OSError:
        return "/sys"
    return None


def test_read_only_place_is_refused_before_any_work(model_file, tmp_path, no_conversion,
                                                    capsys):
    place = _unwritable_folder(tmp_path)
    if place is None:
        pytest.skip("no folder here refuses new files (root, and /sys is writable)")
    try:
        one_line_error(export.main([str(model_file), "--output", f"{place}/fer_serving"]),
                       capsys.readouterr(), f"{place}/fer_serving is not writable",
                       f"no file can be created in {place}")
    finally:
        (tmp_path / "locked").chmod(0o755)


def test_read_only_mount_is_refused_before_any_work(model_file, tmp_path, no_conversion,
                                                    monkeypatch, capsys):
    # What a read-only mount answers to every new file, for root too.
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    one_line_error(export.main([str(model_file), "--output", str(tmp_path / "ro" / "serving")]),
                   capsys.readouterr(), "is not writable", os.strerror(errno.EROFS))
    assert not (tmp_path / "ro").exists()


def test_write_check_leaves_nothing_behind(tmp_path):
    serving_export.check_output_folder(tmp_path / "new" / "serving")
    assert list(tmp_path.iterdir()) == []


def _dead_pid():
    """The id of a process that has exited (and been reaped)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_stale_partial_folders_of_killed_exports_are_removed(model_file, tmp_path, capsys):
    serving = tmp_path / "serving"
    serving.mkdir()
    dead, alive = _dead_pid(), os.getpid()
    stale = serving / f".partial-1-{dead}"
    live = serving / f".partial-2-{alive}"
    others = [serving / f".partial-1-{dead}-mine", serving / f"partial-1-{dead}",
              serving / f".partial-x-{dead}", serving / "notes"]
    for folder in (stale, live, *others):
        folder.mkdir()
        (folder / "file.txt").write_text("data\n")
    # A link named like a staging folder: neither it nor what it points to is touched.
    target = tmp_path / "user_folder"
    target.mkdir()
    (target / "thesis.txt").write_text("precious\n")
    (serving / f".partial-3-{dead}").symlink_to(target, target_is_directory=True)
    file_named_so = serving / f".partial-4-{dead}"
    file_named_so.write_text("a file, not a folder\n")

    assert export.main([str(model_file), "--output", str(serving), "--version", "7",
                        "--no-tflite"]) == 0
    assert f"removed {stale}" in capsys.readouterr().err
    assert not stale.exists()
    assert (live / "file.txt").read_text() == "data\n"
    for folder in others:
        assert (folder / "file.txt").read_text() == "data\n", folder
    assert (target / "thesis.txt").read_text() == "precious\n"
    assert (serving / f".partial-3-{dead}").is_symlink()
    assert file_named_so.read_text() == "a file, not a folder\n"
    assert serving_export.existing_versions(serving) == [7]


def test_remove_stale_partials_keeps_running_exports(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = tmp_path / f".partial-1-{sleeper.pid}"
        stale = tmp_path / f".partial-2-{_dead_pid()}"
        running.mkdir()
        stale.mkdir()
        assert serving_export.remove_stale_partials(tmp_path) == [stale]
        assert running.is_dir() and not stale.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert serving_export.remove_stale_partials(tmp_path / "missing") == []


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "abc", "", str(MAX + 1),
                                  "99999999999999999999999"])
def test_version_outside_int64_is_refused_at_parse_time(text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.build_parser().parse_args(["run", "--version", text])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"argument --version: must be an integer >= 1 and <= {MAX}" in err
    assert "int64" in err


def test_largest_int64_version_is_accepted_and_the_function_checks_too(model_file, tmp_path):
    assert export.build_parser().parse_args(["run", "--version", str(MAX)]).version == MAX
    for version in (MAX + 1, 0, True, 2.0, "3"):
        with pytest.raises(ValueError, match=r"version must be an integer in \[1, "):
            serving_export.export(model_file, output=tmp_path / "serving", version=version)
    assert not (tmp_path / "serving").exists()


def test_version_folders_are_ascii_int64_names(tmp_path):
    for name in ("3", "²", "٣", f"{MAX + 5}", "07"):
        (tmp_path / name).mkdir()
    assert serving_export.existing_versions(tmp_path) == [3, 7]
    assert serving_export.next_version(tmp_path) == 8
    (tmp_path / str(MAX)).mkdir()
    with pytest.raises(ValueError, match="no next one"):
        serving_export.next_version(tmp_path)
