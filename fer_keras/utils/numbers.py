"""Number ranges as the error messages of the command line and the settings checks
name them."""

import math


def describe_range(low=None, high=None, low_open=False, high_open=False):
    """Words for an interval, as the error messages of `number_in` show it: "> 0",
    ">= 0", "in [0, 1)"."""
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"{'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def in_range(value, low=None, high=None, low_open=False, high_open=False):
    """Whether `value` is a finite number inside the interval `describe_range` names."""
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    # NaN fails every comparison below, but inf passes one side of each, so both are
    # refused here: a rate of inf trains a model of NaN weights.
    if not math.isfinite(value):
        return False
    if low is not None and (value <= low if low_open else value < low):
        return False
    if high is not None and (value >= high if high_open else value > high):
        return False
    return True


def checked_number(value, name, what, low=None, high=None, low_open=False, high_open=False,
                   hint=""):
    """Returns `value` as a float if it is a finite number (not a bool) inside the interval,
    else raises a one-line `ValueError`: "NAME must be WHAT RANGE; HINT. Received: NAME=VALUE"."""
    if isinstance(value, bool) or not in_range(value, low, high, low_open, high_open):
        raise ValueError(f"{name} must be {what} {describe_range(low, high, low_open, high_open)}"
                         f"{'; ' + hint if hint else ''}. Received: {name}={value!r}")
    return float(value)
