"""The one tolerance table, and the one table of known divergences.

A framework's gradient passes when, for every finite position,

    |framework - oracle| <= rtol * scale,    scale = max(max|oracle tensor|, floor)

where the oracle is the float64 answer on the case's own (rounded) numbers.
For a gradient the floor is max|g|, the cotangent fed into the backward pass:
the size of the signal every backward pass carries, so an error that is a few
eps of it is rounding even where the local derivative is tiny (sigmoid at 30).
For the forward output the floor is the largest input magnitude: rounding the
inputs alone moves the output by eps of them (a loss near 0 computed as
logsumexp(z) - z_y keeps only eps * |z| absolute accuracy).

Tolerances are tightened from the report's measurements, never loosened to get
green: every override says why it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    reason: str


DEFAULT = {
    "float32": Tolerance(32 * EPS["float32"], "float32 default: 32 eps of the gradient's scale (a short sum of rounded products)"),
    "float64": Tolerance(1e-10, "float64 default: far above float64 rounding, far below any formula error"),
}

# (layer, framework, dtype) -> Tolerance; "*" matches anything. Most specific wins.
OVERRIDES: dict[tuple[str, str, str], Tolerance] = {
    # ---- convolution and pooling
    # ---- normalization, embedding, dropout
}

# The oracle against its own central differences (h = 1e-5 in float64): the
# truncation error O(h^2 f''') is ~1e-10 of the gradient; the rounding error
# O(eps |f| / h) is added by the test from the case itself (numdiff.rounding_bound).
NUMERICAL = Tolerance(1e-6, "central differences in float64, h=1e-5: truncation h^2 f''' plus rounding eps |f| / h")


def tolerance_for(layer: str, framework: str, dtype: str, overrides: dict | None = None) -> Tolerance:
    """The tolerance for one layer x framework x dtype: the most specific override, else the default."""
    best, best_score = DEFAULT[dtype], -1
    for (lay, fw, dt), tol in (OVERRIDES if overrides is None else overrides).items():
        if all(k in ("*", v) for k, v in ((lay, layer), (fw, framework), (dt, dtype))):
            score = (lay != "*") * 4 + (fw != "*") * 2 + (dt != "*")
            if score > best_score:
                best, best_score = tol, score
    return best


@dataclass(frozen=True)
class Divergence:
    """A difference between a framework and the oracle that is known and explained.

    A failing or erroring row whose case satisfies ``when`` becomes
    ``known_divergence``: still shown with its measured error, never hidden.
    ``bound``: the largest ``max_rel_err`` the divergence can explain; a larger
    error still fails (None: the divergence can change a result entirely, so
    ``when`` must be narrow). ``measured`` says what each framework does here.
    """

    layer: str
    framework: str
    dtype: str
    when: Callable
    reason: str
    measured: str
    bound: float | None = None

    def explains(self, row: dict) -> bool:
        return self.bound is None or row["status"] == "fail" and row["max_rel_err"] <= self.bound

    def matches(self, case, framework: str) -> bool:
        return (self.layer == case.layer and self.framework in ("*", framework)
                and self.dtype in ("*", case.dtype) and bool(self.when(case)))


def _x(case):
    return case.arrays["x"]


def _exp_minus_one_loses(case) -> bool:
    """TensorFlow's Elu kernel computes exp(x) - 1, not expm1(x): for x near 0 the
    difference cancels. True when, in the case's dtype, that error exceeds the
    output tolerance (scale: the larger of max|x| and max|out|, as for every output)."""
    x = _x(case)
    lossy = np.where(x < 0, np.exp(x) - np.ones((), x.dtype), 0).astype(np.float64)
    exact = np.where(x < 0, np.expm1(x.astype(np.float64)), 0)
    scale = float(np.abs(x).max(initial=0.0))
    return float(np.abs(lossy - exact).max(initial=0.0)) * case.attrs.get("alpha", 1.0) > (
        tolerance_for(case.layer, "tensorflow", case.dtype).rtol * scale)


KNOWN_DIVERGENCES: list[Divergence] = [
    Divergence(
        "elu", "tensorflow", "*", _exp_minus_one_loses,
        "TensorFlow's Elu kernel computes alpha (exp(x) - 1) rather than expm1: for x near 0 "
        "the output cancels (keras.layers.ELU calls tf.nn.elu for every alpha)",
        "float32 elu(-1.66e-8) = 0 (exact -1.66e-8); float64 elu(-1.19e-7) carries 1e-9 relative error"),
    Divergence(
        "gelu", "tensorflow", "float64", lambda c: True,
        "tf.nn.gelu makes its constants with math_ops.cast(python_float, dtype), which rounds "
        "1/sqrt(2) and 0.044715 to float32 before widening them to float64",
        "float64 output and gradient off by up to ~2e-8 relative (0.044715 becomes 0.044715 - 1.5e-9)",
        bound=1e-7),
    Divergence(
        "leaky_relu", "tensorflow", "float64",
        lambda c: float(np.float32(c.attrs["negative_slope"])) != c.attrs["negative_slope"],
        "the LeakyRelu op's alpha is a float32 attribute, so a float64 slope is rounded to float32",
        "slope 0.01 acts as 0.009999999776; float64 results off by up to 6e-8 relative",
        bound=1e-7),
    Divergence(
        "selu", "tensorflow", "*",
        lambda c: bool(np.any((_x(c) < 0) & (np.exp(_x(c)) - 1 == 0))),
        "Selu computes alpha (exp(x) - 1) rather than expm1, which is 0 for tiny negative x, "
        "and SeluGrad then takes the positive branch (out < 0 is false)",
        "d selu/dx at x = -1e-17 (float64) or -1e-8 (float32): TensorFlow scale = 1.0507, exact scale*alpha = 1.7581"),
    Divergence(
        "softplus", "tensorflow", "*",
        lambda c: bool(np.any(c.attrs["beta"] * _x(c).astype(np.float64) > c.attrs["threshold"])),
        "TensorFlow's softplus has no threshold: it stays on the curve where PyTorch switches to y = x",
        "at beta x = 20 the outputs differ by log1p(e^-20)/beta = 2e-9/beta, the gradients by sigmoid(-20) = 2e-9; "
        "at threshold 1.5 by 0.2"),
    # ---- convolution and pooling
    # ---- normalization, embedding, dropout
]


def known_divergence(case, framework: str) -> Divergence | None:
    return next((d for d in KNOWN_DIVERGENCES if d.matches(case, framework)), None)
