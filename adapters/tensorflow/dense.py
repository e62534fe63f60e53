"""Keras builders: dense and the residual block."""

from ..base import Built, param
from .core import builder, dense_layer, keras


@builder("dense")
def dense(t, a, dtype):
    layer = dense_layer(t["W"].shape[1], t["W"], t.get("b"), dtype)
    params = (param(layer.kernel, "W"),) + ((param(layer.bias, "b"),) if "b" in t else ())
    return Built(lambda t: layer(t["x"]), params)


@builder("residual_block")
def residual_block(t, a, dtype):
    d, h = t["W1"].shape
    first, second = dense_layer(h, t["W1"], t["b1"], dtype), dense_layer(d, t["W2"], t["b2"], dtype)
    relu = keras().layers.ReLU(dtype=dtype)
    return Built(lambda t: t["x"] + second(relu(first(t["x"]))),
                 (param(first.kernel, "W1"), param(first.bias, "b1"),
                  param(second.kernel, "W2"), param(second.bias, "b2")))
