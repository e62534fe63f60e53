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

from .spec import Choice, Drawn, Layer

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
