"""Count FER2013's exact duplicate faces: inside each split and across the splits.

Usage:

    python -m fer_keras.audit [--data PATH] [--protocol kaggle|study]
        [--near-distance BITS] [--contact-sheet PNG] [--output FILE.json] [--overwrite]

Prints, per split, its faces, distinct faces and redundant copies; then, for each test
split, how many of its faces are exact pixel copies of a face in each other split, and how
many of those copies carry a different label. The test faces with no copy in "train" are
the de-duplicated subset (`fer_keras.data.audit.unseen_mask`).

Under the kaggle protocol (the default) "train" is all of Training, what models under it
learn from; under the study protocol it is 80% of Training and "validation" the other 20%.

`--near-distance BITS` also counts near copies (the same photo re-encoded, re-lit or
cropped a little): faces whose 64-bit perceptual hashes differ in at most BITS bits
(`fer_keras.data.near_duplicates`), and `--contact-sheet PNG` draws 32 of the near pairs
between test and training faces, so the threshold can be checked by eye.

`--output` writes the same figures as JSON, with the data path, its fingerprint and the
protocol. An existing file is never replaced unless `--overwrite` is given.

This module is the command line only; the audit is `fer_keras.data.audit`.
"""

import argparse

from fer_keras.cli import command_prog, entry_point, int_at_least, run_command
from fer_keras.data.audit import audit_source, check_output, format_audit, write_audit
from fer_keras.data.protocols import PROTOCOLS


def build_parser():
    parser = argparse.ArgumentParser(
        prog=command_prog("audit"), description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__[__doc__.index("Prints, per split"):])
    parser.add_argument("--data", help="FER2013 CSV (.csv/.csv.gz) or image folder; default "
                        "$FER2013_PATH, then data/fer2013.csv[.gz]")
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default="kaggle",
                        help="kaggle (default): train is all of Training; study: train is "
                        "80%% of Training, validation the other 20%%")
    parser.add_argument("--near-distance", type=int_at_least(0), metavar="BITS",
                        help="also count near copies: faces whose 64-bit perceptual hashes "
                        "differ in at most BITS bits (4 matched the same photo in every "
                        "pair checked by eye)")
    parser.add_argument("--contact-sheet", metavar="PNG",
                        help="with --near-distance: draw up to 32 near pairs between test "
                        "and training faces into this PNG, to check the threshold by eye")
    parser.add_argument("--output", help="also write the figures to this JSON file")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output file")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        if args.contact_sheet is not None and args.near_distance is None:
            raise ValueError("--contact-sheet draws near pairs: give --near-distance too "
                             "(e.g. --near-distance 4).")
        for path in (args.output, args.contact_sheet):
            if path is not None:
                check_output(path, args.overwrite)
        report = audit_source(args.data, args.protocol, args.near_distance,
                              args.contact_sheet)
        print(format_audit(report, title=f"Exact copies in {report['data']} "
                                         f"({args.protocol} protocol)"))
        if args.output is not None:
            write_audit(report, args.output, args.overwrite)
            print(f"wrote {args.output}")

    return run_command(body)


if __name__ == "__main__":
    entry_point(main)
