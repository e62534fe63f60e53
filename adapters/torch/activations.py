"""PyTorch builders: the activations, softmax and log-softmax, as the nn modules users call."""

from ...reference import Convention
from ..base import stateless
from .core import builder, nn


@builder("relu", convention=Convention(
    {"at_nan": "right"}, "threshold_backward tests x <= 0 for the zero branch, so a NaN passes the cotangent "
                         "through (relu(NaN) = NaN, gradient g); measured"))
@stateless
def relu(t, a, dtype):
    return nn().ReLU()(t["x"])


@builder("leaky_relu", convention=Convention(
    {"at_zero": "left", "at_nan": "left"}, "backward tests x > 0, so x = 0 and NaN take the slope; measured"))
@stateless
def leaky_relu(t, a, dtype):
    return nn().LeakyReLU(negative_slope=a["negative_slope"])(t["x"])


@builder("elu", convention=Convention(
    {"at_zero": "left", "at_nan": "right"},
    "elu_backward tests x <= 0, so x = 0 takes alpha and a NaN the positive branch (gradient g); measured"))
@stateless
def elu(t, a, dtype):
    return nn().ELU(alpha=a["alpha"])(t["x"])


@builder("selu", convention=Convention(
    {"at_zero": "left", "at_nan": "right"},
    "selu shares elu_backward: x = 0 takes scale*alpha, a NaN scale; measured"))
@stateless
def selu(t, a, dtype):
    return nn().SELU()(t["x"])


@builder("gelu")
@stateless
def gelu(t, a, dtype):
    return nn().GELU(approximate=a["approximate"])(t["x"])


@builder("sigmoid")
@stateless
def sigmoid(t, a, dtype):
    return nn().Sigmoid()(t["x"])


@builder("tanh")
@stateless
def tanh(t, a, dtype):
    return nn().Tanh()(t["x"])


@builder("softplus")
@stateless
def softplus(t, a, dtype):
    return nn().Softplus(beta=a["beta"], threshold=a["threshold"])(t["x"])


@builder("silu")
@stateless
def silu(t, a, dtype):
    return nn().SiLU()(t["x"])


@builder("softmax")
@stateless
def softmax(t, a, dtype):
    return nn().Softmax(dim=a["axis"])(t["x"])


@builder("log_softmax")
@stateless
def log_softmax(t, a, dtype):
    return nn().LogSoftmax(dim=a["axis"])(t["x"])
