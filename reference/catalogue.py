"""The catalogue: every layer exactly once, with what it takes and where its edges are.

An entry names the oracle pair, the free sizes, the attributes with their
ranges, and the arrays (inputs and parameters) with their shapes and value
domains. Strategies, validation, test ids and report rows all read from here,
so adding a layer means: its oracle, one entry below, and one builder per
adapter. Canonical layouts are the oracle's (see each docstring).
"""

from __future__ import annotations

from types import SimpleNamespace

from . import activations as act
from . import dense as dn
from . import losses as ls
from . import models as md
from .spec import Array, Choice, Float, Int, Labels, Layer, Real, Shape

LAYERS: dict[str, Layer] = {}


def register(layer: Layer) -> Layer:
    assert layer.name not in LAYERS, f"duplicate catalogue entry {layer.name!r}"
    LAYERS[layer.name] = layer
    return layer


def S(*names):
    """A shape rule from dim names: ``S("N", "I")`` -> ``(dims.N, dims.I)``; a
    ``Shape`` dim contributes all its sides."""

    def shape(d: SimpleNamespace, attrs: dict) -> tuple:
        out = ()
        for n in names:
            v = getattr(d, n)
            out += tuple(v) if isinstance(v, tuple) else (v,)
        return out

    return shape


# Saturation is an edge: sigmoid(+-30) is 1 - 1e-13 in float64 and exactly 1 in float32.
SATURATING = Real(-40.0, 40.0, edges=(0.0, -30.0, 30.0, 1.0, -1.0))
ANY_SHAPE = {"shape": Shape(min_dims=1, max_dims=4, max_side=4)}

# ---- dense and composites -------------------------------------------------

register(Layer(
    "dense", dn.dense, dn.dense_vjp,
    dims={"N": Int(1, 4), "I": Int(1, 6), "O": Int(1, 6, like="I")},
    arrays={
        "x": Array(S("N", "I")),
        "W": Array(S("I", "O"), param=True),
        "b": Array(S("O"), param=True, optional=True),
    },
))

register(Layer(
    "residual_block", md.residual_block, md.residual_block_vjp,
    dims={"N": Int(1, 4), "D": Int(1, 5), "H": Int(1, 6, like="D")},
    arrays={
        "x": Array(S("N", "D")),
        "W1": Array(S("D", "H"), param=True),
        "b1": Array(S("H"), param=True),
        "W2": Array(S("H", "D"), param=True),
        "b2": Array(S("D"), param=True),
    },
))

# ---- activations ----------------------------------------------------------


def _elementwise(name, forward, vjp, values=Real(), attrs=None, conventions=None):
    register(Layer(name, forward, vjp, dims=ANY_SHAPE, attrs=attrs or {},
                   arrays={"x": Array(S("shape"), values)}, conventions=conventions or {}))


_elementwise("relu", act.relu, act.relu_vjp)
_elementwise("leaky_relu", act.leaky_relu, act.leaky_relu_vjp,
             attrs={"negative_slope": Float(0.0, 2.0, edges=(0.01, 0.2, 1.0))},
             conventions={"at_zero": "left"})
_elementwise("elu", act.elu, act.elu_vjp, SATURATING,
             attrs={"alpha": Float(0.1, 3.0, edges=(1.0,))}, conventions={"at_zero": "left"})
_elementwise("selu", act.selu, act.selu_vjp, SATURATING, conventions={"at_zero": "left"})
_elementwise("gelu", act.gelu, act.gelu_vjp, Real(-10.0, 10.0, edges=(0.0, -6.0, 6.0)),
             attrs={"approximate": Choice("none", "tanh")})
_elementwise("sigmoid", act.sigmoid, act.sigmoid_vjp, SATURATING)
_elementwise("tanh", act.tanh, act.tanh_vjp, Real(-20.0, 20.0, edges=(0.0, -10.0, 10.0)))
_elementwise("softplus", act.softplus, act.softplus_vjp, SATURATING,
             attrs={"beta": Float(0.25, 4.0, edges=(1.0, 2.0)), "threshold": Float(1.0, 30.0, edges=(2.0, 20.0))})
_elementwise("silu", act.silu, act.silu_vjp, SATURATING)
for _name, _fwd, _vjp in (("softmax", act.softmax, act.softmax_vjp),
                          ("log_softmax", act.log_softmax, act.log_softmax_vjp)):
    register(Layer(
        _name, _fwd, _vjp, dims=ANY_SHAPE,
        attrs={"axis": lambda d: Int(-len(d.shape), len(d.shape) - 1)},
        arrays={"x": Array(S("shape"), Real(-20.0, 20.0, edges=(0.0, 1.0), ties=True))},
    ))

# ---- losses -----------------------------------------------------------------

REGRESSION = {"N": Int(1, 4), "D": Int(1, 5)}
for _name, _fwd, _vjp, _attrs in (
    ("mse", ls.mse, ls.mse_vjp, {}),
    ("l1", ls.l1, ls.l1_vjp, {}),
    ("huber", ls.huber, ls.huber_vjp, {"delta": Float(0.1, 3.0, edges=(1.0,))}),
):
    register(Layer(
        _name, _fwd, _vjp, dims=REGRESSION, attrs=_attrs, loss=True,
        arrays={"pred": Array(S("N", "D")), "target": Array(S("N", "D"), Real(like="pred"))},
    ))

register(Layer(
    "cross_entropy", ls.cross_entropy, ls.cross_entropy_vjp, loss=True,
    dims={"N": Int(1, 5), "K": Int(2, 6)},
    attrs={"label_smoothing": Float(0.0, 0.5, edges=(0.0, 0.1)), "reduction": Choice("mean", "sum")},
    arrays={
        "logits": Array(S("N", "K"), Real(-20.0, 20.0, edges=(0.0, 15.0, -15.0), ties=True)),
        "labels": Array(S("N"), Labels("K")),
    },
))

register(Layer(
    "binary_cross_entropy_with_logits", ls.binary_cross_entropy_with_logits,
    ls.binary_cross_entropy_with_logits_vjp, loss=True,
    dims=REGRESSION,
    arrays={
        "logits": Array(S("N", "D"), Real(-30.0, 30.0, edges=(0.0, 20.0, -20.0))),
        "targets": Array(S("N", "D"), Real(0.0, 1.0, edges=(0.0, 1.0, 0.5))),
    },
))

# ---- convolution and pooling -----------------------------------------------

# ---- normalization, embedding, dropout --------------------------------------
