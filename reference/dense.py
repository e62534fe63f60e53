"""Dense (fully connected) layer, and the residual block built from it."""

from .activations import relu, relu_vjp
import numpy as np

from .catalogue import NONFINITE, SUBNORMAL, S, batch_of, registrar, without
from .spec import Array, Edge, Int, Layer, require


def dense(x, W, b=None):
    """Dense layer: y = x W + b.

    Shapes: x (N, I), W (I, O), b (O,) -> y (N, O). Canonical W is (in, out), as
    Keras stores its kernel; PyTorch's ``Linear.weight`` is the transpose.

    Gradients: gx = g Wᵀ,  gW = xᵀ g,  gb = Σ_n g[n].
    Smooth everywhere.
    """
    require(x.ndim == 2, "x", f"expected (N, I), got shape {x.shape}")
    require(W.ndim == 2 and W.shape[0] == x.shape[1], "W", f"expected ({x.shape[1]}, O) to match x {x.shape}, got {W.shape}")
    y = x @ W
    if b is not None:
        require(b.shape == (W.shape[1],), "b", f"expected ({W.shape[1]},) to match W {W.shape}, got {b.shape}")
        y = y + b
    return y, (x, W, b is not None)


def dense_vjp(res, g):
    x, W, has_bias = res
    grads = {"x": g @ W.T, "W": x.T @ g}
    if has_bias:
        grads["b"] = g.sum(axis=0)
    return grads


def residual_block(x, W1, b1, W2, b2):
    """Residual block: y = x + relu(x W1 + b1) W2 + b2.

    Shapes: x (N, D), W1 (D, H), b1 (H,), W2 (H, D), b2 (D,) -> y (N, D).
    Gradients: the chain rule through the two dense layers and the ReLU, plus
    the skip path: gx = g + dense-vjp(relu-vjp(dense-vjp(g))). ReLU'(0) = 0.
    """
    h, res1 = dense(x, W1, b1)
    a, res_relu = relu(h)
    y, res2 = dense(a, W2, b2)
    return x + y, (res1, res_relu, res2)


def residual_block_vjp(res, g):
    res1, res_relu, res2 = res
    g2 = dense_vjp(res2, g)
    g_h = relu_vjp(res_relu, g2["x"])["x"]
    g1 = dense_vjp(res1, g_h)
    return {"x": g + g1["x"], "W1": g1["W"], "b1": g1["b"], "W2": g2["W"], "b2": g2["b"]}


# ---- catalogue entries --------------------------------------------------------

register = registrar("dense")


def _square(weight):
    return Edge("square", lambda c: c.arrays[weight].shape[0] == c.arrays[weight].shape[1])


register(Layer(
    "dense", dense, dense_vjp, empty=True, nonfinite=("x",),
    edges=(batch_of(1), batch_of(0), _square("W"), Edge("one_input", lambda c: c.arrays["W"].shape[0] == 1, {"I": 1}),
           without("b", "no_bias"), NONFINITE, SUBNORMAL),
    dims={"N": Int(1, 4, edges=(0,)), "I": Int(1, 6), "O": Int(1, 6, like="I")},
    arrays={
        "x": Array(S("N", "I")),
        "W": Array(S("I", "O"), param=True),
        "b": Array(S("O"), param=True, optional=True),
    },
))

register(Layer(
    "residual_block", residual_block, residual_block_vjp,
    # a pre-activation exactly 0: ReLU's kink inside the block
    edges=(batch_of(1), _square("W1"), SUBNORMAL,
           Edge("kink", lambda c: bool(np.any(c.arrays["x"].astype(float) @ c.arrays["W1"] + c.arrays["b1"] == 0)))),
    dims={"N": Int(1, 4), "D": Int(1, 5), "H": Int(1, 6, like="D")},
    arrays={
        "x": Array(S("N", "D")),
        "W1": Array(S("D", "H"), param=True),
        "b1": Array(S("H"), param=True),
        "W2": Array(S("H", "D"), param=True),
        "b2": Array(S("D"), param=True),
    },
))

