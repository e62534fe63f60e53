"""Unbatched inputs: a layer written for a batch, applied to one example.

PyTorch's convolutions and poolings take an input without its batch axis
((C, H, W) for a 2-d layer) and answer without one. ``unbatched(forward, vjp)``
gives any batched oracle pair that form, once: attribute ``batched`` False
adds a batch axis of 1 to ``x``, runs the batched pair, and removes the axis
from ``y`` and from the gradient of ``x`` (parameters keep their shapes).
"""

from __future__ import annotations

from functools import wraps

import numpy as np

from .spec import require


def unbatched(forward, vjp):
    """The oracle pair ``(forward, vjp)`` taking attribute ``batched`` (True: as before)."""

    @wraps(forward)
    def forward_(x, *, batched, **rest):
        require(isinstance(batched, bool), "batched", f"expected True or False, got {batched!r}")
        out, res = forward(x if batched else x[np.newaxis], **rest)
        return (out if batched else out[0]), (res, batched)

    @wraps(vjp)
    def vjp_(residuals, g):
        res, batched = residuals
        grads = vjp(res, g if batched else g[np.newaxis])
        return grads if batched else {**grads, "x": grads["x"][0]}

    return forward_, vjp_


def batch_axis(shape):
    """An array shape rule ``shape(d, attrs)`` with the leading batch axis dropped when
    ``attrs["batched"]`` is False."""
    return lambda d, attrs: tuple(shape(d, attrs))[0 if attrs["batched"] else 1:]


def as_batch_of_one(case):
    """An unbatched case (attribute ``batched`` False) as the batched case it stands for: ``x``
    with a leading axis of 1. Any other case as it is."""
    if case.attrs.get("batched") is not False:
        return case
    return case.replace(attrs={**case.attrs, "batched": True},
                        arrays={**case.arrays, "x": np.asarray(case.arrays["x"])[np.newaxis]})
