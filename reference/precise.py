"""The precision oracle: element-wise layers evaluated in higher precision (mpmath).

The ordinary oracle is float64 and judges the pass/fail verdict. This one exists
only to measure each element's error in ulps (``reports/compare.py``): there the
float64 oracle is not precise enough (its own rounding is ulps of float64, and
a few formulas, such as sigma(z) - t near t, cancel). Each layer below restates
its float64 oracle's formulas over NumPy object arrays of ``mpmath.mpf``
(``np.frompyfunc`` applies mpmath element by element; cases are small), under
the same conventions (the derivative at a kink, softplus' threshold), on the
same (rounded) numbers, which mpmath holds exactly.

Every value is evaluated twice, at ``PRECISIONS[0]`` and ``PRECISIONS[1]`` bits;
an element is *resolved* when the two agree to ``AGREE_BITS`` bits (or are both
exactly 0). An unresolved element (a result that cancels to nothing, such as a
softmax gradient with equal cotangents, which is exactly 0 but comes out as a
residue 2^-192 of its terms) is never guessed: it is left out of the ulp
measurement and counted as unresolved.

``exact(case, conventions)`` returns, for a layer listed in ``PRECISE``,
``{kind: {name: Exact}}`` with the exact value as a float64 pair ``hi + lo``
(``hi`` the correctly rounded value, ``lo`` the rest), and None for any other
layer. The dropout, pooling, normalization... layers have no precise oracle.
"""

from __future__ import annotations

from dataclasses import dataclass

import mpmath
import numpy as np

from .case import Case
from .oracle import GRAD, OUT, layer_of

PRECISIONS = (192, 384)
# 80 bits: 27 beyond float64's 53, so a resolved exact value measures float64 errors to 1e-8 ulps.
AGREE_BITS = 80

# The layers' constants as their definitions give them (not rounded to float64).
SELU_ALPHA = "1.6732632423543772848170429916717"
SELU_SCALE = "1.0507009873554804934193349852946"
GELU_TANH_C = "0.044715"


@dataclass(frozen=True)
class Exact:
    """An array's exact value as ``hi + lo`` (float64 each, ``hi`` correctly
    rounded), and where the precision oracle resolved it (bool array)."""

    hi: np.ndarray
    lo: np.ndarray
    resolved: np.ndarray


_mpf = np.frompyfunc(lambda v: mpmath.mpf(float(v)), 1, 1)
_exp = np.frompyfunc(lambda v: mpmath.exp(v), 1, 1)
_expm1 = np.frompyfunc(lambda v: mpmath.expm1(v), 1, 1)
_log = np.frompyfunc(lambda v: mpmath.log(v), 1, 1)
_log1p = np.frompyfunc(lambda v: mpmath.log1p(v), 1, 1)
_tanh = np.frompyfunc(lambda v: mpmath.tanh(v), 1, 1)
_sech = np.frompyfunc(lambda v: mpmath.sech(v), 1, 1)
_erfc = np.frompyfunc(lambda v: mpmath.erfc(v), 1, 1)


def _c(text_or_float):
    """A constant at the working precision (a decimal string stays exact to it)."""
    return mpmath.mpf(text_or_float)


def _sigmoid(X):
    return 1 / (1 + _exp(-X))


def _kink(x, conv):
    """Where the right-hand branch applies (the oracle's ``_kink_mask``)."""
    return x >= 0 if conv.get("at_zero") == "right" else x > 0


# ---- activations: (float64 inputs, mpf inputs, mpf cotangents, attrs, conventions) -> (outs, grads)

def _relu(a, m, g, attrs, conv):
    x, X, G = a["x"], m["x"], g["y"]
    return {"y": np.where(x > 0, X, _c(0))}, {"x": np.where(x > 0, G, _c(0))}


def _leaky_relu(a, m, g, attrs, conv):
    x, X, G = a["x"], m["x"], g["y"]
    slope = _c(attrs["negative_slope"])
    return ({"y": np.where(x > 0, X, slope * X)},
            {"x": G * np.where(_kink(x, conv), _c(1), slope)})


def _elu_parts(x, X, alpha, conv):
    neg = x <= 0
    y = np.where(x > 0, X, alpha * _expm1(np.where(neg, X, _c(0))))
    dy = np.where(_kink(x, conv), _c(1), alpha * _exp(np.where(neg, X, _c(0))))
    return y, dy


def _elu(a, m, g, attrs, conv):
    y, dy = _elu_parts(a["x"], m["x"], _c(attrs["alpha"]), conv)
    return {"y": y}, {"x": g["y"] * dy}


def _selu(a, m, g, attrs, conv):
    scale = _c(SELU_SCALE)
    y, dy = _elu_parts(a["x"], m["x"], _c(SELU_ALPHA), conv)
    return {"y": scale * y}, {"x": g["y"] * scale * dy}


def _gelu(a, m, g, attrs, conv):
    X = m["x"]
    if attrs["approximate"] == "none":
        cdf = _erfc(-X / mpmath.sqrt(2)) / 2
        pdf = _exp(-X * X / 2) / mpmath.sqrt(2 * mpmath.pi)
        return {"y": X * cdf}, {"x": g["y"] * (cdf + X * pdf)}
    k, c = mpmath.sqrt(2 / mpmath.pi), _c(GELU_TANH_C)
    u = k * (X + c * X ** 3)
    du = k * (1 + 3 * c * X ** 2)
    # 1 + tanh u = 2 sigma(2u): without the cancellation of 1 + tanh u for u << 0 (1e-38 at x = -10).
    half = _sigmoid(2 * u)
    return {"y": X * half}, {"x": g["y"] * (half + X / 2 * _sech(u) ** 2 * du)}


def _sigmoid_layer(a, m, g, attrs, conv):
    X = m["x"]
    e = _exp(-np.abs(X))
    return {"y": _sigmoid(X)}, {"x": g["y"] * e / (1 + e) ** 2}


def _tanh_layer(a, m, g, attrs, conv):
    X = m["x"]
    return {"y": _tanh(X)}, {"x": g["y"] * _sech(X) ** 2}


def _softplus(a, m, g, attrs, conv):
    x, X = a["x"], m["x"]
    beta = _c(attrs["beta"])
    # The oracle's (and PyTorch's) switch to y = x: decided on beta x as the dtype computes it.
    linear = attrs["beta"] * x > attrs["threshold"]
    Z = beta * X
    curve = _log1p(_exp(Z)) / beta
    return ({"y": np.where(linear, X, curve)},
            {"x": g["y"] * np.where(linear, _c(1), _sigmoid(Z))})


def _silu(a, m, g, attrs, conv):
    X = m["x"]
    s = _sigmoid(X)
    return {"y": X * s}, {"x": g["y"] * (s + X * s * (1 - s))}


def _softmax(a, m, g, attrs, conv):
    X, G, axis = m["x"], g["y"], attrs["axis"]
    e = _exp(X)
    y = e / e.sum(axis=axis, keepdims=True)
    return {"y": y}, {"x": y * (G - (G * y).sum(axis=axis, keepdims=True))}


def _log_softmax(a, m, g, attrs, conv):
    X, G, axis = m["x"], g["y"], attrs["axis"]
    e = _exp(X)
    s = e.sum(axis=axis, keepdims=True)
    return {"y": X - _log(s)}, {"x": G - e / s * G.sum(axis=axis, keepdims=True)}


# ---- losses: the loss itself (a mean or sum, exactly) and its element-wise gradients

def _scalar(v):
    out = np.empty((), dtype=object)
    out[()] = v
    return out


def _mse(a, m, g, attrs, conv):
    D = m["pred"] - m["target"]
    n, G = D.size, g["loss"]
    gp = G * 2 * D / n
    return {"loss": _scalar((D * D).sum() / n)}, {"pred": gp, "target": -gp}


def _l1(a, m, g, attrs, conv):
    D = m["pred"] - m["target"]
    n, G = D.size, g["loss"]
    gp = G * np.sign(a["pred"] - a["target"]).astype(int) / n  # the sign of a float difference is exact
    return {"loss": _scalar(np.abs(D).sum() / n)}, {"pred": gp, "target": -gp}


def _huber(a, m, g, attrs, conv):
    D = m["pred"] - m["target"]
    d = a["pred"] - a["target"]
    delta = _c(attrs["delta"])
    inside = np.abs(d) <= attrs["delta"]  # the branch as the oracle takes it
    h = np.where(inside, D * D / 2, delta * (np.abs(D) - delta / 2))
    gp = g["loss"] * np.where(inside, D, delta * np.sign(d).astype(int)) / D.size
    return {"loss": _scalar(h.sum() / D.size)}, {"pred": gp, "target": -gp}


def _cross_entropy(a, m, g, attrs, conv):
    Z, labels = m["logits"], a["labels"]
    n, k = Z.shape
    ls = _c(attrs["label_smoothing"])
    q = np.full((n, k), ls / k, dtype=object)
    q[np.arange(n), labels] += 1 - ls
    e = _exp(Z)
    s = e.sum(axis=1, keepdims=True)
    logp = Z - _log(s)
    scale = _c(1) / n if attrs["reduction"] == "mean" else _c(1)
    return ({"loss": _scalar(scale * (-(q * logp)).sum())},
            {"logits": g["loss"] * scale * (e / s - q)})


def _binary_cross_entropy_with_logits(a, m, g, attrs, conv):
    Z, T = m["logits"], m["targets"]
    n, G = Z.size, g["loss"]
    per = np.where(a["logits"] > 0, Z, _c(0)) - Z * T + _log1p(_exp(-np.abs(Z)))
    return ({"loss": _scalar(per.sum() / n)},
            {"logits": G * (_sigmoid(Z) - T) / n, "targets": -G * Z / n})


PRECISE = {
    "relu": _relu, "leaky_relu": _leaky_relu, "elu": _elu, "selu": _selu, "gelu": _gelu,
    "sigmoid": _sigmoid_layer, "tanh": _tanh_layer, "softplus": _softplus, "silu": _silu,
    "softmax": _softmax, "log_softmax": _log_softmax,
    "mse": _mse, "l1": _l1, "huber": _huber, "cross_entropy": _cross_entropy,
    "binary_cross_entropy_with_logits": _binary_cross_entropy_with_logits,
}


def _evaluate(case: Case, conventions: dict, bits: int) -> dict:
    layer = layer_of(case)
    arrays = {k: v if v.dtype.kind in "iub" else v.astype(np.float64) for k, v in case.arrays.items()}
    with mpmath.workprec(bits):
        m = {k: _mpf(v) for k, v in arrays.items() if v.dtype.kind == "f"}
        g = {k: _mpf(v.astype(np.float64)) for k, v in case.cotangents.items()}
        outs, grads = PRECISE[case.layer](arrays, m, g, case.attrs, {**layer.conventions, **conventions})
    return {OUT: outs, GRAD: grads}


_hi = np.frompyfunc(lambda v: float(v), 1, 1)


def _split(values) -> tuple[np.ndarray, np.ndarray]:
    """``hi`` (the float64 nearest the value) and ``lo`` (the rest, rounded) of an mpf array."""
    values = np.asarray(values, dtype=object)
    with mpmath.workprec(PRECISIONS[1]):
        hi = np.asarray(_hi(values), dtype=np.float64).reshape(values.shape)
        rest = values - np.where(np.isfinite(hi), hi, 0.0).astype(object)
        lo = np.asarray(_hi(rest), dtype=np.float64).reshape(values.shape)
    return hi, np.where(np.isfinite(hi), lo, 0.0)


_agree = np.frompyfunc(
    lambda a, b: bool(a == b or (b != 0 and abs(a - b) <= abs(b) * mpmath.ldexp(1, -AGREE_BITS))), 2, 1)


def exact(case: Case, conventions: dict | None = None) -> dict | None:
    """``{kind: {name: Exact}}`` for a layer with a precision oracle, None otherwise.

    The case is not validated here (``evaluate`` does that first in ``check``)."""
    if case.layer not in PRECISE:
        return None
    low, high = (_evaluate(case, conventions or {}, bits) for bits in PRECISIONS)
    out = {}
    for kind, named in high.items():
        out[kind] = {}
        for name, v in named.items():
            v = np.asarray(v, dtype=object)
            with mpmath.workprec(PRECISIONS[1]):
                resolved = np.asarray(_agree(np.asarray(low[kind][name], dtype=object), v), dtype=bool)
            hi, lo = _split(v)
            out[kind][name] = Exact(hi, lo, resolved.reshape(v.shape))
    return out
