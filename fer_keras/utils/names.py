"""Suggesting the closest valid name in an error message."""

import difflib


def did_you_mean(name, names):
    """A hint naming the entries of `names` closest to `name` (difflib), or "" if none is.

    Example: `did_you_mean("baseline_deep_dropot", list_experiments())` gives
    " Did you mean 'baseline_deep_dropout'?", ready to append to an error message.
    `names` may be a dict, to match on its keys and show its values (file stems, paths).
    """
    shown = dict(names) if isinstance(names, dict) else {str(each): each for each in names}
    close = difflib.get_close_matches(str(name), list(shown), n=3)
    if not close:
        return ""
    quoted = [repr(str(shown[each])) for each in close]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f" Did you mean {listed}?"
