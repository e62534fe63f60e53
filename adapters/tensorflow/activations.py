"""Keras builders: the activations, softmax and log-softmax, as the ops and layers Keras users call."""

from ...reference import Convention
from ..base import stateless
from .core import builder, keras, tf


@builder("relu", convention=Convention(
    {"at_nan": "left"}, "ReluGrad is gradients * (features > 0): a NaN gets 0 (PyTorch: g); measured"))
@stateless
def relu(t, a, dtype):
    return tf().nn.relu(t["x"])


@builder("leaky_relu", convention=Convention(
    {"at_zero": "left", "at_nan": "left"}, "LeakyReluGrad tests x > 0, so x = 0 and NaN take alpha; measured"))
@stateless
def leaky_relu(t, a, dtype):
    return tf().nn.leaky_relu(t["x"], alpha=a["negative_slope"])


@builder("elu", convention=Convention(
    {"at_zero": "left", "at_nan": "right"},
    "keras ELU is where(x > 0, elu(x), alpha * elu(x)), so x = 0 takes alpha; EluGrad branches on out < 0, so a NaN "
    "takes the positive branch (gradient g); measured"))
@stateless
def elu(t, a, dtype):
    return keras().layers.ELU(alpha=a["alpha"], dtype=dtype)(t["x"])


@builder("selu", convention=Convention(
    {"at_zero": "right", "at_nan": "right"},
    "SeluGrad branches on out < 0, so x = 0 takes the positive slope `scale` (PyTorch takes scale*alpha), and so "
    "does a NaN; measured with tensorflow-cpu 2.21"))
@stateless
def selu(t, a, dtype):
    return tf().nn.selu(t["x"])


@builder("gelu")
@stateless
def gelu(t, a, dtype):
    return tf().nn.gelu(t["x"], approximate=a["approximate"] == "tanh")


@builder("sigmoid")
@stateless
def sigmoid(t, a, dtype):
    return tf().math.sigmoid(t["x"])


@builder("tanh")
@stateless
def tanh(t, a, dtype):
    return tf().math.tanh(t["x"])


@builder("softplus")
@stateless
def softplus(t, a, dtype):
    # TF's softplus has neither beta nor threshold: softplus(beta x) / beta is the user's form.
    return tf().math.softplus(a["beta"] * t["x"]) / a["beta"]


@builder("silu")
@stateless
def silu(t, a, dtype):
    return tf().nn.silu(t["x"])


@builder("softmax")
@stateless
def softmax(t, a, dtype):
    return tf().nn.softmax(t["x"], axis=a["axis"])


@builder("log_softmax")
@stateless
def log_softmax(t, a, dtype):
    return tf().nn.log_softmax(t["x"], axis=a["axis"])
