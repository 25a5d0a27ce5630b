"""The `fer-keras` console script: `fer-keras COMMAND ARGS` is `python -m fer_keras.COMMAND ARGS`.

Installing the package (`pip install -e .`) puts `fer-keras` on the PATH (declared in
`setup.cfg` under `[options.entry_points]`). Each command keeps its own flags and help:

    fer-keras fit baseline_deep_dropout --data data/fer2013.csv
    fer-keras tune tuning/smoke.toml --dry-run
    fer-keras fit --help

`python -m fer_keras COMMAND ...` does the same without the script. `fer-keras --version`
prints the package's version and the model packaged with it.
"""

import ast
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

from fer_keras import __version__
from fer_keras.cli import BAD_INPUT, INVOKED_AS_SWITCH, did_you_mean, quiet_tensorflow_start
from fer_keras.serving.packaged import describe_packaged_model

RUNS_AS_SCRIPT = re.compile(r'^if __name__ == "__main__":', re.MULTILINE)


def commands():
    """The modules of `fer_keras` that run as `python -m fer_keras.NAME`, sorted.

    Found from the source, so a new command module is a subcommand without being listed.
    """
    return sorted(path.stem for path in Path(__file__).parent.glob("*.py")
                  if path.stem != "__main__"
                  and RUNS_AS_SCRIPT.search(path.read_text(encoding="utf-8")))


def summary(command):
    """The first line of a command module's docstring, read without importing the module."""
    origin = importlib.util.find_spec(f"fer_keras.{command}").origin
    with open(origin, encoding="utf-8") as handle:
        docstring = ast.get_docstring(ast.parse(handle.read())) or ""
    return docstring.split("\n\n")[0].replace("\n", " ")


def usage():
    lines = ["usage: fer-keras COMMAND [ARGS...]   (fer-keras COMMAND --help for its flags)",
             "       fer-keras --version", "", "commands:"]
    names = commands()
    width = max(map(len, names))
    lines += [f"  {command.ljust(width)}  {summary(command)}" for command in names]
    return "\n".join(lines)


def main(argv=None):
    """Runs `fer_keras.COMMAND.main(ARGS)` for `argv = [COMMAND, *ARGS]`; returns its status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else BAD_INPUT
    if argv[0] == "--version":
        print(f"fer_keras {__version__}\n{describe_packaged_model()}")
        return 0
    command, args, names = argv[0], argv[1:], commands()
    if command not in names:
        print(f"error: unknown command {command!r}.{did_you_mean(command, names)} "
              f"Commands: {', '.join(names)}.", file=sys.stderr)
        return BAD_INPUT
    quiet_tensorflow_start()
    # So the command's --help says `fer-keras fit`, not `python -m fer_keras.fit`; restored
    # after, for callers that run several commands in one process (tests).
    previous = os.environ.get(INVOKED_AS_SWITCH)
    os.environ[INVOKED_AS_SWITCH] = "fer-keras"
    try:
        status = importlib.import_module(f"fer_keras.{command}").main(args)
    finally:
        if previous is None:
            os.environ.pop(INVOKED_AS_SWITCH, None)
        else:
            os.environ[INVOKED_AS_SWITCH] = previous
    return 0 if status is None else status
