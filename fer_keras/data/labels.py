"""Label sets as data: the classes a model outputs, in output order.

A model's label set is found from its output count (`label_set_for`); committed 7-class
runs are FER2013's. Later label sets (FER+'s 8 with contempt, a user's own) are added with
`register_label_set`.

>>> FER2013.num_classes, FER2013.class_names[3]
(7, 'happy')
"""

import dataclasses

from fer_keras.utils.names import did_you_mean


@dataclasses.dataclass(frozen=True)
class LabelSet:
    """Named classes in output order.

    Attributes:
        name: the label set's name ("fer2013").
        class_names: one name per output, in output order.
    """

    name: str
    class_names: tuple

    @property
    def num_classes(self):
        return len(self.class_names)


FER2013 = LabelSet("fer2013", ("angry", "disgust", "fear", "happy", "sad", "surprise",
                               "neutral"))
"""FER2013's 7 emotions, in the order of the CSV's `emotion` ids."""

_LABEL_SETS = {}


def register_label_set(label_set):
    """Adds a `LabelSet` under its name; returns it."""
    _LABEL_SETS[label_set.name] = label_set
    return label_set


register_label_set(FER2013)


def get_label_set(name):
    """The registered `LabelSet` called `name` (ValueError naming the known ones)."""
    if name not in _LABEL_SETS:
        raise ValueError(f"Unknown label set. Use one of {', '.join(_LABEL_SETS)}."
                         f"{did_you_mean(name, list(_LABEL_SETS))} Received: labels={name!r}")
    return _LABEL_SETS[name]


def label_set_for(num_outputs, where="the model"):
    """The registered label set with `num_outputs` classes.

    Raises:
        ValueError: in one line naming `where` and the known output counts, when none has.
    """
    for label_set in _LABEL_SETS.values():
        if label_set.num_classes == num_outputs:
            return label_set
    known = ", ".join(f"{each.num_classes} ({each.name})" for each in _LABEL_SETS.values())
    raise ValueError(f"{where} has {num_outputs} outputs, which matches no known label set "
                     f"(known: {known}).")
