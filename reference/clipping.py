"""Gradient clipping: by value, by norm (per tensor) and by global norm (over a list).

Forward-only catalogue entries (no cotangent, nothing differentiated): the
compared outputs are the clipped gradients, and the global norm where the
frameworks return it. Shapes: every gradient any shape; the norm is a scalar.

    clip_by_value:       g' = min(max(g, -c), c)
    clip_by_norm:        g' = s g,   s = min(1, c / (||g|| + e))
    clip_by_global_norm: g_i' = s g_i,  s = min(1, c / (N + e)),  N = sqrt(sum_i ||g_i||^2)

``e`` (``norm_eps``) is a convention, not a hyperparameter: the exact answer is
``e = 0``; PyTorch's ``clip_grad_norm_`` adds ``1e-6`` to the norm, so a norm
exactly at the threshold is scaled by ``c / (c + 1e-6)``. TensorFlow computes
``g c / max(||g||, c)`` (``clip_by_norm``) and ``g c min(1 / N, 1 / c)``
(``clip_by_global_norm``): ``e = 0``, the same for finite positive ``c``.

The exact answer at the edges (where ``s`` would be 0/0 or inf/inf): an
infinite threshold clips nothing (s = 1); a zero norm clips nothing (s = 1,
the gradient stays 0), also when the threshold is 0; a zero threshold with a
nonzero norm gives zeros.
"""

from __future__ import annotations

import numpy as np

from .catalogue import S, attr_is, registrar
from .spec import Array, Choice, Edge, Float, Layer, Real, Shape, require


def _check_threshold(name: str, value: float) -> None:
    require(not np.isnan(value) and value >= 0, name, f"must be >= 0 (inf allowed), got {value!r}")


def _scale(norm: float, max_norm: float, norm_eps: float) -> float:
    """min(1, c / (norm + e)) with the exact answer at c = inf and at norm + e = 0 (both 1)."""
    denom = norm + norm_eps
    if np.isinf(max_norm) or denom <= max_norm:
        return 1.0
    return max_norm / denom


ROUTES = ("function", "optimizer")


def clip_by_value(g, *, clip_value, route="function"):
    """Clip every element to ``[-clip_value, clip_value]``: ``g' = min(max(g, -c), c)``; output ``g``.

    An element exactly at a bound stays; ``c = inf`` clips nothing; ``c = 0`` gives zeros.
    ``route``: how the framework is asked, a clipping function (``clip_grad_value_``,
    ``tf.clip_by_value``) or an optimizer's argument (Keras' ``clipvalue``); the
    answer is the same."""
    _check_threshold("clip_value", clip_value)
    return {"g": np.clip(g, -clip_value, clip_value)}, None


def clip_by_norm(g, *, max_norm, error_if_nonfinite, norm_eps=0.0, route="function"):
    """Rescale one tensor to L2 norm at most ``max_norm``: ``g' = min(1, c / (||g|| + norm_eps)) g``; output ``g``.

    ``error_if_nonfinite`` (PyTorch's flag: raise when the norm is NaN or Inf)
    cannot change the answer for finite gradients; the oracle takes it so a case
    says which way the framework was asked. ``norm_eps``: see the module docstring.
    ``route``: a clipping function or an optimizer's argument (Keras' ``clipnorm``)."""
    _check_threshold("max_norm", max_norm)
    norm = float(np.sqrt(np.sum(np.square(g))))
    return {"g": g * _scale(norm, max_norm, norm_eps)}, None


def clip_by_global_norm(g1, g2=None, *, max_norm, error_if_nonfinite, norm_eps=0.0, route="function"):
    """Rescale a list of tensors together to global L2 norm at most ``max_norm``.

    ``N = sqrt(||g1||^2 + ||g2||^2)``, ``s = min(1, c / (N + norm_eps))``; outputs
    ``g1`` (and ``g2``) times ``s`` and ``norm`` = N, the norm before clipping
    (what ``clip_grad_norm_`` and ``tf.clip_by_global_norm`` return; an optimizer's
    ``global_clipnorm``, the ``"optimizer"`` route, returns none, so neither does the oracle)."""
    _check_threshold("max_norm", max_norm)
    gs = {"g1": g1, **({"g2": g2} if g2 is not None else {})}
    norm = float(np.sqrt(sum(np.sum(np.square(g)) for g in gs.values())))
    s = _scale(norm, max_norm, norm_eps)
    out = {k: g * s for k, g in gs.items()}
    return ({**out, "norm": np.array(norm)} if route == "function" else out), None


# ---- catalogue entries --------------------------------------------------------

register = registrar("training step")

# Forward-only entries (vjp=None): no cotangent; the outputs are the clipped
# gradients, or the parameters and optimizer state after each of k steps (w@1 ..
# w@k). Gradients come in on purpose at exact bounds (+-1 against thresholds 1
# and 2), as all-zero or all-equal arrays (spread 0), and tiny (1e-6, 1e-10:
# below Adam's eps, with squares still normal in float32). Thresholds reach 0, a
# tiny value and inf. Every hyperparameter is drawn, defaults are never relied on.

GRAD_VALUES = Real(-3.0, 3.0, edges=(0.0, 1.0, -1.0, 1e-6, -1e-10), spread=(0.0,))
CLIP_THRESHOLD = Float(0.0, 6.0, edges=(0.0, 1e-6, 1.0, 2.0, float("inf")))
CLIP_SHAPE = Shape(min_dims=1, max_dims=2, max_side=4)
# A clipping function (clip_grad_*_, tf.clip_*) or an optimizer's argument (Keras'
# clipvalue, clipnorm, global_clipnorm): the same answer, asked two ways.
CLIP_ROUTE = Choice(*ROUTES)

def _threshold(attr):
    """A threshold of 0 (clips everything), and of inf (clips nothing)."""
    return (Edge("threshold_0", lambda c: c.attrs[attr] == 0, {attr: 0.0}),
            Edge("threshold_inf", lambda c: np.isinf(c.attrs[attr]), {attr: float("inf")}))


ZERO_GRADIENTS = Edge("zero_gradients", lambda c: not any(np.any(a) for a in c.arrays.values()))
OPTIMIZER_ROUTE = attr_is("route", "optimizer")

register(Layer(
    "clip_by_value", clip_by_value, None,
    edges=(*_threshold("clip_value"), ZERO_GRADIENTS, OPTIMIZER_ROUTE,
           Edge("at_threshold", lambda c: bool(np.any(np.abs(c.arrays["g"]) == c.attrs["clip_value"])))),
    dims={"shape": CLIP_SHAPE},
    attrs={"clip_value": CLIP_THRESHOLD, "route": CLIP_ROUTE},
    arrays={"g": Array(S("shape"), GRAD_VALUES)},
))

register(Layer(
    "clip_by_norm", clip_by_norm, None,
    edges=(*_threshold("max_norm"), ZERO_GRADIENTS, OPTIMIZER_ROUTE, attr_is("error_if_nonfinite", True)),
    dims={"shape": CLIP_SHAPE},
    attrs={"max_norm": CLIP_THRESHOLD, "error_if_nonfinite": Choice(False, True), "route": CLIP_ROUTE},
    arrays={"g": Array(S("shape"), GRAD_VALUES)},
    conventions={"norm_eps": 0.0},
))

register(Layer(
    "clip_by_global_norm", clip_by_global_norm, None,
    edges=(*_threshold("max_norm"), ZERO_GRADIENTS, OPTIMIZER_ROUTE,
           Edge("one_tensor", lambda c: "g2" not in c.arrays)),
    dims={"shape1": CLIP_SHAPE, "shape2": CLIP_SHAPE},
    attrs={"max_norm": CLIP_THRESHOLD, "error_if_nonfinite": Choice(False, True), "route": CLIP_ROUTE},
    arrays={"g1": Array(S("shape1"), GRAD_VALUES), "g2": Array(S("shape2"), GRAD_VALUES, optional=True)},
    conventions={"norm_eps": 0.0},
))

