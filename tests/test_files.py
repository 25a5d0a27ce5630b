"""utils/files.write_atomically: whole or nothing, never a file of the user's."""

import os
import subprocess
import sys

import pytest

from fer_keras.utils.files import write_atomically, write_text_atomically


def _dead_pid():
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_writes_the_whole_text_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "table.json"
    assert write_text_atomically(target, "{}\n") == target
    assert target.read_text() == "{}\n"
    assert [path.name for path in tmp_path.iterdir()] == ["table.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_partial(tmp_path):
    target = tmp_path / "table.json"
    target.write_text("old")

    def half_then_crash(path):
        path.write_text("half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, half_then_crash)
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["table.json"]


def test_exclusive_never_replaces(tmp_path):
    target = tmp_path / "report.json"
    write_text_atomically(target, "first", exclusive=True)
    with pytest.raises(FileExistsError):
        write_text_atomically(target, "second", exclusive=True)
    assert target.read_text() == "first"
    assert [path.name for path in tmp_path.iterdir()] == ["report.json"]


def test_a_symbolic_link_is_replaced_unless_followed(tmp_path):
    real = tmp_path / "real.csv"
    real.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    # By default the link itself is replaced: what it pointed to is never touched.
    write_text_atomically(link, "new")
    assert not link.is_symlink() and link.read_text() == "new" and real.read_text() == "old"
    # follow_links (a user's --csv link): the link stays one, its target is replaced.
    link.unlink()
    link.symlink_to(real)
    assert write_text_atomically(link, "newer", follow_links=True) == real.resolve()
    assert link.is_symlink() and real.read_text() == "newer"
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    with pytest.raises(OSError, match="leads nowhere"):
        write_text_atomically(loop, "x", follow_links=True)


def test_the_partial_file_is_hidden_and_never_a_users_file(tmp_path):
    target = tmp_path / "out.json"
    users = tmp_path / "out.json.tmp"
    users.write_text("the user's")
    seen = []
    write_atomically(target, lambda path: (seen.append(path), path.write_text("x")))
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".out.json.")
    assert seen[0].name.endswith(".partial") and seen[0] != users
    assert users.read_text() == "the user's"


def test_partials_of_gone_processes_are_removed_and_others_kept(tmp_path):
    target = tmp_path / "out.json"
    stale = tmp_path / f".out.json.{_dead_pid()}.0badc0de.partial"
    live = tmp_path / f".out.json.{os.getppid()}.0badc0de.partial"
    odd = tmp_path / f".out.json.{_dead_pid()}.mine.partial"  # Not a name we make.
    other = tmp_path / f".other.json.{_dead_pid()}.0badc0de.partial"
    for path in (stale, live, odd, other):
        path.write_text("kept?")
    write_text_atomically(target, "x", clean_stale=False)  # A folder others may share.
    assert stale.exists()
    write_text_atomically(target, "x")
    assert not stale.exists()
    assert live.exists() and odd.exists() and other.exists()
