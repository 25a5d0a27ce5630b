"""Measure each experiment's size, training speed and serving speed on this machine.

Usage:

    python -m fer_keras.bench [EXPERIMENT ...] [--steps N] [--json]
    python -m fer_keras.bench --all --serving-only --save saved_models/serving_benchmark.json
    python -m fer_keras.bench baseline --backend tensorflow jax torch
    python -m fer_keras.bench baseline_aug --stream-folder /tmp/fer2013_folder [--data CSV]

With no names, the 13 rows of the study's Table 1 are measured (`--all`: every registered
experiment): the parameters, training images/s (`--serving-only` skips it), and the
exported model's inference images/s and batch-1 latency, as a SavedModel and with LiteRT.
What each figure is and how it is timed: `fer_keras.benchmarks.bench`.

With `--peer PATH/torch_peer.py` (the study's framework, PyTorch: `pip install torch`), the
peer script is run in a subprocess right before each experiment, for the architectures it
knows, and its training images/s and our ratio to it are added: the two are measured in
one run, on the same machine, minutes apart. The peer trains on pre-made tensors without
augmentation; ours goes through `fit`'s input pipeline, so a ratio is only printed for
experiments without augmentation (the peer's names: baseline, baseline_deep_dropout,
deep_emotion).

`--backend tensorflow jax torch` measures only training images/s, of the same net on each
Keras backend side by side, each in its own process (`fer_keras.benchmarks.throughput`); the
TensorFlow backend trains on `tf.data`, JAX and PyTorch on the NumPy `PyDataset`.
`--stream-folder DIR` compares reading an image folder into memory against streaming it
from disk a batch at a time (`fit --stream`): input-pipeline and training images/s of the
first experiment (DIR is first written from the `--data` CSV as PNG files if it has no
`train/`).
"""

import argparse
import json
import os
import sys
from pathlib import Path

from fer_keras.benchmarks.bench import (
    DEFAULT_STEPS,
    SERVING_ONEDNN,
    add_peer,
    bench_experiment,
    environment,
    format_table,
    method,
    run_peer,
)
from fer_keras.benchmarks.results import BenchReport
from fer_keras.cli import command_prog, entry_point, int_at_least, run_command
from fer_keras.training.experiments import (
    PRECISIONS,
    STUDY_EXPERIMENTS,
    get_experiment,
    list_experiments,
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog=command_prog("bench"), description=__doc__.split("\n\n")[0],
        epilog="Experiments: " + ", ".join(list_experiments()))
    parser.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                        help="experiment names; default the study's 13 rows")
    parser.add_argument("--steps", type=int_at_least(1), default=DEFAULT_STEPS,
                        help=f"timed training steps per epoch and inference batches "
                        f"(default {DEFAULT_STEPS}); batch-1 latency uses 10x as many calls")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--serving-onednn", choices=SERVING_ONEDNN, default="default",
                        help="oneDNN in the process that serves the SavedModel: TensorFlow's "
                        "default for this CPU (as TF Serving would run), on or off")
    parser.add_argument("--precision", nargs="+", choices=list(PRECISIONS),
                        help="time training under each of these dtype policies, side by side "
                        "(e.g. --precision float32 mixed_bfloat16); default: the experiment's")
    parser.add_argument("--model-only", action="store_true",
                        help="also time training of the network alone under each --precision "
                        "(cached batches, no augmentation): the network's own speed-up, "
                        "apart from the input pipeline's")
    parser.add_argument("--rounds", type=int_at_least(1), default=1,
                        help="time training this many times under each --precision, taking "
                        "turns, and report each one's median (default 1)")
    parser.add_argument("--jit-compile", action="store_true",
                        help="also measure batch-1 latency of an XLA-compiled export "
                        "(python -m fer_keras.export --jit-compile)")
    parser.add_argument("--all", action="store_true",
                        help="every registered experiment (the study's rows and ours)")
    parser.add_argument("--serving-only", action="store_true",
                        help="skip training; time only the exported model (SavedModel and "
                        "LiteRT), built with fresh weights: a float model's speed does not "
                        "depend on its weights")
    parser.add_argument("--int8", action="store_true",
                        help="also time an int8 TFLite file with LiteRT (quantized as export "
                        "--quantize int8 does, calibrated on random pixels: speed only)")
    parser.add_argument("--no-litert", action="store_true",
                        help="skip the LiteRT (TFLite) batch-1 latency columns")
    parser.add_argument("--peer", metavar="SCRIPT",
                        help="PyTorch peer script (shared/bench/torch_peer.py) run before "
                        "each experiment it knows; adds its training images/s and our ratio")
    parser.add_argument("--backend", nargs="+", choices=["tensorflow", "jax", "torch"],
                        help="instead of the full table: training images/s of the first "
                        "experiment on each Keras backend, side by side (one process each)")
    parser.add_argument("--stream-folder", metavar="DIR",
                        help="instead of the full table: in-memory against streamed reading "
                        "of the image folder DIR (written from --data first if it has no "
                        "train/), pipeline and training images/s of the first experiment")
    parser.add_argument("--data", help="FER2013 CSV to write --stream-folder DIR from "
                        "(default $FER2013_PATH, then data/fer2013.csv[.gz])")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (environment, method, results)")
    parser.add_argument("--save", metavar="PATH",
                        help="also write that JSON object to PATH (e.g. to keep the figures "
                        "behind a README table)")
    return parser


def _throughput(args, experiment):
    """`--backend` and `--stream-folder`: training throughput only
    (`fer_keras.benchmarks.throughput`)."""
    from fer_keras.benchmarks import throughput  # Loads the data sources only when asked.

    if args.backend:
        rows = throughput.compare_backends(experiment, args.backend, args.steps, args.seed)
        report = {"experiment": experiment, "load_average": os.getloadavg(), "results": rows}
        text = throughput.format_backends(rows)
    else:
        folder = Path(args.stream_folder)
        if not (folder / "train").is_dir():
            from fer_keras.data.sources import resolve_data_path

            source = resolve_data_path(args.data)
            print(f"writing {source} as PNG files under {folder} ...", file=sys.stderr,
                  flush=True)
            throughput.write_image_folder(source, folder)
        report = throughput.compare_pipelines(folder, experiment, train_steps=args.steps,
                                              seed=args.seed)
        report["load_average"] = os.getloadavg()
        text = throughput.format_pipelines(report)
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(report, indent=2) + "\n")
    load = " ".join(f"{value:.2f}" for value in report["load_average"])
    print(json.dumps(report, indent=2) if args.json else f"load average {load}\n{text}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.all and args.experiments:
        build_parser().error("give experiment names or --all, not both")
    names = list(list_experiments()) if args.all else (args.experiments
                                                       or list(STUDY_EXPERIMENTS))

    def body():
        for name in names:
            get_experiment(name)  # Unknown names fail before anything is timed.
        if args.peer and not Path(args.peer).is_file():
            raise ValueError(f"--peer: no such script: {args.peer}. Pass the path of "
                             f"torch_peer.py (shared/bench/torch_peer.py beside the project).")
        if args.steps < 1:
            raise ValueError(f"--steps must be a positive integer. Received: "
                             f"steps={args.steps}")
        if args.model_only and args.serving_only:
            raise ValueError("--model-only times training; it cannot go with --serving-only.")
        if args.backend or args.stream_folder:
            return _throughput(args, names[0])
        env = environment()
        results = []
        for name in names:
            if not args.json:
                print(f"measuring {name} ...", file=sys.stderr, flush=True)
            peer = run_peer(args.peer, name) if args.peer else None
            result = bench_experiment(name, steps=args.steps, seed=args.seed,
                                      serving_onednn=args.serving_onednn,
                                      jit_compile=args.jit_compile,
                                      litert=not args.no_litert,
                                      precisions=args.precision,
                                      serving_only=args.serving_only,
                                      int8=args.int8, model_only=args.model_only,
                                      rounds=args.rounds)
            results.append(add_peer(result, peer) if peer is not None else result)
        command = " ".join(["python -m fer_keras.bench", *(argv if argv is not None
                                                           else sys.argv[1:])])
        report = BenchReport(command=command, environment=env,
                             method=method(args.steps, args.serving_onednn, not args.no_litert,
                                           args.serving_only, args.int8, args.model_only,
                                           args.rounds),
                             results=results)
        if args.save:
            report.write(args.save)
        if args.json:
            print(json.dumps(report.to_json(), indent=2))
        else:
            print(format_table(results, env, args.steps, args.serving_onednn))

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
