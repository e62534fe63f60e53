"""Elementwise activations, softmax and log-softmax.

Every function here is written to stay accurate where the naive formula loses
digits (sigmoid' at +-30 is exp(-30), not 1 - 0.99999...), because the oracle
is the exact answer the frameworks are judged against.
"""

import math

import numpy as np

from .catalogue import NONFINITE, SUBNORMAL, S, holds, registrar
from .spec import Array, Choice, Drawn, Edge, Float, Int, Layer, Real, Shape, require

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_C = 0.044715
# NumPy has no erfc; math.erfc is accurate to the last bits, and GELU inputs are small.
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _sigmoid(x):
    """sigma(x) = 1 / (1 + e^-x), evaluated without overflow on either side."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _sigmoid_prime(x):
    """sigma'(x) = e^-|x| / (1 + e^-|x|)^2: no cancellation at saturation."""
    e = np.exp(-np.abs(x))
    return e / (1.0 + e) ** 2


def _kink_mask(x, at_zero, at_nan="left"):
    """Where the right-hand branch of a kink at 0 applies: x > 0, or x >= 0 if
    ``at_zero == "right"``; a NaN input takes the branch ``at_nan`` names (every
    comparison with NaN is false, so which branch it lands in is how the test is
    written: ``x > 0 ? right : left`` puts it left, ``x <= 0 ? left : right`` right).
    The branch's derivative at NaN is then evaluated like any other (alpha e^NaN is NaN)."""
    require(at_zero in ("left", "right"), "at_zero", f"expected 'left' or 'right', got {at_zero!r}")
    require(at_nan in ("left", "right"), "at_nan", f"expected 'left' or 'right', got {at_nan!r}")
    pos = x >= 0 if at_zero == "right" else x > 0
    return pos | np.isnan(x) if at_nan == "right" else pos


def relu(x, at_nan="left"):
    """ReLU: y = max(x, 0) (NaN for a NaN x, IEEE maximum).

    Gradient: gx = g * [x > 0].  At x = 0 the gradient is 0 (both frameworks).
    At a NaN x the gradient is 0 (``at_nan="left"``) or g (``"right"``):
    frameworks choose (see ``_kink_mask``).
    """
    return np.maximum(x, 0.0), _kink_mask(x, "left", at_nan)


def relu_vjp(pos, g):
    return {"x": g * pos}


def leaky_relu(x, negative_slope, at_zero="left", at_nan="left"):
    """Leaky ReLU: y = x if x > 0 else slope * x.

    Gradient: gx = g * (1 if x > 0 else slope). At x = 0 the derivative is
    ``slope`` (``at_zero="left"``) or 1 (``"right"``); frameworks choose, as
    they do the branch a NaN takes (``at_nan``, see ``_kink_mask``).
    """
    pos = _kink_mask(x, at_zero, at_nan)
    return np.where(x > 0, x, negative_slope * x), (pos, negative_slope)


def leaky_relu_vjp(res, g):
    pos, slope = res
    return {"x": g * np.where(pos, 1.0, slope)}


def elu(x, alpha, at_zero="left", at_nan="left"):
    """ELU: y = x if x > 0 else alpha (e^x - 1).

    Gradient: gx = g * (1 if x > 0 else alpha e^x). At x = 0 the left
    derivative is alpha, the right one 1 (``at_zero`` picks). A NaN x takes the
    branch ``at_nan`` names: alpha e^NaN = NaN on the left, 1 on the right.
    """
    pos = _kink_mask(x, at_zero, at_nan)
    neg = alpha * np.expm1(np.minimum(x, 0.0))
    return np.where(x > 0, x, neg), (pos, alpha * np.exp(np.minimum(x, 0.0)))


def elu_vjp(res, g):
    pos, neg_slope = res
    return {"x": g * np.where(pos, 1.0, neg_slope)}


def selu(x, at_zero="left", at_nan="left"):
    """SELU: y = scale * (x if x > 0 else alpha (e^x - 1)), fixed alpha and scale.

    Gradient: gx = g * scale * (1 if x > 0 else alpha e^x). At x = 0 the left
    derivative is scale*alpha, the right one scale (``at_zero`` picks).
    """
    y, (pos, neg_slope) = elu(x, SELU_ALPHA, at_zero, at_nan)
    return SELU_SCALE * y, (pos, neg_slope)


def selu_vjp(res, g):
    return {"x": SELU_SCALE * elu_vjp(res, g)["x"]}


def gelu(x, approximate):
    """GELU: y = x Phi(x) (``approximate="none"``) or its tanh form.

    exact: gx = g (Phi(x) + x phi(x)),  phi(x) = e^{-x^2/2} / sqrt(2 pi),
           with Phi(x) = erfc(-x / sqrt 2) / 2 (1 + erf would cancel for x << 0).
    tanh:  y = x/2 (1 + tanh u),  u = sqrt(2/pi) (x + 0.044715 x^3),
           gx = g (1/2 (1 + tanh u) + x/2 (1 - tanh^2 u) u').
    Smooth everywhere.
    """
    require(approximate in ("none", "tanh"), "approximate", f"expected 'none' or 'tanh', got {approximate!r}")
    if approximate == "none":
        cdf = 0.5 * _erfc(-x / math.sqrt(2.0))
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        return x * cdf, cdf + x * pdf
    u = _SQRT_2_OVER_PI * (x + _GELU_TANH_C * x**3)
    t = np.tanh(u)
    du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_C * x**2)
    return 0.5 * x * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * x * _sech2(u) * du


def gelu_vjp(dydx, g):
    return {"x": g * dydx}


def _sech2(u):
    """sech^2(u) = 1 - tanh^2(u), computed without cancellation for large |u|."""
    e = np.exp(-2.0 * np.abs(u))
    return 4.0 * e / (1.0 + e) ** 2


def sigmoid(x):
    """Logistic sigmoid: y = 1 / (1 + e^-x).

    Gradient: gx = g sigma(x) (1 - sigma(x)), evaluated as e^-|x| / (1 + e^-|x|)^2.
    Smooth everywhere.
    """
    return _sigmoid(x), x


def sigmoid_vjp(x, g):
    return {"x": g * _sigmoid_prime(x)}


def tanh(x):
    """Hyperbolic tangent: y = tanh x.

    Gradient: gx = g (1 - tanh^2 x) = g sech^2 x. Smooth everywhere.
    """
    return np.tanh(x), x


def tanh_vjp(x, g):
    return {"x": g * _sech2(x)}


def softplus(x, beta, threshold):
    """Softplus: y = log(1 + e^{beta x}) / beta, and y = x once beta x > threshold.

    Gradient: gx = g sigma(beta x) on the curve, g on the linear part (PyTorch's
    ``threshold``; beta x == threshold is still on the curve).
    """
    require(beta > 0, "beta", f"must be > 0, got {beta}")
    z = beta * x
    curve = (np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))) / beta
    linear = z > threshold
    return np.where(linear, x, curve), (z, linear)


def softplus_vjp(res, g):
    z, linear = res
    return {"x": g * np.where(linear, 1.0, _sigmoid(z))}


def silu(x):
    """SiLU (swish): y = x sigma(x).

    Gradient: gx = g (sigma(x) + x sigma(x) (1 - sigma(x))). Smooth everywhere.
    """
    return x * _sigmoid(x), x


def silu_vjp(x, g):
    return {"x": g * (_sigmoid(x) + x * _sigmoid_prime(x))}


def _check_axis(x, axis):
    require(-x.ndim <= axis < x.ndim, "axis", f"out of range for x of rank {x.ndim}: {axis}")


def softmax(x, axis):
    """Softmax along ``axis``: y_i = e^{x_i} / sum_j e^{x_j}.

    Gradient: gx = y (g - sum_j g_j y_j) along the axis. Smooth everywhere.
    """
    _check_axis(x, axis)
    if x.size == 0:  # an empty axis (or batch): the answer is empty, as in both frameworks
        return x.copy(), (x.copy(), axis)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    y = e / e.sum(axis=axis, keepdims=True)
    return y, (y, axis)


def softmax_vjp(res, g):
    y, axis = res
    return {"x": y * (g - (g * y).sum(axis=axis, keepdims=True))}


def log_softmax(x, axis):
    """Log-softmax along ``axis``: y_i = x_i - log sum_j e^{x_j}.

    Gradient: gx = g - softmax(x) sum_j g_j along the axis. Smooth everywhere.
    """
    _check_axis(x, axis)
    if x.size == 0:  # an empty axis (or batch): the answer is empty, as in both frameworks
        return x.copy(), (x.copy(), axis)
    shifted = x - x.max(axis=axis, keepdims=True)
    y = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return y, (np.exp(y), axis)


def log_softmax_vjp(res, g):
    p, axis = res
    return {"x": g - p * g.sum(axis=axis, keepdims=True)}


# ---- catalogue entries --------------------------------------------------------

register = registrar("activations")

# Saturation is an edge: sigmoid(+-30) is 1 - 1e-13 in float64 and exactly 1 in float32.
# So is a hair from the kink: exp(-1e-7) - 1 keeps one digit in float32.
# The tails are drawn on purpose for the precision check (the Precision section):
# sigmoid rounds to 1 past x = 16.6 in float32 and 36.7 in float64, so 1 - sigma and
# sigma (1 - sigma) become 0 there; +-1e-30 is a hair from the kink in both dtypes.
SATURATING = Real(-40.0, 40.0, edges=(0.0, -30.0, 30.0, 1.0, -1.0, 1e-7, -1e-7,
                                      17.5, -17.5, 37.5, -37.5, 40.0, -40.0, 1e-30, -1e-30))

# Element-wise layers also take 0-d inputs (a scalar) and zero-size ones (a side of 0
# now and then), which both frameworks accept.
ELEMENTWISE_SHAPE = {"shape": Shape(min_dims=0, max_dims=4, min_side=0, max_side=4)}


def _finite(x):
    """x in float64 with NaN and Inf read as 0 (what an edge of finite values looks at)."""
    x = np.asarray(x, dtype=float)
    return np.where(np.isfinite(x), x, 0.0)


# Every element-wise layer's edges: a scalar, an empty array, NaN and Inf, subnormals;
# each adds where it bends (a kink at 0, a tail where it saturates).
SCALAR = Edge("scalar", lambda c: c.arrays["x"].ndim == 0, {"shape": ()})
EMPTY = Edge("empty", lambda c: c.arrays["x"].size == 0)
KINKED = holds("kink", "x", lambda x: x == 0)  # exactly at the kink, where a convention decides
SATURATED = holds("saturated", "x", lambda x: np.abs(x) >= 30)  # sigmoid(30) = 1 - 1e-13: 1 in float32


def _elementwise(name, forward, vjp, values=Real(), attrs=None, conventions=None, edges=()):
    register(Layer(name, forward, vjp, dims=ELEMENTWISE_SHAPE, attrs=attrs or {}, empty=True, nonfinite=("x",),
                   arrays={"x": Array(S("shape"), values)}, conventions=conventions or {},
                   edges=(SCALAR, EMPTY, *edges, NONFINITE, SUBNORMAL)))


# A kink's two conventions: the branch x = 0 takes, and the branch a NaN takes.
KINK = {"at_zero": "left", "at_nan": "left"}
_elementwise("relu", relu, relu_vjp, conventions={"at_nan": "left"}, edges=(KINKED,))
_elementwise("leaky_relu", leaky_relu, leaky_relu_vjp,
             attrs={"negative_slope": Float(0.0, 2.0, edges=(0.01, 0.2, 1.0))}, conventions=KINK,
             edges=(KINKED, Edge("slope_1", lambda c: c.attrs["negative_slope"] == 1.0, {"negative_slope": 1.0})))
_elementwise("elu", elu, elu_vjp, SATURATING,
             attrs={"alpha": Float(0.1, 3.0, edges=(1.0,))}, conventions=KINK, edges=(KINKED, SATURATED))
_elementwise("selu", selu, selu_vjp, SATURATING, conventions=KINK, edges=(KINKED, SATURATED))
# GELU's left tail: x Phi(x) with Phi(-3) = 1.3e-3, Phi(-8) = 6e-16 (1 + erf cancels there).
_elementwise("gelu", gelu, gelu_vjp,
             Real(-10.0, 10.0, edges=(0.0, -6.0, 6.0, -3.0, -8.0, -10.0, 1e-30, -1e-30)),
             attrs={"approximate": Choice("none", "tanh")},
             edges=(holds("left_tail", "x", lambda x: x <= -6),
                    Edge("tanh_form", lambda c: c.attrs["approximate"] == "tanh", {"approximate": "tanh"})))
_elementwise("sigmoid", sigmoid, sigmoid_vjp, SATURATING, edges=(SATURATED,))
# tanh rounds to +-1 past |x| = 9.01 in float32 and 19.06 in float64: 1 - tanh^2 is 0 there.
_elementwise("tanh", tanh, tanh_vjp,
             Real(-20.0, 20.0, edges=(0.0, -10.0, 10.0, 9.5, -9.5, 19.5, -19.5, 20.0, -20.0, 1e-30, -1e-30)),
             edges=(holds("saturated", "x", lambda x: np.abs(x) >= 9.5),))
_elementwise("softplus", softplus, softplus_vjp, SATURATING,
             attrs={"beta": Float(0.25, 4.0, edges=(1.0, 2.0)),
                    # negative thresholds (the line starts below 0, a jump at beta x = threshold) to past any beta x
                    "threshold": Float(-5.0, 200.0, edges=(20.0, 2.0, 0.0, -1.0, 200.0))},
             edges=(SATURATED, Edge("past_threshold", lambda c: bool(np.any(
                        c.attrs["beta"] * _finite(c.arrays["x"]) > c.attrs["threshold"]))),
                    Edge("negative_threshold", lambda c: c.attrs["threshold"] < 0, {"threshold": -1.0})))
_elementwise("silu", silu, silu_vjp, SATURATING, edges=(SATURATED,))


def _along_axis(test):
    """An edge of softmax's axis: ``test(x moved so that the axis is last)``."""
    return lambda c: bool(test(np.moveaxis(np.asarray(c.arrays["x"], dtype=float), c.attrs["axis"], -1)))


SOFTMAX_EDGES = (
    Edge("axis_of_one", _along_axis(lambda x: x.shape[-1] == 1)),
    Edge("empty_axis", _along_axis(lambda x: x.shape[-1] == 0)),
    # the largest value twice in one row: the softmax splits evenly, a tie at the top
    Edge("tied_maximum", _along_axis(lambda x: x.size > 0 and x.shape[-1] > 1 and np.any(
        (x == np.max(x, axis=-1, keepdims=True)).sum(axis=-1) > 1))),
    Edge("spread_40", _along_axis(lambda x: x.size > 0 and np.any(np.ptp(_finite(x), axis=-1) >= 40))),
    NONFINITE, SUBNORMAL)
for _name, _fwd, _vjp in (("softmax", softmax, softmax_vjp),
                          ("log_softmax", log_softmax, log_softmax_vjp)):
    register(Layer(
        # a side of 0 now and then: an empty softmax axis, or an empty batch beside it
        _name, _fwd, _vjp, dims={"shape": Shape(min_dims=1, max_dims=4, min_side=0, max_side=4)},
        empty=True, nonfinite=("x",), edges=SOFTMAX_EDGES,
        attrs={"axis": Drawn(int, lambda d: Int(-len(d.shape), len(d.shape) - 1))},
        # +-20: a spread of 40 along the axis, past which 1 + e^-spread rounds to 1 in
        # both dtypes (the largest element's log-softmax, -log1p(e^-40), then comes out as 0).
        arrays={"x": Array(S("shape"), Real(-20.0, 20.0, edges=(0.0, 1.0, 20.0, -20.0, 9.0, -9.0), ties=True))},
    ))

