"""What every `python -m fer_keras.COMMAND` shares: quiet TensorFlow start-up and one way
to report bad input.

Each command's `main(argv)` parses its flags and hands the work to `run_command`, so bad
input of any kind (a name, a path, a CSV row) ends in a single `error: ...` line and exit
status 2, and Ctrl-C in exit status 130 with a hint on how to continue.
"""

import os
import sys

BAD_INPUT = 2
INTERRUPTED = 130


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


def entry_point(main):
    """`if __name__ == "__main__": entry_point(main)`: quiet TF logs, exit with main's status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
