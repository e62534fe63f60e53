"""The catalogue: every layer exactly once, with what it takes and where its edges are.

An entry names the oracle pair, the free sizes, the attributes with their
ranges, and the arrays (inputs and parameters) with their shapes and value
domains. Strategies, validation, test ids and report rows all read from here,
so adding a layer means: its oracle, one entry below, and one builder per
adapter. Canonical layouts are the oracle's (see each docstring).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from . import activations as act
from . import attention as at
from . import clipping as cl
from . import conv as cv
from . import dense as dn
from . import dropout as dr
from . import embedding as em
from . import losses as ls
from . import models as md
from . import norm as nm
from . import optimizers as op
from . import pooling as pl
from . import recurrent as rc
from . import training as tr
from .batching import batch_axis, unbatched
from .sensitivity import through_time
from .spec import Array, Choice, Drawn, Float, Int, Labels, Layer, Lengths, Mask, Real, Shape

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
    "dense", dn.dense, dn.dense_vjp, empty=True, nonfinite=("x",),
    dims={"N": Int(1, 4, edges=(0,)), "I": Int(1, 6), "O": Int(1, 6, like="I")},
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


# Element-wise layers also take 0-d inputs (a scalar) and zero-size ones (a side of 0
# now and then), which both frameworks accept.
ELEMENTWISE_SHAPE = {"shape": Shape(min_dims=0, max_dims=4, min_side=0, max_side=4)}


def _elementwise(name, forward, vjp, values=Real(), attrs=None, conventions=None):
    register(Layer(name, forward, vjp, dims=ELEMENTWISE_SHAPE, attrs=attrs or {}, empty=True, nonfinite=("x",),
                   arrays={"x": Array(S("shape"), values)}, conventions=conventions or {}))


# A kink's two conventions: the branch x = 0 takes, and the branch a NaN takes.
KINK = {"at_zero": "left", "at_nan": "left"}
_elementwise("relu", act.relu, act.relu_vjp, conventions={"at_nan": "left"})
_elementwise("leaky_relu", act.leaky_relu, act.leaky_relu_vjp,
             attrs={"negative_slope": Float(0.0, 2.0, edges=(0.01, 0.2, 1.0))}, conventions=KINK)
_elementwise("elu", act.elu, act.elu_vjp, SATURATING,
             attrs={"alpha": Float(0.1, 3.0, edges=(1.0,))}, conventions=KINK)
_elementwise("selu", act.selu, act.selu_vjp, SATURATING, conventions=KINK)
# GELU's left tail: x Phi(x) with Phi(-3) = 1.3e-3, Phi(-8) = 6e-16 (1 + erf cancels there).
_elementwise("gelu", act.gelu, act.gelu_vjp,
             Real(-10.0, 10.0, edges=(0.0, -6.0, 6.0, -3.0, -8.0, -10.0, 1e-30, -1e-30)),
             attrs={"approximate": Choice("none", "tanh")})
_elementwise("sigmoid", act.sigmoid, act.sigmoid_vjp, SATURATING)
# tanh rounds to +-1 past |x| = 9.01 in float32 and 19.06 in float64: 1 - tanh^2 is 0 there.
_elementwise("tanh", act.tanh, act.tanh_vjp,
             Real(-20.0, 20.0, edges=(0.0, -10.0, 10.0, 9.5, -9.5, 19.5, -19.5, 20.0, -20.0, 1e-30, -1e-30)))
_elementwise("softplus", act.softplus, act.softplus_vjp, SATURATING,
             attrs={"beta": Float(0.25, 4.0, edges=(1.0, 2.0)),
                    # negative thresholds (the line starts below 0, a jump at beta x = threshold) to past any beta x
                    "threshold": Float(-5.0, 200.0, edges=(20.0, 2.0, 0.0, -1.0, 200.0))})
_elementwise("silu", act.silu, act.silu_vjp, SATURATING)
for _name, _fwd, _vjp in (("softmax", act.softmax, act.softmax_vjp),
                          ("log_softmax", act.log_softmax, act.log_softmax_vjp)):
    register(Layer(
        # a side of 0 now and then: an empty softmax axis, or an empty batch beside it
        _name, _fwd, _vjp, dims={"shape": Shape(min_dims=1, max_dims=4, min_side=0, max_side=4)},
        empty=True, nonfinite=("x",),
        attrs={"axis": Drawn(int, lambda d: Int(-len(d.shape), len(d.shape) - 1))},
        # +-20: a spread of 40 along the axis, past which 1 + e^-spread rounds to 1 in
        # both dtypes (the largest element's log-softmax, -log1p(e^-40), then comes out as 0).
        arrays={"x": Array(S("shape"), Real(-20.0, 20.0, edges=(0.0, 1.0, 20.0, -20.0, 9.0, -9.0), ties=True))},
    ))

# ---- losses -----------------------------------------------------------------
# Every loss takes PyTorch's three reductions; "none" returns the unreduced losses,
# which get a random cotangent like any other output.

REDUCTION = Choice("mean", "sum", "none")
# A batch of 0 now and then: the mean over nothing is NaN (see losses._reduce).
REGRESSION = {"N": Int(1, 4, edges=(0,)), "D": Int(1, 5)}
for _name, _fwd, _vjp, _attrs in (
    ("mse", ls.mse, ls.mse_vjp, {}),
    ("l1", ls.l1, ls.l1_vjp, {}),
    # Deltas from 1e-3 (every |d| on the line) to 1e3 (every |d| on the parabola), and the kink d = +-delta.
    ("huber", ls.huber, ls.huber_vjp, {"delta": Float(1e-3, 1e3, edges=(1.0, 1e-3, 0.5, 2.0, 1e3))}),
):
    register(Layer(
        _name, _fwd, _vjp, dims=REGRESSION, attrs={**_attrs, "reduction": REDUCTION}, loss=True, empty=True,
        nonfinite=("pred", "target"),
        arrays={"pred": Array(S("N", "D")), "target": Array(S("N", "D"), Real(like="pred"))},
    ))


def _class_first(d, attrs):
    """(N, K, d1, ...): logits and probability targets, classes on axis 1 (PyTorch's layout)."""
    return (d.N, d.K, *d.spatial)


def _indices(attrs):
    return attrs["target_type"] == "indices"


# Class-index or probability targets (drawn as a dim: ignore_index only applies to
# indices; probabilities sum to 1 over the classes now and then, any values in
# [0, 1] otherwise, which PyTorch takes as they are); no, one or two spatial axes. ignore_index is -100 (PyTorch's default:
# no label), class 0 (hypothesis draws label arrays of zeros often, so every label
# of the batch is ignored now and then) or the last class. Class weights are
# positive: a zero weight on every label of a batch makes PyTorch's weighted mean
# 0/0 and its gradient NaN, which no perturbation could be seen in.
register(Layer(
    "cross_entropy", ls.cross_entropy, ls.cross_entropy_vjp, loss=True, empty=True, nonfinite=("logits",),
    dims={"N": Int(1, 5, edges=(0,)), "K": Int(2, 6), "spatial": Shape(min_dims=0, max_dims=2, min_side=1, max_side=3),
          "soft": Int(0, 1)},
    attrs={"label_smoothing": Float(0.0, 0.5, edges=(0.0, 0.1)), "reduction": REDUCTION,
           "target_type": Drawn(str, lambda d: Choice(("indices", "probabilities")[d.soft])),
           "ignore_index": Drawn(int, lambda d: Choice(-100) if d.soft else Choice(-100, 0, d.K - 1))},
    arrays={
        # +-20: p of the label rounds to 1 and p - q cancels (the precision check's tail).
        "logits": Array(_class_first, Real(-20.0, 20.0, edges=(0.0, 15.0, -15.0, 20.0, -20.0), ties=True)),
        "labels": Array(S("N", "spatial"), Labels("K"), when=_indices),
        "probs": Array(_class_first, Real(0.0, 1.0, edges=(0.0, 1.0, 0.5), sum_to_one=1), when=lambda a: not _indices(a)),
        "weight": Array(S("K"), Real(0.1, 3.0, edges=(1.0,)), optional=True, grad=False),
    },
    conventions={"empty_mean": "zero"},
))

register(Layer(
    "binary_cross_entropy_with_logits", ls.binary_cross_entropy_with_logits,
    ls.binary_cross_entropy_with_logits_vjp, loss=True, empty=True, nonfinite=("logits",),
    dims=REGRESSION, attrs={"reduction": REDUCTION},
    arrays={
        # sigma(z) - t past z = 16.6 (float32) or 36.7 (float64) with t = 1: 1 - sigma cancels to 0.
        "logits": Array(S("N", "D"), Real(-40.0, 40.0, edges=(0.0, 20.0, -20.0, 17.5, -17.5, 37.5, -37.5,
                                                               1e-30, -1e-30))),
        "targets": Array(S("N", "D"), Real(0.0, 1.0, edges=(0.0, 1.0, 0.5))),
        "weight": Array(S("N", "D"), Real(0.0, 2.0, edges=(0.0, 1.0)), optional=True, grad=False),
        "pos_weight": Array(S("D"), Real(0.0, 4.0, edges=(1.0, 0.0)), optional=True, grad=False),
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
# PyTorch's convolutions and poolings also take one example without its batch axis
# ((C, H, W), (C, L)); Keras layers need the axis (not applicable there).
BATCHED = Choice(True, False, default=True)  # cases saved before it existed were batched
POOL_VALUES = Real(-3.0, 3.0, edges=(0.0,), ties=True)  # ties: equal values inside one window

register(Layer(
    "conv2d", *unbatched(cv.conv2d, cv.conv2d_vjp), empty=True, nonfinite=("x",),
    dims={"N": Int(1, 3, edges=(0,)), "G": Int(1, 3), "Cg": Int(1, 2), "Og": Int(1, 2, like="Cg"),
          "kH": Int(1, 3), "kW": Int(1, 3, like="kH"), "OH": Int(1, 3), "OW": Int(1, 3),
          "slack_h": Int(0, 1), "slack_w": Int(0, 1), "pad_mode": PAD_MODE},
    attrs={"batched": BATCHED, "stride_h": Int(1, 3), "stride_w": Int(1, 3), "dilation_h": Int(1, 4),
           "dilation_w": Int(1, 4), "groups": _drawn("G"), "padding": _padding_mode,
           "pad_top": _explicit_pad(lambda d: 2), "pad_bottom": _explicit_pad(lambda d: 2),
           "pad_left": _explicit_pad(lambda d: 2), "pad_right": _explicit_pad(lambda d: 2)},
    arrays={
        "x": Array(batch_axis(lambda d, a: (d.N, d.G * d.Cg,
                                 _in_size(d.OH, d.slack_h, d.kH, a["stride_h"], a["dilation_h"], a["padding"],
                                          a["pad_top"], a["pad_bottom"]),
                                 _in_size(d.OW, d.slack_w, d.kW, a["stride_w"], a["dilation_w"], a["padding"],
                                          a["pad_left"], a["pad_right"])))),
        "W": Array(lambda d, a: (d.G * d.Og, d.Cg, d.kH, d.kW), param=True),
        "b": Array(lambda d, a: (d.G * d.Og,), param=True, optional=True),
    },
))

register(Layer(
    "conv1d", *unbatched(cv.conv1d, cv.conv1d_vjp), empty=True, nonfinite=("x",),
    dims={"N": Int(1, 3, edges=(0,)), "G": Int(1, 3), "Cg": Int(1, 2), "Og": Int(1, 2, like="Cg"),
          "k": Int(1, 4), "OL": Int(1, 4), "slack": Int(0, 1), "pad_mode": PAD_MODE},
    attrs={"batched": BATCHED, "stride": Int(1, 3), "dilation": Int(1, 4), "groups": _drawn("G"),
           "padding": _padding_mode,
           "pad_left": _explicit_pad(lambda d: 2), "pad_right": _explicit_pad(lambda d: 2)},
    arrays={
        "x": Array(batch_axis(lambda d, a: (d.N, d.G * d.Cg, _in_size(d.OL, d.slack, d.k, a["stride"], a["dilation"],
                                                                      a["padding"], a["pad_left"], a["pad_right"])))),
        "W": Array(lambda d, a: (d.G * d.Og, d.Cg, d.k), param=True),
        "b": Array(lambda d, a: (d.G * d.Og,), param=True, optional=True),
    },
))

# The output is (H - 1) s - 2 pad + d (k - 1) + output_pad + 1: pad <= (k - 1) // 2
# keeps it non-empty for every stride and dilation; output_pad < max(stride, dilation),
# PyTorch's bound (Keras: < stride), so dilation is drawn as a dim.
register(Layer(
    "conv_transpose2d", *unbatched(cv.conv_transpose2d, cv.conv_transpose2d_vjp), empty=True, nonfinite=("x",),
    dims={"N": Int(1, 3, edges=(0,)), "G": Int(1, 2), "Cg": Int(1, 2), "Og": Int(1, 2, like="Cg"),
          "kH": Int(1, 3), "kW": Int(1, 3, like="kH"), "H": Int(1, 3), "W": Int(1, 3),
          "sH": Int(1, 3), "sW": Int(1, 3, like="sH"), "dH": Int(1, 4), "dW": Int(1, 4, like="dH")},
    attrs={"batched": BATCHED,
           "stride_h": _drawn("sH"), "stride_w": _drawn("sW"), "dilation_h": _drawn("dH"), "dilation_w": _drawn("dW"),
           "groups": _drawn("G"),
           "pad_h": Drawn(int, lambda d: Int(0, (d.kH - 1) // 2)), "pad_w": Drawn(int, lambda d: Int(0, (d.kW - 1) // 2)),
           "output_pad_h": Drawn(int, lambda d: Int(0, max(d.sH, d.dH) - 1)),
           "output_pad_w": Drawn(int, lambda d: Int(0, max(d.sW, d.dW) - 1))},
    arrays={
        "x": Array(batch_axis(lambda d, a: (d.N, d.G * d.Cg, d.H, d.W))),
        "W": Array(lambda d, a: (d.G * d.Cg, d.Og, d.kH, d.kW), param=True),
        "b": Array(lambda d, a: (d.G * d.Og,), param=True, optional=True),
    },
))

# Pooling: explicit padding is symmetric and at most half the (undilated) kernel
# (PyTorch's rule); 'same' may pad one side more. ceil_mode is drawn only where it
# can act (not with 'same', whose windows already cover the input), and then the
# spare rows are short of a full stride: a partial last window, or one that would
# start in the bottom padding (PyTorch drops it). The input is at least
# as long as the dilation, so every dilated window holds a cell of x.
POOL_DIMS = {"N": Int(1, 3, edges=(0,)), "C": Int(1, 3), "kH": Int(1, 3), "kW": Int(1, 3, like="kH"),
             "OH": Int(1, 3), "OW": Int(1, 3), "slack_h": Int(0, 2), "slack_w": Int(0, 2), "pad_mode": PAD_MODE}
POOL_ATTRS = {"batched": BATCHED, "kernel_h": _drawn("kH"), "kernel_w": _drawn("kW"), "stride_h": Int(1, 3), "stride_w": Int(1, 3),
              "padding": _padding_mode,
              "pad_h": _explicit_pad(lambda d: d.kH // 2), "pad_w": _explicit_pad(lambda d: d.kW // 2),
              "ceil_mode": Drawn(bool, lambda d: Choice(False) if cv.PADDINGS[d.pad_mode] == "same"
                                 else Choice(True, False))}


def _pooled(values):
    def side(out, slack, kernel, stride, dilation, pad, a):
        if a["ceil_mode"] and stride > 1:  # spare rows short of a full stride: ceil_mode's partial window
            slack = 1 + slack % (stride - 1)
        return max(dilation, _in_size(out, slack, kernel, stride, dilation, a["padding"], pad, pad))

    def shape(d, a):
        return (d.N, d.C, side(d.OH, d.slack_h, d.kH, a["stride_h"], a.get("dilation_h", 1), a["pad_h"], a),
                side(d.OW, d.slack_w, d.kW, a["stride_w"], a.get("dilation_w", 1), a["pad_w"], a))
    return Array(batch_axis(shape), values)


register(Layer(
    "max_pool2d", *unbatched(pl.max_pool2d, pl.max_pool2d_vjp), dims=POOL_DIMS, empty=True, nonfinite=("x",),
    attrs={**POOL_ATTRS, "dilation_h": Int(1, 3), "dilation_w": Int(1, 3)},
    arrays={"x": _pooled(POOL_VALUES)}, conventions={"tie": "first", "nan_route": "first"},
))

register(Layer(
    "avg_pool2d", *unbatched(pl.avg_pool2d, pl.avg_pool2d_vjp), dims=POOL_DIMS, empty=True, nonfinite=("x",),
    attrs={**POOL_ATTRS, "count_include_pad": Choice(True, False), "divisor_override": Choice(None, 1)},
    arrays={"x": _pooled(Real())},
))

register(Layer(
    "global_avg_pool2d", pl.global_avg_pool2d, pl.global_avg_pool2d_vjp, empty=True, nonfinite=("x",),
    dims={"N": Int(1, 3, edges=(0,)), "C": Int(1, 4), "H": Int(1, 5), "W": Int(1, 5, like="H")},
    arrays={"x": Array(S("N", "C", "H", "W"))},
))

# Output sizes that divide the input, that do not (overlapping windows), 1x1
# (global), equal to the input (identity) and larger than it (cells repeat).
register(Layer(
    "adaptive_avg_pool2d", *unbatched(pl.adaptive_avg_pool2d, pl.adaptive_avg_pool2d_vjp), empty=True,
    nonfinite=("x",),
    dims={"N": Int(1, 3, edges=(0,)), "C": Int(1, 3), "H": Int(1, 6), "W": Int(1, 6, like="H"),
          "OH": Int(1, 5, like="H"), "OW": Int(1, 5, like="OH")},
    attrs={"batched": BATCHED, "output_h": _drawn("OH"), "output_w": _drawn("OW")},
    arrays={"x": Array(batch_axis(S("N", "C", "H", "W")))},
))


# ---- normalization, embedding, dropout --------------------------------------

# Inputs to a normalization: ties, and now and then a (nearly) constant array, so
# a reduction sees a zero or tiny variance and eps decides the result.
NORM_X = Real(-3.0, 3.0, edges=(0.0,), ties=True, spread=(0.0, 1e-4, 1e-2))
NORM_EPS = Float(1e-5, 1e-1, edges=(1e-5, 1e-3))
# (N, C, *spatial): no spatial axes (N, C), one (N, C, L) or two (N, C, H, W).
CHANNELS = {"N": Int(1, 4, edges=(0,)), "C": Int(1, 4), "spatial": Shape(min_dims=0, max_dims=2, min_side=1, max_side=3)}
AFFINE = {"gamma": Array(S("C"), param=True), "beta": Array(S("C"), param=True)}

register(Layer(
    "batch_norm", nm.batch_norm, nm.batch_norm_vjp, condition=nm.kappa, empty=True, nonfinite=("x",),
    dims=CHANNELS, attrs={"eps": NORM_EPS},
    arrays={"x": Array(S("N", "C", "spatial"), NORM_X), **AFFINE},
))

register(Layer(
    "batch_norm_inference", nm.batch_norm_inference, nm.batch_norm_inference_vjp,
    condition=nm.kappa, empty=True, nonfinite=("x",),
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
    "layer_norm", nm.layer_norm, nm.layer_norm_vjp, condition=nm.kappa, empty=True, nonfinite=("x",),
    dims={"shape": Shape(min_dims=1, max_dims=3, min_side=0, max_side=4)},  # a side of 0 now and then
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
    "rms_norm", nm.rms_norm, nm.rms_norm_vjp, condition=nm.kappa, empty=True, nonfinite=("x",),
    dims={"shape": Shape(min_dims=1, max_dims=3, min_side=0, max_side=4)},  # a side of 0 now and then
    attrs={"axes": Drawn(int, lambda d: Int(1, len(d.shape))), "eps": NORM_EPS,
           "route": Choice("rms_normalization", "layer_normalization_rms_scaling")},
    arrays={"x": Array(S("shape"), NORM_X), "gamma": Array(_trailing, param=True, optional=True)},
))

# Groups and channels per group are drawn, so groups always divides the channels.
GROUPED = {"N": Int(1, 3, edges=(0,)), "G": Int(1, 3), "Cg": Int(1, 3),
           "spatial": Shape(min_dims=0, max_dims=2, min_side=1, max_side=3)}


def _grouped_x(d, attrs):
    return (d.N, d.G * d.Cg, *d.spatial)


def _grouped_c(d, attrs):
    return (d.G * d.Cg,)


register(Layer(
    "group_norm", nm.group_norm, nm.group_norm_vjp, condition=nm.kappa, empty=True, nonfinite=("x",),
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
    "embedding", em.embedding, em.embedding_vjp, empty=True,
    dims={"N": Int(1, 4, edges=(0,)), "L": Int(1, 4), "V": Int(1, 5), "D": Int(1, 4)},
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

RECURRENT_DIMS = {"N": Int(1, 3, edges=(0,)), "T": Int(1, 4, edges=(50,)), "I": Int(1, 4), "H": Int(1, 4, like="I")}
RECURRENT_X = Real(-3.0, 3.0, edges=(0.0, 3.0, -3.0))
RECURRENT_STATE = Real(-2.0, 2.0, edges=(0.0,))
RECURRENT_W = Real(-2.0, 2.0, edges=(0.0, 2.0, -2.0))
RECURRENT_B = Real(-3.0, 3.0, edges=(0.0, 3.0, -3.0))


def _through_time(forward, vjp):
    """What every layer through time declares: the per-step gradient norms of x
    (``flow``) and the condition number measured by perturbation."""
    return {"flow": "x", "condition": through_time(forward, vjp), "empty": True}


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
    "rnn", rc.rnn, rc.rnn_vjp, dims=RECURRENT_DIMS, outputs=("y", "h_n"),
    **_through_time(rc.rnn, rc.rnn_vjp),
    attrs={"nonlinearity": Choice("tanh", "relu")},
    arrays=_recurrent_arrays(1),
))

register(Layer(
    "lstm", rc.lstm, rc.lstm_vjp, dims=RECURRENT_DIMS, outputs=("y", "h_n", "c_n"),
    **_through_time(rc.lstm, rc.lstm_vjp),
    arrays=_recurrent_arrays(4, ("h0", "c0")),
))

register(Layer(
    "gru", rc.gru, rc.gru_vjp, dims=RECURRENT_DIMS, outputs=("y", "h_n"),
    **_through_time(rc.gru, rc.gru_vjp),
    attrs={"reset_after": Choice(True, False)},
    arrays=_recurrent_arrays(3),
))

# Stacks and directions: PyTorch's weight names (W_ih_l1, W_ih_l0_reverse, ...) and
# state layout (L D, N, H), index l D + d; smaller sizes (the cost grows with L D).
DEEP_DIMS = {"N": Int(1, 3, edges=(0,)), "T": Int(1, 4), "I": Int(1, 3), "H": Int(1, 3, like="I")}


def _deep_arrays(gates, layers, directions, states=("h0",)):
    arrays = {"x": Array(S("N", "T", "I"), RECURRENT_X),
              **{s: Array(lambda d, a: (layers * directions, d.N, d.H), RECURRENT_STATE) for s in states}}
    for k, suffix in enumerate(rc.param_names(layers, directions)):
        first = k < directions
        arrays.update({
            f"W_ih{suffix}": Array(lambda d, a, first=first: (d.I if first else directions * d.H, gates * d.H),
                                   RECURRENT_W, param=True),
            f"W_hh{suffix}": Array(lambda d, a: (d.H, gates * d.H), RECURRENT_W, param=True),
            f"b_ih{suffix}": Array(lambda d, a: (gates * d.H,), RECURRENT_B, param=True),
            f"b_hh{suffix}": Array(lambda d, a: (gates * d.H,), RECURRENT_B, param=True),
        })
    return arrays


for _name, _gates, _layers, _directions in (("stacked_lstm", 4, 2, 1), ("stacked_gru", 3, 2, 1),
                                            ("bidirectional_lstm", 4, 1, 2), ("bidirectional_gru", 3, 1, 2)):
    _lstm = _gates == 4
    register(Layer(
        _name, getattr(rc, _name), getattr(rc, _name + "_vjp"), dims=DEEP_DIMS,
        outputs=("y", "h_n", "c_n") if _lstm else ("y", "h_n"),
        **_through_time(getattr(rc, _name), getattr(rc, _name + "_vjp")),
        arrays=_deep_arrays(_gates, _layers, _directions, ("h0", "c0") if _lstm else ("h0",)),
    ))

# Variable-length sequences: lengths in [1, T] (all full and all 1 drawn on purpose);
# what y holds at a padded step and whether y is the whole sequence are attributes.
MASKED_ATTRS = {"padded_output": Choice(*rc.PADDED_OUTPUTS), "return_sequences": Choice(True, False)}


def _masked_arrays(gates, states=("h0",)):
    arrays = _recurrent_arrays(gates, states)
    return {"x": arrays.pop("x"), "lengths": Array(S("N"), Lengths("T")), **arrays}


register(Layer(
    "masked_rnn", rc.masked_rnn, rc.masked_rnn_vjp, dims=DEEP_DIMS, outputs=("y", "h_n"),
    **_through_time(rc.masked_rnn, rc.masked_rnn_vjp),
    attrs={"nonlinearity": Choice("tanh", "relu"), **MASKED_ATTRS}, arrays=_masked_arrays(1),
))

register(Layer(
    "masked_lstm", rc.masked_lstm, rc.masked_lstm_vjp, dims=DEEP_DIMS, outputs=("y", "h_n", "c_n"),
    **_through_time(rc.masked_lstm, rc.masked_lstm_vjp),
    attrs=MASKED_ATTRS, arrays=_masked_arrays(4, ("h0", "c0")),
))

register(Layer(
    "masked_gru", rc.masked_gru, rc.masked_gru_vjp, dims=DEEP_DIMS, outputs=("y", "h_n"),
    **_through_time(rc.masked_gru, rc.masked_gru_vjp),
    attrs=MASKED_ATTRS, arrays=_masked_arrays(3),
))

for _name, _gates in (("masked_bidirectional_lstm", 4), ("masked_bidirectional_gru", 3)):
    _states = ("h0", "c0") if _gates == 4 else ("h0",)
    _arrays = _deep_arrays(_gates, 1, 2, _states)
    register(Layer(
        _name, getattr(rc, _name), getattr(rc, _name + "_vjp"), dims=DEEP_DIMS,
        outputs=("y", "h_n", "c_n") if _gates == 4 else ("y", "h_n"),
        **_through_time(getattr(rc, _name), getattr(rc, _name + "_vjp")),
        arrays={"x": _arrays.pop("x"), "lengths": Array(S("N"), Lengths("T")), **_arrays},
    ))

# ---- attention ------------------------------------------------------------------
# Small on purpose: one head, a head dim of 1, one query or one key (L = 1) are
# all drawn. Keep-masks (1 = attend) drop about a third of the keys, now and then
# none, all, or whole rows: a query that may see nothing, a sequence that is all
# padding next to one that is not (see reference/attention.py for the answer there).

ATTENTION_MASK = Mask(0.3, lines=True)

register(Layer(
    "scaled_dot_product_attention", at.scaled_dot_product_attention, at.scaled_dot_product_attention_vjp,
    dims={"N": Int(1, 2), "Hh": Int(1, 2), "Lq": Int(1, 4), "Lk": Int(1, 4, like="Lq"), "E": Int(1, 3),
          "Ev": Int(1, 3, like="E")},
    attrs={"causal": Choice(False, True),
           "scale": Drawn(float, lambda d: Float(0.1, 2.0, edges=(1.0 / float(np.sqrt(d.E)), 1.0)))},
    arrays={
        "q": Array(S("N", "Hh", "Lq", "E")),
        "k": Array(S("N", "Hh", "Lk", "E")),
        "v": Array(S("N", "Hh", "Lk", "Ev")),
        "mask": Array(S("N", "Hh", "Lq", "Lk"), ATTENTION_MASK, optional=True, grad=False),
    },
    conventions={"empty_row": "zeros"},
))

MHA_DIMS = {"N": Int(1, 3), "Lq": Int(1, 4), "Lk": Int(1, 4, like="Lq"), "heads": Int(1, 3), "D": Int(1, 2)}


def _embedding(d, a):
    return (d.heads * d.D,)


def _square(d, a):
    return (d.heads * d.D,) * 2


def _mha_arrays():
    return {
        "query": Array(lambda d, a: (d.N, d.Lq, d.heads * d.D)),
        "key": Array(lambda d, a: (d.N, d.Lk, d.heads * d.D)),
        "value": Array(lambda d, a: (d.N, d.Lk, d.heads * d.D)),
        **{w: Array(_square, param=True) for w in ("W_q", "W_k", "W_v")},
        **{b: Array(_embedding, param=True) for b in ("b_q", "b_k", "b_v")},
        "W_o": Array(_square, param=True),
        "b_o": Array(_embedding, param=True),
        "key_padding_mask": Array(S("N", "Lk"), ATTENTION_MASK, optional=True, grad=False),
        "attn_mask": Array(S("N", "Lq", "Lk"), ATTENTION_MASK, optional=True, grad=False),
    }


register(Layer(
    "multi_head_attention", at.multi_head_attention, at.multi_head_attention_vjp, condition=at.kappa,
    dims=MHA_DIMS, attrs={"num_heads": _drawn("heads"), "need_weights": Choice(False, True)},
    arrays=_mha_arrays(),
    conventions={"empty_row": "zeros", "empty_row_weights": "zeros"},
))

register(Layer(
    "multi_head_attention_weights", at.multi_head_attention_with_weights, at.multi_head_attention_with_weights_vjp,
    condition=at.kappa, dims=MHA_DIMS, attrs={"num_heads": _drawn("heads")}, outputs=("y", "weights"),
    arrays=_mha_arrays(),
    conventions={"empty_row_weights": "zeros"},
))

# ---- training step ------------------------------------------------------------
# Forward-only entries (vjp=None): no cotangent; the outputs are the clipped
# gradients, or the parameters and optimizer state after each of k steps (w@1 ..
# w@k). Gradients come in on purpose at exact bounds (+-1 against thresholds 1
# and 2), as all-zero or all-equal arrays (spread 0), and tiny (1e-6, 1e-10:
# below Adam's eps, with squares still normal in float32). Thresholds reach 0, a
# tiny value and inf. Every hyperparameter is drawn, defaults are never relied on.

GRAD_VALUES = Real(-3.0, 3.0, edges=(0.0, 1.0, -1.0, 1e-6, -1e-10), spread=(0.0,))
CLIP_THRESHOLD = Float(0.0, 6.0, edges=(0.0, 1e-6, 1.0, 2.0, float("inf")))
CLIP_SHAPE = Shape(min_dims=1, max_dims=2, max_side=4)
# A clipping function (clip_grad_*_, tf.clip_*) or an optimizer's argument (Keras'
# clipvalue, clipnorm, global_clipnorm): the same answer, asked two ways.
CLIP_ROUTE = Choice(*cl.ROUTES)

register(Layer(
    "clip_by_value", cl.clip_by_value, None,
    dims={"shape": CLIP_SHAPE},
    attrs={"clip_value": CLIP_THRESHOLD, "route": CLIP_ROUTE},
    arrays={"g": Array(S("shape"), GRAD_VALUES)},
))

register(Layer(
    "clip_by_norm", cl.clip_by_norm, None,
    dims={"shape": CLIP_SHAPE},
    attrs={"max_norm": CLIP_THRESHOLD, "error_if_nonfinite": Choice(False, True), "route": CLIP_ROUTE},
    arrays={"g": Array(S("shape"), GRAD_VALUES)},
    conventions={"norm_eps": 0.0},
))

register(Layer(
    "clip_by_global_norm", cl.clip_by_global_norm, None,
    dims={"shape1": CLIP_SHAPE, "shape2": CLIP_SHAPE},
    attrs={"max_norm": CLIP_THRESHOLD, "error_if_nonfinite": Choice(False, True), "route": CLIP_ROUTE},
    arrays={"g1": Array(S("shape1"), GRAD_VALUES), "g2": Array(S("shape2"), GRAD_VALUES, optional=True)},
    conventions={"norm_eps": 0.0},
))

TRAJECTORY_DIMS = {"K": Int(1, 10), "shape": Shape(min_dims=1, max_dims=2, max_side=3)}
TRAJECTORY_ARRAYS = {
    "w0": Array(S("shape"), Real(-3.0, 3.0, edges=(0.0, 1.0, -1.0)), param=True),
    "grads": Array(S("K", "shape"), GRAD_VALUES),
}
LR = Float(1e-4, 1.0, edges=(1e-3, 0.01, 0.1))
WEIGHT_DECAY = Float(0.0, 0.1, edges=(0.0, 0.01))


def _trajectory(name, forward, attrs, conventions, condition=None):
    register(Layer(name, forward, None, dims=TRAJECTORY_DIMS, arrays=TRAJECTORY_ARRAYS,
                   attrs={"lr": LR, **attrs, "weight_decay": WEIGHT_DECAY},
                   conventions={**conventions, "float32_hypers": ()}, condition=condition))


_trajectory("sgd_step", op.sgd, {}, {})
_trajectory("momentum_step", op.sgd_momentum,
            {"momentum": Float(0.1, 0.99, edges=(0.9, 0.99)), "dampening": Float(0.0, 0.9, edges=(0.0, 0.5)),
             "nesterov": Choice(False, True)},
            {"decay_form": "l2", "momentum_form": "buffer"})
ADAM_ATTRS = {"beta_1": Float(0.0, 0.99, edges=(0.9, 0.0)), "beta_2": Float(0.5, 0.999, edges=(0.999, 0.9)),
              "eps": Float(1e-10, 1e-3, edges=(1e-8, 1e-7, 0.0))}
_trajectory("adam_step", op.adam, ADAM_ATTRS, {"decay_form": "l2", "eps_form": "corrected"}, op.cancellation)
_trajectory("adamw_step", op.adamw, ADAM_ATTRS, {"eps_form": "corrected"}, op.cancellation)
_trajectory("rmsprop_step", op.rmsprop,
            {"alpha": Float(0.9, 0.999, edges=(0.99, 0.9)), "eps": Float(1e-10, 1e-3, edges=(1e-8, 1e-7, 0.0)),
             "momentum": Float(0.0, 0.99, edges=(0.0, 0.9)), "centered": Choice(False, True)},
            {"decay_form": "l2", "eps_form": "outside", "momentum_form": "buffer"}, op.cancellation)
_trajectory("adagrad_step", op.adagrad,
            {"eps": Float(1e-10, 1e-3, edges=(1e-10, 1e-7, 0.0)),
             "initial_accumulator_value": Float(0.0, 1.0, edges=(0.0, 0.1))},
            {"decay_form": "l2", "eps_form": "outside"}, op.cancellation)

# The whole loop: a dense-relu-dense classifier trained S steps (one batch each)
# by SGD with momentum or Adam, global-norm clipping on (a finite max_norm) or off
# (inf). Attributes of the optimizer not drawn are 0 (a case never carries
# numbers it ignores).
OPTIMIZERS = ("sgd_momentum", "adam")


def _for(opt, spec):
    return Drawn(float, lambda d: spec if OPTIMIZERS[d.opt] == opt else Choice(0.0))


register(Layer(
    "train_step", tr.train_step, None,
    dims={"S": Int(1, 5), "N": Int(1, 4), "D": Int(1, 4), "H": Int(1, 5), "K": Int(2, 4), "opt": Int(0, 1)},
    attrs={"optimizer": Drawn(str, lambda d: Choice(OPTIMIZERS[d.opt])), "lr": Float(1e-3, 0.5, edges=(0.1,)),
           "momentum": _for("sgd_momentum", Float(0.5, 0.95, edges=(0.9,))),
           "beta_1": _for("adam", Float(0.5, 0.95, edges=(0.9,))),
           "beta_2": _for("adam", Float(0.9, 0.999, edges=(0.999,))),
           "eps": _for("adam", Float(1e-8, 1e-3, edges=(1e-8, 1e-7))),
           "max_norm": Float(0.1, 5.0, edges=(float("inf"), 1.0))},
    arrays={
        "x": Array(S("S", "N", "D"), Real(-3.0, 3.0, edges=(0.0,))),
        "labels": Array(S("S", "N"), Labels("K")),
        "W1": Array(S("D", "H"), Real(-1.0, 1.0, edges=(0.0,)), param=True),
        "b1": Array(S("H"), Real(-1.0, 1.0, edges=(0.0,)), param=True),
        "W2": Array(S("H", "K"), Real(-1.0, 1.0, edges=(0.0,)), param=True),
        "b2": Array(S("K"), Real(-1.0, 1.0, edges=(0.0,)), param=True),
    },
    conventions={"norm_eps": 0.0, "eps_form": "corrected", "float32_hypers": ()},
))
