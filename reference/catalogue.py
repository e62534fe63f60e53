"""The catalogue: every layer exactly once, with what it takes and where its edges are.

An entry (a ``Layer``, see spec.py) names the oracle pair, the free sizes, the
attributes with their ranges, and the arrays (inputs and parameters) with their
shapes and value domains. Strategies, validation, test ids and report rows all
read from here. Each family module (dense.py, activations.py, conv.py, ...)
registers its layers right below their oracle pairs, so a layer is read in one
place; this module holds only the registry and the vocabulary several families
share. Canonical layouts are the oracle's (see each docstring).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Callable

import numpy as np

from .spec import Choice, Drawn, Edge, Layer

LAYERS: dict[str, Layer] = {}


def register(layer: Layer) -> Layer:
    """Add a layer to the catalogue (also the way a user adds their own: see the
    README, "Checking your own layer"). Names are unique."""
    if not isinstance(layer, Layer):
        raise TypeError(f"register() takes a Layer, got {type(layer).__name__}")
    if layer.name in LAYERS:
        raise ValueError(f"layer {layer.name!r} is already in the catalogue")
    LAYERS[layer.name] = layer
    return layer


def registrar(family: str) -> Callable[[Layer], Layer]:
    """``register`` for a family module: each layer it registers is shown under ``family``."""
    return lambda layer: register(dataclasses.replace(layer, family=family))


def S(*names):
    """A shape rule from dim names: ``S("N", "I")`` -> ``(dims.N, dims.I)``; a
    ``Shape`` dim contributes all its sides."""

    def shape(d: SimpleNamespace, attrs: dict) -> tuple:
        out = ()
        for n in names:
            v = getattr(d, n)
            out += tuple(v) if isinstance(v, tuple) else (v,)
        return out

    return shape


def of_dim(dim: str) -> Drawn:
    """An integer attribute equal to a drawn dim (another attribute's range, or an
    array's shape, depends on it: groups that divide the channels)."""
    return Drawn(int, lambda d: Choice(getattr(d, dim)))


# ---- edges: the named corners a layer's cases must reach (see spec.Edge) ---------
# Each reads a case (attributes, shapes, values); ``force`` is how a plan lands on it.

def batched(case) -> bool:
    """Whether x has its batch axis (PyTorch's unbatched form drops it)."""
    return case.attrs.get("batched", True)


def batch_of(n: int, array: str = "x") -> Edge:
    """The batch (leading) axis of ``array`` has length n: one example, or none at all."""
    return Edge(f"batch_{n}", lambda c: batched(c) and c.arrays[array].shape[0] == n, {"N": n})


UNBATCHED = Edge("unbatched", lambda c: c.attrs["batched"] is False, {"batched": False})


def attr_is(attr: str, value, name: str | None = None) -> Edge:
    """An attribute at one of its values (a reduction, a mode, a route)."""
    return Edge(name or f"{attr}_{value}", lambda c: c.attrs[attr] == value, {attr: value})


def without(array: str, name: str | None = None) -> Edge:
    """An optional array left out (a layer without its bias)."""
    return Edge(name or f"no_{array}", lambda c: array not in c.arrays)


def holds(name: str, array: str, test, force: dict | None = None) -> Edge:
    """Some value of ``array`` passes ``test`` (an exact 0 at a kink, a saturating magnitude)."""
    return Edge(name, lambda c: array in c.arrays and bool(np.any(test(np.asarray(c.arrays[array], dtype=float)))),
                force or {})


def _float_arrays(case):
    return [a for a in case.arrays.values() if a.dtype.kind == "f"]


def _subnormal(a):
    with np.errstate(invalid="ignore"):
        return (a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)


NONFINITE = Edge("nan_or_inf", lambda c: any(bool(np.any(~np.isfinite(a))) for a in _float_arrays(c)),
                 {"special": "nonfinite"})
SUBNORMAL = Edge("subnormal", lambda c: any(bool(np.any(_subnormal(a))) for a in _float_arrays(c)),
                 {"special": "subnormal"})
SPECIALS = (NONFINITE, SUBNORMAL)  # for a layer that declares non-finite inputs; SUBNORMAL alone otherwise
