"""Replay one saved case: ``gradparity replay CASE.npz [--framework NAME] [--mode MODE]``
(or ``python -m gradparity.reports.replay``).

Every row that did not pass names its case file; this runs that exact case
again through the oracle and the framework(s) and prints the comparison.
Exit status: 0 when every check passed (or is a known divergence / not
applicable), 1 when one failed or errored, 2 when the case cannot be read.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..adapters import ADAPTERS, runner as runner_of
from ..reference import Oracle, load
from .compare import check, with_eager_distance


def main(argv=None, prog: str = "python -m gradparity.reports.replay") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("case", help="a case file (.npz) from a report's cases/ folder")
    parser.add_argument("--framework", choices=sorted(ADAPTERS), action="append",
                        help="framework(s) to run; default: all available")
    parser.add_argument("--mode", default="eager",
                        help="execution mode: eager (default), compile or inductor (torch), function or xla "
                             "(tensorflow); a compiled mode also says how far it is from eager")
    args = parser.parse_args(argv)
    try:
        case = load(args.case)
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(case.describe(), f"(case {case.id})")
    np.set_printoptions(precision=10, linewidth=120)
    for name, arr in case.arrays.items():
        print(f"{name} =\n{arr}")
    for name, g in case.cotangents.items():
        print(f"cotangent of {name} =\n{g}")
    worst = 0
    for name in args.framework or sorted(ADAPTERS):
        try:
            runner = runner_of(name if args.mode == "eager" else f"{name}.{args.mode}")
        except KeyError as e:
            if args.framework:
                print(f"{prog}: error: {e.args[0]}", file=sys.stderr)
                return 2
            print(f"{name}: skipped: {e.args[0]}")
            continue
        ok, why = getattr(runner, "mode_available", runner.available)()
        if not ok:
            print(f"{name}: skipped: {why}")
            continue
        try:
            rows = with_eager_distance(check(case, Oracle(), runner), case, runner)
        except ValueError as e:
            print(f"{prog}: error: invalid case: {e}", file=sys.stderr)
            return 2
        label = getattr(runner, "label", name)
        for r in rows:
            apart = f" vs_eager_eps={r['vs_eager_eps']:.3g}" if r.get("vs_eager_eps") not in (None, "") else ""
            print(f"{label:<10} {r['kind']:<4} {r['name']:<8} {r['status']:<16} err_eps={r['err_eps']:<10.3g} "
                  f"atol={r['atol']:<10.3g}{apart} {r['detail']}")
            worst = max(worst, int(r["status"] in ("fail", "error")))
    return worst


if __name__ == "__main__":
    sys.exit(main())
