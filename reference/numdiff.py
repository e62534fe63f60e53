"""Numerical differentiation: the check that keeps the hand-written vjps honest.

Both checks differentiate the scalar <f(arrays), g> = sum over outputs of
<f_i, g_i> by central differences in float64, so they test exactly what the
vjp claims: vjp(g) = J^T g.
"""

from __future__ import annotations

import numpy as np

from .case import Case, as_float64
from .catalogue import LAYERS
from .oracle import named_outputs, differentiable


def _objective(case: Case):
    layer = LAYERS[case.layer]
    base = as_float64(case.arrays)
    gs = {n: g.astype(np.float64) for n, g in case.cotangents.items()}

    def outputs(arrays: dict) -> dict:
        return named_outputs(layer, layer.forward(**{**base, **arrays}, **case.attrs)[0])

    def f(arrays: dict) -> float:
        return float(sum(np.sum(out * gs[n]) for n, out in outputs(arrays).items()))

    return base, f, outputs


def rounding_bound(case: Case, h: float) -> float:
    """What float64 rounding alone can put into a central difference of <f, g>.

    Each evaluation of <f, g> is off by a few eps of the magnitudes it passes
    through: the output terms |f g|, and the inputs themselves times |g| (a
    log-sum-exp of logits near 16 loses eps * 16 however small the loss). The
    difference of two evaluations is divided by 2h. Where the derivative is tiny
    next to those magnitudes (sigmoid at 11), this bound dominates.
    """
    base, _, outputs = _objective(case)
    gs = {n: np.abs(g.astype(np.float64)) for n, g in case.cotangents.items()}
    inputs = max((float(np.abs(v).max(initial=0.0)) for v in base.values() if v.dtype.kind == "f"), default=0.0)
    magnitude = sum(float(np.sum(np.abs(out) * gs[n])) + inputs * float(gs[n].sum())
                    for n, out in outputs(base).items())
    return 16 * np.finfo(np.float64).eps * magnitude / h


def directional_derivative(case: Case, directions: dict, h: float) -> float:
    """d/dt <f(x + t u), g> at t = 0, by a central difference with step ``h``."""
    base, f, _ = _objective(case)
    plus = {k: base[k] + h * u for k, u in directions.items()}
    minus = {k: base[k] - h * u for k, u in directions.items()}
    return (f(plus) - f(minus)) / (2.0 * h)


def numerical_gradients(case: Case, h: float) -> dict:
    """The full gradient of <f, g> for every differentiable array, one element at a time."""
    base, f, _ = _objective(case)
    grads = {}
    for name in differentiable(case):
        x = base[name]
        grad = np.zeros_like(x)
        for i in np.ndindex(x.shape):  # one forward pair per element: tiny cases only
            step = np.zeros_like(x)
            step[i] = h
            grad[i] = (f({name: x + step}) - f({name: x - step})) / (2.0 * h)
        grads[name] = grad
    return grads
