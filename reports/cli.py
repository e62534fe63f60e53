"""gradparity: gradients of PyTorch and TensorFlow layers against a NumPy oracle.

    gradparity run [-k EXPR] [--frameworks A,B] [--dtypes A,B] [--modes A,B|all] [--profile ci|dev|thorough]
                   [--report-dir DIR] [-n N] [--shard K/N] [-p MODULE] [--strict-precision]
                   [-- PYTEST ARGS]
    gradparity merge DIR [DIR ...] --out DIR
    gradparity drift DIR [DIR ...] --out DIR
    gradparity replay CASE.npz [--framework NAME] [--mode MODE]
    gradparity pair MODULE:FACTORY [--report-dir DIR] [--weights transfer|as_is] [--steps K]

``run`` is pytest on the suite installed with the package (the parity tests
and the oracle's finite-difference check), from any directory; ``merge`` joins
report directories (shards of one run, or several runs); ``drift`` sets reports
from different framework versions side by side; ``replay`` reruns one saved case;
``pair`` compares a PyTorch module with its Keras port, layer by layer.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

SUITE = ["gradparity.tests.test_gradients", "gradparity.tests.test_reference"]


def parse_shard(text: str) -> tuple[int, int]:
    """K/N with 1 <= K <= N (this machine's part of N); ValueError saying so otherwise (``gradparity run
    --shard`` and pytest's ``--gradparity-shard`` both read it here)."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ValueError(f"expected K/N with 1 <= K <= N (this machine's part of N, e.g. 1/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _shard(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _workers(text: str) -> str:
    if text != "auto" and not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of processes or 'auto', got {text!r}")
    return text


def run_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Run the suite: every layer x framework x dtype against "
                                "the oracle, and the oracle against finite differences.")
    p.add_argument("-k", metavar="EXPR", help="only tests matching EXPR (pytest -k), e.g. 'dense and torch'")
    p.add_argument("--frameworks", metavar="A,B", help="frameworks to check (default: every registered one)")
    p.add_argument("--dtypes", metavar="A,B", help="dtypes to check (default: float32,float64)")
    p.add_argument("--modes", metavar="A,B", help="execution modes: eager, compile, inductor (torch.compile), "
                                                  "function, xla (tf.function); all (default: eager)")
    p.add_argument("--profile", choices=["dev", "ci", "thorough"], default="ci",
                   help="examples per test: dev 8, ci 25 derandomized (default), thorough 250 random")
    p.add_argument("--report-dir", metavar="DIR", help="write the report (CSV, HTML, failing cases) into DIR")
    p.add_argument("-n", dest="workers", type=_workers, metavar="N",
                   help="processes to run in (pytest-xdist); default: one")
    p.add_argument("--shard", type=_shard, metavar="K/N",
                   help="run only part K of N (by a hash of each test id: stable across machines); join the reports "
                        "with gradparity merge")
    p.add_argument("-p", dest="plugins", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (a module that registers your own layers and builders)")
    p.add_argument("--strict-precision", action="store_true",
                   help="fail checks whose element-wise precision was lost (more ulps than reports/tolerances.py "
                        "PRECISION allows); by default precision is reported, not judged")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: passed to pytest as they are")
    return p


def pytest_args(args: argparse.Namespace) -> list[str]:
    """The pytest command line for ``gradparity run``: the installed suite, with
    the settings of the directory it runs in left out (its addopts are another
    project's)."""
    from gradparity import tests

    # rootdir at the installed tests: node ids read test_gradients.py::test_...[dense-torch-float32]
    out = ["--pyargs", *SUITE, "-o", "addopts=", "--import-mode=importlib", "-p", "no:cacheprovider",
           "-p", "no:benchmark", f"--rootdir={Path(tests.__file__).parent}", f"--gradparity-profile={args.profile}"]
    for plugin in args.plugins:
        out += ["-p", plugin]
    for option, value in (("-k", args.k), ("--frameworks", args.frameworks), ("--dtypes", args.dtypes),
                          ("--modes", args.modes), ("--report-dir", args.report_dir)):
        if value is not None:  # given empty, it is pytest's to refuse (--frameworks '' names no framework)
            out += [option, value]
    if args.strict_precision:
        out.append("--strict-precision")
    if args.workers is not None:  # work stealing evens out the end, where one slow layer holds a worker
        out += ["-n", args.workers, "--dist", "worksteal"]
    if args.shard:
        out += ["--gradparity-shard", "/".join(map(str, args.shard))]
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    return out + extra


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {"run": "run the suite", "merge": "join report directories into one report",
                "drift": "report directories from different framework versions side by side",
                "replay": "rerun one saved case", "pair": "compare a PyTorch module with its Keras port"}
    if not argv or argv[0] not in commands:
        parser = argparse.ArgumentParser(prog="gradparity", description=__doc__.split("\n\n")[0],
                                         formatter_class=argparse.RawDescriptionHelpFormatter,
                                         epilog="\n".join(f"  {k:<8}{v}" for k, v in commands.items()))
        parser.add_argument("command", choices=list(commands))
        parser.parse_args(argv[:1])  # prints usage (and exits 2) for a missing or unknown command
    command, rest = argv[0], argv[1:]
    if command == "merge":
        from .merge import main as merge

        return merge(rest, prog="gradparity merge")
    if command == "drift":
        from .drift import main as drift

        return drift(rest, prog="gradparity drift")
    if command == "replay":
        from .replay import main as replay

        return replay(rest, prog="gradparity replay")
    if command == "pair":
        from ..adapters.pair.cli import main as pair

        return pair(rest, prog="gradparity pair")
    args = run_parser("gradparity run").parse_args(rest)
    import pytest

    sys.path.insert(0, os.getcwd())  # `-p MODULE` finds a module in the current directory, as `python -m` would
    return int(pytest.main(pytest_args(args)))


if __name__ == "__main__":
    sys.exit(main())
