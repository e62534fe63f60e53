"""Keras builders: batch, layer, RMS, group and instance normalization."""

import warnings

from ...reference import Convention
from ..base import Built, param
from .core import builder, keras

def _batch_norm_layer(t, a, dtype):
    """keras BatchNormalization on channels axis 1 (the canonical layout, no transpose) for
    any rank, holding gamma and beta when given (scale, center). momentum only moves the
    moving statistics, which neither the output nor a gradient reads; it is passed anyway
    (0.9 here is PyTorch's 0.1)."""
    layer = keras().layers.BatchNormalization(axis=1, momentum=0.9, epsilon=a["eps"], center="beta" in t,
                                              scale="gamma" in t, dtype=dtype)
    layer.build(t["x"].shape)
    return layer, _affine(layer, t)


@builder("batch_norm", convention=Convention(
    {}, "training mode normalizes with the biased batch variance (tf.nn.moments, two-pass) and stores that biased "
        "variance in moving_variance; N * prod(spatial) == 1 gives y = beta, gx = 0; measured"))
def batch_norm(t, a, dtype):
    layer, params = _batch_norm_layer(t, a, dtype)
    return Built(lambda t: layer(t["x"], training=True), params)


@builder("batch_norm_inference")
def batch_norm_inference(t, a, dtype):
    layer, params = _batch_norm_layer(t, a, dtype)
    layer.moving_mean.assign(t["running_mean"])
    layer.moving_variance.assign(t["running_var"])
    return Built(lambda t: layer(t["x"], training=False), params)


def _affine(layer, t):
    """Optional gamma/beta into a layer built with scale/center exactly when they are given."""
    params = ()
    if "gamma" in t:
        layer.gamma.assign(t["gamma"])
        params += (param(layer.gamma, "gamma"),)
    if "beta" in t:
        layer.beta.assign(t["beta"])
        params += (param(layer.beta, "beta"),)
    return params


@builder("layer_norm")
def layer_norm(t, a, dtype):
    x = t["x"]
    axes = list(range(x.ndim - a["axes"], x.ndim))
    layer = keras().layers.LayerNormalization(axis=axes, epsilon=a["eps"], center="beta" in t, scale="gamma" in t,
                                              rms_scaling=False, dtype=dtype)
    layer.build(x.shape)
    return Built(lambda t: layer(t["x"]), _affine(layer, t))


@builder("rms_norm")
def rms_norm(t, a, dtype):
    """Both ways Keras users reach RMS normalization. RMSNormalization always has a
    scale: without gamma it stays at ones and is not compared. LayerNormalization's
    rms_scaling=True (deprecated) always has gamma and no beta."""
    x = t["x"]
    axes = list(range(x.ndim - a["axes"], x.ndim))
    if a["route"] == "rms_normalization":
        layer = keras().layers.RMSNormalization(axis=axes, epsilon=a["eps"], dtype=dtype)
        weight = "scale"
    else:
        with warnings.catch_warnings():  # deprecated, and what this route measures
            warnings.simplefilter("ignore")
            layer = keras().layers.LayerNormalization(axis=axes, epsilon=a["eps"], center=False, rms_scaling=True,
                                                      dtype=dtype)
        weight = "gamma"
    layer.build(x.shape)
    if "gamma" in t:
        getattr(layer, weight).assign(t["gamma"])
    params = (param(getattr(layer, weight), "gamma"),) if "gamma" in t else ()

    def apply(t):
        with warnings.catch_warnings():  # LayerNormalization's op warns again on every call
            warnings.simplefilter("ignore")
            return layer(t["x"])

    return Built(apply, params)


@builder("group_norm")
def group_norm(t, a, dtype):
    x = t["x"]
    layer = keras().layers.GroupNormalization(groups=a["groups"], axis=1, epsilon=a["eps"], center="beta" in t,
                                              scale="gamma" in t, dtype=dtype)
    layer.build(x.shape)
    return Built(lambda t: layer(t["x"]), _affine(layer, t))


@builder("instance_norm", convention=Convention(
    {}, "GroupNormalization(groups=-1), Keras' instance normalization (one group per channel): statistics of each "
        "(sample, channel) over its spatial positions; one spatial position gives y = beta, gx = 0; measured"))
def instance_norm(t, a, dtype):
    x = t["x"]
    layer = keras().layers.GroupNormalization(groups=-1, axis=1, epsilon=a["eps"], center="beta" in t,
                                              scale="gamma" in t, dtype=dtype)
    layer.build(x.shape)
    return Built(lambda t: layer(t["x"]), _affine(layer, t))
