"""Reading a run folder: `Run(path)` and what its `config.json` and `metrics.json` record.

Writing one is the run-folder transaction's job (`fer_keras.training.run_folder`).

>>> run = Run("saved_models/fer_vgg_kaggle")
>>> run.protocol.selection_split, run.is_finished
('public_test', True)
"""

import functools
import json
import os
from pathlib import Path
from typing import Any

from fer_keras.data.protocols import Protocol, protocol_of


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or {} when the file is missing."""
    if not path.exists():
        return {}
    return json.loads(path.read_text())


class Run:
    """A run folder as fit (or ensemble, tta, rebalance) wrote it.

    The files are read on first use and then kept.

    Attributes:
        path: the folder.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @functools.cached_property
    def config(self) -> dict[str, Any]:
        """The run's `config.json` (settings, seed, data), or {} when it has none."""
        return _read_json(self.path / "config.json")

    @functools.cached_property
    def metrics(self) -> dict[str, Any]:
        """The run's `metrics.json` (scores per split, epochs, speed), or {} when it has
        none (an unfinished run)."""
        return _read_json(self.path / "metrics.json")

    @property
    def model_path(self) -> Path:
        """Where the run's model is: `model.keras` in the folder."""
        return self.path / "model.keras"

    @property
    def protocol(self) -> Protocol:
        """The protocol the run was trained under: its config's, else its metrics', else
        the default for records that name none (`fer_keras.data.protocols`)."""
        record = self.config if "protocol" in self.config else self.metrics
        return protocol_of(record)

    @property
    def is_finished(self) -> bool:
        """Whether the folder holds a finished run: its `metrics.json`, as the run-folder
        transaction judges it (`check_output_folder`)."""
        return (self.path / "metrics.json").exists()
