"""Replay one saved case: ``python -m reports.replay CASE.npz [--framework NAME]``.

Every row that did not pass names its case file; this runs that exact case
again through the oracle and the framework(s) and prints the comparison.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..adapters import ADAPTERS
from ..reference import load

from .compare import check


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.replay", description=__doc__.splitlines()[0])
    parser.add_argument("case", help="a case file (.npz) from a report's cases/ folder")
    parser.add_argument("--framework", choices=sorted(ADAPTERS), action="append",
                        help="framework(s) to run; default: all available")
    args = parser.parse_args(argv)
    case = load(args.case)
    print(case.describe(), f"(case {case.id})")
    np.set_printoptions(precision=10, linewidth=120)
    for name, arr in case.arrays.items():
        print(f"{name} =\n{arr}")
    print(f"g =\n{case.g}")
    worst = 0
    for name in args.framework or sorted(ADAPTERS):
        adapter = ADAPTERS[name]
        ok, why = adapter.available()
        if not ok:
            print(f"{name}: skipped: {why}")
            continue
        for r in check(case, adapter):
            print(f"{name:<10} {r['tensor']:<8} {r['status']:<16} err_eps={r['err_eps']:<10.3g} "
                  f"atol={r['atol']:<10.3g} {r['detail']}")
            worst = max(worst, r["status"] in ("fail", "error"))
    return worst


if __name__ == "__main__":
    sys.exit(main())
