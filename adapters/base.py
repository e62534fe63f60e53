"""The adapter protocol: what every framework module provides.

An adapter turns a Case (canonical layout, NumPy) into the framework's own
objects (the layer classes users use), runs forward, builds
``loss = sum(out * g)``, runs the framework's own backward, and returns the
output and gradients converted back to the canonical layout. All layout
conversion lives in the adapter; frameworks are imported lazily, on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..reference import Case


class NotApplicable(Exception):
    """The configuration cannot be expressed in this framework (the row says why)."""


def same(v):
    """The layout conversion for a gradient already in the canonical layout."""
    return v


def by_name(*builders) -> dict:
    """A builder table from functions named after their catalogue layer."""
    return {b.__name__: b for b in builders}


@dataclass(frozen=True)
class Output:
    out: np.ndarray
    grads: dict


@dataclass(frozen=True)
class Convention:
    """A choice this framework makes where the math leaves one open, and why we believe it."""

    values: dict
    reason: str


class Adapter(Protocol):
    name: str

    def available(self) -> tuple[bool, str]:
        """(True, "") when the framework imports; else (False, why), for a skip message."""

    def version(self) -> str: ...

    def convention(self, layer: str) -> Convention | None:
        """The values of the layer's convention attributes this framework follows, and why."""

    def run(self, case: Case) -> Output:
        """Forward and backward through the framework; raise NotApplicable when the
        configuration cannot be expressed in it."""
