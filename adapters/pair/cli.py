"""``gradparity pair MODULE:FACTORY``: a user's ported model pair from the command line.

``FACTORY()`` (found in MODULE, imported from the current directory or any importable package)
returns a ``Pair``. Exit status 0 when every compared tensor agrees within tolerance and every
layer is paired, 1 when something diverges, 2 when the pair cannot be compared as given (the
message says why, in one line).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path


def _factory(spec: str):
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise ValueError(f"expected MODULE:FACTORY (e.g. ported_cnn:pair), got {spec!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import {module_name!r} ({e}); run from its directory or install it") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{module_name} has no callable {attr!r}")
    return factory


def main(argv=None, prog: str = "gradparity pair") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Compare a PyTorch module with its Keras port, layer by "
                                                            "layer: outputs, incoming gradients, parameter gradients")
    parser.add_argument("factory", metavar="MODULE:FACTORY", help="FACTORY() returns gradparity.adapters.pair.Pair")
    parser.add_argument("--report-dir", type=Path, default=None, metavar="DIR", help="write the report into DIR")
    parser.add_argument("--weights", choices=("transfer", "as_is"), default="transfer",
                        help="transfer: load the Keras model with the PyTorch weights (default); as_is: check the "
                             "weights already there, and name a layer whose weights differ")
    parser.add_argument("--modes", default="eval,train", help="eval, train or both (default: eval,train)")
    parser.add_argument("--steps", type=int, default=0, help="also train both this many steps and say where the "
                                                            "parameters part")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    args = parser.parse_args(argv)
    from . import Pair, PairError, compare_models

    try:
        made = _factory(args.factory)()
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the user's factory: its failure is one line, not a traceback
        print(f"{prog}: error: {args.factory}() raised {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if not isinstance(made, Pair):
        print(f"{prog}: error: {args.factory}() must return gradparity.adapters.pair.Pair, got "
              f"{type(made).__name__}", file=sys.stderr)
        return 2
    try:
        result = compare_models(made.torch, made.keras, made.inputs, target=made.target, loss=made.loss,
                                keras_inputs=made.keras_inputs, pairing=made.pairing, weights=args.weights,
                                modes=[m for m in args.modes.split(",") if m], steps=args.steps,
                                optimizer=args.optimizer, report_dir=args.report_dir)
    except PairError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(result.summary())
    for step in result.trajectory:
        print(f"  step {step['step']}: parameters apart by {step['max relative parameter difference']:.3g} "
              f"(relative){'' if step['within'] else '  <- parted'}")
    if args.report_dir is not None:
        print(f"report: {args.report_dir / 'report.html'}")
    return 0 if result.passed else 1
