"""Run a Keras Tuner search job over learning rate, weight decay and dropout.

Usage:

    python -m fer_keras.tune tuning/JOB.toml [--data PATH] [--limit N] [--output-dir DIR]
        [--runs-dir DIR] [--dry-run] [--summary-only] [--overwrite]
    python -m fer_keras.tune tuning/JOB.toml --compare [--data PATH] [--overwrite]

A job file (TOML) names an experiment, the search-space bounds, the tuner ("hyperband" by
default, "bayesian" or "random"), the objective and the budget; see `tuning/smoke.toml`.
The file is checked before any data is read. The search state lives in `tuning/runs/JOB/`
(git-ignored): run the same command again after an interruption and the search continues
where it stopped, without repeating finished trials. Results go to `tuning/results/JOB/`:
`trials.csv`, `trials.json`, `accuracy_vs_hparams.png` and `best_hparams.json`, which
`python -m fer_keras.fit EXPERIMENT --hparams tuning/results/JOB/best_hparams.json` trains.
After a search, `--compare` trains the untuned experiment for as many epochs as the longest
trial (into `tuning/results/JOB/untuned/`) and writes `comparison.md`/`comparison.json`:
the study's row, the untuned experiment and the best trial side by side.

Distributed search uses Keras Tuner's chief/worker mode: set `KERASTUNER_TUNER_ID`
("chief" for the process that runs the oracle, "tuner0", "tuner1", ... for workers),
`KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT`, and run the same command everywhere.
The chief trains nothing; it exits and writes the results once every worker has been told
that the search is over.

This module is the command line only. The job file's format and checks are in
`fer_keras.tuning.jobs`, running a search (single-process or distributed) in
`fer_keras.tuning.search`, and the result files and `--compare` in `fer_keras.tuning.results`.
"""

import argparse

from fer_keras.cli import command_prog, entry_point, int_at_least, run_command
from fer_keras.tuning.jobs import hyperband_plan, load_job, planned_budget
from fer_keras.tuning.results import compare_untuned
from fer_keras.tuning.search import check_folders, run_job


def build_parser():
    parser = argparse.ArgumentParser(
        prog=command_prog("tune"), description=__doc__.split("\n\n")[0],
        epilog="Distributed: run the same command with KERASTUNER_TUNER_ID=chief on one "
        "process and tuner0, tuner1, ... on the workers, all with KERASTUNER_ORACLE_IP and "
        "KERASTUNER_ORACLE_PORT set to the chief's address.")
    parser.add_argument("job", help="TOML job file, e.g. tuning/deep_emotion.toml")
    parser.add_argument("--data", help="FER2013 CSV (.csv/.csv.gz) or image folder; default "
                        "$FER2013_PATH, then data/fer2013.csv[.gz]")
    parser.add_argument("--limit", type=int_at_least(1), help="use at most N rows of each split "
                        "(quick checks; results are not comparable)")
    parser.add_argument("--output-dir", help="results folder; default results/JOB beside "
                        "the job file")
    parser.add_argument("--runs-dir", help="search state (resumable); default runs/JOB "
                        "beside the job file")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the search state and start over (a folder holding "
                        "anything a search did not write is refused); with --compare, "
                        "replace a finished untuned run trained with other settings")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the job file and its folders, print the planned trials "
                        "and epochs, exit")
    parser.add_argument("--summary-only", action="store_true",
                        help="rewrite the results from the search state without training")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="drop malformed CSV rows instead of stopping at the first one")
    parser.add_argument("--compare", action="store_true",
                        help="after the search: train the untuned experiment for the "
                        "longest trial's epochs and compare it, the best trial and the "
                        "study's row (writes comparison.json/.md)")
    parser.add_argument("--verbose", type=int, choices=[0, 1, 2],
                        help="Keras verbosity per trial; default: progress bar on a "
                        "terminal, one line per epoch otherwise")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        if args.dry_run:
            job = load_job(args.job)
            runs_dir, _, output_dir = check_folders(job, args.runs_dir, args.output_dir,
                                                    args.overwrite and not args.compare)
            trials, epochs = planned_budget(job)
            print(f"{job.path}: experiment {job.experiment}, tuner {job.tuner}, objective "
                  f"{job.objective}; about {trials} trials training {epochs} epochs in all; "
                  f"state in {runs_dir}, results in {output_dir}.")
            if job.tuner == "hyperband":
                for bracket, round_num, size, end, start in hyperband_plan(
                        job.budget["max_epochs"], job.budget["factor"],
                        job.budget["hyperband_iterations"]):
                    print(f"  bracket {bracket} round {round_num}: {size} trials, epochs "
                          f"{start}->{end}")
            return
        verbose = "auto" if args.verbose is None else args.verbose
        if args.compare:
            compare_untuned(args.job, data=args.data, output_dir=args.output_dir,
                            verbose=verbose, skip_bad_rows=args.skip_bad_rows,
                            limit=args.limit, overwrite=args.overwrite)
            return
        run_job(args.job, data=args.data, limit=args.limit, output_dir=args.output_dir,
                runs_dir=args.runs_dir, overwrite=args.overwrite, verbose=verbose,
                skip_bad_rows=args.skip_bad_rows, summary_only=args.summary_only)

    return run_command(body, interrupted="Interrupted. Run the same command again to "
                       "continue; finished trials (and finished epochs of --compare) are kept.")


if __name__ == "__main__":
    entry_point(main)
