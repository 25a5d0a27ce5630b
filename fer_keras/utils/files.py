"""Writing a file whole or not at all, through a hidden file of our own beside it.

Every command that writes a result (a JSON table, a CSV, a packaged model, a cache) goes
through `write_atomically`: the new content is written to `.NAME.PID.HEX.partial` (created
exclusively, so it can never be a file of the user's), flushed to disk, then given the
target's name in one step. A crash leaves the old file as it was; the partial file is
removed on failure, and partial files of processes that are gone are removed by the next
write to the same name.
"""

import os
import secrets
from pathlib import Path

PARTIAL_SUFFIX = ".partial"


def process_gone(pid: int) -> bool:
    """True when no process `pid` exists (one of another user's counts as existing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _remove_stale_partials(target: Path):
    # Judged by process id on this machine: callers whose folder other machines share (a
    # distributed search's state) pass clean_stale=False.
    prefix = f".{target.name}."
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(PARTIAL_SUFFIX)):
            continue
        middle = name[len(prefix):-len(PARTIAL_SUFFIX)].split(".")
        if (len(middle) == 2 and middle[0].isdigit() and len(middle[1]) == 8
                and entry.is_file() and not entry.is_symlink()
                and process_gone(int(middle[0]))):
            entry.unlink(missing_ok=True)


def write_atomically(target, write, exclusive: bool = False, follow_links: bool = False,
                     clean_stale: bool = True) -> Path:
    """Writes `target` through a hidden partial file: `write(path)` fills the partial file
    (it exists, empty, when `write` is called), which then takes `target`'s name.

    Args:
        target: the file to write.
        write: a callable taking the partial file's path and writing the whole content.
        exclusive: take the name only if no file has it (raises `FileExistsError`
            otherwise, even if one appeared while `write` ran); by default an existing
            file is replaced, which callers allow only where the user asked for it.
        follow_links: for a `target` that is a symbolic link, replace the file it points
            to, so the link stays one (a user's `--csv` link); by default the link itself
            is replaced and what it points to is never touched.
        clean_stale: remove partial files of this name left by processes that are gone
            (judged on this machine; pass False for a folder other machines share).

    Returns:
        the path written (the link's target with `follow_links`).

    Raises:
        FileExistsError: with `exclusive`, when `target` exists.
        OSError: when the folder cannot be written; nothing is left behind.
    """
    target = Path(target)
    if follow_links and target.is_symlink():
        try:
            target = target.resolve(strict=True)
        except (RuntimeError, OSError) as error:  # A loop, or a link to nothing.
            raise OSError(f"the link {target} leads nowhere ({error})") from None
    if clean_stale:
        _remove_stale_partials(target)
    partial = target.with_name(
        f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    try:
        write(partial)
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        if not exclusive:
            os.replace(partial, target)
            return target
        try:
            os.link(partial, target)
        except FileExistsError:
            raise
        except OSError:
            # A file system without hard links (FAT, some network mounts): the name is
            # still taken exclusively, so nothing is replaced.
            with open(target, "xb") as out, open(partial, "rb") as source:
                out.write(source.read())
        return target
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomically(target, text: str, **options) -> Path:
    """`write_atomically` for a text (UTF-8); `options` are its keyword arguments."""
    return write_atomically(target, lambda path: path.write_text(text, encoding="utf-8"),
                            **options)
