"""PyTorch builders: convolutions.

Canonical layouts are PyTorch's (NCHW / NCL, weight (O, I/G, k...), transposed
weight (I, O/G, k...)): no conversion. Padding the modules cannot say themselves
(asymmetric, or TensorFlow-style 'same' with stride > 1) is done first with
nn.ZeroPad1d/2d: what a user writes.
"""

import warnings

from ...reference.conv import resolve_padding  # the oracle's rule for TensorFlow-style 'same': one formula
from ..base import Built, param
from .core import builder, nn, set_


def _conv_padding(mode, pads, stride):
    """(the module's padding argument, a ZeroPad spec (left, right[, top, bottom]) or None)."""
    if mode == "valid":
        return "valid", None
    if mode == "same" and all(s == 1 for s in stride):
        return "same", None  # PyTorch's 'same' (stride 1 only) puts the odd pixel last, as TensorFlow does
    if all(before == after for before, after in pads):
        return tuple(before for before, _ in pads), None
    return 0, tuple(p for before_after in reversed(pads) for p in before_after)


def _conv_params(conv, t):
    set_(conv.weight, t["W"])
    if "b" not in t:
        return (param(conv.weight, "W"),)
    set_(conv.bias, t["b"])
    return param(conv.weight, "W"), param(conv.bias, "b")


def _conv(t, dtype, cls, pad_cls, stride, dilation, groups, mode, explicit):
    x, W = t["x"], t["W"]
    kernel = tuple(W.shape[2:])
    rank = len(kernel)  # x is (N, C, *spatial), or (C, *spatial) unbatched: counted from the end
    pads = resolve_padding(mode, explicit, tuple(x.shape[-rank:]), kernel, stride, dilation)
    padding, pre = _conv_padding(mode, pads, stride)
    conv = cls(x.shape[-rank - 1], W.shape[0], kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
               bias="b" in t, padding_mode="zeros", dtype=dtype)
    pad = pad_cls(pre) if pre is not None else (lambda x: x)

    def apply(t):
        with warnings.catch_warnings():  # an even kernel under 'same' is an edge drawn on purpose, not news
            warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
            return conv(pad(t["x"]))

    return Built(apply, _conv_params(conv, t))


@builder("conv2d")
def conv2d(t, a, dtype):
    return _conv(t, dtype, nn().Conv2d, nn().ZeroPad2d, (a["stride_h"], a["stride_w"]),
                 (a["dilation_h"], a["dilation_w"]), a["groups"], a["padding"],
                 ((a["pad_top"], a["pad_bottom"]), (a["pad_left"], a["pad_right"])))


@builder("conv1d")
def conv1d(t, a, dtype):
    return _conv(t, dtype, nn().Conv1d, nn().ZeroPad1d, (a["stride"],), (a["dilation"],), a["groups"],
                 a["padding"], ((a["pad_left"], a["pad_right"]),))


@builder("conv_transpose2d")
def conv_transpose2d(t, a, dtype):
    x, W = t["x"], t["W"]
    conv = nn().ConvTranspose2d(x.shape[-3], W.shape[1] * a["groups"], tuple(W.shape[2:]),
                                stride=(a["stride_h"], a["stride_w"]), padding=(a["pad_h"], a["pad_w"]),
                                output_padding=(a["output_pad_h"], a["output_pad_w"]), groups=a["groups"],
                                bias="b" in t, dilation=(a["dilation_h"], a["dilation_w"]),
                                padding_mode="zeros", dtype=dtype)
    return Built(lambda t: conv(t["x"]), _conv_params(conv, t))
