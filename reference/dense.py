"""Dense (fully connected) layer."""

from .spec import require


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
