"""Convolutions: conv1d, conv2d and conv_transpose2d, by im2col and one matrix product.

Canonical layout is PyTorch's: inputs NCHW (NCL), conv weights (O, I/G, kH, kW),
transposed-conv weights (I, O/G, kH, kW). Every function is a cross-correlation
(no kernel flip), as in both frameworks.

How it is computed (no Python loop over batch, channels or positions):

* the padded input is cut into windows with ``sliding_window_view`` (a view),
  strided and dilated by slicing, and copied once into a column matrix
  ``cols`` of shape (G, Cg kH kW, N OH OW), one block per group;
* forward, weight gradient and column gradient are each one matrix product
  per group (``np.matmul`` over the G blocks): few, large BLAS calls, which
  matter more than a transposed copy of y or g on a busy 2-core machine;
* the column gradient goes back to the input (``col2im``) with one strided
  add per kernel offset (a loop over the kH kW offsets only).

``conv_transpose2d`` is the adjoint of ``conv2d``: its forward pass is conv2d's
input gradient, and its gradients are a conv2d forward pass (for x) and a conv2d
weight gradient (for W). Nothing is derived twice.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .batching import batch_axis, unbatched
from .catalogue import NONFINITE, SUBNORMAL, UNBATCHED, batch_of, of_dim, registrar, without
from .spec import Array, Choice, Drawn, Edge, Int, Layer, require

PADDINGS = ("valid", "same", "explicit")


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding of one axis: out = ceil(size / stride),
    total = max(0, (out - 1) stride + dilation (kernel - 1) + 1 - size),
    before = total // 2, after = the rest (the odd pixel goes last)."""
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + dilation * (kernel - 1) + 1 - size)
    return total // 2, total - total // 2


def resolve_padding(padding, pads, sizes, kernels, strides, dilations):
    """Per-axis (before, after) padding for ``padding`` in PADDINGS.

    ``pads``: the explicit amounts by axis, ((before, after), ...); they must be 0
    unless ``padding == "explicit"``, so a case never carries ignored numbers.
    """
    require(padding in PADDINGS, "padding", f"expected one of {PADDINGS}, got {padding!r}")
    for before, after in pads:
        require(before >= 0 and after >= 0, "padding", f"negative padding {pads}")
        require(padding == "explicit" or before == after == 0, "padding",
                f"explicit amounts {pads} given with padding={padding!r}")
    if padding == "same":
        return tuple(same_pads(n, k, s, d) for n, k, s, d in zip(sizes, kernels, strides, dilations))
    return tuple(tuple(p) for p in pads)


def pad_spatial(x, pads, value=0.0):
    """Pad the trailing len(pads) axes of x by ((before, after), ...) with ``value``."""
    width = [(0, 0)] * (x.ndim - len(pads)) + [tuple(p) for p in pads]
    return np.pad(x, width, constant_values=value) if any(sum(p) for p in pads) else x


def windows(xp, kernel, stride, dilation):
    """All kernel windows of a padded NCHW array, as a view (N, C, OH, OW, kH, kW).

    Window (i, j) covers rows i sH + dH * [0, kH), columns j sW + dW * [0, kW).
    """
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    require(xp.shape[2] >= span[0] and xp.shape[3] >= span[1], "x",
            f"padded input {xp.shape[2:]} smaller than the dilated kernel {span}")
    return sliding_window_view(xp, span, axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]


def col2im(slabs, padded_hw, stride, dilation):
    """The adjoint of ``windows``: add window cells back where they came from.

    ``slabs``: (kH, kW, *lead, OH, OW), the value each window cell carries.
    Returns an array of shape (*lead, *padded_hw). One strided add per kernel
    offset: overlapping windows sum.
    """
    kh, kw = slabs.shape[:2]
    oh, ow = slabs.shape[-2:]
    (sh, sw), (dh, dw) = stride, dilation
    out = np.zeros(slabs.shape[2:-2] + tuple(padded_hw))
    for i in range(kh):
        for j in range(kw):
            out[..., i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw] += slabs[i, j]
    return out


def _im2col(xp, kernel, stride, dilation, groups):
    """Columns (G, Cg kH kW, N OH OW) of a padded input: one contiguous copy."""
    n, c = xp.shape[:2]
    win = windows(xp, kernel, stride, dilation)  # (N, C, OH, OW, kH, kW), a view
    oh, ow = win.shape[2:4]
    win = win.reshape(n, groups, c // groups, oh, ow, *kernel)
    cols = np.ascontiguousarray(win.transpose(1, 2, 5, 6, 0, 3, 4))  # (G, Cg, kH, kW, N, OH, OW)
    return cols.reshape(groups, c // groups * kernel[0] * kernel[1], n * oh * ow), (oh, ow)  # N = 0: no -1


def _by_group(a, groups):
    """(N, G Og, OH, OW) -> (G, Og, N OH OW): a cotangent in the columns' layout (one copy)."""
    n, o, oh, ow = a.shape
    return np.ascontiguousarray(a.reshape(n, groups, o // groups, oh * ow).transpose(1, 2, 0, 3)).reshape(
        groups, o // groups, n * oh * ow)


def _conv_cols(cols, W, groups, n, oh, ow):
    """y = W cols per group, one matrix product each: (G, Og, K) @ (G, K, N P) -> (N, O, OH, OW)."""
    o = W.shape[0]
    y = np.matmul(W.reshape(groups, o // groups, -1), cols).reshape(o, n, oh, ow)
    return np.ascontiguousarray(y.transpose(1, 0, 2, 3))


def _weight_grad(cols, g_by_group, w_shape):
    """gW = g colsᵀ per group: (G, Og, N P) @ (G, N P, K)."""
    return np.matmul(g_by_group, cols.transpose(0, 2, 1)).reshape(w_shape)


def _input_grad(g_by_group, W, padded_shape, stride, dilation, oh, ow):
    """g_xp = col2im(Wᵀ g) per group: the gradient for the padded input.

    One matrix product per kernel offset (i, j), W[:, :, i, j]ᵀ g, added
    straight into its strided slice: the same products as forming all the
    column gradients at once, without that kH kW-times-larger temporary."""
    o, cg, kh, kw = W.shape
    groups = g_by_group.shape[0]
    n = padded_shape[0]
    (sh, sw), (dh, dw) = stride, dilation
    wt = W.reshape(groups, o // groups, cg, kh, kw).transpose(3, 4, 0, 2, 1)  # (kH, kW, G, Cg, Og)
    gxp = np.zeros((groups, cg, n) + tuple(padded_shape[2:]))
    slab = np.empty((groups, cg, n * oh * ow))
    for i in range(kh):
        for j in range(kw):
            np.matmul(wt[i, j], g_by_group, out=slab)
            gxp[..., i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw] += (
                slab.reshape(groups, cg, n, oh, ow))
    return gxp.reshape(groups * cg, n, *padded_shape[2:]).transpose(1, 0, 2, 3)


def crop_spatial(xp, pads):
    """Undo pad_spatial on the two trailing axes."""
    (t, b), (l, r) = pads
    return xp[:, :, t: xp.shape[2] - b, l: xp.shape[3] - r]


def _check_groups(channels, W, groups, field_in, weight_in_axis):
    require(isinstance(groups, (int, np.integer)) and groups >= 1, "groups", f"must be a positive integer, got {groups!r}")
    require(channels % groups == 0, "groups", f"{groups} does not divide the {channels} channels of {field_in}")
    require(W.shape[weight_in_axis] * groups == channels, "W",
            f"axis {weight_in_axis} must be channels / groups = {channels // groups}, got W {W.shape}")


def _check_positive(**values):
    for name, v in values.items():
        require(isinstance(v, (int, np.integer)) and v >= 1, name, f"must be a positive integer, got {v!r}")


def conv2d(x, W, b=None, *, stride_h, stride_w, dilation_h, dilation_w, groups,
           padding, pad_top, pad_bottom, pad_left, pad_right):
    """2-D convolution (cross-correlation), NCHW: y = W ⋆ pad(x) + b.

    y[n, o, i, j] = b[o] + Σ_{c in group(o), p, q} W[o, c, p, q] xp[n, c, i sH + p dH, j sW + q dW]

    Shapes: x (N, C, H, W), W (O, C/G, kH, kW), b (O,) -> y (N, O, OH, OW),
    OH = floor((H + pad_top + pad_bottom - dH (kH - 1) - 1) / sH) + 1. Output
    channels form G contiguous blocks; block g sees input channels
    [g C/G, (g+1) C/G) (both frameworks' convention).
    ``padding``: "valid" (none), "same" (TensorFlow's rule, see ``same_pads``:
    out = ceil(H / s), the odd pixel at the bottom/right), or "explicit"
    (pad_top, pad_bottom, pad_left, pad_right, possibly asymmetric; these must
    be 0 otherwise). Rows and columns no window reaches get zero gradient.

    Gradients (xp the padded input, cropped back to x):
      gW[o, c, p, q] = Σ_{n, i, j} g[n, o, i, j] xp[n, c, i sH + p dH, j sW + q dW]
      gxp[n, c, u, v] = Σ_{o, p, q, i, j : u = i sH + p dH, v = j sW + q dW} g[n, o, i, j] W[o, c, p, q]
      gb[o] = Σ_{n, i, j} g[n, o, i, j]
    Linear in each argument: smooth everywhere.
    """
    require(x.ndim == 4, "x", f"expected (N, C, H, W), got shape {x.shape}")
    require(W.ndim == 4, "W", f"expected (O, C/groups, kH, kW), got shape {W.shape}")
    _check_positive(stride_h=stride_h, stride_w=stride_w, dilation_h=dilation_h, dilation_w=dilation_w)
    _check_groups(x.shape[1], W, groups, "x", 1)
    require(W.shape[0] % groups == 0, "W", f"{W.shape[0]} output channels not divisible by groups={groups}")
    stride, dilation, kernel = (stride_h, stride_w), (dilation_h, dilation_w), W.shape[2:]
    pads = resolve_padding(padding, ((pad_top, pad_bottom), (pad_left, pad_right)), x.shape[2:], kernel, stride, dilation)
    xp = pad_spatial(x, pads)
    cols, (oh, ow) = _im2col(xp, kernel, stride, dilation, groups)
    y = _conv_cols(cols, W, groups, x.shape[0], oh, ow)
    if b is not None:
        require(b.shape == (W.shape[0],), "b", f"expected ({W.shape[0]},) to match W {W.shape}, got {b.shape}")
        y += b[:, None, None]
    return y, {"cols": cols, "W": W, "padded_shape": xp.shape, "pads": pads, "stride": stride,
               "dilation": dilation, "groups": groups, "bias": b is not None}


def conv2d_vjp(res, g):
    W, gg = res["W"], _by_group(g, res["groups"])
    gxp = _input_grad(gg, W, res["padded_shape"], res["stride"], res["dilation"], *g.shape[2:])
    grads = {"x": crop_spatial(gxp, res["pads"]), "W": _weight_grad(res["cols"], gg, W.shape)}
    if res["bias"]:
        grads["b"] = g.sum(axis=(0, 2, 3))
    return grads


def conv1d(x, W, b=None, *, stride, dilation, groups, padding, pad_left, pad_right):
    """1-D convolution (cross-correlation), NCL: conv2d with a height of 1.

    y[n, o, i] = b[o] + Σ_{c in group(o), q} W[o, c, q] xp[n, c, i s + q d]

    Shapes: x (N, C, L), W (O, C/G, k), b (O,) -> y (N, O, OL),
    OL = floor((L + pad_left + pad_right - d (k - 1) - 1) / s) + 1.
    ``padding`` as in conv2d ("same" pads TensorFlow's way; explicit may be
    asymmetric). Gradients: conv2d's on the (N, C, 1, L) view, squeezed back.
    Smooth everywhere.
    """
    require(x.ndim == 3, "x", f"expected (N, C, L), got shape {x.shape}")
    require(W.ndim == 3, "W", f"expected (O, C/groups, k), got shape {W.shape}")
    _check_positive(stride=stride, dilation=dilation)  # before conv2d, which names its own (stride_w)
    y, res = conv2d(x[:, :, None, :], W[:, :, None, :], b, stride_h=1, stride_w=stride, dilation_h=1,
                    dilation_w=dilation, groups=groups, padding=padding, pad_top=0, pad_bottom=0,
                    pad_left=pad_left, pad_right=pad_right)
    return y[:, :, 0, :], res


def conv1d_vjp(res, g):
    grads = conv2d_vjp(res, g[:, :, None, :])
    grads["x"], grads["W"] = grads["x"][:, :, 0, :], grads["W"][:, :, 0, :]
    return grads


def conv_transpose2d(x, W, b=None, *, stride_h, stride_w, dilation_h, dilation_w, groups,
                     pad_h, pad_w, output_pad_h, output_pad_w):
    """2-D transposed convolution, NCHW: the adjoint of conv2d, plus a bias.

    y = C_Wᵀ x + b, where C_W is conv2d with weight W (read as (I, O/G, kH, kW):
    I output channels of the conv), the same stride and dilation, padding
    pad_h/pad_w on both sides, applied to an input of y's size:
      OH = (H - 1) sH - 2 pad_h + dH (kH - 1) + output_pad_h + 1.
    ``output_pad`` (< max(stride, dilation), PyTorch's bound) adds rows/columns
    at the bottom/right that no window covers (they get the bias only).

    Shapes: x (N, I, H, W), W (I, O/G, kH, kW), b (O,) -> y (N, O, OH, OW).

    Gradients (adjointness): gx = C_W g (a conv2d forward pass of g),
      gW = conv2d's weight gradient with input g and cotangent x,
      gb[o] = Σ_{n, i, j} g[n, o, i, j]. Smooth everywhere.
    """
    require(x.ndim == 4, "x", f"expected (N, I, H, W), got shape {x.shape}")
    require(W.ndim == 4, "W", f"expected (I, O/groups, kH, kW), got shape {W.shape}")
    _check_positive(stride_h=stride_h, stride_w=stride_w, dilation_h=dilation_h, dilation_w=dilation_w)
    require(isinstance(groups, (int, np.integer)) and groups >= 1, "groups", f"must be a positive integer, got {groups!r}")
    require(x.shape[1] == W.shape[0] and W.shape[0] % groups == 0, "W",
            f"axis 0 must be the {x.shape[1]} input channels, divisible by groups={groups}; got W {W.shape}")
    for name, op, s, d in (("output_pad_h", output_pad_h, stride_h, dilation_h),
                           ("output_pad_w", output_pad_w, stride_w, dilation_w)):
        require(0 <= op < max(s, d), name, f"must be in [0, max(stride, dilation) = {max(s, d)}), got {op}")
    stride, dilation, kernel = (stride_h, stride_w), (dilation_h, dilation_w), W.shape[2:]
    n, _, h, w = x.shape
    out_channels = W.shape[1] * groups
    padded = tuple((size - 1) * s + d * (k - 1) + 1 + op
                   for size, s, d, k, op in zip((h, w), stride, dilation, kernel, (output_pad_h, output_pad_w)))
    pads = ((pad_h, pad_h), (pad_w, pad_w))
    require(padded[0] > 2 * pad_h and padded[1] > 2 * pad_w, "padding",
            f"pad ({pad_h}, {pad_w}) leaves an empty output from the uncropped size {padded}")
    yp = _input_grad(_by_group(x, groups), W, (n, out_channels) + padded, stride, dilation, h, w)
    y = crop_spatial(yp, pads)
    if b is not None:
        require(b.shape == (out_channels,), "b", f"expected ({out_channels},) to match W {W.shape}, got {b.shape}")
        y += b[:, None, None]
    return y, {"x": x, "W": W, "pads": pads, "stride": stride, "dilation": dilation, "groups": groups,
               "bias": b is not None}


def conv_transpose2d_vjp(res, g):
    x, W, groups = res["x"], res["W"], res["groups"]
    # The rows output_pad adds lie past every window (with output_pad >= stride they could hold one more): cut them.
    span = tuple((n - 1) * s + d * (k - 1) + 1 for n, s, d, k in zip(x.shape[2:], res["stride"], res["dilation"], W.shape[2:]))
    gp = pad_spatial(g, res["pads"])[:, :, :span[0], :span[1]]
    cols, _ = _im2col(gp, W.shape[2:], res["stride"], res["dilation"], groups)
    xg = _by_group(x, groups)
    grads = {"x": _conv_cols(cols, W, groups, *x.shape[:1], *x.shape[2:]),
             "W": _weight_grad(cols, np.where(np.isfinite(xg), xg, 0.0), W.shape)}
    special = ~np.isfinite(xg)
    if special.any():
        # A NaN or Inf in x reaches gW only through outputs that are kept: the cropped
        # ones (padding, cut before the output) have no cotangent, where 0 * NaN would be NaN.
        kept = pad_spatial(np.ones_like(g), res["pads"])[:, :, :span[0], :span[1]]
        kept, _ = _im2col(kept, W.shape[2:], res["stride"], res["dilation"], groups)
        terms = np.where(special, xg, 0.0)[:, :, None, :] * cols[:, None, :, :]  # (G, Cg, Og kH kW, N P)
        grads["W"] = grads["W"] + np.where(kept[:, None] != 0, terms, 0.0).sum(axis=-1).reshape(W.shape)
    if res["bias"]:
        grads["b"] = g.sum(axis=(0, 2, 3))
    return grads


# ---- catalogue entries --------------------------------------------------------

register = registrar("convolution")

# Sizes are drawn so every case is valid without filtering: the output size
# (OH, OW), a kernel, and a slack of spare rows are drawn, and the input size is
# derived from them (``in_size``). OH = 1 with no slack makes the kernel as
# large as the padded input. The padding mode is drawn as a dim (``pad_mode``)
# so that the explicit amounts are 0 unless the mode is "explicit": a case never
# carries numbers the layer ignores.

padding_mode = Drawn(str, lambda d: Choice(PADDINGS[d.pad_mode]))


def explicit_pad(hi):
    """An explicit padding amount in [0, hi(d)], or 0 unless the drawn mode is "explicit"."""
    return Drawn(int, lambda d: Int(0, hi(d) if PADDINGS[d.pad_mode] == "explicit" else 0))


def in_size(out, slack, kernel, stride, dilation, padding, before, after):
    """An input length giving about ``out`` windows: exactly ``out`` for 'same'
    (ceil(in / stride) = out while slack < stride) and for 'valid'/'explicit'
    when padding is smaller than the dilated kernel; never below 1."""
    if padding == "same":
        return (out - 1) * stride + 1 + slack
    return max(1, (out - 1) * stride + dilation * (kernel - 1) + 1 - before - after + slack)


PAD_MODE = Int(0, len(PADDINGS) - 1)
# PyTorch's convolutions and poolings also take one example without its batch axis
# ((C, H, W), (C, L)); Keras layers need the axis (not applicable there).
BATCHED = Choice(True, False, default=True)  # cases saved before it existed were batched


def _spatial(case):
    """(kernel, stride, dilation, explicit pads, input sizes) of a convolution case, per spatial axis."""
    a, W, x = case.attrs, case.arrays["W"], case.arrays["x"]
    kernel = tuple(W.shape[2:])
    if len(kernel) == 1:
        return kernel, (a["stride"],), (a["dilation"],), ((a["pad_left"], a["pad_right"]),), x.shape[-1:]
    return (kernel, (a["stride_h"], a["stride_w"]), (a["dilation_h"], a["dilation_w"]),
            ((a["pad_top"], a["pad_bottom"]), (a["pad_left"], a["pad_right"])), x.shape[-2:])


def _asymmetric(mode):
    def reached(case):
        kernel, stride, dilation, explicit, sizes = _spatial(case)
        pads = resolve_padding(case.attrs["padding"], explicit, sizes, kernel, stride, dilation)
        return case.attrs["padding"] == mode and any(before != after for before, after in pads)
    return reached


def _channels_in(case):
    x = case.arrays["x"]
    return x.shape[1] if case.attrs["batched"] else x.shape[0]


# A convolution's edges: one example, none, no batch axis; an even kernel (where
# 'same' pads one side more), a stride past the kernel (cells no window reads),
# depthwise and grouped filters, dilation, asymmetric padding, no bias.
EVEN_KERNEL = Edge("even_kernel", lambda c: any(k % 2 == 0 for k in c.arrays["W"].shape[2:]))
STRIDE_OVER_KERNEL = Edge("stride_over_kernel", lambda c: any(s > k for s, k in zip(_spatial(c)[1], _spatial(c)[0])))
DEPTHWISE = Edge("depthwise", lambda c: c.attrs["groups"] == _channels_in(c) > 1, {"Cg": 1, "G": Choice(2, 3)})
GROUPED = Edge("grouped", lambda c: 1 < c.attrs["groups"] < _channels_in(c), {"Cg": 2, "G": Choice(2, 3)})
DILATED = Edge("dilated", lambda c: max(_spatial(c)[2]) > 1)
CONV_EDGES = (batch_of(1), batch_of(0), UNBATCHED, EVEN_KERNEL, STRIDE_OVER_KERNEL, DEPTHWISE, GROUPED, DILATED,
              Edge("same_asymmetric", _asymmetric("same"), {"pad_mode": 1}),
              Edge("explicit_asymmetric", _asymmetric("explicit"), {"pad_mode": 2}), without("b", "no_bias"),
              NONFINITE, SUBNORMAL)

register(Layer(
    "conv2d", *unbatched(conv2d, conv2d_vjp), empty=True, nonfinite=("x",), edges=CONV_EDGES,
    dims={"N": Int(1, 3, edges=(0,)), "G": Int(1, 3), "Cg": Int(1, 2), "Og": Int(1, 2, like="Cg"),
          "kH": Int(1, 3), "kW": Int(1, 3, like="kH"), "OH": Int(1, 3), "OW": Int(1, 3),
          "slack_h": Int(0, 1), "slack_w": Int(0, 1), "pad_mode": PAD_MODE},
    attrs={"batched": BATCHED, "stride_h": Int(1, 3), "stride_w": Int(1, 3), "dilation_h": Int(1, 4),
           "dilation_w": Int(1, 4), "groups": of_dim("G"), "padding": padding_mode,
           "pad_top": explicit_pad(lambda d: 2), "pad_bottom": explicit_pad(lambda d: 2),
           "pad_left": explicit_pad(lambda d: 2), "pad_right": explicit_pad(lambda d: 2)},
    arrays={
        "x": Array(batch_axis(lambda d, a: (d.N, d.G * d.Cg,
                                 in_size(d.OH, d.slack_h, d.kH, a["stride_h"], a["dilation_h"], a["padding"],
                                          a["pad_top"], a["pad_bottom"]),
                                 in_size(d.OW, d.slack_w, d.kW, a["stride_w"], a["dilation_w"], a["padding"],
                                          a["pad_left"], a["pad_right"])))),
        "W": Array(lambda d, a: (d.G * d.Og, d.Cg, d.kH, d.kW), param=True),
        "b": Array(lambda d, a: (d.G * d.Og,), param=True, optional=True),
    },
))

register(Layer(
    "conv1d", *unbatched(conv1d, conv1d_vjp), empty=True, nonfinite=("x",), edges=CONV_EDGES,
    dims={"N": Int(1, 3, edges=(0,)), "G": Int(1, 3), "Cg": Int(1, 2), "Og": Int(1, 2, like="Cg"),
          "k": Int(1, 4), "OL": Int(1, 4), "slack": Int(0, 1), "pad_mode": PAD_MODE},
    attrs={"batched": BATCHED, "stride": Int(1, 3), "dilation": Int(1, 4), "groups": of_dim("G"),
           "padding": padding_mode,
           "pad_left": explicit_pad(lambda d: 2), "pad_right": explicit_pad(lambda d: 2)},
    arrays={
        "x": Array(batch_axis(lambda d, a: (d.N, d.G * d.Cg, in_size(d.OL, d.slack, d.k, a["stride"], a["dilation"],
                                                                      a["padding"], a["pad_left"], a["pad_right"])))),
        "W": Array(lambda d, a: (d.G * d.Og, d.Cg, d.k), param=True),
        "b": Array(lambda d, a: (d.G * d.Og,), param=True, optional=True),
    },
))

# The output is (H - 1) s - 2 pad + d (k - 1) + output_pad + 1: pad <= (k - 1) // 2
# keeps it non-empty for every stride and dilation; output_pad < max(stride, dilation),
# PyTorch's bound (Keras: < stride), so dilation is drawn as a dim.
def _transposed(key, test):
    """An edge of conv_transpose2d over the (h, w) pair of an attribute."""
    return lambda c: any(test(c.attrs[f"{key}_{axis}"]) for axis in ("h", "w"))


register(Layer(
    "conv_transpose2d", *unbatched(conv_transpose2d, conv_transpose2d_vjp), empty=True, nonfinite=("x",),
    edges=(batch_of(1), batch_of(0), UNBATCHED, EVEN_KERNEL, Edge("strided", _transposed("stride", lambda s: s > 1)),
           Edge("dilated", _transposed("dilation", lambda d: d > 1), {"dH": 2, "sH": 1, "sW": 1}),
           Edge("grouped", lambda c: c.attrs["groups"] > 1, {"G": 2}),
           Edge("output_padding", _transposed("output_pad", lambda p: p > 0)),
           Edge("cropped", _transposed("pad", lambda p: p > 0)), without("b", "no_bias"), NONFINITE,
           SUBNORMAL),
    dims={"N": Int(1, 3, edges=(0,)), "G": Int(1, 2), "Cg": Int(1, 2), "Og": Int(1, 2, like="Cg"),
          "kH": Int(1, 3), "kW": Int(1, 3, like="kH"), "H": Int(1, 3), "W": Int(1, 3),
          "sH": Int(1, 3), "sW": Int(1, 3, like="sH"), "dH": Int(1, 4), "dW": Int(1, 4, like="dH")},
    attrs={"batched": BATCHED,
           "stride_h": of_dim("sH"), "stride_w": of_dim("sW"), "dilation_h": of_dim("dH"), "dilation_w": of_dim("dW"),
           "groups": of_dim("G"),
           "pad_h": Drawn(int, lambda d: Int(0, (d.kH - 1) // 2)), "pad_w": Drawn(int, lambda d: Int(0, (d.kW - 1) // 2)),
           "output_pad_h": Drawn(int, lambda d: Int(0, max(d.sH, d.dH) - 1)),
           "output_pad_w": Drawn(int, lambda d: Int(0, max(d.sW, d.dW) - 1))},
    arrays={
        "x": Array(batch_axis(lambda d, a: (d.N, d.G * d.Cg, d.H, d.W))),
        "W": Array(lambda d, a: (d.G * d.Cg, d.Og, d.kH, d.kW), param=True),
        "b": Array(lambda d, a: (d.G * d.Og,), param=True, optional=True),
    },
))

