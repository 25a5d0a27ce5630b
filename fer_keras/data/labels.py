"""Label sets as data: the classes a model outputs, in output order.

A model's label set is the one its run records (`label_set_of`): `class_names` (or the
name of a registered set, `labels`) in the run folder's `config.json`, or an exported
SavedModel's `assets/labels.txt`, checked against the model's output count. A bare `.keras`
file with no record falls back on its output count (`label_set_for`): 7 outputs are
FER2013's classes, 8 FER+'s (the 7 emotions and contempt, in the column order of FER+'s
votes file). So a run fine-tuned over 3 classes, or over 7 classes that are not FER2013's,
is named by its own record, in any process. Class names use one vocabulary across label
sets, so the classes two sets share are found by name (`shared_classes`).

>>> FER2013.num_classes, FER2013.class_names[3]
(7, 'happy')
>>> FERPLUS.class_names[:3], shared_classes(FERPLUS, FER2013)
(('neutral', 'happy', 'surprise'), [4, 5, 6, 1, 3, 2, 0])
>>> label_set_of("saved_models/fer_vgg_ferplus", 8) is FERPLUS
True
"""

import dataclasses
import json
from pathlib import Path

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
    """The registered label set with `num_outputs` classes (the fallback of `label_set_of`
    for a model without a recorded label set).

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


RUN_CONFIG = "config.json"
"""The file of a run folder that records its label set (`class_names`, `labels`)."""
RUN_MODEL = "model.keras"
"""The model file of a run folder: the one its `config.json` describes."""
EXPORT_LABELS = Path("assets", "labels.txt")
"""An exported SavedModel's class names, one a line, relative to its folder (the same
names as `fer_keras.serving.layout`, which this lower layer cannot import)."""
EXPORT_EXTRA = "assets.extra"
"""The SavedModel folder holding the export's `.keras` copy and `.tflite` files."""
EXPORT_METADATA = "export.json"


def label_set_named(class_names, name, source="the record"):
    """The `LabelSet` of `class_names` (in output order) called `name`: the registered one
    when a registered set has exactly these names in this order.

    Raises:
        ValueError: naming `source`, for names that are not distinct non-empty strings.
    """
    names = tuple(class_names) if isinstance(class_names, (list, tuple)) else None
    if (not names or len(names) < 2 or not all(isinstance(each, str) and each.strip()
                                               for each in names)
            or len(set(names)) != len(names)):
        raise ValueError(f"{source} records class_names that are not 2 or more distinct "
                         f"names; write one name per model output, in output order. "
                         f"Received: class_names={class_names!r}")
    for label_set in _LABEL_SETS.values():
        if label_set.class_names == names:
            return label_set
    return LabelSet(str(name or "custom"), names)


def _from_config(path):
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} cannot be read as JSON ({error}); restore the run's "
                         f"config.json or pass the .keras file alone.") from None
    if not isinstance(config, dict):
        return None
    labels = config.get("labels")
    if config.get("class_names") is not None:
        return label_set_named(config["class_names"], labels, path)
    if labels is None:
        return None
    if labels not in _LABEL_SETS:
        raise ValueError(f"{path} records labels={labels!r}, which is no registered label "
                         f"set ({', '.join(_LABEL_SETS)}), and no class_names; add the "
                         f"run's class_names (one per output, in output order).")
    return _LABEL_SETS[labels]


def _from_labels_file(path):
    try:
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as error:
        raise ValueError(f"{path} cannot be read ({error}); export the model again.") from None
    name = None
    metadata = path.parent.parent / EXPORT_EXTRA / EXPORT_METADATA
    if metadata.is_file():
        try:
            name = json.loads(metadata.read_text()).get("labels")
        except (OSError, ValueError, AttributeError):
            name = None
    return label_set_named(names, name or "exported", path)


def recorded_label_set(path):
    """The label set recorded for the model at `path`, and the file that records it.

    `path` may be a run folder (its `config.json`), the `model.keras` of one (the same
    file), an exported SavedModel folder (`assets/labels.txt`), or a `.keras` / `.tflite`
    file inside an export's `assets.extra/` (the SavedModel's `labels.txt`).

    Returns:
        `(LabelSet, record file)`, or None where nothing records one (a bare `.keras`
        file, a run of a time before label sets, a name that is no path).

    Raises:
        ValueError: for a record that cannot be read or names no classes.
    """
    try:
        path = Path(path)
        is_dir, is_file = path.is_dir(), path.is_file()
    except (TypeError, OSError):
        return None
    candidates = []
    if is_dir:
        candidates = [(path / RUN_CONFIG, _from_config), (path / EXPORT_LABELS,
                                                          _from_labels_file)]
    elif is_file and path.name == RUN_MODEL and path.parent.name != EXPORT_EXTRA:
        candidates = [(path.parent / RUN_CONFIG, _from_config)]
    elif is_file and path.parent.name == EXPORT_EXTRA:
        candidates = [(path.parent.parent / EXPORT_LABELS, _from_labels_file)]
    for record, read in candidates:
        if record.is_file():
            label_set = read(record)
            if label_set is not None:
                return label_set, record
    return None


def label_set_of(path, num_outputs, where=None):
    """The label set of the model at `path` with `num_outputs` outputs: the one its run or
    export records (`recorded_label_set`), else the registered one of that many classes.

    Args:
        path: a run folder, a `.keras` or `.tflite` file, or an exported SavedModel folder.
        num_outputs: the model's output count.
        where: the model, as named in messages (default: `path`).

    Returns:
        A `LabelSet` with `num_outputs` classes.

    Raises:
        ValueError: in one line, when the record names another number of classes than the
            model outputs (naming the file, both counts and the fix), or when nothing
            records a label set and none is registered with `num_outputs` classes.
    """
    where = where or str(path)
    num_outputs = int(num_outputs)
    recorded = recorded_label_set(path)
    if recorded is None:
        return label_set_for(num_outputs, where)
    label_set, record = recorded
    if label_set.num_classes != num_outputs:
        raise ValueError(f"{record} records {label_set.num_classes} classes "
                         f"({', '.join(label_set.class_names)}) but {where} has "
                         f"{num_outputs} outputs; fix class_names in {record} to the "
                         f"model's classes in output order, or pass the model of that run. "
                         f"Received: classes={label_set.num_classes}, outputs={num_outputs}")
    return label_set
