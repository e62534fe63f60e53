"""The one tolerance table.

A framework's gradient passes when, for every finite position,

    |framework - oracle| <= atol = rtol * condition * scale,    scale = max(max|oracle tensor|, floor)

where the oracle is the float64 answer on the case's own (rounded) numbers.
For a gradient the floor is max|g|, the cotangent fed into the backward pass:
the size of the signal every backward pass carries, so an error that is a few
eps of it is rounding even where the local derivative is tiny (sigmoid at 30).
For the forward output the floor is the largest input magnitude: rounding the
inputs alone moves the output by eps of them (a loss near 0 computed as
logsumexp(z) - z_y keeps only eps * |z| absolute accuracy). ``condition`` is 1
except for layers whose catalogue entry declares a data-dependent condition
number (a normalization of nearly equal values amplifies one rounding by
kappa = max(1, max|x|, max|gamma|) / sqrt(var + eps); a layer through time
measures its sensitivity by perturbation and scales it by T / 4, see
reference/sensitivity.py); the report shows it.
The scale never drops below tiny / (eps rtol condition): under tiny / eps a
result's own rounding error is subnormal, and TensorFlow flushes those to zero.

Tolerances are tightened from the report's measurements, never loosened to get
green: every entry says why it exists. Where a framework differs from the exact
answer in an understood way, that is a known divergence (divergences.py), not
a wider tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .rows import step_of

EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


@dataclass(frozen=True)
class Tolerance:
    """``rtol``: the error allowed, relative to the scale, where rounding is as usual.
    ``rounding``: what rounding alone costs a short sum in the dtype (None: rtol); a
    case's condition number kappa multiplies it, so a check allows max(rtol, kappa x
    rounding). ``ceiling``: what no condition number may allow."""

    rtol: float
    reason: str
    rounding: float | None = None
    ceiling: float = math.inf

    def allowed(self, condition: float = 1.0) -> float:
        """The relative error a check of condition number ``condition`` may have."""
        rounding = self.rtol if self.rounding is None else self.rounding
        return min(max(self.rtol, condition * rounding), self.ceiling)

    def scaled(self, factor: float, why: str) -> Tolerance:
        """The tolerance of a quantity built from ``factor`` of these (a norm over m elements, t steps)."""
        return Tolerance(self.rtol * factor, f"{self.reason}; {why}",
                         None if self.rounding is None else self.rounding * factor, self.ceiling)


# Float32 resolution, the most a float64 check may ever allow: a float64 result off by
# that much has a float32 step inside (a constant, a scale rounded to float32), which is
# the bug class a float64 check exists to catch; it is a known divergence, or it fails.
FLOAT32_RESOLUTION = 2.0**-24

DEFAULT = {
    "float32": Tolerance(32 * EPS["float32"], "float32 default: 32 eps of the gradient's scale (a short sum of "
                                              "rounded products), times the case's condition number"),
    "float64": Tolerance(1e-10, "float64 default: 1e-10 of the scale, far above float64 rounding and far below any "
                                "formula error; a condition number kappa widens it only where kappa x 32 eps is "
                                "larger, and never past 2^-24 (float32's resolution: a float32 step inside a float64 "
                                "computation is a known divergence, or it fails)",
                         rounding=32 * EPS["float64"], ceiling=FLOAT32_RESOLUTION),
}

# Element-wise precision (the ``max_ulp_err`` column, the report's Precision section):
# an element whose error exceeds this many ulps of the case dtype, measured against
# the precision oracle (reference/precise.py) at the element's own size, has lost
# digits. Informational by default; ``--strict-precision`` makes it fail.
@dataclass(frozen=True)
class UlpBound:
    ulps: float
    reason: str


PRECISION = UlpBound(
    64, "64 ulps of the element itself (6 bits): an element built on exp(x) is conditioned like |x| (one rounding "
        "of its argument moves it by |x| ulps), up to 40 for the inputs drawn, and the frameworks measured within "
        "40 there (softmax and cross-entropy's p at logits 37 apart: 34; softplus at x = -38: 28; silu at x = 30: "
        "23); more means digits were lost (a tail returned as 0, a difference that cancels, a constant rounded)")

# The oracle against its own central differences (h = 1e-5 in float64): the
# truncation error O(h^2 f''') is ~1e-10 of the gradient; the rounding error
# O(eps |f| / h) is added by the test from the case itself (numdiff.rounding_bound).
NUMERICAL = Tolerance(1e-6, "central differences in float64, h=1e-5: truncation h^2 f''' plus rounding eps |f| / h")


def tolerance_for(layer: str, framework: str, dtype: str) -> Tolerance:
    """The tolerance for one layer x framework x dtype: every layer holds its dtype's default (the
    report's worst errors show how far below it each sits)."""
    return DEFAULT[dtype]


@dataclass(frozen=True)
class StepGrowth:
    """How the tolerance of a trajectory's output grows with its step: the output
    ``name@t`` (the parameters or state after step t) is allowed ``factor(t)``
    times the tolerance of one step."""

    factor: Callable[[int], float]
    reason: str


LINEAR = StepGrowth(lambda t: float(t), "x t at step t: each update step rounds a few times, and its error stays in "
                                        "the parameters and state that every later step starts from (kept, not "
                                        "shrunk: w adds each update; moments decay by beta < 1), so t steps carry "
                                        "at most t steps' roundings; measured growth is about linear (float32 SGD "
                                        "and Adagrad: ~0.5 t eps)")

# The one table of per-step growth: layer -> how its tolerance grows with the step.
STEP_GROWTH: dict[str, StepGrowth] = {
    layer: LINEAR for layer in ("sgd_step", "momentum_step", "adam_step", "adamw_step", "rmsprop_step", "adagrad_step",
                                "train_step")
}


def at_step(tol: Tolerance, layer: str, name: str, growth: dict | None = None) -> Tolerance:
    """The tolerance of one output: ``tol``, grown for the step of a trajectory output (see STEP_GROWTH)."""
    g = (STEP_GROWTH if growth is None else growth).get(layer)
    t = step_of(name)
    if g is None or t is None:
        return tol
    return tol.scaled(g.factor(t), f"step {t}: {g.reason}")
