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
from . import conv as cv
from . import dense as dn
from . import dropout as dr
from . import embedding as em
from . import losses as ls
from . import models as md
from . import norm as nm
from . import pooling as pl
from . import recurrent as rc
from .spec import Array, Choice, Drawn, Float, Int, Labels, Layer, Mask, Real, Shape

LAYERS: dict[str, Layer] = {}


def register(layer: Layer) -> Layer:
    """Add a layer to the catalogue (also the way a user adds their own: see the
    README, "Checking your own layer"). Names are unique."""
    if not isinstance(layer, Layer):
        raise TypeError(f"register() takes a Layer, got {type(layer).__name__}")
    if layer.name in LAYERS:
        raise ValueError(f"layer {layer.name!r} is already in the catalogue")
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
# So is a hair from the kink: exp(-1e-7) - 1 keeps one digit in float32.
# The tails are drawn on purpose for the precision check (the Precision section):
# sigmoid rounds to 1 past x = 16.6 in float32 and 36.7 in float64, so 1 - sigma and
# sigma (1 - sigma) become 0 there; +-1e-30 is a hair from the kink in both dtypes.
SATURATING = Real(-40.0, 40.0, edges=(0.0, -30.0, 30.0, 1.0, -1.0, 1e-7, -1e-7,
                                      17.5, -17.5, 37.5, -37.5, 40.0, -40.0, 1e-30, -1e-30))
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
# GELU's left tail: x Phi(x) with Phi(-3) = 1.3e-3, Phi(-8) = 6e-16 (1 + erf cancels there).
_elementwise("gelu", act.gelu, act.gelu_vjp,
             Real(-10.0, 10.0, edges=(0.0, -6.0, 6.0, -3.0, -8.0, -10.0, 1e-30, -1e-30)),
             attrs={"approximate": Choice("none", "tanh")})
_elementwise("sigmoid", act.sigmoid, act.sigmoid_vjp, SATURATING)
# tanh rounds to +-1 past |x| = 9.01 in float32 and 19.06 in float64: 1 - tanh^2 is 0 there.
_elementwise("tanh", act.tanh, act.tanh_vjp,
             Real(-20.0, 20.0, edges=(0.0, -10.0, 10.0, 9.5, -9.5, 19.5, -19.5, 20.0, -20.0, 1e-30, -1e-30)))
_elementwise("softplus", act.softplus, act.softplus_vjp, SATURATING,
             attrs={"beta": Float(0.25, 4.0, edges=(1.0, 2.0)), "threshold": Float(1.0, 30.0, edges=(2.0, 20.0))})
_elementwise("silu", act.silu, act.silu_vjp, SATURATING)
for _name, _fwd, _vjp in (("softmax", act.softmax, act.softmax_vjp),
                          ("log_softmax", act.log_softmax, act.log_softmax_vjp)):
    register(Layer(
        _name, _fwd, _vjp, dims=ANY_SHAPE,
        attrs={"axis": Drawn(int, lambda d: Int(-len(d.shape), len(d.shape) - 1))},
        # +-20: a spread of 40 along the axis, past which 1 + e^-spread rounds to 1 in
        # both dtypes (the largest element's log-softmax, -log1p(e^-40), then comes out as 0).
        arrays={"x": Array(S("shape"), Real(-20.0, 20.0, edges=(0.0, 1.0, 20.0, -20.0, 9.0, -9.0), ties=True))},
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
        # +-20: p of the label rounds to 1 and p - q cancels (the precision check's tail).
        "logits": Array(S("N", "K"), Real(-20.0, 20.0, edges=(0.0, 15.0, -15.0, 20.0, -20.0), ties=True)),
        "labels": Array(S("N"), Labels("K")),
    },
))

register(Layer(
    "binary_cross_entropy_with_logits", ls.binary_cross_entropy_with_logits,
    ls.binary_cross_entropy_with_logits_vjp, loss=True,
    dims=REGRESSION,
    arrays={
        # sigma(z) - t past z = 16.6 (float32) or 36.7 (float64) with t = 1: 1 - sigma cancels to 0.
        "logits": Array(S("N", "D"), Real(-40.0, 40.0, edges=(0.0, 20.0, -20.0, 17.5, -17.5, 37.5, -37.5,
                                                               1e-30, -1e-30))),
        "targets": Array(S("N", "D"), Real(0.0, 1.0, edges=(0.0, 1.0, 0.5))),
    },
))

# ---- convolution and pooling -----------------------------------------------
# Sizes are drawn so every case is valid without filtering: the output size
# (OH, OW), a kernel, and a slack of spare rows are drawn, and the input size is
# derived from them (``_in_size``). OH = 1 with no slack makes the kernel as
# large as the padded input. The padding mode is drawn as a dim (``pad_mode``)
# so that the explicit amounts are 0 unless the mode is "explicit": a case never
# carries numbers the layer ignores.

def _drawn(dim):
    """An integer attribute equal to a drawn dim (another attribute's range depends on it)."""
    return Drawn(int, lambda d: Choice(getattr(d, dim)))


_padding_mode = Drawn(str, lambda d: Choice(cv.PADDINGS[d.pad_mode]))


def _explicit_pad(hi):
    """An explicit padding amount in [0, hi(d)], or 0 unless the drawn mode is "explicit"."""
    return Drawn(int, lambda d: Int(0, hi(d) if cv.PADDINGS[d.pad_mode] == "explicit" else 0))


def _in_size(out, slack, kernel, stride, dilation, padding, before, after):
    """An input length giving about ``out`` windows: exactly ``out`` for 'same'
    (ceil(in / stride) = out while slack < stride) and for 'valid'/'explicit'
    when padding is smaller than the dilated kernel; never below 1."""
    if padding == "same":
        return (out - 1) * stride + 1 + slack
    return max(1, (out - 1) * stride + dilation * (kernel - 1) + 1 - before - after + slack)


PAD_MODE = Int(0, len(cv.PADDINGS) - 1)
POOL_VALUES = Real(-3.0, 3.0, edges=(0.0,), ties=True)  # ties: equal values inside one window

register(Layer(
    "conv2d", cv.conv2d, cv.conv2d_vjp,
    dims={"N": Int(1, 3), "G": Int(1, 3), "Cg": Int(1, 2), "Og": Int(1, 2, like="Cg"),
          "kH": Int(1, 3), "kW": Int(1, 3, like="kH"), "OH": Int(1, 3), "OW": Int(1, 3),
          "slack_h": Int(0, 1), "slack_w": Int(0, 1), "pad_mode": PAD_MODE},
    attrs={"stride_h": Int(1, 3), "stride_w": Int(1, 3), "dilation_h": Int(1, 2), "dilation_w": Int(1, 2),
           "groups": _drawn("G"), "padding": _padding_mode,
           "pad_top": _explicit_pad(lambda d: 2), "pad_bottom": _explicit_pad(lambda d: 2),
           "pad_left": _explicit_pad(lambda d: 2), "pad_right": _explicit_pad(lambda d: 2)},
    arrays={
        "x": Array(lambda d, a: (d.N, d.G * d.Cg,
                                 _in_size(d.OH, d.slack_h, d.kH, a["stride_h"], a["dilation_h"], a["padding"],
                                          a["pad_top"], a["pad_bottom"]),
                                 _in_size(d.OW, d.slack_w, d.kW, a["stride_w"], a["dilation_w"], a["padding"],
                                          a["pad_left"], a["pad_right"]))),
        "W": Array(lambda d, a: (d.G * d.Og, d.Cg, d.kH, d.kW), param=True),
        "b": Array(lambda d, a: (d.G * d.Og,), param=True, optional=True),
    },
))

register(Layer(
    "conv1d", cv.conv1d, cv.conv1d_vjp,
    dims={"N": Int(1, 3), "G": Int(1, 3), "Cg": Int(1, 2), "Og": Int(1, 2, like="Cg"),
          "k": Int(1, 4), "OL": Int(1, 4), "slack": Int(0, 1), "pad_mode": PAD_MODE},
    attrs={"stride": Int(1, 3), "dilation": Int(1, 3), "groups": _drawn("G"), "padding": _padding_mode,
           "pad_left": _explicit_pad(lambda d: 2), "pad_right": _explicit_pad(lambda d: 2)},
    arrays={
        "x": Array(lambda d, a: (d.N, d.G * d.Cg, _in_size(d.OL, d.slack, d.k, a["stride"], a["dilation"],
                                                           a["padding"], a["pad_left"], a["pad_right"]))),
        "W": Array(lambda d, a: (d.G * d.Og, d.Cg, d.k), param=True),
        "b": Array(lambda d, a: (d.G * d.Og,), param=True, optional=True),
    },
))

# The output is (H - 1) s - 2 pad + d (k - 1) + output_pad + 1: pad <= (k - 1) // 2
# keeps it non-empty for every stride and dilation; output_pad < stride (both frameworks).
register(Layer(
    "conv_transpose2d", cv.conv_transpose2d, cv.conv_transpose2d_vjp,
    dims={"N": Int(1, 3), "G": Int(1, 2), "Cg": Int(1, 2), "Og": Int(1, 2, like="Cg"),
          "kH": Int(1, 3), "kW": Int(1, 3, like="kH"), "H": Int(1, 3), "W": Int(1, 3),
          "sH": Int(1, 3), "sW": Int(1, 3, like="sH")},
    attrs={"stride_h": _drawn("sH"), "stride_w": _drawn("sW"), "dilation_h": Int(1, 2), "dilation_w": Int(1, 2),
           "groups": _drawn("G"),
           "pad_h": Drawn(int, lambda d: Int(0, (d.kH - 1) // 2)), "pad_w": Drawn(int, lambda d: Int(0, (d.kW - 1) // 2)),
           "output_pad_h": Drawn(int, lambda d: Int(0, d.sH - 1)), "output_pad_w": Drawn(int, lambda d: Int(0, d.sW - 1))},
    arrays={
        "x": Array(lambda d, a: (d.N, d.G * d.Cg, d.H, d.W)),
        "W": Array(lambda d, a: (d.G * d.Cg, d.Og, d.kH, d.kW), param=True),
        "b": Array(lambda d, a: (d.G * d.Og,), param=True, optional=True),
    },
))

# Pooling: explicit padding is symmetric and at most half the kernel (PyTorch's
# rule, which keeps a cell of x in every window); 'same' may pad one side more.
POOL_DIMS = {"N": Int(1, 3), "C": Int(1, 3), "kH": Int(1, 3), "kW": Int(1, 3, like="kH"),
             "OH": Int(1, 3), "OW": Int(1, 3), "slack_h": Int(0, 1), "slack_w": Int(0, 1), "pad_mode": PAD_MODE}
POOL_ATTRS = {"kernel_h": _drawn("kH"), "kernel_w": _drawn("kW"), "stride_h": Int(1, 3), "stride_w": Int(1, 3),
              "padding": _padding_mode,
              "pad_h": _explicit_pad(lambda d: d.kH // 2), "pad_w": _explicit_pad(lambda d: d.kW // 2)}


def _pooled(values):
    return Array(lambda d, a: (d.N, d.C,
                               _in_size(d.OH, d.slack_h, d.kH, a["stride_h"], 1, a["padding"], a["pad_h"], a["pad_h"]),
                               _in_size(d.OW, d.slack_w, d.kW, a["stride_w"], 1, a["padding"], a["pad_w"], a["pad_w"])),
                 values)


register(Layer(
    "max_pool2d", pl.max_pool2d, pl.max_pool2d_vjp, dims=POOL_DIMS, attrs=POOL_ATTRS,
    arrays={"x": _pooled(POOL_VALUES)}, conventions={"tie": "first"},
))

register(Layer(
    "avg_pool2d", pl.avg_pool2d, pl.avg_pool2d_vjp, dims=POOL_DIMS,
    attrs={**POOL_ATTRS, "count_include_pad": Choice(True, False)},
    arrays={"x": _pooled(Real())},
))

register(Layer(
    "global_avg_pool2d", pl.global_avg_pool2d, pl.global_avg_pool2d_vjp,
    dims={"N": Int(1, 3), "C": Int(1, 4), "H": Int(1, 5), "W": Int(1, 5, like="H")},
    arrays={"x": Array(S("N", "C", "H", "W"))},
))


# ---- normalization, embedding, dropout --------------------------------------

# Inputs to a normalization: ties, and now and then a (nearly) constant array, so
# a reduction sees a zero or tiny variance and eps decides the result.
NORM_X = Real(-3.0, 3.0, edges=(0.0,), ties=True, spread=(0.0, 1e-4, 1e-2))
NORM_EPS = Float(1e-5, 1e-1, edges=(1e-5, 1e-3))
# (N, C, *spatial): no spatial axes (N, C), one (N, C, L) or two (N, C, H, W).
CHANNELS = {"N": Int(1, 4), "C": Int(1, 4), "spatial": Shape(min_dims=0, max_dims=2, min_side=1, max_side=3)}
AFFINE = {"gamma": Array(S("C"), param=True), "beta": Array(S("C"), param=True)}

register(Layer(
    "batch_norm", nm.batch_norm, nm.batch_norm_vjp, condition=nm.kappa,
    dims=CHANNELS, attrs={"eps": NORM_EPS},
    arrays={"x": Array(S("N", "C", "spatial"), NORM_X), **AFFINE},
))

register(Layer(
    "batch_norm_inference", nm.batch_norm_inference, nm.batch_norm_inference_vjp,
    condition=nm.kappa,
    dims=CHANNELS, attrs={"eps": NORM_EPS},
    arrays={
        "x": Array(S("N", "C", "spatial"), NORM_X), **AFFINE,
        "running_mean": Array(S("C"), grad=False),
        "running_var": Array(S("C"), Real(1e-4, 4.0, edges=(1e-4, 1.0)), grad=False),
    },
))


def _trailing(d, attrs):
    """The shape of the last ``attrs["axes"]`` axes of x: layer norm's gamma and beta."""
    return d.shape[len(d.shape) - attrs["axes"]:]


register(Layer(
    "layer_norm", nm.layer_norm, nm.layer_norm_vjp, condition=nm.kappa,
    dims={"shape": Shape(min_dims=1, max_dims=3, max_side=4)},
    attrs={"axes": Drawn(int, lambda d: Int(1, len(d.shape))), "eps": NORM_EPS},
    arrays={
        "x": Array(S("shape"), NORM_X),
        "gamma": Array(_trailing, param=True, optional=True),
        "beta": Array(_trailing, param=True, optional=True),
    },
))

# Keras reaches RMS normalization two ways; `route` names which one a framework
# runs (PyTorch has only nn.RMSNorm; see the adapters).
register(Layer(
    "rms_norm", nm.rms_norm, nm.rms_norm_vjp, condition=nm.kappa,
    dims={"shape": Shape(min_dims=1, max_dims=3, max_side=4)},
    attrs={"axes": Drawn(int, lambda d: Int(1, len(d.shape))), "eps": NORM_EPS,
           "route": Choice("rms_normalization", "layer_normalization_rms_scaling")},
    arrays={"x": Array(S("shape"), NORM_X), "gamma": Array(_trailing, param=True, optional=True)},
))

# Groups and channels per group are drawn, so groups always divides the channels.
GROUPED = {"N": Int(1, 3), "G": Int(1, 3), "Cg": Int(1, 3),
           "spatial": Shape(min_dims=0, max_dims=2, min_side=1, max_side=3)}


def _grouped_x(d, attrs):
    return (d.N, d.G * d.Cg, *d.spatial)


def _grouped_c(d, attrs):
    return (d.G * d.Cg,)


register(Layer(
    "group_norm", nm.group_norm, nm.group_norm_vjp, condition=nm.kappa,
    dims=GROUPED,
    attrs={"groups": _drawn("G"), "eps": NORM_EPS},
    arrays={
        "x": Array(_grouped_x, NORM_X),
        "gamma": Array(_grouped_c, param=True, optional=True),
        "beta": Array(_grouped_c, param=True, optional=True),
    },
))

# A small vocabulary and up to 16 lookups: repeated indices in most cases (V = 1: all equal).
register(Layer(
    "embedding", em.embedding, em.embedding_vjp,
    dims={"N": Int(1, 4), "L": Int(1, 4), "V": Int(1, 5), "D": Int(1, 4)},
    arrays={"ids": Array(S("N", "L"), Labels("V")), "W": Array(S("V", "D"), param=True)},
))

register(Layer(
    "dropout", dr.dropout, dr.dropout_vjp, dims=ANY_SHAPE,
    attrs={"p": Float(0.0, 0.9, edges=(0.0, 0.5))},
    arrays={"x": Array(S("shape")), "mask": Array(S("shape"), Mask("p"), grad=False)},
))

# ---- recurrent ----------------------------------------------------------------
# One layer, one direction, batch first; weights (in, G H) in PyTorch's gate order
# (see reference/recurrent.py). Inputs reach +-3 and weights +-2, so with I = 4
# the gates saturate now and then (sigma(30) is exactly 1 in float32); zero
# initial states come from the 0.0 edge. T = 1 (one step) and N = 1 are drawn, and
# now and then T = 50, where the gradient reaching early steps shrinks or grows
# (``flow``: its norm per step is compared too).

RECURRENT_DIMS = {"N": Int(1, 3), "T": Int(1, 4, edges=(50,)), "I": Int(1, 4), "H": Int(1, 4, like="I")}
RECURRENT_X = Real(-3.0, 3.0, edges=(0.0, 3.0, -3.0))
RECURRENT_STATE = Real(-2.0, 2.0, edges=(0.0,))
RECURRENT_W = Real(-2.0, 2.0, edges=(0.0, 2.0, -2.0))
RECURRENT_B = Real(-3.0, 3.0, edges=(0.0, 3.0, -3.0))


def _recurrent_arrays(gates, states=("h0",)):
    return {
        "x": Array(S("N", "T", "I"), RECURRENT_X),
        **{s: Array(S("N", "H"), RECURRENT_STATE) for s in states},
        "W_ih": Array(lambda d, a: (d.I, gates * d.H), RECURRENT_W, param=True),
        "W_hh": Array(lambda d, a: (d.H, gates * d.H), RECURRENT_W, param=True),
        "b_ih": Array(lambda d, a: (gates * d.H,), RECURRENT_B, param=True),
        "b_hh": Array(lambda d, a: (gates * d.H,), RECURRENT_B, param=True),
    }


register(Layer(
    "rnn", rc.rnn, rc.rnn_vjp, flow="x", dims=RECURRENT_DIMS, outputs=("y", "h_n"),
    attrs={"nonlinearity": Choice("tanh", "relu")},
    arrays=_recurrent_arrays(1),
))

register(Layer(
    "lstm", rc.lstm, rc.lstm_vjp, flow="x", dims=RECURRENT_DIMS, outputs=("y", "h_n", "c_n"),
    arrays=_recurrent_arrays(4, ("h0", "c0")),
))

register(Layer(
    "gru", rc.gru, rc.gru_vjp, flow="x", dims=RECURRENT_DIMS, outputs=("y", "h_n"),
    arrays=_recurrent_arrays(3),
))
