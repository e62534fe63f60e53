"""Checking your own layer: a swish with a learnable slope, y = x * sigmoid(beta * x).

This module is everything gradparity needs to check a layer it does not ship:
the oracle (forward and vjp in NumPy), a catalogue entry (what to draw), and
one builder per framework (your real layer class, holding the case's numbers).
Importing it registers all three; nothing in gradparity is edited. Run it with

    cd examples && gradparity run -p learnable_swish -k learnable_swish --report-dir swish-report

or make it a ``gradparity.plugins`` entry point of your own package, which
gradparity imports at start-up.
"""

import numpy as np

from gradparity.adapters import Built, param, register_builder
from gradparity.reference import Array, Float, Int, Layer, Real, register, require


# ---- the oracle: float64, vectorized, with the formulas in the docstring

def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def learnable_swish(x, beta, *, init_scale):
    """Swish with a learnable per-feature slope: y = x sigmoid(beta x).

    Shapes: x (N, D), beta (D,) -> y (N, D). With s = sigmoid(beta x):
    gx = g (s + beta x s (1 - s)),  gbeta = sum_n g x^2 s (1 - s).
    Smooth everywhere. ``init_scale`` is not used by the formula: it stands for
    an attribute your layer takes (it is drawn, validated and passed to both
    frameworks' builders).
    """
    require(x.ndim == 2, "x", f"expected (N, D), got shape {x.shape}")
    require(beta.shape == (x.shape[1],), "beta", f"expected ({x.shape[1]},) to match x {x.shape}, got {beta.shape}")
    s = _sigmoid(beta * x)
    return x * s, (x, beta, s)


def learnable_swish_vjp(res, g):
    x, beta, s = res
    ds = s * (1.0 - s)
    return {"x": g * (s + beta * x * ds), "beta": (g * x * x * ds).sum(axis=0)}


def learnable_swish_condition(res, **arrays_and_attrs):
    """How much the rounding of s = sigmoid(beta x) grows in the gradients: a
    framework computes s (1 - s) from s rounded to its dtype, an absolute error of
    eps next to a value that is tiny where s saturates, and the gradients multiply
    it by beta x (gx) and by x^2, summed over the batch (gbeta). Against the scale
    of the cotangent that is kappa = max(1, max |beta x|, max over features of
    sum_n x^2): up to 4 * 64 for x = +-8."""
    x, beta, _ = res
    return max(1.0, float(np.abs(beta * x).max()), float((x * x).sum(axis=0).max()))


# ---- the catalogue entry: sizes, attributes, arrays with their value domains

register(Layer(
    "learnable_swish", learnable_swish, learnable_swish_vjp, condition=learnable_swish_condition,
    dims={"N": Int(1, 4), "D": Int(1, 5)},
    attrs={"init_scale": Float(0.5, 2.0, edges=(1.0,))},
    arrays={
        "x": Array(lambda d, a: (d.N, d.D), Real(-8.0, 8.0, edges=(0.0, 8.0, -8.0))),
        "beta": Array(lambda d, a: (d.D,), Real(-2.0, 2.0, edges=(0.0, 1.0)), param=True),
    },
))


# ---- one builder per framework: the layer class a user writes, loaded with the case's numbers

@register_builder("torch", "learnable_swish")
def torch_swish(t, a, dtype):
    import torch

    class LearnableSwish(torch.nn.Module):
        def __init__(self, features):
            super().__init__()
            self.beta = torch.nn.Parameter(torch.full((features,), a["init_scale"], dtype=dtype))

        def forward(self, x):
            return x * torch.sigmoid(self.beta * x)

    layer = LearnableSwish(t["beta"].shape[0])
    with torch.no_grad():
        layer.beta.copy_(t["beta"])
    return Built(lambda t: layer(t["x"]), (param(layer.beta, "beta"),))


@register_builder("tensorflow", "learnable_swish")
def keras_swish(t, a, dtype):
    import keras

    class LearnableSwish(keras.layers.Layer):
        def build(self, input_shape):
            self.beta = self.add_weight(shape=(input_shape[-1],), initializer=keras.initializers.Constant(
                a["init_scale"]), name="beta")

        def call(self, x):
            return x * keras.ops.sigmoid(self.beta * x)

    layer = LearnableSwish(dtype=dtype)
    layer.build(tuple(t["x"].shape))
    layer.beta.assign(t["beta"])
    return Built(lambda t: layer(t["x"]), (param(layer.beta, "beta"),))
