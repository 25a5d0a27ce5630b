"""The figures `bench` measures, as types: a `BenchReport` holds one `BenchResult` per
experiment.

They read and write the JSON that `python -m fer_keras.bench --json` prints and `--save`
writes (`saved_models/benchmark.json`, `precision_benchmark.json`,
`serving_benchmark.json`), with the same keys: a result's training figures are
`train_images_per_second[_by_precision|_rounds]`, its serving figures
`inference_images_per_second` and `latency_ms_median|p90` (`xla_` ahead for the XLA
export), LiteRT's `litert[_int8]_runtime` and `litert[_int8]_threads_T_latency_ms_median|p90`.
Reading a file and writing it back gives the same JSON: keys this version does not know are
kept, and so is the order the file had its keys in.

>>> report = read_bench_report("saved_models/serving_benchmark.json")
>>> report.results[0].litert.latency[2].median_ms
"""

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

JSONDict = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Latency:
    """Batch-1 latency in milliseconds: the median and 90th percentile of timed calls
    (None where a hand-written file gives only the median)."""

    median_ms: float
    p90_ms: float | None = None


@dataclasses.dataclass(frozen=True)
class ServingFigures:
    """A SavedModel served in a fresh process: batch-256 images/s and batch-1 latency."""

    inference_images_per_second: float
    latency: Latency

    def to_json(self, prefix: str = "") -> JSONDict:
        return {f"{prefix}inference_images_per_second": self.inference_images_per_second,
                f"{prefix}latency_ms_median": self.latency.median_ms,
                f"{prefix}latency_ms_p90": self.latency.p90_ms}

    @classmethod
    def from_json(cls, row: Mapping[str, Any], prefix: str = "") -> "ServingFigures | None":
        """The figures under `prefix` ("" or "xla_") in a result row, or None if absent."""
        if f"{prefix}latency_ms_median" not in row:
            return None
        return cls(row[f"{prefix}inference_images_per_second"],
                   Latency(row[f"{prefix}latency_ms_median"], row[f"{prefix}latency_ms_p90"]))


@dataclasses.dataclass(frozen=True)
class LiteRTFigures:
    """A TFLite file run by LiteRT at batch 1: latency per thread count, or why it failed.

    Attributes:
        runtime: the runtime's name ("ai-edge-litert"); None with `error`.
        latency: `{threads: Latency}`.
        error: why the SavedModel did not convert, or None.
    """

    runtime: str | None = None
    latency: dict[int, Latency] = dataclasses.field(default_factory=dict)
    error: str | None = None

    @property
    def ran(self) -> bool:
        """Whether the file records that LiteRT ran (its runtime) or failed to convert."""
        return self.runtime is not None or self.error is not None

    def to_json(self, prefix: str) -> JSONDict:
        if self.error is not None:
            return {f"{prefix}_error": self.error}
        row: JSONDict = {} if self.runtime is None else {f"{prefix}_runtime": self.runtime}
        for threads, latency in self.latency.items():
            row[f"{prefix}_threads_{threads}_latency_ms_median"] = latency.median_ms
            if latency.p90_ms is not None:
                row[f"{prefix}_threads_{threads}_latency_ms_p90"] = latency.p90_ms
        return row

    @classmethod
    def from_json(cls, row: Mapping[str, Any], prefix: str) -> "LiteRTFigures | None":
        """The figures under `prefix` ("litert" or "litert_int8"), or None if absent."""
        if f"{prefix}_error" in row:
            return cls(error=row[f"{prefix}_error"])
        pattern = re.compile(rf"{prefix}_threads_(\d+)_latency_ms_median")
        latency = {int(found.group(1)): Latency(row[key], row.get(key[:-len("median")] + "p90"))
                   for key in row for found in [pattern.fullmatch(key)] if found}
        if f"{prefix}_runtime" not in row and not latency:
            return None
        return cls(runtime=row.get(f"{prefix}_runtime"), latency=latency)


@dataclasses.dataclass(frozen=True)
class TrainingFigures:
    """Training images/s under one dtype policy: the median of the rounds, and each round
    (None when training was timed once)."""

    images_per_second: float
    rounds: list[float] | None = None


@dataclasses.dataclass(frozen=True)
class PeerFigures:
    """The PyTorch peer script's training throughput, measured just before ours.

    Attributes:
        train_images_per_second: the peer's training images/s (None with `error`).
        parameters: the peer's parameter count.
        train_ratio: ours / the peer's, only for experiments without augmentation.
        error: why the peer gave no figure, or None.
    """

    train_images_per_second: float | None = None
    parameters: int | None = None
    train_ratio: float | None = None
    error: str | None = None

    def to_json(self) -> JSONDict:
        if self.error is not None:
            return {"peer_error": self.error}
        row = {"peer_train_images_per_second": self.train_images_per_second,
               "peer_parameters": self.parameters}
        if self.train_ratio is not None:
            row["train_ratio_to_peer"] = self.train_ratio
        return row

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> "PeerFigures | None":
        if "peer_error" in row:
            return cls(error=row["peer_error"])
        if "peer_train_images_per_second" not in row:
            return None
        return cls(row["peer_train_images_per_second"], row.get("peer_parameters"),
                   row.get("train_ratio_to_peer"))


TRAINING_KEY = "train_images_per_second"
"""The training figure; with the prefix "model_", that of the network alone."""


def _training_from_json(row: Mapping[str, Any], prefix: str) -> dict[str, TrainingFigures]:
    rates = row.get(f"{prefix}{TRAINING_KEY}_by_precision", {})
    rounds = row.get(f"{prefix}{TRAINING_KEY}_rounds", {})
    return {precision: TrainingFigures(rate, rounds.get(precision))
            for precision, rate in rates.items()}


def _training_to_json(figures: Mapping[str, TrainingFigures], prefix: str) -> JSONDict:
    if not figures:
        return {}
    row: JSONDict = {f"{prefix}{TRAINING_KEY}_by_precision": {
        precision: each.images_per_second for precision, each in figures.items()}}
    rounds = {precision: each.rounds for precision, each in figures.items()
              if each.rounds is not None}
    if rounds:
        row[f"{prefix}{TRAINING_KEY}_rounds"] = rounds
    return row


def _ordered(row: JSONDict, key_order: tuple[str, ...]) -> JSONDict:
    """`row` with the keys of `key_order` first, in that order (a file's own order)."""
    if not key_order:
        return row
    first = {key: row[key] for key in key_order if key in row}
    return {**first, **{key: value for key, value in row.items() if key not in first}}


@dataclasses.dataclass
class BenchResult:
    """One experiment's figures (`fer_keras.benchmarks.bench.bench_experiment`).

    Attributes:
        experiment, model, augmentation: what was measured.
        parameters: `count_params()` of the experiment's model.
        serving: the exported SavedModel in a fresh process.
        forward_passes: per face at inference (2 for a mirror-averaged net); None in
            files written before it was recorded.
        litert, litert_int8: the float and int8 TFLite files under LiteRT, if timed.
        xla: the XLA-compiled SavedModel, if timed (`--jit-compile`).
        train_images_per_second: training images/s under the first precision timed; None
            when training was not timed (`--serving-only`).
        training: `{precision: TrainingFigures}` through fit's pipeline.
        network_alone: `{precision: TrainingFigures}` of the network alone (`--model-only`).
        rounds: how many times training was timed under each precision, when more than once.
        peer: the PyTorch peer's figures (`--peer`).
        extra: keys of the JSON row this version does not know, written back as they were.
        key_order: the keys in the order the JSON row had them (empty: bench's own order).
    """

    experiment: str
    model: str
    augmentation: str | None
    parameters: int
    serving: ServingFigures
    forward_passes: int | None = None
    litert: LiteRTFigures | None = None
    litert_int8: LiteRTFigures | None = None
    xla: ServingFigures | None = None
    train_images_per_second: float | None = None
    training: dict[str, TrainingFigures] = dataclasses.field(default_factory=dict)
    network_alone: dict[str, TrainingFigures] = dataclasses.field(default_factory=dict)
    rounds: int | None = None
    peer: PeerFigures | None = None
    extra: JSONDict = dataclasses.field(default_factory=dict)
    key_order: tuple[str, ...] = dataclasses.field(default=(), compare=False, repr=False)

    def to_json(self) -> JSONDict:
        """The row as `bench --json` writes it."""
        row: JSONDict = {"experiment": self.experiment, "model": self.model,
                         "augmentation": self.augmentation, "parameters": self.parameters}
        if self.forward_passes is not None:
            row["forward_passes"] = self.forward_passes
        row.update(self.serving.to_json())
        for prefix, figures in (("litert", self.litert), ("litert_int8", self.litert_int8)):
            if figures is not None:
                row.update(figures.to_json(prefix))
        if self.xla is not None:
            row.update(self.xla.to_json("xla_"))
        row.update(_training_to_json(self.training, ""))
        row.update(_training_to_json(self.network_alone, "model_"))
        if self.train_images_per_second is not None:
            row[TRAINING_KEY] = self.train_images_per_second
        if self.rounds is not None:
            row["rounds"] = self.rounds
        if self.peer is not None:
            row.update(self.peer.to_json())
        row.update(self.extra)
        return _ordered(row, self.key_order)

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> "BenchResult":
        """A result from its JSON row (a `bench --json` result, or one of a saved file)."""
        result = cls(
            experiment=row["experiment"], model=row["model"],
            augmentation=row.get("augmentation"), parameters=row["parameters"],
            serving=ServingFigures.from_json(row), forward_passes=row.get("forward_passes"),
            litert=LiteRTFigures.from_json(row, "litert"),
            litert_int8=LiteRTFigures.from_json(row, "litert_int8"),
            xla=ServingFigures.from_json(row, "xla_"),
            train_images_per_second=row.get(TRAINING_KEY),
            training=_training_from_json(row, ""),
            network_alone=_training_from_json(row, "model_"),
            rounds=row.get("rounds"), peer=PeerFigures.from_json(row), key_order=tuple(row))
        known = set(result.to_json())
        result.extra = {key: value for key, value in row.items() if key not in known}
        return result


ResultLike = Union[BenchResult, Mapping[str, Any]]
"""A `BenchResult` or its JSON row: what the table functions take."""


def as_result(row: ResultLike) -> BenchResult:
    """`row` as a `BenchResult` (a JSON row is read with `BenchResult.from_json`)."""
    return row if isinstance(row, BenchResult) else BenchResult.from_json(row)


@dataclasses.dataclass
class BenchReport:
    """What `bench --json` prints and `--save` writes.

    Attributes:
        environment: the machine and library versions (`fer_keras.benchmarks.bench.
            environment`): machine, processor, cpu_count, load_average, tensorflow, keras,
            devices.
        method: what was timed, in words, by part ("training", "inference", "latency",
            "litert", ...; `fer_keras.benchmarks.bench.method`).
        results: one `BenchResult` per experiment.
        command: the command line that measured them (None in files that lack it).
        extra, key_order: as for `BenchResult`.
    """

    environment: JSONDict
    method: dict[str, str]
    results: list[BenchResult]
    command: str | None = None
    extra: JSONDict = dataclasses.field(default_factory=dict)
    key_order: tuple[str, ...] = dataclasses.field(default=(), compare=False, repr=False)

    def to_json(self) -> JSONDict:
        report: JSONDict = {} if self.command is None else {"command": self.command}
        report.update(environment=self.environment, method=self.method,
                      results=[result.to_json() for result in self.results], **self.extra)
        return _ordered(report, self.key_order)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "BenchReport":
        known = {"command", "environment", "method", "results"}
        return cls(environment=data["environment"], method=data["method"],
                   results=[BenchResult.from_json(row) for row in data["results"]],
                   command=data.get("command"),
                   extra={key: value for key, value in data.items() if key not in known},
                   key_order=tuple(data))

    def to_text(self) -> str:
        """The JSON text `bench --save` writes (2-space indents, a final newline)."""
        return json.dumps(self.to_json(), indent=2) + "\n"

    def write(self, path: str | Path) -> Path:
        """Writes `to_text()` to `path` (its folder is made); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_text())
        return path


def read_bench_report(path: str | Path) -> BenchReport:
    """The `BenchReport` saved at `path` (`bench --save PATH`)."""
    return BenchReport.from_json(json.loads(Path(path).read_text()))
