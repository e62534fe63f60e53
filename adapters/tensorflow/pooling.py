"""Keras builders: pooling, channels-last. Explicit padding and ceil_mode's
partial window are -inf padding first before max pooling (tf.pad), zeros
(ZeroPadding2D) before counted average pooling."""

import numpy as np

from ...reference import Convention
from ...reference.conv import same_pads  # the oracle's rule for 'same': one formula
from ...reference.pooling import pool_pads  # the oracle's padding and ceil_mode rule: one formula
from ..base import Built
from .core import NCHW, NHWC, builder, keras, tf


def _pool_setup(x_shape, a):
    """kernel, stride, dilation; the padding of each side including ceil_mode's
    overhang (the oracle's rule); the part of it the window count may include."""
    kernel, stride = (a["kernel_h"], a["kernel_w"]), (a["stride_h"], a["stride_w"])
    dilation = (a.get("dilation_h", 1), a.get("dilation_w", 1))
    x = np.zeros((1, 1) + tuple(x_shape[2:]))
    pads, counted = pool_pads(x, kernel, stride, dilation, a["padding"], a["pad_h"], a["pad_w"], a["ceil_mode"])
    return kernel, stride, dilation, pads, counted


def _pooled(pool, pad=lambda x: x):
    """Apply a channels-last Keras pooling layer (after ``pad``) to the canonical NCHW x."""
    return Built(lambda t: tf().transpose(pool(pad(tf().transpose(t["x"], NHWC))), NCHW))


def _tf_same(sizes, kernel, stride):
    return tuple(same_pads(n, k, s, 1) for n, k, s in zip(sizes, kernel, stride))


@builder("max_pool2d", convention=Convention(
    {"tie": "first", "nan_route": "first"}, "the first maximum in row-major window order gets the gradient "
                                            "(MaxPoolGrad, float32 and float64, valid and same padding); measured "
                                            "with tensorflow-cpu 2.21: matches tie=first in all 98 of 150 drawn "
                                            "cases where first and last differ. NaN follows no convention: the "
                                            "forward output skips it (known divergence tf-max-pool-skips-nan)"))
def max_pool2d(t, a, dtype):
    """MaxPooling2D; explicit padding and ceil_mode's partial window are -inf
    padding first (no Keras layer pads with it). MaxPooling2D has no dilation:
    tf.nn.pool has (dilations), for strides of 1 only; a stride s is then the
    stride-1 dilated pooling subsampled every s-th window (the same windows,
    as the Conv adapter does for Keras' dilated convolutions)."""
    kernel, stride, dilation, pads, _ = _pool_setup(t["x"].shape, a)
    mode, pad = a["padding"], (lambda x: x)
    dilated = max(dilation) > 1
    if mode == "explicit" or a["ceil_mode"] or dilated:
        if any(sum(p) for p in pads):
            pad = lambda x: tf().pad(x, [[0, 0], *pads, [0, 0]], constant_values=float("-inf"))  # noqa: E731
        mode = "valid"
    if dilated:
        def pool(x):
            y = tf().nn.pool(x, kernel, "MAX", strides=(1, 1), padding="VALID", data_format="NHWC",
                             dilations=dilation)
            return y[:, ::stride[0], ::stride[1]]
        return _pooled(pool, pad)
    return _pooled(keras().layers.MaxPooling2D(pool_size=kernel, strides=stride, padding=mode,
                                               data_format="channels_last", dtype=dtype), pad)


def _avg_pool_form(x_shape, a):
    """How AveragePooling2D runs a case: (its padding mode, the counted padding
    ZeroPadding2D adds first or None), or the reason it cannot. It leaves padded
    cells out of the count only as 'same' padding; counting them is ZeroPadding2D
    then 'valid' pooling (the zeros are cells). ceil_mode's partial window,
    averaged over the cells it covers, is 'same' pooling where TensorFlow's 'same'
    padding happens to be exactly that overhang (all at the bottom/right)."""
    if a["divisor_override"] is not None:
        return "keras.layers.AveragePooling2D has no divisor_override: it always divides by the cells it counts"
    kernel, stride, _, pads, counted = _pool_setup(x_shape, a)
    sizes = tuple(x_shape[2:])
    if not any(sum(p) for p in pads):
        return "valid", None
    if a["count_include_pad"]:
        overhang = tuple((0, a_ - c) for (_, a_), (_, c) in zip(pads, counted))
        padded = tuple(n + sum(c) for n, c in zip(sizes, counted))
        if not any(sum(p) for p in overhang):
            return "valid", counted
        if _tf_same(padded, kernel, stride) == overhang:
            return "same", counted
        return (f"AveragePooling2D has no ceil_mode: the partial window {overhang} past the counted padding is not "
                f"the 'same' padding {_tf_same(padded, kernel, stride)}")
    if pads == _tf_same(sizes, kernel, stride):
        return "same", None
    return (f"AveragePooling2D leaves padding out of the count only as 'same' padding "
            f"{_tf_same(sizes, kernel, stride)}; padding {pads} (with ceil_mode's overhang) has no Keras form")


def _avg_pool_refusal(case):
    form = _avg_pool_form(case.arrays["x"].shape, case.attrs)
    return form if isinstance(form, str) else None


@builder("avg_pool2d", refuses=_avg_pool_refusal)
def avg_pool2d(t, a, dtype):
    mode, counted = _avg_pool_form(t["x"].shape, a)
    pad = (keras().layers.ZeroPadding2D(counted, data_format="channels_last", dtype=dtype)
           if counted is not None and any(sum(p) for p in counted) else (lambda x: x))
    kernel, stride = (a["kernel_h"], a["kernel_w"]), (a["stride_h"], a["stride_w"])
    return _pooled(keras().layers.AveragePooling2D(pool_size=kernel, strides=stride, padding=mode,
                                                   data_format="channels_last", dtype=dtype), pad)


@builder("global_avg_pool2d")
def global_avg_pool2d(t, a, dtype):
    pool = keras().layers.GlobalAveragePooling2D(data_format="channels_last", keepdims=False, dtype=dtype)
    return Built(lambda t: pool(tf().transpose(t["x"], NHWC)))


@builder("adaptive_avg_pool2d")
def adaptive_avg_pool2d(t, a, dtype):
    pool = keras().layers.AdaptiveAveragePooling2D((a["output_h"], a["output_w"]), data_format="channels_last",
                                                   dtype=dtype)
    return _pooled(pool)
