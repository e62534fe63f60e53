"""PyTorch builders: dense and the residual block."""

from ..base import Built, param
from .core import builder, linear, nn, transpose


@builder("dense")
def dense(t, a, dtype):
    lin = linear(t["W"].shape[0], t["W"].shape[1], t["W"], t.get("b"), dtype)
    params = (param(lin.weight, "W", transpose),) + ((param(lin.bias, "b"),) if "b" in t else ())
    return Built(lambda t: lin(t["x"]), params)


@builder("residual_block")
def residual_block(t, a, dtype):
    d, h = t["W1"].shape
    first, second = linear(d, h, t["W1"], t["b1"], dtype), linear(h, d, t["W2"], t["b2"], dtype)
    body = nn().Sequential(first, nn().ReLU(), second)
    return Built(lambda t: t["x"] + body(t["x"]),
                 (param(first.weight, "W1", transpose), param(first.bias, "b1"),
                  param(second.weight, "W2", transpose), param(second.bias, "b2")))
