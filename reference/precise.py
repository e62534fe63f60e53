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

from .case import Case, as_float64
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


def _reduced(per, reduction, G):
    """The loss reduced as the float64 oracle does (mean, sum or none), and the
    cotangent each element receives."""
    if reduction == "none":
        return per, G
    if reduction == "mean":
        return _scalar(per.sum() / per.size), G / per.size
    return _scalar(per.sum()), G


def _mse(a, m, g, attrs, conv):
    D = m["pred"] - m["target"]
    loss, Ge = _reduced(D * D, attrs["reduction"], g["loss"])
    gp = Ge * 2 * D
    return {"loss": loss}, {"pred": gp, "target": -gp}


def _l1(a, m, g, attrs, conv):
    D = m["pred"] - m["target"]
    loss, Ge = _reduced(np.abs(D), attrs["reduction"], g["loss"])
    gp = Ge * np.sign(a["pred"] - a["target"]).astype(int)  # the sign of a float difference is exact
    return {"loss": loss}, {"pred": gp, "target": -gp}


def _huber(a, m, g, attrs, conv):
    D = m["pred"] - m["target"]
    d = a["pred"] - a["target"]
    delta = _c(attrs["delta"])
    inside = np.abs(d) <= attrs["delta"]  # the branch as the oracle takes it
    h = np.where(inside, D * D / 2, delta * (np.abs(D) - delta / 2))
    loss, Ge = _reduced(h, attrs["reduction"], g["loss"])
    gp = Ge * np.where(inside, D, delta * np.sign(d).astype(int))
    return {"loss": loss}, {"pred": gp, "target": -gp}


def _cross_entropy(a, m, g, attrs, conv):
    """The float64 oracle's formulas (reference/losses.py) over mpf: classes moved
    last, class weights, smoothing, ignored labels and the three reductions."""
    Z = np.moveaxis(m["logits"], 1, -1)
    k = Z.shape[-1]
    w = m["weight"] if "weight" in m else np.full(k, _c(1), dtype=object)
    ls = _c(attrs["label_smoothing"])
    if attrs["target_type"] == "indices":
        labels = a["labels"]
        keep = labels != attrs["ignore_index"]
        onehot = (np.where(keep, labels, 0)[..., None] == np.arange(k)).astype(int).astype(object)
        q = onehot * (1 - ls) + ls / k
        total = (w[np.where(keep, labels, 0)] * keep.astype(int)).sum()
    else:
        keep = np.ones(Z.shape[:-1], dtype=bool)
        q = np.moveaxis(m["probs"], 1, -1) * (1 - ls) + ls / k
        total = _c(int(np.prod(Z.shape[:-1])))
    c = w * q * keep[..., None].astype(int)
    e = _exp(Z)
    s = e.sum(axis=-1, keepdims=True)
    logp = Z - _log(s)
    per = -(c * logp).sum(axis=-1)
    G, reduction = g["loss"], attrs["reduction"]
    if reduction == "none":
        loss, coef = per, G
    elif reduction == "sum":
        loss, coef = _scalar(per.sum()), G * np.ones(per.shape, dtype=int)
    else:  # the mean over the weights of the labels kept (COVERS leaves out a mean over none)
        loss, coef = _scalar(per.sum() / total), G / total * np.ones(per.shape, dtype=int)
    coef = np.where(keep, coef, _c(0))[..., None]
    grads = {"logits": np.moveaxis(coef * (c.sum(axis=-1, keepdims=True) * e / s - c), -1, 1)}
    if attrs["target_type"] != "indices":
        grads["probs"] = np.moveaxis(-coef * (1 - ls) * w * logp, -1, 1)
    return {"loss": loss}, grads


def _binary_cross_entropy_with_logits(a, m, g, attrs, conv):
    Z, T = m["logits"], m["targets"]
    W = m.get("weight", _c(1))
    PW = m.get("pos_weight", _c(1))
    sp = np.where(a["logits"] > 0, Z, _c(0)) + _log1p(_exp(-np.abs(Z)))  # softplus(z)
    sp_neg = sp - Z  # softplus(-z), exactly
    loss, Ge = _reduced(W * (PW * T * sp_neg + (1 - T) * sp), attrs["reduction"], g["loss"])
    S = _sigmoid(Z)
    return ({"loss": loss},
            {"logits": Ge * W * ((1 - T) * S - PW * T * (1 - S)), "targets": Ge * W * (PW * sp_neg - sp)})


PRECISE = {
    "relu": _relu, "leaky_relu": _leaky_relu, "elu": _elu, "selu": _selu, "gelu": _gelu,
    "sigmoid": _sigmoid_layer, "tanh": _tanh_layer, "softplus": _softplus, "silu": _silu,
    "softmax": _softmax, "log_softmax": _log_softmax,
    "mse": _mse, "l1": _l1, "huber": _huber, "cross_entropy": _cross_entropy,
    "binary_cross_entropy_with_logits": _binary_cross_entropy_with_logits,
}


def _a_mean_over_something(case: Case) -> bool:
    """False for a cross-entropy mean over no label (every label ignored): a
    convention (0 or NaN), not a value to measure digits of."""
    a, attrs = case.arrays, case.attrs
    if attrs["reduction"] != "mean" or attrs["target_type"] != "indices":
        return True
    kept = a["labels"] != attrs["ignore_index"]
    weight = a.get("weight")
    return bool(kept.any()) and (weight is None or float((weight[np.where(kept, a["labels"], 0)] * kept).sum()) != 0)


# Layers whose precise restatement leaves some cases out.
COVERS = {"cross_entropy": _a_mean_over_something}


def _evaluate(case: Case, conventions: dict, bits: int) -> dict:
    layer = layer_of(case)
    arrays = as_float64(case.arrays)
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
    """``{kind: {name: Exact}}`` for a layer with a precision oracle, None otherwise
    (and for a case holding NaN or Inf: its non-finite positions are compared as
    they are, its finite elements by the float64 oracle).

    The case is not validated here (``evaluate`` does that first in ``check``)."""
    if case.layer not in PRECISE or not COVERS.get(case.layer, lambda c: True)(case):
        return None
    if any(a.size == 0 for a in case.arrays.values()):  # a zero-size case: no digits to measure
        return None
    if not all(bool(np.isfinite(a).all()) for a in case.arrays.values() if a.dtype.kind == "f"):
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
