"""Keras builders: convolutions, channels-last.

Keras on CPU is channels-last: inputs NCHW -> NHWC (NCL -> NLC), kernels
(O, I/G, kH, kW) -> HWIO, transposed kernels (I, O/G, kH, kW) -> (kH, kW, O, I);
outputs and kernel gradients go back. Explicit padding that Keras layers
cannot say is done first, as a user would: ZeroPadding1D/2D.
"""

import numpy as np

from ...reference.conv import resolve_padding  # the oracle's rule for 'same': one formula
from ..base import Built, param
from .core import NCHW, NHWC, builder, keras, tf


def _transposed(perm):
    return lambda v: np.transpose(v, perm)


def _conv_layer(layer, x_shape, t, kernel_perm):
    """Build a Keras conv layer for an input of x_shape, load the canonical W (permuted) and b."""
    layer.build(tuple(x_shape))
    layer.kernel.assign(tf().transpose(t["W"], kernel_perm))
    params = (param(layer.kernel, "W", _transposed(_inverse(kernel_perm))),)
    if "b" in t:
        layer.bias.assign(t["b"])
        params += (param(layer.bias, "b"),)
    return params


def _inverse(perm):
    return [perm.index(i) for i in range(len(perm))]


def _xla_heap_corruption(case):
    """Keras 3 runs every grouped convolution through ``tf.function(jit_compile=True)``
    (plain TensorFlow has no CPU gradient for grouped convolutions), and XLA's CPU
    gradient of float64 grouped 1-d convolutions with dilation 3 corrupts memory.
    Measured with tensorflow-cpu 2.21.0 / keras 3.15.1: with 4 input channels the
    process aborts ("corrupted size vs. prev_size", "free(): invalid next size";
    every run under MALLOC_CHECK_=3 for lengths 8 and 11, kernels 1 to 3, batch 1
    to 3); with 2 input channels (x (1, 2, 8), W (4, 1, 1)) the kernel gradient
    came back with NaN or Inf in 3 positions in 2 of 4 runs of the same case
    (found three times by the thorough profile). float32 and dilation 1 or 2 showed
    neither. A process that dies is not a row, and a result that changes from run
    to run is not a measurement: such a case is not run. Any other case that still
    kills its process is named in the partial report."""
    a = case.attrs
    if case.dtype == "float64" and a["groups"] > 1 and a["dilation"] == 3:
        return ("not run: XLA's CPU gradient of a float64 grouped Conv1D with dilation 3 corrupts memory (the "
                "process aborts, or the kernel gradient holds garbage; tensorflow-cpu 2.21.0, keras 3.15.1)")


def _conv(t, a, dtype, cls, pad_cls, stride, dilation, explicit):
    """Conv1D/Conv2D on channels-last x. Keras refuses strides > 1 with
    dilation_rate > 1 (raises ValueError); the same map is the stride-1 dilated
    convolution subsampled every stride-th output, which is what this runs then."""
    rank = len(stride)
    W = t["W"]
    kernel = tuple(W.shape[2:])
    mode = a["padding"]
    sizes = tuple(t["x"].shape[2:])
    pads = resolve_padding(mode, explicit, sizes, kernel, stride, dilation)
    subsample = max(stride) > 1 and max(dilation) > 1
    pad = lambda x: x  # noqa: E731
    if mode == "explicit" or (subsample and mode == "same"):
        if any(sum(p) for p in pads):
            pad = pad_cls(pads if rank == 2 else pads[0], data_format="channels_last", dtype=dtype)
        sizes = tuple(n + sum(p) for n, p in zip(sizes, pads))
        mode = "valid"
    layer = cls(filters=W.shape[0], kernel_size=kernel, strides=(1,) * rank if subsample else stride, padding=mode,
                data_format="channels_last", dilation_rate=dilation, groups=a["groups"], activation=None,
                use_bias="b" in t, dtype=dtype)
    params = _conv_layer(layer, (t["x"].shape[0], *sizes, t["x"].shape[1]), t, [*range(2, rank + 2), 1, 0])

    def apply(t):
        y = layer(pad(tf().transpose(t["x"], [0, *range(2, rank + 2), 1])))
        if subsample:
            y = y[(slice(None), *(slice(None, None, s) for s in stride))]
        return tf().transpose(y, [0, rank + 1, *range(1, rank + 1)])

    return Built(apply, params)


@builder("conv2d")
def conv2d(t, a, dtype):
    return _conv(t, a, dtype, keras().layers.Conv2D, keras().layers.ZeroPadding2D, (a["stride_h"], a["stride_w"]),
                 (a["dilation_h"], a["dilation_w"]), ((a["pad_top"], a["pad_bottom"]), (a["pad_left"], a["pad_right"])))


@builder("conv1d", refuses=_xla_heap_corruption)
def conv1d(t, a, dtype):
    return _conv(t, a, dtype, keras().layers.Conv1D, keras().layers.ZeroPadding1D, (a["stride"],), (a["dilation"],),
                 ((a["pad_left"], a["pad_right"]),))


def _conv_transpose_refusal(case):
    a, why = case.attrs, []
    stride, dilation = (a["stride_h"], a["stride_w"]), (a["dilation_h"], a["dilation_w"])
    if a["groups"] > 1:
        why.append("keras.layers.Conv2DTranspose has no groups argument")
    if max(stride) > 1 and max(dilation) > 1:
        why.append("keras.layers.Conv2DTranspose refuses strides > 1 with dilation_rate > 1 (ValueError)")
    if a["output_pad_h"] >= a["stride_h"] or a["output_pad_w"] >= a["stride_w"]:
        why.append("keras.layers.Conv2DTranspose requires output_padding < strides (ValueError); PyTorch takes "
                   "output_padding < max(stride, dilation)")
    if case.dtype == "float64" and max(dilation) > 1:
        why.append("keras.layers.Conv2DTranspose in float64 runs Conv2DBackpropInput, whose CPU kernel has no "
                   "dilation: InvalidArgumentError 'Current CPU implementations do not yet support dilation rates "
                   "larger than 1' (float32 goes through oneDNN and runs; tensorflow-cpu 2.21.0)")
    return why


@builder("conv_transpose2d", refuses=_conv_transpose_refusal)
def conv_transpose2d(t, a, dtype):
    """Conv2DTranspose('valid', explicit output_padding) then Cropping2D(pad): PyTorch's
    padding p crops p from both sides of the full output (Keras' 'same' crops
    differently once output_padding is given)."""
    L = keras().layers
    stride, dilation = (a["stride_h"], a["stride_w"]), (a["dilation_h"], a["dilation_w"])
    x, W = t["x"], t["W"]
    layer = L.Conv2DTranspose(filters=W.shape[1], kernel_size=tuple(W.shape[2:]), strides=stride, padding="valid",
                              output_padding=(a["output_pad_h"], a["output_pad_w"]), data_format="channels_last",
                              dilation_rate=dilation, activation=None, use_bias="b" in t, dtype=dtype)
    params = _conv_layer(layer, (x.shape[0], *x.shape[2:], x.shape[1]), t, [2, 3, 1, 0])
    crop = lambda y: y  # noqa: E731
    if a["pad_h"] or a["pad_w"]:
        crop = L.Cropping2D(((a["pad_h"],) * 2, (a["pad_w"],) * 2), data_format="channels_last", dtype=dtype)
    return Built(lambda t: tf().transpose(crop(layer(tf().transpose(t["x"], NHWC))), NCHW), params)
