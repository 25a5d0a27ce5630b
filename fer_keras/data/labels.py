"""Label sets as data: the classes a model outputs, in output order.

A model's label set is found from its output count (`label_set_for`); committed 7-class
runs are FER2013's, 8-class ones FER+'s (the 7 emotions and contempt, in the column order of
FER+'s votes file). Class names use one vocabulary across label sets, so the classes two
sets share are found by name (`shared_classes`). Later label sets (a user's own) are added
with `register_label_set`.

>>> FER2013.num_classes, FER2013.class_names[3]
(7, 'happy')
>>> FERPLUS.class_names[:3], shared_classes(FERPLUS, FER2013)
(('neutral', 'happy', 'surprise'), [4, 5, 6, 1, 3, 2, 0])
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

FERPLUS = LabelSet("ferplus", ("neutral", "happy", "surprise", "sad", "angry", "disgust",
                               "fear", "contempt"))
"""FER+'s 8 emotions (Barsoum et al. 2016), in the column order of `fer2013new.csv`."""

_LABEL_SETS = {}


def register_label_set(label_set):
    """Adds a `LabelSet` under its name; returns it."""
    _LABEL_SETS[label_set.name] = label_set
    return label_set


register_label_set(FER2013)
register_label_set(FERPLUS)


def list_label_sets():
    """Names of the registered label sets, in registration order."""
    return list(_LABEL_SETS)


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


def shared_classes(source, target):
    """Output columns of `source` holding each class of `target`, in `target`'s order.

    For scoring a model of one label set on another's labels (an 8-class FER+ model on
    FER2013's 7: `probabilities[:, shared_classes(FERPLUS, FER2013)]`).

    Raises:
        ValueError: naming the classes of `target` that `source` lacks.
    """
    missing = [name for name in target.class_names if name not in source.class_names]
    if missing:
        raise ValueError(f"Label set {source.name!r} has no class {', '.join(missing)} of "
                         f"{target.name!r}; it cannot be scored on {target.name} labels.")
    return [source.class_names.index(name) for name in target.class_names]
