"""Pooling: max_pool2d, avg_pool2d, global_avg_pool2d (NCHW).

Windows are the convolution's (``conv.windows``: a strided view, no copy); the
backward pass scatters each window's cotangent back with ``conv.col2im`` (one
strided add per kernel offset, no loop over batch, channels or positions).
"""

from __future__ import annotations

import numpy as np

from .conv import col2im, crop_spatial, pad_spatial, resolve_padding, windows
from .spec import require

TIES = ("first", "last", "split")


def _pool_pads(x, kernel, stride, padding, pad_h, pad_w):
    require(x.ndim == 4, "x", f"expected (N, C, H, W), got shape {x.shape}")
    for name, v in (("kernel_h", kernel[0]), ("kernel_w", kernel[1]), ("stride_h", stride[0]), ("stride_w", stride[1])):
        require(isinstance(v, (int, np.integer)) and v >= 1, name, f"must be a positive integer, got {v!r}")
    for name, p, k in (("pad_h", pad_h, kernel[0]), ("pad_w", pad_w, kernel[1])):
        require(2 * p <= k, name, f"must be at most half the kernel ({k}), got {p}: a window would lie in the padding")
    return resolve_padding(padding, ((pad_h, pad_h), (pad_w, pad_w)), x.shape[2:], kernel, stride, (1, 1))


def max_pool2d(x, *, kernel_h, kernel_w, stride_h, stride_w, padding, pad_h, pad_w, tie="first"):
    """2-D max pooling, NCHW: y[n, c, i, j] = max of window (i, j) of the padded x.

    Window (i, j) covers rows i sH + [0, kH), columns j sW + [0, kW) of x padded
    with -inf (padding never wins). ``padding``: "valid", "same" (TensorFlow's
    rule, the odd pixel at the bottom/right) or "explicit" (pad_h, pad_w on both
    sides, at most half the kernel, as PyTorch requires; 0 otherwise).

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW), OH = floor((H + 2 pad_h - kH) / sH) + 1.

    Gradient: gx[n, c, u, v] = Σ_{windows (i, j) whose chosen maximum is at (u, v)} g[n, c, i, j].
    At a tie inside a window the convention ``tie`` picks the receiver:
    "first" (the first maximum in row-major window order), "last", or "split"
    (g divided evenly among the tied maxima).
    """
    require(tie in TIES, "tie", f"expected one of {TIES}, got {tie!r}")
    kernel, stride = (kernel_h, kernel_w), (stride_h, stride_w)
    pads = _pool_pads(x, kernel, stride, padding, pad_h, pad_w)
    xp = pad_spatial(x, pads, value=-np.inf)
    win = windows(xp, kernel, stride, (1, 1))  # a view; win[..., i, j] is kernel offset (i, j) of every window
    # One pass per kernel offset, in row-major order: the running maximum and which offset holds it.
    y, chosen = win[..., 0, 0].copy(), np.zeros(win.shape[:4], dtype=np.intp)
    for k, (i, j) in enumerate(np.ndindex(*kernel)):
        v = win[..., i, j]
        wins = v >= y if tie == "last" else v > y  # "first" (and "split") keep the earliest maximum
        np.maximum(y, v, out=y)
        np.copyto(chosen, k, where=wins)
    if tie == "split":
        is_max = np.moveaxis(win == y[..., None, None], (4, 5), (0, 1))
        route = is_max / is_max.sum(axis=(0, 1))
    else:
        route = chosen == np.arange(kernel_h * kernel_w).reshape(kernel_h, kernel_w, 1, 1, 1, 1)
    return y, {"route": route, "padded_shape": xp.shape, "pads": pads, "stride": stride}


def max_pool2d_vjp(res, g):
    return {"x": _scatter(res["route"] * g, res)}


def _scatter(slabs, res):
    """Window cells (kH, kW, N, C, OH, OW) back onto x: col2im, then drop the padding."""
    return crop_spatial(col2im(slabs, res["padded_shape"][2:], res["stride"], (1, 1)), res["pads"])


def avg_pool2d(x, *, kernel_h, kernel_w, stride_h, stride_w, padding, pad_h, pad_w, count_include_pad):
    """2-D average pooling, NCHW: y[n, c, i, j] = (sum of window (i, j) of the zero-padded x) / count.

    ``count_include_pad``: count = kH kW (padded cells count as zeros, PyTorch's
    default) or the number of cells of x inside the window (TensorFlow's 'SAME').
    ``padding`` as for max_pool2d. Every window holds at least one cell of x.

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW), OH = floor((H + pad - kH) / sH) + 1.

    Gradient: gx[n, c, u, v] = Σ_{windows (i, j) containing (u, v)} g[n, c, i, j] / count[i, j].
    Linear: smooth everywhere.
    """
    require(isinstance(count_include_pad, (bool, np.bool_)), "count_include_pad",
            f"expected a boolean, got {count_include_pad!r}")
    kernel, stride = (kernel_h, kernel_w), (stride_h, stride_w)
    pads = _pool_pads(x, kernel, stride, padding, pad_h, pad_w)
    xp = pad_spatial(x, pads)
    total = windows(xp, kernel, stride, (1, 1)).sum(axis=(-2, -1))
    if count_include_pad:
        count = np.full(total.shape[2:], float(kernel_h * kernel_w))
    else:
        inside = pad_spatial(np.ones((1, 1) + x.shape[2:]), pads)
        count = windows(inside, kernel, stride, (1, 1)).sum(axis=(-2, -1))[0, 0]
    return total / count, {"count": count, "kernel": kernel, "padded_shape": xp.shape, "pads": pads, "stride": stride}


def avg_pool2d_vjp(res, g):
    share = g / res["count"]
    return {"x": _scatter(np.broadcast_to(share, tuple(res["kernel"]) + share.shape), res)}


def global_avg_pool2d(x):
    """Global average pooling, NCHW -> NC: y[n, c] = mean over (h, w) of x[n, c, h, w].

    Shapes: x (N, C, H, W) -> y (N, C). Gradient: gx[n, c, h, w] = g[n, c] / (H W).
    Smooth everywhere.
    """
    require(x.ndim == 4, "x", f"expected (N, C, H, W), got shape {x.shape}")
    return x.mean(axis=(2, 3)), x.shape


def global_avg_pool2d_vjp(shape, g):
    return {"x": np.broadcast_to((g / (shape[2] * shape[3]))[:, :, None, None], shape).copy()}
