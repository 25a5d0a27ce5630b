"""Knowledge distillation: a student trained on what its teachers know.

The teachers are committed run folders (single nets, test-time-view runs or ensembles);
their probabilities on the training faces are averaged, softened by a temperature and mixed
with the hard labels (Hinton et al. 2015):

    soft   = normalise(mean_t(p_t) ** (1 / T))
    target = weight * soft + (1 - weight) * one_hot(label)

and the student is trained with its usual loss (cross-entropy, with the run's label
smoothing) against `target`, through the same pipeline as every run. The teachers
predict each training face once, un-augmented, before the first epoch (a cache in the run's
staging folder, `teacher_targets.npz`, so a resumed run does not predict again): one
forward pass per face and view of each teacher, about the cost of scoring the training
split, against a per-batch teacher pass that would cost an extra forward pass of every
teacher at every step. The augmented face keeps the soft target of its original, as the
hard label is kept.

Unlike Hinton's loss, the student's own output is not softened (our models end in a
softmax, which is what is served): the student at temperature 1 is fitted to the teachers'
softened distribution, so a temperature above 1 also teaches it less confident outputs.

Example:

>>> teacher = np.array([[0.7, 0.2, 0.1]])
>>> distillation_targets([teacher], np.array([0]), 3, temperature=1.0, weight=1.0)
array([[0.7, 0.2, 0.1]], dtype=float32)
"""

import hashlib
from pathlib import Path

import numpy as np

from fer_keras.data.protocols import protocol_of
from fer_keras.data.sources import labels_of, source_fingerprint
from fer_keras.training.runs import Run
from fer_keras.utils.files import write_atomically

CACHE_FILE = "teacher_targets.npz"
"""The teachers' averaged probabilities on the training faces, in the staging folder."""


def temper(probabilities, temperature):
    """Softens (T > 1) or sharpens (T < 1) rows of probabilities: `p ** (1/T)`, renormalised
    (computed in log space, so tiny probabilities do not underflow)."""
    logs = np.log(np.clip(np.asarray(probabilities, np.float64), 1e-12, 1.0)) / temperature
    logs -= logs.max(axis=1, keepdims=True)
    softened = np.exp(logs)
    return softened / softened.sum(axis=1, keepdims=True)


def distillation_targets(teacher_probabilities, labels, num_classes, temperature, weight):
    """The training targets `weight * soft + (1 - weight) * hard` (module docstring).

    Args:
        teacher_probabilities: a list of `(N, classes)` arrays, one per teacher.
        labels: int `(N,)` hard labels, or float `(N, classes)` target distributions
            (FER+ votes), which take the hard label's place.
        num_classes: the class count.
        temperature: T > 0.
        weight: the soft targets' share, 0-1.

    Returns:
        float32 `(N, num_classes)`; every row sums to 1.
    """
    mean = np.mean([np.asarray(p, np.float64) for p in teacher_probabilities], axis=0)
    labels = np.asarray(labels)
    hard = (labels.astype(np.float64) if labels.ndim == 2
            else np.eye(num_classes, dtype=np.float64)[labels])
    return (weight * temper(mean, temperature) + (1 - weight) * hard).astype(np.float32)


def teacher_model_path(teacher):
    """The `.keras` file of a teacher given as a run folder or the file itself."""
    path = Path(teacher)
    return path if path.suffix == ".keras" else path / "model.keras"


def check_teachers(teachers, settings):
    """Refuses, in one line each, teachers that cannot teach this student.

    A teacher must be a run folder with its `model.keras`, trained on the same label set
    and under the same protocol as the student (a teacher trained on the faces the
    student selects its epoch on would leak them into the student's targets).

    Returns:
        `{teacher: model file fingerprint}`, recorded in the run's `config.json` so a
        resumed run refuses teachers that changed.
    """
    fingerprints = {}
    for teacher in teachers:
        model_path = teacher_model_path(teacher)
        if not model_path.is_file():
            raise ValueError(f"Teacher {teacher} holds no model.keras: give run folders "
                             f"written by fit, ensemble or tta. Received: {teacher}")
        run = Run(model_path.parent)
        record = run.config or run.metrics
        protocol = protocol_of(record).name
        if protocol != settings["protocol"]:
            raise ValueError(f"Teacher {teacher} was trained under the {protocol} protocol "
                             f"and the student uses {settings['protocol']}: a teacher must "
                             f"not have trained on the faces the student selects on. Pass "
                             f"--protocol {protocol}, or teachers of the {settings['protocol']} "
                             f"protocol.")
        if labels_of(record) != settings["labels"]:
            raise ValueError(f"Teacher {teacher} was trained on {labels_of(record)} labels "
                             f"and the student on {settings['labels']}: their classes differ.")
        fingerprints[str(teacher)] = source_fingerprint(model_path)
    return fingerprints


def _faces_digest(images):
    """Names the faces a cache was predicted on: a digest of the pixels of an array (or of
    the file list of streamed images)."""
    if isinstance(images, np.ndarray):
        data = np.ascontiguousarray(images).tobytes()
    else:
        data = "\0".join(map(str, getattr(images, "paths", [len(images)]))).encode()
    return f"faces:sha256:{hashlib.sha256(data).hexdigest()}"


def teacher_probabilities(teachers, images, batch_size=512, cache=None,
                          fingerprints=None):
    """Each teacher's probabilities on `images` (a list of `(N, classes)` arrays).

    With `cache` (a `.npz` path) they are read from it when it holds the same teachers
    (by fingerprint) and the same faces (a digest of their pixels), else computed and
    written there.
    """
    key = np.array([*np.array(sorted((fingerprints or {}).items()), dtype=str).reshape(-1),
                    _faces_digest(images)], dtype=str)
    if cache is not None and Path(cache).is_file():
        with np.load(cache) as stored:
            if (np.array_equal(stored["key"], key)
                    and stored["probabilities"].shape[1] == len(images)):
                return list(stored["probabilities"])
    # The zoo and Keras load only when a teacher has to predict.
    from fer_keras.models import load_model
    from fer_keras.training.results import predict_probabilities

    computed = []
    for teacher in teachers:
        model = load_model(teacher_model_path(teacher))
        print(f"Teacher {teacher}: predicting {len(images):,} training faces once",
              flush=True)
        computed.append(predict_probabilities(model, images, batch_size))
    if cache is not None:
        stacked = np.stack(computed)

        def save(path):
            with open(path, "wb") as handle:  # A file object: np.savez adds no ".npz".
                np.savez(handle, key=key, probabilities=stacked)

        # The cache may sit in a search state that other machines share.
        write_atomically(cache, save, clean_stale=False)
    return computed
