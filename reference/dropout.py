"""Dropout with an explicit keep-mask (the mask is data in the case)."""

import numpy as np

from .catalogue import SUBNORMAL, S, registrar
from .spec import Array, Edge, Float, Layer, Mask, Shape, require


def dropout(x, mask, *, p):
    """Inverted dropout with a given mask: y = x * mask / (1 - p).

    ``mask`` holds 0 (dropped) or 1 (kept); kept values are scaled by 1/(1 - p)
    so the expectation over masks is x. The mask is not differentiated.
    Gradient: gx = g * mask / (1 - p). Linear in x: smooth everywhere.
    p = 1 drops every element: y = 0 and gx = 0, whatever the mask (the scale
    1/(1 - p) is never taken: PyTorch multiplies by 0, Keras returns zeros_like
    without drawing a mask).
    Shapes: x and mask of one shape -> y like x.
    """
    require(0.0 <= p <= 1.0, "p", f"must be in [0, 1], got {p}")
    require(mask.shape == x.shape, "mask", f"expected the shape of x {x.shape}, got {mask.shape}")
    require(bool(np.all((mask == 0) | (mask == 1))), "mask", "expected only 0 and 1")
    require(p > 0 or bool(np.all(mask == 1)), "mask", "a rate of 0 keeps every element")
    scaled = np.zeros(mask.shape) if p == 1 else mask / (1.0 - p)
    return x * scaled, scaled


def dropout_vjp(scaled, g):
    return {"x": g * scaled}


# ---- catalogue entries --------------------------------------------------------

register = registrar("dropout")
ANY_SHAPE = {"shape": Shape(min_dims=1, max_dims=4, max_side=4)}


register(Layer(
    "dropout", dropout, dropout_vjp, dims=ANY_SHAPE,
    edges=(Edge("keep_all", lambda c: c.attrs["p"] == 0, {"p": 0.0}), Edge("p_half", lambda c: c.attrs["p"] == 0.5,
                                                                               {"p": 0.5}),
           Edge("drop_all", lambda c: c.attrs["p"] == 1, {"p": 1.0}), SUBNORMAL),
    attrs={"p": Float(0.0, 0.9, edges=(0.0, 0.5, 1.0))},
    arrays={"x": Array(S("shape")), "mask": Array(S("shape"), Mask("p"), grad=False)},
))

