"""What every `python -m fer_keras.COMMAND` shares: quiet TensorFlow start-up, the name a
command goes by, and one way to report bad input.

Each command's `main(argv)` parses its flags and hands the work to `run_command`, so bad
input of any kind (a name, a path, a CSV row) ends in a single `error: ...` line and exit
status 2, and Ctrl-C in exit status 130 with a hint on how to continue.
"""

import argparse
import importlib.abc
import importlib.util
import os
import sys
import tempfile

from fer_keras.utils.backend import TENSORFLOW_EXTRAS, require_tensorflow  # noqa: F401
from fer_keras.utils.names import did_you_mean  # noqa: F401
from fer_keras.utils.numbers import describe_range, in_range

BAD_INPUT = 2
INTERRUPTED = 130


def add_mixing_flags(parser, modes):
    """`--mixing` (one of `modes`, or none) and `--mixing-alpha`, shared by fit and distill."""
    parser.add_argument("--mixing", choices=["none", *modes],
                        help="mix pairs of training images and their targets: mixup "
                        "(blend), cutmix (paste a box) or both (half the batches each)")
    parser.add_argument("--mixing-alpha", type=number_in(0, low_open=True),
                        help="Beta(alpha, alpha) of the mixing proportion (default 1.0)")


def add_save_flags(parser):
    """`--save FILE` and `--overwrite`, shared by the benchmark doors (detectors,
    video_bench), whose `--save` refuses an existing file unless `--overwrite`."""
    parser.add_argument("--save", help="write the results as JSON to this file")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --save replace an existing file")


def int_at_least(minimum):
    """An argparse `type` for integers >= `minimum`; a bad value names the flag and range.

    Example: `parser.add_argument("--limit", type=int_at_least(1))` turns `--limit 0` into
    `error: argument --limit: must be an integer >= 1. Received: '0'` and exit status 2.
    """
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}. Received: {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def number_in(low=None, high=None, low_open=False, high_open=False):
    """An argparse `type` for finite floats in an interval; a bad value names the range.

    Example: `parser.add_argument("--dropout-rate", type=number_in(0, 1, high_open=True))`
    turns `--dropout-rate 1` into `error: argument --dropout-rate: must be a finite number
    in [0, 1). Received: '1'` and exit status 2; "inf" and "nan" are refused everywhere.
    """
    allowed = describe_range(low, high, low_open, high_open)

    def parse(text):
        if not in_range(text, low, high, low_open, high_open):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {allowed}. Received: {text!r}")
        return float(text)

    parse.__name__ = f"number {allowed}"
    return parse


def run_command(body, interrupted=None, failures=()):
    """Runs a command's work and turns the expected failures into exit statuses.

    Args:
        body: a function of no arguments; its return value (None means 0) is the status.
        interrupted: a line printed on Ctrl-C (e.g. how to resume), or None.
        failures: further exception types that end the command with status 1 and their
            message (e.g. `TrainingDiverged`), without a traceback.

    Returns:
        The exit status: the body's, 2 for a `ValueError`, 1 for `failures`, 130 on Ctrl-C.
    """
    try:
        status = body()
    except KeyboardInterrupt:
        if interrupted:
            print(f"\n{interrupted}", file=sys.stderr)
        return INTERRUPTED
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT
    except tuple(failures) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0 if status is None else status


TF_LOGS_SWITCH = "FER_KERAS_TF_LOGS"
"""Set this environment variable (to anything but "" or "0") to see TensorFlow's start-up
logs, which commands hide by default."""

INVOKED_AS_SWITCH = "FER_KERAS_INVOKED_AS"
"""Set by the `fer-keras` console script, so each command's usage line names it that way."""


def command_prog(command):
    """The name a command's `--help` shows: `fer-keras fit` when run through the console
    script, `python -m fer_keras.fit` otherwise."""
    prefix = os.environ.get(INVOKED_AS_SWITCH)
    return f"{prefix} {command}" if prefix else f"python -m fer_keras.{command}"


class _QuietLoader(importlib.abc.Loader):
    """Runs another loader with the process's stderr (file descriptor 2) sent to a
    temporary file, replayed only if the import fails."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        sys.stderr.flush()
        with tempfile.TemporaryFile() as captured:
            saved = os.dup(2)
            os.dup2(captured.fileno(), 2)
            failed = True
            try:
                self.loader.exec_module(module)
                failed = False
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                if failed:
                    captured.seek(0)
                    sys.stderr.write(captured.read().decode(errors="replace"))
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once, handing its loader to `_QuietLoader`, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow_start():
    """Hides what TensorFlow prints while it is imported, unless `FER_KERAS_TF_LOGS` is set.

    `TF_CPP_MIN_LOG_LEVEL=2` silences most of it, but not absl's "All log messages before
    absl::InitializeLog()" line nor the oneDNN notice TensorFlow prints (twice) whenever
    `TF_ENABLE_ONEDNN_OPTS` is set, as `fer_keras` sets it. The import happens wherever a
    command first needs TensorFlow, or never (`--help`, JAX and PyTorch backends), so
    nothing is imported here: a finder quiets that first import when it comes. A failed
    import shows everything it printed.
    """
    if os.environ.get(TF_LOGS_SWITCH, "") not in ("", "0"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or any(
            isinstance(finder, _QuietTensorFlowFinder) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())


def entry_point(main):
    """`if __name__ == "__main__": entry_point(main)`: quiet TF start-up, exit with main's
    status."""
    quiet_tensorflow_start()
    sys.exit(main())
