"""Keras builders: gradient clipping, by tf.clip_* (route 'function') or by an optimizer's own
clipvalue / clipnorm / global_clipnorm (route 'optimizer')."""

import numpy as np

from ...reference import Convention
from ..base import Built
from .core import NO_CLIPPING, builder, keras, tf

def _clipped_by_optimizer(t, names, dtype, **clipping):
    """The gradients as a Keras optimizer clips them before its update: plain SGD with
    learning rate 1 from zero variables, so each variable ends at exactly -clipped."""
    def apply(t):
        K = keras()
        opt = K.optimizers.SGD(learning_rate=1.0, momentum=0.0, nesterov=False, weight_decay=None,
                               **{**NO_CLIPPING, **clipping})
        variables = [K.Variable(np.zeros(tuple(t[n].shape)), dtype=dtype, trainable=True) for n in names]
        opt.apply_gradients(zip([t[n] for n in names], variables))
        return {n: -v.numpy() for n, v in zip(names, variables)}

    return Built(apply)


@builder("clip_by_value")
def clip_by_value(t, a, dtype):
    if a["route"] == "optimizer":
        return _clipped_by_optimizer(t, ["g"], dtype, clipvalue=a["clip_value"])
    return Built(lambda t: {"g": tf().clip_by_value(t["g"], -a["clip_value"], a["clip_value"])})


@builder("clip_by_norm", convention=Convention(
    {"norm_eps": 0.0}, "tf.clip_by_norm: t * c / maximum(l2norm, c), no eps"))
def clip_by_norm(t, a, dtype):  # error_if_nonfinite: PyTorch's flag, no TensorFlow counterpart
    if a["route"] == "optimizer":
        return _clipped_by_optimizer(t, ["g"], dtype, clipnorm=a["max_norm"])
    return Built(lambda t: {"g": tf().clip_by_norm(t["g"], a["max_norm"])})


@builder("clip_by_global_norm", convention=Convention(
    {"norm_eps": 0.0}, "tf.clip_by_global_norm: t * c * minimum(1 / norm, 1 / c), no eps; returns the norm before "
                       "clipping"))
def clip_by_global_norm(t, a, dtype):
    names = [n for n in ("g1", "g2") if n in t]
    if a["route"] == "optimizer":
        return _clipped_by_optimizer(t, names, dtype, global_clipnorm=a["max_norm"])

    def apply(t):
        clipped, norm = tf().clip_by_global_norm([t[n] for n in names], a["max_norm"])
        return {**dict(zip(names, clipped)), "norm": norm}

    return Built(apply)
