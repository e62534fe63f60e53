"""Composite layers, built from the pieces' own oracles (no re-derivation)."""

from .activations import relu, relu_vjp
from .dense import dense, dense_vjp


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
