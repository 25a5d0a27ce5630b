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
The blocks and what each is generated from: `fer_keras.reporting.report.BLOCKS`.
"""

import argparse
import sys
from pathlib import Path

from fer_keras.cli import command_prog
from fer_keras.reporting.report import render_pages


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
    runs, outputs = render_pages(args.root, args.readme, args.docs, args.tuning)
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
