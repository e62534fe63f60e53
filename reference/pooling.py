"""Pooling: max_pool2d, avg_pool2d, global_avg_pool2d, adaptive_avg_pool2d (NCHW).

Windows are the convolution's (``conv.windows``: a strided view, no copy); the
backward pass scatters each window's cotangent back with ``conv.col2im`` (one
strided add per kernel offset, no loop over batch, channels or positions).

``ceil_mode`` (PyTorch's) rounds the number of windows up: a last, partial
window that overhangs the bottom/right edge is added when it starts inside the
input or its top/left padding (PyTorch's rule: a window starting in the
bottom/right padding is dropped). It is computed as extra bottom/right padding
(``_ceil_overhang``) that pads with -inf for max pooling and is never counted
by average pooling.
"""

from __future__ import annotations

import numpy as np

from .conv import (BATCHED, PAD_MODE, PADDINGS, col2im, crop_spatial, explicit_pad, in_size, pad_spatial,
                   padding_mode, resolve_padding, windows)
from .batching import batch_axis, unbatched
from .catalogue import NONFINITE, SUBNORMAL, UNBATCHED, S, attr_is, batch_of, of_dim, registrar
from .spec import Array, Choice, Drawn, Edge, Int, Layer, Real, require

TIES = ("first", "last", "split")
NAN_ROUTES = ("first", "last")


def _ceil_overhang(size, before, after, kernel, stride, dilation):
    """Rows past the padded input that ceil_mode's last window covers (0 when it adds none).

    PyTorch (aten/native/Pool.h, pooling_output_shape): out = ceil((P - span) / s) + 1
    with P = size + before + after and span = d (k - 1) + 1, then one fewer when
    (out - 1) s >= size + before (the last window would start in the bottom padding)."""
    padded, span = size + before + after, dilation * (kernel - 1) + 1
    out = -(-(padded - span) // stride) + 1
    if (out - 1) * stride >= size + before:
        out -= 1
    return max(0, (out - 1) * stride + span - padded)


def pool_pads(x, kernel, stride, dilation, padding, pad_h, pad_w, ceil_mode):
    """(pads, counted): the padding on each side including ceil_mode's overhang, and
    the padding inside it that average pooling may count (the overhang never is)."""
    require(x.ndim == 4, "x", f"expected (N, C, H, W), got shape {x.shape}")
    for name, v in (("kernel_h", kernel[0]), ("kernel_w", kernel[1]), ("stride_h", stride[0]), ("stride_w", stride[1]),
                    ("dilation_h", dilation[0]), ("dilation_w", dilation[1])):
        require(isinstance(v, (int, np.integer)) and v >= 1, name, f"must be a positive integer, got {v!r}")
    for name, p, k in (("pad_h", pad_h, kernel[0]), ("pad_w", pad_w, kernel[1])):
        require(2 * p <= k, name, f"must be at most half the kernel ({k}), got {p}: a window would lie in the padding")
    require(isinstance(ceil_mode, (bool, np.bool_)), "ceil_mode", f"expected a boolean, got {ceil_mode!r}")
    counted = resolve_padding(padding, ((pad_h, pad_h), (pad_w, pad_w)), x.shape[2:], kernel, stride, dilation)
    for n, (before, after), k, d in zip(x.shape[2:], counted, kernel, dilation):
        require(n + before + after >= d * (k - 1) + 1, "x",
                f"padded input {x.shape[2:]} smaller than the dilated kernel: no window")
    extra = [_ceil_overhang(n, b, a, k, s, d) if ceil_mode else 0
             for n, (b, a), k, s, d in zip(x.shape[2:], counted, kernel, stride, dilation)]
    pads = tuple((b, a + e) for (b, a), e in zip(counted, extra))
    # Every window must hold a cell of x: one that holds only padding is -inf (max) or 0 / count.
    inside = windows(pad_spatial(np.ones((1, 1) + x.shape[2:]), pads), kernel, stride, dilation).sum(axis=(-2, -1))
    require(inside.min() >= 1, "x", f"input {x.shape[2:]} with padding {pads} and dilation {dilation} leaves a "
                                     "window with no cell of x")
    return pads, counted


def max_pool2d(x, *, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, padding, pad_h, pad_w,
               ceil_mode, tie="first", nan_route="first"):
    """2-D max pooling, NCHW: y[n, c, i, j] = max of window (i, j) of the padded x.

    Window (i, j) covers rows i sH + dH [0, kH), columns j sW + dW [0, kW) of x
    padded with -inf (padding never wins). ``padding``: "valid", "same"
    (TensorFlow's rule for the dilated kernel, the odd pixel at the
    bottom/right) or "explicit" (pad_h, pad_w on both sides, at most half the
    kernel, as PyTorch requires; 0 otherwise). ``ceil_mode``: PyTorch's partial
    last window (see the module docstring; no effect with "same").

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW),
    OH = floor((H + 2 pad_h - dH (kH - 1) - 1) / sH) + 1 (ceil with ceil_mode, as above).

    Gradient: gx[n, c, u, v] = Σ_{windows (i, j) whose chosen maximum is at (u, v)} g[n, c, i, j].
    At a tie inside a window the convention ``tie`` picks the receiver:
    "first" (the first maximum in row-major window order), "last", or "split"
    (g divided evenly among the tied maxima).

    A window holding NaN has maximum NaN (IEEE 754-2019 maximum propagates NaN),
    and the NaN is what it chose: the gradient goes to the first NaN in window
    order (``nan_route="first"``) or the last (``"last"``: a scan that replaces
    its candidate on ``val > max || isnan(val)``); "split" divides it among them.
    """
    require(tie in TIES, "tie", f"expected one of {TIES}, got {tie!r}")
    require(nan_route in NAN_ROUTES, "nan_route", f"expected one of {NAN_ROUTES}, got {nan_route!r}")
    kernel, stride, dilation = (kernel_h, kernel_w), (stride_h, stride_w), (dilation_h, dilation_w)
    pads, _ = pool_pads(x, kernel, stride, dilation, padding, pad_h, pad_w, ceil_mode)
    xp = pad_spatial(x, pads, value=-np.inf)
    win = windows(xp, kernel, stride, dilation)  # a view; win[..., i, j] is kernel offset (i, j) of every window
    # Which window cells are cells of x: a padding cell never wins, even against a -inf.
    cell = windows(pad_spatial(np.ones((1, 1) + x.shape[2:], dtype=bool), pads, value=False), kernel, stride,
                   dilation)
    # One pass per kernel offset, in row-major order: the running maximum and which offset holds it.
    y, chosen = np.full(win.shape[:4], -np.inf), np.zeros(win.shape[:4], dtype=np.intp)
    seen = np.zeros(win.shape[:4], dtype=bool)  # a cell of x was already a candidate
    for k, (i, j) in enumerate(np.ndindex(*kernel)):
        v, real = win[..., i, j], cell[..., i, j]
        wins = v >= y if tie == "last" else v > y  # "first" (and "split") keep the earliest maximum
        wins |= np.isnan(v) if nan_route == "last" else np.isnan(v) & ~np.isnan(y)
        wins = real & (wins | ~seen)
        np.copyto(y, np.maximum(y, v), where=real)
        np.copyto(chosen, k, where=wins)
        seen |= real
    if tie == "split":
        yy = y[..., None, None]
        is_max = np.moveaxis(((win == yy) | np.isnan(win) & np.isnan(yy)) & cell, (4, 5), (0, 1))
        route = is_max / is_max.sum(axis=(0, 1))
    else:
        route = chosen == np.arange(kernel_h * kernel_w).reshape(kernel_h, kernel_w, 1, 1, 1, 1)
    return y, {"route": route, "padded_shape": xp.shape, "pads": pads, "stride": stride, "dilation": dilation}


def max_pool2d_vjp(res, g):
    return {"x": _scatter(res["route"] * g, res)}


def _scatter(slabs, res):
    """Window cells (kH, kW, N, C, OH, OW) back onto x: col2im, then drop the padding."""
    return crop_spatial(col2im(slabs, res["padded_shape"][2:], res["stride"], res["dilation"]), res["pads"])


def avg_pool2d(x, *, kernel_h, kernel_w, stride_h, stride_w, padding, pad_h, pad_w, count_include_pad, ceil_mode,
               divisor_override):
    """2-D average pooling, NCHW: y[n, c, i, j] = (sum of window (i, j) of the zero-padded x) / count[i, j].

    ``count_include_pad``: count = the cells of the window inside x and its
    padding (PyTorch's default; kH kW except for a ceil_mode window, whose
    overhang past the padding is not counted) or the cells of x inside the
    window (TensorFlow's 'SAME'). ``divisor_override`` (PyTorch's): a nonzero
    int that replaces count in every window (count_include_pad then changes
    nothing); None: no override. ``padding`` and ``ceil_mode`` as for
    max_pool2d. Every window holds at least one cell of x.

    Shapes: x (N, C, H, W) -> y (N, C, OH, OW), OH = floor((H + pad - kH) / sH) + 1.

    Gradient: gx[n, c, u, v] = Σ_{windows (i, j) containing (u, v)} g[n, c, i, j] / count[i, j].
    Linear: smooth everywhere.
    """
    require(isinstance(count_include_pad, (bool, np.bool_)), "count_include_pad",
            f"expected a boolean, got {count_include_pad!r}")
    require(divisor_override is None or isinstance(divisor_override, (int, np.integer))
            and not isinstance(divisor_override, bool) and divisor_override != 0,
            "divisor_override", f"expected None or a nonzero int, got {divisor_override!r}")
    kernel, stride, unit = (kernel_h, kernel_w), (stride_h, stride_w), (1, 1)
    pads, counted = pool_pads(x, kernel, stride, unit, padding, pad_h, pad_w, ceil_mode)
    xp = pad_spatial(x, pads)
    total = windows(xp, kernel, stride, unit).sum(axis=(-2, -1))
    if divisor_override is not None:
        count = np.full(total.shape[2:], float(divisor_override))
    else:
        # 1 on the cells the count includes: x and (count_include_pad) its padding, not ceil_mode's overhang.
        mask = np.ones((1, 1) + x.shape[2:])
        if count_include_pad:
            mask = pad_spatial(mask, counted, value=1.0)
            pads_left = tuple((0, a - c) for (_, a), (_, c) in zip(pads, counted))
        else:
            pads_left = pads
        count = windows(pad_spatial(mask, pads_left), kernel, stride, unit).sum(axis=(-2, -1))[0, 0]
    return total / count, {"count": count, "kernel": kernel, "padded_shape": xp.shape, "pads": pads,
                           "stride": stride, "dilation": unit}


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


def adaptive_windows(size: int, out: int) -> np.ndarray:
    """The averaging matrix A (out, size) of adaptive pooling along one axis (PyTorch's
    windows): row i averages x[start_i:end_i], start_i = floor(i size / out),
    end_i = ceil((i + 1) size / out). Windows overlap when out does not divide size
    (and when out > size); every window holds at least one cell."""
    i = np.arange(out)[:, None]
    start, end = (i * size) // out, -((-(i + 1) * size) // out)
    cells = np.arange(size)[None, :]
    return ((cells >= start) & (cells < end)) / (end - start)


def adaptive_avg_pool2d(x, *, output_h, output_w):
    """Adaptive average pooling to (output_h, output_w), NCHW:
    y[n, c, i, j] = mean of x[n, c, start_i:end_i, start_j:end_j] (``adaptive_windows``),
    i.e. y = A_h x A_wᵀ per (n, c): the rectangle's mean is the product of the two 1-D means.

    Shapes: x (N, C, H, W) -> y (N, C, output_h, output_w); output 1x1 is global pooling,
    output (H, W) the identity, larger outputs repeat cells.
    Gradient: gx = A_hᵀ g A_w per (n, c). Linear: smooth everywhere.
    """
    require(x.ndim == 4, "x", f"expected (N, C, H, W), got shape {x.shape}")
    for name, v in (("output_h", output_h), ("output_w", output_w)):
        require(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1, name,
                f"must be a positive integer, got {v!r}")
    a_h, a_w = adaptive_windows(x.shape[2], output_h), adaptive_windows(x.shape[3], output_w)
    special = ~np.isfinite(x)
    if not special.any():
        return np.einsum("ih,nchw,jw->ncij", a_h, x, a_w), (a_h, a_w)
    # A window's mean reads its own cells only: in the product A_h x A_wᵀ a NaN or Inf
    # outside the window would enter as 0 * NaN. The windows that hold one are summed
    # cell by cell instead, the others from x with those cells set to 0.
    y = np.einsum("ih,nchw,jw->ncij", a_h, np.where(special, 0.0, x), a_w)
    holds = np.einsum("ih,nchw,jw->ncij", (a_h > 0).astype(float), special.astype(float), (a_w > 0).astype(float)) > 0
    y = np.where(holds, _window_means(x, a_h, a_w), y)
    return y, (a_h, a_w)


def _window_means(x, a_h, a_w):
    """Each window's mean from its own cells (a_h, a_w's nonzero entries), with where()
    so cells outside a window contribute nothing, not 0 * x."""
    inside = (a_h > 0)[:, None, :, None] & (a_w > 0)[None, :, None, :]  # (i, j, h, w)
    cells = np.where(inside[None, None], x[:, :, None, None], 0.0)  # (n, c, i, j, h, w)
    return cells.sum(axis=(-2, -1)) / inside.sum(axis=(-2, -1))


def adaptive_avg_pool2d_vjp(res, g):
    a_h, a_w = res
    return {"x": np.einsum("ih,ncij,jw->nchw", a_h, g, a_w)}


# ---- catalogue entries --------------------------------------------------------

register = registrar("pooling")
POOL_VALUES = Real(-3.0, 3.0, edges=(0.0,), ties=True)  # ties: equal values inside one window

# Pooling: explicit padding is symmetric and at most half the (undilated) kernel
# (PyTorch's rule); 'same' may pad one side more. ceil_mode is drawn only where it
# can act (not with 'same', whose windows already cover the input), and then the
# spare rows are short of a full stride: a partial last window, or one that would
# start in the bottom padding (PyTorch drops it). The input is at least
# as long as the dilation, so every dilated window holds a cell of x.
POOL_DIMS = {"N": Int(1, 3, edges=(0,)), "C": Int(1, 3), "kH": Int(1, 3), "kW": Int(1, 3, like="kH"),
             "OH": Int(1, 3), "OW": Int(1, 3), "slack_h": Int(0, 2), "slack_w": Int(0, 2), "pad_mode": PAD_MODE}
POOL_ATTRS = {"batched": BATCHED, "kernel_h": of_dim("kH"), "kernel_w": of_dim("kW"), "stride_h": Int(1, 3),
              "stride_w": Int(1, 3), "padding": padding_mode,
              "pad_h": explicit_pad(lambda d: d.kH // 2), "pad_w": explicit_pad(lambda d: d.kW // 2),
              "ceil_mode": Drawn(bool, lambda d: Choice(False) if PADDINGS[d.pad_mode] == "same"
                                 else Choice(True, False))}


def _pool_windows(case):
    """The windows of a pooling case as the oracle reads them: (N, C, OH, OW, kH, kW), padding -inf."""
    a, x = case.attrs, case.arrays["x"].astype(float)
    x = x if a["batched"] else x[np.newaxis]
    kernel, stride = (a["kernel_h"], a["kernel_w"]), (a["stride_h"], a["stride_w"])
    dilation = (a.get("dilation_h", 1), a.get("dilation_w", 1))
    pads, _ = pool_pads(x, kernel, stride, dilation, a["padding"], a["pad_h"], a["pad_w"], a["ceil_mode"])
    return windows(pad_spatial(x, pads, -np.inf), kernel, stride, dilation)


def _out(case):
    return case.attrs["output_h"], case.attrs["output_w"]


def _tied_maximum(case):
    """Some window holds its maximum twice (where a tie convention routes the gradient)."""
    if case.arrays["x"].size == 0:
        return False
    w = _pool_windows(case)
    top = w.max(axis=(-2, -1), keepdims=True)
    return bool(np.any(((w == top) & np.isfinite(top)).sum(axis=(-2, -1)) > 1))


def _stride_over_kernel(case):
    a = case.attrs
    return a["stride_h"] > a["kernel_h"] or a["stride_w"] > a["kernel_w"]


def _same_asymmetric(case):
    a, x = case.attrs, case.arrays["x"]
    pads = resolve_padding(a["padding"], ((a["pad_h"],) * 2, (a["pad_w"],) * 2), tuple(x.shape[-2:]),
                           (a["kernel_h"], a["kernel_w"]), (a["stride_h"], a["stride_w"]),
                           (a.get("dilation_h", 1), a.get("dilation_w", 1)))
    return a["padding"] == "same" and any(before != after for before, after in pads)


POOL_EDGES = (batch_of(1), batch_of(0), UNBATCHED, Edge("stride_over_kernel", _stride_over_kernel),
              Edge("ceil_mode", lambda c: c.attrs["ceil_mode"], {"ceil_mode": True, "pad_mode": Choice(0, 2)}),
              Edge("same_asymmetric", _same_asymmetric, {"pad_mode": 1}),
              Edge("explicit_padding", lambda c: c.attrs["pad_h"] + c.attrs["pad_w"] > 0, {"pad_mode": 2}))


def _pooled(values):
    def side(out, slack, kernel, stride, dilation, pad, a):
        if a["ceil_mode"] and stride > 1:  # spare rows short of a full stride: ceil_mode's partial window
            slack = 1 + slack % (stride - 1)
        return max(dilation, in_size(out, slack, kernel, stride, dilation, a["padding"], pad, pad))

    def shape(d, a):
        return (d.N, d.C, side(d.OH, d.slack_h, d.kH, a["stride_h"], a.get("dilation_h", 1), a["pad_h"], a),
                side(d.OW, d.slack_w, d.kW, a["stride_w"], a.get("dilation_w", 1), a["pad_w"], a))
    return Array(batch_axis(shape), values)


register(Layer(
    "max_pool2d", *unbatched(max_pool2d, max_pool2d_vjp), dims=POOL_DIMS, empty=True, nonfinite=("x",),
    edges=(*POOL_EDGES, Edge("tied_maximum", _tied_maximum),
           Edge("dilated", lambda c: max(c.attrs["dilation_h"], c.attrs["dilation_w"]) > 1), NONFINITE, SUBNORMAL),
    attrs={**POOL_ATTRS, "dilation_h": Int(1, 3), "dilation_w": Int(1, 3)},
    arrays={"x": _pooled(POOL_VALUES)}, conventions={"tie": "first", "nan_route": "first"},
))

# divisor_override: None (no override) or any nonzero int, which the oracle answers
# (validated there, so the type here is any object); drawn: None, 1, 2 and -2.
DIVISOR_OVERRIDE = Drawn(object, lambda d: Choice(None, 1, 2, -2))

register(Layer(
    "avg_pool2d", *unbatched(avg_pool2d, avg_pool2d_vjp), dims=POOL_DIMS, empty=True, nonfinite=("x",),
    edges=(*POOL_EDGES, Edge("padding_not_counted", lambda c: not c.attrs["count_include_pad"]
                             and (c.attrs["padding"] != "valid" or c.attrs["ceil_mode"]), {"count_include_pad": False}),
           attr_is("divisor_override", 1), attr_is("divisor_override", 2),
           Edge("negative_divisor", lambda c: (c.attrs["divisor_override"] or 0) < 0, {"divisor_override": -2}),
           NONFINITE, SUBNORMAL),
    attrs={**POOL_ATTRS, "count_include_pad": Choice(True, False), "divisor_override": DIVISOR_OVERRIDE},
    arrays={"x": _pooled(Real())},
))

register(Layer(
    "global_avg_pool2d", global_avg_pool2d, global_avg_pool2d_vjp, empty=True, nonfinite=("x",),
    edges=(batch_of(1), batch_of(0), Edge("one_pixel", lambda c: c.arrays["x"].shape[2:] == (1, 1), {"H": 1, "W": 1}),
           NONFINITE, SUBNORMAL),
    dims={"N": Int(1, 3, edges=(0,)), "C": Int(1, 4), "H": Int(1, 5), "W": Int(1, 5, like="H")},
    arrays={"x": Array(S("N", "C", "H", "W"))},
))

# Output sizes that divide the input, that do not (overlapping windows), 1x1
# (global), equal to the input (identity) and larger than it (cells repeat).
register(Layer(
    "adaptive_avg_pool2d", *unbatched(adaptive_avg_pool2d, adaptive_avg_pool2d_vjp), empty=True,
    nonfinite=("x",),
    edges=(batch_of(0), UNBATCHED,
           Edge("overlapping", lambda c: any(n % o for n, o in zip(c.arrays["x"].shape[-2:], _out(c)))),
           Edge("upsampling", lambda c: any(o > n for n, o in zip(c.arrays["x"].shape[-2:], _out(c)))),
           Edge("identity", lambda c: tuple(c.arrays["x"].shape[-2:]) == _out(c)),
           Edge("global", lambda c: _out(c) == (1, 1), {"OH": 1, "OW": 1}), NONFINITE, SUBNORMAL),
    dims={"N": Int(1, 3, edges=(0,)), "C": Int(1, 3), "H": Int(1, 6), "W": Int(1, 6, like="H"),
          "OH": Int(1, 5, like="H"), "OW": Int(1, 5, like="OH")},
    attrs={"batched": BATCHED, "output_h": of_dim("OH"), "output_w": of_dim("OW")},
    arrays={"x": Array(batch_axis(S("N", "C", "H", "W")))},
))


