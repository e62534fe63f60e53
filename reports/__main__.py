"""Merge results from several runs or shards into one report.

    python -m reports DIR [DIR ...] --out DIR

Each input DIR holds a gradients.csv (a report directory); rows are
concatenated, each (layer, framework, dtype, case, tensor) kept once (the
last input wins), and summary.csv and report.html are rendered anew.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from .render import write_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="report directories to merge")
    parser.add_argument("--out", required=True, type=Path, help="directory for the merged report")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.inputs if not (d / "gradients.csv").is_file()]
    if missing:
        parser.error(f"no gradients.csv in: {', '.join(missing)}")
    rows = pd.concat([pd.read_csv(d / "gradients.csv", keep_default_na=False, na_values=[""])
                      for d in args.inputs], ignore_index=True)
    written = write_report(rows, args.out)
    print(written.text)
    for message in written.warnings:
        print(f"WARNING: {message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
