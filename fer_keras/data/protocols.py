"""Evaluation protocols as records: what a model trains on, which split picks its epoch.

Every module asks a `Protocol` instead of comparing protocol names. Under both protocols
PrivateTest is never trained or selected on.

>>> get_protocol("kaggle").selection_split
'public_test'
>>> get_protocol("study").validation_is_public_test
False
"""

import dataclasses

from fer_keras.utils.names import did_you_mean


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One evaluation protocol.

    Attributes:
        name: the name in experiments, flags and run folders ("study", "kaggle").
        trains_on: words for the training faces, as `fit` prints them.
        selects_on: words for the faces that pick the best epoch.
        selection_split: the key under `metrics.json`'s `splits` that selects: the run's
            "validation" split is `selection_split`'s rows.
        validation_is_public_test: whether the "validation" split is PublicTest itself
            (then a run's validation and public_test scores are one measurement).
    """

    name: str
    trains_on: str
    selects_on: str
    selection_split: str
    validation_is_public_test: bool


STUDY = Protocol("study", "80% of Training (stratified)", "the other 20% of Training",
                 selection_split="validation", validation_is_public_test=False)
"""The course study's protocol: 22,967 training faces and a 5,742-face validation split
cut from Training."""
KAGGLE = Protocol("kaggle", "all of Training", "PublicTest", selection_split="public_test",
                  validation_is_public_test=True)
"""The one the published FER2013 records use: all 28,709 Training faces, the best epoch
picked on PublicTest, PrivateTest reported."""

PROTOCOLS = {protocol.name: protocol for protocol in (STUDY, KAGGLE)}
DEFAULT_PROTOCOL = STUDY.name
"""What a run folder that records no protocol (older versions) was trained under."""


def get_protocol(name=None):
    """The `Protocol` called `name` (None: the default, for records that name none).

    Raises:
        ValueError: for an unknown name, naming the known ones.
    """
    if name is None:
        name = DEFAULT_PROTOCOL
    if isinstance(name, Protocol):
        return name
    if name not in PROTOCOLS:
        raise ValueError(f"Unknown protocol. Use one of {', '.join(PROTOCOLS)}."
                         f"{did_you_mean(name, list(PROTOCOLS))} Received: protocol={name!r}")
    return PROTOCOLS[name]


def protocol_of(record):
    """The `Protocol` a run's `config.json` or `metrics.json` dict records."""
    return get_protocol((record or {}).get("protocol"))
